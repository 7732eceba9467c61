"""Degeneration score (Difformer Def. 1-2, Alg. 1-2) and the rescaling-factor search (Table 19)."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffusion_plugin.diffusion import degeneration as dg
from diffusion_plugin.diffusion.schedules import alphas_cumprod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "degeneration_score.py")


def _phi(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2.0)))


def _brute_force(vocab, dim, rule, a, b, **kw):
    """Algorithm 2 literally: classify every z = a e_v + b ε with argmax_y z·e_y − c ||e_y||²."""
    emb, tokens, noise = dg.draw_samples(vocab, dim, **kw)
    c = dg.rule_coefficient(rule, dim)
    norms = (emb * emb).sum(1)
    out = []
    for ai, bi in zip(a, b):
        z = float(ai) * emb[tokens] + float(bi) * noise
        out.append(((z @ emb.T - c * norms).argmax(1) == tokens).double().mean().item())
    return np.array(out)


@pytest.fixture(scope="module")
def est10k():
    """The Table 19 setting for V = 10K (d = 128, σ_e = 1, default rule/samples/timesteps)."""
    return dg.get_estimator(10000, 128, seed=0)


# ----------------------------------------------------------------------------- exact cases
def test_rule_coefficients():
    assert dg.rule_coefficient("distance", 128) == 0.5
    assert dg.rule_coefficient("distance+rounding", 128) == pytest.approx(1 / 130)
    assert dg.rule_coefficient("distance+rounding-sum", 7) == pytest.approx(1 / 3)
    assert dg.DEFAULT_RULE == "distance+rounding"


@pytest.mark.parametrize("rule", ["distance", "distance+rounding"])
def test_clean_embeddings_are_always_recovered(rule):
    # ᾱ = 1, β̄ = 0: z_t = e_v; nearest is e_v itself (and with d = 128 also for the rounding rule)
    dim = 8 if rule == "distance" else 128
    est = dg.DegenerationEstimator(200, dim, rule=rule, num_queries=None, seed=1)
    table = np.ones(11)
    for factor in (0.0, 1.0, 7.5):
        assert est.dgs(table, factor) == 1.0
        assert est.dgs(table, factor, variance_preserving=True) == 1.0
    assert np.all(est.dgs_t(table, 3.0)[1] == 1.0)


def test_pure_noise_gives_one_over_v():
    # ᾱ = 0: z = F ε carries no information; averaged over all tokens the accuracy is exactly 1/V
    # in expectation (each z picks one token).  V = 10, 10 x 400 samples: sd ≈ 0.005.
    vocab = 10
    est = dg.DegenerationEstimator(vocab, 16, num_queries=None, draws=400, seed=2)
    table = np.concatenate([[1.0], np.zeros(20)])
    dgs_t = est.dgs_t(table, 1.0, num_timesteps=None)[1]
    assert dgs_t[0] == 1.0  # t = 0 is the clean state
    assert abs(dgs_t[1:].mean() - 1 / vocab) < 0.02
    # heavy but not total noise on a named schedule tends to 1/V too
    _, dgs_t = est.dgs_t(alphas_cumprod("linear", 1000), 50.0, num_timesteps=None)
    assert abs(dgs_t[-200:].mean() - 1 / vocab) < 0.02


@pytest.mark.parametrize("rule", ["distance", "distance+rounding"])
def test_two_tokens_closed_form(rule):
    # V = 2, fixed (seeded) embeddings: v is chosen iff z·w > c (||e_v||² − ||e_u||²), w = e_v − e_u,
    # and z·w = a e_v·w + b ε·w with ε·w ~ N(0, ||w||²)  =>  P = Φ((a e_v·w − cΔ) / (b ||w||)).
    dim, draws = 4, 20000
    est = dg.DegenerationEstimator(2, dim, rule=rule, num_queries=None, draws=draws, seed=3)
    emb, _, _ = dg.draw_samples(2, dim, num_queries=None, draws=draws, seed=3)
    c = dg.rule_coefficient(rule, dim)
    e = emb.double().numpy()
    norms = (e * e).sum(1)

    def closed_form(a, b):
        total = 0.0
        for v, u in ((0, 1), (1, 0)):
            w = e[v] - e[u]
            total += _phi((a * (e[v] @ w) - c * (norms[v] - norms[u])) / (b * np.linalg.norm(w)))
        return total / 2

    a = np.array([0.25, 0.5, 0.75, 1.0])  # nodes of the a-grid: no interpolation
    b = np.array([0.5, 2.0, 1.0, 3.0])
    exact = np.array([closed_form(x, y) for x, y in zip(a, b)])
    np.testing.assert_allclose(est.accuracy(a, b), exact, atol=0.015)
    # a whole schedule (interpolated between nodes), Eq. 3 with F = 1.5
    table = alphas_cumprod("sqrt", 40)
    t = np.arange(41)
    ab = np.sqrt(table[t])
    bb = 1.5 * np.sqrt(1 - table[t])
    expected = closed_form(ab, np.maximum(bb, 1e-300))  # t = 0: b -> 0+
    assert est.dgs(table, 1.5, num_timesteps=None) == pytest.approx(expected.mean(), abs=0.012)


@pytest.mark.parametrize("rule", dg.RULES)
def test_matches_literal_algorithm_2(rule):
    # the candidate pruning is exact: same draws, same answers as the argmax over all V tokens
    vocab, dim = 400, 24
    est = dg.DegenerationEstimator(vocab, dim, rule=rule, num_queries=160, draws=2, seed=4, candidates=8)
    rng = np.random.default_rng(0)
    a = est.nodes.numpy()[rng.integers(0, est.nodes.numel(), 25)]
    b = rng.uniform(0.0, 3.0, 25)
    ref = _brute_force(vocab, dim, rule, a, b, num_queries=160, draws=2, seed=4)
    np.testing.assert_array_equal(est.accuracy(a, b), ref)


# ----------------------------------------------------------------------------- behaviour
def test_monotone_in_factor():
    est = dg.DegenerationEstimator(1000, 128, num_queries=512, seed=5)
    for name in ("linear", "cosine", "sqrt"):
        for vp in (False, True):
            curve = est.curve(alphas_cumprod(name, 500), variance_preserving=vp, num_timesteps=None)
            values = np.array([curve(f) for f in np.arange(0.5, 30.0, 0.5)])
            one_sample = 1.0 / (est.num_samples * len(curve.timesteps))
            assert np.diff(values).max() <= 2 * one_sample
            assert values[0] > 0.5 and values[-1] < 0.1


def test_bisection_equals_linear_scan(est10k):
    curve = est10k.curve(alphas_cumprod("cosine", 2000))
    for th in (0.05, 0.12, 0.3, 0.77, 0.9):
        linear = dg.search_on_curve(curve, th)
        bisect = dg.search_on_curve(curve, th, bisection=True)
        assert linear[0] == bisect[0] and linear[1] == bisect[1] <= th
        if linear[0] > 1.0:
            assert curve(linear[0] - 0.5) > th
        if th == 0.05:  # F ≈ 41: 81 evaluations for the scan, 9 for the bisection
            assert len(linear[2]) == 2 * (linear[0] - 1) + 1 and len(bisect[2]) <= 10
    # a synthetic decreasing curve: DGS = 1/F  ->  smallest grid F >= 1/th
    for th in (0.3, 0.07, 0.011):
        expected = math.ceil((1 / th - 1) / 0.5 - 1e-9) * 0.5 + 1
        for bis in (False, True):
            assert dg.search_on_curve(lambda f: 1 / f, th, bisection=bis)[0] == expected


def test_table19_cells_and_table2(est10k):
    # Table 2 (V = 10K): sqrt 0.77, linear 0.47 without rescaling
    assert est10k.dgs(alphas_cumprod("sqrt", 2000)) == pytest.approx(0.77, abs=0.01)
    assert est10k.dgs(alphas_cumprod("linear", 2000)) == pytest.approx(0.47, abs=0.01)
    # Table 19, V = 10K, ΔF = 0.5: paper value (None = '-', no rescaling needed)
    cells = {
        ("sqrt", 0.05): 7.0, ("sqrt", 0.10): 5.0, ("sqrt", 0.15): 4.0, ("sqrt", 0.50): 2.0,
        ("cosine", 0.05): 41.0, ("cosine", 0.30): 6.0, ("cosine", 0.50): 3.0,
        ("linear", 0.15): 6.0, ("linear", 0.30): 2.5, ("linear", 0.50): None,
    }
    for (name, th), paper in cells.items():
        res = dg.search_rescaling_factor(
            alphas_cumprod(name, 2000), th, 10000, 128, estimator=est10k, bisection=True
        )
        assert res.dgs <= th and res.dgs == pytest.approx(res.dgs_t.mean())
        if paper is None:
            assert res.factor == 1.0
        else:
            assert abs(res.factor - paper) <= 0.5, (name, th, res.factor, paper)
    # the cells that every seed reproduces exactly
    table = dg.rescaling_table(["sqrt", "linear"], [10000], [0.05, 0.5], seed=0)  # same estimator
    assert table[("sqrt", 10000, 0.05)].factor == 7.0
    assert table[("sqrt", 10000, 0.5)].factor == 2.0
    assert table[("linear", 10000, 0.5)] is None


def test_per_position_table():
    est = dg.DegenerationEstimator(500, 64, num_queries=256, seed=6)
    sqrt, cosine = alphas_cumprod("sqrt", 100), alphas_cumprod("cosine", 100)
    same = np.stack([sqrt] * 3, axis=1)
    assert est.dgs(same, 2.0) == pytest.approx(est.dgs(sqrt, 2.0), abs=1e-12)
    mixed = torch.tensor(np.stack([sqrt, cosine], axis=1))
    expected = (est.dgs(sqrt, 2.0) + est.dgs(cosine, 2.0)) / 2
    assert est.dgs(mixed, 2.0, max_positions=None) == pytest.approx(expected, abs=1e-12)
    assert est.dgs(mixed, 2.0, variance_preserving=True) == pytest.approx(
        (est.dgs(sqrt, 2.0, variance_preserving=True) + est.dgs(cosine, 2.0, variance_preserving=True)) / 2,
        abs=1e-12,
    )
    # Eq. 8 with F = 1 is the identity for ᾱ + β̄ = 1
    assert est.dgs(sqrt, 1.0, variance_preserving=True) == pytest.approx(est.dgs(sqrt, 1.0), abs=1e-3)


def test_reproducible_with_seed():
    table = alphas_cumprod("sqrt", 200)
    kw = dict(num_queries=256, draws=2)
    first = dg.DegenerationEstimator(800, 32, seed=11, **kw)
    second = dg.DegenerationEstimator(800, 32, seed=11, chunk_elements=50_000, **kw)
    other = dg.DegenerationEstimator(800, 32, seed=12, **kw)
    for f in (1.0, 2.5):
        assert first.dgs(table, f) == second.dgs(table, f)
        assert np.array_equal(first.dgs_t(table, f)[1], second.dgs_t(table, f)[1])
    assert first.dgs(table, 1.0) != other.dgs(table, 1.0)
    assert abs(first.dgs(table, 1.0) - other.dgs(table, 1.0)) < 0.05
    r1 = dg.search_rescaling_factor(table, 0.2, 800, 32, seed=11, **kw)
    r2 = dg.search_rescaling_factor(table, 0.2, 800, 32, seed=11, **kw)
    assert (r1.factor, r1.dgs) == (r2.factor, r2.dgs)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), "0.1", None])
def test_dgs_max_outside_open_unit_interval(bad):
    with pytest.raises(ValueError, match=r"dgs_max must be a number in the open interval \(0, 1\)"):
        dg.search_rescaling_factor(alphas_cumprod("sqrt", 10), bad, 50, 8)


@pytest.mark.parametrize("vocab,dim,name", [(0, 8, "vocab_size"), (10, 0, "dim"), (-3, 8, "vocab_size"), (10, 2.5, "dim")])
def test_vocab_and_dim_must_be_positive(vocab, dim, name):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        dg.search_rescaling_factor(alphas_cumprod("sqrt", 10), 0.1, vocab, dim)
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        dg.DegenerationEstimator(vocab, dim)


def test_unreachable_threshold_reports_best_factor():
    est = dg.DegenerationEstimator(1000, 128, num_queries=256, seed=7)
    table = alphas_cumprod("sqrt", 2000)
    for bisection in (False, True):
        with pytest.raises(dg.ThresholdNotReachedError) as info:
            dg.search_rescaling_factor(table, 0.01, 1000, 128, max_factor=3.0, estimator=est, bisection=bisection)
        err = info.value
        assert isinstance(err, ValueError)
        assert err.best_factor == 3.0 and err.best_dgs == pytest.approx(est.dgs(table, 3.0))
        assert "F <= 3" in str(err) and "best is F=3 with DGS=" in str(err)


def test_other_bad_inputs():
    table = alphas_cumprod("sqrt", 10)
    est = dg.DegenerationEstimator(50, 8, num_queries=20)
    with pytest.raises(ValueError, match="unknown degenerated-model rule"):
        dg.DegenerationEstimator(50, 8, rule="cosine")
    with pytest.raises(ValueError, match="rescaling factor must be a finite number >= 0"):
        est.dgs(table, -1.0)
    with pytest.raises(ValueError, match=r"\[T\+1\] table"):
        est.dgs(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        est.dgs(np.array([1.0, 0.5, 1.2]))
    with pytest.raises(ValueError, match="step must be"):
        dg.search_rescaling_factor(table, 0.5, 50, 8, step=0.0, estimator=est)
    with pytest.raises(ValueError, match="max_factor must be"):
        dg.search_rescaling_factor(table, 0.5, 50, 8, max_factor=0.5, estimator=est)


# ----------------------------------------------------------------------------- CLI
def _cli(capsys, *argv):
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import degeneration_score as cli
    finally:
        sys.path.pop(0)
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_search_factor_and_table(capsys):
    code, out, _ = _cli(capsys, "--schedule", "sqrt", "--vocab-size", "600", "--dim", "32",
                        "--dgs-max", "0.2", "--num-queries", "200", "--no-progress")
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("rescaling_factor=") and " dgs=" in last
    f = float(last.split()[0].split("=")[1])
    code, out, _ = _cli(capsys, "--schedule", "sqrt", "--vocab-size", "600", "--dim", "32",
                        "--dgs-max", "0.2", "--num-queries", "200", "--no-progress", "--bisection")
    assert code == 0 and float(out.strip().splitlines()[-1].split()[0].split("=")[1]) == f
    code, out, _ = _cli(capsys, "--vocab-size", "600", "--dim", "32", "--factor", "1",
                        "--num-queries", "200", "--no-progress", "--vp")
    assert code == 0 and out.strip().splitlines()[-1].startswith("rescaling_factor=1 dgs=")
    code, out, _ = _cli(capsys, "--table", "--vocab-sizes", "600,900", "--dim", "32",
                        "--schedules", "linear,sqrt", "--thresholds", "0.1,0.6",
                        "--num-queries", "200", "--no-progress")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["DGS_max", "Linear", "Sqrt"]
    assert lines[1].split() == ["600", "900", "600", "900"]
    assert lines[2].startswith("0.10") and lines[3].startswith("0.60")
    assert len(lines[2].split()) == 5


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--dgs-max", "1.5"], "open interval (0, 1)"),
        (["--dgs-max", "0"], "open interval (0, 1)"),
        (["--vocab-size", "0"], "expected an integer >= 1"),
        (["--dim", "-4"], "expected an integer >= 1"),
        (["--schedule", "cubic"], "unknown schedule"),
        (["--vocab-sizes", "10,x"], "expected an integer >= 1"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_cli_bad_arguments(capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        _cli(capsys, *argv)
    assert info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("degeneration_score.py: error:")


def test_cli_unreachable_threshold_is_one_line(capsys):
    code, out, err = _cli(capsys, "--vocab-size", "300", "--dim", "32", "--dgs-max", "0.001",
                          "--max-factor", "2", "--num-queries", "100", "--no-progress")
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "not reached" in lines[0] and "best is F=2" in lines[0]


def test_cli_script_runs_from_repo_root():
    # as `python scripts/degeneration_score.py ...`: argparse error, exit 2, no traceback
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--dgs-max", "2", "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("INFO:")]
    assert len(lines) == 1 and "DGS_max in the open interval (0, 1)" in lines[0]


def test_cli_plot_writes_a_png(capsys, tmp_path):
    out_png = tmp_path / "dgs.png"
    code, out, _ = _cli(capsys, "--schedule", "sqrt", "--vocab-size", "300", "--dim", "16",
                        "--dgs-max", "0.3", "--num-queries", "100", "--no-progress",
                        "--plot", str(out_png))
    assert code == 0 and out.strip().splitlines()[-1].startswith("rescaling_factor=")
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 10_000
