"""``fairseq-train`` with its peak memory printed at the end (used by bench/run.py).

    python bench/train.py DATA_BIN [fairseq-train flags]

The last line is ``peak_memory_mb=<MiB> (<what>)``: ``torch.cuda.max_memory_allocated`` when the
run used CUDA, else the process's maximum resident set size (``ru_maxrss``).
"""
import resource

import torch
from fairseq_cli.train import cli_main


def peak_memory() -> str:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return f"peak_memory_mb={torch.cuda.max_memory_allocated() / 2**20:.0f} (cuda max allocated)"
    return f"peak_memory_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} (max RSS)"


if __name__ == "__main__":
    cli_main()
    print(peak_memory(), flush=True)
