"""CPU sharing: OpenMP's wait policy and how many cores are actually free.

llama.cpp (and torch) run their parallel loops on OpenMP threads that, by default, spin-wait between
loops. Beside any other busy process on a small machine a spinning thread steals the core the
straggler needs, and generation falls ~25x (0.4 vs 11 tokens/s measured on 2 cores). A passive
policy makes idle threads sleep. OpenMP reads the policy once, when ``libgomp`` loads, and torch and
llama.cpp share that library (both link ``libgomp.so.1``): so the policy is set when ``mmagents`` is
imported, before either can load, unless the user chose one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["CpuMeter", "prefer_passive_waits", "usable_cores"]


def prefer_passive_waits() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already names a policy.

    Returns:
        Whether the policy was set here (False: the user's own setting is kept).
    """
    if os.environ.get("OMP_WAIT_POLICY"):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    ticks = [int(f) for f in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuMeter:
    """Measures how many cores *other* processes keep busy, between two calls of :meth:`free`.

    Our own threads' work is subtracted, so a model that just ran on every core does not count
    itself as load. The first call (or one after ``min_interval`` has not yet passed) measures over
    a short ``probe`` sleep instead.
    """

    probe: float = 0.2
    min_interval: float = 0.5
    _last: tuple[float, float, float] | None = None
    _free: int | None = None

    def _sample(self) -> tuple[float, float, float] | None:
        busy = _busy_seconds()
        return None if busy is None else (time.monotonic(), busy, _own_seconds())

    def free(self) -> int:
        """Cores free for our threads now: usable cores minus what others keep busy (at least 1)."""
        cores = usable_cores()
        now = self._sample()
        if now is None:  # no /proc: fall back to the load average, which lags but exists
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
            return max(1, min(cores, round(cores - load)))
        if self._last is None:
            time.sleep(self.probe)
            self._last, now = now, self._sample() or now
        elif self._free is not None and now[0] - self._last[0] < self.min_interval:
            return self._free  # too short a window to tell load from noise
        start, busy0, own0 = self._last
        wall = max(now[0] - start, 1e-6)
        others = max(0.0, (now[1] - busy0) - (now[2] - own0)) / wall
        self._last = now
        self._free = max(1, min(cores, round(cores - others)))
        return self._free
