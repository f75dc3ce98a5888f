"""The project installs as a built wheel in a clean environment, with its data files."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("mmagents-*.whl"))


def test_wheel_maps_every_design_folder_under_mmagents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "models/base.py",
        "tools/roles.py",
        "prompts/__init__.py",
        "graphs/_run.py",
        "cli/run.py",
        "eval/__init__.py",
    ):
        assert f"mmagents/{module}" in names
    assert "mmagents/profiles/offline.toml" in names
    assert any(n.startswith("mmagents/prompts/") and n.endswith(".yaml") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_wheel_imports_in_a_clean_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    target = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies come from this environment's site-packages (as plain path entries, so the
    # editable install's import hook is NOT active there); the project itself from the wheel.
    # sys.path too: a venv layered on a shared base environment (scripts/setup.sh) reaches the
    # base's site-packages through a .pth file, which a plain path entry does not follow.
    deps = list(
        dict.fromkeys(
            p
            for p in [*site.getsitepackages(), *sys.path]
            if p.endswith("-packages") and Path(p).is_dir()
        )
    )
    Path(target, "_deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys, mmagents, mmagents.models, mmagents.tools, mmagents.prompts, mmagents.graphs;"
        "from mmagents import load_config;"
        "assert load_config(environ={}).role('llm').backend == 'llamacpp';"
        "from mmagents.models import zoo; assert 'qwen2.5-coder-0.5b' in zoo.zoo();"
        "assert not {'torch','transformers','diffusers','llama_cpp'} & set(sys.modules);"
        "print(mmagents.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [py, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.stdout.strip().startswith(target)
