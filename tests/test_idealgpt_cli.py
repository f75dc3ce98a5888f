"""IdealGPT from the outside: ``mmagents run idealgpt``, the demo, the eval runners and fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmagents import Config, ConfigError, load_config
from mmagents.cli import main
from mmagents.eval.vqa_fixture import VQA_FIXTURE, write_vqa_fixture
from mmagents.graphs.idealgpt import (
    build_idealgpt_graph,
    eval_vqa_sample,
    eval_vqa_single_shot,
    initial_state,
    run_demo,
    run_idealgpt,
    sqlite_checkpointer,
)
from mmagents.images import default_store
from mmagents.models.fake import FakeVLM, ScriptedChat

# One reply that validates as both schemas (extra keys are ignored), so a cycled fake llm
# configured in TOML serves the questioner and the reasoner alike.
BOTH = json.dumps(
    {
        "sub_questions": ["What is it?", "What colour is it?"],
        "analysis": "a",
        "answer": "cat",
        "confidence": 0.9,
    }
)
QUESTIONS_ONLY = json.dumps({"sub_questions": ["What is it?"]})
KEYS = {"answer", "confidence", "rounds", "llm_calls", "vlm_calls"}


def fake_config_file(tmp_path: Path, reply: str) -> Path:
    path = tmp_path / "fake.toml"
    path.write_text(
        "[roles.llm]\nbackend = 'fake'\ncycle = true\n"
        f"replies = [{json.dumps(reply)}]\n\n[roles.vlm]\nbackend = 'fake'\n"
    )
    return path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (48, 32), (90, 140, 200)).save(path)
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_shape(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = fake_config_file(tmp_path, BOTH)
    code, out, _ = run_cli(
        capsys, "--config", str(cfg), "run", "idealgpt", "--image", str(photo),
        "--question", "What animal is in this picture?", "--json",
    )  # fmt: skip
    assert code == 0
    result = json.loads(out)  # exactly one JSON document on stdout
    assert set(result) == KEYS
    assert result["answer"] == "cat" and result["confidence"] == 0.9
    assert result["llm_calls"] == 2 and result["vlm_calls"] == 3
    (only,) = result["rounds"]
    assert set(only) == {"sub_questions", "analysis"}
    assert [set(qa) for qa in only["sub_questions"]] == [{"question", "answer"}] * 2


def test_json_error_exits_non_zero(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = fake_config_file(tmp_path, QUESTIONS_ONLY)  # the reasoner can never validate
    code, out, _ = run_cli(
        capsys, "--config", str(cfg), "run", "idealgpt", "--image", str(photo),
        "--question", "Q?", "--json", "--choices", "cat", "dog",
    )  # fmt: skip
    result = json.loads(out)
    assert code == 1 and set(result) == {*KEYS, "error"}
    assert result["error"]["type"] == "StructuredOutputError" and result["answer"] is None
    assert result["llm_calls"] == 1 + 3  # questioner, then the reasoner and its two repairs


def test_trace_is_printed_without_json(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = fake_config_file(tmp_path, BOTH)
    code, out, _ = run_cli(
        capsys, "--config", str(cfg), "run", "idealgpt", "--image", str(photo),
        "--question", "What animal?", "--max-rounds", "2",
    )  # fmt: skip
    assert code == 0
    for expected in ("IdealGPT", "caption", "round 1", "What colour is it?", "reasoner", "Answer"):
        assert expected in out
    assert "max 2 rounds" in out


def test_thread_is_stored_and_reused(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = fake_config_file(tmp_path, BOTH)
    db = tmp_path / "ck.sqlite"
    base = ["--config", str(cfg), "run", "idealgpt", "--image", str(photo), "--json"]
    thread = ["--thread", "t1", "--checkpoint", str(db)]
    code, first, _ = run_cli(capsys, *base, "--question", "What animal?", *thread)
    assert code == 0 and db.is_file()
    code, again, _ = run_cli(capsys, *base, "--question", "What animal?", *thread)
    assert code == 0 and json.loads(again) == json.loads(first)  # the finished thread's result
    code, _, err = run_cli(capsys, *base, "--question", "Another question?", *thread)
    assert code == 1 and "ConfigError" in err and "new --thread" in err


def test_checkpoint_without_thread_is_refused(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = fake_config_file(tmp_path, BOTH)
    code, _, err = run_cli(
        capsys, "--config", str(cfg), "run", "idealgpt", "--image", str(photo),
        "--question", "Q?", "--checkpoint", str(tmp_path / "x.sqlite"),
    )  # fmt: skip
    assert code == 1 and "--thread" in err


def test_console_script_prints_only_json(tmp_path: Path, photo: Path) -> None:
    cfg = fake_config_file(tmp_path, BOTH)
    env = {**os.environ, "MMAGENTS_HOME": str(tmp_path / "home2")}
    proc = subprocess.run(
        [sys.executable, "-m", "mmagents.cli", "--config", str(cfg), "run", "idealgpt",
         "--image", str(photo), "--question", "What animal?", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == KEYS


def test_demo_runs_the_graph_on_the_cat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(fake_config_file(tmp_path, BOTH), environ={"MMAGENTS_HOME": str(tmp_path)})
    assert run_demo(cfg) == 0
    out = capsys.readouterr().out
    assert "What animal is in this picture?" in out and "cat.png" in out and "Answer" in out


# -- evaluation ----------------------------------------------------------------------------------


def test_fixture_writes_both_task_formats(tmp_path: Path, config: Config) -> None:
    open_ended = write_vqa_fixture(tmp_path / "vqa", config)
    records = [json.loads(line) for line in open_ended.read_text().splitlines()]
    assert len(records) == len(VQA_FIXTURE) == len({r["id"] for r in records})
    for r in records:
        assert (open_ended.parent / r["image"]).is_file() and len(r["answers"]) == 10
    mc = write_vqa_fixture(tmp_path / "vqa", config, multiple_choice=True)
    for r in (json.loads(line) for line in mc.read_text().splitlines()):
        assert r["answer"] in r["choices"] and "answers" not in r


def test_eval_sample_runs_the_loop(config: Config, tmp_path: Path, photo: Path) -> None:
    llm = ScriptedChat(
        replies=[QUESTIONS_ONLY, json.dumps({"analysis": "a", "answer": "", "confidence": 0}),
                 QUESTIONS_ONLY, json.dumps({"analysis": "b", "answer": "Cat", "confidence": 0.3})]
    )  # fmt: skip
    sample = {"id": "1", "image": str(photo), "question": "What animal?"}
    out = eval_vqa_sample(sample, config, llm=llm, vlm=FakeVLM(), max_rounds="2")
    assert out == {
        "prediction": "Cat", "confidence": 0.3, "rounds": 2, "llm_calls": 4, "vlm_calls": 3,
        "unknown": False, "invalid_output": False,
    }  # fmt: skip


def test_eval_sample_invalid_output_is_unknown(config: Config, photo: Path) -> None:
    llm = ScriptedChat(replies=["nope"] * 3)
    sample = {"image": str(photo), "question": "Q?"}
    out = eval_vqa_sample(sample, config, llm=llm, vlm=FakeVLM())
    assert out["prediction"] is None and out["unknown"] and out["invalid_output"]


def test_eval_options_are_checked(config: Config, photo: Path) -> None:
    sample = {"image": str(photo), "question": "Q?"}
    with pytest.raises(ConfigError, match="unknown vqa option"):
        eval_vqa_sample(sample, config, rounds=2)
    with pytest.raises(ConfigError, match="--model"):
        eval_vqa_single_shot(sample, config, model="/some/dir")


class EchoVLM(FakeVLM):
    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply
        self.questions: list[str] = []

    def answer(self, image: Any, question: str) -> str:
        self.questions.append(question)
        return self.reply


def test_single_shot_baseline(config: Config, photo: Path) -> None:
    vlm = EchoVLM("It is a cat.\n")
    sample = {"image": str(photo), "question": "Which animal?", "choices": ["dog", "cat"]}
    out = eval_vqa_single_shot(sample, config, vlm=vlm)
    assert out["prediction"] == "cat" and out["raw"] == "It is a cat."
    assert out["vlm_calls"] == 1 and out["rounds"] == 0 and not out["unknown"]
    assert "dog; cat" in vlm.questions[0]
    unmatched = eval_vqa_single_shot(sample, config, vlm=EchoVLM("a bird"))
    assert unmatched["prediction"] is None and unmatched["unknown"]
    open_ended = eval_vqa_single_shot({"image": str(photo), "question": "Q?"}, config, vlm=vlm)
    assert open_ended["prediction"] == "It is a cat."


def test_harness_runs_the_vqa_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = fake_config_file(tmp_path, BOTH)
    data = write_vqa_fixture(tmp_path / "data", load_config(cfg))
    code, _, err = run_cli(
        capsys, "--config", str(cfg), "eval", "run", "vqa", "--data", str(data),
        "--out", str(tmp_path / "v"), "--no-progress", "--set", "max_rounds=1",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    values = metrics.get("metrics", metrics)
    assert values["vqa_accuracy"] == pytest.approx(1 / len(VQA_FIXTURE))  # "cat" is right once
    assert values["unknown_ratio"] == 0 and values["avg_rounds"] == 1


def test_cli_resumes_an_interrupted_thread(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = fake_config_file(tmp_path, BOTH)
    config = load_config(cfg)
    db = tmp_path / "ck.sqlite"

    def crash(messages: Any) -> str:
        raise ConnectionError("the LLM endpoint went away")

    saver = sqlite_checkpointer(db)
    graph = build_idealgpt_graph(
        config, llm=ScriptedChat(replies=[QUESTIONS_ONLY, crash]), vlm=FakeVLM(), checkpointer=saver
    )
    handle = default_store(config).put(photo)
    with pytest.raises(ConnectionError):
        run_idealgpt(graph, initial_state(handle, "What animal?"), thread_id="t9")
    saver.conn.close()

    code, out, _ = run_cli(
        capsys, "--config", str(cfg), "run", "idealgpt", "--image", str(photo),
        "--question", "What animal?", "--thread", "t9", "--checkpoint", str(db), "--json",
    )  # fmt: skip
    result = json.loads(out)
    assert code == 0 and result["answer"] == "cat"
    # The first process's questioner, caption and answer were kept; only the reasoner ran again.
    assert result["llm_calls"] == 2 and result["vlm_calls"] == 2
    assert result["rounds"][0]["sub_questions"][0]["question"] == "What is it?"
