"""Forward noising, posterior, DDIM and respacing against closed forms."""
import math

import pytest
import torch

from diffusion_plugin.diffusion.samplers import (
    Transition,
    ddim_transition,
    ddpm_transition,
    posterior,
    prior_transition,
    q_sample,
    respaced_timesteps,
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
        assert all(torch.equal(a, b) for a, b in zip(stacked.at(k), one))
    z_t, z0_hat, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4).bfloat16(), torch.randn(2, 3, 4)
    step = Transition(torch.tensor(0.5), torch.tensor(2.0), torch.tensor(0.25))
    out = step.apply(z_t, z0_hat, eps)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, 0.5 * z0_hat.float() + 2.0 * z_t + 0.25 * eps)
    prior = prior_transition(s[3], n[3])
    torch.testing.assert_close(
        prior.apply(z_t, z0_hat.float(), eps), q_sample(z0_hat.float(), s[3], n[3], eps)
    )


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
