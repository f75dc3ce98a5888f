"""Classification by description on the real offline defaults (label_space scorer, SmolLM2).

Slow: loads EfficientNet-Lite0, MiniLM and the GGUF model. The descriptor table is written here so
the test needs no shared data; the label_space scorer knows ImageNet classes, so a real photo of a
tabby cat must come out as one, with and without descriptors.
"""

from __future__ import annotations

import pytest

from mmagents import Config, default_store, sample_path
from mmagents.graphs._run import run_graph
from mmagents.graphs.describe import build_describe_graph

pytestmark = pytest.mark.slow

TABLE = {
    "tabby cat": ["a striped coat", "whiskers", "pointed ears", "a long tail"],
    "goldfish": ["orange scales", "fins", "a small fish"],
    "espresso": ["a small cup of dark coffee", "brown crema on top"],
    "space shuttle": ["white wings", "a rocket launch pad"],
}


def test_real_photo_classified_with_published_style_descriptors(offline_config: Config) -> None:
    pytest.importorskip("mmagents.models.scorer_label_space")
    graph = build_describe_graph(offline_config)
    handle = default_store(offline_config).put(sample_path("cat", offline_config))
    result = graph.invoke({"image": handle, "descriptor_table": TABLE})
    assert result["prediction"] == "tabby cat"
    assert result["prediction_baseline"] == "tabby cat"
    assert result["explanation"][0]["descriptor"] in TABLE["tabby cat"]

    coffee = default_store(offline_config).put(sample_path("coffee", offline_config))
    assert graph.invoke({"image": coffee, "descriptor_table": TABLE})["prediction"] == "espresso"


def test_llm_written_descriptors_offline(offline_config: Config) -> None:
    pytest.importorskip("llama_cpp")
    graph = build_describe_graph(offline_config)
    handle = default_store(offline_config).put(sample_path("cat", offline_config))
    first = run_graph(graph, {"image": handle, "classes": ["tabby cat", "goldfish"]})
    assert first["llm_calls"] >= 2  # one call per class (more if a repair was needed)
    assert all(first["descriptors"][c] for c in ("tabby cat", "goldfish"))
    assert first["prediction"] in ("tabby cat", "goldfish")
    again = run_graph(graph, {"image": handle, "classes": ["goldfish", "tabby cat"]})
    assert again["llm_calls"] == 0 and again["descriptors"] == first["descriptors"]
