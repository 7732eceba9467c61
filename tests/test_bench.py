"""bench/run.py: the log parsing, the targets, and a --quick run end to end on the tiny data-bin."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import run  # noqa: E402

LOG = """\
2026-11-23 | INFO | train_inner | epoch 001:    100 / 126 loss=14.3, wps=1000.0, ups=0.29, num_updates=100, train_wall=344, wall=346
2026-11-23 | INFO | train_inner | epoch 002:     74 / 126 loss=8.9, wps=1200.0, ups=0.3, num_updates=200, train_wall=680, wall=683
2026-11-23 | INFO | train_inner | epoch 003:     48 / 126 loss=8.1, wps=1400.0, ups=0.3, num_updates=300, train_wall=1016, wall=1020
2026-11-23 | INFO | fairseq_cli.train | done training in 1020.4 seconds
peak_memory_mb=917 (max RSS)
"""


def test_train_stats_reads_fairseq_simple_log():
    stats = run.train_stats(LOG)
    assert stats["wps"] == pytest.approx(1300.0)  # the first interval (warm-up) is left out
    assert stats["updates"] == 300
    assert stats["train_seconds"] == 1020.4
    assert (stats["peak_memory_mb"], stats["peak_memory_kind"]) == (917, "max RSS")


def test_parse_cores():
    assert run.parse_cores("0") == {0}
    assert run.parse_cores("0-2,5") == {0, 1, 2, 5}


def test_training_budget_in_updates_minutes_or_both(tmp_path, capsys):
    base = ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    args = run.parse_args(base)
    assert (args.max_update, args.minutes) == (None, 30.0)
    assert report.training_budget(args) == "30 min of training each"
    args = run.parse_args(base + ["--max-update", "546"])
    assert (args.max_update, args.minutes) == (546, None)  # no wall clock unless asked for
    assert report.training_budget(args) == "546 updates of training each"
    args = run.parse_args(base + ["--max-update", "546", "--minutes", "60"])
    assert report.training_budget(args) == "546 updates or 60 min of training each, whichever came first"
    for bad, message in ((["--max-update", "0"], "--max-update must be >= 1, got 0"),
                         (["--snapshot-updates", "0"], "--snapshot-updates must be >= 1, got 0"),
                         (["--minutes", "-1"], "--minutes must be > 0, got -1")):
        with pytest.raises(SystemExit):
            run.parse_args(base + bad)
        assert message in capsys.readouterr().err


def test_nat_data_must_share_the_dictionaries(data_bin, tmp_path, capsys):
    kd = tmp_path / "kd"
    shutil.copytree(data_bin, kd)
    base = ["--data", str(data_bin), "--nat-data", str(kd), "--source-lang", "src", "--target-lang", "tgt"]
    assert run.parse_args(base).nat_data == str(kd)
    with open(kd / "dict.tgt.txt", "a") as f:
        f.write("extra 1\n")
    with pytest.raises(SystemExit):
        run.parse_args(base)
    assert f"--nat-data {kd}: dict.tgt.txt missing or not --data's" in capsys.readouterr().err


def row(system, setting, bleu, rates, wps, steps=None, candidates=None):
    return {"system": system, "setting": setting, "bleu": bleu, "rates": rates, "wps": wps,
            "steps": steps, "candidates": candidates}


def test_targets_ratios_and_shortfalls():
    rows = [
        row("ar", "beam 5", 30.0, {1: 10.0}, 1000.0),
        row("cmlm", "10 iter", 25.0, {1: 20.0}, 2000.0),
        row("diffusion", "K=10, b=1x1", 24.0, {1: 60.0}, 1500.0, 10, 1),
        row("diffusion", "K=20, b=3x3", 29.4, {1: 5.0}, 1500.0, 20, 9),
    ]
    lines = report.targets(rows, [1])
    assert "best plugin BLEU (K=20, b=3x3) / AR BLEU: 0.98 (target >= 0.97): met" in lines[0]
    assert "1.18 (target >= 1.0): met" in lines[1]
    assert "0.75 (target >= 0.8): NOT met (short by 0.05)" in lines[2]
    assert "6.00 (target >= 5.0): met" in lines[3]


def test_quick_run_end_to_end_and_resume(data_bin, tmp_path):
    """The whole harness on micro models; CMLM and diffusion train on --nat-data, AR on --data."""
    out, results, kd = tmp_path / "run", tmp_path / "results", tmp_path / "kd"
    shutil.copytree(data_bin, kd)
    ref = data_bin.parent / "raw" / "test.tgt"
    command = [sys.executable, str(BENCH / "run.py"), "--data", str(data_bin), "--nat-data", str(kd), "--quick",
               "--source-lang", "src", "--target-lang", "tgt", "--ref", str(ref),
               "--out", str(out), "--results", str(results), "--snapshot-updates", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    [md] = results.glob("*-cpu-quick.md")
    assert md.with_suffix(".png").stat().st_size > 10_000
    text = md.read_text()
    assert text.count("| diffusion (this plugin) |") == 6  # K in {5,10,20} x b in {1x1,3x3}
    assert "| fairseq transformer (AR) | beam 5 |" in text and "| fairseq CMLM |" in text
    assert "sacreBLEU signature: `nrefs:1|" in text
    assert f"- CMLM and diffusion trained on {kd} (sequence-level distilled), AR on {data_bin}" in text
    for system in run.SYSTEMS:
        trained = json.loads((out / f"train.{system}.json").read_text())
        assert trained["updates"] == 10 and trained["peak_memory_mb"] > 0
        assert trained["command"][1] == str(data_bin if system == "ar" else kd)
        snapshots = (out / "checkpoints" / system).glob("checkpoint_*_*.pt")  # checkpoint_EPOCH_UPDATES
        # every 3 of the 10 updates but 6, which ends an epoch (of 2 updates here)
        assert sorted(int(p.stem.rsplit("_", 1)[1]) for p in snapshots) == [3, 9]
    speed = json.loads((out / "speed.json").read_text())["rows"]
    assert {r["system"] for r in speed} == set(run.SYSTEMS)
    assert {r["batch"] for r in speed} == {1, 8}  # --quick: 8 sentences, batches of 1 and all 8

    rerun = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    assert rerun.stdout.count("done before") == 3 * 2 + 1  # train and bleu per system, speed


def test_step_time_reports_both_models_at_each_batch(data_bin, tmp_path):
    out = tmp_path / "steps.md"
    command = [sys.executable, str(BENCH / "step_time.py"), "--data", str(data_bin), "--init-untrained",
               "--sentences", "4", "--batch-sizes", "1", "4", "--repeats", "1", "--steps", "1", "2",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for name in ("encoder-decoder", "diffuseq"):
        assert re.search(rf"^- {name}: \d+\.\d\dM parameters \(untrained\)$", text, re.M)
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [int(r[0]) for r in rows] == [1, 4]
    for r in rows:  # untrained DiffuSeq decodes its whole 48-position budget (+ EOS)
        assert r[4].strip().endswith("/ 49.0")
    bad = subprocess.run([sys.executable, str(BENCH / "step_time.py"), "--data", str(data_bin)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--init-untrained" in bad.stderr


def test_device_check_refuses_bad_calls_with_a_reason(tmp_path):
    """bench/device_check.sh: usage, unknown flags, a missing checkpoint or data-bin, and `run`
    without --out or without a prepared .device/ are refused with a message (exit 2), before any
    download or install."""
    script = str(BENCH / "device_check.sh")

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60)

    cases = [
        ((), "usage: bash bench/device_check.sh {prepare|run}"),
        (("prepare", "--bogus", "1"), "prepare: unknown argument --bogus"),
        (("prepare", "--checkpoint", str(tmp_path / "none.pt")), f"prepare: no checkpoint {tmp_path / 'none.pt'}"),
        (("prepare", "--data", str(tmp_path)), f"prepare: no data-bin at {tmp_path}"),
        (("run",), "run: --out DIR is required"),
        (("run", "--out", str(tmp_path / "out"), "--sentences"), "--sentences needs a value"),
        (("run", "--out", str(tmp_path / "out"), "--device", "tpu"), "run: --device must be cuda or cpu, got tpu"),
    ]
    for args, message in cases:
        result = call(*args)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
    if not (BENCH.parent / ".device" / "wheels").is_dir():  # a checkout where prepare never ran
        result = call("run", "--out", str(tmp_path / "out"))
        assert result.returncode == 2 and "bench/device_check.sh prepare, then carry .device" in result.stderr


def test_frontier_decodes_as_fairseq_generate(data_bin, checkpoint, tmp_path, monkeypatch):
    """bench/frontier.py decodes each setting as fairseq-generate does: scored against
    fairseq-generate's own detokenised output for one setting (seed 1), that setting has BLEU
    100 and the others less; speeds, JSON and plot are written; --resume measures only the
    settings not yet in --json; a malformed --beams is refused."""
    import frontier
    import text_metrics
    from conftest import generate_args, run_fairseq

    generated = tmp_path / "generate.txt"
    generated.write_text(run_fairseq("generate", generate_args(
        data_bin, checkpoint, "--decoding-steps", "4", "--decoding-sampler", "dpm-solver++",
        "--length-beam", "2", "--remove-bpe", "--seed", "1")))
    hypotheses = [c[0] for c in text_metrics.read_generate(str(generated)).candidates]
    ref = tmp_path / "ref.txt"
    ref.write_text("".join(h + "\n" for h in text_metrics.detokenize(hypotheses, "en")))
    points = frontier.main([
        "--data", str(data_bin), "--diffusion", str(checkpoint), "--ref", str(ref),
        "--samplers", "ddim", "dpm-solver++:2", "--steps", "2", "4", "--beams", "1x1", "2x1",
        "--speed-batches", "1", "--sentences", "4", "--json", str(tmp_path / "f.json"),
        "--plot", str(tmp_path / "f.png"), "--out", str(tmp_path / "f.md"),
    ])
    assert [p.setting for p in points][:3] == ["ddim K=2, b=1x1", "ddim K=2, b=2x1", "ddim K=4, b=1x1"]
    assert len(points) == 8 and all(p.rates[1] > 0 for p in points)
    assert points[-1].setting == "dpm-solver++(2) K=4, b=2x1" and points[-1].bleu == pytest.approx(100.0)
    assert max(p.bleu for p in points if "K=2," in p.setting) < 100.0
    assert len(json.loads((tmp_path / "f.json").read_text())) == 8
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert "| diffusion | dpm-solver++(2) K=4, b=2x1 | 100.00 |" in (tmp_path / "f.md").read_text()
    measured, measure_point = [], frontier.measure_point
    monkeypatch.setattr(frontier, "measure_point", lambda *a: measured.append(a[3]) or measure_point(*a))
    resumed = frontier.main([
        "--data", str(data_bin), "--diffusion", str(checkpoint), "--ref", str(ref), "--samplers", "ddim",
        "--steps", "2", "--beams", "1x1", "3x1", "2x1", "--speed-batches", "1", "--sentences", "4",
        "--json", str(tmp_path / "f.json"), "--resume",
    ])
    assert measured == ["ddim K=2, b=3x1"]
    assert resumed[0] == points[0] and resumed[2] == points[1]
    assert [p["setting"] for p in json.loads((tmp_path / "f.json").read_text())] == [p.setting for p in resumed]
    with pytest.raises(SystemExit):
        frontier.parse_args(["--data", "d", "--diffusion", "c", "--ref", "r", "--resume"])
    with pytest.raises(SystemExit):
        frontier.parse_args(["--data", "d", "--diffusion", "c", "--ref", "r", "--beams", "3by3"])
    with pytest.raises(SystemExit):
        frontier.parse_args(["--data", "d", "--diffusion", "c", "--ref", "r", "--set", "ddim_eta"])
    parsed = frontier.parse_args(["--data", "d", "--diffusion", "c", "--ref", "r", "--samplers", "ddim",
                                  "--steps", "20", "--beams", "3x3", "--selection", "bleu-mbr",
                                  "--set", "ddim_eta=0.5", "early-stopping-steps=5", "clamping=true"])
    assert frontier.diffusion_settings(parsed) == [dict(
        decoding_sampler="ddim", decoding_steps=20, length_beam=3, noise_beam=3, decoding_timesteps="uniform",
        candidate_selection="bleu-mbr", ddim_eta=0.5, early_stopping_steps=5, clamping=True)]
    assert frontier.label(frontier.diffusion_settings(parsed)[0]) == (
        "ddim K=20, b=3x3, bleu-mbr, ddim_eta=0.5, early_stopping_steps=5, clamping=True")  # --set flags named
    with pytest.raises(SystemExit):  # the reranker is the --ar model
        frontier.parse_args(["--data", "d", "--diffusion", "c", "--ref", "r", "--selection", "reranker"])


def test_frontier_reranks_with_the_ar_model_as_fairseq_generate(data_bin, checkpoint, transformer_checkpoint, tmp_path):
    """--selection reranker: the candidates ranked by the --ar model, as fairseq-generate's
    --candidate-selection reranker --path diffusion.pt:ar.pt ranks them (BLEU 100 against its
    output), and a different choice than the score's; the AR point is measured once."""
    import frontier
    import text_metrics
    from conftest import generate_args, run_fairseq

    def reference(name: str, *flags: str) -> Path:
        args = generate_args(data_bin, checkpoint, "--decoding-steps", "2", "--length-beam", "2",
                             "--noise-beam", "2", "--remove-bpe", "--seed", "1", *flags)
        if "reranker" in flags:
            args[args.index("--path") + 1] = f"{checkpoint}:{transformer_checkpoint}"
        generated = tmp_path / f"{name}.generate"
        generated.write_text(run_fairseq("generate", args))
        hypotheses = [c[0] for c in text_metrics.read_generate(str(generated)).candidates]
        path = tmp_path / name
        path.write_text("".join(h + "\n" for h in text_metrics.detokenize(hypotheses, "en")))
        return path

    reranked = reference("reranked.txt", "--candidate-selection", "reranker")
    points = frontier.main([
        "--data", str(data_bin), "--diffusion", str(checkpoint), "--ar", str(transformer_checkpoint),
        "--ref", str(reranked), "--samplers", "ddpm", "--steps", "2", "--beams", "2x2",
        "--selection", "reranker", "--speed-batches", "1", "--sentences", "4",
    ])
    assert [(p.system, p.setting) for p in points] == [("ar", "beam 5"), ("diffusion", "ddpm K=2, b=2x2, reranker")]
    assert points[1].bleu == pytest.approx(100.0) and points[1].rates[1] > 0
    scored = frontier.main([
        "--data", str(data_bin), "--diffusion", str(checkpoint), "--ref", str(reranked),
        "--samplers", "ddpm", "--steps", "2", "--beams", "2x2", "--speed-batches", "1", "--sentences", "4",
    ])
    assert scored[0].setting == "ddpm K=2, b=2x2" and scored[0].bleu < 100.0


def test_bench_trains_the_diffusion_model_with_the_multi30k_recipe():
    """run.py's diffusion recipe is examples/multi30k/small_model.sh's: same learning rate,
    warm-up, model choices (the affine embedding norm included) and adaptive schedule (a recipe
    change in one place fails here until both agree)."""
    script = Path(__file__).resolve().parents[1] / "examples" / "multi30k" / "small_model.sh"
    listed = subprocess.run(
        ["bash", "-c", 'source "$1" && printf "%s\\n" "${SMALL_TRAIN[@]}"', "-", str(script)],
        check=True, capture_output=True, text=True,
    ).stdout.split("\n")
    recipe = run.RECIPES["diffusion"]
    valued = ("--lr", "--warmup-updates", "--adaptive-warmup-updates", "--adaptive-update-interval")
    for flag in valued:
        assert recipe[recipe.index(flag) + 1] == listed[listed.index(flag) + 1], flag
    choices = {f for f in listed if f in ("--post-norm", "--learned-positions", "--bert-init", "--input-norm",
                                          "--adaptive-schedule", "--embed-norm-affine",
                                          "--diffuse-bos-eos")}
    assert choices and choices == {f for f in recipe if f.startswith("--") and f not in valued}
    assert run.RECIPES["ar"] == run.RECIPES["cmlm"] == ["--lr", "1e-3", "--warmup-updates", "500"]
