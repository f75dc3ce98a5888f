"""Per-call sampling parameters of the llm role (what an OpenAI client sends with a request).

A backend says which of them it honours with a ``sampling_params`` class attribute (a frozenset of
the names below); :func:`supported_sampling` reads it, and a backend without one honours none. The
values travel per call, as keyword arguments of ``invoke`` (LangChain hands them to the backend's
``_generate`` / ``_stream``), never by changing the shared model object: two requests with
different temperatures on one loaded model do not mix.

``max_tokens`` is a budget for the planner's own generation in one chat turn (every planner step
and the answer): each call may generate what earlier calls of the turn left of it
(:meth:`Sampling.call_kwargs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SAMPLING_PARAMS",
    "Sampling",
    "StopCutter",
    "cut_at_stop",
    "output_tokens",
    "supported_sampling",
]

#: Every per-call sampling parameter mmagents knows (OpenAI's names).
SAMPLING_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    }
)


class Sampling(BaseModel):
    """Sampling parameters for one run; ``None`` leaves the backend's configured value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: tuple[str, ...] | None = Field(None, max_length=4)
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)

    def given(self) -> dict[str, Any]:
        """The parameters that are set."""
        return {k: v for k, v in self.model_dump().items() if v is not None and v != ()}

    def call_kwargs(self, spent: int = 0) -> dict[str, Any] | None:
        """Keyword arguments for one call, ``max_tokens`` cut to what ``spent`` left of it.

        Returns ``None`` when the token budget is used up (the caller must not call again).
        """
        kwargs = self.given()
        if "stop" in kwargs:
            kwargs["stop"] = list(kwargs["stop"])
        if self.max_tokens is not None:
            left = self.max_tokens - spent
            if left <= 0:
                return None
            kwargs["max_tokens"] = left
        return kwargs


def supported_sampling(llm: Any) -> frozenset[str]:
    """The sampling parameters ``llm`` honours per call (its ``sampling_params``; none if unset)."""
    names = getattr(type(llm), "sampling_params", None)
    if not isinstance(names, frozenset):
        return frozenset()
    return names & SAMPLING_PARAMS


def output_tokens(messages: Iterable[BaseMessage]) -> int:
    """Completion tokens the ``AIMessage`` replies among ``messages`` report."""
    total = 0
    for message in messages:
        if isinstance(message, AIMessage) and message.usage_metadata:
            total += int(message.usage_metadata.get("output_tokens", 0))
    return total


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """``text`` up to (not including) the first stop string, and whether one was found."""
    cuts = [i for s in stop or () if s and (i := text.find(s)) != -1]
    return (text[: min(cuts)], True) if cuts else (text, False)


class StopCutter:
    """Applies stop strings to a stream: feed pieces, get what may go out now.

    Text that might be the beginning of a stop string is held back until it is not; after a stop
    string, nothing more goes out (:attr:`stopped`).
    """

    def __init__(self, stop: Sequence[str] | None) -> None:
        self.stop = [s for s in stop or () if s]
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._text = ""
        self._sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add ``piece``; return the newly releasable text."""
        if self.stopped:
            return ""
        self._text += piece
        cut, found = cut_at_stop(self._text, self.stop)
        if found:
            self.stopped = True
            out, self._sent = cut[self._sent :], len(cut)
            return out
        safe = max(self._sent, len(self._text) - self._hold)
        out, self._sent = self._text[self._sent : safe], safe
        return out

    def flush(self) -> str:
        """The held-back rest, once the stream has ended without a stop string."""
        if self.stopped:
            return ""
        out, self._sent = self._text[self._sent :], len(self._text)
        return out
