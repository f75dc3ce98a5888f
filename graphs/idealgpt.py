"""``idealgpt``: iterative sub-question decomposition for visual QA (You et al., EMNLP Findings 2023).

The graph::

    START → caption → questioner ─Send×n→ answerer ─→ reasoner ─→ END   (confident, or last round)
                          ↑                                   │
                          └──────── next round ───────────────┘

``caption`` asks the VLM for a caption (skipped when the input carries one, as with the
reference's precomputed captions). The ``questioner`` LLM, which never sees the image, writes up to
``sub_questions`` sub-questions; one ``answerer`` per sub-question asks the VLM, all in parallel
(LangGraph ``Send``). The ``reasoner`` LLM reads every sub-answer so far and writes an analysis, an
answer and a confidence. The loop stops when the answer is confident enough; otherwise the
questioner, shown the analysis, asks more, up to ``max_rounds`` rounds, and the final round's
reasoner must answer (its schema forbids "not sure"). When a model's output does not validate after
the bounded repairs, the error is recorded in the output's ``error`` and the graph ends cleanly.

>>> graph = build_idealgpt_graph(config)
>>> out = graph.invoke({"image": handle, "question": "What animal is in this picture?"},
...                    context=IdealGPTSettings(max_rounds=2))
>>> out["answer"], out["confidence"], len(out["rounds"])

Settings (:class:`IdealGPTSettings`) come from ``[graphs.idealgpt]`` and may change per run through
the runtime context; a checkpointer (:func:`mmagents.graphs._run.sqlite_checkpointer`) lets an
interrupted run resume its thread.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, Field

from mmagents._config import Config
from mmagents.agents.questioner import build_questioner
from mmagents.agents.reasoner import build_reasoner
from mmagents.errors import StructuredOutputError
from mmagents.graphs import _idealgpt_paper as paper
from mmagents.graphs._settings import PipelineSettings, context_of, resolve_settings
from mmagents.runtime import Models, image_input

__all__ = [
    "MAX_ROUNDS",
    "ErrorInfo",
    "IdealGPTInput",
    "IdealGPTOutput",
    "IdealGPTSettings",
    "IdealGPTState",
    "Round",
    "SubAnswer",
    "build_idealgpt_graph",
]

#: The most rounds a run may ask for; the graph's recursion limit is set from it, so any per-run
#: ``max_rounds`` up to this bound fits (three supersteps per round plus the caption).
MAX_ROUNDS = 20


class IdealGPTSettings(PipelineSettings):
    """Knobs of the loop (``[graphs.idealgpt]``, or per run: ``--set max_rounds=2``)."""

    section: ClassVar[str] = "graphs.idealgpt"

    max_rounds: int = Field(
        4, ge=1, le=MAX_ROUNDS, description="rounds before the final, forced answer (reference: 4)"
    )
    sub_questions: int = Field(3, ge=1, le=5, description="most sub-questions per round")
    confidence_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="stop once the reasoner's confidence reaches this"
    )
    max_repairs: int = Field(
        2, ge=0, le=10, description="repair attempts per LLM call whose output does not validate"
    )
    protocol: Literal["default", "paper"] = Field(
        "default",
        description="paper: the reference's prompts, free-text parsing, reruns and stop rule "
        "(graphs/_idealgpt_paper.py; docs/reproduce.md)",
    )
    paper_task: Literal["vcr", "snli-ve"] = Field(
        "vcr", description="protocol=paper: which of the reference's two prompt sets and rules"
    )


class IdealGPTInput(BaseModel):
    """One question about one image."""

    image: str = image_input("the image (a file, or a stored image handle)")
    question: str = Field(min_length=1, description="the question about the image")
    choices: list[str] | None = Field(
        default=None, description="answer choices of a multiple-choice question (optional)"
    )
    caption: str | None = Field(
        default=None, description="use this caption instead of asking the VLM (optional)"
    )


class SubAnswer(TypedDict):
    """A sub-question and the VQA model's answer."""

    question: str
    answer: str


class Round(TypedDict):
    """One round: the sub-questions with their answers, and the reasoner's analysis."""

    sub_questions: list[SubAnswer]
    analysis: str


class ErrorInfo(TypedDict):
    """A typed failure recorded in state: exception type, message and the node that failed."""

    type: str
    message: str
    node: str


class IdealGPTOutput(TypedDict, total=False):
    """The result of a run. ``answer`` is ``None`` when the reasoner was not sure (or failed)."""

    answer: str | None
    confidence: float | None
    rounds: Annotated[list[Round], operator.add]
    llm_calls: Annotated[int, operator.add]
    vlm_calls: Annotated[int, operator.add]
    error: ErrorInfo | None


class _Answered(TypedDict):
    """One answerer's result, tagged so the reasoner can order the round's answers."""

    round: int
    index: int
    question: str
    answer: str


class AnswerTask(TypedDict):
    """What ``Send`` hands one answerer."""

    image: str
    question: str
    round: int
    index: int


class IdealGPTState(IdealGPTOutput, total=False):
    """The output's keys, the input, and the loop's working fields (``asked``, ``answered``)."""

    image: str
    question: str
    choices: list[str] | None
    caption: str | None
    asked: list[str]
    answered: Annotated[list[_Answered], operator.add]


def _flatten(rounds: Iterable[Round]) -> list[SubAnswer]:
    return [qa for r in rounds for qa in r["sub_questions"]]


def _error(node: str, exc: Exception) -> ErrorInfo:
    return {"type": type(exc).__name__, "message": str(exc), "node": node}


def _one_line(text: str) -> str:
    # The reference trims VQA answers to one line; a multi-line answer would break the prompt.
    return " ".join(str(text).split())


class _Nodes:
    """The graph's nodes and routers over one runtime; settings are read per run."""

    def __init__(self, models: Models, default: IdealGPTSettings) -> None:
        self.models = models
        self.default = default

    def _settings(self, runtime: Runtime[IdealGPTSettings]) -> IdealGPTSettings:
        return context_of(runtime, self.default)

    def caption(self, state: IdealGPTState) -> dict[str, Any]:
        if state.get("caption"):
            return {}
        text = self.models.vlm.caption(self.models.store.resolve(state["image"]))
        return {"caption": _one_line(text), "vlm_calls": 1}

    def ask(self, state: IdealGPTState, runtime: Runtime[IdealGPTSettings]) -> dict[str, Any]:
        s = self._settings(runtime)
        if s.protocol == "paper":
            return self._ask_paper(state, s)
        questioner = build_questioner(
            self.models.llm, max_sub_questions=s.sub_questions, max_repairs=s.max_repairs
        )
        rounds = state.get("rounds") or []
        inputs = {
            "question": state["question"],
            "caption": state.get("caption", ""),
            "choices": state.get("choices"),
            "sub_answers": _flatten(rounds),
            "analysis": rounds[-1]["analysis"] if rounds else None,
        }
        try:
            out = questioner.invoke(inputs, get_config())  # type: ignore[arg-type]
        except StructuredOutputError as exc:
            return {"error": _error("questioner", exc), "llm_calls": exc.attempts}
        return {"asked": list(out.value.sub_questions), "llm_calls": out.attempts}

    def _paper_inputs(self, state: IdealGPTState) -> tuple[Any, ...]:
        rounds = state.get("rounds") or []
        questions = [[qa["question"] for qa in r["sub_questions"]] for r in rounds]
        answers = [[qa["answer"] for qa in r["sub_questions"]] for r in rounds]
        return (
            state.get("caption", ""),
            state["question"],
            state.get("choices") or [],
            questions,
            answers,
        )

    def _ask_paper(self, state: IdealGPTState, s: IdealGPTSettings) -> dict[str, Any]:
        rounds = state.get("rounds") or []
        asked = paper.ask(
            self.models.llm,
            s.paper_task,
            *self._paper_inputs(state),
            rounds[-1]["analysis"] if rounds else None,
        )
        return {"asked": asked, "llm_calls": 1}

    def _reason_paper(self, state: IdealGPTState, s: IdealGPTSettings) -> dict[str, Any]:
        number = len(state.get("rounds") or []) + 1
        current = sorted(
            (a for a in state.get("answered") or [] if a["round"] == number),
            key=lambda a: a["index"],
        )
        qas: list[SubAnswer] = [{"question": a["question"], "answer": a["answer"]} for a in current]
        caption, question, choices, questions, answers = self._paper_inputs(state)
        base = float(self.models.config.role("llm").options.get("temperature", 0.0))
        try:
            analysis, answer, calls = paper.reason(
                self.models.llm,
                s.paper_task,
                caption,
                question,
                choices,
                [*questions, [qa["question"] for qa in qas]],
                [*answers, [qa["answer"] for qa in qas]],
                final_round=number >= s.max_rounds,
                base_temperature=base,
            )
        except StructuredOutputError as exc:
            failed: Round = {"sub_questions": qas, "analysis": ""}
            return {"rounds": [failed], "error": _error("reasoner", exc), "llm_calls": exc.attempts}
        if s.paper_task == "vcr" and answer is not None:
            # The reference predicts the choice number; the text of that choice is reported so
            # that the task's target (the choice text) scores it. An out-of-range number stays.
            index = int(answer) - 1
            answer = choices[index] if 0 <= index < len(choices) else answer
        done: Round = {"sub_questions": qas, "analysis": analysis}
        return {"rounds": [done], "answer": answer, "confidence": None, "llm_calls": calls}

    def fan_out(self, state: IdealGPTState) -> Any:
        """One ``Send`` per sub-question, so the answerers run concurrently; END on error."""
        if state.get("error"):
            return END
        number = len(state.get("rounds") or []) + 1
        if not state["asked"]:  # protocol=paper: a reply without sub-questions reasons on as is
            return [Send("reasoner", dict(state))]
        return [
            Send("answerer", {"image": state["image"], "question": q, "round": number, "index": i})
            for i, q in enumerate(state["asked"])
        ]

    def answer(self, state: AnswerTask, runtime: Runtime[IdealGPTSettings]) -> dict[str, Any]:
        reply = self.models.vlm.answer(self.models.store.resolve(state["image"]), state["question"])
        if self._settings(runtime).protocol == "paper":
            reply = paper.trim_answer(reply)  # cut at a following "Question:" (vcr_conv.py:163)
        answered: _Answered = {
            "round": state["round"],
            "index": state["index"],
            "question": state["question"],
            "answer": _one_line(reply),
        }
        return {"answered": [answered], "vlm_calls": 1}

    def reason(self, state: IdealGPTState, runtime: Runtime[IdealGPTSettings]) -> dict[str, Any]:
        s = self._settings(runtime)
        if s.protocol == "paper":
            return self._reason_paper(state, s)
        reasoner = build_reasoner(self.models.llm, max_repairs=s.max_repairs)
        rounds = state.get("rounds") or []
        number = len(rounds) + 1
        current = sorted(
            (a for a in state.get("answered") or [] if a["round"] == number),
            key=lambda a: a["index"],
        )
        qas: list[SubAnswer] = [{"question": a["question"], "answer": a["answer"]} for a in current]
        inputs = {
            "question": state["question"],
            "caption": state.get("caption", ""),
            "choices": state.get("choices"),
            "sub_answers": [*_flatten(rounds), *qas],
            "final": number >= s.max_rounds,
        }
        try:
            out = reasoner.invoke(inputs, get_config())  # type: ignore[arg-type]
        except StructuredOutputError as exc:
            failed: Round = {"sub_questions": qas, "analysis": ""}
            return {"rounds": [failed], "error": _error("reasoner", exc), "llm_calls": exc.attempts}
        value = out.value
        done: Round = {"sub_questions": qas, "analysis": value.analysis}
        return {
            "rounds": [done],
            "answer": value.answer or None,  # "" is the reasoner's "we are not sure"
            "confidence": value.confidence,
            "llm_calls": out.attempts,
        }

    def next_step(self, state: IdealGPTState, runtime: Runtime[IdealGPTSettings]) -> str:
        """END when an error occurred, the answer is confident, or the last round is done."""
        s = self._settings(runtime)
        if state.get("error"):
            return END
        if s.protocol == "paper":
            # The reference stops as soon as the answer is a valid choice (vcr_conv.py:325).
            if state.get("answer") in (state.get("choices") or []):
                return END
            return END if len(state.get("rounds") or []) >= s.max_rounds else "questioner"
        confident = (state.get("confidence") or 0.0) >= s.confidence_threshold
        if state.get("answer") and confident:
            return END
        if len(state.get("rounds") or []) >= s.max_rounds:
            return END
        return "questioner"


def build_idealgpt_graph(
    config: Config | None = None,
    *,
    models: Models | None = None,
    settings: IdealGPTSettings | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[IdealGPTState, IdealGPTSettings, IdealGPTInput, IdealGPTOutput]:
    """Compile the IdealGPT graph (no model loads until a node needs it).

    Args:
        config: The configuration (roles, image store, ``[graphs.idealgpt]``); default: the
            models' config, else :func:`~mmagents.load_config`.
        models: The runtime: ``llm`` (questioner and reasoner), ``vlm`` (captioner and answerer)
            and the image store (default: ``Models(config)``).
        settings: The settings used when a run passes no ``context`` (default: from the config).
        checkpointer: A LangGraph checkpointer; runs then need a ``thread_id`` and an
            interrupted thread resumes with input ``None``.

    Raises:
        ConfigError: an invalid ``[graphs.idealgpt]`` section.
    """
    models = models or Models(config)
    default = settings or resolve_settings(IdealGPTSettings, config or models.config)
    nodes = _Nodes(models, default)
    graph = StateGraph(
        IdealGPTState,
        context_schema=IdealGPTSettings,
        input_schema=IdealGPTInput,
        output_schema=IdealGPTOutput,
    )
    graph.add_node("caption", nodes.caption)
    graph.add_node("questioner", nodes.ask)
    graph.add_node("answerer", nodes.answer, input_schema=AnswerTask)
    graph.add_node("reasoner", nodes.reason)
    graph.add_edge(START, "caption")
    graph.add_edge("caption", "questioner")
    graph.add_conditional_edges("questioner", nodes.fan_out, ["answerer", END])
    graph.add_edge("answerer", "reasoner")
    graph.add_conditional_edges("reasoner", nodes.next_step, ["questioner", END])
    compiled = graph.compile(checkpointer=checkpointer, name="idealgpt")
    return compiled.with_config(recursion_limit=3 * MAX_ROUNDS + 10)
