from __future__ import annotations

from pathlib import Path

import pytest

from mmagents import ConfigError, available_profiles, load_config


def test_offline_is_the_default_profile(home: Path) -> None:
    config = load_config(environ={"MMAGENTS_HOME": str(home)})
    assert config.profile == "offline"
    assert config.role("llm").backend == "llamacpp"
    assert config.role("scorer").backend == "label_space"
    assert config.home == home
    assert set(available_profiles()) >= {"offline", "openai", "hf"}


def test_file_then_env_override_and_backend_switch_drops_options(tmp_path: Path) -> None:
    path = tmp_path / "mm.toml"
    path.write_text(
        'profile = "openai"\n'
        '[roles.llm]\nmodel = "my-model"\n'
        "[graphs.idealgpt]\nmax_rounds = 2\n"
        "[images]\nmax_pixels = 100\n"
    )
    env = {
        "MMAGENTS_LLM__BASE_URL": "http://127.0.0.1:9999/v1",
        "MMAGENTS_LLM__TEMPERATURE": "0.5",
        "MMAGENTS_VLM__BACKEND": "socratic",
        "MMAGENTS_IMAGES__ALLOW_REMOTE": "true",
    }
    config = load_config(path, environ=env)
    llm = config.role("llm")
    assert (llm.backend, llm.options["model"]) == ("openai", "my-model")
    assert llm.options["base_url"] == "http://127.0.0.1:9999/v1"
    assert llm.options["temperature"] == 0.5  # parsed as a TOML scalar
    # switching vlm from openai to socratic must not carry the openai options along
    assert config.role("vlm").backend == "socratic"
    assert dict(config.role("vlm").options) == {}
    assert config.images.max_pixels == 100 and config.images.allow_remote is True
    assert config.section("graphs.idealgpt")["max_rounds"] == 2
    assert config.section("graphs.missing") == {}


def test_explicit_profile_argument_wins(home: Path) -> None:
    config = load_config(profile="hf", environ={"MMAGENTS_PROFILE": "openai"})
    assert config.profile == "hf" and config.role("scorer").backend == "open_clip"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("profile = 'nope'", "unknown profile"),
        ("[roles.painter]\nbackend = 'x'", "unknown role"),
        ("[roles.llm]\nbackend = ''", "has no backend"),
        ("[images]\nmax_pixel = 3", "unknown key [images] max_pixel"),
        ("this is = = not toml", "invalid TOML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path, environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", environ={})
