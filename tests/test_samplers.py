"""Forward noising, posterior, DDIM and respacing against closed forms."""
import math

import pytest
import torch

from diffusion_plugin.diffusion.samplers import (
    SAMPLERS,
    Transition,
    ddim_transition,
    ddpm_transition,
    dpm_solver_transitions,
    posterior,
    prior_transition,
    q_sample,
    respaced_timesteps,
    spaced_timesteps,
    strictly_decreasing,
)
from diffusion_plugin.diffusion.schedules import alphas_cumprod, rescale
from diffusion_plugin.diffusion.selection import add_one_sentence_bleu, mbr_utilities


def test_q_sample_mean_and_variance():
    torch.manual_seed(0)
    z0 = torch.tensor([1.5, -2.0, 0.25])
    abar, factor = 0.36, 2.0
    signal, noise_var = rescale(torch.tensor(abar), factor)
    draws = q_sample(z0.expand(200_000, 3), signal, noise_var, torch.randn(200_000, 3))
    torch.testing.assert_close(draws.mean(0), 0.6 * z0, atol=0.02, rtol=0)
    expected_var = factor**2 * (1 - abar)  # F² β̄ = 2.56
    torch.testing.assert_close(draws.var(0), torch.full((3,), expected_var), atol=0.03, rtol=0)


def test_posterior_matches_ddpm_closed_form():
    abar = torch.from_numpy(alphas_cumprod("sqrt", 50))
    t, s = 30, 29
    alpha = abar[t] / abar[s]
    beta = 1 - alpha
    c0, ct, var = posterior(abar[t], 1 - abar[t], abar[s], 1 - abar[s])
    assert c0.item() == pytest.approx(math.sqrt(abar[s]) * beta / (1 - abar[t]))
    assert ct.item() == pytest.approx(math.sqrt(alpha) * (1 - abar[s]) / (1 - abar[t]))
    assert var.item() == pytest.approx((1 - abar[s]) * beta / (1 - abar[t]))


@pytest.mark.parametrize("factor,vp", [(1.0, False), (4.0, False), (4.0, True)])
def test_posterior_preserves_marginals(factor, vp):
    """If z_t ~ q(z_t|z_0) and z_s ~ q(z_s|z_t,z_0) then z_s ~ q(z_s|z_0): c0 + ct·a_t = a_s and
    ct²σ_t² + var = σ_s², for skipped steps and rescaled (non-VP) schedules alike."""
    abar = torch.from_numpy(alphas_cumprod("cosine", 100))
    signal, noise = rescale(abar, factor, vp)
    for t, s in [(100, 80), (50, 49), (10, 0)]:
        c0, ct, var = posterior(signal[t], noise[t], signal[s], noise[s])
        assert (c0 + ct * signal[t].sqrt()).item() == pytest.approx(signal[s].sqrt().item())
        assert (ct**2 * noise[t] + var).item() == pytest.approx(noise[s].item(), abs=1e-12)


def test_last_step_returns_prediction():
    z_t, z0_hat = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    one, zero = torch.tensor(1.0), torch.tensor(0.0)
    signal_t, noise_t = torch.tensor(0.7), torch.tensor(0.3)
    out = ddpm_transition(signal_t, noise_t, one, zero).apply(z_t, z0_hat, torch.randn_like(z_t))
    torch.testing.assert_close(out, z0_hat)
    out = ddim_transition(signal_t, noise_t, one, zero, 0.0).apply(z_t, z0_hat, None)
    torch.testing.assert_close(out, z0_hat)


def test_ddim_eta_zero_is_deterministic_closed_form_and_eta_one_is_ddpm():
    abar = torch.from_numpy(alphas_cumprod("sqrt", 200)).float()
    z_t, z0_hat = torch.randn(5, 8), torch.randn(5, 8)
    t, s = 200, 150
    a_t, a_s = abar[t], abar[s]
    deterministic = ddim_transition(a_t, 1 - a_t, a_s, 1 - a_s, 0.0)
    assert deterministic.std.item() == 0.0
    out = deterministic.apply(z_t, z0_hat, torch.randn(5, 8))
    eps = (z_t - a_t.sqrt() * z0_hat) / (1 - a_t).sqrt()
    torch.testing.assert_close(out, a_s.sqrt() * z0_hat + (1 - a_s).sqrt() * eps)
    noise = torch.randn(5, 8)
    ddim = ddim_transition(a_t, 1 - a_t, a_s, 1 - a_s, 1.0).apply(z_t, z0_hat, noise)
    ddpm = ddpm_transition(a_t, 1 - a_t, a_s, 1 - a_s).apply(z_t, z0_hat, noise)
    torch.testing.assert_close(ddim, ddpm, atol=1e-5, rtol=1e-5)


def test_transitions_stacked_over_steps_equal_each_step():
    """A chain's transitions computed at once (dimension 0 = step) equal those of each step;
    apply = c0·ẑ_0 + ct·z_t + std·ε in z_t's precision; the prior step ignores z_t."""
    signal, noise = rescale(torch.from_numpy(alphas_cumprod("sqrt", 100)).float(), 4.0)
    taus = respaced_timesteps(100, 5)
    s, n = signal[taus].view(6, 1, 1), noise[taus].view(6, 1, 1)
    stacked = ddpm_transition(s[:-1], n[:-1], s[1:], n[1:])
    for k in range(5):
        one = ddpm_transition(s[k], n[k], s[k + 1], n[k + 1])
        assert all(torch.equal(a, b) for a, b in zip(stacked.at(k)[:3], one[:3]))
        assert stacked.at(k).c_past == one.c_past == ()
    z_t, z0_hat, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4).bfloat16(), torch.randn(2, 3, 4)
    step = Transition(torch.tensor(0.5), torch.tensor(2.0), torch.tensor(0.25))
    out = step.apply(z_t, z0_hat, eps)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, 0.5 * z0_hat.float() + 2.0 * z_t + 0.25 * eps)
    prior = prior_transition(s[3], n[3])
    torch.testing.assert_close(
        prior.apply(z_t, z0_hat.float(), eps), q_sample(z0_hat.float(), s[3], n[3], eps)
    )


def chain(name="sqrt", steps=2000, k=5, factor=1.0, positions=1):
    """(ᾱ'_τ, β̄'_τ) of a respaced chain, [K + 1, P, 1] (P > 1: per-position, made-up tables)."""
    abar = torch.from_numpy(alphas_cumprod(name, steps))[respaced_timesteps(steps, k)]
    abar = abar.view(-1, 1, 1) ** torch.linspace(1.0, 1.3, positions).view(1, -1, 1)
    return rescale(abar, factor)


@pytest.mark.parametrize("factor, positions", [(1.0, 1), (4.5, 1), (1.0, 3)])
def test_dpm_solver_order_1_is_ddim_eta_0(factor, positions):
    """DPM-Solver++ order 1 is DDIM with η = 0, step by step, to float64 precision (rescaled
    non-VP schedules and per-position tables too)."""
    signal, noise = chain(factor=factor, positions=positions)
    dpm = dpm_solver_transitions(signal, noise, 1)
    ddim = ddim_transition(signal[:-1], noise[:-1], signal[1:], noise[1:], 0.0)
    assert dpm.c_past == () and float(dpm.std.abs().max()) == 0.0
    torch.testing.assert_close(dpm.c0, ddim.c0, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(dpm.ct, ddim.ct, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_lands_on_a_constant_prediction(order):
    """A denoiser that always returns the same x̂: every order's chain ends on it at τ = 0."""
    torch.manual_seed(0)
    signal, noise = chain(k=6, factor=2.0)
    steps = dpm_solver_transitions(signal.float(), noise.float(), order)
    x0, z = torch.randn(3, 8), torch.randn(3, 8) * noise[0].sqrt().float()
    past = []
    for k in range(6):
        z = steps.at(k).apply(z, x0, None, past[::-1])
        past = (past + [x0])[-(order - 1):] if order > 1 else []
    torch.testing.assert_close(z, x0, atol=1e-5, rtol=1e-5)


def exact_step(sigma_t, sigma_s, lam_t, lam_s, z_t, a, b, c):
    """The data-prediction ODE z_s = (σ_s/σ_t) z_t + σ_s ∫_{λ_t}^{λ_s} e^λ x̂(λ) dλ in closed
    form for x̂(λ) = a + bλ + cλ²: ∫ e^λ p = e^λ (a + b(λ − 1) + c(λ² − 2λ + 2))."""

    def primitive(l):
        return l.exp() * (a + b * (l - 1) + c * (l**2 - 2 * l + 2))

    return sigma_s / sigma_t * z_t + sigma_s * (primitive(lam_s) - primitive(lam_t))


def test_dpm_solver_3_steps_are_exact_for_quadratic_predictions():
    """Order 3 integrates the quadratic through the last three predictions exactly (the
    exponential integrator's φ-weights), on a rescaled per-position chain: a step is exact for
    x̂(λ) = a + bλ + cλ²; order 2 is not."""
    signal, noise = chain(k=8, factor=1.5, positions=2)
    sigma, lam = noise.sqrt(), (signal.sqrt() / noise.sqrt()).log()
    a, b, c = 0.7, -0.4, 0.15
    x_hat = a + b * lam + c * lam**2
    z_t = torch.tensor(0.3, dtype=torch.float64).expand_as(x_hat[0])
    third, second = dpm_solver_transitions(signal, noise, 3), dpm_solver_transitions(signal, noise, 2)
    for k in range(2, 7):  # the last step (to σ = 0) excluded: λ = ∞
        exact = exact_step(sigma[k], sigma[k + 1], lam[k], lam[k + 1], z_t, a, b, c)
        got = third.at(k).apply(z_t, x_hat[k], None, [x_hat[k - 1], x_hat[k - 2]])
        torch.testing.assert_close(got, exact, atol=1e-10, rtol=1e-10)
        got = second.at(k).apply(z_t, x_hat[k], None, [x_hat[k - 1]])
        assert not torch.allclose(got, exact, atol=1e-6)
    with pytest.raises(ValueError, match="--dpm-solver-order must be 1, 2 or 3, got 4"):
        dpm_solver_transitions(signal, noise, 4)


@pytest.mark.parametrize("order, slope", [(1, 2), (2, 3)])
def test_dpm_solver_local_error_shrinks_with_the_order(order, slope):
    """For a smooth x̂(λ) a step of order m has local error O(h^(m+1)) (DPM-Solver++ 2M:
    x̂_0 + (x̂_0 − x̂_1)/(2r)): halving h (same r = h_prev/h) divides it by about 2^(m+1)."""

    def step_error(h):
        lam = torch.tensor([-0.2 - 0.8 * h, -0.2, -0.2 + h], dtype=torch.float64)  # r = 0.8
        signal = torch.sigmoid(2 * lam)  # VP: α² = 1/(1 + e^(−2λ)), σ² = 1 − α²
        noise = 1 - signal
        x_hat = (lam * 1.3).sin()  # not a polynomial
        z_t = torch.tensor(0.3, dtype=torch.float64)
        got = dpm_solver_transitions(signal, noise, order).at(1).apply(z_t, x_hat[1], None, [x_hat[0]])
        grid = torch.linspace(lam[1], lam[2], 20001, dtype=torch.float64)
        integral = torch.trapezoid(grid.exp() * (grid * 1.3).sin(), grid)
        exact = noise[2].sqrt() / noise[1].sqrt() * z_t + noise[2].sqrt() * integral
        return float((got - exact).abs())

    ratio = step_error(0.2) / step_error(0.1)
    assert 2 ** slope * 0.8 < ratio < 2 ** slope * 1.25, ratio


def test_respacing_keeps_alpha_bar_at_chosen_steps():
    T, K = 2000, 20
    taus = respaced_timesteps(T, K)
    assert taus.tolist()[:3] == [2000, 1900, 1800] and taus[-1] == 0 and len(taus) == K + 1
    assert respaced_timesteps(7, 7).tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
    abar = alphas_cumprod("sqrt", T)
    per_step_alpha = [abar[taus[k]] / abar[taus[k + 1]] for k in range(K)]
    assert math.prod(per_step_alpha) == pytest.approx(abar[T])
    with pytest.raises(ValueError, match=r"--decoding-steps must be in \[1, --diffusion-steps=100\], got 101"):
        respaced_timesteps(100, 101)
    with pytest.raises(ValueError, match="got 0"):
        respaced_timesteps(100, 0)


def test_add_one_sentence_bleu_and_mbr_pick_the_consensus():
    assert add_one_sentence_bleu([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert add_one_sentence_bleu([], [1, 2]) == 0.0
    # p1 = 2/3, p2 = (1+1)/(2+1), p3 = (0+1)/(1+1), p4 = (0+1)/(0+1); BP = 1 (h=3 >= r=3)
    expected = math.exp((math.log(2 / 3) + math.log(2 / 3) + math.log(1 / 2) + 0) / 4)
    assert add_one_sentence_bleu([1, 2, 9], [1, 2, 3]) == pytest.approx(expected)
    candidates = [[5, 6, 7, 8, 9], [1, 2, 3, 4, 5], [1, 2, 3, 4, 6], [1, 2, 3, 9, 5]]
    utilities = mbr_utilities(candidates)
    assert max(range(4), key=utilities.__getitem__) == 1


def test_decoding_timesteps_spacings():
    """--decoding-timesteps: uniform = respaced_timesteps; quadratic τ_j = T((K − j)/K)²;
    logsnr evenly spaced in λ = ½ log(ᾱ'/β̄') of the rescaled (per-position: averaged) schedule
    from λ_T to λ_1, each τ the integer t nearest its λ; all from T down to 0, no repeats."""
    abar = torch.from_numpy(alphas_cumprod("cosine", 1000))
    assert torch.equal(spaced_timesteps(abar, 10, "uniform"), respaced_timesteps(1000, 10))
    assert spaced_timesteps(abar, 5, "quadratic").tolist() == [1000, 640, 360, 160, 40, 0]
    for factor, table in [(1.0, abar), (3.0, abar), (1.0, abar[:, None] ** torch.tensor([1.0, 1.2]))]:
        taus = spaced_timesteps(table, 8, "logsnr", factor)
        signal, noise = rescale(table.reshape(1001, -1), factor)
        lam = (0.5 * (signal / noise).log()).mean(dim=1)
        assert taus[0] == 1000 and taus[-2] == 1 and taus[-1] == 0 and len(taus) == 9
        assert bool((taus[:-1] > taus[1:]).all())
        targets = torch.linspace(float(lam[1000]), float(lam[1]), 8, dtype=torch.float64)
        for tau, target in zip(taus[:-1].tolist(), targets):
            best = min(range(1, 1001), key=lambda t: abs(float(lam[t]) - float(target)))
            assert tau == best or abs(tau - best) <= 8  # nearest, or raised/lowered past a repeat
    assert spaced_timesteps(abar, 1, "logsnr").tolist() == [1000, 0]
    assert spaced_timesteps(torch.from_numpy(alphas_cumprod("sqrt", 6)), 6, "quadratic").tolist() == [6, 5, 4, 3, 2, 1, 0]
    assert strictly_decreasing(torch.tensor([9, 9, 9, 2, 2, 0])).tolist() == [9, 8, 7, 2, 1, 0]
    assert strictly_decreasing(torch.tensor([5, 7, 3, 0, 0, 0])).tolist() == [5, 4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="--decoding-timesteps must be one of"):
        spaced_timesteps(abar, 5, "karras")
    with pytest.raises(ValueError, match=r"--decoding-steps must be in \[1, --diffusion-steps=1000\], got 1001"):
        spaced_timesteps(abar, 1001, "quadratic")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("factor, positions", [(1.0, 1), (3.0, 2)])
def test_every_registered_sampler_lands_on_a_perfect_prediction(name, factor, positions):
    """The contract of a --decoding-sampler, over every registered one: stacked transitions of
    one step per chain step; driven by ReverseChain with a denoiser that returns the clean z_0
    (and its own seeded draws), the chain ends on z_0 at τ = 0 (rescaled, per-position tables);
    its flag check accepts the defaults."""
    from diffusion_plugin.diffusion.noise import SentenceNoise
    from diffusion_plugin.diffusion.reverse_chain import ReverseChain
    from diffusion_plugin.generator import DecodingConfig

    options = {**vars(DecodingConfig()), "decoding_sampler": name, "ddim_eta": 0.0 if name != "ddim" else 0.5}
    SAMPLERS[name].check(options)
    signal, noise = chain(k=6, factor=factor, positions=positions)
    signal, noise = signal.float(), noise.float()
    steps = SAMPLERS[name].transitions(signal, noise, options)
    assert steps.c0.shape[0] == steps.ct.shape[0] == steps.std.shape[0] == 6
    lengths = torch.tensor([positions, positions])
    draws = SentenceNoise(11, [0, 1], 1, lengths, 4)
    reverse = ReverseChain(signal, noise, respaced_timesteps(2000, 6), options, draws)
    z0 = torch.randn(2, positions, 4, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(2, positions, dtype=torch.bool)
    start = reverse.initial(mask, torch.float32)  # N(0, β̄'_T): with F, F times the schedule's std
    torch.testing.assert_close(start, noise[0].sqrt() * SentenceNoise(11, [0, 1], 1, lengths, 4).normal(z0.device, torch.float32))
    z = signal[0].sqrt() * z0 + start
    for k in range(6):
        z = reverse.step(z, z0, k, mask)
    torch.testing.assert_close(z, z0, atol=1e-4, rtol=1e-4)
