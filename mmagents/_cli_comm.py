"""``mmagents run comm`` and ``mmagents run comm-filter``: loading, saving and showing documents.

The graphs (:mod:`mmagents.graphs.comm`, :mod:`mmagents.graphs.comm_filter`) know nothing of
files or terminals; this CLI-layer module turns ``--doc FILE`` into their ``topic`` + ``steps``
input, saves a generated document into ``--out DIR`` (JSON, Markdown, self-contained HTML) and
prints the summaries. (It becomes ``mmagents/cli/comm.py``'s presenter once the generic
``mmagents run NAME`` lands; the argument blocks below go then.)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.progress import Progress
from tqdm import tqdm

from mmagents.cli import config_from_args
from mmagents.errors import ConfigError
from mmagents.graphs import get_pipeline
from mmagents.graphs._comm_doc import InterleavedDocument, SavedDocument, load_document
from mmagents.graphs._run import run_graph
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs.comm import CommSettings, build_comm_graph
from mmagents.graphs.comm_filter import CommFilterSettings, build_comm_filter_graph
from mmagents.images import ImageStore
from mmagents.runtime import Models

__all__ = [
    "document_inputs",
    "print_document",
    "print_filter_result",
    "register_comm",
    "register_comm_filter",
]


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


def _files(saved: SavedDocument) -> dict[str, str]:
    return {"json": str(saved.json), "markdown": str(saved.markdown), "html": str(saved.html)}


def print_document(doc: InterleavedDocument, saved: SavedDocument) -> None:
    """One line per step (provenance and scores), the retrieval notice, the files written."""
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


def print_filter_result(result: Mapping[str, Any]) -> None:
    """The decision, the three scores and the reasons for a drop."""
    print(f"{result['doc']}: {result['decision'].upper()}")
    print(f"  text coherence (LLM judge)        {_fmt(result['text_coherence'])}")
    print(f"  image-text alignment (scorer)     {_fmt(result['image_text_alignment'])}")
    print(f"  image-sequence consistency        {_fmt(result['image_sequence_consistency'])}")
    for reason in result["reasons"]:
        print(f"  - {reason}")


# -- argument blocks (until the generic `mmagents run NAME`) -------------------------------------


def register_comm(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
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
    parser.set_defaults(func=_run_comm)


def _run_comm(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    models = Models(config)
    overrides = {
        "candidates": args.candidates,
        "max_retries": args.max_retries,
        "min_alignment": args.min_alignment,
        "min_consistency": args.min_consistency,
    }
    settings = resolve_settings(CommSettings, config, overrides)
    given = document_inputs(args.doc, models.store) if args.doc else {"steps": []}
    if not args.topic and not given["steps"]:
        raise ConfigError("give --topic or --doc")
    fields = {"topic": args.topic or given.get("topic", ""), "total_steps": args.steps}
    inputs = get_pipeline("comm").inputs({**fields, "steps": given["steps"]})
    graph = build_comm_graph(models=models, settings=settings)
    with Progress(transient=True) as progress:
        task = progress.add_task("planning steps", total=None)
        out = run_graph(graph, inputs, context=settings, on_update=_progress(progress, task))
    doc = InterleavedDocument.from_output(out)
    saved = doc.save(args.out, models.store)
    if args.json:
        print(json.dumps({**doc.to_dict(), "files": _files(saved)}, indent=2, ensure_ascii=False))
    else:
        print_document(doc, saved)
    return 0


def _progress(progress: Progress, task: Any) -> Callable[[str, Mapping[str, Any]], None]:
    total = 0

    def on_update(node: str, update: Mapping[str, Any]) -> None:
        nonlocal total
        if node == "plan":
            total = len(update["steps"])
        if node in ("plan", "accept"):
            done = update["cursor"]
            progress.update(task, description="illustrating steps", completed=done, total=total)

    return on_update


def register_comm_filter(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents run comm-filter --doc FILE [FILE ...] [--json] [--min-coherence X ...]``."""
    parser.add_argument(
        "--doc", required=True, nargs="+", metavar="FILE", help="document(s): .json or .md"
    )
    parser.add_argument("--min-coherence", type=float, help="text-coherence threshold (0-1)")
    parser.add_argument("--min-alignment", type=float, help="image-text alignment threshold")
    parser.add_argument("--min-consistency", type=float, help="image-sequence threshold")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per document)")
    parser.set_defaults(func=_run_comm_filter)


def _run_comm_filter(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    models = Models(config)
    overrides = {
        "min_coherence": args.min_coherence,
        "min_alignment": args.min_alignment,
        "min_consistency": args.min_consistency,
    }
    settings = resolve_settings(CommFilterSettings, config, overrides)
    graph = build_comm_filter_graph(models=models, settings=settings)
    many = len(args.doc) > 1
    for path in tqdm(args.doc, desc="scoring", disable=not many, unit="doc"):
        inputs = get_pipeline("comm-filter").inputs(document_inputs(path, models.store))
        out = graph.invoke(inputs, context=settings)
        result = {"doc": str(path), **out}
        if args.json:
            print(json.dumps(result, indent=None if many else 2, ensure_ascii=False))
        else:
            print_filter_result(result)
    return 0
