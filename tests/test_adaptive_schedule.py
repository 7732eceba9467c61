"""Adaptive token-level schedule (SeqDiffuSeq Alg. 1) and loss-second-moment timestep sampling:
refit math, monotonicity, sparse statistics, sampler probabilities, distributed sync (gloo),
exact resume through fairseq-train, old checkpoints, flag off, plot script."""
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from diffusion_plugin.diffusion.adaptive_schedule import (
    AdaptiveNoiseSchedule,
    bucket_means,
    refit_table,
)
from diffusion_plugin.diffusion.schedules import NoiseSchedule, alphas_cumprod, rescale
from diffusion_plugin.diffusion.timestep_samplers import LossSecondMomentSampler

import gloo_worker
from conftest import generate_args, run_fairseq, train_args

ROOT = Path(__file__).resolve().parents[1]


def sqrt_table(steps: int, positions: int) -> torch.Tensor:
    return torch.from_numpy(alphas_cumprod("sqrt", steps))[:, None].repeat(1, positions)


def test_refit_hand_computed_monotone_ties_and_eq7():
    # K = 1: buckets are timesteps; losses [1, 3, 2, 5] → running max [1, 3, 3, 5]; t = 2, 3 tie
    # and merge into (3, (0.6 + 0.3)/2); L_new = 1, 7/3, 11/3, 5 mapped through (1, .8), (3, .45),
    # (5, .1) by Eq. 7.
    table = torch.tensor([[1.0], [0.8], [0.6], [0.3], [0.1]], dtype=torch.float64)
    loss = torch.tensor([[1.0], [3.0], [2.0], [5.0]], dtype=torch.float64)
    new, report = refit_table(table, loss, torch.ones_like(loss), bucket_size=1, min_observations=1)
    expected = [1.0, 0.8, 0.8 - 0.35 * (4 / 3) / 2, 0.45 - 0.35 * (2 / 3) / 2, 0.1]
    assert torch.allclose(new[:, 0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert report.refit == [0] and report.kept == []


def test_refit_makes_a_loss_linear_in_alpha_linear_in_t():
    # recorded loss L_t = 2 (1 − ᾱ_t): the refit ᾱ_new is linear in t from ᾱ_1 to ᾱ_T (end
    # points kept), so the loss under the new schedule grows linearly in t
    steps, size = 100, 10
    table = sqrt_table(steps, 1)
    t = torch.arange(1, steps + 1)
    sums = torch.zeros(steps // size, 1, dtype=torch.float64).index_add_(
        0, (t - 1) // size, 2 * (1 - table[1:])
    )
    counts = torch.full_like(sums, size)
    new, _ = refit_table(table, sums, counts, size, 1)
    a1, aT = table[1, 0], table[-1, 0]
    linear = a1 + (t - 1).double() / (steps - 1) * (aT - a1)
    assert torch.allclose(new[1:, 0], linear, atol=1e-12)
    new_loss = 2 * (1 - new[1:, 0])
    assert torch.allclose(new_loss.diff().diff(), torch.zeros(steps - 2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(bucket_means(table, size)[:, 0], sums[:, 0] / counts[:, 0] / -2 + 1)


def test_refits_keep_every_column_monotone_in_unit_interval_without_nan():
    generator = torch.Generator().manual_seed(0)
    steps, size, positions = 200, 20, 6
    table = sqrt_table(steps, positions)
    for _ in range(5):  # repeated refits on noisy, non-monotone, partly unobserved statistics
        counts = torch.randint(0, 4, (steps // size, positions), generator=generator).double()
        sums = counts * (torch.rand(counts.shape, generator=generator, dtype=torch.float64) + 0.1)
        table, _ = refit_table(table, sums, counts, size, min_observations=2)
        assert not table.isnan().any()
        assert (table[0] == 1).all() and (table[1:] > 0).all() and (table[1:] < 1).all()
        assert (table.diff(dim=0) < 0).all()
    assert torch.allclose(table[[1, -1]], sqrt_table(steps, positions)[[1, -1]], rtol=1e-9, atol=0)  # range kept


def test_refit_with_too_few_observations_keeps_columns_and_says_so():
    steps, size = 40, 10
    table = sqrt_table(steps, 3)
    counts = torch.tensor([[5, 5, 0], [1, 0, 0], [5, 1, 0], [5, 0, 3]], dtype=torch.float64)
    sums = counts * torch.tensor([[0.1], [9.0], [0.5], [0.9]], dtype=torch.float64)
    new, report = refit_table(table, sums, counts, size, min_observations=2)
    # cells with one loss are left out: position 0 fits buckets 0, 2, 3 (not the loss-9 outlier),
    # positions 1 and 2 have one usable bucket each and keep their columns
    assert report.refit == [0] and report.kept == [1, 2] and report.sparse_buckets == 2
    assert torch.equal(new[:, 1:], table[:, 1:]) and not new.isnan().any()
    assert (new[1:, 0].diff() < 0).all()
    assert "positions 1-2 kept" in report.describe(2) and "2 (bucket, position) cells" in report.describe(2)
    empty = torch.zeros_like(counts)
    unchanged, report = refit_table(table, empty, empty, size, 1)
    assert torch.equal(unchanged, table) and report.kept == [0, 1, 2]


def test_recorder_buckets_positions_warmup_and_refit_timing():
    schedule = AdaptiveNoiseSchedule("sqrt", 40, positions=2, bucket_size=10, update_interval=3,
                                     warmup_updates=2)
    t = torch.tensor([1, 40])
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, True, True], [True, False, True]])
    schedule.set_num_updates(1)
    schedule.record(t, loss, mask)  # before the warm-up: ignored
    assert schedule.end_update(2) is None and schedule.loss_count.sum() == 0
    schedule.set_num_updates(2)
    schedule.record(t, loss, mask)  # position 2 is counted in the last column
    assert schedule.end_update(3) is None
    assert schedule.loss_sum[0].tolist() == [1.0, 5.0] and schedule.loss_count[0].tolist() == [1, 2]
    assert schedule.loss_sum[3].tolist() == [4.0, 6.0] and schedule.loss_count[3].tolist() == [1, 1]
    assert schedule.end_update(4) is None
    report = schedule.end_update(5)  # first refit at W + U = 5
    assert report is not None and int(schedule.last_refit) == 5
    assert schedule.loss_count.sum() == 0 and schedule.fit_loss_count.sum() == 5
    assert schedule.end_update(5) is None  # the same update never refits twice


def test_sampler_probabilities_and_weights_by_hand():
    sampler = LossSecondMomentSampler(steps=3, history=2, uniform_mix=0.001)
    sampler.record(torch.tensor([1, 2, 3, 1]), torch.tensor([1.0, 2.0, 4.0, 3.0]))
    sampler.end_update()
    assert torch.equal(sampler.probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))
    sampler.record(torch.tensor([2, 3, 1]), torch.tensor([2.0, 4.0, 5.0]))
    sampler.end_update()  # t=1 keeps its last two losses (3, 5)
    assert sampler.losses.tolist() == [[3.0, 5.0], [2.0, 2.0], [4.0, 4.0]]
    rms = torch.tensor([(17.0) ** 0.5, 2.0, 4.0], dtype=torch.float64)
    expected = 0.999 * rms / rms.sum() + 0.001 / 3
    assert torch.allclose(sampler.probabilities(), expected, atol=1e-15)
    t, weights = sampler.sample(4000, torch.device("cpu"))
    assert torch.allclose(weights.double(), 1 / (3 * expected[t - 1]), rtol=1e-6)


def test_importance_weights_keep_the_expected_loss_unbiased():
    steps = 50
    true_loss = torch.linspace(0.1, 5.0, steps, dtype=torch.float64) ** 2
    sampler = LossSecondMomentSampler(steps)
    for _ in range(10):
        sampler.record(torch.arange(1, steps + 1), true_loss)
    sampler.end_update()
    p = sampler.probabilities()
    assert torch.allclose((p * true_loss / (steps * p)).sum(), true_loss.mean())  # exact
    torch.manual_seed(0)
    t, weights = sampler.sample(200_000, torch.device("cpu"))
    estimate = (weights.double() * true_loss[t - 1]).mean()
    assert abs(estimate / true_loss.mean() - 1) < 0.01
    assert p[-1] > 10 * p[0]  # larger losses are drawn more often


def test_float64_state_survives_half():
    schedule = AdaptiveNoiseSchedule("sqrt", 20, positions=3, bucket_size=5, update_interval=1)
    sampler = LossSecondMomentSampler(20)
    schedule.half(), sampler.half()
    assert schedule.alpha_bar_table.dtype == schedule.loss_sum.dtype == torch.float64
    assert sampler.losses.dtype == torch.float64


def test_two_gloo_workers_agree_after_a_refit(tmp_path):
    mp.spawn(gloo_worker.record_and_refit, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # the refit used the statistics of both ranks: 2 + 3 batches of 8 x 3 token losses
    assert int(rank0["schedule.fit_loss_count"].sum()) == 5 * 8 * 3
    assert int(rank0["sampler.filled"].sum()) > 0 and rank0["probabilities"].numel() == 40
    assert not torch.equal(rank0["schedule.alpha_bar_table"], sqrt_table(40, 3))


ADAPTIVE = [
    "--adaptive-schedule", "--adaptive-update-interval", "2", "--adaptive-bucket-size", "10",
    "--adaptive-positions", "8", "--timestep-sampler", "loss-second-moment",
]


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=False)["model"]


@pytest.fixture(scope="module")
def adaptive_run(data_bin, tmp_path_factory):
    """An uninterrupted 6-update run (refits at 2, 4, 6) and one stopped at 3 and resumed, both
    within the first epoch (fairseq builds a resumed process's batches with the seed of the epoch
    it resumes in, so runs stopped at an epoch boundary see other batches afterwards)."""
    full, resumed = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("resumed")
    small = ["--max-tokens", "400", *ADAPTIVE]
    run_fairseq("train", train_args(data_bin, full, "--max-update", "6", *small))
    run_fairseq("train", train_args(data_bin, resumed, "--max-update", "3", *small))
    interrupted = _state(resumed / "checkpoint_last.pt")
    run_fairseq("train", train_args(data_bin, resumed, "--max-update", "6", *small))
    return full / "checkpoint_last.pt", resumed / "checkpoint_last.pt", interrupted


def test_resume_reproduces_table_and_statistics_bit_for_bit(adaptive_run):
    full, resumed, interrupted = adaptive_run
    assert int(interrupted["schedule.last_refit"]) == 2 and interrupted["schedule.loss_count"].sum() > 0
    a, b = _state(full), _state(resumed)
    keys = [k for k in a if k.startswith(("schedule.", "timestep_sampler."))]
    assert len(keys) == 9 and int(a["schedule.last_refit"]) == 6
    for key in a:  # schedule, statistics, sampler history and weights
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["schedule.alpha_bar_table"], sqrt_table(100, 8))


def test_generation_reads_the_adaptive_table(adaptive_run, data_bin):
    out = run_fairseq("generate", generate_args(data_bin, adaptive_run[0]))
    assert out.count("\nH-") == 30


def _plot_script():
    if str(ROOT / "scripts") not in sys.path:  # as when run: the script's folder first on sys.path
        sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("plot_schedule", ROOT / "scripts" / "plot_schedule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_schedule_writes_a_png(adaptive_run, tmp_path, capsys):
    png = tmp_path / "schedule.png"
    assert _plot_script().main([str(adaptive_run[0]), "-o", str(png), "--positions", "0", "3", "7"]) == 0
    assert "positions [0, 3, 7]" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_plot_schedule_refuses_a_fixed_schedule_checkpoint(checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _plot_script().main([str(checkpoint), "-o", "x.png"])
    assert exit_info.value.code == 2
    assert "trained without --adaptive-schedule" in capsys.readouterr().err


def test_resuming_a_fixed_schedule_checkpoint_with_the_flag_on(checkpoint, data_bin, tmp_path, caplog):
    shutil.copy(checkpoint, tmp_path / "checkpoint_last.pt")
    with caplog.at_level("WARNING"):
        run_fairseq("train", train_args(data_bin, tmp_path, "--max-update", "31", *ADAPTIVE))
    assert "starting it afresh from the fixed sqrt schedule (F = " in caplog.text
    state = _state(tmp_path / "checkpoint_last.pt")
    factor = float(state["schedule.rescaling_factor"])  # auto, folded in (Eq. 8)
    assert torch.equal(state["schedule.alpha_bar_table"],
                       rescale(sqrt_table(100, 8), factor, variance_preserving=True)[0])
    assert state["schedule.loss_count"].sum() > 0  # update 31 was recorded


def test_adaptive_checkpoint_without_the_flag_is_refused(adaptive_run):
    from fairseq import checkpoint_utils

    with pytest.raises(ValueError, match="pass --adaptive-schedule to continue"):
        checkpoint_utils.load_model_ensemble([str(adaptive_run[0])], arg_overrides={"adaptive_schedule": False})


def test_flag_off_is_exactly_the_fixed_schedule():
    fixed = NoiseSchedule("sqrt", 100)
    adaptive = AdaptiveNoiseSchedule("sqrt", 100, positions=4, bucket_size=10, update_interval=5)
    t = torch.arange(101)
    assert torch.equal(adaptive.alpha_bar(t, 6), fixed.alpha_bar(t, 6).expand(-1, 6, -1))
    assert fixed.state_dict() == {}  # nothing saved: the named schedule is recomputed


def test_fold_divides_every_snr_by_f_squared_and_composes():
    schedule = AdaptiveNoiseSchedule("sqrt", 100, positions=3, bucket_size=10, update_interval=5)
    table = sqrt_table(100, 3)
    schedule.fold(3.0)
    folded = schedule.alpha_bar_table
    snr = lambda a: a[1:] / (1 - a[1:])  # noqa: E731
    assert torch.allclose(snr(folded), snr(table) / 9, rtol=1e-12) and torch.all(folded[0] == 1)
    assert float(schedule.rescaling_factor) == 3.0
    twice = AdaptiveNoiseSchedule("sqrt", 100, positions=3, bucket_size=10, update_interval=5)
    twice.fold(2.0)
    twice.fold(1.5)
    assert torch.allclose(twice.alpha_bar_table, folded, rtol=1e-12, atol=0)


def _flat_loss_statistics(schedule: AdaptiveNoiseSchedule) -> None:
    """Losses that rise only in the first bucket: a refit pushes ᾱ up (less noise) almost everywhere."""
    buckets = schedule.loss_sum.size(0)
    loss = torch.tensor([0.1] + [0.9 + 0.01 * s for s in range(1, buckets)], dtype=torch.float64)
    schedule.loss_sum.copy_(loss[:, None].expand_as(schedule.loss_sum) * 50)
    schedule.loss_count.fill_(50)


@pytest.mark.parametrize("flag", ["auto", "2"])
def test_rescaling_is_folded_into_the_table_and_auto_rederives_it_after_a_refit(flag):
    """The adaptive table is the training noise: F is folded in (Eq. 8) and the draw uses factor 1.
    With 'auto' the refit table, whose loss-linear spacing lowers the noise, gets the smallest F
    that brings its DGS back under --dgs-max folded in; a fixed F is folded only once."""
    from diffusion_plugin.diffusion.degeneration import search_rescaling_factor
    from test_model import make_model

    model = make_model(adaptive_schedule=True, adaptive_positions=4, adaptive_bucket_size=10,
                       adaptive_update_interval=2, rescaling_factor=flag, dgs_max=0.15)
    factor = float(model.cfg.rescaling_factor)  # the resolved F, written back for the checkpoint
    assert factor > 1 and model.rescaling_factor == 1.0
    initial = rescale(sqrt_table(50, 4), factor, variance_preserving=True)[0]
    assert torch.equal(model.schedule.alpha_bar_table, initial)
    assert float(model.schedule.rescaling_factor) == factor

    def dgs_factor(table):  # the smallest F that takes this table under --dgs-max (Eq. 8)
        return search_rescaling_factor(table, 0.15, vocab_size=24, dim=8, variance_preserving=True).factor

    _flat_loss_statistics(model.schedule)
    refit, _ = refit_table(model.schedule.alpha_bar_table, model.schedule.loss_sum,
                           model.schedule.loss_count, 10, 1)
    model.end_update(2)
    assert int(model.schedule.last_refit) == 2
    if flag == "2":
        assert torch.equal(model.schedule.alpha_bar_table, refit)
        assert float(model.schedule.rescaling_factor) == 1.0
        return
    again = dgs_factor(refit)
    assert again > 1  # the refit table alone degenerates
    assert float(model.schedule.rescaling_factor) == again
    assert torch.allclose(model.schedule.alpha_bar_table,
                          rescale(refit, again, variance_preserving=True)[0], rtol=1e-12, atol=0)
    assert dgs_factor(model.schedule.alpha_bar_table) == 1.0  # now within the threshold


def test_an_adaptive_checkpoint_from_before_the_fold_is_refused_unless_f_is_1():
    from test_model import make_model

    flags = dict(adaptive_schedule=True, adaptive_positions=4, adaptive_bucket_size=10,
                 adaptive_update_interval=2)
    old = {k: v for k, v in make_model(rescaling_factor="1", **flags).state_dict().items()
           if k != "schedule.rescaling_factor"}
    with pytest.raises(ValueError, match="applied outside its table .* retrain it"):
        make_model(rescaling_factor="3", **flags).load_state_dict(old)
    model = make_model(rescaling_factor="1", **flags)
    model.load_state_dict(old)
    assert float(model.schedule.rescaling_factor) == 1.0
