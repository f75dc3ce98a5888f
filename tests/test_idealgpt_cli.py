"""IdealGPT from the outside: ``mmagents run idealgpt``, the demo, the vqa tasks and fixture."""

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
from mmagents.cli.idealgpt import run_demo
from mmagents.eval.baselines import vqa_single_shot
from mmagents.eval.runner import PipelineRunner
from mmagents.eval.tasks import load_task
from mmagents.eval.vqa_fixture import VQA_FIXTURE, write_vqa_fixture
from mmagents.graphs._run import run_graph, sqlite_checkpointer, thread_config
from mmagents.graphs.idealgpt import IdealGPTInput, build_idealgpt_graph
from mmagents.images import default_store
from mmagents.models.fake import FakeVLM, ScriptedChat
from mmagents.runtime import Models

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
        "--question", "What animal?", "--set", "max_rounds=2",
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


def vqa_runner(config: Config, llm: Any, **options: Any) -> PipelineRunner:
    backends = {"llm": llm, "vlm": FakeVLM()}
    return PipelineRunner(load_task("vqa"), config, options, backends=backends)


def test_vqa_task_runs_the_loop(config: Config, tmp_path: Path, photo: Path) -> None:
    llm = ScriptedChat(
        replies=[QUESTIONS_ONLY, json.dumps({"analysis": "a", "answer": "", "confidence": 0}),
                 QUESTIONS_ONLY, json.dumps({"analysis": "b", "answer": "Cat", "confidence": 0.3})]
    )  # fmt: skip
    sample = {"id": "1", "image": str(photo), "question": "What animal?"}
    out = vqa_runner(config, llm, max_rounds="2")(sample, config)
    assert out == {
        "prediction": "Cat", "confidence": 0.3, "rounds": 2, "llm_calls": 4, "vlm_calls": 3,
        "invalid_output": False,
    }  # fmt: skip


def test_vqa_task_invalid_output_is_unknown(config: Config, photo: Path) -> None:
    sample = {"image": str(photo), "question": "Q?"}
    out = vqa_runner(config, ScriptedChat(replies=["nope"] * 3))(sample, config)
    assert out["prediction"] is None and out["invalid_output"]


def test_vqa_task_settings_are_checked(config: Config) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*rounds"):
        vqa_runner(config, ScriptedChat(replies=[]), rounds=2)


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
    models = Models(config, vlm=vlm)
    sample = {"image": str(photo), "question": "Which animal?", "choices": ["dog", "cat"]}
    out = vqa_single_shot(sample, models=models, settings={})
    assert out["prediction"] == "cat" and out["raw"] == "It is a cat."
    assert out["vlm_calls"] == 1 and out["rounds"] == 0
    assert "dog; cat" in vlm.questions[0]
    unmatched = vqa_single_shot(sample, models=Models(config, vlm=EchoVLM("a bird")), settings={})
    assert unmatched["prediction"] is None
    open_ended = vqa_single_shot(
        {"image": str(photo), "question": "Q?"}, models=models, settings={}
    )
    assert open_ended["prediction"] == "It is a cat."
    with pytest.raises(ConfigError, match="no settings"):
        vqa_single_shot(sample, models=models, settings={"model": "/some/dir"})


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
    models = Models(config, llm=ScriptedChat(replies=[QUESTIONS_ONLY, crash]), vlm=FakeVLM())
    graph = build_idealgpt_graph(config, models=models, checkpointer=saver)
    handle = default_store(config).put(photo)
    inputs = IdealGPTInput(image=handle, question="What animal?").model_dump(exclude_none=True)
    with pytest.raises(ConnectionError):
        run_graph(graph, inputs, config=thread_config("t9"))
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


def test_set_max_rounds_per_run(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unsure = json.dumps({"sub_questions": ["What is it?"], "analysis": "a", "answer": "cat",
                         "confidence": 0.1})  # fmt: skip
    cfg = fake_config_file(tmp_path, unsure)
    base = ["--config", str(cfg), "run", "idealgpt", "--image", str(photo), "--question", "Q?"]
    code, out, _ = run_cli(capsys, *base, "--set", "max_rounds=1", "--json")
    assert code == 0 and len(json.loads(out)["rounds"]) == 1
    code, out, _ = run_cli(capsys, *base, "--json")
    assert code == 0 and len(json.loads(out)["rounds"]) == 4  # the default
    code, _, err = run_cli(capsys, *base, "--set", "max_round=1")
    assert code == 1 and "unknown setting" in err and "max_rounds" in err


def test_help_lists_the_input_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "idealgpt", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--image",
        "--question",
        "--choices",
        "--caption",
        "--set",
        "--json",
        "max_rounds",
    ):
        assert flag in out
