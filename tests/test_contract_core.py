"""The contract's shared pieces: the runtime, the settings path, the table, the run helper."""

from __future__ import annotations

import operator
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import Field

from mmagents import Config, ConfigError, load_config
from mmagents.graphs import PIPELINES, get_pipeline
from mmagents.graphs._run import run_graph, sqlite_checkpointer, thread_config
from mmagents.graphs._settings import (
    PipelineSettings,
    context_of,
    parse_assignments,
    resolve_settings,
)
from mmagents.models.fake import FakeVLM
from mmagents.runtime import Models

# -- runtime -------------------------------------------------------------------------------------


def test_models_load_each_role_once_per_object(fake_config: Config) -> None:
    models = Models(fake_config)
    assert models.loaded() == []  # nothing loads at construction
    first = models.vlm
    assert models["vlm"] is first and models.loaded() == ["vlm"]
    other = Models(fake_config)
    assert other.vlm is not first  # no process-wide cache: two runtimes share nothing


def test_models_injected_and_wrapped(fake_config: Config) -> None:
    seen: list[tuple[str, str]] = []

    def wrap(role: str, spec: Any, backend: Any) -> Any:
        seen.append((role, spec.backend))
        return ("wrapped", backend)

    mine = FakeVLM()
    models = Models(fake_config, wrap=wrap, vlm=mine, llm=None)
    assert models.vlm == ("wrapped", mine)
    models.vlm  # noqa: B018 - the wrapper runs once per role, not per access
    assert seen == [("vlm", "fake")]
    assert models.store is models.store


def test_models_reject_unknown_roles(fake_config: Config) -> None:
    with pytest.raises(ConfigError, match="unknown role"):
        Models(fake_config, planner=object())


# -- settings ------------------------------------------------------------------------------------


class DemoSettings(PipelineSettings):
    section: ClassVar[str] = "graphs.demo"
    rounds: int = Field(2, ge=1, le=9)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    names: list[str] = Field(default_factory=lambda: ["a"])
    verbose: bool = False
    label: str = "x"


def demo_config(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(body)
    return load_config(path, environ={"MMAGENTS_HOME": str(tmp_path / "home")})


def test_settings_layers_and_string_parsing(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path, "[graphs.demo]\nrounds = 3\nlabel = 'from-file'\n")
    assert resolve_settings(DemoSettings, None) == DemoSettings()
    from_file = resolve_settings(DemoSettings, cfg)
    assert (from_file.rounds, from_file.label) == (3, "from-file")
    run = resolve_settings(
        DemoSettings,
        cfg,
        {"rounds": "5", "threshold": "0.25", "names": "b", "verbose": "true", "label": "7"},
    )
    assert run == DemoSettings(rounds=5, threshold=0.25, names=["b"], verbose=True, label="7")
    assert resolve_settings(DemoSettings, cfg, {"names": '["p", "q"]'}).names == ["p", "q"]
    assert resolve_settings(DemoSettings, cfg, {"rounds": None}).rounds == 3  # None: not given


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"round": "2"}, "unknown setting.*round.*known: label, names"),
        ({"rounds": "two"}, r"\[graphs.demo\] rounds = 'two'"),
        ({"rounds": 10}, "less than or equal to 9"),
        ({"threshold": "1.5"}, "threshold"),
        ({"verbose": "maybe"}, "verbose"),
    ],
)
def test_settings_errors_name_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_settings(DemoSettings, None, overrides)


def test_settings_from_the_file_are_checked_too(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path, "[graphs.demo]\nrouns = 3\n")
    with pytest.raises(ConfigError, match="rouns"):
        resolve_settings(DemoSettings, cfg)


def test_parse_assignments() -> None:
    assert parse_assignments(["a=1", "b=x=y", "a=2"]) == {"a": "2", "b": "x=y"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["novalue"])


# -- the run helper with per-run context -------------------------------------------------------


class CountState(TypedDict, total=False):
    steps: Annotated[int, operator.add]


def count_graph(default: DemoSettings) -> Any:
    def step(state: CountState, runtime: Runtime[DemoSettings]) -> dict[str, Any]:
        return {"steps": 1}

    def again(state: CountState, runtime: Runtime[DemoSettings]) -> str:
        return "step" if state["steps"] < context_of(runtime, default).rounds else END

    graph = StateGraph(CountState, context_schema=DemoSettings)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", again, ["step", END])
    return graph


def test_run_graph_streams_updates_and_reads_per_run_context() -> None:
    compiled = count_graph(DemoSettings(rounds=2)).compile()
    seen: list[str] = []
    assert run_graph(compiled, {"steps": 0}, on_update=lambda n, u: seen.append(n)) == {"steps": 2}
    assert seen == ["step", "step"]
    assert run_graph(compiled, {"steps": 0}, context=DemoSettings(rounds=4))["steps"] == 4
    assert run_graph(compiled, {"steps": 0}, context={"rounds": 3})["steps"] == 3


def test_sqlite_checkpointer_keeps_a_thread(tmp_path: Path) -> None:
    saver = sqlite_checkpointer(tmp_path / "deep" / "ck.sqlite")
    try:
        compiled = count_graph(DemoSettings(rounds=1)).compile(checkpointer=saver)
        run_graph(compiled, {"steps": 0}, config=thread_config("t1"))
        state = compiled.get_state(thread_config("t1"))
        assert state.values == {"steps": 1} and not state.next
    finally:
        saver.conn.close()


# -- the table -----------------------------------------------------------------------------------


def test_table_lists_every_pipeline() -> None:
    assert list(PIPELINES) == [
        "idealgpt", "meme", "describe", "recode", "comm", "comm-filter", "chat",
    ]  # fmt: skip
    assert get_pipeline("comm-filter").module == "mmagents.graphs.comm_filter"
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'; known: idealgpt"):
        get_pipeline("nope")


def test_reading_the_table_imports_no_graph_module() -> None:
    code = (
        "import sys; import mmagents.graphs as g; g.get_pipeline('meme');"
        "print(sorted(m for m in sys.modules if m.startswith('mmagents.graphs.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", list(PIPELINES))
def test_run_help_lists_each_pipelines_arguments(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main

    with pytest.raises(SystemExit) as done:
        main(["run", name, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and f"mmagents run {name}" in out
    pipeline = get_pipeline(name)
    if pipeline.on_contract():  # generated from the input schema
        for field in pipeline.input_schema().model_fields:
            assert "--" + field.replace("_", "-") in out
        assert "--set" in out and "--json" in out


def test_json_output_shows_messages_and_models_as_json_not_reprs() -> None:
    import json

    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    from mmagents.cli.run import jsonable

    call = {"name": "caption", "args": {"image": "img_0"}, "id": "c1", "type": "tool_call"}
    output = {
        "messages": [
            HumanMessage("hi"),
            AIMessage("", tool_calls=[call]),
            ToolMessage("a cat", tool_call_id="c1", name="caption"),
        ],
        "settings": DemoSettings(),
    }
    data = json.loads(json.dumps(output, default=jsonable))
    assert data["messages"][0] == {"type": "human", "content": "hi"}
    assert data["messages"][1]["tool_calls"][0]["name"] == "caption"
    assert data["messages"][2] == {
        "type": "tool",
        "content": "a cat",
        "name": "caption",
        "tool_call_id": "c1",
    }
    assert data["settings"] == DemoSettings().model_dump(mode="json")
