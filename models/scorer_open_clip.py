"""scorer backend ``open_clip``: any open_clip model, from its zoo, the hub or a local checkpoint.

Where the weights come from is open_clip's own vocabulary:

* ``model="ViT-B-32", pretrained="laion2b_s34b_b79k"``: a zoo tag (downloaded once, then cached);
* ``model="ViT-B-32", pretrained="/path/ckpt.pt"``: a local state dict for a known architecture
  (``model_config`` adds a custom architecture's JSON config first);
* ``model="hf-hub:org/repo"`` or ``model="local-dir:/path"``: config, weights and preprocessing
  from one place (``open_clip_config.json`` beside the weights).

The image transform is the one open_clip builds with the weights, so preprocessing always matches
them. Images are embedded in batches of ``batch_size`` (one forward pass for a typical call).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from mmagents.errors import BackendError
from mmagents.models._hub import Loaded, load_once, loading, require, resolve_device
from mmagents.models.base import ScorerBase

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["OpenClipScorer"]

_PRECISIONS = {"auto", "fp32", "fp16", "bf16", "amp", "amp_bf16", "pure_fp16", "pure_bf16"}
_AUTOCAST = {"amp": "float16", "amp_bf16": "bfloat16"}


def _load(
    model: str, pretrained: str | None, model_config: str | None, device: str, precision: str
) -> Loaded:
    open_clip = require("open_clip", package="open-clip-torch")
    if precision == "auto":
        precision = "fp32" if device == "cpu" else "fp16"
    if model.startswith(("hf-hub:", "local-dir:")):
        pretrained = None  # the weights travel with the config there
    with loading("open_clip model", f"{model} ({pretrained or 'weights beside its config'})"):
        if model_config:
            open_clip.add_model_config(model_config)  # a custom architecture's JSON config
        # require_pretrained: never score with randomly initialised weights by accident.
        clip, _, preprocess = open_clip.create_model_and_transforms(
            model,
            pretrained=pretrained,
            device=device,
            precision=precision,
            require_pretrained=True,
        )
        tokenizer = open_clip.get_tokenizer(model)
    clip.eval()
    extras = {
        "preprocess": preprocess,
        "tokenizer": tokenizer,
        # Low-precision weights want inputs of their dtype (open_clip keeps some layers fp32, so
        # the first parameter's dtype is not the answer); amp keeps fp32 weights under autocast.
        "input_dtype": open_clip.get_input_dtype(precision),
        "autocast": _AUTOCAST.get(precision),
    }
    return Loaded(clip, extras, device)


class OpenClipScorer(ScorerBase):
    """CLIP-style image–text scorer on open_clip.

    Scores are ``logit_scale * image_features @ text_features.T``; SigLIP models also learn a
    bias, which shifts every score equally and is left out.

    Args:
        model: Architecture name (``ViT-B-32``) or ``hf-hub:org/repo`` / ``local-dir:/path``.
        pretrained: Zoo tag or checkpoint file (ignored by open_clip for ``hf-hub:``/``local-dir:``).
        model_config: Path of a JSON model config (or a folder of them) to register first, for
            architectures open_clip does not ship.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda:0`` ...
        precision: open_clip precision: ``auto`` (fp32 on the CPU, fp16 on GPUs), ``fp32``, ``bf16`` ...
        batch_size: Images (or texts) per forward pass.
    """

    name = "open_clip"

    def __init__(
        self,
        *,
        model: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        model_config: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
    ) -> None:
        if precision not in _PRECISIONS:
            raise BackendError(f"unknown precision {precision!r}; use one of {sorted(_PRECISIONS)}")
        self.model = model
        self.pretrained = pretrained
        self.model_config = model_config
        self.device = device
        self.precision = precision
        self.batch_size = batch_size

    def loaded(self) -> Loaded:
        """Model, transform and tokenizer, loaded on first use (once per process).

        Raises:
            BackendUnavailableError: open_clip is missing or the weights cannot be found.
        """
        device = resolve_device(self.device)
        key = (
            "scorer-open_clip",
            self.model,
            self.pretrained,
            self.model_config,
            device,
            self.precision,
        )
        return load_once(
            key,
            lambda: _load(self.model, self.pretrained, self.model_config, device, self.precision),
        )

    @property
    def logit_scale(self) -> float:
        """The temperature the model was trained with (``exp`` of its learnt log-scale)."""
        return float(self.loaded().model.logit_scale.exp().item())

    def _encode(self, batches: list[Any], encode: Any) -> np.ndarray:
        import numpy as np

        torch = require("torch", extra="offline")
        loaded = self.loaded()
        amp = loaded.extras["autocast"]
        autocast = (
            torch.autocast(loaded.device.split(":")[0], dtype=getattr(torch, amp))
            if amp
            else nullcontext()
        )
        features = []
        with loaded.lock, torch.inference_mode(), autocast:
            for batch in batches:
                out = encode(batch.to(loaded.device), normalize=True)
                features.append(out.float().cpu().numpy())
        return np.concatenate(features).astype(np.float32)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """L2-normalised image features, shape ``(len(images), d)``."""
        torch = require("torch", extra="offline")
        loaded = self.loaded()
        preprocess = loaded.extras["preprocess"]
        batches = [
            torch.stack([preprocess(im.convert("RGB")) for im in images[i : i + self.batch_size]])
            for i in range(0, len(images), self.batch_size)
        ]
        dtype = loaded.extras["input_dtype"]
        if dtype is not None:
            batches = [batch.to(dtype) for batch in batches]
        return self._encode(batches, loaded.model.encode_image)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text features, shape ``(len(texts), d)``."""
        loaded = self.loaded()
        tokenizer = loaded.extras["tokenizer"]
        batches = [
            tokenizer(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)
        ]
        return self._encode(batches, loaded.model.encode_text)
