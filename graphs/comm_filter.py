"""``comm-filter``: score an interleaved document and keep or drop it (CoMM's filtering stage).

The graph::

    START ─┬→ judge_text ───┬→ decide → END
           └→ score_images ─┘

``judge_text`` asks the ``coherence_judge`` agent (an LLM with a rubric prompt) for structured
1–5 scores on relevance, progression, consistency and completeness; their mean mapped to [0, 1] is
the **text coherence**. ``score_images`` uses the scorer role for **image–text alignment** (mean
cosine of each image with its step) and **image-sequence consistency** (mean cosine of each image
with the images before it), defined in :mod:`mmagents.graphs._comm_scores` exactly as the
generation graph uses them. ``decide`` keeps the document when all three meet the thresholds of
``[graphs.comm_filter]``::

    [graphs.comm_filter]
    min_coherence = 0.5     # judge: mean rubric score of 3 out of 5
    min_alignment = 0.2
    min_consistency = 0.3
    require_images = true   # a document without images is dropped

Documents are the JSON or Markdown files the ``comm`` graph saves (format in
:mod:`mmagents.graphs._comm_doc`). For the harness, :func:`eval_interleaved_sample` runs the
continuation setting: given the first ``k`` steps of a document, the ``comm`` graph writes the rest,
and the finished document is scored; judge scores and scorer metrics are reported as separate
fields.

>>> result = score_document(config, "out/document.json")
>>> result["text_coherence"], result["image_text_alignment"], result["keep"]
"""

from __future__ import annotations

import argparse
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from mmagents.errors import ConfigError
from mmagents.graphs._comm_doc import InterleavedDocument, load_document
from mmagents.graphs._roles import RoleModels
from mmagents.graphs._settings import settings_from_section

if TYPE_CHECKING:
    from mmagents._config import Config
    from mmagents.images import ImageStore

__all__ = [
    "FilterSettings",
    "FilterState",
    "build_comm_filter_graph",
    "eval_interleaved_sample",
    "register_cli",
    "score_document",
]

SECTION = "graphs.comm_filter"


@dataclass(frozen=True)
class FilterSettings:
    """Keep/drop thresholds (section ``[graphs.comm_filter]``).

    Attributes:
        min_coherence: Minimum text coherence (judge rubric mean mapped to 0–1).
        min_alignment: Minimum mean image–text cosine.
        min_consistency: Minimum image-sequence consistency (mean cosine with earlier images).
        require_images: Drop documents without any image (they are not interleaved).
    """

    min_coherence: float = 0.5
    min_alignment: float = 0.2
    min_consistency: float = 0.3
    require_images: bool = True

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> FilterSettings:
        """Defaults, then ``[graphs.comm_filter]``, then ``overrides`` (``None`` ignored).

        Raises:
            ConfigError: an unknown key or a value of the wrong type.
        """
        return settings_from_section(cls, config, SECTION, overrides)


class FilterState(TypedDict, total=False):
    """Graph state. Input: ``document`` (``InterleavedDocument.to_dict()``, images as handles)."""

    document: dict[str, Any]
    judge: dict[str, Any]
    scores: dict[str, Any]
    result: dict[str, Any]
    llm_calls: Annotated[int, operator.add]


class _Filter:
    """The graph's nodes, bound to their models, store and thresholds."""

    def __init__(
        self,
        config: Config,
        settings: FilterSettings,
        llm: Any,
        scorer: Any,
        store: ImageStore | None,
    ) -> None:
        self.settings = settings
        self.models = RoleModels(config, store, llm=llm, scorer=scorer)

    def judge_text(self, state: FilterState) -> dict[str, Any]:
        """Rubric scores of the text from the LLM judge."""
        from mmagents.agents.coherence_judge import build_coherence_judge

        doc = state["document"]
        steps = [{"title": s.get("title", ""), "text": s["text"]} for s in doc["steps"]]
        answer = build_coherence_judge(self.models["llm"]).invoke(
            {"topic": doc.get("topic", ""), "steps": steps}
        )
        judge = {**answer.value.model_dump(), "coherence": answer.value.coherence}
        return {"judge": judge, "llm_calls": answer.attempts}

    def score_images(self, state: FilterState) -> dict[str, Any]:
        """Image–text alignment and image-sequence consistency from the scorer."""
        from mmagents.graphs._comm_scores import score_sequence, step_text

        steps = state["document"]["steps"]
        images = [self.models.store.get(s["image"]) if s.get("image") else None for s in steps]
        texts = [step_text(s.get("title", ""), s["text"]) for s in steps]
        if not any(im is not None for im in images):
            return {"scores": {"alignment": None, "consistency": None, "steps": []}}
        seq = score_sequence(self.models["scorer"], images, texts)
        per_step = [
            {"alignment": a, "consistency": c}
            for a, c in zip(seq.alignment, seq.consistency, strict=True)
        ]
        return {
            "scores": {
                "alignment": seq.mean_alignment,
                "consistency": seq.mean_consistency,
                "steps": per_step,
            }
        }

    def decide(self, state: FilterState) -> dict[str, Any]:
        """Keep the document when every score meets its threshold."""
        s, judge, scores = self.settings, state["judge"], state["scores"]
        reasons = []
        if judge["coherence"] < s.min_coherence:
            reasons.append(f"text coherence {judge['coherence']:.3f} < {s.min_coherence}")
        if scores["alignment"] is None:
            if s.require_images:
                reasons.append("no images in the document")
        elif scores["alignment"] < s.min_alignment:
            reasons.append(f"image-text alignment {scores['alignment']:.3f} < {s.min_alignment}")
        consistency = scores["consistency"]
        if consistency is not None and consistency < s.min_consistency:
            reasons.append(f"image-sequence consistency {consistency:.3f} < {s.min_consistency}")
        result = {
            "text_coherence": judge["coherence"],
            "image_text_alignment": scores["alignment"],
            "image_sequence_consistency": consistency,
            "keep": not reasons,
            "decision": "drop" if reasons else "keep",
            "reasons": reasons,
            "judge": judge,
            "scorer": scores,
            "thresholds": asdict(s),
        }
        return {"result": result}


def build_comm_filter_graph(
    config: Config,
    *,
    llm: Any = None,
    scorer: Any = None,
    store: ImageStore | None = None,
    settings: FilterSettings | None = None,
) -> Any:
    """Compile the document-filtering graph.

    Args:
        config: The resolved configuration (models, image store, ``[graphs.comm_filter]``).
        llm: Chat model of the coherence judge (default: the ``llm`` role).
        scorer: Image–text scorer (default: the ``scorer`` role).
        store: Image store the document's handles resolve in (default: the config's store).
        settings: Thresholds (default: :meth:`FilterSettings.from_config`).

    Returns:
        A compiled LangGraph graph over :class:`FilterState`; its ``result`` holds the three
        scores, ``keep`` / ``decision`` with the ``reasons`` for a drop, and the details.
    """
    from langgraph.graph import END, START, StateGraph

    nodes = _Filter(config, settings or FilterSettings.from_config(config), llm, scorer, store)
    graph = StateGraph(FilterState)
    graph.add_node("judge_text", nodes.judge_text)
    graph.add_node("score_images", nodes.score_images)
    graph.add_node("decide", nodes.decide)
    graph.add_edge(START, "judge_text")
    graph.add_edge(START, "score_images")
    graph.add_edge(["judge_text", "score_images"], "decide")
    graph.add_edge("decide", END)
    return graph.compile(name="comm_filter")


def score_document(
    config: Config,
    document: InterleavedDocument | str | Path,
    *,
    llm: Any = None,
    scorer: Any = None,
    store: ImageStore | None = None,
    settings: FilterSettings | None = None,
) -> dict[str, Any]:
    """Score one document (object, or a saved ``.json`` / ``.md`` file) and decide keep or drop.

    Returns:
        The graph's ``result`` plus ``llm_calls``.

    Raises:
        ConfigError: unreadable or malformed document, bad settings.
        StructuredOutputError: the judge gave no valid scores.
        BackendError: a model backend failed.
    """
    from mmagents.images import default_store

    store = store or default_store(config)
    doc = document if isinstance(document, InterleavedDocument) else load_document(document, store)
    if not doc.steps:
        raise ConfigError("the document has no steps")
    graph = build_comm_filter_graph(config, llm=llm, scorer=scorer, store=store, settings=settings)
    out = graph.invoke({"document": doc.to_dict(), "llm_calls": 0})
    return {**out["result"], "llm_calls": out.get("llm_calls", 0)}


# -- evaluation --------------------------------------------------------------------------------

_MODES = ("continue", "score")


def _option(options: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = options.get(key, default)
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {key}={value!r} is not a valid {kind.__name__}") from None


def eval_interleaved_sample(
    sample: dict[str, Any], config: Config, **options: Any
) -> dict[str, Any]:
    """Harness runner of the ``interleaved`` task.

    In the default ``continue`` mode the first ``k`` steps of the sample (text and images) are
    given to the ``comm`` graph, which writes and illustrates the rest up to the sample's length
    (or ``steps``); the finished document is then scored. ``mode=score`` scores the sample as is.

    Args:
        sample: ``steps`` (``[{title?, text, image?}]``, image paths already resolved by the
            harness) and optionally ``topic``.
        config: The run's configuration.
        **options: ``mode`` (``continue`` | ``score``), ``k`` (given steps, default 2, at most
            all but one), ``steps`` (finished length), ``max_retries``, ``candidates`` (generation),
            ``min_coherence`` (filter) and ``min_alignment``, ``min_consistency`` (both: the
            generation loop and the filter measure them the same way).

    Returns:
        ``prediction`` (``keep`` | ``drop``); the LLM-judge scores ``coherence`` and
        ``judge_<criterion>``; the scorer metrics ``alignment`` and ``consistency``; and counts
        (``given_steps``, ``generated_steps``, ``image_attempts``, ``steps_below_threshold``,
        ``llm_calls``). ``generated`` lists the written steps (text and image provenance).
    """
    from mmagents.graphs.comm import CommSettings, generate_document
    from mmagents.images import default_store

    mode = str(options.get("mode", "continue"))
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}")
    store = default_store(config)
    steps = sample.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError("an interleaved sample needs a non-empty 'steps' list")
    topic = str(sample.get("topic") or "")
    thresholds = ("min_coherence", "min_alignment", "min_consistency")
    filter_settings = FilterSettings.from_config(
        config, **{k: _option(options, k, float, None) for k in thresholds}
    )
    if mode == "score":
        doc = InterleavedDocument.from_dict({"topic": topic, "steps": steps})
        for step in doc.steps:
            step.image = store.put(step.image) if step.image else None
        k = len(doc.steps)
    else:
        k = max(1, min(_option(options, "k", int, 2), len(steps) - 1))
        total = _option(options, "steps", int, len(steps))
        comm_settings = CommSettings.from_config(
            config,
            max_retries=_option(options, "max_retries", int, None),
            candidates=_option(options, "candidates", int, None),
            min_alignment=_option(options, "min_alignment", float, None),
            min_consistency=_option(options, "min_consistency", float, None),
        )
        doc = generate_document(
            config,
            topic=topic,
            steps=max(total, k),
            partial=steps[:k],
            store=store,
            settings=comm_settings,
        )
    result = score_document(config, doc, store=store, settings=filter_settings)
    return _record(doc, result, given=k)


def _record(doc: InterleavedDocument, result: Mapping[str, Any], *, given: int) -> dict[str, Any]:
    """The harness record: judge scores and scorer metrics as separate fields."""
    from mmagents.agents.coherence_judge import CRITERIA

    judge = result["judge"]
    written = [s for s in doc.steps if s.origin == "planned"]
    record: dict[str, Any] = {
        "prediction": result["decision"],
        "coherence": judge["coherence"],
        **{f"judge_{c}": judge[c] for c in CRITERIA},
        "alignment": result["image_text_alignment"],
        "consistency": result["image_sequence_consistency"],
        "given_steps": given,
        "generated_steps": len(written),
        "image_attempts": sum(s.attempts for s in doc.steps),
        "steps_below_threshold": sum(1 for s in doc.steps if s.passed is False),
        "llm_calls": int(doc.meta.get("llm_calls", 0)) + int(result["llm_calls"]),
        "generated": [
            {"title": s.title, "text": s.text, "provenance": s.provenance, "source": s.source}
            for s in written
        ],
    }
    return record


# -- command line ------------------------------------------------------------------------------


def register_cli(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents run comm-filter --doc FILE [FILE ...] [--json] [--min-coherence X ...]``."""
    parser.add_argument(
        "--doc", required=True, nargs="+", metavar="FILE", help="document(s): .json or .md"
    )
    parser.add_argument("--min-coherence", type=float, help="text-coherence threshold (0-1)")
    parser.add_argument("--min-alignment", type=float, help="image-text alignment threshold")
    parser.add_argument("--min-consistency", type=float, help="image-sequence threshold")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per document)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmagents.cli import config_from_args

    config = config_from_args(args)
    settings = FilterSettings.from_config(
        config,
        min_coherence=args.min_coherence,
        min_alignment=args.min_alignment,
        min_consistency=args.min_consistency,
    )
    many = len(args.doc) > 1
    for path in tqdm(args.doc, desc="scoring", disable=not many, unit="doc"):
        result = {"doc": str(path), **score_document(config, path, settings=settings)}
        if args.json:
            print(json.dumps(result, indent=None if many else 2, ensure_ascii=False))
        else:
            _print_result(result)
    return 0


def _print_result(result: Mapping[str, Any]) -> None:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    print(f"{result['doc']}: {result['decision'].upper()}")
    print(f"  text coherence (LLM judge)        {fmt(result['text_coherence'])}")
    print(f"  image-text alignment (scorer)     {fmt(result['image_text_alignment'])}")
    print(f"  image-sequence consistency        {fmt(result['image_sequence_consistency'])}")
    for reason in result["reasons"]:
        print(f"  - {reason}")
