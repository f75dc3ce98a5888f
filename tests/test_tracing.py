"""Traces: role calls as LangChain runs, OpenTelemetry spans from --trace, ``trace show``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from PIL import Image

from mmagents import load_config
from mmagents._trace_show import load_spans, render_html
from mmagents.cli import main
from mmagents.errors import DatasetError
from mmagents.eval.runner import run_task
from mmagents.models.fake import FakeVLM, ScriptedChat
from mmagents.tracing import traced, tracing_to

TESTS = Path(__file__).resolve().parent
BOTH = json.dumps(
    {
        "sub_questions": ["What is it?", "What colour is it?"],
        "analysis": "a",
        "answer": "cat",
        "confidence": 0.9,
    }
)


class Recorder(BaseCallbackHandler):
    """Any LangChain handler: records the chain runs it is told about."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, Any]] = []
        self.ends: list[Any] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self.starts.append((kw.get("name") or "", inputs))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self.ends.append(outputs)


def test_any_langchain_handler_sees_a_role_call_with_handles_not_pixels() -> None:
    vlm = traced("vlm", "fake", FakeVLM())
    assert isinstance(vlm, FakeVLM)  # the proxy passes isinstance checks
    image = Image.new("RGB", (20, 10), (1, 2, 3))
    recorder = Recorder()
    node = RunnableLambda(lambda q: vlm.answer(image, q), name="node")
    answer = node.invoke("What is it?", {"callbacks": [recorder]})
    assert answer == "fake answer to: What is it?"  # the caller gets the real result
    names = [name for name, _ in recorder.starts]
    assert names == ["node", "vlm.answer"]
    inputs = recorder.starts[1][1]
    shown = json.dumps(inputs)
    assert re.search(r'"image": "img_[0-9a-f]{16}"', shown) and '"size": [20, 10]' in shown
    assert len(shown) < 300  # a summary, not the pixels
    assert recorder.ends[0]["output"] == answer and recorder.ends[0]["latency_s"] >= 0
    # Nobody listening: no run is created (the call goes straight through).
    assert vlm.answer(image, "again?") == "fake answer to: again?"


class AskingVLM:
    """A VLM that asks an llm (as the socratic backend does): the llm span nests inside."""

    def __init__(self) -> None:
        self.llm = ScriptedChat(replies=["a cat"], cycle=True)

    def answer(self, image: Image.Image, question: str) -> str:
        return str(self.llm.invoke(question).content)


def test_spans_nest_an_llm_call_inside_a_role_call(tmp_path: Path) -> None:
    vlm = traced("vlm", "asking", AskingVLM())
    trace = tmp_path / "t.jsonl"
    with tracing_to(trace):
        node = RunnableLambda(lambda q: vlm.answer(Image.new("RGB", (4, 4)), q), name="node")
        assert node.invoke("What is it?") == "a cat"
    (root,) = load_spans(trace)
    (role,) = root.children
    (llm,) = role.children
    assert (root.name, role.name, role.kind, llm.kind) == ("node", "vlm.answer", "role", "llm")
    assert (
        role.attributes["mmagents.backend"] == "asking" and "mmagents.backend" not in llm.attributes
    )
    assert root.start_ns <= role.start_ns <= llm.start_ns <= llm.end_ns <= role.end_ns


def fake_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fake.toml"
    path.write_text(
        "[roles.llm]\nbackend = 'fake'\ncycle = true\n"
        f"replies = [{json.dumps(BOTH)}]\n\n[roles.vlm]\nbackend = 'fake'\n"
    )
    return path


@pytest.fixture
def idealgpt_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    monkeypatch.setenv("MMAGENTS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (48, 32), (90, 140, 200)).save(photo)
    trace = tmp_path / "t.jsonl"
    code = main(
        ["--config", str(fake_config_file(tmp_path)), "run", "idealgpt", "--image", str(photo),
         "--question", "What animal?", "--json", "--trace", str(trace)]
    )  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out)["answer"] == "cat"
    return trace


def test_run_idealgpt_trace_has_every_role_with_times(
    idealgpt_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (root,) = load_spans(idealgpt_trace)
    assert root.name == "idealgpt"
    nodes = [c.name for c in root.children]
    assert nodes[0] == "caption" and nodes[1] == "questioner" and nodes[-1] == "reasoner"
    assert nodes.count("answerer") == 2  # one per sub-question
    calls = {}
    for node in root.children:
        for depth_first in _descendants(node):
            calls.setdefault(node.name, []).append(depth_first.name)
    assert "vlm.caption" in calls["caption"]
    assert any(n.startswith("llm.") for n in calls["questioner"])
    assert any(n.startswith("llm.") for n in calls["reasoner"])
    answers = [s for s in _descendants(root) if s.name == "vlm.answer"]
    assert len(answers) == 2 and all(s.end_ns > s.start_ns for s in answers)
    assert all(child.start_ns >= root.start_ns and child.end_ns <= root.end_ns for child in answers)

    assert main(["trace", "show", str(idealgpt_trace)]) == 0
    shown = capsys.readouterr().out
    for expected in ("idealgpt", "vlm.caption", "questioner", "vlm.answer", "reasoner", " ms"):
        assert expected in shown
    assert "3 role calls, 2 llm calls" in shown


def _descendants(span: Any) -> list[Any]:
    out = []
    for child in span.children:
        out += [child, *_descendants(child)]
    return out


def test_eval_run_trace_reports_cache_hits_from_worker_threads(tmp_path: Path) -> None:
    sys.path.insert(0, str(TESTS))
    try:
        env = {
            "MMAGENTS_HOME": str(tmp_path / "home"),
            "MMAGENTS_LLM__BACKEND": "fake",
            "MMAGENTS_LLM__REPLIES": json.dumps(["yes"]),
            "MMAGENTS_LLM__CYCLE": "true",
            "MMAGENTS_VLM__BACKEND": "fake",
            "MMAGENTS_VLM__TAG": "trace-test",
            "MMAGENTS_OCR__BACKEND": "fake",
        }
        config = load_config(environ=env)
        data = tmp_path / "d.jsonl"
        rows = [
            {"id": f"s{i}", "text": f"t{i}", "colour": [i, 2, 3], "label": "yes"} for i in range(4)
        ]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        task = tmp_path / "task.yaml"
        task.write_text(
            "version: 1\nrunner: _eval_runners:with_runtime\ntarget: label\nmetrics: [accuracy]\n"
        )
        traces = []
        for attempt in ("first", "second"):
            trace = tmp_path / f"{attempt}.jsonl"
            with tracing_to(trace):
                run_task(
                    task, config, out=tmp_path / attempt, data=data, concurrency=2, progress=False
                )
            traces.append([s for root in load_spans(trace) for s in [root, *_descendants(root)]])
    finally:
        sys.path.remove(str(TESTS))
    for spans, expected in zip(traces, ("miss", "hit"), strict=True):
        roles = [s for s in spans if s.kind == "role"]
        assert sorted(s.name for s in roles) == ["ocr.read"] * 4 + ["vlm.caption"] * 4
        assert {s.cache() for s in roles} == {expected}
    llm_second = [s for s in traces[1] if s.kind == "llm"]
    assert len(llm_second) == 4 and {s.cache() for s in llm_second} == {"hit"}


def test_trace_file_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_spans(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "x"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: not a span record"):
        load_spans(bad)


CHECK_SCRIPT = """<script>
const rows = [...document.querySelectorAll('#timeline .row')];
const out = rows.map(r => ({name: r.dataset.name,
  bar: r.querySelector('.bar').getBoundingClientRect().width,
  track: r.querySelector('.track').getBoundingClientRect().width}));
const pre = document.createElement('pre'); pre.id = 'mmagents-check';
pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
</script>"""


def test_html_timeline_renders_in_headless_chromium(idealgpt_trace: Path, tmp_path: Path) -> None:
    page = render_html(load_spans(idealgpt_trace))
    assert "<script" not in page and "http" not in page  # self-contained, static
    browser = next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
         "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    import html

    match = re.search(r'<pre id="mmagents-check">(.*?)</pre>', done.stdout, re.DOTALL)
    assert match, f"no check output from Chromium (rc {done.returncode}): {done.stderr[-2000:]}"
    rows = json.loads(html.unescape(match.group(1)))
    names = [r["name"] for r in rows]
    assert names[0] == "idealgpt" and names.count("vlm.answer") == 2 and "vlm.caption" in names
    root = rows[0]
    assert root["track"] > 100 and abs(root["bar"] - root["track"]) < 2  # the root spans the axis
    assert all(0 < r["bar"] <= r["track"] + 1 for r in rows)


def test_eval_run_command_takes_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    for key, value in {
        "MMAGENTS_HOME": str(tmp_path / "home"),
        "MMAGENTS_LLM__BACKEND": "fake",
        "MMAGENTS_LLM__REPLIES": json.dumps(["yes"]),
        "MMAGENTS_LLM__CYCLE": "true",
        "MMAGENTS_VLM__BACKEND": "fake",
        "MMAGENTS_OCR__BACKEND": "fake",
    }.items():
        monkeypatch.setenv(key, value)
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"id": "a", "text": "t", "colour": [1, 2, 3], "label": "yes"}) + "\n"
    )
    task = tmp_path / "task.yaml"
    task.write_text(
        "version: 1\nrunner: _eval_runners:with_runtime\ntarget: label\nmetrics: [accuracy]\n"
    )
    trace = tmp_path / "eval.jsonl"
    argv = ["eval", "run", str(task), "--data", str(data), "--out", str(tmp_path / "r")]
    assert main([*argv, "--no-progress", "--no-cache", f"--trace={trace}"]) == 0
    names = sorted(s.name for s in load_spans(trace))
    assert names == ["llm.ScriptedChat", "ocr.read", "vlm.caption"]
