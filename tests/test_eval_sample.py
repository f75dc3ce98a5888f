"""``--sample N --seed S``: the reference's seeded subset (IdealGPT misc/sample_data.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mmagents._config import Config
from mmagents.errors import ConfigError
from mmagents.eval.runner import run_task
from mmagents.eval.sample import seeded_sample


def _samples(n: int) -> list[dict]:
    return [{"id": f"val-{i}", "label": "yes", "guess": "yes"} for i in range(n)]


def test_same_ids_as_the_reference_sampler_in_file_order() -> None:
    samples = _samples(40)
    # misc/sample_data.py:52 random.seed(10); :32 random.sample(all_anno_id, data_num)
    random.seed(10)
    reference = random.sample([s["id"] for s in samples], 5)
    chosen = seeded_sample(samples, 5, 10)
    assert sorted(s["id"] for s in chosen) == sorted(reference)
    assert [s["id"] for s in chosen] == [s["id"] for s in samples if s["id"] in reference]
    assert seeded_sample(samples, 5, 10) == chosen and seeded_sample(samples, 5, 11) != chosen
    with pytest.raises(ConfigError, match="--sample"):
        seeded_sample(samples, 41, 10)


def test_run_task_sample_then_limit(tmp_path: Path, config: Config) -> None:
    task = tmp_path / "t.yaml"
    task.write_text("version: 1\nrunner: _eval_runners:echo\ntarget: label\nmetrics: [accuracy]\n")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in _samples(20)))
    summary = run_task(task, config, data=data, out=tmp_path / "r", sample=(6, 3), limit=4,
                       progress=False)  # fmt: skip
    expected = [s["id"] for s in seeded_sample(_samples(20), 6, 3)][:4]
    got = [
        json.loads(line)["id"]
        for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()
    ]
    assert sorted(got) == sorted(expected) and summary.n == 4
    assert summary.info["run"]["sample"] == {"n": 6, "seed": 3}
