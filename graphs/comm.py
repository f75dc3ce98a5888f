"""``comm``: interleaved image–text generation in the manner of CoMM (Chen et al., 2024).

The graph::

    START → plan → generate → score ─┬─(weak, retries left)→ generate
                        ↑            └─(good, or out of retries)→ accept ─┬─(more steps)→ generate
                        └────────────────────────────────────────────────┘└─(done)→ END

``plan`` asks the ``step_planner`` agent for the steps the document still lacks (title + text each,
structured output). Then, step by step, ``generate`` asks the ``imagegen`` role for candidates (a
diffusers pipeline generates them; the offline ``gallery`` backend retrieves the closest photos
from a local folder and labels them ``retrieved``); ``score`` rates each candidate with the scorer
for alignment with the step text and consistency with the images already accepted (see
:mod:`mmagents.graphs._comm_scores`). A step under the thresholds is regenerated with the next
image-prompt template, at most ``max_retries`` times; the best candidate seen is kept either way
and marked ``passed: false`` when none met the thresholds. Steps of a partial input document keep
their text, and their images when they have one.

Settings come from ``[graphs.comm]`` (defaults in :class:`CommSettings`)::

    [graphs.comm]
    candidates = 2            # images per image-backend call
    max_retries = 2           # regenerations of a step under the thresholds
    min_alignment = 0.2       # image–text cosine
    min_consistency = 0.3     # mean cosine with the previous steps' images
    consistency_weight = 0.5  # ranking of candidates: alignment + weight * consistency
    allow_repeats = false     # may a step reuse an earlier step's image?

>>> doc = generate_document(config, topic="How to brew pour-over coffee", steps=4)
>>> doc.save("out/", default_store(config)).html
"""

from __future__ import annotations

import argparse
import json
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from mmagents.errors import BackendError, ConfigError
from mmagents.graphs._comm_doc import DocStep, InterleavedDocument, SavedDocument, load_document
from mmagents.graphs._roles import RoleModels
from mmagents.graphs._settings import settings_from_section

if TYPE_CHECKING:
    import numpy as np

    from mmagents._config import Config
    from mmagents.images import ImageStore

__all__ = [
    "CommSettings",
    "CommState",
    "DocStep",
    "InterleavedDocument",
    "SavedDocument",
    "build_comm_graph",
    "document_from_state",
    "generate_document",
    "initial_state",
    "load_document",
    "register_cli",
]

SECTION = "graphs.comm"
_MAX_CACHED_FEATURES = 4096


@dataclass(frozen=True)
class CommSettings:
    """Knobs of the generation loop (section ``[graphs.comm]``).

    Attributes:
        candidates: Images requested per image-backend call.
        max_retries: Regenerations allowed for a step under the thresholds.
        min_alignment: Minimum image–text cosine for a step to pass.
        min_consistency: Minimum mean cosine with the previous steps' images.
        consistency_weight: Weight of consistency when ranking a step's candidates.
        image_prompts: ``str.format`` templates for the image prompt, one per attempt (the last
            repeats); fields ``topic``, ``title``, ``text``.
        max_prompt_chars: Image prompts are cut to this length (CLIP text encoders read ~77 tokens).
        max_steps: Upper bound on the document length.
        allow_repeats: Let a step reuse an earlier step's image (a retrieval backend with a small
            folder otherwise offers the same best photo for every step); a repeat never passes
            and ranks below any new image.
    """

    candidates: int = 2
    max_retries: int = 2
    min_alignment: float = 0.2
    min_consistency: float = 0.3
    consistency_weight: float = 0.5
    image_prompts: tuple[str, ...] = ("{title}: {text}", "{topic}. {title}", "{title}")
    max_prompt_chars: int = 300
    max_steps: int = 12
    allow_repeats: bool = False

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.max_steps < 1 or self.max_retries < 0:
            raise ConfigError(
                f"[{SECTION}] needs candidates >= 1, max_steps >= 1 and max_retries >= 0"
            )
        if not self.image_prompts:
            raise ConfigError(f"[{SECTION}] image_prompts must hold at least one template")

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> CommSettings:
        """Defaults, then ``[graphs.comm]``, then ``overrides`` (``None`` values are ignored).

        Raises:
            ConfigError: an unknown key or a value of the wrong type.
        """
        return settings_from_section(cls, config, SECTION, overrides)

    def image_prompt(self, attempt: int, *, topic: str, title: str, text: str) -> str:
        """The image prompt of ``attempt`` (0-based) for one step."""
        template = self.image_prompts[min(attempt, len(self.image_prompts) - 1)]
        try:
            prompt = template.format(topic=topic, title=title, text=text)
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"bad image_prompts template {template!r}: {exc}") from None
        return " ".join(prompt.split())[: self.max_prompt_chars]


# -- state -------------------------------------------------------------------------------------


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
    """Graph state. Inputs: ``topic``, ``total_steps``, ``steps`` (the given steps, possibly none).

    ``steps`` holds every step as a :class:`~mmagents.graphs._comm_doc.DocStep` dict; nodes
    replace the list as steps are planned and illustrated. ``cursor`` is the step being
    illustrated, ``attempt`` the image-backend calls spent on it, ``best`` its best candidate.
    """

    topic: str
    total_steps: int
    steps: list[dict[str, Any]]
    cursor: int
    attempt: int
    candidates: list[dict[str, Any]]
    best: Candidate | None
    llm_calls: Annotated[int, operator.add]
    log: Annotated[list[dict[str, Any]], operator.add]


def initial_state(
    topic: str = "",
    total_steps: int | None = None,
    partial: InterleavedDocument | Sequence[Mapping[str, Any]] | None = None,
    *,
    store: ImageStore | None = None,
) -> CommState:
    """The graph input for a topic and/or a partial document.

    Args:
        topic: What the document is about (default: the partial document's topic).
        total_steps: Length of the finished document (default: the partial document's length).
        partial: Given steps (``title``, ``text``, optional ``image`` as handle, path or data
            URL). Their text is kept; their images are kept and marked ``given`` unless they
            already carry a provenance.
        store: Where given image paths are loaded (required when a step's image is not a handle).

    Raises:
        ConfigError: neither a topic nor any step is given.
    """
    given: list[DocStep] = []
    if isinstance(partial, InterleavedDocument):
        topic = topic or partial.topic
        given = [DocStep.from_dict(asdict(s)) for s in partial.steps]
    elif partial:
        given = [DocStep.from_dict(dict(s)) for s in partial]
    if not topic and not given:
        raise ConfigError("comm needs a topic or a partial document")
    for step in given:
        step.origin = "given"
        if step.image is not None:
            if store is None:
                from mmagents.images import is_handle

                if not is_handle(step.image):
                    raise ConfigError("a store is needed to load the partial document's images")
            else:
                step.image = store.put(step.image)
            step.provenance = step.provenance or "given"
    topic = topic or given[0].title or " ".join(given[0].text.split()[:12])
    return {
        "topic": topic,
        "total_steps": max(total_steps or len(given), len(given)),
        "steps": [asdict(s) for s in given],
        "llm_calls": 0,
        "log": [],
    }


# -- nodes -------------------------------------------------------------------------------------


class _Comm:
    """The graph's nodes, bound to their models, store and settings."""

    def __init__(
        self,
        config: Config,
        settings: CommSettings,
        llm: Any,
        imagegen: Any,
        scorer: Any,
        store: ImageStore | None,
    ) -> None:
        self.settings = settings
        self.models = RoleModels(config, store, llm=llm, imagegen=imagegen, scorer=scorer)
        self._features: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def store(self) -> ImageStore:
        return self.models.store

    def image_features(self, handles: Sequence[str]) -> np.ndarray:
        """Scorer features of stored images, computed once per handle."""
        import numpy as np

        with self._lock:
            found = {h: self._features[h] for h in handles if h in self._features}
        missing = [h for h in dict.fromkeys(handles) if h not in found]
        if missing:
            feats = self.models["scorer"].embed_images([self.store.get(h) for h in missing])
            found.update(zip(missing, feats, strict=True))
            with self._lock:
                if len(self._features) > _MAX_CACHED_FEATURES:  # a graph reused for many runs
                    self._features.clear()
                self._features.update(zip(missing, feats, strict=True))
        return np.stack([found[h] for h in handles])

    # nodes

    def plan(self, state: CommState) -> dict[str, Any]:
        """Have the step planner write the steps the document still lacks."""
        from mmagents.agents.step_planner import build_step_planner

        steps = list(state.get("steps", []))
        wanted = min(state["total_steps"], self.settings.max_steps)
        missing = wanted - len(steps)
        calls = 0
        if missing > 0:
            planner = build_step_planner(self.models["llm"])
            previous = [{"title": s["title"], "text": s["text"]} for s in steps]
            answer = planner.invoke({"topic": state["topic"], "n": missing, "previous": previous})
            calls = answer.attempts
            steps += [
                asdict(DocStep(title=p.title.strip(), text=p.text.strip(), origin="planned"))
                for p in answer.value.steps
            ]
        return {"steps": steps, "cursor": 0, "attempt": 0, "best": None, "llm_calls": calls}

    def generate(self, state: CommState) -> dict[str, Any]:
        """Candidates for the current step: its given image, or new ones from the image role."""
        step = state["steps"][state["cursor"]]
        if step["image"] is not None and step["origin"] == "given":
            given = {"image": step["image"], "provenance": step["provenance"] or "given"}
            source = step["source"] or "input"
            return {"candidates": [{**given, "source": source, "prompt": "", "given": True}]}
        attempt = state.get("attempt", 0)
        prompt = self.settings.image_prompt(
            attempt, topic=state["topic"], title=step["title"], text=step["text"]
        )
        backend = self.models["imagegen"]
        images = backend.generate(prompt, n=self.settings.candidates)
        if not images:
            raise BackendError(
                f"imagegen backend {backend.name!r} returned no image for {prompt!r}"
            )
        candidates = [
            {
                "image": self.store.put(g.image),
                "provenance": g.provenance,
                "source": g.source,
                "prompt": prompt,
                "given": False,
            }
            for g in images
        ]
        return {"candidates": candidates, "attempt": attempt + 1}

    def score(self, state: CommState) -> dict[str, Any]:
        """Rate this round's candidates; keep the best candidate seen for the step."""
        from mmagents.graphs._comm_scores import step_text

        cursor = state["cursor"]
        step = state["steps"][cursor]
        previous = [s["image"] for s in state["steps"][:cursor] if s["image"] is not None]
        prev_feats = self.image_features(previous) if previous else None
        feats = self.image_features([c["image"] for c in state["candidates"]])
        text = self.models["scorer"].embed_texts([step_text(step["title"], step["text"])])[0]
        best = state.get("best")
        for cand, feat in zip(state["candidates"], feats, strict=True):
            scored = self._rate(cand, feat, text, prev_feats, repeat=cand["image"] in previous)
            if best is None or self._rank(scored) > self._rank(best):
                best = scored
        assert best is not None  # generate never returns an empty candidate list
        entry = {
            "step": cursor + 1,
            "attempt": state.get("attempt", 0),
            "candidates": len(state["candidates"]),
            "best_alignment": round(best["alignment"], 4),
            "best_consistency": None
            if best["consistency"] is None
            else round(best["consistency"], 4),
            "passed": best["passed"],
        }
        return {"best": best, "log": [entry]}

    def _rate(
        self,
        cand: Mapping[str, Any],
        feat: np.ndarray,
        text: np.ndarray,
        prev_feats: np.ndarray | None,
        *,
        repeat: bool,
    ) -> Candidate:
        """Scores of one candidate; an earlier step's image cannot pass unless repeats are on."""
        from mmagents.graphs._comm_scores import consistency, cosine

        s = self.settings
        aligned = cosine(feat, text)
        consistent = consistency(prev_feats, feat)
        passes = aligned >= s.min_alignment and (
            consistent is None or consistent >= s.min_consistency
        )
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

    @staticmethod
    def _rank(cand: Candidate) -> tuple[bool, bool, float]:
        """Order of preference: not a refused repeat, passing, then the combined score."""
        return (not cand["repeat"], cand["passed"], cand["combined"])

    def accept(self, state: CommState) -> dict[str, Any]:
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

    # routes

    def after_score(self, state: CommState) -> str:
        """Accept a passing or given image, or one whose retries are spent; else regenerate."""
        best = state["best"]
        assert best is not None
        retries_left = state.get("attempt", 0) <= self.settings.max_retries
        if best["passed"] or best["given"] or not retries_left:
            return "accept"
        return "generate"

    @staticmethod
    def next_step(state: CommState) -> str:
        """Illustrate the next step, or stop."""
        return "generate" if state["cursor"] < len(state["steps"]) else "__end__"


def build_comm_graph(
    config: Config,
    *,
    llm: Any = None,
    imagegen: Any = None,
    scorer: Any = None,
    store: ImageStore | None = None,
    settings: CommSettings | None = None,
) -> Any:
    """Compile the CoMM generation graph.

    Args:
        config: The resolved configuration (models, image store, ``[graphs.comm]``).
        llm: Chat model of the step planner (default: the ``llm`` role, loaded on first use).
        imagegen: An :class:`~mmagents.models.base.ImageGenerator` (default: ``imagegen`` role).
        scorer: A :class:`~mmagents.models.base.Scorer` (default: the ``scorer`` role).
        store: Image store for handles (default: the config's store).
        settings: Loop settings (default: :meth:`CommSettings.from_config`).

    Returns:
        A compiled LangGraph graph over :class:`CommState`; build its input with
        :func:`initial_state` and turn its output into a document with
        :func:`document_from_state`.
    """
    from langgraph.graph import END, START, StateGraph

    nodes = _Comm(
        config, settings or CommSettings.from_config(config), llm, imagegen, scorer, store
    )
    graph = StateGraph(CommState)
    graph.add_node("plan", nodes.plan)
    graph.add_node("generate", nodes.generate)
    graph.add_node("score", nodes.score)
    graph.add_node("accept", nodes.accept)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", nodes.next_step, {"generate": "generate", "__end__": END})
    graph.add_edge("generate", "score")
    graph.add_conditional_edges(
        "score", nodes.after_score, {"accept": "accept", "generate": "generate"}
    )
    graph.add_conditional_edges("accept", nodes.next_step, {"generate": "generate", "__end__": END})
    return graph.compile(name="comm")


def recursion_limit(total_steps: int, settings: CommSettings) -> int:
    """Super-steps a run may need: plan, then per step up to (1 + retries) × 2 nodes + accept."""
    return 4 + total_steps * (2 * (settings.max_retries + 1) + 1)


def document_from_state(
    state: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> InterleavedDocument:
    """The :class:`InterleavedDocument` of a finished run."""
    steps = [DocStep.from_dict(s) for s in state["steps"]]
    info = {**(meta or {}), "llm_calls": state.get("llm_calls", 0), "log": state.get("log", [])}
    return InterleavedDocument(topic=state["topic"], steps=steps, meta=info)


def _backend_label(config: Config, role: str, injected: Any) -> str:
    if injected is not None:
        return str(getattr(injected, "name", type(injected).__name__))
    spec = config.role(role)
    model = (
        spec.options.get("model") or spec.options.get("folder") or spec.options.get("model_path")
    )
    return f"{spec.backend} ({model})" if model else spec.backend


def generate_document(
    config: Config,
    *,
    topic: str = "",
    steps: int | None = None,
    partial: InterleavedDocument | Sequence[Mapping[str, Any]] | None = None,
    llm: Any = None,
    imagegen: Any = None,
    scorer: Any = None,
    store: ImageStore | None = None,
    settings: CommSettings | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> InterleavedDocument:
    """Run the comm graph once and return the finished document.

    Args:
        config: The resolved configuration.
        topic: What the document is about (or taken from ``partial``).
        steps: Total number of steps of the finished document.
        partial: Steps already written (see :func:`initial_state`).
        llm: Override of the ``llm`` role (the step planner).
        imagegen: Override of the ``imagegen`` role.
        scorer: Override of the ``scorer`` role.
        store: Image store (default: the config's store).
        settings: Loop settings (default: from ``[graphs.comm]``).
        on_step: Called with (steps illustrated, total) after each accepted step (progress).

    Raises:
        ConfigError: neither topic nor partial document, or bad settings.
        StructuredOutputError: the step planner gave no valid plan.
        BackendError: a model backend failed.
    """
    from mmagents.images import default_store

    settings = settings or CommSettings.from_config(config)
    store = store or default_store(config)
    if steps is not None and not 1 <= steps <= settings.max_steps:
        raise ConfigError(
            f"steps must be between 1 and max_steps={settings.max_steps}, got {steps}"
        )
    graph = build_comm_graph(
        config, llm=llm, imagegen=imagegen, scorer=scorer, store=store, settings=settings
    )
    state = initial_state(topic, steps, partial, store=store)
    limit = recursion_limit(state["total_steps"], settings)
    final: dict[str, Any] = dict(state)
    modes = ["values", "updates"]
    for mode, chunk in graph.stream(state, {"recursion_limit": limit}, stream_mode=modes):
        if mode == "values":
            final = chunk
        elif on_step is not None and ("accept" in chunk or "plan" in chunk):
            node_update = chunk.get("accept") or chunk["plan"]
            on_step(node_update["cursor"], len(final["steps"]))
    meta = {
        "generator": "mmagents comm",
        "backends": {
            r: _backend_label(config, r, m)
            for r, m in (("llm", llm), ("imagegen", imagegen), ("scorer", scorer))
        },
        "settings": asdict(settings),
    }
    return document_from_state(final, meta)


# -- command line ------------------------------------------------------------------------------


def register_cli(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents run comm --topic TEXT --steps N --out DIR [--doc PARTIAL] [--json]``."""
    parser.add_argument("--topic", default="", help="what the document is about")
    parser.add_argument("--steps", type=int, help="steps of the finished document (default 4)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument("--doc", metavar="FILE", help="partial document (.json or .md) to continue")
    parser.add_argument("--candidates", type=int, help="images per image-backend call")
    parser.add_argument("--max-retries", type=int, help="regenerations of a weak step")
    parser.add_argument("--min-alignment", type=float, help="image–text cosine threshold")
    parser.add_argument("--min-consistency", type=float, help="cross-step image threshold")
    parser.add_argument("--json", action="store_true", help="print the document as JSON")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from mmagents.cli import config_from_args
    from mmagents.images import default_store

    config = config_from_args(args)
    store = default_store(config)
    settings = CommSettings.from_config(
        config,
        candidates=args.candidates,
        max_retries=args.max_retries,
        min_alignment=args.min_alignment,
        min_consistency=args.min_consistency,
    )
    partial = load_document(args.doc, store) if args.doc else None
    if not args.topic and partial is None:
        raise ConfigError("give --topic or --doc")
    steps = args.steps or (None if partial else 4)
    with Progress(transient=True) as progress:
        task = progress.add_task("planning steps", total=None)

        def on_step(done: int, total: int) -> None:
            progress.update(task, description="illustrating steps", completed=done, total=total)

        doc = generate_document(
            config,
            topic=args.topic,
            steps=steps,
            partial=partial,
            store=store,
            settings=settings,
            on_step=on_step,
        )
    saved = doc.save(args.out, store)
    if args.json:
        print(json.dumps({**doc.to_dict(), "files": _files(saved)}, indent=2, ensure_ascii=False))
        return 0
    print(f"{doc.topic}: {len(doc.steps)} steps")
    for i, step in enumerate(doc.steps, start=1):
        scores = step.scores
        mark = "" if step.passed is not False else "  (below threshold)"
        print(
            f"  {i}. {step.title}  [{step.provenance}; alignment "
            f"{_fmt(scores.get('alignment'))}, consistency {_fmt(scores.get('consistency'))}]{mark}"
        )
    if any(s.provenance == "retrieved" for s in doc.steps):
        print("note: images were retrieved from a local folder, not generated")
    for kind, path in _files(saved).items():
        print(f"{kind}: {path}")
    return 0


def _files(saved: SavedDocument) -> dict[str, str]:
    return {"json": str(saved.json), "markdown": str(saved.markdown), "html": str(saved.html)}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
