"""Bench: peak RSS of ``mmagents eval run`` with ``loader: hf`` at N and 10×N rows (goal: ≈ 1.0).

Builds a ``save_to_disk`` dataset with an ``Image`` column of random-noise PNGs (incompressible,
so the dataset's bytes grow with N), runs the real CLI in a fresh process over it (the task's runner
opens each stored image and reports its shape: no model, so what is measured is the harness and the
loader), and reads the child's peak resident set size from ``wait4``. The dataset is built in a
separate process first: a child forked from a parent that had just built it would inherit (and
count) the parent's pages until it execs. Runs offline.

    python bench/hf_rss.py [--rows 200] [--side 128] [--streaming true|false]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"  # the harness tests' tiny runners


def build(root: Path, rows: int, side: int) -> int:
    """A saved dataset of ``rows`` noise images; returns its size in bytes."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)

    def gen():  # a generator: the bench itself never holds the whole table either
        for i in range(rows):
            pixels = rng.integers(0, 256, (side, side + i % 2, 3), dtype=np.uint8)
            yield {"qid": i, "image": Image.fromarray(pixels), "label": "wide" if i % 2 else "tall"}

    features = datasets.Features(
        {
            "qid": datasets.Value("int64"),
            "image": datasets.Image(),
            "label": datasets.Value("string"),
        }
    )
    datasets.Dataset.from_generator(gen, features=features).save_to_disk(str(root))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def run(task: Path, data: Path, out: Path, home: Path) -> tuple[float, float, dict]:
    """Peak RSS (MiB) and wall time of one CLI run in a fresh child process."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "MMAGENTS_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "mmagents.cli", "eval", "run", str(task), "--data", str(data)]
    cmd += ["--out", str(out), "--no-progress", "--no-cache"]
    start = time.perf_counter()
    pid = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL).pid
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"eval run failed with status {status}")
    info = json.loads((out / "metrics.json").read_text())
    return usage.ru_maxrss / 1024, time.perf_counter() - start, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--streaming", default="true", choices=("true", "false"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = root / "shapes.yaml"
        task.write_text(
            "version: 1\nrunner: _eval_runners:image_shape\ntarget: label\nmetrics: [accuracy]\n"
            f"dataset: {{loader: hf, streaming: {args.streaming}, fields: {{id: qid}}}}\n"
        )
        rows = []
        for n in (args.rows, 10 * args.rows):
            maker = f"from hf_rss import build; build(__import__('pathlib').Path({str(root / f'data{n}')!r}), {n}, {args.side})"
            subprocess.run(
                [sys.executable, "-c", maker],
                check=True,
                cwd=Path(__file__).parent,
                capture_output=True,
            )
            size = sum(p.stat().st_size for p in (root / f"data{n}").rglob("*") if p.is_file())
            rss, wall, info = run(task, root / f"data{n}", root / f"run{n}", root / f"home{n}")
            rows.append((n, size, rss, wall, info))
            print(
                f"rows={n:6d} dataset={size / 2**20:7.1f} MiB peak_rss={rss:7.1f} MiB "
                f"wall={wall:6.1f}s accuracy={info['metrics']['accuracy']} n={info['n']}"
            )
        (_, small_size, small, _, _), (_, big_size, big, _, _) = rows
        print(f"dataset size ratio {big_size / small_size:.1f}x; peak RSS ratio {big / small:.3f}")
        print(
            f"(ru_maxrss of the child; streaming={args.streaming}; load {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
