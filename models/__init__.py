"""Model backends by role, behind a lazy registry, loaded once per process.

>>> from mmagents.models import load_role
>>> scorer = load_role("scorer")          # the active profile's scorer; weights load on first use
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mmagents._config import ROLES, Config, RoleConfig, check_backend_options, load_config
from mmagents._registry import Registry
from mmagents.errors import ConfigError
from mmagents.tracing import traced

__all__ = ["BACKENDS", "BACKEND_WRAPPERS", "load_backend", "load_role", "register_backend"]

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

_LOADED: dict[tuple[str, str, str], Any] = {}
_TRACED: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()

#: Hooks ``wrap(role, spec, backend) -> backend`` applied in order to what :func:`load_backend`
#: returns; the loaded instance itself stays cached unwrapped. The eval harness adds its model-call
#: cache here for the duration of a run, so graph code needs no cache logic of its own.
BACKEND_WRAPPERS: list[Callable[[str, RoleConfig, Any], Any]] = []


def register_backend(role: str, name: str, target: Any, *, replace: bool = False) -> None:
    """Register a backend factory (object or lazy ``"module:Attr"``) for ``role``."""
    if role not in BACKENDS:
        raise ConfigError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    BACKENDS[role].register(name, target, replace=replace)


def load_backend(role: str, spec: RoleConfig) -> Any:
    """Build (once per process) the backend described by ``spec`` for ``role``.

    Construction is cheap: backends load their weights lazily on first inference.
    """
    if role not in BACKENDS:
        raise ConfigError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    key = (role, *spec.key())
    with _LOCK:
        if key not in _LOADED:
            factory = BACKENDS[role].get(spec.backend)
            options = check_backend_options(role, spec, factory)
            try:
                _LOADED[key] = factory(**options)
            except TypeError as exc:
                raise ConfigError(
                    f"bad options for {role} backend {spec.backend!r}: {exc}"
                ) from None
        backend = _LOADED[key]
        if not BACKEND_WRAPPERS:  # the common case: one traced proxy per loaded backend
            return _TRACED.setdefault(key, traced(role, spec.backend, backend))
    for wrap in tuple(BACKEND_WRAPPERS):
        backend = wrap(role, spec, backend)
    # Tracing goes outermost, so a traced call sees (and reports) the cache's hit or miss.
    return traced(role, spec.backend, backend)


def load_role(role: str, config: Config | None = None) -> Any:
    """Return the backend that plays ``role`` in ``config`` (default: the resolved environment)."""
    cfg = config or load_config()
    return load_backend(role, cfg.role(role))
