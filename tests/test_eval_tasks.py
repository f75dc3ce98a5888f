"""Task YAML (include, validation, registry) and dataset loaders (errors name file:line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmagents.cli import main
from mmagents.errors import DatasetError, TaskError
from mmagents.eval.datasets import load_dataset, load_image_folder, load_jsonl
from mmagents.eval.runner import check_runs
from mmagents.eval.tasks import list_tasks, load_task, load_task_file

BUILTIN = [info.name for info in list_tasks()]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_tasks_are_listed() -> None:
    assert {"vqa", "meme-harmful", "classify", "relations", "interleaved"} <= set(BUILTIN)
    assert not any(name.startswith("_") for name in BUILTIN)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_task_validates(name: str) -> None:
    spec = load_task(name)
    assert spec.task == name and spec.metrics and ":" in spec.runs
    check_runs(spec)  # the runner imports / the field mapping fits the pipeline's schemas


def test_pipeline_tasks_check_their_mapping(tmp_path: Path) -> None:
    base = "task: t\nversion: 1\npipeline: idealgpt\nmetrics: [accuracy]\n"
    write(tmp_path / "no_map.yaml", base)
    with pytest.raises(TaskError, match="needs `inputs:` and `prediction:`"):
        load_task(tmp_path / "no_map.yaml")
    write(tmp_path / "bad.yaml", base + "inputs: {picture: image}\nprediction: answer\n")
    with pytest.raises(TaskError, match=r"no input field\(s\) \['picture'\]"):
        check_runs(load_task(tmp_path / "bad.yaml"))
    write(tmp_path / "out.yaml", base + "inputs: {image: image}\nprediction: label\n")
    with pytest.raises(TaskError, match="no output field"):
        check_runs(load_task(tmp_path / "out.yaml"))
    write(
        tmp_path / "fn.yaml", base + "inputs: {image: i}\nprediction: answer\nrecord: {a: b|sum}\n"
    )
    with pytest.raises(TaskError, match="unknown transform 'sum'"):
        load_task(tmp_path / "fn.yaml")


def test_fixed_runner_names() -> None:
    assert load_task("vqa").runs == "pipeline:idealgpt"
    assert load_task("vqa-single-shot").runner == "mmagents.eval.baselines:vqa_single_shot"
    assert load_task("classify").runs == "pipeline:describe"
    assert load_task("relations").runs == "pipeline:recode"
    assert load_task("interleaved").runner == "mmagents.eval.interleaved:eval_interleaved_sample"
    assert load_task("meme-harmful-zero-shot").runner == "mmagents.eval.baselines:meme_zero_shot"


def test_include_merges_mappings_and_replaces_the_rest(tmp_path: Path) -> None:
    write(
        tmp_path / "_base.yaml",
        "task: base\nversion: 1\nrunner: a.b:c\ntarget: label\n"
        "dataset: {required: [x], image_fields: [image]}\n"
        "options: {alpha: 1, beta: 2}\nmetrics: [accuracy, macro_f1]\n",
    )
    child = write(
        tmp_path / "child.yaml",
        "include: _base.yaml\nversion: 3\ndataset: {required: [y]}\n"
        "options: {beta: 5}\nmetrics: [accuracy]\n",
    )
    spec = load_task_file(child)
    assert spec.task == "child"  # never inherited from the included file
    assert spec.version == 3 and spec.runner == "a.b:c"
    assert spec.dataset.required == ["y"] and spec.dataset.image_fields == ["image"]
    assert spec.options == {"alpha": 1, "beta": 5}
    assert [m.key for m in spec.metrics] == ["accuracy"]


def test_include_by_task_name_and_in_user_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(home / "tasks" / "mine.yaml", "include: meme-harmful\nversion: 7\n")
    assert "mine" in [t.name for t in list_tasks(home)]
    spec = load_task("mine", home)
    assert spec.task == "mine" and spec.version == 7
    assert spec.normalizer.name == "meme_label"


def test_task_path_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "extra" / "other.yaml", "version: 1\nrunner: a:b\nmetrics: [accuracy]\n")
    monkeypatch.setenv("MMAGENTS_TASK_PATH", str(tmp_path / "extra"))
    assert load_task("other").runner == "a:b"


def test_include_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(TaskError, match=r"include cycle: a.yaml -> b.yaml -> a.yaml"):
        load_task_file(tmp_path / "a.yaml")


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "version: 1\nrunner: a:b\nmetrics: [accuracy\n  oops: 1\n")
    with pytest.raises(TaskError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_task_file(bad)


def test_validation_lists_each_problem(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yaml",
        "version: 1\nrunner: not a runner\nmetrics: [acuracy, {top_k: {kk: 5}}]\n"
        "normalizer: shout\ntypo_field: 1\n",
    )
    with pytest.raises(TaskError) as info:
        load_task_file(bad)
    message = str(info.value)
    assert "bad.yaml: invalid task" in message
    assert "runner: runner must look like 'package.module:function'" in message
    assert "unknown metric 'acuracy'" in message and "macro_f1" in message
    assert "metric 'top_k': got an unexpected keyword argument 'kk'" in message
    assert "unknown normalizer 'shout'" in message
    assert "typo_field: Extra inputs are not permitted" in message


def test_cli_validate_rejects_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path / "bad.yaml", "version: 1\nrunner: a:b\nmetrics: []\n")
    good = write(tmp_path / "good.yaml", "version: 1\nrunner: a:b\nmetrics: [accuracy]\n")
    assert main(["eval", "validate", str(good)]) == 0
    assert main(["eval", "validate", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "INVALID" in err and "bad.yaml" in err and "metrics" in err


def test_cli_list_shows_builtin_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "list"]) == 0
    out = capsys.readouterr().out
    assert "meme-harmful" in out and "built-in" in out


# -- loaders ----------------------------------------------------------------------------------


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    data = write(tmp_path / "d.jsonl", '{"id": 1, "label": "a"}\n\n{"id": 2, "label": \n')
    with pytest.raises(DatasetError, match=r"d\.jsonl:3: invalid JSON") as info:
        load_jsonl(data)
    assert info.value.line == 3
    write(data, '{"id": 1, "label": "a"}\n{"id": 2}\n')
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: missing field\(s\) 'label'"):
        load_jsonl(data, required=["label"])
    write(data, '{"id": 1}\n[1, 2]\n')
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: expected a JSON object"):
        load_jsonl(data)
    write(data, '{"id": 1}\n{"id": "1"}\n')
    with pytest.raises(
        DatasetError, match=r"d\.jsonl:2: duplicate id '1' \(first seen on line 1\)"
    ):
        load_jsonl(data)
    with pytest.raises(DatasetError, match="data file not found"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_jsonl_images_are_resolved_and_checked(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    data = write(
        tmp_path / "d.jsonl",
        json.dumps({"image": "a.png", "steps": [{"image": "a.png"}, {"text": "t"}]}) + "\n",
    )
    (sample,) = load_jsonl(data, image_fields=["image", "steps[].image"])
    assert sample["id"] == "d:1"
    assert sample["image"] == str(tmp_path / "a.png") == sample["steps"][0]["image"]
    write(data, '{"image": "a.png"}\n{"image": "missing.png"}\n')
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: image file not found"):
        load_jsonl(data, image_fields=["image"])


def test_image_folder_loader(tmp_path: Path) -> None:
    for cls, name in [("cat", "1.png"), ("cat", "2.jpg"), ("dog", "3.png")]:
        (tmp_path / cls).mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / cls / name)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    samples = load_image_folder(tmp_path)
    assert [(s["id"], s["label"]) for s in samples] == [
        ("cat/1.png", "cat"),
        ("cat/2.jpg", "cat"),
        ("dog/3.png", "dog"),
    ]
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(tmp_path / "cat")


def test_load_dataset_attaches_classes(tmp_path: Path) -> None:
    for cls in ("b", "a"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / cls / "x.png")
    samples = load_dataset(load_task("classify-folder"), tmp_path / "imgs")
    assert [s["classes"] for s in samples] == [["a", "b"], ["a", "b"]]
    with pytest.raises(TaskError, match="pass --data"):
        load_dataset(load_task("classify"))


def test_yes_no_labels_stay_strings(tmp_path: Path) -> None:
    # YAML 1.1 reads yes/no/on/off as booleans; a task's labels are the dataset's strings.
    path = write(
        tmp_path / "yesno.yaml",
        "include: vqa\ntask: vqa-yesno\nmetrics:\n  - macro_f1: {labels: [yes, no, on, off]}\n",
    )
    (spec,) = load_task(path).metrics
    assert spec.params["labels"] == ["yes", "no", "on", "off"]
