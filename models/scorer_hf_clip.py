"""scorer backend ``hf_clip``: a transformers ``CLIPModel`` with its ``CLIPProcessor``.

``model`` is a hub id (``openai/clip-vit-base-patch32``) or a local ``save_pretrained`` folder
holding both the model and the processor, so preprocessing and tokenisation match the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmagents.models._hub import (
    Loaded,
    dtype_option,
    load_once,
    loading,
    require,
    resolve_device,
    resolve_dtype,
    to_device,
)
from mmagents.models.base import ScorerBase

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["HFClipScorer"]


def _load(model: str, device: str, dtype: str | None) -> Loaded:
    transformers = require("transformers")
    with loading("CLIP model", model):
        processor = transformers.CLIPProcessor.from_pretrained(model)
        clip = transformers.CLIPModel.from_pretrained(
            model, **dtype_option(resolve_dtype(dtype, device))
        )
    clip.to(device).eval()
    return Loaded(clip, {"processor": processor}, device)


def _features(output: Any) -> Any:
    """transformers 4 returns the projected features, 5 an output whose pooler_output holds them."""
    return getattr(output, "pooler_output", output)


class HFClipScorer(ScorerBase):
    """CLIP image–text scorer on transformers.

    Args:
        model: Hub id or local folder with the model and its processor.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda:0`` ...
        dtype: ``auto`` (bf16/fp16 on accelerators, fp32 on the CPU), ``fp32``, ``bf16``, ``fp16``.
        batch_size: Images (or texts) per forward pass.
    """

    name = "hf_clip"

    def __init__(
        self,
        *,
        model: str = "openai/clip-vit-base-patch32",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    def loaded(self) -> Loaded:
        """Model and processor, loaded on first use (once per process).

        Raises:
            BackendUnavailableError: transformers is missing or the model cannot be found.
        """
        device = resolve_device(self.device)
        key = ("scorer-hf_clip", self.model, device, self.dtype)
        return load_once(key, lambda: _load(self.model, device, self.dtype))

    @property
    def logit_scale(self) -> float:
        """The temperature the model was trained with (``exp`` of its learnt log-scale)."""
        return float(self.loaded().model.logit_scale.exp().item())

    def _run(self, items: list[Any], prepare: Any, encode: Any) -> np.ndarray:
        import numpy as np

        torch = require("torch", extra="offline")
        loaded = self.loaded()
        dtype = loaded.model.dtype
        features = []
        with loaded.lock, torch.inference_mode():
            for i in range(0, len(items), self.batch_size):
                inputs = to_device(prepare(items[i : i + self.batch_size]), loaded.device, dtype)
                out = _features(encode(**inputs)).float()
                features.append(torch.nn.functional.normalize(out, dim=-1).cpu().numpy())
        return np.concatenate(features).astype(np.float32)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """L2-normalised image features, shape ``(len(images), d)``."""
        processor = self.loaded().extras["processor"]
        return self._run(
            [im.convert("RGB") for im in images],
            lambda batch: processor(images=batch, return_tensors="pt"),
            self.loaded().model.get_image_features,
        )

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text features, shape ``(len(texts), d)`` (long texts are truncated)."""
        loaded = self.loaded()
        processor = loaded.extras["processor"]
        max_length = loaded.model.config.text_config.max_position_embeddings
        return self._run(
            texts,
            lambda batch: processor(
                text=batch,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            ),
            loaded.model.get_text_features,
        )
