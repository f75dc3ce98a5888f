"""vlm backend ``hf``: transformers vision-language models loaded through ``AutoProcessor``.

The model class comes from the checkpoint's ``config.architectures`` (or the ``architecture``
option), and decides how the model is asked:

* BLIP (``BlipForConditionalGeneration``) captions; it cannot answer questions, so give it a
  ``vqa_model`` such as ``Salesforce/blip-vqa-base`` (``BlipForQuestionAnswering``), which answers
  and, asked ``caption_question``, describes;
* BLIP-2 (``Blip2ForConditionalGeneration``) captions without a prompt and answers with the
  ``Question: ... Answer:`` format of its paper;
* every other image-text-to-text model (LLaVA, Qwen2-VL, SmolVLM, Idefics ...) is asked through its
  processor's chat template with the instructions of ``prompts/vlm_chat.yaml``.

Weights load on first use, once per process; inference holds the model's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmagents.errors import BackendError, BackendUnavailableError
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
from mmagents.prompts import load_prompt

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["HFVLM"]

#: How BLIP-2 is asked a question (Li et al., 2023, zero-shot VQA prompt).
BLIP2_QUESTION = "Question: {question} Answer:"


def _architecture(model: str, override: str | None) -> str:
    if override:
        return override
    transformers = require("transformers")
    with loading("VLM config", model):
        config = transformers.AutoConfig.from_pretrained(model)
    names = getattr(config, "architectures", None) or []
    return names[0] if names else "AutoModelForImageTextToText"


def _load(model: str, override: str | None, device: str, dtype: str | None) -> Loaded:
    transformers = require("transformers")
    architecture = _architecture(model, override)
    model_class = getattr(transformers, architecture, None)
    if not (isinstance(model_class, type) and hasattr(model_class, "from_pretrained")):
        model_class = transformers.AutoModelForImageTextToText  # an architecture of a newer release
    with loading("VLM", model):
        processor = transformers.AutoProcessor.from_pretrained(model)
        vlm = model_class.from_pretrained(model, **dtype_option(resolve_dtype(dtype, device)))
    vlm.to(device).eval()
    return Loaded(vlm, {"processor": processor, "architecture": architecture}, device)


def _strip_prefix(text: str, prefix: str | None) -> str:
    """Drop an echoed prompt: BLIP's decoder returns the prompt tokens before its continuation."""
    text = text.strip()
    if prefix and text.lower().startswith(prefix.strip().lower()):
        text = text[len(prefix.strip()) :]
    return text.strip()


class _Engine:
    """One loaded model and the way it is asked for captions and answers."""

    def __init__(self, loaded: Loaded, name: str, max_new_tokens: int) -> None:
        self.loaded = loaded
        self.name = name
        self.max_new_tokens = max_new_tokens

    @property
    def processor(self) -> Any:
        return self.loaded.extras["processor"]

    def generate(self, image: Image.Image, text: str | None) -> str:
        """Run the processor and ``generate``; return only the new text."""
        torch = require("torch", extra="offline")
        model = self.loaded.model
        inputs = to_device(
            self.processor(images=image, text=text, return_tensors="pt"),
            self.loaded.device,
            model.dtype,
        )
        try:
            with self.loaded.lock, torch.inference_mode():
                output = model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, do_sample=False
                )
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"generation with {self.name!r} failed: {exc}") from exc
        tokens = output[0]
        prompt = inputs.get("input_ids")
        # Decoder-only models echo their prompt ids; encoder-decoder ones (BLIP) do not.
        echoed = prompt is not None and tokens.shape[0] >= prompt.shape[1]
        if echoed and torch.equal(tokens[: prompt.shape[1]], prompt[0]):
            tokens = tokens[prompt.shape[1] :]
        return str(self.processor.decode(tokens, skip_special_tokens=True)).strip()

    def caption(self, image: Image.Image) -> str:
        raise NotImplementedError

    def answer(self, image: Image.Image, question: str) -> str:
        raise NotImplementedError


class _BlipCaptioner(_Engine):
    def __init__(self, loaded: Loaded, name: str, max_new_tokens: int, prompt: str | None) -> None:
        super().__init__(loaded, name, max_new_tokens)
        self.prompt = prompt

    def caption(self, image: Image.Image) -> str:
        return _strip_prefix(self.generate(image, self.prompt), self.prompt)

    def answer(self, image: Image.Image, question: str) -> str:
        raise BackendUnavailableError(
            f"{self.name!r} is a captioning model and cannot answer questions: set the vlm "
            "option vqa_model (e.g. Salesforce/blip-vqa-base)"
        )


class _BlipAnswerer(_Engine):
    def __init__(
        self, loaded: Loaded, name: str, max_new_tokens: int, caption_question: str
    ) -> None:
        super().__init__(loaded, name, max_new_tokens)
        self.caption_question = caption_question

    def caption(self, image: Image.Image) -> str:
        return self.answer(image, self.caption_question)

    def answer(self, image: Image.Image, question: str) -> str:
        return _strip_prefix(self.generate(image, question), question)


class _Blip2(_Engine):
    def __init__(self, loaded: Loaded, name: str, max_new_tokens: int, prompt: str | None) -> None:
        super().__init__(loaded, name, max_new_tokens)
        self.prompt = prompt or ""

    def caption(self, image: Image.Image) -> str:
        return self.generate(image, self.prompt)

    def answer(self, image: Image.Image, question: str) -> str:
        return self.generate(image, BLIP2_QUESTION.format(question=question))


class _ChatVLM(_Engine):
    def _ask(self, image: Image.Image, variant: str, **variables: Any) -> str:
        user = load_prompt("vlm_chat").render(variant, **variables)["user"]
        # Many VLM chat templates have no system turn, so the instruction goes in the user turn.
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]}
        ]
        text = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return self.generate(image, text)

    def caption(self, image: Image.Image) -> str:
        return self._ask(image, "caption")

    def answer(self, image: Image.Image, question: str) -> str:
        return self._ask(image, "answer", question=question)


class HFVLM:
    """Captions and answers with a transformers vision-language model.

    Args:
        model: Hub id or local folder of the main model.
        vqa_model: Optional second model that answers questions (a BLIP captioner cannot).
        architecture: Model class name, when the checkpoint's config does not say (or to
            override it): ``BlipForQuestionAnswering``, ``LlavaForConditionalGeneration`` ...
        max_new_tokens: Maximum new tokens per caption or answer.
        caption_prompt: Text prefix for BLIP/BLIP-2 captions (e.g. ``"a picture of"``).
        caption_question: What a question-answering-only model is asked to describe an image.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda:0`` ...
        dtype: ``auto`` (bf16/fp16 on accelerators, fp32 on the CPU), ``fp32``, ``bf16``, ``fp16``.
    """

    name = "hf-vlm"

    def __init__(
        self,
        *,
        model: str,
        vqa_model: str | None = None,
        architecture: str | None = None,
        max_new_tokens: int = 40,
        caption_prompt: str | None = None,
        caption_question: str = "what does this picture show?",
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        self.model = model
        self.vqa_model = vqa_model
        self.architecture = architecture
        self.max_new_tokens = max_new_tokens
        self.caption_prompt = caption_prompt
        self.caption_question = caption_question
        self.device = device
        self.dtype = dtype

    def engine(self, model: str, architecture: str | None = None) -> _Engine:
        """The loaded model ``model`` with the way it is asked (loads on first use).

        Raises:
            BackendUnavailableError: transformers is missing, the model cannot be found, or a
                chat-style model's processor has no chat template.
        """
        device = resolve_device(self.device)
        key = ("vlm-hf", model, architecture, device, self.dtype)
        loaded = load_once(key, lambda: _load(model, architecture, device, self.dtype))
        arch = loaded.extras["architecture"]
        if arch == "BlipForConditionalGeneration":
            return _BlipCaptioner(loaded, model, self.max_new_tokens, self.caption_prompt)
        if arch == "BlipForQuestionAnswering":
            return _BlipAnswerer(loaded, model, self.max_new_tokens, self.caption_question)
        if arch == "Blip2ForConditionalGeneration":
            return _Blip2(loaded, model, self.max_new_tokens, self.caption_prompt)
        if not getattr(loaded.extras["processor"], "chat_template", None):
            raise BackendUnavailableError(
                f"{model!r} ({arch}) has no chat template in its processor; "
                "mmagents asks image-text-to-text models through their chat template"
            )
        return _ChatVLM(loaded, model, self.max_new_tokens)

    def caption(self, image: Image.Image) -> str:
        """One-sentence description of ``image``."""
        return self.engine(self.model, self.architecture).caption(image.convert("RGB"))

    def answer(self, image: Image.Image, question: str) -> str:
        """Short answer to ``question`` about ``image`` (by ``vqa_model`` when set)."""
        if self.vqa_model:
            return self.engine(self.vqa_model).answer(image.convert("RGB"), question)
        return self.engine(self.model, self.architecture).answer(image.convert("RGB"), question)
