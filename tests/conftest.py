"""Shared fixtures.

* ``home`` / ``config``: an isolated ``MMAGENTS_HOME`` per test, offline profile.
* ``fake_config``: every role on the deterministic ``fake`` backends (graph-logic tests).
* ``offline_config``: the real offline defaults (session-scoped so weights load once).
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


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def config(home: Path) -> Config:
    return load_config(environ={"MMAGENTS_HOME": str(home)})


@pytest.fixture
def fake_config(home: Path) -> Config:
    env = {"MMAGENTS_HOME": str(home)}
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    return load_config(environ=env)


@pytest.fixture(scope="session")
def offline_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    home = tmp_path_factory.mktemp("offline-home")
    return load_config(environ={"MMAGENTS_HOME": str(home)})


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present in the dev workspace)")
    return SHARED_DATA
