"""The runtime is explicit (issue 11, item 3): a run's call cache is exactly what that run asked for.

Two runs in one process with different cache settings each see their own wrapping only, whether
they run one after the other or at the same time; and nothing under ``models/`` or in
``mmagents/images.py`` keeps process-wide state that a run could leave behind (no table of built
backends, no list of wrappers, no store cache). The one shared thing by design is loaded weights.
"""

from __future__ import annotations

import ast
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmagents import load_config
from mmagents._config import Config
from mmagents.eval.cache import CachingBackend, CallCache, LLMCallCache, cache_wrap
from mmagents.eval.runner import run_task
from mmagents.runtime import Models

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _config(home: Path) -> Config:
    env = {
        "MMAGENTS_HOME": str(home),
        "MMAGENTS_LLM__BACKEND": "fake",
        "MMAGENTS_LLM__REPLIES": json.dumps(["yes"]),
        "MMAGENTS_LLM__CYCLE": "true",
    }
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(environ=env)


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


def test_runtimes_of_one_config_see_exactly_their_own_cache(tmp_path: Path) -> None:
    config = _config(tmp_path / "home")
    a, b = CallCache(tmp_path / "a.sqlite"), CallCache(tmp_path / "b.sqlite")
    try:
        with_a = Models(config, wrap=cache_wrap(a))
        without = Models(config)
        with_b = Models(config, wrap=cache_wrap(b))
        picture = Image.new("RGB", (8, 8), (10, 20, 30))
        # Interleaved, the uncached runtime first and in between: no order leaks a wrapper.
        for models in (without, with_a, without, with_b, without):
            models.vlm.caption(picture)
            models.ocr.read(picture)
            models.llm.invoke("hello")
        assert a.stats()["misses"] == 3 and b.stats()["misses"] == 3
        assert a.stats()["hits"] == 0 and b.stats()["hits"] == 0
        assert (
            isinstance(with_a.llm.cache, LLMCallCache) and with_a.llm.cache is not with_b.llm.cache
        )
        assert without.llm.cache is None
        # The uncached runtime's backends are not a cache proxy at any depth of the trace proxy.
        for role in ("vlm", "ocr", "scorer"):
            backend = without[role]
            for _ in range(3):
                assert not isinstance(backend, CachingBackend)
                backend = getattr(backend, "wrapped", backend)
            assert isinstance(getattr(with_a[role], "wrapped", None), CachingBackend)
        # Each runtime built its own backend objects (nothing process-wide hands one out twice).
        assert len({id(m["vlm"]) for m in (with_a, without, with_b)}) == 3
    finally:
        a.close()
        b.close()


def _task(tmp_path: Path) -> Path:
    task = tmp_path / "task.yaml"
    task.write_text(
        "version: 1\nrunner: _eval_runners:with_runtime\ntarget: label\nmetrics: [accuracy]\n"
    )
    return task


def _data(path: Path, n: int, tag: str) -> Path:
    rows = [
        {"id": f"s{i}", "text": f"{tag} {i}", "colour": [i, len(tag), 7], "label": "yes"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("concurrent", [False, True], ids=["in-turn", "at-once"])
def test_two_runs_with_different_cache_settings_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, concurrent: bool
) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    config = _config(tmp_path / "home")
    task, cache = _task(tmp_path), tmp_path / "calls.sqlite"
    cached = {"data": _data(tmp_path / "a.jsonl", 4, "cached"), "cache_path": cache}
    uncached = {"data": _data(tmp_path / "b.jsonl", 4, "uncached"), "use_cache": False}

    def run(name: str, kw: dict[str, Any]) -> Any:
        return run_task(
            task, config, out=tmp_path / name, concurrency=2, progress=False, **kw
        )  # fmt: skip

    if concurrent:
        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(run, ["a", "b"], [cached, uncached])
    else:
        first, second = run("a", cached), run("b", uncached)
    assert first.errors == second.errors == 0
    assert first.info["cache"]["misses"] == 12 and first.info["cache"]["enabled"]
    assert second.info["cache"] == {"enabled": False}
    # Only the cached run's 4 x (llm, caption, ocr) calls are in the file: the uncached run,
    # with other inputs, wrote nothing there, in turn or at the same time.
    assert _rows(cache) == 12
    again = run("c", {"data": cached["data"], "cache_path": cache})
    assert again.info["cache"]["hits"] == 12 and again.info["cache"]["misses"] == 0


# -- no module-level mutable state -----------------------------------------------------------

_MUTABLE_CALLS = {
    "dict", "list", "set", "bytearray", "OrderedDict", "defaultdict", "deque", "Counter",
    "Lock", "RLock", "Condition", "Semaphore", "WeakValueDictionary", "WeakKeyDictionary",
}  # fmt: skip
_CACHE_DECORATORS = {"cache", "lru_cache"}

#: What may stay, and why. Anything else mutable at module level (a table of built backends, a
#: list of wrappers, a store cache) fails the test until it is an object a runtime owns.
ALLOWED: dict[str, dict[str, str]] = {
    "models/__init__.py": {
        "BACKENDS": "registry of factories (lazy 'module:attr' by name), no instances",
        "_BUILTIN": "constant table of the built-in factories, read once at import",
        "_FAKES": "constant table of the fake factories, read once at import",
    },
    "models/base.py": {
        "_WEIGHTS": "load_once: loaded weights only, never a configured backend or a wrapper",
        "_KEY_LOCKS": "load_once's per-key locks",
        "_GUARD": "load_once's table lock",
    },
    "models/llm_llamacpp.py": {
        "_MODELS": "llama.cpp's loaded models (weights), shared by equal model files",
        "_SLOTS": "per loaded model: its lock and saved KV prefixes (weights-level)",
        "_LOAD_LOCK": "guards _MODELS",
    },
    "models/_hub.py": {"_DTYPES": "constant table"},
    "models/_tool_grammar.py": {"_HANDLE_PATTERNS": "constant table"},
    "models/scorer_open_clip.py": {"_PRECISIONS": "constant table", "_AUTOCAST": "constant table"},
    "models/vlm_openai.py": {"_FORMATS": "constant table"},
    "models/vlm_socratic.py": {"_COLOUR_NAMES": "constant table"},
    "models/scorer_label_space.py": {
        "imagenet_classes": "@cache of a packaged file",
        "imagenet_labels": "@cache of a packaged file",
    },
    "models/structured.py": {"_schema_instruction": "@cache of a pure function of a schema"},
    "models/zoo.py": {"zoo": "@cache of the packaged zoo.toml"},
}


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def module_state(source: str) -> set[str]:
    """Names bound at module level to a mutable value, or to a memoised (``@cache``) function."""
    found: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            if any(_name_of(d) in _CACHE_DECORATORS for d in node.decorator_list):
                found.add(node.name)
            continue
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        displays = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
        mutable = isinstance(value, displays) or (
            isinstance(value, ast.Call) and _name_of(value) in _MUTABLE_CALLS
        )
        if mutable:
            found |= {t.id for t in targets if isinstance(t, ast.Name) and t.id != "__all__"}
    return found


def test_the_checker_sees_the_state_this_issue_removed() -> None:
    old = (
        "import threading\n_LOADED: dict[str, object] = {}\nBACKEND_WRAPPERS = []\n"
        "_STORES_LOCK = threading.Lock()\nLIMIT = 3\nNAMES = ('a', 'b')\n"
        "@functools.lru_cache(maxsize=8)\ndef load(x): return x\n"
    )
    assert module_state(old) == {"_LOADED", "BACKEND_WRAPPERS", "_STORES_LOCK", "load"}


def test_models_and_the_image_store_keep_no_module_level_state() -> None:
    files = [*sorted((ROOT / "models").rglob("*.py")), ROOT / "mmagents" / "images.py"]
    unexpected, stale = {}, {}
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        state = module_state(path.read_text(encoding="utf-8"))
        allowed = set(ALLOWED.get(rel, {}))
        if state - allowed:
            unexpected[rel] = sorted(state - allowed)
        if allowed - state:
            stale[rel] = sorted(allowed - state)
    assert unexpected == {}, "module-level mutable state: make it an object a runtime owns"
    assert stale == {}, "ALLOWED names something that is gone: drop it"


def test_the_removed_globals_are_gone() -> None:
    from mmagents import images, models
    from mmagents.eval import cache

    for module, name in [
        (models, "_LOADED"),
        (models, "_TRACED"),
        (models, "BACKEND_WRAPPERS"),
        (images, "_STORES"),
        (images, "_STORES_LOCK"),
    ]:
        assert not hasattr(module, name), f"{module.__name__}.{name}"
    assert "BACKEND_WRAPPERS" not in Path(cache.__file__).read_text(encoding="utf-8")


def test_a_backend_that_reaches_other_roles_gets_the_runs_config(tmp_path: Path) -> None:
    from mmagents.models import load_role

    env = {
        "MMAGENTS_HOME": str(tmp_path / "home"),
        "MMAGENTS_VLM__BACKEND": "socratic",
        "MMAGENTS_IMAGEGEN__BACKEND": "gallery",
        "MMAGENTS_SCORER__BACKEND": "fake",
    }
    config = load_config(environ=env)
    models = Models(config)
    # Not the environment's config (another home, other roles): the run's own.
    assert models.vlm.wrapped.config is config and models.imagegen.wrapped.config is config
    assert load_role("vlm", config).wrapped.config is config
    assert type(models.imagegen.wrapped.scorer.wrapped).__name__ == "FakeScorer"


def test_tools_built_together_share_one_runtime_and_copies_keep_it(tmp_path: Path) -> None:
    import copy

    from mmagents.tools import build_tool, build_tools

    config = _config(tmp_path / "home")
    caption, answer = build_tools(config, ["caption", "answer_question"])
    assert caption.models is answer.models and caption.backend() is answer.backend()
    assert copy.deepcopy(caption).models is caption.models  # a runtime is shared, not copied
    alone = build_tool("caption", config)
    assert alone.models is not caption.models  # a tool built on its own has its own runtime
    shared = Models(config)
    assert build_tool("embed", config, models=shared).models is shared


def test_the_chat_agent_and_its_tools_share_one_runtime(tmp_path: Path) -> None:
    from mmagents.graphs.chat_session import ChatAgent

    config = _config(tmp_path / "home")
    agent = ChatAgent(config, tools=["caption", "answer_question"])
    runtimes = {id(tool.models) for tool in agent.tools}  # type: ignore[attr-defined]
    assert runtimes == {id(agent.models)}  # one vlm and one image store for planner and tools
