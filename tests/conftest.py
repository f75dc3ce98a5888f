"""Shared fixtures.

* ``home`` / ``config``: an isolated ``MMAGENTS_HOME`` per test, offline profile.
* ``fake_config``: every role on the deterministic ``fake`` backends (graph-logic tests).
* ``offline_config``: the real offline defaults (session-scoped so weights load once), except that
  the llm is SmolLM2-135M (zoo ``smollm2-135m``): these tests check plumbing, and it is 4x faster
  than the default planner. ``config`` uses it too.
* ``quality_config``: the real offline defaults unchanged (Qwen2.5-Coder-0.5B), for tests of what
  the planner writes.
* ``shared_data``: ``../shared/data`` when present, else the test is skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmagents import Config, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: The fast test model for tests where answer quality is not what is tested.
PLUMBING_LLM = {"MMAGENTS_LLM__MODEL": "smollm2-135m"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def config(home: Path) -> Config:
    return load_config(environ={"MMAGENTS_HOME": str(home), **PLUMBING_LLM})


@pytest.fixture
def fake_config(home: Path) -> Config:
    env = {"MMAGENTS_HOME": str(home)}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(environ=env)


@pytest.fixture(scope="session")
def offline_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    home = tmp_path_factory.mktemp("offline-home")
    return load_config(environ={"MMAGENTS_HOME": str(home), **PLUMBING_LLM})


@pytest.fixture(scope="session")
def quality_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    # The zoo model is assembled into the default <home>/models once, not per test session.
    home = tmp_path_factory.mktemp("quality-home")
    config = load_config(environ={"MMAGENTS_HOME": str(home)})
    assert config.role("llm").options.get("model") == "qwen2.5-coder-0.5b"
    return config


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present in the dev workspace)")
    return SHARED_DATA
