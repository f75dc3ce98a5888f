"""Layers point one way, `import mmagents` stays light, and no state leaks from one run to the next.

The two bugs of issue 11: (a) a second ``run_task`` in one process with ``use_cache=False`` still
went through the first run's caching wrapper; (b) the tool list depended on which graph modules
had been imported.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmagents import Config, load_config
from mmagents.eval.runner import run_task
from mmagents.eval.vqa_fixture import write_vqa_fixture
from mmagents.models.fake import FakeVLM, ScriptedChat

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("graphs", "agents", "models", "tools")
UPPER = ("mmagents.cli", "mmagents.eval", "mmagents.serve", "mmagents.finetune")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def upward_imports() -> dict[str, list[str]]:
    """Module file → the upper-layer modules it imports (anywhere in the file)."""
    found = {}
    for folder in LOWER:
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad = sorted(m for m in _imports(path) if m.startswith(UPPER))
            if bad:
                found[str(path.relative_to(ROOT))] = bad
    return found


def test_lower_layers_import_no_upper_layer() -> None:
    assert upward_imports() == {}


#: Below the graphs the layers point one way too: agents → tools / models → core.
_ABOVE = {
    "agents": ("mmagents.graphs",),
    "tools": ("mmagents.graphs", "mmagents.agents"),
    "models": ("mmagents.graphs", "mmagents.agents", "mmagents.tools"),
}


def test_agents_tools_and_models_import_nothing_above_them() -> None:
    found = {}
    for folder, above in _ABOVE.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad = sorted(m for m in _imports(path) if m.startswith(above))
            if bad:
                found[str(path.relative_to(ROOT))] = bad
    assert found == {}


def _fresh(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return proc.stdout.strip()


def test_import_mmagents_pulls_in_no_heavy_library() -> None:
    heavy = ["torch", "transformers", "diffusers", "llama_cpp", "open_clip", "onnxruntime"]
    code = f"import sys, mmagents; print([m for m in {heavy!r} if m in sys.modules])"
    assert _fresh(code) == "[]"


def test_bug_b_tool_list_is_the_same_whatever_was_imported() -> None:
    listing = "from mmagents.tools import TOOLS; print(TOOLS.names())"
    fresh = _fresh(listing)
    modules = ["idealgpt", "chat", "meme", "describe", "recode", "comm", "comm_filter"]
    imports = "; ".join(f"import mmagents.graphs.{m}" for m in modules)
    after = _fresh(f"{imports}; {listing}")
    assert after == fresh
    assert {"run_idealgpt", "classify_meme", "classify_image", "caption"} <= set(
        ast.literal_eval(fresh)
    )


class _ModelCalls:
    """Counts the calls that reach the models themselves (the fake vlm and the scripted llm), at
    the class, whatever object a run builds: a call answered by a cache never gets here."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        for cls, name in [(FakeVLM, "caption"), (FakeVLM, "answer"), (ScriptedChat, "_generate")]:
            monkeypatch.setattr(cls, name, self._counted(getattr(cls, name)))

    def _counted(self, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            return method(*args, **kwargs)

        return counted

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def test_bug_a_second_run_without_cache_reaches_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reply = json.dumps(
        {"sub_questions": ["What is it?"], "analysis": "a", "answer": "cat", "confidence": 0.9}
    )
    toml = tmp_path / "fake.toml"
    toml.write_text(
        f"[roles.llm]\nbackend = 'fake'\ncycle = true\nreplies = [{json.dumps(reply)}]\n"
        "[roles.vlm]\nbackend = 'fake'\n"
    )
    config: Config = load_config(toml, environ={"MMAGENTS_HOME": str(tmp_path / "home")})
    data = write_vqa_fixture(tmp_path / "data", config)
    calls = _ModelCalls(monkeypatch)

    def run(out: str, **kw: Any) -> Any:
        return run_task("vqa", config, out=tmp_path / out, data=data, limit=2, progress=False, **kw)

    first = run("r1")
    assert first.info["cache"]["enabled"] and first.info["cache"]["misses"] > 0
    made = calls.take()
    assert made > 0
    second = run("r2", use_cache=False)
    assert second.info["cache"] == {"enabled": False}
    # Every call of the uncached run reached a model: none was answered by the first run's cache,
    assert calls.take() == made
    third = run("r3")
    # ... which would have answered all of them (so the check above can fail).
    assert calls.take() == 0 and third.info["cache"]["hits"] == first.info["cache"]["misses"]
    assert second.errors == 0 and second.n == 2


def test_one_meme_vocabulary_and_data_types_in_core() -> None:
    """Labels and meme records are defined once, in core; the upper layers re-export them."""
    import mmagents.memes as core
    from mmagents.agents import meme_labels
    from mmagents.finetune import meme_data

    assert meme_labels.normalise_label is core.normalise_label
    assert meme_labels.SYNONYMS is core.SYNONYMS
    assert meme_data.LABELS is core.LABELS and meme_data.MemeExample is core.MemeExample
    assert meme_data.read_memes is core.read_memes
    assert {"partially harmful", "offensive"} <= set(core.SYNONYMS[core.HARMFUL])


def test_student_inference_imports_no_training_code_and_no_torch() -> None:
    code = (
        "import sys, mmagents.models.memes, mmagents.models.memes.t5clip, "
        "mmagents.models.memes.generative, mmagents.models.memes.encoder; "
        "print(sorted(m for m in sys.modules if m.startswith('mmagents.finetune') or m == 'torch'))"
    )
    assert _fresh(code) == "[]"
