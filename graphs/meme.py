"""``meme``: harmful-meme rationales and classification (Mr.Harm, Lin et al., EMNLP Findings 2023).

The graph::

    START → read_text → caption ─┬─ (no student) → write_rationale → END
                                 └─ (student)    → classify        → END

* ``read_text`` reads the meme's text with the ``ocr`` role and ``caption`` describes its image with
  the ``vlm`` role; each is skipped when the input already carries it (the shared datasets come
  with OCR text and ClipCap captions);
* ``write_rationale`` is the teacher: the ``rationale_writer`` LLM role writes an abductive
  rationale, given the gold label at training time and never stating it (label leaks are
  rewritten, then cut out). Without a label it explains the meme without a verdict;
* ``classify`` runs a trained student folder (``mmagents finetune meme``; setting ``model``):
  label, probability and, for the generative student, its own rationale — no LLM at inference, as
  in the paper. ``protocol=paper`` reads the t5-clip student as the reference does: its generated
  answer is the prediction.

Which branch runs is setting ``mode``: ``auto`` (the student when ``model`` is set), ``classify``
(a student is required: the harness's tasks) or ``rationale`` (the teacher even when a student is
configured: the batch writer of teacher rationale files, :mod:`mmagents.eval.rationales`).

>>> graph = build_meme_graph(config)
>>> out = graph.invoke({"text": "when the human forgets dinner", "caption": "a cat"},
...                    context=MemeSettings(model="/tmp/student"))
>>> out["prediction"], out["probability"]
"""

from __future__ import annotations

import operator
import threading
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, field_validator, model_validator

from mmagents._config import Config
from mmagents.agents.rationale_writer import write_rationale
from mmagents.errors import ConfigError
from mmagents.graphs._settings import PipelineSettings, context_of, resolve_settings
from mmagents.memes import HARMFUL, MemeExample, normalise_label
from mmagents.models.memes import MemeStudent, load_student, read_student_meta
from mmagents.runtime import IMAGE_FIELD, Models

__all__ = [
    "MemeInput",
    "MemeOutput",
    "MemeSettings",
    "MemeState",
    "build_meme_graph",
]


class MemeSettings(PipelineSettings):
    """Knobs of one run (``[graphs.meme]``, or per run: ``--set model=DIR``)."""

    section: ClassVar[str] = "graphs.meme"

    model: str = Field(
        "", description="trained student folder ('' = none: the graph writes teacher rationales)"
    )
    mode: Literal["auto", "classify", "rationale"] = Field(
        "auto",
        description="auto: classify when a student is set, else write the teacher rationale; "
        "classify: a student is required; rationale: always the teacher",
    )
    rationale: bool = Field(
        True, description="let a generative student write its own rationale when classifying"
    )
    protocol: Literal["default", "paper"] = Field(
        "default",
        description="paper: the t5-clip student's generated answer is the prediction, as the "
        "reference reads it (docs/reproduce.md)",
    )
    max_repairs: int = Field(
        2, ge=0, le=10, description="structured-output repairs of the rationale writer"
    )


class MemeInput(BaseModel):
    """One meme: its image, or its text (and caption), or both; the gold label for the teacher."""

    image: str | None = Field(
        None,
        min_length=1,
        description="the meme image (its text read by OCR, its picture captioned by the vlm)",
        json_schema_extra={IMAGE_FIELD: True},
    )
    text: str | None = Field(None, description="the meme's text (skips OCR)")
    caption: str | None = Field(None, description="a caption of the meme's image (skips the vlm)")
    label: str | None = Field(
        None,
        description="gold label (harmful / harmless): the teacher writes its rationale for it "
        "(training-time use; never shown to a student)",
    )

    @field_validator("label")
    @classmethod
    def _known_label(cls, value: str | None) -> str | None:
        return None if value is None else normalise_label(value)

    @model_validator(mode="after")
    def _needs_content(self) -> MemeInput:
        if self.image is None and self.text is None:
            raise ValueError("the meme graph needs an image or the meme's text")
        return self


class MemeOutput(TypedDict, total=False):
    """The result: the meme as read, and the teacher's rationale or the student's verdict."""

    text: str
    caption: str
    rationale: str | None
    rationale_source: str | None
    prediction: str
    probability: float
    p_harmful: float
    leak_rewritten: bool
    leak_stripped: bool
    llm_calls: Annotated[int, operator.add]


class MemeState(MemeOutput, total=False):
    """The output's keys and the input's image handle and gold label."""

    image: str | None
    label: str | None


def _wants_student(s: MemeSettings) -> bool:
    """Whether a run with settings ``s`` classifies (else the teacher writes a rationale).

    Raises:
        ConfigError: ``mode=classify`` without a student folder.
    """
    if s.mode == "rationale":
        return False
    if s.mode == "classify" and not s.model:
        raise ConfigError(
            "meme: mode=classify needs a trained student: --model DIR (or --set model=DIR, or "
            "[graphs.meme] model = DIR; train one with `mmagents finetune meme`). The zero-shot "
            "llm baseline is task meme-harmful-zero-shot"
        )
    return bool(s.model)


class _Nodes:
    """The graph's nodes over one runtime; settings are read per run.

    The students named by the runs' settings are loaded on first use and kept as long as the
    compiled graph (one harness run, one tool, one CLI call): reloaded only when retrained.
    """

    def __init__(self, models: Models, default: MemeSettings) -> None:
        self.models = models
        self.default = default
        self._students: dict[tuple[str, int], MemeStudent] = {}
        self._lock = threading.Lock()

    def student(self, folder: str) -> MemeStudent:
        """The student in ``folder``, loaded once per graph (again when ``student.json`` changes)."""
        path = Path(folder).expanduser().resolve()
        read_student_meta(path)  # a clear error before any heavy import
        key = (str(path), (path / "student.json").stat().st_mtime_ns)
        with self._lock:
            if key not in self._students:
                self._students[key] = load_student(path)
            return self._students[key]

    def read_text(self, state: MemeState) -> dict[str, Any]:
        if state.get("text") is not None:
            return {}
        handle = state.get("image")
        if not handle:
            raise ConfigError("the meme graph needs an image or the meme's text")
        lines = self.models.ocr.read(self.models.store.resolve(handle))
        return {"text": "\n".join(line.text for line in lines)}

    def caption(self, state: MemeState) -> dict[str, Any]:
        if state.get("caption") is not None:
            return {}
        handle = state.get("image")
        if not handle:
            return {"caption": ""}
        return {"caption": self.models.vlm.caption(self.models.store.resolve(handle))}

    def route(self, state: MemeState, runtime: Runtime[MemeSettings]) -> str:
        s = context_of(runtime, self.default)
        return "classify" if _wants_student(s) else "write_rationale"

    def write_rationale(self, state: MemeState, runtime: Runtime[MemeSettings]) -> dict[str, Any]:
        s = context_of(runtime, self.default)
        result = write_rationale(
            self.models.llm,
            state["text"],
            state.get("caption", ""),
            state.get("label"),
            max_repairs=s.max_repairs,
        )
        return {
            "rationale": result.rationale,
            "rationale_source": "teacher",
            "leak_rewritten": result.leak_rewritten,
            "leak_stripped": result.leak_stripped,
            "llm_calls": result.llm_calls,
        }

    def classify(self, state: MemeState, runtime: Runtime[MemeSettings]) -> dict[str, Any]:
        s = context_of(runtime, self.default)
        student = self.student(s.model)
        handle = state.get("image")
        # The t5-clip student reads the image file itself (the others ignore it).
        image = str(self.models.store.path(handle)) if handle else None
        if s.protocol == "paper":
            return self._paper(student, state, image)
        extra = {"image": image} if image else {}
        verdict = student.classify(
            state["text"], state.get("caption", ""), rationale=s.rationale, **extra
        )
        return {
            "prediction": verdict.label,
            "probability": verdict.probability,
            "p_harmful": verdict.p_harmful,
            "rationale": verdict.rationale,
            "rationale_source": "student" if verdict.rationale else None,
            "llm_calls": 0,
        }

    @staticmethod
    def _paper(student: MemeStudent, state: MemeState, image: str | None) -> dict[str, Any]:
        """Mr.Harm's reading of its student: greedy generation, the text after "The answer is: ".

        A generation that is neither label stays the prediction (the reference counts it wrong);
        ``probability`` / ``p_harmful`` come from the two answers' likelihoods.
        """
        if student.variant != "t5-clip":
            raise ConfigError(
                "protocol=paper evaluates the paper's student: train it with "
                "`mmagents finetune meme --variant t5-clip`"
            )
        example = MemeExample(
            id="input", text=state["text"], caption=state.get("caption", ""), image=image
        )
        (label,) = student.generate_labels([example])
        (verdict,) = student.classify_many([example])
        p_harmful = verdict.p_harmful
        return {
            "prediction": label,
            "probability": p_harmful if label == HARMFUL else 1.0 - p_harmful,
            "p_harmful": p_harmful,
            "rationale": None,
            "rationale_source": None,
            "llm_calls": 0,
        }


def build_meme_graph(
    config: Config | None = None,
    *,
    models: Models | None = None,
    settings: MemeSettings | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[MemeState, MemeSettings, MemeInput, MemeOutput]:
    """Compile the meme graph (no model loads until a node needs one).

    Args:
        config: The configuration (roles, image store, ``[graphs.meme]``); default: the models'
            config, else :func:`~mmagents.load_config`.
        models: The runtime: ``ocr``, ``vlm``, ``llm`` (the rationale writer) and the image store
            (default: ``Models(config)``).
        settings: The settings used when a run passes no ``context`` (default: from the config).
        checkpointer: A LangGraph checkpointer (runs then need a ``thread_id``).

    Raises:
        ConfigError: an invalid ``[graphs.meme]`` section, a ``model`` that is not a trained
            student folder, or ``mode=classify`` without one.
    """
    models = models or Models(config)
    config = config or models.config
    default = settings or resolve_settings(MemeSettings, config)
    if _wants_student(default):
        read_student_meta(default.model)  # fail at build, not on the first meme
    nodes = _Nodes(models, default)
    graph = StateGraph(
        MemeState,
        context_schema=MemeSettings,
        input_schema=MemeInput,
        output_schema=MemeOutput,
    )
    graph.add_node("read_text", nodes.read_text)
    graph.add_node("caption", nodes.caption)
    graph.add_node("write_rationale", nodes.write_rationale)
    graph.add_node("classify", nodes.classify)
    graph.add_edge(START, "read_text")
    graph.add_edge("read_text", "caption")
    graph.add_conditional_edges("caption", nodes.route, ["write_rationale", "classify"])
    graph.add_edge("write_rationale", END)
    graph.add_edge("classify", END)
    return graph.compile(checkpointer=checkpointer, name="meme")
