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
:class:`CommFilterSettings` (the run's context; defaults from ``[graphs.comm_filter]``)::

    [graphs.comm_filter]
    min_coherence = 0.5     # judge: mean rubric score of 3 out of 5
    min_alignment = 0.2
    min_consistency = 0.3
    require_images = true   # a document without images is dropped

The input is a document's ``topic`` and ``steps`` (``title``, ``text``, ``image`` handle), as the
``comm`` graph writes them (format in :mod:`mmagents.graphs._comm_doc`)::

    graph = build_comm_filter_graph(config)
    out = graph.invoke(CommFilterInput(topic=doc.topic, steps=doc.steps).model_dump(),
                       context=CommFilterSettings(min_coherence=0.6))
    out["text_coherence"], out["image_text_alignment"], out["keep"]
"""

from __future__ import annotations

import operator
from functools import partial
from typing import Annotated, Any, ClassVar, Literal, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from mmagents._config import Config
from mmagents.agents.coherence_judge import build_coherence_judge
from mmagents.graphs._comm_doc import DocStep
from mmagents.graphs._comm_scores import score_sequence, step_text
from mmagents.graphs._settings import PipelineSettings, context_of, resolve_settings
from mmagents.runtime import Models

__all__ = [
    "CommFilterInput",
    "CommFilterOutput",
    "CommFilterSettings",
    "CommFilterState",
    "build_comm_filter_graph",
]

SECTION = "graphs.comm_filter"


class CommFilterSettings(PipelineSettings):
    """Keep/drop thresholds: the graph's context schema (defaults: ``[graphs.comm_filter]``)."""

    section: ClassVar[str] = SECTION

    min_coherence: float = Field(
        0.5, ge=0.0, le=1.0, description="Minimum text coherence (judge rubric mean mapped to 0-1)."
    )
    min_alignment: float = Field(
        0.2, ge=-1.0, description="Minimum mean image-text cosine (above 1: nothing passes)."
    )
    min_consistency: float = Field(
        0.3, ge=-1.0, description="Minimum image-sequence consistency (mean cosine with earlier)."
    )
    require_images: bool = Field(
        True, description="Drop documents without any image (they are not interleaved)."
    )


class CommFilterInput(BaseModel):
    """The document to score."""

    topic: str = Field("", description="What the document is about.")
    steps: list[DocStep] = Field(min_length=1, description="The document's steps, in order.")


class CommFilterOutput(TypedDict):
    """The three scores, the decision with its reasons, and the details behind them."""

    text_coherence: float
    image_text_alignment: float | None
    image_sequence_consistency: float | None
    keep: bool
    decision: Literal["keep", "drop"]
    reasons: list[str]
    judge: dict[str, Any]
    scorer: dict[str, Any]
    thresholds: dict[str, Any]
    llm_calls: int


class CommFilterState(TypedDict, total=False):
    """Graph state: the input document, the two measurements, then the decision fields."""

    topic: str
    steps: list[dict[str, Any]]
    judge: dict[str, Any]
    scorer: dict[str, Any]
    text_coherence: float
    image_text_alignment: float | None
    image_sequence_consistency: float | None
    keep: bool
    decision: str
    reasons: list[str]
    thresholds: dict[str, Any]
    llm_calls: Annotated[int, operator.add]


# -- nodes -------------------------------------------------------------------------------------


def judge_text(state: CommFilterState, *, models: Models) -> dict[str, Any]:
    """Rubric scores of the text from the LLM judge."""
    steps = [{"title": s.get("title") or "", "text": s["text"]} for s in state["steps"]]
    answer = build_coherence_judge(models.llm).invoke(
        {"topic": state.get("topic", ""), "steps": steps}
    )
    judge = {**answer.value.model_dump(), "coherence": answer.value.coherence}
    return {"judge": judge, "llm_calls": answer.attempts}


def score_images(state: CommFilterState, *, models: Models) -> dict[str, Any]:
    """Image–text alignment and image-sequence consistency from the scorer."""
    steps = state["steps"]
    images = [models.store.resolve(s["image"]) if s.get("image") else None for s in steps]
    if all(im is None for im in images):
        return {"scorer": {"alignment": None, "consistency": None, "steps": []}}
    texts = [step_text(s.get("title") or "", s["text"]) for s in steps]
    seq = score_sequence(models.scorer, images, texts)
    per_step = [
        {"alignment": a, "consistency": c}
        for a, c in zip(seq.alignment, seq.consistency, strict=True)
    ]
    scores = {
        "alignment": seq.mean_alignment,
        "consistency": seq.mean_consistency,
        "steps": per_step,
    }
    return {"scorer": scores}


def decide(
    state: CommFilterState, runtime: Runtime[CommFilterSettings], *, default: CommFilterSettings
) -> dict[str, Any]:
    """Keep the document when every score meets the run's threshold."""
    s = context_of(runtime, default)
    coherence = state["judge"]["coherence"]
    alignment, consistency = state["scorer"]["alignment"], state["scorer"]["consistency"]
    reasons = []
    if coherence < s.min_coherence:
        reasons.append(f"text coherence {coherence:.3f} < {s.min_coherence}")
    if alignment is None:
        if s.require_images:
            reasons.append("no images in the document")
    elif alignment < s.min_alignment:
        reasons.append(f"image-text alignment {alignment:.3f} < {s.min_alignment}")
    if consistency is not None and consistency < s.min_consistency:
        reasons.append(f"image-sequence consistency {consistency:.3f} < {s.min_consistency}")
    return {
        "text_coherence": coherence,
        "image_text_alignment": alignment,
        "image_sequence_consistency": consistency,
        "keep": not reasons,
        "decision": "drop" if reasons else "keep",
        "reasons": reasons,
        "thresholds": s.model_dump(),
    }


def build_comm_filter_graph(
    config: Config | None = None,
    *,
    models: Models | None = None,
    settings: CommFilterSettings | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[CommFilterState, CommFilterSettings, CommFilterInput, CommFilterOutput]:
    """Compile the document-filtering graph.

    Args:
        config: The configuration (default: ``models.config``, else :func:`load_config`).
        models: The judge's ``llm``, the ``scorer`` and the image store the handles resolve in
            (default: the config's, loaded on first use).
        settings: Thresholds for runs that pass no context (default: ``[graphs.comm_filter]``).
        checkpointer: Optional checkpointer.

    Returns:
        The compiled graph: :class:`CommFilterInput` in, :class:`CommFilterOutput` out; per-run
        :class:`CommFilterSettings` as ``context=``.

    Raises:
        ConfigError: bad ``[graphs.comm_filter]`` values.
    """
    models = models or Models(config)
    default = settings or resolve_settings(CommFilterSettings, models.config, None)
    graph = StateGraph(
        CommFilterState,
        context_schema=CommFilterSettings,
        input_schema=CommFilterInput,
        output_schema=CommFilterOutput,
    )
    graph.add_node("judge_text", partial(judge_text, models=models))
    graph.add_node("score_images", partial(score_images, models=models))
    graph.add_node("decide", partial(decide, default=default))
    graph.add_edge(START, "judge_text")
    graph.add_edge(START, "score_images")
    graph.add_edge(["judge_text", "score_images"], "decide")
    graph.add_edge("decide", END)
    return graph.compile(checkpointer=checkpointer, name="comm_filter")
