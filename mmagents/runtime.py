"""The runtime a pipeline runs with: the backends per role, the image store, and a per-role hook.

One :class:`Models` object is what a caller (the CLI, the harness, the chat agent, a test) hands a
graph builder instead of module-level state. It loads each role's backend lazily, the first time a
node asks for it, and at most once per object; it never consults or fills a process-wide cache, so
two runs in one process share nothing unless they share the object::

    models = Models(config)                          # the config's backends, loaded on first use
    models = Models(config, llm=ScriptedChat(...))   # a test's scripted planner, the rest from config
    models = Models(config, wrap=cache_wrap(store))  # every backend passes through the run's cache

``wrap(role, spec, backend) -> backend`` is applied once to each backend as it is first reached
(injected ones included), and the tracing proxy goes outermost: the eval harness passes its call
cache here (:func:`mmagents.eval.cache.cache_wrap`), so a run's cache is exactly what that run
asked for. There is no process-wide list of wrappers and no process-wide table of backends: what
two runs do share is the loaded *weights* (:func:`mmagents.models.base.load_once`), which carry
no run's wrapper or settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from mmagents._config import ROLES, Config, RoleConfig, load_config
from mmagents._registry import import_string
from mmagents.errors import ConfigError
from mmagents.images import ImageStore, default_store
from mmagents.tracing import traced

__all__ = ["IMAGE_FIELD", "Models", "Wrap", "image_fields", "image_input"]

#: JSON-schema key marking an input field that holds an image: the CLI stores a given file and
#: passes its handle; tools and MCP clients pass a handle from the conversation.
IMAGE_FIELD = "x-mmagents-image"

#: ``wrap(role, spec, backend) -> backend``: a per-run hook over each backend (e.g. a call cache).
Wrap = Callable[[str, RoleConfig, Any], Any]

# The backend factories live above core (mmagents.models); naming them as a lazy entry keeps core
# free of an import of its upper layers and keeps `import mmagents` light.
_BUILD = "mmagents.models:build_backend"


class Models:
    """Backends per role and the image store, for one run (or one session) of a pipeline.

    Args:
        config: Which backend plays each role (default: :func:`~mmagents.load_config`).
        store: The image store handles resolve in (default: the config's store).
        wrap: Applied to each backend the first time it is reached (the harness's call cache).
        **backends: Ready backends by role name (tests, Python callers); ``None`` entries mean
            "the config's backend".

    Raises:
        ConfigError: a keyword that is not a role.
    """

    def __init__(
        self,
        config: Config | None = None,
        store: ImageStore | None = None,
        *,
        wrap: Wrap | None = None,
        **backends: Any,
    ) -> None:
        unknown = sorted(set(backends) - set(ROLES))
        if unknown:
            raise ConfigError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
        self.config = config or load_config()
        self.wrap = wrap
        self._store = store
        self._injected = {role: b for role, b in backends.items() if b is not None}
        self._ready: dict[str, Any] = {}
        self._lock = threading.RLock()

    def __getitem__(self, role: str) -> Any:
        """The backend of ``role``: built on first access (construction is cheap; weights load
        on the backend's first inference), wrapped once, then reused by this object.

        Raises:
            ConfigError: an unknown role, backend name or backend options.
        """
        with self._lock:
            if role not in self._ready:
                spec = self.config.role(role)
                backend = self._injected.get(role)
                if backend is None:
                    backend = _build(role, spec, self.config)
                if self.wrap is not None:
                    backend = self.wrap(role, spec, backend)
                # Outermost: role calls reach LangChain callbacks, cache hits included.
                self._ready[role] = traced(role, spec.backend, backend)
            return self._ready[role]

    def loaded(self) -> list[str]:
        """The roles reached so far (what this run actually used)."""
        with self._lock:
            return sorted(self._ready)

    @property
    def store(self) -> ImageStore:
        """The image store of this runtime."""
        with self._lock:
            if self._store is None:
                self._store = default_store(self.config)
            return self._store

    @property
    def llm(self) -> Any:
        """The chat model (a LangChain ``BaseChatModel``)."""
        return self["llm"]

    @property
    def vlm(self) -> Any:
        """The captioner / visual question answerer."""
        return self["vlm"]

    @property
    def scorer(self) -> Any:
        """The image-text scorer."""
        return self["scorer"]

    @property
    def ocr(self) -> Any:
        """The text reader."""
        return self["ocr"]

    @property
    def imagegen(self) -> Any:
        """The image generator (or the labelled gallery stand-in)."""
        return self["imagegen"]

    @property
    def embed(self) -> Any:
        """The text embedder."""
        return self["embed"]

    def __deepcopy__(self, memo: dict[int, Any]) -> Models:
        # A runtime is shared, never duplicated: a deep copy of what holds one (a tool, a
        # LangChain object) keeps the same backends, store and cache hook (and its locks).
        return self

    def __repr__(self) -> str:
        return f"Models(profile={self.config.profile!r}, loaded={self.loaded()})"


def image_input(description: str = "an image (a stored image handle, or a file)") -> Any:
    """A pydantic field of a pipeline input that holds an image (see :data:`IMAGE_FIELD`)."""
    return Field(description=description, min_length=1, json_schema_extra={IMAGE_FIELD: True})


def image_fields(schema: type[BaseModel]) -> list[str]:
    """The names of ``schema``'s image fields, in declaration order."""
    return [
        name
        for name, info in schema.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(IMAGE_FIELD)
    ]


def _build(role: str, spec: RoleConfig, config: Config) -> Any:
    build: Any = import_string(_BUILD)
    return build(role, spec, config)
