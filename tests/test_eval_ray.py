"""``--backend ray``: two shards as Ray tasks on a local Ray instance, merged into one run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mmagents import load_config
from mmagents.eval.scale import run_on_ray, shard_folder

pytest.importorskip("ray", reason="Ray is optional: pip install 'mmagents[ray]'")


@pytest.mark.slow
def test_two_shards_on_local_ray_merge_into_one_run(tmp_path: Path) -> None:
    data = tmp_path / "memes.jsonl"
    rows = [
        {
            "id": f"m{i}",
            "text": f"meme {i}",
            "caption": "c",
            "label": "harmful" if i % 2 else "harmless",
        }
        for i in range(6)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reply = '{"label": "harmful", "confidence": 0.9}'
    config = load_config(
        environ={
            "MMAGENTS_HOME": str(tmp_path / "home"),
            "MMAGENTS_LLM__BACKEND": "fake",
            "MMAGENTS_LLM__REPLIES": json.dumps([reply]),
            "MMAGENTS_LLM__CYCLE": "true",
        }
    )
    summary = run_on_ray(
        "meme-harmful-zero-shot", config, out=tmp_path / "run", shards=2, num_cpus=2, data=str(data)
    )
    for i in range(2):
        assert (shard_folder(tmp_path / "run", i, 2) / "metrics.json").is_file()
    ids = [
        json.loads(line)["id"]
        for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    ]
    assert Counter(ids) == Counter(f"m{i}" for i in range(6))
    assert summary.metrics["accuracy"] == 0.5 and summary.errors == 0
    assert summary.info["cache"]["misses"] + summary.info["cache"]["hits"] == 6
    assert summary.info["run"]["ray_wall_time_s"] > 0
