"""Configuration: built-in profiles, one TOML file, and environment overrides.

Resolution order (later wins):

1. the built-in profile (``offline`` unless the file or ``MMAGENTS_PROFILE`` names another);
2. the user's TOML file (``--config PATH`` or ``MMAGENTS_CONFIG``);
3. environment overrides ``MMAGENTS_<SECTION>__<KEY>=value``, e.g. ``MMAGENTS_LLM__BACKEND=openai``
   or ``MMAGENTS_IMAGES__ALLOW_REMOTE=true``. Role names (llm, vlm, ...) address ``[roles.<role>]``.

When a later layer switches a role to another backend, the earlier layers' options for that role are
dropped: options of one backend never leak into another.

Every value is type-checked: ``[images]`` here, a backend's options against its factory's signature
when the backend is built (:func:`check_backend_options`), other typed sections through
:func:`validate_section`. A value from the file must already have the field's type (``"false"`` is
not a boolean); an environment string is parsed by the field's type (``no``, ``false``, ``0`` are
``False``; ``abc`` is no integer). A bad value is a :class:`ConfigError` naming the key, the value and
where it came from (the profile, the file, the environment variable or the command-line flag).
Unknown top-level keys and sections are rejected.
"""

from __future__ import annotations

import inspect
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from mmagents.errors import ConfigError

__all__ = [
    "ROLES",
    "SECTIONS",
    "Config",
    "ImageLimits",
    "Origin",
    "RoleConfig",
    "available_profiles",
    "check_backend_options",
    "load_config",
    "validate_section",
]

ROLES: tuple[str, ...] = ("llm", "vlm", "scorer", "ocr", "imagegen", "embed")
#: The top-level keys and sections a config may have; anything else is a typo and an error.
SECTIONS: frozenset[str] = frozenset(
    {"profile", "home", "roles", "images", "serve", "graphs", "tools", "eval", "finetune", "mcp"}
)
_ENV_PREFIX = "MMAGENTS_"
_RESERVED_ENV = {"CONFIG", "PROFILE", "HOME", "API_KEY"}
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Origin:
    """Where a config value came from, for error messages.

    Attributes:
        source: ``profile 'offline'``, a file path, ``env MMAGENTS_X__Y`` or ``flag --port``.
        raw: The string as written, for an environment variable or a flag (parsed by field type).
    """

    source: str
    raw: str | None = None

    def __str__(self) -> str:
        return self.source


_DEFAULT_ORIGIN = Origin("the defaults")


@dataclass(frozen=True)
class RoleConfig:
    """Which backend plays a role, and the options passed to it."""

    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)
    #: option name → where it came from (not part of the identity).
    origins: Mapping[str, Origin] = field(default_factory=dict, compare=False, hash=False)

    def key(self) -> tuple[str, str]:
        """A hashable identity: same backend and options means the same loaded model."""
        return (self.backend, repr(sorted(self.options.items())))


def _roots(value: Any) -> Any:
    """An environment string names several roots separated by ``os.pathsep``."""
    if isinstance(value, str):
        return tuple(Path(p).expanduser() for p in value.split(os.pathsep) if p)
    if isinstance(value, list | tuple):
        return tuple(Path(str(p)).expanduser() for p in value)
    return value


class ImageLimits(BaseModel):
    """The ``[images]`` section: limits applied to every image entering the store.

    Attributes:
        max_pixels: Largest width x height accepted (decompression-bomb guard).
        max_bytes: Largest encoded image accepted.
        allow_remote: Whether ``http(s)`` URLs may be fetched.
        allowed_roots: Folders under which MCP clients may name image files on this machine
            (none by default: an MCP client can only send ``data:`` URLs).
        memory_bytes: Budget of decoded pixels the store keeps in memory (LRU, by bytes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    max_pixels: int = Field(default=40_000_000, gt=0)
    max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    allow_remote: bool = False
    allowed_roots: Annotated[tuple[Path, ...], BeforeValidator(_roots)] = Field(
        default=(), strict=False
    )
    memory_bytes: int = Field(default=256 * 1024 * 1024, ge=0)


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one process or one graph invocation."""

    profile: str
    roles: Mapping[str, RoleConfig]
    images: ImageLimits
    home: Path
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: Path | None = None
    #: dotted key (``serve.max_request_bytes``) → where its value came from.
    origins: Mapping[str, Origin] = field(default_factory=dict, compare=False, hash=False)

    def origin(self, key: str) -> Origin:
        """Where the value of dotted ``key`` came from (``the defaults`` when nobody set it)."""
        return self.origins.get(key, _DEFAULT_ORIGIN)

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
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (is it a TOML file?)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None


def _parse_env_value(raw: str) -> Any:
    """Read an env value as a TOML scalar when it is one (``true``, ``3``, ``[1, 2]``), else text.

    This is only the value untyped sections see; a typed field parses the raw string itself.
    """
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


Layer = tuple[dict[str, Any], dict[str, Origin]]


def _origins_of(data: Mapping[str, Any], origin: Origin, prefix: str = "") -> dict[str, Origin]:
    out: dict[str, Origin] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        out[dotted] = origin
        if isinstance(value, Mapping):
            out.update(_origins_of(value, origin, dotted + "."))
    return out


def _env_layer(environ: Mapping[str, str]) -> Layer:
    layer: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for name, raw in environ.items():
        if not name.startswith(_ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(_ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        if section.upper() in _RESERVED_ENV or not key:
            continue
        if section not in ROLES and section not in SECTIONS:
            raise ConfigError(
                f"unknown config section {section!r} in environment variable {name}; "
                f"sections are {', '.join(sorted(SECTIONS - {'profile', 'home'}))} "
                f"and the roles {', '.join(ROLES)}"
            )
        target = layer.setdefault("roles", {}) if section in ROLES else layer
        target.setdefault(section, {})[key] = _parse_env_value(raw)
        dotted = f"roles.{section}.{key}" if section in ROLES else f"{section}.{key}"
        origins[dotted] = Origin(f"environment variable {name}", raw)
    return layer, origins


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _merge_roles(
    base: Mapping[str, Any], top: Mapping[str, Any], origins: dict[str, Origin]
) -> dict[str, Any]:
    roles = {name: dict(opts) for name, opts in base.items()}
    for name, opts in top.items():
        if not isinstance(opts, Mapping):
            raise ConfigError(f"[roles.{name}] must be a table, got {opts!r}")
        current = roles.get(name, {})
        switched = "backend" in opts and opts["backend"] != current.get("backend")
        if switched:  # the old backend's options, and where they came from, are gone
            for key in [k for k in origins if k.startswith(f"roles.{name}.")]:
                del origins[key]
        roles[name] = dict(opts) if switched else {**current, **opts}
    return roles


def _apply(layers: list[Layer]) -> Layer:
    merged: dict[str, Any] = {"roles": {}}
    origins: dict[str, Origin] = {}
    for layer, layer_origins in layers:
        roles = _merge_roles(merged["roles"], layer.get("roles", {}), origins)
        merged = _merge(merged, {k: v for k, v in layer.items() if k != "roles"})
        merged["roles"] = roles
        origins.update(layer_origins)
    return merged, origins


def _check_top_level(data: Mapping[str, Any], where: str) -> None:
    if unknown := sorted(set(data) - SECTIONS):
        raise ConfigError(
            f"unknown top-level key(s) {', '.join(map(repr, unknown))} in {where}; "
            f"known: {', '.join(sorted(SECTIONS))}"
        )


def _bad_value(section: str, key: str, value: Any, origin: Origin, reason: str) -> ConfigError:
    shown = origin.raw if origin.raw is not None else value
    if any(word in key for word in ("key", "token", "secret", "password")):
        shown = "<hidden>"  # an error message must not print a credential
    return ConfigError(f"[{section}] {key} = {shown!r} (from {origin}): {reason}")


def _typed(annotation: Any, metadata: list[Any], value: Any, origin: Origin) -> Any:
    """``value`` checked against a field type: strict for TOML values, parsed for strings."""
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[annotation, *metadata] if metadata else annotation
    )
    if origin.raw is not None:
        try:
            return adapter.validate_python(origin.raw, strict=False)
        except ValidationError:
            if isinstance(value, str):
                raise
            # A TOML literal in the variable (``[1, 2]``, ``{a = 1}``) for a list or table field.
            return adapter.validate_python(value, strict=False)
    return adapter.validate_python(value, strict=True)


def validate_section(
    model: type[M],
    values: Mapping[str, Any],
    section: str,
    origins: Mapping[str, Origin] | None = None,
) -> M:
    """Validate one config section against a pydantic ``model`` (``extra="forbid"`` recommended).

    Args:
        model: The section's model; its fields' types and constraints are the rules.
        values: The section's keys and values.
        section: The dotted section name, for messages (``images``, ``serve``).
        origins: Dotted key → where the value came from (``Config.origins``, plus flags).

    Raises:
        ConfigError: an unknown key or a bad value, naming the key, the value and its origin.
    """
    origins = origins or {}
    fields = model.model_fields
    data: dict[str, Any] = {}
    for key, value in values.items():
        origin = origins.get(f"{section}.{key}", _DEFAULT_ORIGIN)
        info = fields.get(key)
        if info is None:
            raise ConfigError(
                f"unknown key [{section}] {key} (from {origin}); known: {', '.join(sorted(fields))}"
            )
        try:
            # Strings from the environment or a flag become the field's type here; the model's
            # own validation below then checks ranges and cross-field rules.
            data[key] = (
                _typed(info.annotation, list(info.metadata), value, origin)
                if origin.raw is not None
                else value
            )
        except ValidationError as exc:
            raise _bad_value(section, key, value, origin, exc.errors()[0]["msg"]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "?"
        origin = origins.get(f"{section}.{key}", _DEFAULT_ORIGIN)
        raise _bad_value(section, key, data.get(key), origin, error["msg"]) from None


def _option_types(factory: Any) -> dict[str, Any]:
    """Parameter name → annotation of a backend factory (a pydantic class, a class or a function).

    Only annotations that resolve are returned; a backend whose hints name types behind
    ``TYPE_CHECKING`` keeps those options unchecked rather than failing to load.
    """
    if isinstance(factory, type) and issubclass(factory, BaseModel):
        return {
            (info.alias or name): info.annotation
            for name, info in factory.model_fields.items()
            if info.annotation is not None
        }
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    namespace = dict(vars(inspect.getmodule(target) or typing))
    types: dict[str, Any] = {}
    for name, param in factory_parameters(factory).items():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        if isinstance(annotation, str):
            try:
                # The backend's own annotation string, evaluated as typing.get_type_hints does.
                annotation = eval(annotation, namespace)
            except Exception:  # a TYPE_CHECKING-only name: leave this option unchecked
                continue
        types[name] = annotation
    return types


def factory_parameters(factory: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters a backend factory (a class's ``__init__``, or a function) takes; empty when
    its signature cannot be read."""
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}


def check_backend_options(role: str, spec: RoleConfig, factory: Any) -> dict[str, Any]:
    """The role's options, each checked against the factory's parameter type.

    File values must have the type already; environment strings are parsed by it
    (``MMAGENTS_LLM__TIMEOUT=abc`` is an error, ``=30`` is ``30.0``).

    Raises:
        ConfigError: a value of the wrong type, naming option, value and origin.
    """
    types = _option_types(factory)
    options = dict(spec.options)
    for key, value in spec.options.items():
        annotation = types.get(key)
        if annotation is None or annotation is Any:
            continue
        origin = spec.origins.get(key, _DEFAULT_ORIGIN)
        try:
            options[key] = _typed(annotation, [], value, origin)
        except ValidationError as exc:
            raise _bad_value(f"roles.{role}", key, value, origin, exc.errors()[0]["msg"]) from None
        except Exception:  # a type pydantic cannot build a validator for: leave it unchecked
            continue
    return options


def _check_home(home: Path, origin: str) -> Path:
    """``home`` made absolute and created: an unusable home fails here, naming its origin,
    rather than as an ``OSError`` traceback from whichever cache first writes into it."""
    home = home.expanduser()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"home {str(home)!r} (from {origin}) is not a directory")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"home {str(home)!r} (from {origin}) cannot be created: {exc.strerror or exc}"
        ) from None
    return home


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
        ConfigError: on an unknown profile, role, section or key, a value of the wrong type, a
            missing backend, or an unreadable file.
    """
    env = os.environ if environ is None else environ
    file_path = (
        Path(path)
        if path
        else (Path(env["MMAGENTS_CONFIG"]) if env.get("MMAGENTS_CONFIG") else None)
    )
    user = _read_file(file_path) if file_path else {}
    if file_path:
        _check_top_level(user, str(file_path))
    name = profile or env.get("MMAGENTS_PROFILE") or user.get("profile") or "offline"
    if not isinstance(name, str):
        raise ConfigError(f"profile = {name!r} (from {file_path}): must be a profile name")
    built_in = _read_profile(name)
    env_layer = _env_layer(env)
    merged, origins = _apply(
        [
            (built_in, _origins_of(built_in, Origin(f"profile {name!r}"))),
            (user, _origins_of(user, Origin(str(file_path)))),
            env_layer,
        ]
    )

    roles: dict[str, RoleConfig] = {}
    for role, opts in merged.pop("roles").items():
        if role not in ROLES:
            raise ConfigError(f"unknown role [roles.{role}]; roles are {', '.join(ROLES)}")
        opts = dict(opts)
        backend = opts.pop("backend", None)
        if not backend or not isinstance(backend, str):
            raise ConfigError(f"[roles.{role}] has no backend")
        prefix = f"roles.{role}."
        role_origins = {k[len(prefix) :]: o for k, o in origins.items() if k.startswith(prefix)}
        roles[role] = RoleConfig(backend, opts, role_origins)

    image_opts = merged.pop("images", {})
    if not isinstance(image_opts, Mapping):
        raise ConfigError(f"[images] must be a table, got {image_opts!r}")
    images = validate_section(ImageLimits, image_opts, "images", origins)
    home_value = env.get("MMAGENTS_HOME") or merged.pop("home", None)
    merged.pop("home", None)
    if home_value is not None and not isinstance(home_value, str):
        raise ConfigError(f"home = {home_value!r} (from {origins.get('home')}): must be a path")
    home_origin = (
        "environment variable MMAGENTS_HOME"
        if env.get("MMAGENTS_HOME")
        else str(origins.get("home", "the default"))
    )
    home = _check_home(Path(home_value) if home_value else Path.home() / ".mmagents", home_origin)
    merged.pop("profile", None)
    for section, value in merged.items():
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"[{section}] must be a table, got {value!r} (from {origins.get(section)})"
            )
    return Config(
        profile=name,
        roles=roles,
        images=images,
        home=home,
        sections=merged,
        source=file_path,
        origins=origins,
    )
