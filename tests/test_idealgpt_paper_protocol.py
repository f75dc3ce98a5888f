"""IdealGPT under ``protocol=paper``: the reference's prompts, parsing, reruns and stop rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from mmagents._config import Config
from mmagents.graphs._run import run_graph
from mmagents.graphs.idealgpt import IdealGPTSettings, build_idealgpt_graph
from mmagents.models.fake import FakeVLM, ScriptedChat
from mmagents.runtime import Models

CHOICES = ["He is thirsty.", "He is cold.", "He is lost.", "He is late."]


def _run(config: Config, replies: list[Any], **settings: Any) -> tuple[dict, ScriptedChat]:
    llm = ScriptedChat(replies=replies)
    models = Models(config, llm=llm, vlm=FakeVLM())
    graph = build_idealgpt_graph(config, models=models)
    context = IdealGPTSettings(protocol="paper", **settings)
    image = models.store.put(Image.new("RGB", (8, 8), (1, 2, 3)))
    inputs = {"image": image, "question": "Why is he holding a cup?", "choices": CHOICES}
    return run_graph(graph, inputs, context=context), llm


def test_vcr_stops_on_a_valid_choice_number_without_confidence(fake_config: Config) -> None:
    replies = [
        "Sub-question 1: What is he holding?\nSub-question 2: What is the weather?",
        "Analysis: He holds a cup on a hot day.\nMore Likely Answer: 1",
    ]
    state, llm = _run(fake_config, replies)
    assert state["answer"] == "He is thirsty." and state["confidence"] is None
    assert len(state["rounds"]) == 1 and len(state["rounds"][0]["sub_questions"]) == 2
    system, user = llm.calls[0]
    assert system.content.startswith("You are an AI assistant who has rich visual commonsense")
    assert user.content.startswith("Imperfect Caption: ")
    assert "\nFour choices:\nAnswer 1: He is thirsty.\n" in user.content
    assert user.content.endswith("following the requirement I mentioned before.\n")


def test_not_sure_goes_to_another_round_and_bad_replies_are_rerun(fake_config: Config) -> None:
    replies = [
        "Sub-question 1: What is he holding?",
        "no analysis here",  # rerun 1
        "Analysis: unclear.\nMore Likely Answer: We are not sure which option is correct",
        "Additional Sub-question 1: What is on the table?",
        "Analysis: a glass of water.\nMore Likely Answer: 1",
    ]
    state, llm = _run(fake_config, replies, max_rounds=2)
    assert state["answer"] == "He is thirsty." and len(state["rounds"]) == 2
    assert state["llm_calls"] == 5
    more = llm.calls[3]
    assert "Additional Sub-question" in more[0].content
    assert more[1].content.rstrip().endswith("following the requirement I mentioned before.")
    assert " Analysis: \nunclear." in more[1].content
    assert llm.calls[4][0].content.count("you must find the more likely answer") == 1  # final


def test_reasoner_fails_after_fifteen_unparsable_replies(fake_config: Config) -> None:
    replies = ["Sub-question 1: What is it?"] + ["no format"] * 15
    state, _ = _run(fake_config, replies, max_rounds=1)
    assert state["error"]["node"] == "reasoner" and state.get("answer") is None


def test_snli_ve_prompts_and_answer(fake_config: Config, tmp_path: Path) -> None:
    llm = ScriptedChat(
        replies=[
            "Sub-question 1: What is the animal?",
            "Analysis: a dog.\nMore Likely Answer: entailment.",
        ]
    )
    models = Models(fake_config, llm=llm, vlm=FakeVLM())
    graph = build_idealgpt_graph(fake_config, models=models)
    image = models.store.put(Image.new("RGB", (8, 8), (1, 2, 3)))
    inputs = {"image": image, "question": "An animal is outside.",
              "choices": ["entailment", "neutral", "contradiction"]}  # fmt: skip
    context = IdealGPTSettings(protocol="paper", paper_task="snli-ve")
    state = run_graph(graph, inputs, context=context)
    assert state["answer"] == "entailment"
    assert "Hypothesis: An animal is outside.\nThree choices:" in llm.calls[0][1].content
    assert "textual hypothesis" in llm.calls[0][0].content


def test_a_reply_without_sub_questions_still_reaches_the_reasoner(fake_config: Config) -> None:
    state, _ = _run(fake_config, ["I need no sub-questions.", "Analysis: x\nMore Likely Answer: 2"])
    assert state["answer"] == "He is cold." and state["rounds"][0]["sub_questions"] == []
    assert state.get("vlm_calls", 0) == 1  # the caption only
