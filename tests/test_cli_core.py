from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmagents.cli import main

HEAVY = ["torch", "transformers", "diffusers", "llama_cpp", "langgraph", "open_clip"]


def test_import_pulls_in_no_heavy_library() -> None:
    code = (
        "import sys, mmagents, mmagents.models, mmagents.tools, mmagents.cli; "
        f"print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("models", "tools", "demo", "run", "eval"):
        assert command in out


def test_models_list(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("MMAGENTS_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "240")  # rich folds cells to the terminal width otherwise
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "label_space" in out
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m", "all-mpnet-base-v2"):
        assert name in out


def test_models_check_runs_a_grammar_constrained_call(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("MMAGENTS_HOME", str(home))
    monkeypatch.setenv("MMAGENTS_LLM__MODEL", "smollm2-135m")
    assert main(["models", "check", "--roles", "llm", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["ok"] and row["saw"].startswith("smollm2-135m: replied '{")


def test_tools_run_with_fake_backend(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    from mmagents.samples import sample_path

    monkeypatch.setenv("MMAGENTS_HOME", str(home))
    monkeypatch.setenv("MMAGENTS_SCORER__BACKEND", "fake")
    photo = sample_path("coffee")
    assert (
        main(["tools", "run", "score_image_text", "--image", str(photo), "-a", 'texts=["a", "b"]'])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert [row["text"] for row in result["scores"]] == ["a", "b"]
    assert result["best"] in {"a", "b"}


def test_typed_errors_exit_non_zero(
    capsys: pytest.CaptureFixture[str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMAGENTS_HOME", str(home))
    assert main(["tools", "run", "caption", "--image", str(home / "absent.png")]) == 1
    assert "ImageError" in capsys.readouterr().err


def test_models_check_reports_failures_per_role(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("MMAGENTS_HOME", str(home))
    monkeypatch.setenv("MMAGENTS_SCORER__BACKEND", "fake")
    monkeypatch.setenv("MMAGENTS_OCR__BACKEND", "tesseract")
    monkeypatch.setenv("MMAGENTS_OCR__TESSERACT_CMD", str(home / "no-such-binary"))
    code = main(["models", "check", "--roles", "scorer", "ocr", "--json"])
    rows = {row["role"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["scorer"]["ok"] is True
    assert rows["ocr"]["ok"] is False
    assert code == 1
