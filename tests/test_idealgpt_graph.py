"""IdealGPT graph: shape, loop logic, repairs, fan-out, concurrency and checkpoint resume (fakes)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from PIL import Image
from syrupy.assertion import SnapshotAssertion

from mmagents import Config, ConfigError, load_config
from mmagents.graphs._run import run_graph, sqlite_checkpointer, thread_config
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs.idealgpt import IdealGPTInput, IdealGPTSettings, build_idealgpt_graph
from mmagents.images import default_store
from mmagents.models.fake import FakeVLM, ScriptedChat
from mmagents.runtime import Models


def ask(*questions: str) -> str:
    return json.dumps({"sub_questions": list(questions)})


def reason(answer: str, confidence: float, analysis: str = "some analysis") -> str:
    return json.dumps({"analysis": analysis, "answer": answer, "confidence": confidence})


def system_text(messages: list[BaseMessage]) -> str:
    return str(messages[0].content)


@pytest.fixture
def handle(config: Config) -> str:
    return default_store(config).put(Image.new("RGB", (32, 32), (200, 120, 40)))


def build(config: Config, llm: Any, vlm: Any, checkpointer: Any = None, **settings: Any) -> Any:
    models = Models(config, llm=llm, vlm=vlm)
    chosen = IdealGPTSettings(**settings) if settings else None
    return build_idealgpt_graph(config, models=models, settings=chosen, checkpointer=checkpointer)


def start(handle: str, question: str, **extra: Any) -> dict[str, Any]:
    return IdealGPTInput(image=handle, question=question, **extra).model_dump(exclude_none=True)


def run(config: Config, handle: str, replies: list[Any], vlm: Any = None, **settings: Any) -> Any:
    llm = ScriptedChat(replies=replies)
    graph = build(config, llm, vlm or FakeVLM(), **settings)
    return llm, run_graph(graph, start(handle, "What animal is this?"))


def test_graph_shape(config: Config, snapshot: SnapshotAssertion) -> None:
    # The Mermaid drawing of the compiled graph (update with `pytest --snapshot-update`).
    assert build_idealgpt_graph(config).get_graph().draw_mermaid() == snapshot


def test_stops_when_confident(config: Config, handle: str) -> None:
    vlm = FakeVLM()
    _, state = run(
        config, handle, [ask("What is it?", "What colour is it?"), reason("cat", 0.9)], vlm
    )
    result = state
    assert result["answer"] == "cat" and result["confidence"] == 0.9
    assert len(result["rounds"]) == 1
    assert result["rounds"][0]["sub_questions"] == [
        {"question": "What is it?", "answer": "fake answer to: What is it?"},
        {"question": "What colour is it?", "answer": "fake answer to: What colour is it?"},
    ]
    assert result["llm_calls"] == 2 and result["vlm_calls"] == 3 == vlm.calls
    assert "error" not in result


def test_unsure_round_continues_with_the_analysis(config: Config, handle: str) -> None:
    replies = [
        ask("What is it?"),
        reason("", 0.0, analysis="The caption only gives colours."),
        ask("What shape does it have?"),
        reason("dog", 0.4),  # an answer below the threshold is not enough either
        ask("What is its fur like?"),
        reason("cat", 0.8),
    ]
    llm, state = run(config, handle, replies, max_rounds=4)
    assert state["answer"] == "cat" and len(state["rounds"]) == 3
    second_questioner = llm.calls[2]
    assert "new short sub-questions" in system_text(second_questioner)  # later-round variant
    assert "The caption only gives colours." in str(second_questioner[-1].content)
    assert "fake answer to: What is it?" in str(second_questioner[-1].content)
    # The reasoner sees every sub-answer so far, not just the current round's.
    third_reasoner = str(llm.calls[5][-1].content)
    assert "What is it?" in third_reasoner and "What is its fur like?" in third_reasoner


def test_max_rounds_forces_a_final_answer(config: Config, handle: str) -> None:
    replies = [
        ask("What is it?"),
        reason("", 0.0),
        ask("What shape is it?"),
        reason("", 0.0),  # "not sure" is invalid in the final round: repaired
        reason("cat", 0.2),
    ]
    llm, state = run(config, handle, replies, max_rounds=2)
    assert state["answer"] == "cat" and state["confidence"] == 0.2
    assert len(state["rounds"]) == 2 and state.get("error") is None
    assert state["llm_calls"] == 5
    assert "you must give your best answer" in system_text(llm.calls[3])  # final-round variant
    assert "you must give your best answer" not in system_text(llm.calls[1])


def test_repair_then_success(config: Config, handle: str) -> None:
    llm, state = run(config, handle, ["sure! here you go", ask("What is it?"), reason("cat", 1)])
    assert state["answer"] == "cat" and state["llm_calls"] == 3
    assert "invalid" in str(llm.calls[1][-1].content)  # the repair message


def test_reasoner_failure_is_a_typed_error_in_state(config: Config, handle: str) -> None:
    vlm = FakeVLM()
    replies = [ask("What is it?"), "no", "still no", '{"analysis": "x"}']
    llm, state = run(config, handle, replies, vlm, max_repairs=2)
    error = state["error"]
    assert error["type"] == "StructuredOutputError" and error["node"] == "reasoner"
    assert "Reasoning" in error["message"]
    assert state["llm_calls"] == 4 and len(llm.calls) == 4  # ended: no further round
    assert len(state["rounds"]) == 1 and state["rounds"][0]["analysis"] == ""
    assert state.get("answer") is None and vlm.calls == 2


def test_questioner_failure_ends_before_answering(config: Config, handle: str) -> None:
    vlm = FakeVLM()
    _, state = run(config, handle, ["x", "y"], vlm, max_repairs=1)
    assert state["error"]["node"] == "questioner" and state["llm_calls"] == 2
    assert vlm.calls == 1 and not state.get("rounds")  # only the caption


def test_fan_out_sends_one_answerer_per_sub_question(config: Config, handle: str) -> None:
    vlm = FakeVLM()
    replies = [ask("What is it?", "What colour?", "what is it?"), reason("cat", 0.9)]
    _, state = run(config, handle, replies, vlm)
    asked = [qa["question"] for qa in state["rounds"][0]["sub_questions"]]
    assert asked == ["What is it?", "What colour?"]  # repeats dropped before fanning out
    assert vlm.calls == 1 + 2


def test_sub_question_bound_is_enforced_by_the_schema(config: Config, handle: str) -> None:
    replies = [ask("A?", "B?", "C?"), ask("What is it?", "What colour?"), reason("cat", 0.9)]
    _, state = run(config, handle, replies, sub_questions=2)
    assert len(state["rounds"][0]["sub_questions"]) == 2 and state["llm_calls"] == 3


class BarrierVLM(FakeVLM):
    """Each answer waits until ``parties`` answers are in flight: only concurrency passes."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=20)

    def answer(self, image: Image.Image, question: str) -> str:
        self.barrier.wait()  # BrokenBarrierError if the answers ran one after another
        return super().answer(image, question)


class OverlapVLM(FakeVLM):
    """Records the most answers ever in flight at once."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay, self.active, self.most = delay, 0, 0
        self.lock = threading.Lock()

    def answer(self, image: Image.Image, question: str) -> str:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
        return super().answer(image, question)


def test_answerers_run_concurrently(config: Config, handle: str) -> None:
    replies = [ask("What is it?", "What colour?", "What size?"), reason("cat", 0.9)]
    _, state = run(config, handle, replies, BarrierVLM(3))
    assert len(state["rounds"][0]["sub_questions"]) == 3


def test_max_concurrency_one_answers_in_turn(config: Config, handle: str) -> None:
    vlm = OverlapVLM(0.05)
    llm = ScriptedChat(replies=[ask("What is it?", "What colour?", "What size?"), reason("c", 1)])
    graph = build(config, llm, vlm)
    run_graph(graph, start(handle, "Q?"), config=thread_config(max_concurrency=1))
    assert vlm.most == 1


def test_updates_stream_node_by_node(config: Config, handle: str) -> None:
    llm = ScriptedChat(replies=[ask("What is it?", "What colour?"), reason("cat", 0.9)])
    graph = build(config, llm, FakeVLM())
    seen: list[str] = []
    run_graph(graph, start(handle, "Q?"), on_update=lambda node, _: seen.append(node))
    assert seen == ["caption", "questioner", "answerer", "answerer", "reasoner"]


def test_given_caption_skips_the_captioner(config: Config, handle: str) -> None:
    vlm = FakeVLM()
    llm = ScriptedChat(replies=[ask("What is it?"), reason("cat", 0.9)])
    graph = build(config, llm, vlm)
    state = graph.invoke(start(handle, "Q?", caption="a tabby cat on a rug"))
    assert vlm.calls == 1 and state["vlm_calls"] == 1
    assert "a tabby cat on a rug" in str(llm.calls[0][-1].content)


def test_choices_reach_the_prompts_and_answers_snap_to_them(config: Config, handle: str) -> None:
    llm = ScriptedChat(replies=[ask("What is it?"), reason("Answer 2", 0.9)])
    graph = build(config, llm, FakeVLM())
    state = graph.invoke(start(handle, "Which animal?", choices=["dog", "cat"]))
    assert state["answer"] == "cat"
    assert "Answer 2: cat" in str(llm.calls[0][-1].content)
    assert '"enum": ["dog", "cat", ""]' in system_text(llm.calls[1])  # schema allows only choices


def test_settings_from_config_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[graphs.idealgpt]\nmax_rounds = 2\nconfidence_threshold = 0.7\n")
    config = load_config(path, environ={"MMAGENTS_HOME": str(tmp_path)})
    settings = resolve_settings(
        IdealGPTSettings, config, {"sub_questions": "2", "max_rounds": None}
    )
    assert settings == IdealGPTSettings(max_rounds=2, sub_questions=2, confidence_threshold=0.7)
    assert IdealGPTSettings().max_rounds == 4  # the reference's default
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve_settings(IdealGPTSettings, config, {"rounds": 3})
    with pytest.raises(ConfigError, match="sub_questions"):
        resolve_settings(IdealGPTSettings, config, {"sub_questions": 9})
    with pytest.raises(ConfigError, match="max_rounds = 'many'"):
        resolve_settings(IdealGPTSettings, config, {"max_rounds": "many"})


def test_many_rounds_do_not_hit_the_recursion_limit(config: Config, handle: str) -> None:
    replies = [ask("What is it?"), reason("", 0.0)] * 9 + [ask("What is it?"), reason("cat", 0.1)]
    _, state = run(config, handle, replies, max_rounds=10)
    assert len(state["rounds"]) == 10 and state["answer"] == "cat"


class CrashOnceVLM(FakeVLM):
    """Fails the first answer to ``question``, as a dying process or a dropped connection would."""

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question, self.crashed, self.answers = question, False, 0

    def answer(self, image: Image.Image, question: str) -> str:
        if question == self.question and not self.crashed:
            self.crashed = True
            raise ConnectionError("endpoint went away")
        self.answers += 1
        return super().answer(image, question)


def test_checkpointed_thread_resumes_after_a_crash(
    config: Config, handle: str, tmp_path: Path
) -> None:
    db = tmp_path / "ckpt" / "idealgpt.sqlite"
    vlm = CrashOnceVLM("What colour?")
    replies = [
        ask("What is it?"),
        reason("", 0.0),
        ask("What size?", "What colour?"),
        reason("cat", 0.9),
    ]
    llm = ScriptedChat(replies=replies)
    inputs = start(handle, "What animal is this?")
    first = sqlite_checkpointer(db)
    graph = build(config, llm, vlm, first)
    with pytest.raises(ConnectionError):
        run_graph(graph, inputs, config=thread_config("t1"))
    first.conn.close()
    assert vlm.calls == 1 + 1 + 1  # caption, round-1 answer, round-2 answer before the crash

    # A new process: a fresh connection to the same file, the same thread, no input.
    second = sqlite_checkpointer(db)
    graph = build(config, llm, vlm, second)
    assert graph.get_state({"configurable": {"thread_id": "t1"}}).next == ("answerer",)
    state = run_graph(graph, None, config=thread_config("t1"))
    second.conn.close()
    assert state["answer"] == "cat" and len(state["rounds"]) == 2
    # Only the failed answerer ran again: no new caption, no repeated questioner call.
    assert vlm.answers == 3 and len(llm.calls) == 4
    assert state["vlm_calls"] == 4 and state["llm_calls"] == 4
    assert [qa["question"] for qa in state["rounds"][1]["sub_questions"]] == [
        "What size?",
        "What colour?",
    ]


def test_async_invocation_also_answers_concurrently(config: Config, handle: str) -> None:
    llm = ScriptedChat(replies=[ask("What is it?", "What colour?", "What size?"), reason("cat", 1)])
    graph = build(config, llm, BarrierVLM(3))
    state = asyncio.run(graph.ainvoke(start(handle, "Q?")))
    assert state["answer"] == "cat" and state["vlm_calls"] == 4


def test_settings_change_per_run_without_rebuilding(config: Config, handle: str) -> None:
    unsure = [ask("What is it?"), reason("", 0.0)]
    final = [ask("What is it?"), reason("dog", 0.1)]
    llm = ScriptedChat(replies=[*unsure, reason("cat", 0.2), *unsure * 11, *final])
    graph = build(config, llm, FakeVLM(), max_rounds=3)
    one = run_graph(graph, start(handle, "Q?"), context=IdealGPTSettings(max_rounds=1))
    assert len(one["rounds"]) == 1 and one["answer"] == "cat"  # the only round is the final one
    # More rounds than the build-time settings allow: the recursion limit is set from the bound.
    many = graph.invoke(start(handle, "Q?"), context={"max_rounds": 12})
    assert len(many["rounds"]) == 12 and many["answer"] == "dog"
    assert set(many) <= {"answer", "confidence", "rounds", "llm_calls", "vlm_calls", "error"}
