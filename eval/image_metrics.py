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

LPIPS, IS and FID come from torchmetrics (install the ``protocols`` extra), as CoMM computes them
(``eval/tot_metric/LPIPS.py``: LPIPS with the SqueezeNet backbone on 256×256 images;
``eval/tot_metric/ImageSequence.py``: torchmetrics' ``InceptionScore`` and
``FrechetInceptionDistance`` on 299×299 images, ``normalize=True``). Their pretrained weights are
downloads (torch-fidelity's Inception, torchvision's SqueezeNet): when the file is not in torch's
hub cache, :class:`MetricWeightsMissingError` names it, its URL and where to put it, before any
download is tried. Each accepts a custom network instead (``feature=`` / ``net=``: an
``nn.Module`` or ``"module:attr"``), which is how the tests run them on tiny random networks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmagents._registry import import_string
from mmagents.errors import BackendUnavailableError

__all__ = [
    "WEIGHTS",
    "MetricWeightsMissingError",
    "fid",
    "image_pairs",
    "inception_score",
    "load_rgb",
    "lpips",
    "psnr",
    "ssim",
]

#: metric → (file in torch's hub ``checkpoints/`` folder, where it is downloaded from).
WEIGHTS: dict[str, tuple[str, str]] = {
    "inception": (
        "weights-inception-2015-12-05-6726825d.pth",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
    ),
    "squeeze": (
        "squeezenet1_1-b8a52dc0.pth",
        "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    ),
    "alex": (
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    ),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}


class MetricWeightsMissingError(BackendUnavailableError):
    """A generation metric (LPIPS, IS, FID) needs pretrained weights that are not on this machine."""


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


# -- images from files (CoMM's pairing) --------------------------------------------------------


def load_rgb(path: str | Path, size: int | None = 256, *, bilinear: bool = False) -> np.ndarray:
    """An image file as an 8-bit RGB array, resized to ``size``×``size``; ``size=None`` keeps its
    size. The filter is PIL's default (bicubic), as CoMM's ``SSIM.py`` / ``PSNR.py`` call
    ``Image.resize``, or bilinear, as torchvision's ``Resize`` on a PIL image (CoMM's LPIPS, IS
    and FID inputs)."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
        if size is not None:
            if bilinear:
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            else:
                rgb = rgb.resize((size, size))
        return np.asarray(rgb)


def image_pairs(
    generated: Sequence[str | None], references: Sequence[str | None], pairing: str = "all"
) -> list[tuple[str, str]]:
    """The (reference, generated) path pairs a document's image scores average over.

    Args:
        generated: Generated image paths, one per step (``None``: the step has none).
        references: Ground-truth image paths, one per step.
        pairing: ``all``: every (reference, generated) pair whose paths differ, as CoMM's
            ``calculate_ssim`` / ``calculate_psnr`` / ``calculate_lpips`` loop; ``matched``: step
            by step.

    Raises:
        ValueError: an unknown pairing.
    """
    if pairing == "all":
        refs = [r for r in references if r]
        gens = [g for g in generated if g]
        return [(r, g) for r in refs for g in gens if r != g]
    if pairing == "matched":
        return [(r, g) for r, g in zip(references, generated, strict=False) if r and g]
    raise ValueError(f"pairing must be 'all' or 'matched', got {pairing!r}")


# -- torchmetrics (LPIPS, IS, FID) -------------------------------------------------------------


def _module(value: Any) -> Any:
    """An ``nn.Module`` given as itself or as ``"module:attr"`` (a class or a factory is called)."""
    if isinstance(value, str):
        value = import_string(value)
        if isinstance(value, type) or (callable(value) and not hasattr(value, "forward")):
            value = value()
    return value


def _require_weights(metric: str, key: str, path: str | None = None) -> None:
    """Raise :class:`MetricWeightsMissingError` unless the pretrained file is present."""
    import torch

    name, url = WEIGHTS[key]
    target = Path(path) if path else Path(torch.hub.get_dir()) / "checkpoints" / name
    if not target.is_file():
        raise MetricWeightsMissingError(
            f"{metric} needs the pretrained weights {name} (from {url}), not found at {target}. "
            f"Download it there (or set TORCH_HOME to a folder whose hub/checkpoints/ holds it), "
            f"or give the metric a network of your own (feature= / net=)."
        )


def _as_batch(paths: Sequence[str], size: int, torch: Any) -> Any:
    """Float images in [0, 1], ``(N, 3, size, size)`` (bilinear resize, as torchvision's)."""
    arrays = [load_rgb(p, size, bilinear=True) for p in paths]
    stacked = np.stack(arrays).astype(np.float32) / 255.0
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def _batches(paths: Sequence[str], size: int, torch: Any, batch: int = 16) -> Iterator[Any]:
    for i in range(0, len(paths), batch):
        yield _as_batch(paths[i : i + batch], size, torch)


def lpips(
    pairs: Sequence[tuple[str, str]],
    *,
    net: Any = None,
    net_type: str = "squeeze",
    size: int = 256,
) -> float:
    """Mean LPIPS over (reference, generated) image-file pairs (lower is closer).

    Args:
        pairs: Image paths, e.g. from :func:`image_pairs`.
        net: A module ``net(a, b) -> distances`` for images in [-1, 1] (or ``"module:attr"``);
            default torchmetrics' LPIPS with ``net_type`` (CoMM: ``squeeze``).
        size: Images are resized to ``size``×``size`` (CoMM: 256).

    Raises:
        MetricWeightsMissingError: the backbone's pretrained weights are not downloaded.
        ValueError: no pairs.
    """
    import torch

    if not pairs:
        raise ValueError("LPIPS needs at least one image pair")
    model = _module(net)
    if model is None:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        _require_weights("LPIPS", net_type)
        metric = LearnedPerceptualImagePatchSimilarity(net_type=net_type, normalize=True)  # type: ignore[arg-type]
        model = metric.net
    values = []
    with torch.no_grad():
        for i in range(0, len(pairs), 16):
            chunk = pairs[i : i + 16]
            a = _as_batch([r for r, _ in chunk], size, torch) * 2 - 1
            b = _as_batch([g for _, g in chunk], size, torch) * 2 - 1
            values.extend(model(a, b).reshape(-1).tolist())
    return float(np.mean(values))


def inception_score(
    paths: Sequence[str], *, feature: Any = None, splits: int = 10, size: int = 299
) -> float:
    """Inception Score (mean over ``splits``) of a set of image files (torchmetrics).

    Args:
        feature: A module mapping float images in [0, 1] to class logits (or ``"module:attr"``);
            default torchmetrics' Inception-v3 (torch-fidelity weights).

    Raises:
        MetricWeightsMissingError: the Inception weights are not downloaded.
        ValueError: no images.
    """
    import torch
    from torchmetrics.image.inception import InceptionScore

    if not paths:
        raise ValueError("IS needs at least one image")
    module = _module(feature)
    if module is None:
        _require_weights("IS", "inception")
    metric = InceptionScore(
        feature=module if module is not None else "logits_unbiased",
        splits=min(splits, len(paths)),
        normalize=True,
    )
    with torch.no_grad():
        for images in _batches(paths, size, torch):
            metric.update(images)
        mean, _ = metric.compute()
    return float(mean)


def fid(
    generated: Sequence[str],
    references: Sequence[str],
    *,
    feature: Any = None,
    weights: str | None = None,
    size: int = 299,
) -> float:
    """Fréchet Inception Distance between generated and reference image files (torchmetrics).

    Args:
        feature: A module mapping float images in [0, 1] to feature vectors ``(N, D)`` (or
            ``"module:attr"``); default torchmetrics' 2048-d Inception-v3 pool features.
        weights: Path of the Inception weights file (default: torch's hub cache).

    Raises:
        MetricWeightsMissingError: the Inception weights are not downloaded.
        ValueError: fewer than two images on either side (a covariance needs two).
    """
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(generated) < 2 or len(references) < 2:
        raise ValueError("FID needs at least two generated and two reference images")
    module = _module(feature)
    if module is None:
        _require_weights("FID", "inception", weights)
    metric = FrechetInceptionDistance(
        feature=module if module is not None else 2048,
        normalize=True,
        input_img_size=(3, size, size),
        feature_extractor_weights_path=weights if module is None else None,
    )
    with torch.no_grad():
        for images in _batches(references, size, torch):
            metric.update(images, real=True)
        for images in _batches(generated, size, torch):
            metric.update(images, real=False)
        return float(metric.compute())
