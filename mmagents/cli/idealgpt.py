"""IdealGPT on the terminal: the live trace of the loop, its summary, and ``mmagents demo``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape

from mmagents._config import Config, load_config
from mmagents.cli.run import Presenter, execute
from mmagents.graphs._run import Update
from mmagents.graphs._settings import PipelineSettings
from mmagents.samples import sample_path

__all__ = ["DEMO_QUESTIONS", "IdealGPTPresenter", "IdealGPTTrace", "run_demo"]


class IdealGPTTrace:
    """Prints each node's update as it arrives, as a readable trace of the loop."""

    def __init__(self, console: Console, settings: Any, rounds_done: int = 0) -> None:
        self.console = console
        self.settings = settings
        self.round = rounds_done
        self.started = time.perf_counter()

    def _elapsed(self) -> str:
        return f"[dim]{time.perf_counter() - self.started:6.1f}s[/]"

    def header(self, image: str, question: str, choices: list[str] | None) -> None:
        s = self.settings
        self.console.rule("IdealGPT")
        self.console.print(f"[bold]Question[/] {escape(question)}")
        self.console.print(f"[bold]Image[/] {escape(image)}")
        if choices:
            self.console.print("[bold]Choices[/] " + " | ".join(escape(c) for c in choices))
        self.console.print(
            f"[dim]max {s.max_rounds} rounds · {s.sub_questions} sub-questions per round · "
            f"stop at confidence >= {s.confidence_threshold}[/]"
        )

    def __call__(self, node: str, update: Mapping[str, Any]) -> None:
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
            f"[bold]Answer[/] {answer}   confidence {shown} · {len(result['rounds'] or [])} round(s) · "
            f"{result['llm_calls'] or 0} LLM call(s) · {result['vlm_calls'] or 0} VLM call(s) · "
            f"{time.perf_counter() - self.started:.1f}s"
        )


class IdealGPTPresenter(Presenter):
    """The trace of ``mmagents run idealgpt`` (listed in :data:`mmagents.cli.run.PRESENTERS`;
    ``--json`` output is the generic one)."""

    def __init__(self) -> None:
        self._trace: IdealGPTTrace | None = None

    def trace(
        self,
        console: Console,
        settings: PipelineSettings,
        given: Mapping[str, Any],
        finished: Mapping[str, Any] | None,
    ) -> Update | None:
        rounds_done = len((finished or {}).get("rounds") or [])
        self._trace = IdealGPTTrace(console, settings, rounds_done)
        self._trace.header(
            str(given.get("image")), str(given.get("question")), given.get("choices")
        )
        if finished is not None:
            console.print("[dim]this thread already finished: its stored result[/]")
        return self._trace

    def finish(self, console: Console, output: Mapping[str, Any]) -> None:
        trace = self._trace or IdealGPTTrace(console, None)
        trace.summary(output)


#: The demo's question for each bundled photo.
DEMO_QUESTIONS = {
    "cat": "What animal is in this picture?",
    "astronaut": "What is the person wearing?",
    "coffee": "What drink is in the cup?",
    "rocket": "What vehicle is in this picture?",
    "camera": "What is the man holding?",
    "coins": "What objects are in this picture?",
}


def run_demo(
    config: Config | None = None, *, sample: str = "cat", console: Console | None = None
) -> int:
    """Run the IdealGPT graph on a bundled photo (default: the cat) and print the trace.

    Returns:
        The exit code: 0, or 1 when a model's output did not validate.
    """
    config = config or load_config()
    question = DEMO_QUESTIONS.get(sample, "What is in this picture?")
    image = sample_path(sample, config)
    return execute("idealgpt", config, {"image": image, "question": question}, console=console)
