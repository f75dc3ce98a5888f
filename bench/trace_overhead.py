"""Bench: what tracing costs per role call, off and on (microseconds; compare to a model call).

A role call through the traced proxy with no handler anywhere (tracing off), inside a LangGraph-like
parent run without handlers, and with a JSONL span file active (``--trace``), against the bare
backend (``FakeVLM``, itself ~100 µs). Runs offline.

    python bench/trace_overhead.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from pathlib import Path

from langchain_core.runnables import RunnableLambda
from PIL import Image

from mmagents.models.fake import FakeVLM
from mmagents.tracing import traced, tracing_to


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    n = parser.parse_args().calls
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    bare = FakeVLM()
    proxy = traced("vlm", "fake", bare)

    def per_call(fn) -> float:
        return 1e6 * min(timeit.repeat(fn, number=n, repeat=3)) / n

    direct = per_call(lambda: bare.caption(image))
    off = per_call(lambda: proxy.caption(image))
    in_run = per_call(
        lambda: RunnableLambda(lambda _: proxy.caption(image)).invoke(None)
    ) - per_call(lambda: RunnableLambda(lambda _: bare.caption(image)).invoke(None))
    with tempfile.TemporaryDirectory() as tmp, tracing_to(Path(tmp) / "t.jsonl"):
        on = per_call(lambda: proxy.caption(image))
    print(f"bare backend call           {direct:8.1f} us")
    print(f"traced, tracing off         {off:8.1f} us  (+{off - direct:.1f} us)")
    print(f"traced, inside a run, off   {'':8s}     (+{in_run:.1f} us)")
    print(f"traced, --trace file on     {on:8.1f} us  (+{on - direct:.1f} us)")


if __name__ == "__main__":
    main()
