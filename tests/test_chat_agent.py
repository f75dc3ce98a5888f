"""The chat agent's logic, on scripted planners and fake vision backends (no weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from syrupy.assertion import SnapshotAssertion

from mmagents import Config, load_config
from mmagents.errors import ConfigError
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs.chat import (
    ChatSettings,
    build_chat_graph,
    chat_tools,
    image_marker,
    user_message,
)
from mmagents.graphs.chat_session import (
    AnswerEvent,
    ChatAgent,
    TokenEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from mmagents.images import default_store
from mmagents.models.fake import ScriptedChat
from mmagents.runtime import Models
from mmagents.samples import sample_path
from mmagents.tools.pipelines import RunIdealGPTTool


def _call(name: str, **args: Any) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": f"call_{uuid4().hex}"}]
    )


def _config(home: Path, toml: str, *, fake_roles: bool = True) -> Config:
    """A config with a ``[graphs.chat]`` file section and (by default) fake vision roles."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "c.toml").write_text(toml)
    env = {"MMAGENTS_HOME": str(home)}
    if fake_roles:
        for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
            env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(home / "c.toml", environ=env)


@pytest.fixture
def cat(fake_config: Config) -> str:
    return default_store(fake_config).put(sample_path("cat", fake_config))


def _payload(message: BaseMessage) -> Any:
    """A tool result as the planner saw it: JSON inside one ``<tool_result>`` data block."""
    text = message.text
    assert text.startswith("<tool_result>\n") and text.endswith("\n</tool_result>"), text
    return json.loads(text.removeprefix("<tool_result>\n").removesuffix("\n</tool_result>"))


def _agent(config: Config, llm: BaseChatModel, **kwargs: Any) -> ChatAgent:
    return ChatAgent(
        config, llm=llm, checkpointer=kwargs.pop("checkpointer", InMemorySaver()), **kwargs
    )


def test_graph_shape(fake_config: Config, snapshot: SnapshotAssertion) -> None:
    models = Models(fake_config, llm=ScriptedChat(replies=[]))
    graph = build_chat_graph(models=models, settings=ChatSettings(tools=()))
    assert graph.get_graph().draw_mermaid() == snapshot


def test_tool_call_then_answer(fake_config: Config, cat: str) -> None:
    def answer(messages: list[BaseMessage]) -> str:
        result = messages[-1]
        assert isinstance(result, ToolMessage) and result.name == "answer_question"
        return "It is a " + _payload(result)["answer"]

    llm = ScriptedChat(
        replies=[_call("answer_question", image=cat, question="what animal?"), answer]
    )
    events = list(_agent(fake_config, llm).turn("t1", "What is this?", [cat]))

    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    # The intake captions the new image by itself, then the planner asks its own question.
    assert [(c.name, c.auto) for c in calls] == [("caption", True), ("answer_question", False)]
    assert [r.name for r in results] == ["caption", "answer_question"]
    assert all(r.error_type is None for r in results)
    assert "fake caption" in results[0].content
    assert not results[0].content.startswith("<tool_result>")  # the thread keeps the raw result
    final = events[-1]
    assert isinstance(final, AnswerEvent) and final.finish_reason == "stop"
    assert final.text == "It is a fake answer to: what animal?"
    # The planner saw the handle and the caption, never pixels.
    first_prompt = llm.calls[0]
    assert image_marker(cat) in first_prompt[1].text
    assert any(isinstance(m, ToolMessage) and m.name == "caption" for m in first_prompt)
    assert all(isinstance(m.content, str) for m in first_prompt)


def test_step_limit_stops_a_looping_planner(home: Path, cat: str) -> None:
    config = _config(home, "[graphs.chat]\nmax_steps = 3\ndescribe_images = false\n")
    calls = iter(range(100))
    llm = ScriptedChat(
        replies=[lambda _: _call("score_image_text", image=cat, texts=[f"a cat {next(calls)}"])],
        cycle=True,
    )
    agent = _agent(config, llm, tools=["score_image_text"])
    events = list(agent.turn("loop", "describe it", [cat]))

    final = events[-1]
    assert isinstance(final, AnswerEvent) and final.finish_reason == "step_limit"
    assert "step limit" in final.text and "max_steps = 3" in final.text
    assert sum(isinstance(e, ToolResultEvent) for e in events) == 3  # three rounds ran
    assert len(llm.calls) == 4  # the fourth request for a tool was refused
    # The next turn starts a fresh count.
    llm2 = ScriptedChat(replies=["fine"])
    assert _agent(config, llm2, tools=["score_image_text"]).ask("other", "hi").text == "fine"


def test_a_repeated_call_makes_the_planner_answer(fake_config: Config, cat: str) -> None:
    # The intake already captioned the image; asking for the same caption again is not run.
    llm = ScriptedChat(replies=[_call("caption", image=cat), "a cat"])
    events = list(_agent(fake_config, llm).turn("r", "what is it?", [cat]))
    assert [(e.name, e.auto) for e in events if isinstance(e, ToolCallEvent)] == [("caption", True)]
    assert isinstance(events[-1], AnswerEvent) and events[-1].text == "a cat"
    assert len(llm.calls) == 2 and llm.calls[0] == llm.calls[1]  # asked again, same prompt


def test_tool_errors_come_back_typed(fake_config: Config, cat: str) -> None:
    llm = ScriptedChat(
        replies=[
            _call("caption", image="img_0000000000000000"),  # well-formed but unknown handle
            _call("caption", image="not a handle"),  # fails the argument schema
            _call("no_such_tool", x=1),
            _call("crop_region", image=cat, box=[5, 5, 5, 5]),  # empty box: ImageError
            "gave up",
        ]
    )
    events = list(_agent(fake_config, llm, tools=["caption", "crop_region"]).turn("e", "look"))

    errors = [(e.name, e.error_type) for e in events if isinstance(e, ToolResultEvent)]
    assert errors == [
        ("caption", "UnknownHandleError"),
        ("caption", "ValidationError"),
        ("no_such_tool", "UnknownToolError"),
        ("crop_region", "ImageError"),
    ]
    # The planner saw each error as a tool message with status "error" and a typed body.
    seen = [m for m in llm.calls[-1] if isinstance(m, ToolMessage)]
    assert [m.status for m in seen] == ["error"] * 4
    body = _payload(seen[0])["error"]
    assert body["type"] == "UnknownHandleError" and "img_0000000000000000" in body["message"]
    assert "image" in _payload(seen[1])["error"]["message"]
    assert isinstance(events[-1], AnswerEvent) and events[-1].text == "gave up"


def test_threads_persist_in_sqlite(fake_config: Config, cat: str) -> None:
    first = ChatAgent(fake_config, llm=ScriptedChat(replies=["a cat, I think"]))
    assert first.ask("thread-1", "what is it?", [cat]).text == "a cat, I think"

    # A new agent (as after a restart) on the same home resumes the thread from SQLite.
    llm = ScriptedChat(replies=["you asked what it is"])
    second = ChatAgent(fake_config, llm=llm)
    assert second.ask("thread-1", "what did I ask?").text == "you asked what it is"
    texts = [m.text for m in llm.calls[0]]
    assert any("what is it?" in t for t in texts) and "a cat, I think" in texts
    # The image is not captioned again, and other threads are separate.
    assert sum(isinstance(m, ToolMessage) for m in llm.calls[0]) == 1
    assert second.history("thread-2") == []

    second.reset("thread-1")
    assert second.history("thread-1") == []


def test_streamed_tokens_and_answer_flag(fake_config: Config) -> None:
    from langchain_core.language_models import GenericFakeChatModel

    class StreamingPlanner(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    llm = StreamingPlanner(messages=iter([AIMessage(content="hello there friend")]))
    events = list(_agent(fake_config, llm).turn("s", "hi"))
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert tokens == "hello there friend"
    assert isinstance(events[-1], AnswerEvent) and events[-1].streamed


def test_planner_without_tool_calling_uses_a_json_decision(fake_config: Config, cat: str) -> None:
    class NoToolCalling(ScriptedChat):
        bind_tools = BaseChatModel.bind_tools  # type: ignore[assignment]

    llm = NoToolCalling(
        replies=[
            json.dumps({"tool": "read_text", "arguments": {"image": cat}}),
            json.dumps({"answer": "it says fake text"}),
        ]
    )
    config = fake_config
    events = list(_agent(config, llm, tools=["read_text"]).turn("j", "what does it say?", [cat]))
    assert [e.name for e in events if isinstance(e, ToolCallEvent)] == ["read_text"]
    assert isinstance(events[-1], AnswerEvent) and events[-1].text == "it says fake text"
    assert "read_text(image)" in llm.calls[0][0].text  # the tool list is in the prompt


def test_vision_planner_gets_pixels_but_state_keeps_handles(home: Path, cat: str) -> None:
    config = _config(home, "[graphs.chat]\nvision = true\ndescribe_images = false\n")
    default_store(config).put(sample_path("cat", config))
    llm = ScriptedChat(replies=["a cat"])
    agent = _agent(config, llm, tools=[])
    assert agent.tools == []
    agent.ask("v", "what is it?", [cat])
    parts = llm.calls[0][-1].content
    assert isinstance(parts, list) and parts[1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    assert isinstance(agent.history("v")[0].content, str)


def test_pipeline_tools_registered_and_absent_ones_omitted(
    fake_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools, omitted = chat_tools(fake_config)
    names = {t.name for t in tools} | set(omitted)
    assert {
        "caption",
        "answer_question",
        "run_idealgpt",
        "classify_meme",
        "classify_image",
    } <= names

    # Tools whose graph is absent are left out of the agent, with the reason.
    monkeypatch.setattr(RunIdealGPTTool, "unavailable_reason", lambda self: "not installed")
    tools, omitted = chat_tools(fake_config)
    assert omitted == {"run_idealgpt": "not installed"}
    assert "run_idealgpt" not in {t.name for t in tools}


def test_pipeline_tool_runs_its_graph_runner_with_configured_options(home: Path) -> None:
    from mmagents.tools import build_tool

    table = {"cat": ["whiskers", "fur"], "rocket": ["a tall white body", "fins"]}
    home.mkdir(parents=True, exist_ok=True)
    (home / "d.json").write_text(json.dumps(table))
    config = _config(home, f'[tools.classify_image]\ndescriptors = "{home / "d.json"}"\n')
    tool = build_tool("classify_image", config)
    assert tool.unavailable_reason() is None  # type: ignore[attr-defined]
    cat = default_store(config).put(sample_path("cat", config))
    result = tool.invoke({"image": cat, "classes": ["cat", "rocket"]})
    assert result["prediction"] in {"cat", "rocket"} and result["llm_calls"] == 0


def test_settings_are_validated(home: Path) -> None:
    with pytest.raises(ConfigError, match="max_step"):
        resolve_settings(ChatSettings, _config(home, "[graphs.chat]\nmax_step = 3\n"))
    with pytest.raises(ConfigError, match="max_steps"):
        resolve_settings(ChatSettings, _config(home, "[graphs.chat]\nmax_steps = 0\n"))
    with pytest.raises(ConfigError, match="nope"):
        ChatAgent(_config(home, '[graphs.chat]\ntools = ["nope"]\n'), llm=ScriptedChat(replies=[]))


def test_settings_arrive_per_run(fake_config: Config) -> None:
    """One compiled graph; the step limit of each run is that run's context."""
    llm = ScriptedChat(replies=[lambda _: _call("embed", texts=["x"])], cycle=True)
    graph = build_chat_graph(
        models=Models(fake_config, llm=llm), settings=ChatSettings(tools=("embed",))
    )
    run = {"configurable": {"thread_id": "p"}}
    out = graph.invoke({"messages": [user_message("go")]}, run, context=ChatSettings(max_steps=1))
    assert out["messages"][-1].response_metadata["finish_reason"] == "step_limit"
    assert "max_steps = 1" in out["messages"][-1].text


def test_user_message_puts_markers_first(fake_config: Config, cat: str) -> None:
    message = user_message("what is it?", [cat])
    assert isinstance(message, HumanMessage)
    assert message.text == f"{image_marker(cat)}\nwhat is it?"


def test_planner_sees_only_the_latest_turns(home: Path) -> None:
    config = _config(home, "[graphs.chat]\nhistory_turns = 2\n")
    llm = ScriptedChat(replies=["ok"], cycle=True)
    agent = _agent(config, llm, tools=[])
    for text in ("one", "two", "three"):
        agent.ask("w", text)
    seen = [m.text for m in llm.calls[-1] if isinstance(m, HumanMessage)]
    assert seen == ["two", "three"]
    assert len(agent.history("w")) == 6  # the thread itself keeps everything


def test_run_chat_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main
    from mmagents.models import register_backend

    def planner(**_: Any) -> ScriptedChat:
        def reply(messages: list[BaseMessage]) -> str:
            last = messages[-1]
            if not isinstance(last, ToolMessage):
                return "no tool result"
            return "seen: " + last.text.removeprefix("<tool_result>\n").removesuffix(
                "\n</tool_result>"
            )

        return ScriptedChat(replies=[reply], cycle=True)

    register_backend("llm", "scripted-chat-cli", planner, replace=True)
    monkeypatch.setenv("MMAGENTS_HOME", str(home))
    monkeypatch.setenv("MMAGENTS_LLM__BACKEND", "scripted-chat-cli")
    monkeypatch.setenv("MMAGENTS_VLM__BACKEND", "fake")
    photo = sample_path("cat", load_config(environ={"MMAGENTS_HOME": str(home)}))
    args = ["run", "chat", "--text", "what is it?", "--image", str(photo)]
    assert main([*args, "--set", 'tools=["caption"]']) == 0
    out = capsys.readouterr().out
    assert '→ caption({"image": "img_' in out and "← caption:" in out
    assert 'agent> seen: {"caption": "fake caption' in out
    assert main(["run", "chat"]) == 1  # no message
