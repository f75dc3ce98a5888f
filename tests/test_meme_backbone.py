"""``mmagents finetune meme --backbone``: names map to zoo entries; no download path of its own."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mmagents.errors import ConfigError
from mmagents.finetune import _cli


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"backbone": None, "base_model": None, **kw})


def test_mpnet_goes_through_the_zoo(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_ensure(name: str) -> Path:
        asked.append(name)
        return Path("/zoo") / name

    monkeypatch.setattr("mmagents.models.zoo.ensure_model", fake_ensure)
    assert _cli._base_model(_args(backbone="mpnet")) == str(Path("/zoo/all-mpnet-base-v2"))
    assert asked == ["all-mpnet-base-v2"]


def test_minilm_is_the_packaged_default_and_base_model_passes_through() -> None:
    assert _cli._base_model(_args(backbone="minilm")) is None
    assert _cli._base_model(_args(base_model="some/folder")) == "some/folder"


def test_backbone_and_base_model_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not both"):
        _cli._base_model(_args(backbone="mpnet", base_model="x"))
