"""How ``mmagents run recode`` looks: each predicate's score and evidence, then the filtered ones.

``--json`` prints the generic output object instead (one JSON object, whatever the pipeline).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console

from mmagents.cli.run import Presenter

__all__ = ["RecodePresenter"]


class RecodePresenter(Presenter):
    """The ranking with its per-kind evidence, one line per predicate."""

    def finish(self, console: Console, output: Mapping[str, Any]) -> None:
        subject = (output.get("subject") or {}).get("category")
        object_ = (output.get("object") or {}).get("category")
        console.print(
            f"{subject} ? {object_}   (spatial evidence: {output.get('spatial_mode')})",
            highlight=False,
        )
        for entry in output.get("ranking") or []:
            ev = entry["evidence"]
            console.print(
                f"  {entry['score']:9.3f}  {entry['predicate']:<16} "
                f"subject {ev['subject']['score']:.2f}  object {ev['object']['score']:.2f}  "
                f"spatial {ev['spatial']['score']:.2f}  triplet {ev['triplet']['score']:.2f}",
                highlight=False,
            )
        for entry in output.get("filtered") or []:
            console.print(
                f"  {'filtered':>9}  {entry['predicate']:<16} {entry['reason']}", highlight=False
            )
