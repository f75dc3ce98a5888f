"""Typed settings sections: a frozen dataclass filled from ``[graphs.<name>]`` plus overrides.

Graph modules declare their knobs once as a frozen dataclass with defaults; this helper reads the
config section over those defaults, applies per-call overrides (CLI flags, ``--set`` options), and
rejects unknown keys and values of the wrong type with a :class:`~mmagents.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from mmagents.errors import ConfigError

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = ["settings_from_section"]

S = TypeVar("S")


def settings_from_section(
    cls: type[S], config: Config, section: str, overrides: Mapping[str, Any] | None = None
) -> S:
    """Defaults of ``cls``, then ``config.section(section)``, then ``overrides`` (``None`` skipped).

    Values are converted to the type of each field's default (so ``--set max_retries=3`` works);
    tuple fields accept a string (one element) or a list.

    Raises:
        ConfigError: an unknown key or a value that does not convert.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values = {**config.section(section), **given}
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) for [{section}]: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return cls(**{key: _convert(cls, section, key, value) for key, value in values.items()})


def _convert(cls: type, section: str, key: str, value: Any) -> Any:
    default = getattr(cls, key)
    try:
        if isinstance(default, tuple):
            return (value,) if isinstance(value, str) else tuple(str(v) for v in value)
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "false", "0", "no"):
                return str(value).lower() in ("true", "1", "yes")
            raise ValueError(value)
        return type(default)(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"[{section}] {key} = {value!r} is not a valid {type(default).__name__}"
        ) from None
