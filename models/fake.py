"""Deterministic stand-in backends named ``fake``, for tests and dry runs of whole pipelines.

They never pretend to be real models: every output says ``fake``, and they are only used when a
config names the ``fake`` backend explicitly (``MMAGENTS_VLM__BACKEND=fake``). Like
lm-evaluation-harness's dummy model, they let a whole graph run end to end in milliseconds.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image
from pydantic import ConfigDict, PrivateAttr

from mmagents.models.base import GeneratedImage, OcrLine, ScorerBase
from mmagents.models.sampling import cut_at_stop

__all__ = [
    "FakeEmbedder",
    "FakeImageGen",
    "FakeOCR",
    "FakeScorer",
    "FakeVLM",
    "ScriptedChat",
]

Reply = str | AIMessage | Callable[[list[BaseMessage]], "str | AIMessage"]


class ScriptedChat(BaseChatModel):
    """A chat model that replays scripted replies in order (thread-safe) and records every call.

    Args:
        replies: Strings, ``AIMessage`` objects (e.g. with ``tool_calls``) or callables receiving
            the messages; replayed in order. ``cycle=True`` repeats them forever.
        cycle: Repeat the script instead of failing when it runs out.

    Per call it honours two sampling parameters, on the reply's text (tool calls are left
    whole): ``max_tokens`` keeps the first N whitespace-separated words (its stand-in for
    tokens; ``finish_reason`` ``length``, ``output_tokens`` N) and ``stop`` cuts the text before
    the first stop string. A script has no temperature, seed or penalties to honour, so it
    declares none of them (the OpenAI server then refuses them by name).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    sampling_params: ClassVar[frozenset[str]] = frozenset({"max_tokens", "stop"})

    replies: list[Any]
    cycle: bool = False
    structured_mode: str = "prompt"
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _replay: Any = PrivateAttr(default=None)
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _kwargs: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-scripted"

    @property
    def calls(self) -> list[list[BaseMessage]]:
        """The message lists of every call so far."""
        return self._calls

    @property
    def call_kwargs(self) -> list[dict[str, Any]]:
        """The keyword arguments (``stop`` included) of every call so far."""
        return self._kwargs

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Accept tools (scripted replies decide whether to call them)."""
        return self

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            if self._replay is None:
                self._replay = itertools.cycle(self.replies) if self.cycle else iter(self.replies)
            self._calls.append(list(messages))
            try:
                reply = next(self._replay)
            except StopIteration:
                raise AssertionError(
                    f"ScriptedChat ran out of replies after {len(self._calls) - 1} calls"
                ) from None
        if callable(reply):
            reply = reply(messages)
        return reply if isinstance(reply, AIMessage) else AIMessage(content=str(reply))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            self._kwargs.append({**kwargs, **({"stop": stop} if stop else {})})
        message = _sampled(self._next(messages), kwargs.get("max_tokens"), stop)
        return ChatResult(generations=[ChatGeneration(message=message)])


def _sampled(message: AIMessage, max_tokens: int | None, stop: list[str] | None) -> AIMessage:
    """A scripted reply with ``stop`` and ``max_tokens`` (as words) applied to its text."""
    if message.tool_calls or not isinstance(message.content, str):
        return message
    text, reason = message.content, None
    if stop:
        text, found = cut_at_stop(text, stop)
        reason = "stop" if found else None
    usage: dict[str, Any] = dict(message.usage_metadata or {})
    words = text.split()
    if max_tokens is not None and len(words) > max_tokens:
        text, reason = " ".join(words[:max_tokens]), "length"
        prompt = int(usage.get("input_tokens", 0))
        usage = {"input_tokens": prompt, "output_tokens": max_tokens}
        usage["total_tokens"] = prompt + max_tokens
    if reason is None:
        return message
    metadata = {**message.response_metadata, "finish_reason": reason}
    update: dict[str, Any] = {"content": text, "response_metadata": metadata}
    if usage:
        update["usage_metadata"] = usage
    return message.model_copy(update=update)


def _unit(seed: str, dim: int) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    vec = rng.standard_normal(dim)
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def _mean_colour(image: Image.Image) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in np.asarray(image.convert("RGB").resize((8, 8))).mean(axis=(0, 1)))
    return r, g, b


class FakeVLM:
    """Captions by mean colour; answers echo the question. Says it is fake."""

    name = "fake-vlm"

    def __init__(self, **_: Any) -> None:
        self.calls = 0

    def caption(self, image: Image.Image) -> str:
        self.calls += 1
        return f"fake caption: an image whose mean colour is {_mean_colour(image)}"

    def answer(self, image: Image.Image, question: str) -> str:
        self.calls += 1
        return f"fake answer to: {question}"


class FakeScorer(ScorerBase):
    """Hash-seeded random unit features: deterministic, meaningless, fast."""

    name = "fake-scorer"
    logit_scale = 100.0

    def __init__(self, dim: int = 32, **_: Any) -> None:
        self.dim = dim

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([_unit(str(_mean_colour(im)), self.dim) for im in images])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([_unit(t, self.dim) for t in texts])


class FakeOCR:
    """Reads a fixed line of text (``text`` option)."""

    name = "fake-ocr"

    def __init__(self, text: str = "fake text", **_: Any) -> None:
        self.text = text

    def read(self, image: Image.Image) -> list[OcrLine]:
        w, h = image.size
        return [OcrLine([(0, 0), (w, 0), (w, h / 8), (0, h / 8)], self.text, 1.0)]


class FakeImageGen:
    """Solid-colour images derived from the prompt; provenance ``fake``."""

    name = "fake-imagegen"

    def __init__(self, size: int = 64, **_: Any) -> None:
        self.size = size

    def generate(self, prompt: str, n: int = 1) -> list[GeneratedImage]:
        out = []
        for i in range(n):
            colour = tuple(int(x) for x in hashlib.sha256(f"{prompt}:{i}".encode()).digest()[:3])
            image = Image.new("RGB", (self.size, self.size), colour)
            out.append(GeneratedImage(image, prompt, "fake", "fake-imagegen", {"index": i}))
        return out


class FakeEmbedder:
    """Hash-seeded random unit vectors."""

    name = "fake-embed"

    def __init__(self, dim: int = 32, **_: Any) -> None:
        self.dim = dim

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([_unit(t, self.dim) for t in texts])
