"""Plugins by entry point: an installed package adds a backend, a tool and a task.

The plugin is a real distribution built from a ``pyproject.toml`` and installed with pip into a
temporary virtual environment layered on ours (a ``.pth`` that adds our site-packages), so the
entry points are found exactly as they would be after ``pip install my-plugin``.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest

from mmagents._registry import Registry, entry_point_targets
from mmagents.errors import ConfigError

PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "mmagents-shout"
        version = "0.1.0"

        [tool.setuptools]
        packages = ["mmagents_shout"]

        [tool.setuptools.package-data]
        mmagents_shout = ["tasks/*.yaml"]

        [project.entry-points."mmagents.backends"]
        "vlm.shout" = "mmagents_shout:ShoutVLM"

        [project.entry-points."mmagents.tools"]
        shout = "mmagents_shout:ShoutTool"

        [project.entry-points."mmagents.tasks"]
        shout-tasks = "mmagents_shout:TASKS"
    """,
    "mmagents_shout/__init__.py": '''
        """A plugin: a VLM backend that shouts, a tool over it, and a task that uses both."""
        from pathlib import Path

        from mmagents.tools._base import MMTool

        TASKS = Path(__file__).parent / "tasks"


        class ShoutVLM:
            def __init__(self, suffix: str = "!") -> None:
                self.suffix = suffix

            def caption(self, image):
                return f"A {image.width}x{image.height} IMAGE{self.suffix}"

            def answer(self, image, question):
                return question.upper() + self.suffix


        class ShoutTool(MMTool):
            name: str = "shout"
            description: str = "Shout the question back."
            role_name: str = "vlm"

            def _run(self, question: str) -> str:
                return self.backend().answer(None, question)


        def run_sample(sample, config, loud=True):
            from mmagents.tools import build_tool

            said = build_tool("shout", config).invoke({"question": sample["question"]})
            return {"prediction": said if loud else said.lower()}
    ''',
    "mmagents_shout/tasks/shout.yaml": """
        task: shout
        version: 1
        runner: mmagents_shout:run_sample
        dataset: {loader: jsonl, required: [question, label]}
        target: label
        metrics: [accuracy]
    """,
}

CHECK = """
import json, sys
from PIL import Image
from mmagents import load_config
from mmagents.models import BACKENDS, load_backend
from mmagents._config import RoleConfig
from mmagents.tools import ROLE_TOOLS, TOOLS
from mmagents.eval.tasks import list_tasks
from mmagents.eval.runner import run_task

config = load_config(environ={"MMAGENTS_HOME": sys.argv[1], "MMAGENTS_VLM__BACKEND": "shout"})
vlm = load_backend("vlm", RoleConfig("shout", {"suffix": "?!"}))
summary = run_task("shout", config, out=sys.argv[3], data=sys.argv[2], progress=False)
print(json.dumps({
    "backends": BACKENDS["vlm"].names(),
    "caption": vlm.caption(Image.new("RGB", (4, 3))),
    "tools": TOOLS.names(),
    "role_tools": list(ROLE_TOOLS),
    "tasks": {t.name: t.builtin for t in list_tasks()},
    "accuracy": summary.metrics["accuracy"],
    "n": summary.n,
}))
"""


def _write_plugin(root: Path) -> Path:
    for name, text in PLUGIN.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


def _layered_venv(path: Path) -> Path:
    """A bare venv that sees our environment through a ``.pth`` (no copy, no network)."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # addsitedir (not a plain path line) so our own .pth files (editable install, base env) run too.
    lines = [f"import site; site.addsitedir({p!r})" for p in ours]
    (Path(out.stdout.strip()) / "_mmagents_parent.pth").write_text("\n".join(lines) + "\n")
    return python


def test_installed_plugin_adds_backend_tool_and_task(tmp_path: Path) -> None:
    plugin = _write_plugin(tmp_path / "plugin")
    python = _layered_venv(tmp_path / "venv")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", plugin]
    subprocess.run(install, check=True, env=env, capture_output=True, timeout=300)

    data = tmp_path / "shout.jsonl"
    rows = [
        {"id": "a", "question": "hi", "label": "HI!"},
        {"id": "b", "question": "x", "label": "no"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = subprocess.run(
        [python, "-c", CHECK, str(tmp_path / "home"), str(data), str(tmp_path / "run")],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert "shout" in got["backends"] and "socratic" in got["backends"]
    assert got["caption"] == "A 4x3 IMAGE?!"
    assert "shout" in got["tools"] and "caption" in got["tools"]
    assert "shout" not in got["role_tools"]  # a plugin tool is not a role tool
    assert got["tasks"]["shout"] is False and got["tasks"]["vqa"] is True
    assert (got["n"], got["accuracy"]) == (2, 0.5)

    # The plugin is invisible to our own environment: nothing leaked out of the temp venv.
    assert "shout" not in entry_point_targets("mmagents.tools")


def test_registry_reads_entry_points_lazily_and_never_shadows(monkeypatch) -> None:
    import importlib.metadata as md

    points = md.EntryPoints(
        [
            md.EntryPoint("vlm.echo", "json:dumps", "mmagents.backends"),
            md.EntryPoint("vlm.taken", "json:loads", "mmagents.backends"),
            md.EntryPoint("llm.other", "json:load", "mmagents.backends"),
        ]
    )
    calls: list[str] = []

    def fake_entry_points(*, group: str) -> md.EntryPoints:
        calls.append(group)
        return md.EntryPoints(p for p in points if p.group == group)

    monkeypatch.setattr(md, "entry_points", fake_entry_points)
    registry: Registry[object] = Registry("vlm backend", group="mmagents.backends", prefix="vlm.")
    registry.register("taken", "json:JSONDecoder")
    assert calls == []  # nothing read at construction or registration
    assert registry.names() == ["echo", "taken"]  # llm.* belongs to another registry
    assert registry.get("echo") is json.dumps
    assert registry.get("taken") is json.JSONDecoder  # the plugin did not shadow it
    assert calls == ["mmagents.backends"]  # read once

    bad = md.EntryPoints([md.EntryPoint("broken", "json", "mmagents.tools")])
    monkeypatch.setattr(md, "entry_points", lambda *, group: bad)
    with pytest.raises(ConfigError, match="module:Attr"):
        Registry("tool", group="mmagents.tools").names()
