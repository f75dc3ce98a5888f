"""``mmagents run NAME``: one sub-command per pipeline graph, each registered lazily.

To add a pipeline's command, add one line to :data:`RUNNERS`; its module provides
``register_cli(parser, argv)`` that adds the arguments and sets ``func``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mmagents._registry import import_string

__all__ = ["RUNNERS", "register"]

#: name → (one-line help, lazy "module:register").
RUNNERS: dict[str, tuple[str, str]] = {
    "idealgpt": (
        "IdealGPT: sub-question loop for visual QA",
        "mmagents.graphs.idealgpt:register_cli",
    ),
    "meme": (
        "harmful-meme rationale / student classification",
        "mmagents.graphs.meme:register_cli",
    ),
    "describe": ("classification by description", "mmagents.graphs.describe:register_cli"),
    "recode": ("RECODE relation ranking with visual cues", "mmagents.graphs.recode:register_cli"),
    "comm": ("CoMM interleaved image-text generation", "mmagents._cli_comm:register_comm"),
    "comm-filter": (
        "CoMM interleaved document scoring and filtering",
        "mmagents._cli_comm:register_comm_filter",
    ),
}


def register(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Add ``run`` sub-commands, importing only the selected pipeline's module."""
    sub = parser.add_subparsers(dest="pipeline", metavar="PIPELINE")
    selected = next((a for a in argv if a in RUNNERS), None)
    for name, (help_text, target) in RUNNERS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            import_string(target)(command, argv)  # type: ignore[operator]
