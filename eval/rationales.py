"""Teacher rationales for a whole meme dataset, in the published format (``{id: rationale}``).

``mmagents run meme --data FILE --rationales-out OUT`` runs this: every meme of ``FILE`` goes
through the meme graph in teacher mode (``mode=rationale``: the ``llm`` role writes a rationale for
the gold label, never stating it), with the model calls routed through the harness's call cache.
The file is what ``mmagents finetune meme --rationales FILE`` trains from.

Resumable: each finished meme is appended to ``<out>.partial.jsonl`` at once, and memes already in
``out`` or in that file are skipped; at the end ``out`` is rewritten atomically with every
rationale so far (in dataset order) and the partial file is removed. A meme whose answer never
validates (or states the label in every sentence) is reported and retried on the next run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mmagents._config import Config
from mmagents.errors import RationaleLeakError, StructuredOutputError
from mmagents.eval.cache import CallCache, cache_wrap
from mmagents.eval.runner import default_cache_path
from mmagents.graphs import get_pipeline
from mmagents.memes import load_rationale_file, read_memes
from mmagents.runtime import Models

__all__ = ["write_rationales"]


def _done_ids(out: Path, partial: Path) -> dict[str, str]:
    done: dict[str, str] = {}
    if out.is_file():
        done.update(load_rationale_file(out))
    if partial.is_file():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that meme is redone
                continue
            done[str(record["id"])] = str(record["rationale"])
    return done


def write_rationales(
    data: str | Path,
    out: str | Path,
    config: Config,
    *,
    limit: int | None = None,
    use_cache: bool = True,
    cache_path: str | Path | None = None,
    progress: bool = True,
    backends: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the teacher rationale of every meme of ``data`` to ``out`` (``{id: rationale}``).

    Args:
        data: Meme JSONL (``id``, ``text``, ``caption``, optional ``label``).
        out: The rationale JSON file to write.
        config: The configuration (llm role, cache folder, ``[graphs.meme]``).
        limit: Only the first ``limit`` memes of ``data``.
        use_cache: Route LLM calls through the harness's SQLite call cache.
        cache_path: The cache file (default ``config.cache_dir / "calls.sqlite"``).
        progress: Show a progress bar (on a terminal).
        backends: Ready backends by role (tests, Python callers), e.g. ``{"llm": chat_model}``.

    Returns:
        ``written`` (this run), ``skipped`` (already done), ``failed`` (ids with their error),
        ``total`` (rationales in ``out``), ``leaks_rewritten`` / ``leaks_stripped`` and ``out``.

    Raises:
        DatasetError: an unreadable data or rationale file.
        ConfigError: an invalid ``[graphs.meme]`` section.
    """
    every = read_memes(data, require_label=False)
    memes = every[:limit]
    target = Path(out).expanduser()
    partial = target.with_name(target.name + ".partial.jsonl")
    done = _done_ids(target, partial)
    todo = [m for m in memes if m.id not in done]
    report: dict[str, Any] = {"written": 0, "skipped": len(memes) - len(todo), "failed": {}}
    report.update(leaks_rewritten=0, leaks_stripped=0)
    pipeline = get_pipeline("meme")
    settings = pipeline.settings_for(config, {"mode": "rationale"})
    store = CallCache(cache_path or default_cache_path(config)) if use_cache else None
    try:
        models = Models(config, wrap=cache_wrap(store) if store else None, **dict(backends or {}))
        graph = pipeline.build(config, models=models, settings=settings)
        target.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("a", encoding="utf-8") as sink:
            bar = tqdm(
                todo,
                desc="rationales",
                unit="meme",
                disable=not progress,
                file=sys.stderr,
                mininterval=0.5 if sys.stderr.isatty() else 5.0,  # plain periodic lines in logs
            )
            for meme in bar:
                inputs = {"text": meme.text, "caption": meme.caption, "label": meme.label}
                try:
                    result = graph.invoke(pipeline.inputs(inputs), context=settings)
                except (StructuredOutputError, RationaleLeakError) as exc:
                    report["failed"][meme.id] = f"{type(exc).__name__}: {exc}"
                    continue
                done[meme.id] = result["rationale"]
                sink.write(json.dumps({"id": meme.id, "rationale": result["rationale"]}) + "\n")
                sink.flush()
                report["written"] += 1
                report["leaks_rewritten"] += int(result.get("leak_rewritten", False))
                report["leaks_stripped"] += int(result.get("leak_stripped", False))
    finally:
        if store is not None:
            store.close()
    order = {m.id: i for i, m in enumerate(every)}
    ordered = dict(sorted(done.items(), key=lambda kv: order.get(kv[0], len(order))))
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(ordered, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(target)
    partial.unlink(missing_ok=True)
    report.update(total=len(ordered), out=str(target))
    return report
