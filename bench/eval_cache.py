"""Bench: a cached re-run of an eval task versus its first run (goal: >= 50x faster, 0 model calls).

Runs task ``meme-harmful-zero-shot`` twice over the same samples into two folders that share one
model-call cache, and prints the wall-time ratio and the model calls made by the re-run.

By default the llm is ``SleepyChat`` (bench/_sleepy.py: a stand-in that sleeps ``--latency`` seconds
per call, like a remote model) over synthetic memes; ``--real`` uses the configured llm (offline
profile: SmolLM2-135M via llama.cpp) and ``--data`` a real JSONL file. Runs offline.

    python bench/eval_cache.py [--samples 40] [--latency 0.25] [--real --data val.jsonl --limit 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _sleepy import CALLS, sleepy_config, write_memes

from mmagents import load_config
from mmagents.eval import run_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="synthetic memes (sleepy mode)")
    parser.add_argument("--latency", type=float, default=0.25, help="seconds per sleepy llm call")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--real", action="store_true", help="use the configured llm instead")
    parser.add_argument("--data", help="JSONL with text, caption, label (default: synthetic)")
    parser.add_argument("--limit", type=int, help="first N samples of --data")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mmagents-bench-") as tmp:
        root = Path(tmp)
        if args.real:
            config = load_config(environ={"MMAGENTS_HOME": str(root / "home")})
            model = (
                f"configured llm: {config.role('llm').backend} {dict(config.role('llm').options)}"
            )
        else:
            config = sleepy_config(root / "home", args.latency)
            model = f"SleepyChat (bench/_sleepy.py), {args.latency:.3f} s per call"
        data = Path(args.data) if args.data else write_memes(root / "memes.jsonl", args.samples)
        common = {
            "data": data,
            "limit": args.limit,
            "concurrency": args.concurrency,
            "progress": False,
        }
        first = run_task("meme-harmful-zero-shot", config, out=root / "first", **common)
        calls_before = CALLS.count
        second = run_task("meme-harmful-zero-shot", config, out=root / "second", **common)
        rerun_calls = (
            CALLS.count - calls_before if not args.real else second.info["cache"]["misses"]
        )
    t1, t2 = first.info["wall_time_s"], second.info["wall_time_s"]
    ratio = t1 / max(t2, 1e-9)
    print(f"model: {model}")
    print(f"task: meme-harmful-zero-shot, {first.n} samples, concurrency {args.concurrency}")
    print(
        f"first run:  {t1:8.3f} s   cache hits {first.info['cache']['hits']}, misses {first.info['cache']['misses']}"
    )
    print(
        f"re-run:     {t2:8.3f} s   cache hits {second.info['cache']['hits']}, misses {second.info['cache']['misses']}"
    )
    print(f"model calls on re-run: {rerun_calls}")
    print(
        f"speed-up (first / re-run): {ratio:.1f}x   goal >= 50x, 0 calls: "
        f"{'met' if ratio >= 50 and rerun_calls == 0 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
