"""Install: ``pip install -e .`` (torch's CPU wheel: ``pip install torch==2.13.0`` first)."""
from setuptools import find_packages, setup

setup(
    name="fairseq-diffusion-plugin",
    version="0.1.0",
    description="fairseq plugin for diffusion sequence-to-sequence text generation "
    "(Difformer, SeqDiffuSeq, DiffuSeq)",
    packages=find_packages(include=["diffusion_plugin", "diffusion_plugin.*"]),
    python_requires=">=3.10",
    install_requires=[
        # official fairseq 0.12.2 does not build on Python >= 3.11; this maintained fork ships
        # wheels for CPython 3.11/3.12 and imports as `fairseq`.  Fallback (sdist):
        # pip install numpy cython && pip install --no-build-isolation fairseq-fixed==0.12.3.1
        "ve-fairseq==0.12.3",
        "torch>=2.1,<3",
        "numpy>=1.24",
        "sacremoses>=0.1",
        "subword-nmt>=0.3.8",
        "sacrebleu>=2.0",
        "nltk>=3.8",  # scripts/score.py: DiffuSeq's sentence BLEU (NLTK smoothing method 4)
        "rouge-score>=0.1.2",  # scripts/score.py: ROUGE-L
        "tqdm",
        "tensorboardX>=2.6",  # fairseq's --tensorboard-logdir silently does nothing without it
    ],
    extras_require={
        "test": ["pytest>=7", "matplotlib>=3.7"],
        "plot": ["matplotlib>=3.7"],
        "bertscore": ["bert-score>=0.3.13"],  # scripts/score.py --bertscore-model (a local model)
    },
)
