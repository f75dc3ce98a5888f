"""IdealGPT end to end on the real offline defaults (SmolLM2 via llama.cpp, socratic VLM), real photo.

One short run (one round, two sub-questions) keeps it within a minute or two on a small CPU. It
checks that the whole loop runs on real models and that grammar-constrained decoding yields valid
structured output; it does not score the 135M model's answer.
"""

from __future__ import annotations

import pytest

from mmagents import Config
from mmagents.graphs import get_pipeline
from mmagents.graphs._run import run_graph
from mmagents.graphs.idealgpt import IdealGPTSettings, build_idealgpt_graph
from mmagents.images import default_store
from mmagents.samples import sample_path

pytestmark = pytest.mark.slow


def test_real_models_answer_about_a_real_photo(offline_config: Config) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is not installed")
    handle = default_store(offline_config).put(sample_path("cat", offline_config))
    settings = IdealGPTSettings(max_rounds=1, sub_questions=2)
    graph = build_idealgpt_graph(offline_config, settings=settings)
    nodes: list[str] = []
    state = run_graph(
        graph,
        {"image": handle, "question": "What animal is in this picture?"},
        on_update=lambda node, _: nodes.append(node),
    )
    result = get_pipeline("idealgpt").output_of(state)
    assert "error" not in result, result["error"]
    assert "cat" in state["caption"].lower()  # the socratic caption of the real photo
    (round_,) = result["rounds"]
    asked = round_["sub_questions"]
    assert 1 <= len(asked) <= 2 and all(qa["question"] and qa["answer"] for qa in asked)
    assert round_["analysis"].strip()
    # The final (only) round forces an answer.
    assert isinstance(result["answer"], str) and result["answer"].strip()
    assert 0.0 <= result["confidence"] <= 1.0
    assert result["vlm_calls"] == 1 + len(asked) and result["llm_calls"] >= 2
    assert nodes == ["caption", "questioner", *["answerer"] * len(asked), "reasoner"]


def test_default_planner_decomposes_the_question(quality_config: Config) -> None:
    """Qwen2.5-Coder-0.5B (the default planner) asks sub-questions, not the main question again."""
    from mmagents.agents.questioner import build_questioner
    from mmagents.models import load_role

    questioner = build_questioner(load_role("llm", quality_config), max_sub_questions=3)
    question = "Is this animal someone's pet?"
    out = questioner.invoke(
        {"question": question, "caption": "An image labelled tabby cat (45%), mostly brown."}
    )
    asked = [q.lower().rstrip("?") for q in out.value.sub_questions]
    assert out.attempts == 1 and len(asked) >= 2
    assert question.lower().rstrip("?") not in asked
