"""``comm``: interleaved image–text generation in the manner of CoMM (Chen et al., 2024).

The graph::

    START → plan → generate → score ─┬─(weak, retries left)→ generate
                        ↑            └─(good, or out of retries)→ accept ─┬─(more steps)→ generate
                        └────────────────────────────────────────────────┘└─(done)→ END

``plan`` keeps the given steps (a partial document to continue) and asks the ``step_planner``
agent for the steps the document still lacks (title + text each, structured output). Then, step by
step, ``generate`` asks the ``imagegen`` role for candidates (a diffusers pipeline generates them;
the offline ``gallery`` backend retrieves the closest photos from a local folder and labels them
``retrieved``); ``score`` rates each candidate with the scorer for alignment with the step text and
consistency with the images already accepted (see :mod:`mmagents.graphs._comm_scores`). A step
under the thresholds is regenerated with the next image-prompt template, at most ``max_retries``
times; the best candidate seen is kept either way and marked ``passed: false`` when none met the
thresholds. Given steps keep their text, and their images when they have one.

Per-run knobs are the context (:class:`CommSettings`; defaults from ``[graphs.comm]``)::

    [graphs.comm]
    candidates = 2            # images per image-backend call
    max_retries = 2           # regenerations of a step under the thresholds
    min_alignment = 0.2       # image–text cosine
    min_consistency = 0.3     # mean cosine with the previous steps' images
    consistency_weight = 0.5  # ranking of candidates: alignment + weight * consistency
    allow_repeats = false     # may a step reuse an earlier step's image?

The output is the document's ``topic``, ``steps`` and ``meta`` (the fields of
:class:`~mmagents.graphs._comm_doc.InterleavedDocument`)::

    out = build_comm_graph(config).invoke(CommInput(topic="Brew pour-over coffee").model_dump())
    InterleavedDocument.from_dict(out).save("out/", store).html
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Annotated, Any, ClassVar, Literal, TypedDict

import numpy as np
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, field_validator

from mmagents._config import Config
from mmagents.agents.step_planner import build_step_planner
from mmagents.errors import BackendError, ConfigError
from mmagents.graphs._comm_doc import DocStep
from mmagents.graphs._comm_scores import consistency, cosine, step_text
from mmagents.graphs._settings import PipelineSettings, context_of, resolve_settings
from mmagents.runtime import Models

__all__ = [
    "CommInput",
    "CommOutput",
    "CommSettings",
    "CommState",
    "build_comm_graph",
]

SECTION = "graphs.comm"
#: Length of a document when neither the input nor the given steps say.
DEFAULT_STEPS = 4
_MAX_CACHED_FEATURES = 4096


class CommSettings(PipelineSettings):
    """Knobs of the generation loop: the graph's context schema (defaults: ``[graphs.comm]``)."""

    section: ClassVar[str] = SECTION

    candidates: int = Field(2, ge=1, description="Images requested per image-backend call.")
    max_retries: int = Field(
        2, ge=0, description="Regenerations allowed for a step under the thresholds."
    )
    min_alignment: float = Field(
        0.2, ge=-1.0, description="Minimum image-text cosine to pass (above 1: nothing passes)."
    )
    min_consistency: float = Field(
        0.3, ge=-1.0, description="Minimum mean cosine with the previous steps' images."
    )
    consistency_weight: float = Field(
        0.5, ge=0.0, description="Weight of consistency when ranking a step's candidates."
    )
    image_prompts: tuple[str, ...] = Field(
        ("{title}: {text}", "{topic}. {title}", "{title}"),
        min_length=1,
        description="str.format templates of the image prompt, one per attempt (the last "
        "repeats); fields topic, title, text.",
    )
    max_prompt_chars: int = Field(
        300, ge=1, description="Image prompts are cut to this length (CLIP reads ~77 tokens)."
    )
    max_steps: int = Field(12, ge=1, description="Upper bound on the document length.")
    allow_repeats: bool = Field(
        False,
        description="Let a step reuse an earlier step's image (a small retrieval folder otherwise "
        "offers the same best photo for every step); a repeat never passes and ranks below any "
        "new image.",
    )

    @field_validator("image_prompts", mode="before")
    @classmethod
    def _one_template(cls, value: Any) -> Any:
        # `image_prompts = "{title}"` in a config file or `--set` means a single template.
        return (value,) if isinstance(value, str) else value

    def image_prompt(self, attempt: int, *, topic: str, title: str, text: str) -> str:
        """The image prompt of ``attempt`` (0-based) for one step.

        Raises:
            ConfigError: the template names a field other than topic, title, text.
        """
        template = self.image_prompts[min(attempt, len(self.image_prompts) - 1)]
        try:
            prompt = template.format(topic=topic, title=title, text=text)
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"bad image_prompts template {template!r}: {exc}") from None
        return " ".join(prompt.split())[: self.max_prompt_chars]


class CommInput(BaseModel):
    """A topic and/or the steps already written."""

    topic: str = Field("", description="What the document is about (default: from the steps).")
    total_steps: int | None = Field(
        None,
        ge=1,
        description=f"Steps of the finished document (default: {DEFAULT_STEPS}, or "
        "the number of given steps).",
    )
    steps: list[DocStep] = Field(
        default_factory=list,
        description="Steps already written (a partial document to continue; images as handles).",
    )


class CommOutput(TypedDict):
    """The finished document (see :class:`~mmagents.graphs._comm_doc.InterleavedDocument`)."""

    topic: str
    steps: list[dict[str, Any]]
    meta: dict[str, Any]
    llm_calls: int
    log: list[dict[str, Any]]


class Candidate(TypedDict):
    """One image proposed for a step, with its scores.

    ``given``: the input document's own image (never regenerated). ``repeat``: an earlier step's
    image while ``allow_repeats`` is off (it cannot pass). ``combined`` ranks a step's candidates.
    """

    image: str
    provenance: str
    source: str
    prompt: str
    given: bool
    repeat: bool
    alignment: float
    consistency: float | None
    combined: float
    passed: bool


class CommState(TypedDict, total=False):
    """Graph state.

    ``steps`` holds every step as a :class:`~mmagents.graphs._comm_doc.DocStep` dict; nodes
    replace the list as steps are planned and illustrated. ``cursor`` is the step being
    illustrated, ``attempt`` the image-backend calls spent on it, ``best`` its best candidate.
    """

    topic: str
    total_steps: int | None
    steps: list[dict[str, Any]]
    meta: dict[str, Any]
    cursor: int
    attempt: int
    candidates: list[dict[str, Any]]
    best: Candidate | None
    llm_calls: Annotated[int, operator.add]
    log: Annotated[list[dict[str, Any]], operator.add]


# -- nodes -------------------------------------------------------------------------------------


def plan(
    state: CommState, runtime: Runtime[CommSettings], *, models: Models, default: CommSettings
) -> dict[str, Any]:
    """Keep the given steps and have the step planner write the ones the document lacks.

    Raises:
        ConfigError: neither a topic nor a step, or a length beyond ``max_steps``.
    """
    s = context_of(runtime, default)
    given = [_given(DocStep.from_dict(step), models) for step in state.get("steps") or []]
    if not state.get("topic") and not given:
        raise ConfigError("comm needs a topic or a partial document")
    topic = state.get("topic") or given[0].title or " ".join(given[0].text.split()[:12])
    wanted = state.get("total_steps") or len(given) or DEFAULT_STEPS
    if not 1 <= wanted <= s.max_steps:
        raise ConfigError(f"steps must be between 1 and max_steps={s.max_steps}, got {wanted}")
    steps = [step.model_dump() for step in given]
    calls = 0
    if wanted > len(given):
        previous = [{"title": step.title, "text": step.text} for step in given]
        request = {"topic": topic, "n": wanted - len(given), "previous": previous}
        answer = build_step_planner(models.llm).invoke(request)
        calls = answer.attempts
        steps += [
            DocStep(title=p.title.strip(), text=p.text.strip(), origin="planned").model_dump()
            for p in answer.value.steps
        ]
    meta = {
        "generator": "mmagents comm",
        "backends": {role: _label(models[role]) for role in ("llm", "imagegen", "scorer")},
        "settings": s.model_dump(),
    }
    return {
        "topic": topic,
        "steps": steps,
        "meta": meta,
        "cursor": 0,
        "attempt": 0,
        "best": None,
        "llm_calls": calls,
    }


def generate(
    state: CommState, runtime: Runtime[CommSettings], *, models: Models, default: CommSettings
) -> dict[str, Any]:
    """Candidates for the current step: its given image, or new ones from the image role.

    Raises:
        BackendError: the image backend returned nothing.
    """
    s = context_of(runtime, default)
    step = state["steps"][state["cursor"]]
    if step["image"] is not None and step["origin"] == "given":
        given = {"image": step["image"], "provenance": step["provenance"] or "given"}
        source = step["source"] or "input"
        return {"candidates": [{**given, "source": source, "prompt": "", "given": True}]}
    attempt = state.get("attempt", 0)
    prompt = s.image_prompt(attempt, topic=state["topic"], title=step["title"], text=step["text"])
    backend = models.imagegen
    images = backend.generate(prompt, n=s.candidates)
    if not images:
        raise BackendError(f"imagegen backend {_label(backend)!r} returned no image for {prompt!r}")
    candidates = [
        {
            "image": models.store.put(g.image),
            "provenance": g.provenance,
            "source": g.source,
            "prompt": prompt,
            "given": False,
        }
        for g in images
    ]
    return {"candidates": candidates, "attempt": attempt + 1}


def score(
    state: CommState,
    runtime: Runtime[CommSettings],
    *,
    models: Models,
    default: CommSettings,
    features: _Features,
) -> dict[str, Any]:
    """Rate this round's candidates; keep the best candidate seen for the step."""
    s = context_of(runtime, default)
    cursor = state["cursor"]
    step = state["steps"][cursor]
    previous = [p["image"] for p in state["steps"][:cursor] if p["image"] is not None]
    prev_feats = features(previous) if previous else None
    feats = features([c["image"] for c in state["candidates"]])
    text = models.scorer.embed_texts([step_text(step["title"], step["text"])])[0]
    best = state.get("best")
    for cand, feat in zip(state["candidates"], feats, strict=True):
        scored = _rate(s, cand, feat, text, prev_feats, repeat=cand["image"] in previous)
        if best is None or _rank(scored) > _rank(best):
            best = scored
    assert best is not None  # generate never returns an empty candidate list
    entry = {
        "step": cursor + 1,
        "attempt": state.get("attempt", 0),
        "candidates": len(state["candidates"]),
        "best_alignment": round(best["alignment"], 4),
        "best_consistency": None if best["consistency"] is None else round(best["consistency"], 4),
        "passed": best["passed"],
    }
    return {"best": best, "log": [entry]}


def accept(state: CommState) -> dict[str, Any]:
    """Write the best candidate into the step and move to the next step."""
    best = state["best"]
    assert best is not None
    cursor = state["cursor"]
    steps = list(state["steps"])
    steps[cursor] = {
        **steps[cursor],
        "image": best["image"],
        "provenance": best["provenance"],
        "source": best["source"],
        "prompt": best["prompt"] or steps[cursor]["prompt"],
        "scores": {"alignment": best["alignment"], "consistency": best["consistency"]},
        "attempts": state.get("attempt", 0),
        "passed": best["passed"],
    }
    return {"steps": steps, "cursor": cursor + 1, "attempt": 0, "best": None, "candidates": []}


# -- routes ------------------------------------------------------------------------------------


def after_score(
    state: CommState, runtime: Runtime[CommSettings], *, default: CommSettings
) -> Literal["accept", "generate"]:
    """Accept a passing or given image, or one whose retries are spent; else regenerate."""
    best = state["best"]
    assert best is not None
    retries_left = state.get("attempt", 0) <= context_of(runtime, default).max_retries
    return "accept" if best["passed"] or best["given"] or not retries_left else "generate"


def next_step(state: CommState) -> Literal["generate", "__end__"]:
    """Illustrate the next step, or stop."""
    return "generate" if state["cursor"] < len(state["steps"]) else "__end__"


# -- helpers -----------------------------------------------------------------------------------


def _given(step: DocStep, models: Models) -> DocStep:
    """A step of the input document: its text is kept; its image (a handle, or a file or data
    URL a Python caller passed) is stored and labelled."""
    step.origin = "given"
    if step.image is not None:
        step.image = models.store.put(step.image)
        step.provenance = step.provenance or "given"
    return step


def _label(backend: Any) -> str:
    """A backend's name, with the model or folder it runs when it says (document provenance)."""
    name = str(getattr(backend, "name", None) or type(backend).__name__)
    model = next(
        (
            v
            for a in ("model", "folder", "model_path")
            if isinstance(v := getattr(backend, a, None), str)
        ),
        None,
    )
    return f"{name} ({model})" if model else name


def _rate(
    s: CommSettings,
    cand: Mapping[str, Any],
    feat: np.ndarray,
    text: np.ndarray,
    prev_feats: np.ndarray | None,
    *,
    repeat: bool,
) -> Candidate:
    """Scores of one candidate; an earlier step's image cannot pass unless repeats are on."""
    aligned = cosine(feat, text)
    consistent = consistency(prev_feats, feat)
    passes = aligned >= s.min_alignment and (consistent is None or consistent >= s.min_consistency)
    # A given image is the user's choice; a repeat is only refused when repeats are off.
    refused = repeat and not (cand["given"] or s.allow_repeats)
    return {
        **cand,  # type: ignore[typeddict-item]
        "alignment": aligned,
        "consistency": consistent,
        "combined": aligned + s.consistency_weight * (consistent or 0.0),
        "passed": passes and not refused,
        "repeat": refused,
    }


def _rank(cand: Candidate) -> tuple[bool, bool, float]:
    """Order of preference: not a refused repeat, passing, then the combined score."""
    return (not cand["repeat"], cand["passed"], cand["combined"])


class _Features:
    """Scorer features of stored images, computed once per handle for one compiled graph."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, handles: Sequence[str]) -> np.ndarray:
        with self._lock:
            found = {h: self._cache[h] for h in handles if h in self._cache}
        missing = [h for h in dict.fromkeys(handles) if h not in found]
        if missing:
            images = [self.models.store.get(h) for h in missing]
            feats = self.models.scorer.embed_images(images)
            found.update(zip(missing, feats, strict=True))
            with self._lock:
                if len(self._cache) > _MAX_CACHED_FEATURES:  # a graph reused for many runs
                    self._cache.clear()
                self._cache.update(zip(missing, feats, strict=True))
        return np.stack([found[h] for h in handles])


def build_comm_graph(
    config: Config | None = None,
    *,
    models: Models | None = None,
    settings: CommSettings | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[CommState, CommSettings, CommInput, CommOutput]:
    """Compile the CoMM generation graph.

    Args:
        config: The configuration (default: ``models.config``, else :func:`load_config`).
        models: The step planner's ``llm``, ``imagegen``, ``scorer`` and the image store
            (default: the config's, loaded on first use).
        settings: Loop settings for runs that pass no context (default: ``[graphs.comm]``).
        checkpointer: Optional checkpointer.

    Returns:
        The compiled graph: :class:`CommInput` in, :class:`CommOutput` out; per-run
        :class:`CommSettings` as ``context=``.

    Raises:
        ConfigError: bad ``[graphs.comm]`` values.
    """
    models = models or Models(config)
    default = settings or resolve_settings(CommSettings, models.config, None)
    graph = StateGraph(
        CommState, context_schema=CommSettings, input_schema=CommInput, output_schema=CommOutput
    )
    graph.add_node("plan", partial(plan, models=models, default=default))
    graph.add_node("generate", partial(generate, models=models, default=default))
    features = _Features(models)
    graph.add_node("score", partial(score, models=models, default=default, features=features))
    graph.add_node("accept", accept)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", next_step, {"generate": "generate", "__end__": END})
    graph.add_edge("generate", "score")
    graph.add_conditional_edges(
        "score", partial(after_score, default=default), {"accept": "accept", "generate": "generate"}
    )
    graph.add_conditional_edges("accept", next_step, {"generate": "generate", "__end__": END})
    return graph.compile(checkpointer=checkpointer, name="comm")
