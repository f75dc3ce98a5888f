"""Shared plumbing of the hub backends (transformers, open_clip, diffusers).

* :func:`require` imports an optional library or raises
  :class:`~mmagents.errors.BackendUnavailableError` with the install hint;
* :func:`resolve_device` / :func:`resolve_dtype` turn config strings (``"auto"``, ``"cuda:1"``,
  ``"bf16"``) into torch objects;
* :class:`Loaded` pairs a loaded model with its companions and the lock its inference calls take
  (loaded once per process through :func:`mmagents.models.base.load_once`, re-exported here);
* :func:`loading` turns a failed ``from_pretrained`` into a typed error naming the model.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mmagents.errors import BackendError, BackendUnavailableError
from mmagents.models.base import load_once

__all__ = [
    "Loaded",
    "dtype_option",
    "load_once",
    "loading",
    "require",
    "resolve_device",
    "resolve_dtype",
    "to_device",
]

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def require(module: str, *, package: str | None = None, extra: str = "hub") -> ModuleType:
    """Import an optional library, or explain how to install it.

    Args:
        module: Import name (``"open_clip"``).
        package: Distribution name when it differs (``"open-clip-torch"``).
        extra: The mmagents extra that installs it.

    Raises:
        BackendUnavailableError: the library is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{package or module} is not installed: pip install 'mmagents[{extra}]' "
            f"(or pip install {package or module})"
        ) from exc


def resolve_device(device: str | None = "auto") -> str:
    """The torch device to run on: ``"auto"`` picks CUDA, then Apple MPS, then the CPU.

    Raises:
        BackendUnavailableError: a CUDA device was asked for but none is visible.
    """
    torch = require("torch", extra="offline")
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} requested but CUDA is not available")
    return device


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """A ``torch.dtype`` for ``dtype`` (``"auto"``: bf16/fp16 on accelerators, fp32 on the CPU).

    Raises:
        BackendError: an unknown dtype name.
    """
    torch = require("torch", extra="offline")
    if dtype in (None, "", "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.startswith("mps") else torch.float32
    try:
        return getattr(torch, _DTYPES[dtype.lower()])
    except KeyError:
        raise BackendError(
            f"unknown dtype {dtype!r}; use one of auto, {', '.join(sorted(_DTYPES))}"
        ) from None


def dtype_option(dtype: Any) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for ``dtype``: transformers 4.56 renamed ``torch_dtype``."""
    from importlib.metadata import version

    major, minor = (int(part) for part in version("transformers").split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def to_device(inputs: Any, device: str, dtype: Any) -> dict[str, Any]:
    """Move processor outputs to a model: floating tensors (pixels) also take its dtype."""
    moved = {}
    for key, value in inputs.items():
        if hasattr(value, "is_floating_point"):
            value = value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
        moved[key] = value
    return moved


@dataclass
class Loaded:
    """A loaded model with its companions and the lock its inference calls hold.

    Attributes:
        model: The model (or pipeline).
        extras: Whatever travels with it (processor, tokenizer, preprocess transform ...).
        device: The device it lives on.
        lock: Serialises inference: generation state and GPU memory are not shared safely.
    """

    model: Any
    extras: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    lock: threading.Lock = field(default_factory=threading.Lock)


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


@contextmanager
def loading(what: str, name: str) -> Iterator[None]:
    """Turn a failure to load ``name`` (a hub id or a local path) into a typed error.

    Missing files, unknown hub ids and an offline hub become
    :class:`~mmagents.errors.BackendUnavailableError`; anything else :class:`BackendError`.
    """
    # transformers reads a missing folder as a malformed hub id; say what actually happened.
    if _looks_local(name) and not Path(name).expanduser().exists():
        raise BackendUnavailableError(f"{what} folder not found: {name}")
    try:
        yield
    except BackendError:
        raise
    except OSError as exc:
        raise BackendUnavailableError(
            f"could not load {what} {name!r}: {exc}. A hub id needs the hub or a local cache "
            "(HF_HUB_OFFLINE=1 allows only the cache); a local path must exist."
        ) from exc
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise BackendError(f"could not load {what} {name!r}: {exc}") from exc
