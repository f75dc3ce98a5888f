"""``mmagents eval convert NAME SRC --out FILE``: the converter table on the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_convert_parser"]


def add_convert_parser(sub: Any) -> None:
    """Add the ``convert`` sub-command to the ``eval`` sub-parsers ``sub``."""
    from mmagents.eval.convert import CONVERTERS

    parser = sub.add_parser(
        "convert",
        help="convert a paper's distributed dataset to task JSONL",
        description="Convert a dataset in its distributed format to task JSONL. Converters: "
        + ", ".join(sorted(CONVERTERS)),
    )
    parser.add_argument("name", metavar="NAME", help="converter: " + ", ".join(sorted(CONVERTERS)))
    parser.add_argument("src", metavar="SRC", help="the distributed files (folder or file)")
    parser.add_argument("--out", required=True, metavar="FILE", help="task JSONL to write")
    parser.add_argument("--split", metavar="S", help="split to convert (converter's default)")
    parser.add_argument("--dataset", metavar="D", help="dataset inside a release (e.g. harmc)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="converter option (e.g. images=DIR, descriptors=FILE); repeatable",
    )
    parser.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from mmagents.errors import ConfigError
    from mmagents.eval.convert import convert

    options: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    result = convert(
        args.name, args.src, args.out, split=args.split, dataset=args.dataset, **options
    )
    print(f"wrote {len(result.records)} records to {args.out}")
    print(json.dumps(result.notes, indent=2, default=str))
    return 0
