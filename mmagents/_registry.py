"""A typed, lazy registry: entries are ``"module:Attr"`` strings imported on first use.

Registering a backend, tool, graph or task costs nothing at import time, so ``import mmagents`` pulls
in no torch; the heavy module is imported only when its entry is actually requested.

Installed packages extend a registry through entry points (the groups in :data:`PLUGIN_GROUPS`)::

    [project.entry-points."mmagents.backends"]
    "vlm.my_vlm" = "my_pkg.vlm:MyVLM"          # <role>.<backend name>
    [project.entry-points."mmagents.tools"]
    my_tool = "my_pkg.tools:MyTool"             # a factory taking config=
    [project.entry-points."mmagents.tasks"]
    my_tasks = "my_pkg:TASKS"                   # a task YAML file or a folder of them

Entry points are read on the registry's first lookup, not at import, and never replace a name that
is already registered: a plugin cannot silently shadow a built-in.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from mmagents.errors import ConfigError

__all__ = ["PLUGIN_GROUPS", "Registry", "entry_point_targets", "import_string"]

log = logging.getLogger(__name__)

#: The entry-point groups an installed package can extend.
PLUGIN_GROUPS = ("mmagents.backends", "mmagents.tools", "mmagents.tasks")

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


def entry_point_targets(group: str, prefix: str = "") -> dict[str, str]:
    """``name → "module:Attr"`` of the installed entry points of ``group`` (nothing imported).

    Args:
        group: The entry-point group, e.g. ``"mmagents.tools"``.
        prefix: Keep only names starting with it, with the prefix removed (``"vlm."``).

    Raises:
        ConfigError: an entry point that names a module but no attribute.
    """
    targets: dict[str, str] = {}
    # importlib.metadata costs more than the rest of `import mmagents` (it parses package
    # metadata via the email package); only a registry lookup needs it, never `mmagents --help`.
    import importlib.metadata

    for point in importlib.metadata.entry_points(group=group):
        if not point.name.startswith(prefix):
            continue
        if not point.attr:
            dist = point.dist.name if point.dist is not None else "?"
            raise ConfigError(
                f"entry point {point.name!r} of {dist} in group {group!r} must look like "
                f"'module:Attr', got {point.value!r}"
            )
        targets[point.name[len(prefix) :]] = f"{point.module}:{point.attr}"
    return targets


class Registry(Generic[T]):
    """Name → object mapping whose values may be lazy ``"module:Attr"`` strings.

    Args:
        kind: What the registry holds, used in error messages ("llm backend", "task", ...).
        group: Entry-point group whose entries (names starting with ``prefix``) are added on the
            first lookup; ``None`` for a registry that takes no plugins.
        prefix: The part of an entry point's name that selects this registry (``"vlm."``).
    """

    def __init__(self, kind: str, *, group: str | None = None, prefix: str = "") -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._group = group
        self._prefix = prefix
        self._plugins_read = group is None
        self._plugins_lock = threading.Lock()
        self._from_plugins: set[str] = set()

    def _read_plugins(self) -> None:
        """Add the installed entry points once; a registered name always wins over a plugin."""
        if self._plugins_read:
            return
        with self._plugins_lock:
            if self._plugins_read:
                return
            assert self._group is not None
            for name, target in entry_point_targets(self._group, self._prefix).items():
                if name in self._entries:
                    log.warning("%s plugin %r (%s) ignored: name taken", self.kind, name, target)
                    continue
                self._entries[name] = target
                self._from_plugins.add(name)
            self._plugins_read = True

    def register(self, name: str, target: T | str, *, replace: bool = False) -> None:
        """Register ``target`` (an object or a lazy ``"module:Attr"`` string) under ``name``."""
        if name in self._from_plugins:  # code registering a name outranks a plugin's claim
            log.warning("%s plugin %r replaced by an explicit registration", self.kind, name)
            self._from_plugins.discard(name)
        elif name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target

    def get(self, name: str) -> T:
        """Return the entry, importing it on first access.

        Raises:
            ConfigError: if ``name`` is not registered.
        """
        if name not in self._entries:
            self._read_plugins()
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
        self._read_plugins()
        entry = self._entries[name]
        if isinstance(entry, str):
            return entry
        return f"{getattr(entry, '__module__', '?')}:{getattr(entry, '__qualname__', repr(entry))}"

    def names(self) -> list[str]:
        """Registered names (plugins included), sorted."""
        self._read_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._read_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._read_plugins()
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
