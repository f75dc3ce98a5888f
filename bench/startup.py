"""Start-up cost: ``import mmagents`` and the ``mmagents`` CLI (goal: each <= 0.5 s).

Run: ``.venv/bin/python bench/startup.py [--runs 7]``. Prints medians over fresh interpreter
processes, the bare interpreter start for reference, and the ratio of each to the 0.5 s goal.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

GOAL_S = 0.5


def _median_wall(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    cli = shutil.which("mmagents") or f"{sys.prefix}/bin/mmagents"
    rows = {
        "python -c pass (reference)": [sys.executable, "-c", "pass"],
        "import mmagents": [sys.executable, "-c", "import mmagents"],
        "mmagents --help": [cli, "--help"],
        "mmagents models list": [cli, "models", "list"],
    }
    print(f"{'what':32} {'median s':>9} {'/ goal':>7}")
    for name, command in rows.items():
        seconds = _median_wall(command, runs)
        print(f"{name:32} {seconds:9.3f} {seconds / GOAL_S:7.2f}")


if __name__ == "__main__":
    main()
