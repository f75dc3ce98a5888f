"""Model backends by role, behind a lazy registry.

>>> from mmagents.models import load_role
>>> scorer = load_role("scorer")          # the active profile's scorer; weights load on first use

This module keeps no backend instances: :func:`load_backend` / :func:`load_role` build a new
backend object on every call, and a run keeps the ones it uses in its runtime
(:class:`mmagents.runtime.Models`, one object per role per run, wrapped by that run's call cache
only). Construction is cheap; what is expensive and shared is the *weights*, loaded once per
process by :func:`mmagents.models.base.load_once` (and llama.cpp's model table), which hold no
configured backend and no wrapper, so no run's cache or settings can reach another run.
"""

from __future__ import annotations

from typing import Any

from mmagents._config import (
    ROLES,
    Config,
    RoleConfig,
    check_backend_options,
    factory_parameters,
    load_config,
)
from mmagents._registry import Registry
from mmagents.errors import ConfigError
from mmagents.tracing import traced

__all__ = ["BACKENDS", "build_backend", "load_backend", "load_role", "register_backend"]

#: role → backend name → lazy "module:factory". A factory takes the role's options as keywords.
#: Installed packages add backends through the ``mmagents.backends`` entry points ``<role>.<name>``.
BACKENDS: dict[str, Registry[Any]] = {
    role: Registry(f"{role} backend", group="mmagents.backends", prefix=f"{role}.")
    for role in ROLES
}

_BUILTIN = {
    "llm": {
        "llamacpp": "mmagents.models.llm_llamacpp:LlamaCppChat",
        "openai": "mmagents.models.llm_openai:build_openai_chat",
        "hf": "mmagents.models.llm_hf:HFChat",
    },
    "vlm": {
        "socratic": "mmagents.models.vlm_socratic:SocraticVLM",
        "hf": "mmagents.models.vlm_hf:HFVLM",
        "openai": "mmagents.models.vlm_openai:OpenAIVLM",
    },
    "scorer": {
        "label_space": "mmagents.models.scorer_label_space:LabelSpaceScorer",
        "open_clip": "mmagents.models.scorer_open_clip:OpenClipScorer",
        "hf_clip": "mmagents.models.scorer_hf_clip:HFClipScorer",
    },
    "ocr": {
        "rapidocr": "mmagents.models.ocr_rapidocr:RapidOCR",
        "tesseract": "mmagents.models.ocr_tesseract:TesseractOCR",
    },
    "imagegen": {
        "gallery": "mmagents.models.imagegen_gallery:GalleryRetriever",
        "diffusers": "mmagents.models.imagegen_diffusers:DiffusersGenerator",
    },
    "embed": {
        "minilm": "mmagents.models.embed_minilm:MiniLMEmbedder",
    },
}
# Deterministic stand-ins for tests and dry runs; only used when a config names "fake".
_FAKES = {
    "llm": "mmagents.models.fake:ScriptedChat",
    "vlm": "mmagents.models.fake:FakeVLM",
    "scorer": "mmagents.models.fake:FakeScorer",
    "ocr": "mmagents.models.fake:FakeOCR",
    "imagegen": "mmagents.models.fake:FakeImageGen",
    "embed": "mmagents.models.fake:FakeEmbedder",
}
for _role, _target in _FAKES.items():
    _BUILTIN[_role]["fake"] = _target
for _role, _entries in _BUILTIN.items():
    for _name, _target in _entries.items():
        BACKENDS[_role].register(_name, _target)


def register_backend(role: str, name: str, target: Any, *, replace: bool = False) -> None:
    """Register a backend factory (object or lazy ``"module:Attr"``) for ``role``."""
    if role not in BACKENDS:
        raise ConfigError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    BACKENDS[role].register(name, target, replace=replace)


def build_backend(role: str, spec: RoleConfig, config: Config | None = None) -> Any:
    """A new, unwrapped backend for ``role`` as ``spec`` describes it (options type-checked).

    Construction is cheap: backends load their weights lazily on first inference, once per
    process (:func:`mmagents.models.base.load_once`). A backend that reaches other roles itself
    (``socratic``, ``gallery``: a ``config`` parameter) is given ``config``, the run's, unless its
    options set one, so its inner roles are the run's and not the environment's.

    Raises:
        ConfigError: an unknown role or backend, or options of the wrong name or type.
    """
    if role not in BACKENDS:
        raise ConfigError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    factory = BACKENDS[role].get(spec.backend)
    options = check_backend_options(role, spec, factory)
    if config is not None and "config" not in options and "config" in factory_parameters(factory):
        options["config"] = config
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for {role} backend {spec.backend!r}: {exc}") from None


def load_backend(role: str, spec: RoleConfig, config: Config | None = None) -> Any:
    """A new backend for ``role`` (see :func:`build_backend`), traced (its calls reach LangChain
    callbacks). Not cached: keep the object, or use a :class:`mmagents.runtime.Models`."""
    return traced(role, spec.backend, build_backend(role, spec, config))


def load_role(role: str, config: Config | None = None) -> Any:
    """A new backend that plays ``role`` in ``config`` (default: the resolved environment).

    Each call builds a new object over the process's shared weights; a caller that calls the
    role repeatedly keeps it (or holds a :class:`mmagents.runtime.Models`, which does).
    """
    cfg = config or load_config()
    return load_backend(role, cfg.role(role), cfg)
