"""How ``mmagents run describe`` looks: ``--descriptors FILE`` and the ranking as a short table.

``--json`` prints the generic output object instead (one JSON object, whatever the pipeline).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Console

from mmagents.cli.run import Presenter
from mmagents.graphs.describe import load_descriptor_file
from mmagents.runtime import Models

__all__ = ["DescribePresenter"]


class DescribePresenter(Presenter):
    """``--descriptors FILE`` (a published descriptor JSON) and the closing ranking."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--descriptors",
            metavar="FILE",
            help="descriptor JSON {class: [descriptor, ...]} (same as --set descriptors=FILE)",
        )

    def prepare(
        self, args: argparse.Namespace, values: dict[str, Any], models: Models
    ) -> dict[str, Any]:
        if args.descriptors and "descriptor_table" not in values:
            values["descriptor_table"] = load_descriptor_file(args.descriptors)
        return values

    def finish(self, console: Console, output: Mapping[str, Any]) -> None:
        console.print(
            f"prediction: [bold]{output.get('prediction')}[/]  "
            f"(plain class names: {output.get('prediction_baseline')})"
        )
        for entry in output.get("scores") or []:
            console.print(f"  {entry['score']:9.3f}  {entry['class']}", highlight=False)
        console.print("because it shows:")
        for entry in output.get("explanation") or []:
            console.print(f"  {entry['score']:9.3f}  {entry['descriptor']}", highlight=False)
