"""The backends a graph's nodes use: injected ones (tests, callers), else the config's roles.

Nothing loads when a graph is built: a role's backend is loaded on the first node that needs it,
through :func:`mmagents.models.load_role` (so the harness's call-cache wrappers apply), and the
image store is the config's default store unless one is given.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmagents._config import Config
    from mmagents.images import ImageStore

__all__ = ["RoleModels"]


class RoleModels:
    """Lazy access to a graph's role backends and image store.

    Args:
        config: The configuration that names each role's backend.
        store: Image store for handles (default: the config's store).
        **injected: Backends by role name; ``None`` means "the config's backend".
    """

    def __init__(self, config: Config, store: ImageStore | None = None, **injected: Any) -> None:
        self.config = config
        self._store = store
        self._models = dict(injected)
        self._lock = threading.Lock()

    def __getitem__(self, role: str) -> Any:
        """The backend of ``role`` (loaded on first use)."""
        with self._lock:
            if self._models.get(role) is None:
                from mmagents.models import load_role

                self._models[role] = load_role(role, self.config)
            return self._models[role]

    @property
    def store(self) -> ImageStore:
        """The image store handles resolve in."""
        if self._store is None:
            from mmagents.images import default_store

            self._store = default_store(self.config)
        return self._store
