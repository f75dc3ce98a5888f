"""PSNR and SSIM for CoMM's text-to-image task, our own implementations of the definitions.

* PSNR = 10 · log10(L² / MSE) over all pixels and channels (L = data range; ``inf`` for
  identical images).
* SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004): local means, variances and covariance
  under a window, ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²``, the map
  ``((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2))`` averaged over the
  windows that fit inside the image and over channels. ``window="uniform"`` (default) is what
  CoMM's evaluation calls (``eval/tot_metric/SSIM.py:24``: scikit-image ``structural_similarity``
  with its defaults: a 7×7 uniform window and sample covariances, factor 49/48);
  ``window="gaussian"`` is the paper's 11×11 Gaussian (σ = 1.5).

CoMM's own scripts resize both images to 256×256 and average over *every* (generated, reference)
pair of a document whose paths differ (``SSIM.py:14-24``, ``PSNR.py:12-21``), not over matched
pairs; that pairing is the caller's choice here.

Images are arrays ``(H, W)`` or ``(H, W, C)`` (or PIL images, read as 8-bit with L = 255).
LPIPS, IS and FID need pretrained networks (AlexNet/VGG, Inception): they are not computed here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["psnr", "ssim"]


def _pair(a: Any, b: Any, data_range: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise ValueError(
            f"images must have the same (H, W[, C]) shape, got {x.shape} and {y.shape}"
        )
    if data_range is None:  # 8-bit pixels (uint8 arrays, PIL images) span 255, floats 1
        data_range = 255.0 if np.asarray(a).dtype == np.uint8 else 1.0
    return x, y, float(data_range)


def psnr(a: Any, b: Any, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` when the images are identical)."""
    x, y, peak = _pair(a, b, data_range)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return np.asarray(g / g.sum())


def _filter(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable "valid" filtering: rows, then columns.
    k = len(g)
    rows = np.stack([image[:, j : j + image.shape[1] - k + 1] for j in range(k)], 0)
    tmp = np.tensordot(g, rows, axes=(0, 0))
    cols = np.stack([tmp[i : i + tmp.shape[0] - k + 1, :] for i in range(k)], 0)
    return np.asarray(np.tensordot(g, cols, axes=(0, 0)))


def ssim(a: Any, b: Any, *, data_range: float | None = None, window: str = "uniform") -> float:
    """Mean structural similarity over valid windows and channels.

    Args:
        window: ``uniform`` (7×7, sample covariances: scikit-image's defaults, CoMM's call) or
            ``gaussian`` (11×11, σ 1.5: Wang et al.).

    Raises:
        ValueError: shapes differ, an unknown window, or the image is smaller than the window.
    """
    x, y, peak = _pair(a, b, data_range)
    if window == "uniform":
        g, cov = np.full(7, 1 / 7), 49 / 48
    elif window == "gaussian":
        g, cov = _gaussian(), 1.0
    else:
        raise ValueError(f"window must be uniform or gaussian, got {window!r}")
    if min(x.shape[:2]) < len(g):
        raise ValueError(f"SSIM needs images of at least {len(g)}x{len(g)} pixels")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    values = []
    for c in range(x.shape[2]):
        xc, yc = x[..., c], y[..., c]
        mx, my = _filter(xc, g), _filter(yc, g)
        sxx = cov * (_filter(xc * xc, g) - mx * mx)
        syy = cov * (_filter(yc * yc, g) - my * my)
        sxy = cov * (_filter(xc * yc, g) - mx * my)
        num = (2 * mx * my + c1) * (2 * sxy + c2)
        den = (mx * mx + my * my + c1) * (sxx + syy + c2)
        values.append(float(np.mean(num / den)))
    return float(np.mean(values))
