"""Bench: eval runner overhead = run wall time / time spent inside model calls (goal <= 1.03).

The llm is ``SleepyChat`` (bench/_sleepy.py), a stand-in that sleeps a fixed time per call, over
synthetic memes, at concurrency 1, with the model-call cache on (a fresh file: every call a miss,
as in a first run). Two runners are timed:

* ``bench-one-call``: one llm call per sample and nothing else, so the ratio measures the harness
  (task and data loading, thread pool, cache lookups and writes, fsync of every record, metrics);
* ``meme-harmful-zero-shot``: the real baseline, adding prompt rendering and structured-output
  parsing (the runner's own work, shown for reference).

The wall time runs from task loading to metrics.json; model time is the summed duration of the
model calls (as measured inside SleepyChat). A ratio of 1.0 would be zero overhead. Runs offline.

    python bench/eval_overhead.py [--samples 40] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _sleepy import CALLS, sleepy_config, thin_task, write_memes

from mmagents import Config
from mmagents.eval import run_task


def measure(
    task: str | Path, config: Config, data: Path, out: Path
) -> tuple[float, float, int, int]:
    """Wall time, model time, model calls and samples of one run."""
    before_count, before_time = CALLS.count, CALLS.seconds
    summary = run_task(task, config, data=data, out=out, progress=False)
    return (
        summary.info["wall_time_s"],
        CALLS.seconds - before_time,
        CALLS.count - before_count,
        summary.n,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per llm call")
    args = parser.parse_args()

    print(
        f"model: SleepyChat (bench/_sleepy.py), {args.latency:.3f} s per call; concurrency 1; "
        "cache on (fresh file: every call a miss)"
    )
    with tempfile.TemporaryDirectory(prefix="mmagents-bench-") as tmp:
        root = Path(tmp)
        config = sleepy_config(root / "home", args.latency)
        data = write_memes(root / "memes.jsonl", args.samples)
        # Warm the imports a first sample triggers (prompt files, jinja, pydantic schemas): any long
        # run amortises them. Warm-up calls are not counted.
        run_task(
            "meme-harmful-zero-shot",
            config,
            data=data,
            limit=1,
            out=root / "warm",
            use_cache=False,
            progress=False,
        )
        runs: list[tuple[str, str | Path]] = [
            ("bench-one-call (harness)", thin_task(root)),
            ("meme-harmful-zero-shot (harness + runner)", "meme-harmful-zero-shot"),
        ]
        for name, task in runs:
            wall, model, calls, n = measure(task, config, data, root / name.split()[0])
            ratio = wall / model
            print(
                f"{name}: {n} samples, {calls} model calls, wall {wall:.3f} s, "
                f"model time {model:.3f} s, overhead {(wall - model) / max(calls, 1) * 1000:.2f} ms/call"
            )
            verdict = "met" if ratio <= 1.03 else "NOT met"
            print(f"  overhead ratio (wall / model time): {ratio:.4f}   goal <= 1.03: {verdict}")


if __name__ == "__main__":
    main()
