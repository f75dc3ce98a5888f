"""imagegen backend ``diffusers``: any text-to-image diffusers pipeline, by hub id or local folder.

``AutoPipelineForText2Image`` picks the pipeline class from the folder's ``model_index.json``;
pipelines it does not know load through ``DiffusionPipeline``. Images are seeded per candidate
(``seed + i``), so the same prompt and options give the same images, and every result is labelled
``provenance="generated"`` with the model as its source.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from mmagents.errors import BackendError
from mmagents.models._hub import Loaded, load_once, loading, require, resolve_device, resolve_dtype
from mmagents.models.base import GeneratedImage

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DiffusersGenerator"]


def _load(model: str, device: str, dtype: str | None) -> Loaded:
    diffusers = require("diffusers")
    torch_dtype = resolve_dtype(dtype, device)
    with loading("diffusers pipeline", model), warnings.catch_warnings():
        # Recent diffusers renamed torch_dtype to dtype; only the old name works in every release.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        try:
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
                model, torch_dtype=torch_dtype
            )
        except ValueError:  # a pipeline class AutoPipeline has no text-to-image mapping for
            pipe = diffusers.DiffusionPipeline.from_pretrained(model, torch_dtype=torch_dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return Loaded(pipe, {}, device)


def _size(size: int | list[int] | tuple[int, int] | None) -> tuple[int | None, int | None]:
    """``(width, height)`` from ``512`` or ``[768, 512]``; ``None`` keeps the pipeline's default."""
    if size is None:
        return None, None
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise BackendError(f"size must be an int or [width, height], got {size!r}")
    return int(size[0]), int(size[1])


class DiffusersGenerator:
    """Text-to-image generation with a diffusers pipeline.

    Args:
        model: Hub id (``stabilityai/sd-turbo``) or local ``save_pretrained`` folder.
        num_inference_steps: Denoising steps (1–4 for turbo/LCM models, 25–50 for classic SD).
        guidance_scale: Classifier-free guidance (0 for turbo models).
        seed: Seed of the first candidate; candidate ``i`` uses ``seed + i``.
        size: Output side in pixels, or ``[width, height]`` (default: the pipeline's).
        negative_prompt: What the images should not show.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda:0`` ...
        dtype: ``auto`` (bf16/fp16 on accelerators, fp32 on the CPU), ``fp32``, ``bf16``, ``fp16``.
    """

    name = "diffusers"

    def __init__(
        self,
        *,
        model: str,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        seed: int = 0,
        size: int | list[int] | None = None,
        negative_prompt: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        self.model = model
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.width, self.height = _size(size)
        self.negative_prompt = negative_prompt
        self.device = device
        self.dtype = dtype

    def loaded(self) -> Loaded:
        """The pipeline, loaded on first use (once per process).

        Raises:
            BackendUnavailableError: diffusers is missing or the pipeline cannot be found.
        """
        device = resolve_device(self.device)
        key = ("imagegen-diffusers", self.model, device, self.dtype)
        return load_once(key, lambda: _load(self.model, device, self.dtype))

    def _call_options(self, n: int) -> dict[str, Any]:
        torch = require("torch", extra="offline")
        # CPU generators make the same images on any device; mps cannot host generators anyway.
        generators = [torch.Generator("cpu").manual_seed(self.seed + i) for i in range(n)]
        options: dict[str, Any] = {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "num_images_per_prompt": n,
            "generator": generators,
        }
        if self.width is not None:
            options.update(width=self.width, height=self.height)
        if self.negative_prompt:
            options["negative_prompt"] = self.negative_prompt
        return options

    def generate(self, prompt: str, n: int = 1) -> list[GeneratedImage]:
        """``n`` images for ``prompt`` (in seed order; the pipeline does not rank them).

        Raises:
            BackendError: the pipeline failed (out of memory, a size it cannot make ...).
        """
        torch = require("torch", extra="offline")
        loaded = self.loaded()
        options = self._call_options(n)
        try:
            with loaded.lock, torch.inference_mode():
                images: list[Image.Image] = loaded.model(prompt, **options).images
        except (RuntimeError, ValueError, TypeError) as exc:
            raise BackendError(f"diffusers pipeline {self.model!r} failed: {exc}") from exc
        meta = {
            "steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
        }
        return [
            GeneratedImage(
                image.convert("RGB"),
                prompt,
                "generated",
                self.model,
                {**meta, "seed": self.seed + i},
            )
            for i, image in enumerate(images)
        ]
