"""Token usage of every LLM call made inside a block, from LangChain callbacks (any backend that
reports ``usage_metadata`` or OpenAI-style ``token_usage``; calls that report none count zero)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

__all__ = ["UsageCounter", "counting_usage"]


class UsageCounter(BaseCallbackHandler):
    """Sums prompt and completion tokens over the LLM calls it is told about (thread-safe)."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.calls = 0
        self.unreported = 0
        self._lock = threading.Lock()

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        prompt = completion = None
        for generations in response.generations:
            for generation in generations:
                usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
                if usage:
                    prompt = (prompt or 0) + int(usage.get("input_tokens") or 0)
                    completion = (completion or 0) + int(usage.get("output_tokens") or 0)
        if prompt is None:
            token_usage = (response.llm_output or {}).get("token_usage") or {}
            if token_usage:
                prompt = int(token_usage.get("prompt_tokens") or 0)
                completion = int(token_usage.get("completion_tokens") or 0)
        with self._lock:
            self.calls += 1
            if prompt is None:
                self.unreported += 1
            self.prompt_tokens += prompt or 0
            self.completion_tokens += completion or 0

    def as_openai(self) -> dict[str, int]:
        """OpenAI's ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


_COUNTER: ContextVar[UsageCounter | None] = ContextVar("mmagents_usage", default=None)
register_configure_hook(_COUNTER, inheritable=True)


@contextmanager
def counting_usage() -> Iterator[UsageCounter]:
    """Count the tokens of every LangChain LLM run started inside the block."""
    counter = UsageCounter()
    token = _COUNTER.set(counter)
    try:
        yield counter
    finally:
        _COUNTER.reset(token)
