"""CPU sharing: OpenMP's wait policy and the free-core meter (time and /proc/stat scripted)."""

from __future__ import annotations

import pytest

from mmagents import _cpu


def test_passive_policy_is_set_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert _cpu.prefer_passive_waits() is True
    assert _cpu.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _cpu.prefer_passive_waits() is False
    assert _cpu.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_importing_mmagents_sets_the_policy_first() -> None:
    import subprocess
    import sys

    code = "import os, mmagents; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in _cpu.os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE"


class _Clock:
    """Scripted wall time, machine-wide busy seconds and our own CPU seconds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wall, self.busy, self.own = 100.0, 50.0, 5.0
        monkeypatch.setattr(_cpu, "usable_cores", lambda: 2)
        monkeypatch.setattr(_cpu, "_busy_seconds", lambda: self.busy)
        monkeypatch.setattr(_cpu, "_own_seconds", lambda: self.own)
        monkeypatch.setattr(_cpu.time, "monotonic", lambda: self.wall)
        monkeypatch.setattr(_cpu.time, "sleep", self.advance)
        self.others = 0.0  # cores other processes keep busy
        self.mine = 0.0  # cores we keep busy

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.busy += (self.others + self.mine) * seconds
        self.own += self.mine * seconds


def test_meter_counts_other_processes_not_our_own_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock(monkeypatch)
    meter = _cpu.CpuMeter()
    assert meter.free() == 2  # idle machine (measured over the probe sleep)
    clock.mine = 2.0  # our model ran on both cores: not load
    clock.advance(3.0)
    assert meter.free() == 2
    clock.mine, clock.others = 1.0, 1.0  # another job took a core
    clock.advance(3.0)
    assert meter.free() == 1
    clock.others = 2.0  # fully loaded by others: still at least one thread
    clock.advance(3.0)
    assert meter.free() == 1
    clock.advance(0.1)  # too short to tell: the last answer stands
    clock.others = 0.0
    assert meter.free() == 1
