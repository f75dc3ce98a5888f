"""``loader: hf``: Hugging Face datasets built here (saved folders, parquet with an Image column).

No hub: a hub name must fail fast offline; the example VQAv2 task is checked against a local
replica of the hub layout (same columns, same nesting).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmagents import Config
from mmagents.errors import DatasetError, TaskError
from mmagents.eval.datasets import load_dataset
from mmagents.eval.runner import run_task
from mmagents.eval.tasks import load_task, load_task_file

datasets = pytest.importorskip("datasets")

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _runners_importable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def photos(n: int) -> list[Image.Image]:
    """Distinct small images, alternately wide and tall."""
    return [
        Image.new("RGB", (12 + i % 5, 8) if i % 2 else (8, 12 + i % 5), (i * 7 % 256, 40, 90))
        for i in range(n)
    ]


def vqa_rows(n: int) -> dict[str, list[Any]]:
    """The columns of the hub's VQAv2 layout (lmms-lab/VQAv2): answers are a list of structs."""
    shapes = ["tall" if i % 2 == 0 else "wide" for i in range(n)]
    return {
        "question_id": [1000 + i for i in range(n)],
        "question": [f"is picture {i} wide?" for i in range(n)],
        "answers": [[{"answer": s, "answer_confidence": "yes", "answer_id": 1}] for s in shapes],
        "multiple_choice_answer": shapes,
        "image": photos(n),
    }


def saved_dataset(root: Path, n: int, *, dict_splits: bool = False) -> Path:
    table = datasets.Dataset.from_dict(vqa_rows(n))
    if dict_splits:
        table = datasets.DatasetDict({"validation": table, "train": table.select(range(2))})
    table.save_to_disk(str(root))
    return root


def task_file(tmp_path: Path, **dataset: Any) -> Path:
    spec = {
        "loader": "hf",
        "fields": {"id": "question_id", "label": "multiple_choice_answer"},
        **dataset,
    }
    path = tmp_path / "shapes.yaml"
    path.write_text(
        "version: 1\nrunner: _eval_runners:image_shape\ntarget: label\nmetrics: [accuracy]\n"
        f"dataset: {json.dumps(spec)}\n",
        encoding="utf-8",
    )
    return path


def test_saved_folder_with_image_column_runs(tmp_path: Path, config: Config) -> None:
    data = saved_dataset(tmp_path / "saved", 6)
    summary = run_task(task_file(tmp_path), config, out=tmp_path / "r", data=data, progress=False)
    assert (summary.n, summary.errors, summary.metrics["accuracy"]) == (6, 0, 1.0)
    records = [json.loads(x) for x in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [str(1000 + i) for i in range(6)]
    # Images went into the run's image store (content-addressed PNGs), not left in the table.
    stored = sorted((config.cache_dir / "images").rglob("img_*.png"))
    assert len(stored) == 6


@pytest.mark.parametrize("streaming", [True, False])
def test_sample_shape_fields_and_nested_paths(
    tmp_path: Path, config: Config, streaming: bool
) -> None:
    data = saved_dataset(tmp_path / "saved", 3, dict_splits=True)
    task = load_task_file(
        task_file(
            tmp_path,
            split="validation",
            streaming=streaming,
            fields={"answers": "answers[].answer"},
        )
    )
    samples = load_dataset(task, data, config=config)
    first = samples[0]
    assert first["id"] == "validation:0"  # no id mapping: split:row
    assert first["answers"] == ["tall"] and first["question"] == "is picture 0 wide?"
    assert Path(first["image"]).is_file() and Path(first["image"]).name.startswith("img_")
    assert len(load_dataset(task, data, config=config, limit=2)) == 2


def test_parquet_file_and_hub_layout_folder(tmp_path: Path, config: Config) -> None:
    layout = tmp_path / "VQAv2" / "data"
    layout.mkdir(parents=True)
    table = datasets.Dataset.from_dict(vqa_rows(5))
    table.to_parquet(str(layout / "validation-00000-of-00001.parquet"))
    task = load_task_file(task_file(tmp_path, split="validation"))
    from_file = load_dataset(task, layout / "validation-00000-of-00001.parquet", config=config)
    from_folder = load_dataset(task, tmp_path / "VQAv2", config=config)
    assert (
        [s["id"] for s in from_file]
        == [s["id"] for s in from_folder]
        == [str(1000 + i) for i in range(5)]
    )
    with Image.open(from_file[1]["image"]) as image:
        assert image.size == (13, 8)


def test_errors_name_the_problem(tmp_path: Path, config: Config) -> None:
    data = saved_dataset(tmp_path / "saved", 3, dict_splits=True)
    split_less = load_task_file(task_file(tmp_path))
    with pytest.raises(DatasetError, match=r"splits \['train', 'validation'\]"):
        load_dataset(split_less, data, config=config)
    wrong_split = load_task_file(task_file(tmp_path, split="test"))
    with pytest.raises(DatasetError, match="no split 'test'"):
        load_dataset(wrong_split, data, config=config)
    bad_field = load_task_file(task_file(tmp_path, split="train", fields={"x": "nope"}))
    with pytest.raises(DatasetError, match=r"row 0\].*no column 'nope'"):
        load_dataset(bad_field, data, config=config)
    needs = load_task_file(task_file(tmp_path, split="train", required=["choices"]))
    with pytest.raises(DatasetError, match="missing field"):
        load_dataset(needs, data, config=config)
    with pytest.raises(TaskError, match="only apply to loader: hf"):
        load_task_file(_jsonl_with_split(tmp_path))


def _jsonl_with_split(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\nrunner: a.b:c\nmetrics: [accuracy]\ndataset: {loader: jsonl, split: test}\n"
    )
    return path


def test_hub_name_fails_fast_offline(tmp_path: Path, config: Config) -> None:
    task = load_task_file(task_file(tmp_path, path="someone/not-here", split="validation"))
    start = time.perf_counter()
    with pytest.raises(DatasetError, match="hub is offline"):
        load_dataset(task, config=config)
    assert time.perf_counter() - start < 5


def test_example_vqav2_task_reads_the_hub_layout(tmp_path: Path, config: Config) -> None:
    task = load_task("vqav2-hf", config.home)
    assert task.dataset.loader == "hf" and task.dataset.path == "lmms-lab/VQAv2"
    assert task.dataset.split == "validation"  # never a test split
    replica = saved_dataset(tmp_path / "replica", 4, dict_splits=True)
    samples = load_dataset(task, replica, config=config)
    assert samples[0]["id"] == "1000" and samples[0]["answers"] == ["tall"]
    assert set(task.dataset.required) <= set(samples[0])


# -- acceptance: a real process, killed and resumed --------------------------------------------


def test_cli_run_killed_with_sigkill_resumes(tmp_path: Path, home: Path) -> None:
    data = saved_dataset(tmp_path / "saved", 24)
    task = task_file(tmp_path)
    out = tmp_path / "r"
    env = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "MMAGENTS_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "mmagents.cli", "eval", "run", str(task), "--data", str(data)]
    cmd += ["--out", str(out), "--no-progress", "--set", "sleep=0.15"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    partial = results.read_text().count("\n")
    assert 5 <= partial < 24
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    ids = Counter(json.loads(line)["id"] for line in results.read_text().splitlines())
    assert set(ids) == {str(1000 + i) for i in range(24)} and set(ids.values()) == {1}
    info = json.loads((out / "metrics.json").read_text())
    assert info["metrics"]["accuracy"] == 1.0 and info["run"]["resumed"] >= partial - 1
