"""The CoMM judge prompt: the paper's four criteria and 0-10 scale, versioned, strict rendering."""

from __future__ import annotations

import jinja2
import pytest

from mmagents.prompts import load_prompt


def test_comm_judge_prompt_has_the_four_criteria_and_scale() -> None:
    spec = load_prompt("comm_judge")
    assert spec.role == "comm_judge" and spec.version == 2
    parts = spec.render("default", given="Topic: bake bread", output="Step 1: mix <img_0>")
    for criterion in ("completeness", "image_coherence", "image_quality", "text_fidelity"):
        assert criterion in parts["system"]
    assert "0 to 10" in parts["system"] and "8-10" in parts["system"]
    assert parts["user"].startswith("INPUT:\n<document>\nTopic: bake bread\n</document>\nOUTPUT:")
    with pytest.raises(jinja2.UndefinedError):
        spec.render("default", given="only the input")
