"""PSNR and SSIM against values worked out by hand from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmagents.eval.image_metrics import psnr, ssim


def test_psnr_of_a_constant_offset() -> None:
    a = np.full((16, 16, 3), 0.5)
    # MSE = 0.1^2 -> PSNR = 10 log10(1 / 0.01) = 20 dB with data range 1.
    assert psnr(a, a + 0.1, data_range=1.0) == pytest.approx(20.0)
    assert psnr(a, a, data_range=1.0) == math.inf


def test_ssim_of_constant_images() -> None:
    # Constant images: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = 1e-4 (L = 1).
    a, b = np.full((20, 20), 0.5), np.full((20, 20), 0.25)
    expected = (2 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4)
    assert ssim(a, b, data_range=1.0) == pytest.approx(expected)
    assert ssim(a, b, data_range=1.0, window="gaussian") == pytest.approx(expected)
    assert expected == pytest.approx(0.800064, abs=1e-6)


def test_ssim_identity_noise_and_errors() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 3))
    assert ssim(image, image, data_range=1.0) == pytest.approx(1.0)
    noisy = np.clip(image + rng.normal(0, 0.2, image.shape), 0, 1)
    assert ssim(image, noisy, data_range=1.0) < 0.9
    with pytest.raises(ValueError):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), window="gaussian")  # smaller than 11x11
    with pytest.raises(ValueError):
        ssim(image, image, window="box")


def test_ssim_uniform_window_on_a_hand_example() -> None:
    # 7x7 image, one valid window. x = ramp 0..48 / 48, y = 1 - x (perfectly anti-correlated):
    # mu_x = mu_y = 0.5; var_x = var_y = cov-scaled population variance v; cov_xy = -v.
    x = (np.arange(49, dtype=float) / 48).reshape(7, 7)
    y = 1 - x
    v = 49 / 48 * np.var(x)
    c1, c2 = 1e-4, 9e-4
    expected = ((2 * 0.25 + c1) * (-2 * v + c2)) / ((0.5 + c1) * (2 * v + c2))
    assert ssim(x, y, data_range=1.0) == pytest.approx(expected)
    with pytest.raises(ValueError):
        psnr(np.zeros((8, 8)), np.zeros((8, 9)))
