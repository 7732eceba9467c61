"""Schedules and rescaling against closed forms (no fairseq import needed)."""
import math

import numpy as np
import pytest
import torch

from diffusion_plugin.diffusion.schedules import (
    NoiseSchedule,
    alphas_cumprod,
    named_betas,
    rescale,
)


def test_linear_schedule_hand_values():
    betas = named_betas("linear", 1000)
    assert betas[0] == pytest.approx(1e-4)
    assert betas[-1] == pytest.approx(0.02)
    assert betas[499] == pytest.approx(1e-4 + 499 * (0.02 - 1e-4) / 999)
    # T = 4: betas scale by 1000/T
    small = named_betas("linear", 4)
    np.testing.assert_allclose(small, [0.025, 0.025 + 4.975 / 3, 0.025 + 2 * 4.975 / 3, 5.0])
    abar = alphas_cumprod("linear", 1000)
    assert abar[0] == 1.0
    assert abar[2] == pytest.approx((1 - 1e-4) * (1 - (1e-4 + (0.02 - 1e-4) / 999)))


def test_cosine_schedule_matches_closed_form_until_clipping():
    T = 10
    f = lambda tau: math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    abar = alphas_cumprod("cosine", T)
    for t in range(1, T):
        assert abar[t] == pytest.approx(f(t / T) / f(0), rel=1e-12)
    # f(1) = cos²(π/2) = 0 would give β_T = 1: clipped to 0.999
    assert named_betas("cosine", T)[-1] == pytest.approx(0.999)
    assert abar[T] == pytest.approx(abar[T - 1] * 0.001)


def test_sqrt_schedule_matches_closed_form():
    T = 4
    f = lambda tau: 1 - math.sqrt(tau + 1e-4)  # noqa: E731
    abar = alphas_cumprod("sqrt", T)
    assert abar[1] == pytest.approx((1 - math.sqrt(0.2501)) / 0.99)
    assert abar[1] == pytest.approx(0.5049495, rel=1e-6)
    assert abar[2] == pytest.approx(f(0.5) / f(0))
    assert abar[3] == pytest.approx(f(0.75) / f(0))
    # f(1) < 0: β_T clipped at 0.999
    assert abar[4] == pytest.approx(abar[3] * 0.001)
    assert np.all(np.diff(alphas_cumprod("sqrt", 2000)) < 0)


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'.*linear, cosine, sqrt"):
        named_betas("quadratic", 10)
    with pytest.raises(ValueError, match="diffusion-steps must be >= 1"):
        named_betas("sqrt", 0)


def test_rescaling_plain_and_variance_preserving():
    abar = np.array([1.0, 0.9, 0.5, 0.1])
    signal, noise = rescale(abar, 4.0)
    np.testing.assert_allclose(signal, abar)
    np.testing.assert_allclose(noise, 16 * (1 - abar))
    signal, noise = rescale(abar, 4.0, variance_preserving=True)
    np.testing.assert_allclose(signal + noise, 1.0)
    snr = abar[1:] / (1 - abar[1:])
    np.testing.assert_allclose(signal[1:] / noise[1:], snr / 16)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rescaling factor must be a finite number >= 0"):
            rescale(abar, bad)


def test_noise_schedule_module_gathers_and_keeps_float64():
    schedule = NoiseSchedule("sqrt", 100)
    t = torch.tensor([0, 1, 100])
    abar = schedule.alpha_bar(t, length=7)
    assert abar.shape == (3, 1, 1)
    expected = torch.from_numpy(alphas_cumprod("sqrt", 100))[t]
    torch.testing.assert_close(abar[:, 0, 0], expected)
    schedule.half()
    assert schedule.alpha_bar_table.dtype == torch.float64
    signal, noise = schedule.coefficients(t, 7, factor=2.0, dtype=torch.float16)
    assert signal.dtype == torch.float16
    torch.testing.assert_close(noise[:, 0, 0].double(), 4 * (1 - expected), atol=1e-3, rtol=1e-3)


def test_per_position_table_reuses_last_column():
    schedule = NoiseSchedule("linear", 10)
    base = schedule.alpha_bar_table
    schedule.alpha_bar_table = torch.cat([base, base**2, base**3], dim=1)
    abar = schedule.alpha_bar(torch.tensor([5, 5]), length=5)
    assert abar.shape == (2, 5, 1)
    torch.testing.assert_close(abar[0, :, 0], torch.stack([base[5, 0], base[5, 0] ** 2] + [base[5, 0] ** 3] * 3))
