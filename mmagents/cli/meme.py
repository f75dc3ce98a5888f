"""How ``mmagents run meme`` looks: ``--model DIR``, a batch mode, and a short summary.

::

    mmagents run meme --text "when the human forgets dinner" --caption "a cat" --model DIR
    mmagents run meme --image meme.png --label harmless          # the teacher's rationale
    mmagents run meme --data train.jsonl --rationales-out rationales.json   # batch, resumable

``--model DIR`` is ``--set model=DIR`` (a trained student folder). With ``--data FILE
--rationales-out FILE`` no single meme runs: every meme of the file gets its teacher rationale
(:func:`mmagents.eval.rationales.write_rationales`, through the model-call cache unless
``--no-cache``). ``--json`` prints one JSON object: the run's output, or the batch report.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console

from mmagents.cli import config_from_args
from mmagents.cli.run import Presenter
from mmagents.errors import ConfigError
from mmagents.eval.rationales import write_rationales

__all__ = ["MemePresenter", "batch_summary"]


class MemePresenter(Presenter):
    """``--model DIR``, the batch flags, and the closing text / caption / verdict / rationale."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--model",
            metavar="DIR",
            help="classify with a trained student folder (= --set model=DIR)",
        )
        batch = parser.add_argument_group("batch: a teacher rationale file for a dataset")
        batch.add_argument("--data", metavar="FILE", help="meme JSONL (id, text, caption, label)")
        batch.add_argument("--rationales-out", metavar="FILE", help="rationale JSON {id: text}")
        batch.add_argument("--limit", type=int, help="only the first N memes")
        batch.add_argument("--no-cache", action="store_true", help="bypass the model-call cache")

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"model": args.model} if args.model else {}

    def run_instead(self, args: argparse.Namespace) -> int | None:
        if not (args.data or args.rationales_out):
            return None
        if not (args.data and args.rationales_out):
            raise ConfigError("batch mode needs both --data FILE and --rationales-out FILE")
        report = write_rationales(
            args.data,
            args.rationales_out,
            config_from_args(args),
            limit=args.limit,
            use_cache=not args.no_cache,
        )
        print(json.dumps(report, indent=2) if args.json else batch_summary(report))
        return 1 if report["failed"] else 0

    def finish(self, console: Console, output: Mapping[str, Any]) -> None:
        console.print(f"text: {output.get('text', '')!r}", highlight=False)
        console.print(f"caption: {output.get('caption', '')!r}", highlight=False)
        if output.get("prediction") is not None:
            console.print(
                f"prediction: [bold]{output['prediction']}[/] "
                f"(probability {output['probability']:.3f})"
            )
        if output.get("rationale"):
            console.print(
                f"rationale ({output.get('rationale_source')}): {output['rationale']}",
                highlight=False,
            )


def batch_summary(report: Mapping[str, Any]) -> str:
    """The batch report in a few lines (written, skipped, label leaks, failures)."""
    lines = [
        f"wrote {report['written']} rationales, skipped {report['skipped']} already done; "
        f"{report['total']} in {report['out']}",
        f"label leaks: {report['leaks_rewritten']} rewritten, {report['leaks_stripped']} cut",
    ]
    lines += [f"failed {meme_id}: {error}" for meme_id, error in report["failed"].items()]
    return "\n".join(lines)
