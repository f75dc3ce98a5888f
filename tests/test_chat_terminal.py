"""The terminal chat: commands and output on fakes, then a real session driven with pexpect."""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, ToolMessage
from rich.console import Console

from mmagents import Config, load_config
from mmagents.graphs.chat_session import ChatAgent
from mmagents.models.fake import ScriptedChat
from mmagents.samples import sample_path
from mmagents.serve.terminal import run_chat


def _reply(messages: list[BaseMessage]) -> str:
    last = messages[-1]
    if isinstance(last, ToolMessage):  # shown to the planner in a <tool_result> data block
        return f"seen {last.text.removeprefix('<tool_result>').strip()[:40]}"
    return f"echo {last.text}"


def _session(config: Config, lines: list[str], **kwargs: object) -> str:
    """Run the REPL on scripted input lines; return everything it printed."""
    feed: Iterator[str] = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    agent = ChatAgent(config, llm=ScriptedChat(replies=[_reply], cycle=True))
    code = run_chat(
        config,
        console=Console(file=out, width=200),
        read=read,
        agent=agent,
        **kwargs,  # type: ignore[arg-type]
    )
    assert code == 0
    return out.getvalue()


def test_session_shows_tool_calls_and_answers(fake_config: Config) -> None:
    photo = sample_path("cat", fake_config)
    out = _session(
        fake_config, ["what is it?", "/quit", "never read"], images=[str(photo)], thread="t1"
    )
    assert "thread t1" in out and "attached img_" in out
    assert "→ auto caption(" in out and "← caption:" in out
    assert 'agent> seen {"caption": "fake caption' in out
    assert "echo never read" not in out


def test_commands(fake_config: Config, tmp_path: Path) -> None:
    photo = sample_path("coffee", fake_config)
    out = _session(
        fake_config,
        [
            "/tools",
            f"/image {tmp_path / 'missing.png'}",  # an error, and the session goes on
            f"/image {photo}",
            "first",
            "/history",
            "/reset",
            "/history",
            "/bogus",
            "",
        ],
        thread="t2",
    )
    assert "caption  Describe an image" in out
    assert "error: ImageError: image file not found" in out
    assert "→ auto caption(" in out  # the /image went with "first"
    assert out.count("you> [image img_") == 1  # history shown once, then cleared
    assert "thread t2 cleared" in out and "unknown command /bogus" in out


def test_resumed_thread_shows_earlier_turns(fake_config: Config) -> None:
    _session(fake_config, ["remember me"], thread="t3")
    out = _session(fake_config, ["/history"], thread="t3")
    assert "resumed thread t3 (1 earlier turns)" in out
    assert "you> remember me" in out and "agent> echo remember me" in out


def _spawn(arguments: str, env: dict[str, str], timeout: int) -> Any:
    """``mmagents <arguments>`` in a pseudo-terminal, as a user runs it."""
    import pexpect

    script = Path(sys.executable).with_name("mmagents")
    command = str(script) if script.exists() else f"{sys.executable} -m mmagents.cli"
    return pexpect.spawn(
        f"{command} {arguments}", env=env, encoding="utf-8", timeout=timeout, dimensions=(50, 200)
    )


@pytest.mark.slow
def test_terminal_session_on_the_offline_default(tmp_path: Path) -> None:
    """``mmagents chat --image <photo>`` answers; a second process with ``--thread`` resumes."""
    pexpect = pytest.importorskip("pexpect")
    pytest.importorskip("llama_cpp")
    home = tmp_path / "home"
    photo = sample_path("cat", load_config(environ={"MMAGENTS_HOME": str(home)}))
    env = {
        **os.environ,
        "MMAGENTS_HOME": str(home),
        "MMAGENTS_LLM__MAX_TOKENS": "48",  # short answers keep this test fast on 2 cores
        "NO_COLOR": "1",
        "TERM": "dumb",
        "HF_HUB_OFFLINE": "1",
    }
    first = _spawn(f"chat --image {photo}", env, timeout=900)
    first.logfile_read = sys.stdout
    first.expect(r"thread ([0-9a-f]{12}) ")
    thread = first.match.group(1)
    first.expect("you> ")
    first.sendline("What is in this picture?")
    first.expect("auto caption")
    first.expect("agent> ")
    first.expect("you> ")
    answer = first.before.strip()
    assert answer, "the agent printed no answer"
    first.sendline("/quit")
    first.expect(pexpect.EOF)
    first.close()
    assert first.exitstatus == 0

    second = _spawn(f"chat --thread {thread}", env, timeout=120)
    second.expect(re.escape(f"resumed thread {thread} (1 earlier turns)"))
    second.expect(r"you> \[image img_[0-9a-f]{16} attached\] What is in this picture\?")
    second.expect("agent> ")
    second.expect("you> ")
    second.sendeof()
    second.expect(pexpect.EOF)
    second.close()
    assert second.exitstatus == 0
