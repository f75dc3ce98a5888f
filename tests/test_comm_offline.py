"""The acceptance path on the real offline defaults: ``run comm`` then ``run comm-filter``.

SmolLM2-135M (llama.cpp) plans the steps and judges them, the ``gallery`` backend retrieves sample
photos ranked by the ``label_space`` scorer, which also scores alignment and consistency. The text a
135M model writes is weak; what is checked is that every part runs for real and is labelled
honestly (retrieved, not generated), not the quality of the guide.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mmagents import Config
from mmagents.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def offline_env(offline_config: Config, monkeypatch: pytest.MonkeyPatch) -> Config:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from mmagents.errors import BackendUnavailableError
    from mmagents.models.llm_llamacpp import default_gguf_path

    try:
        default_gguf_path()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    pytest.importorskip("efficientnet_lite_pytorch", reason="offline scorer weights not installed")
    for name in [n for n in os.environ if n.startswith("MMAGENTS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MMAGENTS_HOME", str(offline_config.home))
    monkeypatch.setenv("MMAGENTS_LLM__MODEL", "smollm2-135m")  # as offline_config (plumbing)
    return offline_config


def test_comm_then_filter_offline(
    offline_env: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "doc"
    topic = "How to brew pour-over coffee"
    assert main(["run", "comm", "--topic", topic, "--total-steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: images were retrieved from a local folder, not generated" in printed

    data = json.loads((out / "document.json").read_text())
    assert data["topic"] == topic and len(data["steps"]) == 2
    samples = offline_env.cache_dir / "samples"
    for step in data["steps"]:
        assert step["title"].strip() and step["text"].strip() and step["origin"] == "planned"
        assert step["provenance"] == "retrieved"
        assert Path(step["source"]).parent == samples
        assert (out / step["image"]).is_file()
        assert 0.0 <= step["scores"]["alignment"] <= 1.0
    assert data["meta"]["backends"]["imagegen"].startswith("gallery")
    assert "not generated" in (out / "document.html").read_text()
    assert "not generated" in (out / "document.md").read_text()

    assert main(["run", "comm-filter", "--doc", str(out / "document.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["text_coherence"] <= 1.0
    assert 0.0 <= result["image_text_alignment"] <= 1.0
    assert 0.0 <= result["image_sequence_consistency"] <= 1.0
    assert result["decision"] in ("keep", "drop") and result["keep"] == (
        result["decision"] == "keep"
    )
    assert set(result["judge"]) >= {"relevance", "progression", "consistency", "completeness"}

    if any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        from test_comm_html import check_in_browser

        page = check_in_browser(out / "document.html", tmp_path)
        assert [s["step"] for s in page["steps"]] == [1, 2]
        assert all(s["images"][0][0] and s["images"][0][1] > 0 for s in page["steps"])
