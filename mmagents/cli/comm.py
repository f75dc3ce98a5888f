"""``comm`` and ``comm-filter`` on the terminal: documents in and out of files, and summaries.

The graphs (:mod:`mmagents.graphs.comm`, :mod:`mmagents.graphs.comm_filter`) take a document as
``topic`` + ``steps`` with images as handles and know nothing of files. Their presenters add::

    mmagents run comm --topic "How to brew pour-over coffee" --total-steps 4 --out doc/
    mmagents run comm --doc doc/document.json --total-steps 6 --out more/    # continue a document
    mmagents run comm-filter --doc doc/document.md [--json]

``--doc FILE`` loads a saved document (``.json`` or ``.md``; its images are stored) as the input;
``--out DIR`` saves the generated document as JSON, Markdown and one self-contained HTML page.
``--json`` prints the run's output instead (images as handles in the image store), so it does
not go with ``--out``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from mmagents.cli.run import Presenter, relax_required
from mmagents.errors import ConfigError
from mmagents.graphs._comm_doc import InterleavedDocument, SavedDocument, load_document
from mmagents.graphs._run import Update
from mmagents.graphs._settings import PipelineSettings
from mmagents.images import ImageStore
from mmagents.runtime import Models

__all__ = ["CommFilterPresenter", "CommPresenter", "document_inputs"]


def document_inputs(path: str | Path, store: ImageStore) -> dict[str, Any]:
    """A saved document (``.json`` or ``.md``) as a pipeline's ``topic`` + ``steps`` input.

    Raises:
        ConfigError: unreadable or malformed document.
        ImageError: an image of the document cannot be loaded.
    """
    doc = load_document(path, store)
    return {"topic": doc.topic, "steps": [s.model_dump() for s in doc.steps]}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print(console: Console, lines: list[str]) -> None:
    for line in lines:  # document text is shown as written: no rich markup, no highlighting
        console.print(line, markup=False, highlight=False)


class CommPresenter(Presenter):
    """``--doc`` (a partial document to continue), ``--out`` (where to save), a step trace."""

    def __init__(self) -> None:
        self.out: Path | None = None
        self.store: ImageStore | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--doc", metavar="FILE", help="partial document (.json or .md) to continue"
        )
        parser.add_argument(
            "--out", metavar="DIR", help="save document.json, .md and .html (with images) here"
        )

    def prepare(
        self, args: argparse.Namespace, values: dict[str, Any], models: Models
    ) -> dict[str, Any]:
        if args.out and args.json:
            raise ConfigError(
                "--json prints the run's output (images as handles); save files with --out alone"
            )
        if args.doc:
            given = document_inputs(args.doc, models.store)
            values = {
                **values,
                "steps": given["steps"],
                "topic": values.get("topic") or given["topic"],
            }
        if not values.get("topic") and not values.get("steps"):
            raise ConfigError("give --topic or --doc")
        self.out = Path(args.out) if args.out else None
        self.store = models.store
        return values

    def trace(
        self,
        console: Console,
        settings: PipelineSettings,
        given: Mapping[str, Any],
        finished: Mapping[str, Any] | None,
    ) -> Update | None:
        total = 0

        def on_update(node: str, update: Mapping[str, Any]) -> None:
            nonlocal total
            if node == "plan":
                total = len(update["steps"])
                console.print(f"[dim]planned {total} steps; illustrating[/]")
            elif node == "accept":
                step = update["steps"][update["cursor"] - 1]
                console.print(
                    f"[dim]step {update['cursor']}/{total} {escape(step['title'])}: "
                    f"{step['provenance']}, {step['attempts']} attempt(s)[/]"
                )

        return on_update

    def finish(self, console: Console, output: Mapping[str, Any]) -> None:
        doc = InterleavedDocument.from_output(output)
        lines = [f"{doc.topic}: {len(doc.steps)} steps"]
        for i, step in enumerate(doc.steps, start=1):
            scores = step.scores
            mark = "" if step.passed is not False else "  (below threshold)"
            lines.append(
                f"  {i}. {step.title}  [{step.provenance}; alignment "
                f"{_fmt(scores.get('alignment'))}, consistency "
                f"{_fmt(scores.get('consistency'))}]{mark}"
            )
        if any(s.provenance == "retrieved" for s in doc.steps):
            lines.append("note: images were retrieved from a local folder, not generated")
        if self.out is None or self.store is None:
            lines.append("not saved (give --out DIR to write the files)")
        else:
            saved = doc.save(self.out, self.store)
            lines += [f"{kind}: {path}" for kind, path in _files(saved).items()]
        _print(console, lines)


def _files(saved: SavedDocument) -> dict[str, str]:
    return {"json": str(saved.json), "markdown": str(saved.markdown), "html": str(saved.html)}


class CommFilterPresenter(Presenter):
    """``--doc FILE`` (the document to score) and the decision with its three scores."""

    def __init__(self) -> None:
        self.label = "document"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--doc", metavar="FILE", help="the document to score: .json or .md")
        relax_required(parser, "steps")

    def prepare(
        self, args: argparse.Namespace, values: dict[str, Any], models: Models
    ) -> dict[str, Any]:
        if args.doc:
            given = document_inputs(args.doc, models.store)
            values = {
                **values,
                "steps": given["steps"],
                "topic": values.get("topic") or given["topic"],
            }
            self.label = str(args.doc)
        if not values.get("steps"):
            raise ConfigError("give --doc FILE (or --steps as JSON)")
        return values

    def finish(self, console: Console, output: Mapping[str, Any]) -> None:
        lines = [
            f"{self.label}: {str(output['decision']).upper()}",
            f"  text coherence (LLM judge)        {_fmt(output['text_coherence'])}",
            f"  image-text alignment (scorer)     {_fmt(output['image_text_alignment'])}",
            f"  image-sequence consistency        {_fmt(output['image_sequence_consistency'])}",
            *(f"  - {reason}" for reason in output["reasons"]),
        ]
        _print(console, lines)
