"""mmagents: agentic multimodal reasoning with LangGraph.

The public surface is small on purpose::

    from mmagents import load_config, load_role, default_store, sample_path

    config = load_config()                      # offline profile unless told otherwise
    store = default_store(config)
    handle = store.put(sample_path("cat"))      # images travel as handles
    print(load_role("vlm", config).caption(store.get(handle)))

Importing this package imports no torch, transformers, diffusers or llama_cpp; backends import
their libraries on first use. It does set ``OMP_WAIT_POLICY=PASSIVE`` unless a policy is already
set (see :mod:`mmagents._cpu`): spin-waiting OpenMP threads slow llama.cpp ~25x beside other jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmagents._cpu import prefer_passive_waits
from mmagents._registry import lazy_attributes
from mmagents.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    ImageError,
    MMAgentsError,
    StructuredOutputError,
)

if TYPE_CHECKING:
    from mmagents._config import ROLES, Config, RoleConfig, available_profiles, load_config
    from mmagents.images import ImageStore, default_store
    from mmagents.models import load_role
    from mmagents.samples import sample_path

__version__ = "0.1.0"

# Before torch or llama.cpp can load OpenMP: spinning waits make them crawl beside any other job.
prefer_passive_waits()

__all__ = [
    "ROLES",
    "BackendError",
    "BackendUnavailableError",
    "Config",
    "ConfigError",
    "ImageError",
    "ImageStore",
    "MMAgentsError",
    "RoleConfig",
    "StructuredOutputError",
    "__version__",
    "available_profiles",
    "default_store",
    "load_config",
    "load_role",
    "sample_path",
]

# The config module pulls in pydantic; the command line's --help and the lazy registry need
# none of it, so even the core names load on first use.
_LAZY = {
    "ROLES": "mmagents._config:ROLES",
    "Config": "mmagents._config:Config",
    "RoleConfig": "mmagents._config:RoleConfig",
    "available_profiles": "mmagents._config:available_profiles",
    "load_config": "mmagents._config:load_config",
    "ImageStore": "mmagents.images:ImageStore",
    "default_store": "mmagents.images:default_store",
    "load_role": "mmagents.models:load_role",
    "sample_path": "mmagents.samples:sample_path",
}


__getattr__ = lazy_attributes("mmagents", _LAZY, globals())
