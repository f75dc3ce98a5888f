"""Configuration: built-in profiles, one TOML file, and environment overrides.

Resolution order (later wins):

1. the built-in profile (``offline`` unless the file or ``MMAGENTS_PROFILE`` names another);
2. the user's TOML file (``--config PATH`` or ``MMAGENTS_CONFIG``);
3. environment overrides ``MMAGENTS_<SECTION>__<KEY>=value``, e.g. ``MMAGENTS_LLM__BACKEND=openai``
   or ``MMAGENTS_IMAGES__ALLOW_REMOTE=true``. Role names (llm, vlm, ...) address ``[roles.<role>]``.

When a later layer switches a role to another backend, the earlier layers' options for that role are
dropped: options of one backend never leak into another.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError

__all__ = ["ROLES", "Config", "ImageLimits", "RoleConfig", "available_profiles", "load_config"]

ROLES: tuple[str, ...] = ("llm", "vlm", "scorer", "ocr", "imagegen", "embed")
_ENV_PREFIX = "MMAGENTS_"
_RESERVED_ENV = {"CONFIG", "PROFILE", "HOME", "API_KEY"}


@dataclass(frozen=True)
class RoleConfig:
    """Which backend plays a role, and the options passed to it."""

    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> tuple[str, str]:
        """A hashable identity: same backend and options means the same loaded model."""
        return (self.backend, repr(sorted(self.options.items())))


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every image entering the store."""

    max_pixels: int = 40_000_000
    max_bytes: int = 50 * 1024 * 1024
    allow_remote: bool = False


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one process or one graph invocation."""

    profile: str
    roles: Mapping[str, RoleConfig]
    images: ImageLimits
    home: Path
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: Path | None = None

    def role(self, name: str) -> RoleConfig:
        """Return the configuration of role ``name``.

        Raises:
            ConfigError: if the role is unknown.
        """
        try:
            return self.roles[name]
        except KeyError:
            raise ConfigError(f"unknown role {name!r}; roles are {', '.join(ROLES)}") from None

    def section(self, name: str) -> Mapping[str, Any]:
        """Return a free-form section such as ``[graphs.idealgpt]`` (empty when absent)."""
        node: Any = self.sections
        for part in name.split("."):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}

    @property
    def cache_dir(self) -> Path:
        """Where caches (images, descriptors, model-call cache, samples) live."""
        return self.home / "cache"


def available_profiles() -> list[str]:
    """Names of the built-in profiles."""
    folder = resources.files("mmagents") / "profiles"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def _read_profile(name: str) -> dict[str, Any]:
    if name not in available_profiles():
        raise ConfigError(f"unknown profile {name!r}; built-in profiles: {available_profiles()}")
    text = (resources.files("mmagents") / "profiles" / f"{name}.toml").read_text()
    return tomllib.loads(text)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None


def _parse_env_value(raw: str) -> Any:
    """Read an env value as a TOML scalar when it is one (``true``, ``3``, ``[1, 2]``), else text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(_ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(_ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        if section.upper() in _RESERVED_ENV or not key:
            continue
        target = layer.setdefault("roles", {}) if section in ROLES else layer
        target.setdefault(section, {})[key] = _parse_env_value(raw)
    return layer


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _merge_roles(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    roles = {name: dict(opts) for name, opts in base.items()}
    for name, opts in top.items():
        if not isinstance(opts, Mapping):
            raise ConfigError(f"[roles.{name}] must be a table, got {opts!r}")
        current = roles.get(name, {})
        switched = "backend" in opts and opts["backend"] != current.get("backend")
        roles[name] = dict(opts) if switched else {**current, **opts}
    return roles


def _apply(layers: list[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"roles": {}}
    for layer in layers:
        roles = _merge_roles(merged["roles"], layer.get("roles", {}))
        merged = _merge(merged, {k: v for k, v in layer.items() if k != "roles"})
        merged["roles"] = roles
    return merged


def load_config(
    path: str | Path | None = None,
    *,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve the configuration from profile, file and environment.

    Args:
        path: A TOML file; defaults to ``$MMAGENTS_CONFIG`` when set.
        profile: A built-in profile name; overrides the file's ``profile`` key and
            ``$MMAGENTS_PROFILE``.
        environ: The environment to read (defaults to ``os.environ``); tests pass their own.

    Returns:
        The resolved, validated configuration.

    Raises:
        ConfigError: on an unknown profile or role, a missing backend, or an unreadable file.
    """
    env = os.environ if environ is None else environ
    file_path = (
        Path(path)
        if path
        else (Path(env["MMAGENTS_CONFIG"]) if env.get("MMAGENTS_CONFIG") else None)
    )
    user = _read_file(file_path) if file_path else {}
    name = profile or env.get("MMAGENTS_PROFILE") or user.get("profile") or "offline"
    merged = _apply([_read_profile(str(name)), user, _env_layer(env)])

    roles: dict[str, RoleConfig] = {}
    for role, opts in merged.pop("roles").items():
        if role not in ROLES:
            raise ConfigError(f"unknown role [roles.{role}]; roles are {', '.join(ROLES)}")
        opts = dict(opts)
        backend = opts.pop("backend", None)
        if not backend:
            raise ConfigError(f"[roles.{role}] has no backend")
        roles[role] = RoleConfig(str(backend), opts)

    image_opts = merged.pop("images", {})
    try:
        images = ImageLimits(**image_opts)
    except TypeError as exc:
        raise ConfigError(f"invalid [images] section: {exc}") from None
    home = Path(env.get("MMAGENTS_HOME") or merged.pop("home", None) or Path.home() / ".mmagents")
    merged.pop("profile", None)
    return Config(
        profile=str(name),
        roles=roles,
        images=images,
        home=home.expanduser(),
        sections=merged,
        source=file_path,
    )
