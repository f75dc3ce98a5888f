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
the bounded repairs, the error is recorded in ``state["error"]`` and the graph ends cleanly.

>>> graph = build_idealgpt_graph(config)
>>> state = graph.invoke(initial_state(handle, "What animal is in this picture?"))
>>> state["answer"], state["confidence"], len(state["rounds"])

Settings come from ``[graphs.idealgpt]`` (see :class:`IdealGPTSettings`); a checkpointer
(:func:`sqlite_checkpointer`) lets an interrupted run resume its thread.
"""

from __future__ import annotations

import argparse
import json
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from mmagents.errors import ConfigError, StructuredOutputError

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.sqlite import SqliteSaver
    from rich.console import Console

    from mmagents._config import Config

__all__ = [
    "ErrorInfo",
    "IdealGPTSettings",
    "IdealGPTState",
    "Round",
    "SubAnswer",
    "build_idealgpt_graph",
    "eval_vqa_sample",
    "eval_vqa_single_shot",
    "initial_state",
    "register_cli",
    "result_of",
    "run_demo",
    "run_idealgpt",
    "sqlite_checkpointer",
]

SECTION = "graphs.idealgpt"


@dataclass(frozen=True)
class IdealGPTSettings:
    """Knobs of the loop (``[graphs.idealgpt]`` in the config, or keyword overrides).

    Attributes:
        max_rounds: Rounds before the final, forced answer (the reference's default: 4).
        sub_questions: Most sub-questions per round (the schema's list bound, 1 to 5).
        confidence_threshold: The loop stops when the reasoner answers with at least this
            confidence (0 to 1); below it, another round is asked for.
        max_repairs: Repair attempts per LLM call when its output does not validate.
    """

    max_rounds: int = 4
    sub_questions: int = 3
    confidence_threshold: float = 0.5
    max_repairs: int = 2

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ConfigError(f"[{SECTION}] max_rounds must be >= 1, got {self.max_rounds}")
        if not 1 <= self.sub_questions <= 5:
            raise ConfigError(f"[{SECTION}] sub_questions must be 1..5, got {self.sub_questions}")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ConfigError(
                f"[{SECTION}] confidence_threshold must be 0..1, got {self.confidence_threshold}"
            )
        if self.max_repairs < 0:
            raise ConfigError(f"[{SECTION}] max_repairs must be >= 0, got {self.max_repairs}")

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> IdealGPTSettings:
        """Defaults, then ``[graphs.idealgpt]``, then ``overrides`` (``None`` values skipped).

        Raises:
            ConfigError: an unknown key or an invalid value.
        """
        from mmagents.graphs._settings import settings_from_section

        return settings_from_section(cls, config, SECTION, overrides)


# -- state ---------------------------------------------------------------------------------------


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


class IdealGPTState(TypedDict, total=False):
    """The graph's state. Inputs: ``image`` (a handle), ``question``, optional ``choices`` and
    ``caption``. ``rounds`` grows by one per round; the counters add up across nodes."""

    image: str
    question: str
    choices: list[str] | None
    caption: str
    rounds: Annotated[list[Round], operator.add]
    asked: list[str]
    answered: Annotated[list[_Answered], operator.add]
    answer: str | None
    confidence: float | None
    llm_calls: Annotated[int, operator.add]
    vlm_calls: Annotated[int, operator.add]
    error: ErrorInfo | None


def initial_state(
    image: str, question: str, choices: Sequence[str] | None = None, caption: str | None = None
) -> IdealGPTState:
    """The input of a run: an image handle, the question and optional choices / caption."""
    state: IdealGPTState = {"image": image, "question": question, "choices": None}
    if choices:
        state["choices"] = [str(c) for c in choices]
    if caption:
        state["caption"] = caption
    return state


def _flatten(rounds: Iterable[Round]) -> list[SubAnswer]:
    return [qa for r in rounds for qa in r["sub_questions"]]


def _error(node: str, exc: Exception) -> ErrorInfo:
    return {"type": type(exc).__name__, "message": str(exc), "node": node}


def _one_line(text: str) -> str:
    # The reference trims VQA answers to one line; a multi-line answer would break the prompt.
    return " ".join(str(text).split())


# -- nodes ---------------------------------------------------------------------------------------


class _Nodes:
    """The graph's nodes and routers, sharing the models, the image store and the settings."""

    def __init__(self, config: Config, settings: IdealGPTSettings, llm: Any, vlm: Any) -> None:
        from mmagents.agents.questioner import build_questioner
        from mmagents.agents.reasoner import build_reasoner
        from mmagents.images import default_store
        from mmagents.models import load_role

        self.settings = settings
        self.store = default_store(config)
        self.vlm = vlm if vlm is not None else load_role("vlm", config)
        llm = llm if llm is not None else load_role("llm", config)
        self.questioner = build_questioner(
            llm, max_sub_questions=settings.sub_questions, max_repairs=settings.max_repairs
        )
        self.reasoner = build_reasoner(llm, max_repairs=settings.max_repairs)

    def caption(self, state: IdealGPTState) -> dict[str, Any]:
        if state.get("caption"):
            return {}
        text = self.vlm.caption(self.store.get(state["image"]))
        return {"caption": _one_line(text), "vlm_calls": 1}

    def ask(self, state: IdealGPTState, config: RunnableConfig) -> dict[str, Any]:
        rounds = state.get("rounds") or []
        inputs = {
            "question": state["question"],
            "caption": state.get("caption", ""),
            "choices": state.get("choices"),
            "sub_answers": _flatten(rounds),
            "analysis": rounds[-1]["analysis"] if rounds else None,
        }
        try:
            out = self.questioner.invoke(inputs, config)
        except StructuredOutputError as exc:
            return {"error": _error("questioner", exc), "llm_calls": exc.attempts}
        return {"asked": list(out.value.sub_questions), "llm_calls": out.attempts}

    def fan_out(self, state: IdealGPTState) -> Any:
        """One ``Send`` per sub-question, so the answerers run concurrently; END on error."""
        from langgraph.graph import END
        from langgraph.types import Send

        if state.get("error"):
            return END
        number = len(state.get("rounds") or []) + 1
        return [
            Send("answerer", {"image": state["image"], "question": q, "round": number, "index": i})
            for i, q in enumerate(state["asked"])
        ]

    def answer(self, state: AnswerTask) -> dict[str, Any]:
        reply = self.vlm.answer(self.store.get(state["image"]), state["question"])
        answered: _Answered = {
            "round": state["round"],
            "index": state["index"],
            "question": state["question"],
            "answer": _one_line(reply),
        }
        return {"answered": [answered], "vlm_calls": 1}

    def reason(self, state: IdealGPTState, config: RunnableConfig) -> dict[str, Any]:
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
            "final": number >= self.settings.max_rounds,
        }
        try:
            out = self.reasoner.invoke(inputs, config)
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

    def next_step(self, state: IdealGPTState) -> str:
        """END when an error occurred, the answer is confident, or the last round is done."""
        from langgraph.graph import END

        if state.get("error"):
            return END
        confident = (state.get("confidence") or 0.0) >= self.settings.confidence_threshold
        if state.get("answer") and confident:
            return END
        if len(state.get("rounds") or []) >= self.settings.max_rounds:
            return END
        return "questioner"


def build_idealgpt_graph(
    config: Config,
    *,
    llm: Any = None,
    vlm: Any = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    settings: IdealGPTSettings | None = None,
    **overrides: Any,
) -> Any:
    """Compile the IdealGPT graph.

    Args:
        config: The resolved configuration (image store, roles, ``[graphs.idealgpt]``).
        llm: Chat model for the questioner and the reasoner (default: the ``llm`` role).
        vlm: Captioner / answerer (default: the ``vlm`` role).
        checkpointer: A LangGraph checkpointer (e.g. :func:`sqlite_checkpointer`); runs then need
            ``{"configurable": {"thread_id": ...}}`` and an interrupted thread resumes with input
            ``None``.
        settings: The loop's settings (default: from ``config``).
        **overrides: Overrides of :class:`IdealGPTSettings` fields (``max_rounds=2``, ...).

    Returns:
        A compiled ``StateGraph`` over :class:`IdealGPTState`.

    Raises:
        ConfigError: an unknown or invalid setting.
    """
    from langgraph.graph import END, START, StateGraph

    if settings is not None and overrides:
        raise TypeError("pass either settings or keyword overrides, not both")
    settings = settings or IdealGPTSettings.from_config(config, **overrides)
    nodes = _Nodes(config, settings, llm, vlm)
    graph = StateGraph(IdealGPTState)
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
    # Three supersteps per round plus the caption; the default limit (25) would cap rounds at 7.
    return compiled.with_config(recursion_limit=3 * settings.max_rounds + 10)


def sqlite_checkpointer(path: str | Path) -> SqliteSaver:
    """A SQLite checkpointer at ``path`` (created with its folder), safe for parallel nodes."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Answerers run in worker threads and write their checkpoints from there; SqliteSaver
    # serialises access with its own lock.
    return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))


# -- running -------------------------------------------------------------------------------------

Update = Callable[[str, Mapping[str, Any]], None]


def run_idealgpt(
    graph: Any,
    inputs: IdealGPTState | None,
    *,
    thread_id: str | None = None,
    on_update: Update | None = None,
    max_concurrency: int | None = None,
) -> IdealGPTState:
    """Run (or, with ``inputs=None`` and a thread, resume) the graph, streaming node updates.

    Args:
        graph: A graph from :func:`build_idealgpt_graph`.
        inputs: The input state (:func:`initial_state`), or ``None`` to resume ``thread_id``.
        thread_id: The checkpointer thread (needed when the graph has a checkpointer).
        on_update: Called as ``on_update(node, update)`` each time a node finishes
            (``stream_mode="updates"``); the answerers of a round report one by one.
        max_concurrency: Most nodes run at once (``1`` answers sub-questions one after another).

    Returns:
        The final state.
    """
    run_config: dict[str, Any] = {}
    if thread_id is not None:
        run_config["configurable"] = {"thread_id": thread_id}
    if max_concurrency is not None:
        run_config["max_concurrency"] = max_concurrency
    final: IdealGPTState = {}
    for mode, chunk in graph.stream(inputs, run_config, stream_mode=["updates", "values"]):
        if mode == "values":
            final = chunk
        elif on_update is not None:
            for node, update in chunk.items():
                if isinstance(update, Mapping):
                    on_update(node, update)
    return final


def result_of(state: Mapping[str, Any]) -> dict[str, Any]:
    """The public result of a run: answer, confidence, rounds, call counts (and error, if any)."""
    result: dict[str, Any] = {
        "answer": state.get("answer"),
        "confidence": state.get("confidence"),
        "rounds": [
            {"sub_questions": [dict(qa) for qa in r["sub_questions"]], "analysis": r["analysis"]}
            for r in state.get("rounds") or []
        ],
        "llm_calls": state.get("llm_calls", 0),
        "vlm_calls": state.get("vlm_calls", 0),
    }
    if state.get("error"):
        result["error"] = dict(state["error"])
    return result


# -- trace ---------------------------------------------------------------------------------------


class _Trace:
    """Prints each node's update as it arrives, as a readable trace of the loop."""

    def __init__(self, console: Console, settings: IdealGPTSettings, rounds_done: int = 0) -> None:
        self.console = console
        self.settings = settings
        self.round = rounds_done
        self.started = time.perf_counter()

    def _elapsed(self) -> str:
        return f"[dim]{time.perf_counter() - self.started:6.1f}s[/]"

    def header(self, image: str, question: str, choices: Sequence[str] | None) -> None:
        from rich.markup import escape

        lines = [f"[bold]Question[/] {escape(question)}", f"[bold]Image[/] {escape(image)}"]
        if choices:
            lines.append("[bold]Choices[/] " + " | ".join(escape(c) for c in choices))
        s = self.settings
        lines.append(
            f"[dim]max {s.max_rounds} rounds · {s.sub_questions} sub-questions per round · "
            f"stop at confidence >= {s.confidence_threshold}[/]"
        )
        from rich.panel import Panel

        self.console.print(Panel("\n".join(lines), title="IdealGPT", expand=False))

    def __call__(self, node: str, update: Mapping[str, Any]) -> None:
        from rich.markup import escape

        if update.get("error"):
            err = update["error"]
            self.console.print(
                f"{self._elapsed()} [bold red]{node} failed[/] {err['type']}: {escape(err['message'])}"
            )
        elif node == "caption" and "caption" in update:
            self.console.print(f"{self._elapsed()} [cyan]caption[/]   {escape(update['caption'])}")
        elif node == "questioner":
            self.round += 1
            self.console.rule(f"round {self.round}")
            for i, q in enumerate(update.get("asked", []), 1):
                self.console.print(f"{self._elapsed()} [magenta]ask {i}[/]     {escape(q)}")
        elif node == "answerer":
            for a in update.get("answered", []):
                self.console.print(
                    f"{self._elapsed()} [green]answer {a['index'] + 1}[/]  {escape(a['question'])} "
                    f"[bold]→[/] {escape(a['answer'])}"
                )
        elif node == "reasoner":
            self._reasoned(update)

    def _reasoned(self, update: Mapping[str, Any]) -> None:
        from rich.markup import escape

        analysis = update["rounds"][-1]["analysis"] if update.get("rounds") else ""
        answer = update.get("answer")
        confidence = update.get("confidence") or 0.0
        self.console.print(f"{self._elapsed()} [yellow]reasoner[/]  {escape(analysis)}")
        shown = escape(answer) if answer else "[italic]not sure[/]"
        confident = bool(answer) and confidence >= self.settings.confidence_threshold
        verdict = "stop" if confident or self.round >= self.settings.max_rounds else "next round"
        self.console.print(
            f"{' ' * 8}[bold]answer[/] {shown} (confidence {confidence:.2f}) → {verdict}"
        )

    def summary(self, result: Mapping[str, Any]) -> None:
        from rich.markup import escape

        self.console.rule()
        if result.get("error"):
            err = result["error"]
            self.console.print(
                f"[bold red]stopped: {err['type']} in {err['node']}[/] {escape(err['message'])}"
            )
        answer = escape(str(result["answer"])) if result["answer"] else "[italic]none[/]"
        confidence = result["confidence"]
        shown = f"{confidence:.2f}" if isinstance(confidence, float) else "-"
        self.console.print(
            f"[bold]Answer[/] {answer}   confidence {shown} · {len(result['rounds'])} round(s) · "
            f"{result['llm_calls']} LLM call(s) · {result['vlm_calls']} VLM call(s) · "
            f"{time.perf_counter() - self.started:.1f}s"
        )


# -- command line and demo -----------------------------------------------------------------------


def register_cli(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents run idealgpt --image P --question Q [--choices A B ...] [--json] ...``."""
    parser.add_argument("--image", required=True, help="image file (or a stored image handle)")
    parser.add_argument("--question", required=True, help="the question about the image")
    parser.add_argument("--choices", nargs="+", metavar="CHOICE", help="answer choices (optional)")
    parser.add_argument("--caption", help="use this caption instead of asking the VLM")
    parser.add_argument("--max-rounds", type=int, help="rounds before a forced answer (default 4)")
    parser.add_argument(
        "--sub-questions", type=int, help="most sub-questions per round (default 3)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, no trace")
    parser.add_argument("--thread", help="checkpoint thread id: resume this run if interrupted")
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="SQLite checkpoint file for --thread (default: <home>/checkpoints/idealgpt.sqlite)",
    )
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args

    if args.checkpoint and not args.thread:
        raise ConfigError("--checkpoint needs --thread ID (the run to start or resume)")
    config = config_from_args(args)
    settings = IdealGPTSettings.from_config(
        config, max_rounds=args.max_rounds, sub_questions=args.sub_questions
    )
    checkpoint = None
    if args.thread:
        checkpoint = Path(args.checkpoint or config.home / "checkpoints" / "idealgpt.sqlite")
    return _run_and_report(
        config,
        settings,
        image=args.image,
        question=args.question,
        choices=args.choices,
        caption=args.caption,
        as_json=args.json,
        thread_id=args.thread,
        checkpoint=checkpoint,
    )


def _run_and_report(
    config: Config,
    settings: IdealGPTSettings,
    *,
    image: str | Path,
    question: str,
    choices: Sequence[str] | None = None,
    caption: str | None = None,
    as_json: bool = False,
    thread_id: str | None = None,
    checkpoint: Path | None = None,
    console: Console | None = None,
) -> int:
    """Run once, print the trace (or one JSON object), return the exit code (1 on error)."""
    from rich.console import Console

    from mmagents.images import default_store

    handle = default_store(config).put(image)
    saver = sqlite_checkpointer(checkpoint) if checkpoint is not None else None
    try:
        graph = build_idealgpt_graph(config, checkpointer=saver, settings=settings)
        fresh = initial_state(handle, question, choices, caption)
        inputs, done = (
            (fresh, None) if thread_id is None else _thread_status(graph, thread_id, fresh)
        )
        trace = None
        if not as_json:
            rounds_done = len((done or {}).get("rounds") or [])
            trace = _Trace(console or Console(), settings, rounds_done)
            trace.header(str(image), question, choices)
            if done is not None:
                trace.console.print(
                    f"[dim]thread {thread_id} already finished: its stored result[/]"
                )
        if done is None:
            done = run_idealgpt(graph, inputs, thread_id=thread_id, on_update=trace)
    finally:
        if saver is not None:
            saver.conn.close()
    result = result_of(done)
    if trace is None:
        print(json.dumps(result))
    else:
        trace.summary(result)
    return 1 if result.get("error") else 0


def _thread_status(
    graph: Any, thread_id: str, inputs: IdealGPTState
) -> tuple[IdealGPTState | None, Mapping[str, Any] | None]:
    """``(inputs, None)`` for a new thread, ``(None, None)`` to resume an interrupted one, and
    ``(None, final_state)`` for a thread that already finished this question.

    Raises:
        ConfigError: the thread holds a different image or question.
    """
    snapshot = graph.get_state({"configurable": {"thread_id": thread_id}})
    values = snapshot.values or {}
    if not values:
        return inputs, None
    same = all(values.get(k) == inputs.get(k) for k in ("image", "question", "choices"))
    if not same:
        raise ConfigError(
            f"thread {thread_id!r} holds another image or question; use a new --thread id"
        )
    return (None, None) if snapshot.next else (None, values)


#: The demo's question for each bundled photo.
DEMO_QUESTIONS = {
    "cat": "What animal is in this picture?",
    "astronaut": "What is the person wearing?",
    "coffee": "What drink is in the cup?",
    "rocket": "What vehicle is in this picture?",
    "camera": "What is the man holding?",
    "coins": "What objects are in this picture?",
}


def run_demo(config: Config | None = None, *, sample: str = "cat") -> int:
    """Run the graph on a bundled photo (default: the cat) and print the trace.

    Returns:
        The exit code: 0, or 1 when a model's output did not validate.
    """
    from mmagents._config import load_config
    from mmagents.samples import sample_path

    config = config or load_config()
    question = DEMO_QUESTIONS.get(sample, "What is in this picture?")
    settings = IdealGPTSettings.from_config(config)
    return _run_and_report(config, settings, image=sample_path(sample, config), question=question)


# -- evaluation ----------------------------------------------------------------------------------

_MODEL_OPTIONS = ("llm", "vlm")


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model injections (Python callers) and settings overrides; anything else is an error."""
    if options.get("model") is not None:
        raise ConfigError("the vqa runners take no --model: set the llm / vlm roles instead")
    models = {k: options[k] for k in _MODEL_OPTIONS if options.get(k) is not None}
    known = set(asdict(IdealGPTSettings()))
    unknown = sorted(set(options) - known - {*_MODEL_OPTIONS, "model"})
    if unknown:
        raise ConfigError(
            f"unknown vqa option(s) {unknown}; known: {sorted(known | set(_MODEL_OPTIONS))}"
        )
    return models, {k: v for k, v in options.items() if k in known}


def eval_vqa_sample(sample: dict[str, Any], config: Config, **options: Any) -> dict[str, Any]:
    """Harness runner of the ``vqa`` tasks: one question through the IdealGPT loop.

    Args:
        sample: ``image`` (path or handle), ``question``, optional ``choices`` and ``caption``.
        config: The run's configuration.
        **options: :class:`IdealGPTSettings` fields (``--set max_rounds=2``); ``llm`` / ``vlm``
            model objects from Python callers.

    Returns:
        ``prediction`` (``None`` when there is no answer), ``rounds``, ``llm_calls`` (questioner and
        reasoner calls, repairs included), ``vlm_calls``, ``confidence``, ``unknown`` (no answer)
        and ``invalid_output`` (a model's output did not validate after the repairs; the run then
        has no answer, which the reference counts as unknown too).
    """
    from mmagents.images import default_store

    models, overrides = _split_options(options)
    graph = build_idealgpt_graph(config, **models, **overrides)
    handle = default_store(config).put(sample["image"])
    state = run_idealgpt(
        graph,
        initial_state(handle, sample["question"], sample.get("choices"), sample.get("caption")),
    )
    answer = state.get("answer")
    return {
        "prediction": answer,
        "confidence": state.get("confidence"),
        "rounds": len(state.get("rounds") or []),
        "llm_calls": state.get("llm_calls", 0),
        "vlm_calls": state.get("vlm_calls", 0),
        "unknown": answer is None,
        "invalid_output": state.get("error") is not None,
    }


def eval_vqa_single_shot(sample: dict[str, Any], config: Config, **options: Any) -> dict[str, Any]:
    """Harness runner of the single-shot baseline: the answerer VLM alone, one call.

    With ``choices`` the question lists them and the reply is mapped onto one (``None`` when it
    names none). Options as :func:`eval_vqa_sample` (only ``vlm`` is used).

    Returns:
        ``prediction``, ``raw`` (the VLM's reply), ``rounds`` (0), ``llm_calls`` (0 planner calls),
        ``vlm_calls`` (1) and ``unknown``.
    """
    from mmagents.agents.reasoner import match_choice
    from mmagents.images import default_store
    from mmagents.models import load_role

    models, _ = _split_options(options)
    vlm = models.get("vlm") or load_role("vlm", config)
    image = default_store(config).resolve(sample["image"])
    choices = [str(c) for c in sample.get("choices") or []]
    question = sample["question"]
    if choices:
        question = f"{question} Choose one of: {'; '.join(choices)}."
    raw = _one_line(vlm.answer(image, question))
    prediction = match_choice(raw, choices) if choices else (raw or None)
    return {
        "prediction": prediction,
        "raw": raw,
        "rounds": 0,
        "llm_calls": 0,
        "vlm_calls": 1,
        "unknown": prediction is None,
    }
