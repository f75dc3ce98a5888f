"""A sleeping stand-in llm and synthetic memes, shared by the eval bench scripts.

``SleepyChat`` is registered as llm backend ``sleepy``: every call sleeps a fixed latency (a stand-in
for a remote model), answers a valid meme verdict derived from a hash of the prompt, and adds the
time it spent to a process-wide counter, so a bench can compare the runner's wall time with the
time spent inside model calls.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from mmagents import Config, load_config
from mmagents.models import register_backend

__all__ = ["CALLS", "SleepyChat", "one_call", "sleepy_config", "thin_task", "write_memes"]


class _Calls:
    """Process-wide count and total duration of SleepyChat calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.seconds = 0.0

    def add(self, seconds: float) -> None:
        with self.lock:
            self.count += 1
            self.seconds += seconds


CALLS = _Calls()


class SleepyChat(BaseChatModel):
    """Sleeps ``latency`` seconds per call, then answers a valid meme verdict."""

    latency: float = 0.1
    structured_mode: str = "prompt"

    @property
    def _llm_type(self) -> str:
        return "sleepy"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"latency": self.latency}

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        start = time.perf_counter()
        time.sleep(self.latency)
        digest = hashlib.sha256(str(messages[-1].content).encode()).digest()
        label = "harmful" if digest[0] % 2 else "harmless"
        reply = json.dumps({"label": label, "confidence": 0.5 + digest[1] / 512})
        result = ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])
        CALLS.add(time.perf_counter() - start)
        return result


register_backend("llm", "sleepy", SleepyChat, replace=True)


def sleepy_config(home: Path, latency: float) -> Config:
    """The offline profile with the llm role played by ``SleepyChat(latency)``."""
    return load_config(
        environ={
            "MMAGENTS_HOME": str(home),
            "MMAGENTS_LLM__BACKEND": "sleepy",
            "MMAGENTS_LLM__LATENCY": str(latency),
        }
    )


def write_memes(path: Path, n: int) -> Path:
    """``n`` synthetic memes in the harm-C JSONL format."""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            row = {
                "id": f"bench_{i}",
                "text": f"synthetic meme text number {i}",
                "caption": f"a picture of thing {i % 7}",
                "label": "harmful" if i % 3 == 0 else "harmless",
            }
            handle.write(json.dumps(row) + "\n")
    return path


def one_call(sample: dict[str, Any], config: Config) -> dict[str, Any]:
    """The thinnest runner: one llm call on the meme text, its label as the prediction."""
    from mmagents.models import load_role

    reply = load_role("llm", config).invoke(sample["text"])
    return {"prediction": json.loads(str(reply.content))["label"]}


def thin_task(folder: Path) -> Path:
    """A task file running :func:`one_call` (importable as ``_sleepy`` from bench/)."""
    path = folder / "bench-one-call.yaml"
    path.write_text(
        "task: bench-one-call\nversion: 1\nrunner: _sleepy:one_call\ntarget: label\n"
        "dataset: {required: [text, label]}\nmetrics: [accuracy]\n",
        encoding="utf-8",
    )
    return path
