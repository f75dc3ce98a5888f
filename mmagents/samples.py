"""Bundled sample photos for demos and tests.

The pixels come from scikit-image's ``skimage.data`` (real photographs that ship inside the
scikit-image wheel); they are written as PNG files under the cache folder at first use, so users get
plain files they can pass to any command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mmagents.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = ["SAMPLES", "sample_path", "sample_paths"]

#: sample name → (skimage.data function, what the photo shows).
SAMPLES: dict[str, tuple[str, str]] = {
    "cat": ("chelsea", "a tabby cat (Chelsea)"),
    "astronaut": ("astronaut", "astronaut Eileen Collins in her flight suit, a flag behind her"),
    "coffee": ("coffee", "a cup of coffee on a saucer with a spoon"),
    "rocket": ("rocket", "a rocket on its launch pad"),
    "camera": ("camera", "a man with a camera on a tripod, black and white"),
    "coins": ("coins", "Greek coins on a plain background, black and white"),
}


def sample_path(name: str, config: Config | None = None) -> Path:
    """Path of the sample photo ``name``, written to the cache folder on first use.

    Raises:
        ConfigError: unknown sample name.
        BackendUnavailableError: scikit-image is not installed.
    """
    if name not in SAMPLES:
        raise ConfigError(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")
    from mmagents._config import load_config

    folder = (config or load_config()).cache_dir / "samples"
    path = folder / f"{name}.png"
    if path.exists():
        return path
    try:
        from skimage import data
    except ImportError as exc:
        raise BackendUnavailableError(
            "sample photos need scikit-image: pip install scikit-image"
        ) from exc
    from PIL import Image

    pixels = getattr(data, SAMPLES[name][0])()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(pixels).convert("RGB").save(tmp)
    tmp.replace(path)
    return path


def sample_paths(config: Config | None = None) -> dict[str, Path]:
    """All sample photos by name (written on first use)."""
    return {name: sample_path(name, config) for name in SAMPLES}
