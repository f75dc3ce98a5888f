"""A typed, lazy registry: entries are ``"module:Attr"`` strings imported on first use.

Registering a backend, tool, graph or task costs nothing at import time, so ``import mmagents`` pulls
in no torch; the heavy module is imported only when its entry is actually requested.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from mmagents.errors import ConfigError

__all__ = ["Registry", "import_string"]

T = TypeVar("T")


def import_string(target: str) -> object:
    """Import ``"package.module:Attr"`` and return the attribute.

    Raises:
        ImportError: with the target named, when the module or attribute is missing.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not attr:
        raise ValueError(f"lazy target must look like 'module:Attr', got {target!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{module_name!r} has no attribute {attr!r} (entry {target!r})") from None


class Registry(Generic[T]):
    """Name → object mapping whose values may be lazy ``"module:Attr"`` strings.

    Args:
        kind: What the registry holds, used in error messages ("llm backend", "task", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str, *, replace: bool = False) -> None:
        """Register ``target`` (an object or a lazy ``"module:Attr"`` string) under ``name``."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target

    def get(self, name: str) -> T:
        """Return the entry, importing it on first access.

        Raises:
            ConfigError: if ``name`` is not registered.
        """
        try:
            entry = self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None
        if isinstance(entry, str):
            entry = import_string(entry)  # type: ignore[assignment]
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def target(self, name: str) -> str:
        """The lazy target string of ``name`` (or the object's qualified name), without importing."""
        entry = self._entries[name]
        if isinstance(entry, str):
            return entry
        return f"{getattr(entry, '__module__', '?')}:{getattr(entry, '__qualname__', repr(entry))}"

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def lazy(target: str) -> Callable[..., object]:
    """Return a callable that imports ``target`` on first call and forwards to it."""

    def call(*args: object, **kwargs: object) -> object:
        return import_string(target)(*args, **kwargs)  # type: ignore[operator]

    call.__name__ = target.rpartition(":")[2]
    return call


def lazy_attributes(
    module: str, targets: dict[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that imports ``targets[name]`` on first access and keeps it.

    Lets a package list its public names without importing the modules that define them.
    """

    def __getattr__(name: str) -> Any:
        if name in targets:
            value = import_string(targets[name])
            namespace[name] = value
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
