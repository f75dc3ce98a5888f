"""The one settings path of every pipeline: defaults < ``[graphs.<name>]`` < per-run overrides.

A pipeline declares its knobs once, as a :class:`PipelineSettings` subclass (pydantic, unknown keys
rejected, types and ranges checked by the fields). That class is also the graph's LangGraph
``context_schema``: the settings of one run arrive in the nodes as ``runtime.context``, so a caller
can change them per run without rebuilding the graph::

    class IdealGPTSettings(PipelineSettings):
        section: ClassVar[str] = "graphs.idealgpt"
        max_rounds: int = Field(4, ge=1, le=20)

    settings = resolve_settings(IdealGPTSettings, config, {"max_rounds": "2"})   # "--set max_rounds=2"
    graph.invoke(inputs, context=settings)

Values given as strings (``--set key=value``, environment) are parsed by the field's type: JSON
first (``3``, ``0.5``, ``true``, ``["a", "b"]``), then pydantic's lax string rules; a list field
given one plain word gets a one-element list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, get_origin

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from mmagents.errors import ConfigError

if TYPE_CHECKING:
    from langgraph.runtime import Runtime

    from mmagents._config import Config

__all__ = [
    "PipelineSettings",
    "context_of",
    "parse_assignments",
    "resolve_settings",
]

P = TypeVar("P", bound="PipelineSettings")


class PipelineSettings(BaseModel):
    """Base of every pipeline's settings (its context schema).

    ``section`` names the config table the defaults are read from (``graphs.<name>``).
    """

    # A misspelt setting is an error, not a silently ignored knob; a run's settings never change.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    section: ClassVar[str] = ""


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` (``--set`` options) as a mapping of raw strings, the last one winning.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def _from_string(annotation: Any, raw: str) -> Any:
    """A ``--set`` string as the field's type: JSON when it parses and validates, else lax text."""
    if annotation is str:
        return raw
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        return adapter.validate_json(raw)
    except ValidationError:
        pass
    if get_origin(annotation) in (list, tuple) and not raw.lstrip().startswith("["):
        return [raw]
    return raw  # left to the model's own validation, which names the field


def resolve_settings(
    cls: type[P],
    config: Config | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    section: str | None = None,
) -> P:
    """The settings of one run: ``cls``'s defaults, then the config section, then ``overrides``.

    Args:
        cls: The pipeline's settings class.
        config: The configuration whose ``[graphs.<name>]`` table is read (``None``: skipped).
        overrides: Per-run values (``None`` values skipped); strings are parsed by field type.
        section: The config table (default: ``cls.section``).

    Raises:
        ConfigError: an unknown key or a value of the wrong type or out of range, naming the
            section and the key.
    """
    table = section if section is not None else cls.section
    values: dict[str, Any] = dict(config.section(table)) if config is not None and table else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    known = cls.model_fields
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) for [{table or cls.__name__}]: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    parsed = {
        key: _from_string(known[key].annotation, value) if isinstance(value, str) else value
        for key, value in values.items()
    }
    try:
        return cls.model_validate(parsed)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])} = {values.get(str(err['loc'][0]))!r}: "
            f"{err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"[{table or cls.__name__}] {problems}") from None


def context_of(runtime: Runtime[P], default: P) -> P:
    """The run's settings: the context the caller passed, else the graph's build-time settings."""
    context = runtime.context
    return default if context is None else context
