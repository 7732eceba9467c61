"""fairseq-train / -generate / -interactive with the plugin, in-process on generated data."""
import logging
import re
import subprocess
import sys

import pytest
import torch

from conftest import (
    generate_args,
    preprocess_corpus,
    run_fairseq,
    train_args,
    write_text_corpus,
)


def hypotheses(output: str):
    return {
        int(m.group(1)): m.group(2)
        for m in re.finditer(r"^H-(\d+)\t\S+\t(.*)$", output, flags=re.M)
    }


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_same_text_whatever_the_batch_size(data_bin, checkpoint, sampler):
    """Issue K.6: each sentence's noise is drawn from (--seed, sentence id), so --batch-size
    (16 / 7 / 100 sentences: other batches, paddings and orders) leaves every hypothesis as is."""
    flags = ("--decoding-sampler", sampler, "--ddim-eta", "0.5", "--noise-beam", "2")
    outputs = [hypotheses(run_fairseq("generate", generate_args(
        data_bin, checkpoint, *flags, "--batch-size", size, "--required-batch-size-multiple", "1")))
        for size in ("16", "7", "100")]
    assert sorted(outputs[0]) == list(range(30))
    assert outputs[0] == outputs[1] == outputs[2]


def test_generate_prints_every_test_sentence_and_bleu(data_bin, checkpoint):
    out = run_fairseq("generate", generate_args(data_bin, checkpoint))
    hyps = hypotheses(out)
    assert sorted(hyps) == list(range(30))
    assert all(hyp for hyp in hyps.values())
    for prefix in ("S", "T", "D", "P"):
        assert re.search(rf"^{prefix}-0\t", out, flags=re.M)
    assert re.search(r"BLEU4? = \d+\.\d+", out)


def test_same_seed_same_text_and_history_has_one_line_per_step(data_bin, checkpoint):
    first = run_fairseq("generate", generate_args(data_bin, checkpoint, "--retain-iter-history"))
    second = run_fairseq("generate", generate_args(data_bin, checkpoint, "--retain-iter-history"))
    assert hypotheses(first) == hypotheses(second)
    assert len(re.findall(r"^E-0_\d+\t", first, flags=re.M)) == 5
    other = run_fairseq("generate", generate_args(data_bin, checkpoint, "--seed", "8"))
    assert hypotheses(other) != hypotheses(first)


def test_bf16_decodes_every_sentence_like_fp32(data_bin, checkpoint):
    """fairseq-generate --bf16 runs the network in bfloat16 (fairseq itself only casts for
    TPUs): every sentence gets a hypothesis, mostly the float32 one."""
    fp32 = hypotheses(run_fairseq("generate", generate_args(data_bin, checkpoint)))
    bf16 = hypotheses(run_fairseq("generate", generate_args(data_bin, checkpoint, "--bf16")))
    assert sorted(bf16) == list(range(30)) and all(bf16.values())
    assert sum(bf16[i] == fp32[i] for i in fp32) >= 15  # 25 of 30 when written


def test_checkpoint_loads_with_weights_only(checkpoint):
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    assert state["cfg"]["model"]["_name"] == "diffusion_transformer_tiny"
    assert state["model"]["embed.weight"].shape[1] == 16
    from fairseq import checkpoint_utils

    models, _ = checkpoint_utils.load_model_ensemble([str(checkpoint)])
    for name, tensor in models[0].state_dict().items():
        torch.testing.assert_close(tensor, state["model"][name], msg=name)


def test_fairseq_transformer_checkpoint_loads_with_weights_only(transformer_checkpoint):
    """Legacy fairseq architectures store an argparse.Namespace: allow-listed, not unsafe-loaded."""
    state = torch.load(transformer_checkpoint, weights_only=True)
    assert state["cfg"]["model"].arch == "transformer"


def test_transformer_checkpoint_is_refused_by_the_diffusion_task(data_bin, transformer_checkpoint):
    with pytest.raises(TypeError, match="holds a TransformerModel, not a diffusion model"):
        run_fairseq("generate", generate_args(data_bin, transformer_checkpoint))


def test_torch_hub_loads_the_checkpoint_through_hubconf(data_bin, checkpoint):
    """Issue K.8: hubconf.py at the repository root (torch.hub.load(..., source="local"))."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    hub = torch.hub.load(str(repo), "diffusion_transformer", source="local",
                         model_name_or_path=str(checkpoint.parent), checkpoint_file=checkpoint.name,
                         data_name_or_path=str(data_bin))
    assert len(hub.translate(["a b"], decoding_steps=2)) == 1
    with pytest.raises(TypeError, match="holds a DiffusionTransformerModel .*, not a DiffuSeqModel"):
        torch.hub.load(str(repo), "diffuseq", source="local", model_name_or_path=str(checkpoint.parent),
                       checkpoint_file=checkpoint.name, data_name_or_path=str(data_bin))


def test_hub_refuses_a_transformer_checkpoint(data_bin, transformer_checkpoint):
    from diffusion_plugin.models import DiffusionTransformerModel

    with pytest.raises(TypeError, match=r"holds a TransformerModel \(translation task\), not a DiffusionTransformerModel"):
        DiffusionTransformerModel.from_pretrained(str(transformer_checkpoint.parent),
                                                  checkpoint_file=transformer_checkpoint.name,
                                                  data_name_or_path=str(data_bin))


@pytest.mark.parametrize("steps", ["0", "101"])
def test_decoding_steps_out_of_range(data_bin, checkpoint, steps):
    args = generate_args(data_bin, checkpoint)
    args[args.index("--decoding-steps") + 1] = steps
    with pytest.raises(ValueError, match=rf"--decoding-steps must be in \[1, --diffusion-steps=100\], got {steps}"):
        run_fairseq("generate", args)


def test_empty_and_truncated_checkpoints(data_bin, checkpoint, tmp_path):
    from diffusion_plugin.checkpoints import CheckpointError

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        run_fairseq("generate", generate_args(data_bin, empty))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        run_fairseq("generate", generate_args(data_bin, truncated))
    # issue K.14: a valid checkpoint in torch's legacy (non-zip) format decodes
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(checkpoint, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert hypotheses(run_fairseq("generate", generate_args(data_bin, legacy))) == hypotheses(
        run_fairseq("generate", generate_args(data_bin, checkpoint)))


def test_dictionary_mismatch_is_reported(checkpoint, tmp_path):
    pairs = [(f"w{i} x{i}", f"y{i} z{i}") for i in range(40)]
    for split in ("train", "valid", "test"):
        write_text_corpus(tmp_path / "raw", pairs, split)
    other = preprocess_corpus(tmp_path / "raw", tmp_path / "bin")
    with pytest.raises(ValueError, match="checkpoint dictionary does not match the data"):
        run_fairseq("generate", generate_args(other, checkpoint))


def test_bad_training_flags(data_bin, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_fairseq("train", train_args(data_bin, tmp_path, "--noise-schedule", "quadratic"))
    assert "invalid choice: 'quadratic'" in capsys.readouterr().err
    for bad in ("-2", "nan", "inf"):
        with pytest.raises(ValueError, match=f"--rescaling-factor must be a finite number >= 0 or 'auto', got {bad}"):
            run_fairseq("train", train_args(data_bin, tmp_path, "--rescaling-factor", bad, "--max-update", "1"))


def test_interactive_empty_line_gives_empty_hypothesis(data_bin, checkpoint, tmp_path):
    from diffusion_plugin.synthetic import generate_pairs

    source = generate_pairs(1, seed=3)[0][0]
    lines = tmp_path / "input.txt"
    lines.write_text(f"{source}\n\n{source}\n", encoding="utf-8")
    args = generate_args(
        data_bin, checkpoint, "--input", str(lines), "--buffer-size", "16",
        "--source-lang", "src", "--target-lang", "tgt",
    )
    args.remove("--gen-subset")
    args.remove("test")
    out = run_fairseq("interactive", args)
    hyps = re.findall(r"^H-(\d+)\t\S+\t(.*)$", out, flags=re.M)
    assert [int(i) for i, _ in hyps] == [0, 1, 2]
    assert hyps[1][1] == ""
    assert hyps[0][1] and hyps[2][1]


def test_eval_bleu_during_training_and_its_checkpoint_loads_safely(data_bin, tmp_path):
    run_fairseq(
        "train",
        train_args(
            data_bin, tmp_path, "--max-update", "4", "--eval-bleu",
            "--eval-bleu-args", '{"decoding_steps": 3, "length_beam": 2}',
            "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
        ),
    )
    state = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    valid = {name: value for _, name, _, value in state["extra_state"]["metrics"]["valid"]}
    assert torch.is_tensor(valid["_bleu_counts"]["val"]) and valid["_bleu_counts"]["val"].shape == (4,)
    assert 0.0 <= state["extra_state"]["best"] <= 100.0
    # issue K.3: any tool (fairseq's scripts/average_checkpoints.py) loads it without the plugin
    code = ("import sys, torch; s = torch.load(sys.argv[1], weights_only=True); "
            "print(len(s['model']), s['extra_state']['best'])")
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        loaded = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)],
                                capture_output=True, text=True, timeout=120)
        assert loaded.returncode == 0, loaded.stderr[-2000:]


def test_auto_rescaling_factor_is_searched_once_and_stored(data_bin, tmp_path):
    from fairseq.data import Dictionary

    from diffusion_plugin.diffusion.degeneration import search_rescaling_factor
    from diffusion_plugin.diffusion.schedules import alphas_cumprod

    run_fairseq(
        "train",
        train_args(data_bin, tmp_path, "--max-update", "1", "--rescaling-factor", "auto", "--dgs-max", "0.3"),
    )
    vocab = len(Dictionary.load(str(data_bin / "dict.tgt.txt")))
    expected = search_rescaling_factor(alphas_cumprod("sqrt", 100), 0.3, vocab_size=vocab, dim=16)
    assert expected.factor > 1.0
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert float(state["cfg"]["model"]["rescaling_factor"]) == expected.factor
    with pytest.raises(ValueError, match=r"--dgs-max must be in \(0, 1\), got 1.5"):
        run_fairseq("train", train_args(data_bin, tmp_path, "--rescaling-factor", "auto", "--dgs-max", "1.5"))


def test_reranker_selection_uses_the_ar_model(data_bin, checkpoint, transformer_checkpoint):
    paths = f"{checkpoint}:{transformer_checkpoint}"
    args = generate_args(data_bin, checkpoint, "--candidate-selection", "reranker", "--length-beam", "2", "--noise-beam", "2", "--nbest", "4")
    args[args.index("--path") + 1] = paths
    out = run_fairseq("generate", args)
    assert len(hypotheses(out)) == 30
    assert len(re.findall(r"^H-0\t", out, flags=re.M)) == 4
    with pytest.raises(ValueError, match="needs an autoregressive fairseq model as the second checkpoint"):
        run_fairseq("generate", generate_args(data_bin, checkpoint, "--candidate-selection", "reranker"))


def test_hub_interface_translates_with_decoding_flags(data_bin, checkpoint):
    from diffusion_plugin.models import DiffusionTransformerModel
    from diffusion_plugin.synthetic import generate_pairs

    hub = DiffusionTransformerModel.from_pretrained(
        str(checkpoint.parent), checkpoint_file=checkpoint.name, data_name_or_path=str(data_bin)
    )
    sources = [src for src, _ in generate_pairs(3, seed=3)]
    torch.manual_seed(0)
    first = hub.translate(sources, decoding_steps=4, length_beam=2, noise_beam=2)
    torch.manual_seed(0)
    assert hub.translate(sources, decoding_steps=4, length_beam=2, noise_beam=2) == first
    assert len(first) == 3 and all(first)
    assert hub.translate([""], decoding_steps=4) == [""]
    with pytest.raises(ValueError, match="--length-beam must be >= 1, got 0"):
        hub.translate(sources, length_beam=0)
    # issue K.14: wrong types and typos name the argument; K.5: beam= and sampling= are refused
    for kwargs, message in (({"length_beam": "2"}, "--length-beam must be an integer, got '2'"),
                            ({"noise_beam": 2.5}, "--noise-beam must be an integer, got 2.5"),
                            ({"lenght_beam": 3}, r"unknown decoding argument 'lenght_beam' \(did you mean length_beam\?\)"),
                            ({"beam": 3}, "--beam 3: not supported by diffusion decoding"),
                            ({"sampling": True}, "--sampling True: not supported")):
        with pytest.raises(ValueError, match=message):
            hub.translate(sources, **kwargs)
    with pytest.raises(ValueError, match="--score-reference True: not supported"):
        hub.score(sources[0])  # would return a generation, not a score


def test_validation_draws_are_fixed_by_the_validation_seed(data_bin, checkpoint):
    """Issue K.7: the valid loss of a checkpoint is the same at every validation (timesteps and
    noise seeded per batch by --validation-seed and its first sentence id), torch's RNG outside
    is untouched; --validation-seed -1 draws from the running RNG as fairseq does."""
    from fairseq import checkpoint_utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data_bin)})
    model = models[0]
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    batches = list(task.get_batch_iterator(task.dataset("valid"), max_tokens=100).next_epoch_itr(shuffle=False))
    assert len(batches) > 1

    def losses(seed: int):
        task.cfg.validation_seed = seed
        model.eval()
        out = []
        for batch in batches:
            out.append(float(task.valid_step(batch, model, criterion)[0]))
        return out

    first = losses(1)
    torch.rand(5)  # the running RNG moves on between validations
    assert losses(1) == first
    assert losses(2) != first
    torch.manual_seed(3)
    before = torch.get_rng_state()
    losses(1)
    assert torch.equal(torch.get_rng_state(), before)  # forked: the training stream is untouched
    assert losses(-1) != losses(-1)


@pytest.mark.parametrize("flags,message", [
    (("--print-alignment",), "--print-alignment hard: not supported by diffusion decoding"),
    (("--beam", "3"), "--beam 3: not supported by diffusion decoding .*--length-beam"),
    (("--score-reference",), "--score-reference True: not supported"),
])
def test_generate_refuses_fairseq_flags_it_does_not_honour(data_bin, checkpoint, flags, message):
    with pytest.raises(ValueError, match=message):
        run_fairseq("generate", generate_args(data_bin, checkpoint, *flags))


def test_generate_honours_iter_decode_max_iter_and_match_source_len(data_bin, checkpoint):
    args = generate_args(data_bin, checkpoint, "--retain-iter-history", "--iter-decode-max-iter", "3",
                         "--match-source-len")
    at = args.index("--decoding-steps")
    out = run_fairseq("generate", args[:at] + args[at + 2:])
    assert len(re.findall(r"^E-0_\d+\t", out, flags=re.M)) == 3  # 3 reverse steps
    sources = {int(i): s for i, s in re.findall(r"^S-(\d+)\t(.*)$", out, flags=re.M)}
    for i, hyp in hypotheses(out).items():
        assert len(hyp.split()) == len(sources[i].split())


def test_tensorboard_logdir_writes_events(data_bin, tmp_path):
    """Issue K.8: tensorboardX is installed with the plugin, so --tensorboard-logdir logs."""
    run_fairseq("train", train_args(data_bin, tmp_path / "ckpt", "--max-update", "2", "--log-interval", "1",
                                    "--log-format", "simple", "--tensorboard-logdir", str(tmp_path / "tb")))
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("arch,flag,ours", [
    ("diffusion_transformer_tiny", "--encoder-embed-dim", "--model-dim (encoder and decoder share it)"),
    ("diffusion_transformer_tiny", "--decoder-ffn-embed-dim", "--ffn-dim"),
    ("diffuseq_tiny", "--encoder-layers", "--layers"),
])
def test_fairseq_transformer_flags_point_at_ours(data_bin, tmp_path, capsys, arch, flag, ours):
    args = train_args(data_bin, tmp_path, "--arch", arch, flag, "512", "--max-update", "1")
    with pytest.raises(SystemExit):
        run_fairseq("train", args)
    assert f"{flag} is fairseq's transformer flag: the plugin's is {ours}" in capsys.readouterr().err


def test_resume_falls_back_to_the_newest_intact_checkpoint(data_bin, tmp_path, caplog):
    """Issue K.13: checkpoint_last.pt cut short (a full disk during fairseq's copy) does not stop
    the rerun: it resumes from the newest intact checkpoint in --save-dir and says so."""
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu

    first = train_args(data_bin, tmp_path, "--max-update", "2", "--save-interval-updates", "1")
    run_fairseq("train", first)
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:4096])
    with caplog.at_level(logging.INFO):
        run_fairseq("train", train_args(data_bin, tmp_path, "--max-update", "3", "--save-interval-updates", "1"))
    # the newest intact file: the save at update 2 (checkpoint_E_2.pt, or its copy checkpoint_best.pt)
    assert re.search(rf"{last} is damaged \(truncated save\): resuming from {tmp_path}/checkpoint_(\d+_2|best).pt",
                     caplog.text)
    assert re.search(r"Loaded checkpoint \S+ \(epoch \d+ @ 2 updates\)", caplog.text)
    assert load_checkpoint_to_cpu(str(last))["optimizer_history"][-1]["num_updates"] == 3


def test_dummy_batches_record_no_training_statistics(data_bin, tmp_path):
    """Issue K.9: fairseq replays a batch with ignore_grad on a worker that ran out of batches;
    the adaptive schedule and the importance sampler must not count it."""
    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = train_args(data_bin, tmp_path, "--adaptive-schedule", "--timestep-sampler", "loss-second-moment")
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), input_args=args))
    task = tasks.setup_task(cfg.task)
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, list(model.parameters()))
    task.load_dataset("train")
    batch = next(iter(task.get_batch_iterator(task.dataset("train"), max_tokens=500).next_epoch_itr(shuffle=False)))
    model.train()

    def statistics():
        return [b.clone() for b in (*model.timestep_sampler.buffers(), *model.schedule.buffers())]

    before = statistics()
    task.train_step(batch, model, criterion, optimizer, 0, ignore_grad=True)
    assert all(torch.equal(a, b) for a, b in zip(before, statistics())) and model.recording
    task.train_step(batch, model, criterion, optimizer, 0)
    assert not all(torch.equal(a, b) for a, b in zip(before, statistics()))


def test_required_batch_size_multiple_applies_to_training_batches_only(data_bin, checkpoint):
    """Issue K.5: the train subset's batches keep --required-batch-size-multiple (fairseq's 8);
    validation and generation batches ignore it, so none is dropped."""
    from fairseq import checkpoint_utils

    _, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides={"data": str(data_bin)})
    for split in ("train", "valid"):
        task.load_dataset(split)

    def sizes(split):
        itr = task.get_batch_iterator(task.dataset(split), max_sentences=13, required_batch_size_multiple=8)
        return [len(b["id"]) for b in itr.next_epoch_itr(shuffle=False)]

    train, valid = sizes("train"), sizes("valid")
    assert set(train) == {8}  # as in fairseq's own tasks (its batch_by_size leaves out the last 4)
    assert valid == [13, 13, 4]
