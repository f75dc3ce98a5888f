"""Finding 3: every config value is type-checked, with an error naming key, value and origin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmagents import ConfigError, load_config
from mmagents.models import load_backend


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"MMAGENTS_HOME": str(home), **extra}


@pytest.mark.parametrize("raw", ["no", "False", "false", "0", "off"])
def test_env_booleans_are_parsed_by_type_not_truthiness(home: Path, raw: str) -> None:
    # Before: the string "no" was truthy and turned remote fetching on.
    config = load_config(environ=_env(home, MMAGENTS_IMAGES__ALLOW_REMOTE=raw))
    assert config.images.allow_remote is False


def test_env_true_still_enables(home: Path) -> None:
    config = load_config(environ=_env(home, MMAGENTS_IMAGES__ALLOW_REMOTE="yes"))
    assert config.images.allow_remote is True


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ('[images]\nallow_remote = "false"', ["allow_remote", "'false'", "bad.toml", "boolean"]),
        ('[images]\nmax_pixels = "abc"', ["max_pixels", "'abc'", "bad.toml"]),
        ("[images]\nmax_pixels = -1", ["max_pixels", "-1", "greater than 0"]),
        ("[images]\nmax_bytes = 0", ["max_bytes", "0"]),
        ('colour = "blue"', ["unknown top-level", "'colour'"]),
        ("[paint]\nbrush = 1", ["unknown top-level", "'paint'"]),
        ('[serve]\nmax_request_bytes = "big"', ["max_request_bytes", "'big'", "bad.toml"]),
        ("[serve]\nportt = 1", ["unknown key [serve] portt"]),
    ],
)
def test_bad_file_values_name_key_value_and_file(
    tmp_path: Path, text: str, pieces: list[str]
) -> None:
    from mmagents.serve.openai_app import ServeSettings

    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        ServeSettings.from_config(load_config(path, environ={}), environ={})
    for piece in pieces:
        assert piece in str(info.value)


@pytest.mark.parametrize(
    ("name", "raw", "key"),
    [
        ("MMAGENTS_IMAGES__ALLOW_REMOTE", "maybe", "allow_remote"),
        ("MMAGENTS_IMAGES__MAX_PIXELS", "abc", "max_pixels"),
        ("MMAGENTS_IMAGES__MAX_PIXELS", "-5", "max_pixels"),
        ("MMAGENTS_SERVE__MAX_REQUEST_BYTES", "big", "max_request_bytes"),
        ("MMAGENTS_PAINT__BRUSH", "1", "paint"),
    ],
)
def test_bad_env_values_name_the_variable(home: Path, name: str, raw: str, key: str) -> None:
    from mmagents.serve.openai_app import ServeSettings

    with pytest.raises(ConfigError) as info:
        ServeSettings.from_config(load_config(environ=_env(home, **{name: raw})), environ={})
    assert name in str(info.value) and key in str(info.value)


@pytest.mark.parametrize(
    ("role", "name", "raw"),
    [("embed", "MMAGENTS_EMBED__DIM", "abc"), ("llm", "MMAGENTS_LLM__TIMEOUT", "abc")],
)
def test_backend_options_are_checked_against_the_factory(
    home: Path, role: str, name: str, raw: str
) -> None:
    backend = "fake" if role == "embed" else "openai"
    env = _env(home, **{f"MMAGENTS_{role.upper()}__BACKEND": backend, name: raw})
    if role == "llm":
        env["MMAGENTS_LLM__BASE_URL"] = "http://127.0.0.1:9/v1"
    config = load_config(environ=env)
    with pytest.raises(ConfigError) as info:
        load_backend(role, config.role(role))
    assert name in str(info.value) and "'abc'" in str(info.value)


def test_env_option_strings_become_the_parameter_type(home: Path) -> None:
    env = _env(home, MMAGENTS_EMBED__BACKEND="fake", MMAGENTS_EMBED__DIM="16")
    embedder = load_backend("embed", load_config(environ=env).role("embed"))
    assert embedder.embed(["a"]).shape[-1] == 16


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_unreadable_config_files_are_config_errors(tmp_path: Path, kind: str) -> None:
    path = tmp_path
    if kind == "binary":
        path = tmp_path / "x.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(ConfigError):
        load_config(path, environ={})


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_unusable_home_is_a_config_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "f").write_text("x")
    home = tmp_path / "f" if where == "a file" else tmp_path / "f" / "home"
    with pytest.raises(ConfigError, match="MMAGENTS_HOME"):
        load_config(environ={"MMAGENTS_HOME": str(home)})


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("mmagents")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mmagents.cli"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve", "--port", "99999"], {}),
        (["serve", "--port", "http"], {}),
        (["--config", "/etc", "models", "list"], {}),
        (["models", "list"], {"MMAGENTS_IMAGES__MAX_PIXELS": "abc"}),
    ],
)
def test_cli_reports_bad_config_without_a_traceback(
    home: Path, args: list[str], extra: dict[str, str]
) -> None:
    done = _cli(*args, env={"MMAGENTS_HOME": str(home), **extra})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "error" in done.stderr.lower()
