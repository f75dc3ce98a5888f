"""``mmagents trace show FILE``: the span tree of a ``--trace`` file, in the terminal or as HTML.

::

    mmagents run idealgpt --image cat.png --question "What is it?" --trace t.jsonl
    mmagents trace show t.jsonl                 # tree: name, duration, tokens, cache hits
    mmagents trace show t.jsonl --html t.html   # a self-contained timeline page
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmagents.errors import DatasetError

__all__ = ["Span", "load_spans", "register", "render_html", "render_tree"]


@dataclass
class Span:
    """One span of a trace file, with its children (sorted by start)."""

    name: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    status: str
    attributes: dict[str, Any]
    children: list[Span] = field(default_factory=list)

    @property
    def ms(self) -> float:
        """Duration in milliseconds."""
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def kind(self) -> str:
        """``role``, ``llm``, ``tool`` or ``chain``."""
        return str(self.attributes.get("mmagents.kind", "chain"))

    def tokens(self) -> tuple[int, int] | None:
        """(input, output) tokens of an llm span, when the backend reported them."""
        prompt = self.attributes.get("gen_ai.usage.input_tokens")
        completion = self.attributes.get("gen_ai.usage.output_tokens")
        if prompt is None and completion is None:
            return None
        return int(prompt or 0), int(completion or 0)

    def cache(self) -> str | None:
        """``hit`` / ``miss`` when the call went through the eval call cache."""
        value = self.attributes.get("mmagents.cache_hit")
        return None if value is None else ("hit" if value else "miss")


def load_spans(path: str | Path) -> list[Span]:
    """Read a trace file and return its root spans (children attached, sorted by start).

    Raises:
        DatasetError: a missing file or a line that is not a span record (naming the line).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(path, "trace file not found")
    spans: dict[str, Span] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                span = Span(
                    name=str(data["name"]),
                    span_id=str(data["span_id"]),
                    parent_id=data.get("parent_id"),
                    start_ns=int(data["start_ns"]),
                    end_ns=int(data["end_ns"]),
                    status=str(data.get("status", "UNSET")),
                    attributes=dict(data.get("attributes") or {}),
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DatasetError(path, f"not a span record: {exc}", line_no) from None
            spans[span.span_id] = span
    roots: list[Span] = []
    for span in spans.values():
        parent = spans.get(span.parent_id) if span.parent_id else None
        (parent.children if parent is not None else roots).append(span)
    for span in spans.values():
        span.children.sort(key=lambda s: s.start_ns)
    return sorted(roots, key=lambda s: s.start_ns)


def _walk(spans: Sequence[Span], depth: int = 0) -> list[tuple[int, Span]]:
    out: list[tuple[int, Span]] = []
    for span in spans:
        out.append((depth, span))
        out.extend(_walk(span.children, depth + 1))
    return out


def _preview(span: Span, limit: int = 60) -> str:
    raw = span.attributes.get("mmagents.outputs")
    if not raw or span.kind == "chain":
        return ""
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = raw
    if isinstance(value, dict) and "output" in value:
        value = value["output"]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _facts(span: Span) -> list[str]:
    facts = [f"{span.ms:.1f} ms"]
    if (tokens := span.tokens()) is not None:
        facts.append(f"tokens {tokens[0]}→{tokens[1]}")
    if (cache := span.cache()) is not None:
        facts.append(f"cache {cache}")
    if span.status == "ERROR":
        facts.append("ERROR")
    return facts


def render_tree(roots: Sequence[Span]) -> Any:
    """A ``rich`` renderable: the span tree, with durations, tokens, cache and output previews."""
    from rich.console import Group
    from rich.text import Text
    from rich.tree import Tree

    styles = {"role": "bold cyan", "llm": "bold magenta", "tool": "bold green", "chain": "bold"}

    def label(span: Span) -> Text:
        text = Text(span.name, style=styles.get(span.kind, "bold"))
        text.append("  " + " · ".join(_facts(span)), style="dim")
        if preview := _preview(span):
            text.append(f"  {preview}", style="italic")
        return text

    def add(tree: Tree, span: Span) -> None:
        branch = tree.add(label(span))
        for child in span.children:
            add(branch, child)

    trees = []
    for root in roots:
        tree = Tree(label(root))
        for child in root.children:
            add(tree, child)
        trees.append(tree)
    flat = [s for _, s in _walk(roots)]
    counts = {k: sum(1 for s in flat if s.kind == k) for k in ("role", "llm", "tool")}
    tokens = [t for s in flat if (t := s.tokens()) is not None]
    hits = sum(1 for s in flat if s.cache() == "hit")
    summary = Text(
        f"{len(flat)} spans: {counts['role']} role calls, {counts['llm']} llm calls, "
        f"{counts['tool']} tool calls; tokens {sum(t[0] for t in tokens)}→"
        f"{sum(t[1] for t in tokens)}; cache hits {hits}",
        style="dim",
    )
    return Group(*trees, summary)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.2em; }}
.row {{ display: grid; grid-template-columns: 34em 1fr; align-items: center; border-bottom: 1px solid #eee; }}
.label {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; padding: 2px 0; }}
.track {{ position: relative; height: 14px; }}
.bar {{ position: absolute; top: 1px; height: 12px; min-width: 2px; border-radius: 2px; }}
.chain .bar {{ background: #9aa5b1; }} .role .bar {{ background: #1f9bd1; }}
.llm .bar {{ background: #b34fc8; }} .tool .bar {{ background: #3aa655; }}
.error .bar {{ background: #d33; }}
.facts {{ color: #777; margin-left: .6em; }}
details {{ margin: 0; }} summary {{ cursor: pointer; list-style: none; }}
pre {{ white-space: pre-wrap; background: #f6f6f6; padding: .4em; margin: .2em 0 .4em; }}
</style></head><body>
<h1>{title}</h1>
<p class="facts">{summary}</p>
<div id="timeline">
{rows}
</div>
</body></html>
"""


def render_html(roots: Sequence[Span], title: str = "mmagents trace") -> str:
    """A self-contained HTML page: one row per span, a bar placed on the run's time axis, and
    the span's attributes (inputs, outputs) folded under its name. No scripts, no external files."""
    flat = _walk(roots)
    if not flat:
        return _PAGE.format(title=html.escape(title), summary="no spans", rows="")
    t0 = min(s.start_ns for _, s in flat)
    total = max(max(s.end_ns for _, s in flat) - t0, 1)
    rows = []
    for depth, span in flat:
        left = 100 * (span.start_ns - t0) / total
        width = 100 * (span.end_ns - span.start_ns) / total
        classes = f"row {span.kind}" + (" error" if span.status == "ERROR" else "")
        details = html.escape(json.dumps(span.attributes, indent=1, ensure_ascii=False))
        rows.append(
            f'<div class="{classes}" data-name="{html.escape(span.name)}" '
            f'data-ms="{span.ms:.3f}">'
            f'<div class="label" style="padding-left:{depth * 1.2:.1f}em"><details><summary>'
            f"{html.escape(span.name)}<span class='facts'>{html.escape(' · '.join(_facts(span)))}"
            f"</span></summary><pre>{details}</pre></details></div>"
            f'<div class="track"><div class="bar" style="left:{left:.3f}%;width:{width:.3f}%" '
            f'title="{html.escape(span.name)} {span.ms:.1f} ms"></div></div></div>'
        )
    summary = f"{len(flat)} spans over {total / 1e6:.1f} ms"
    return _PAGE.format(title=html.escape(title), summary=summary, rows="\n".join(rows))


def register(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Add ``trace show``."""
    sub = parser.add_subparsers(dest="trace_command", metavar="SUBCOMMAND")
    show = sub.add_parser("show", help="render a --trace file: span tree, timings, tokens, cache")
    show.add_argument("file", metavar="FILE", help="the JSONL file written by --trace")
    show.add_argument("--html", metavar="OUT", help="also write a self-contained HTML timeline")
    show.set_defaults(func=_cmd_show)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    roots = load_spans(args.file)
    console = Console()
    console.print(render_tree(roots))
    if args.html:
        out = Path(args.html).expanduser()
        out.write_text(render_html(roots, title=f"mmagents trace: {Path(args.file).name}"))
        console.print(f"timeline: {out}")
    return 0
