"""Evaluation tasks: versioned YAML files with ``include:`` inheritance, and their registry.

A task file names a dataset loader, what runs each sample, the target field, an answer normaliser
and the metrics. What runs is either a pipeline of :data:`mmagents.graphs.PIPELINES` with the glue
declared as data (which sample key feeds which input field, which output field is the prediction,
which output fields are recorded), or a custom runner ``"module:function"`` (imported only when the
task runs) for glue that is more than a mapping::

    task: vqa
    version: 2
    include: _labels.yaml            # optional: a file next to this one, or a task name
    pipeline: idealgpt
    inputs: {image: image, question: question, choices: choices}    # input field: sample key
    prediction: answer                                               # output field
    record: {rounds: rounds|len, llm_calls: llm_calls, invalid_output: error|present}
    dataset: {loader: jsonl, required: [image, question, answers], image_fields: [image]}
    target: answers
    normalizer: vqa
    metrics: [vqa_accuracy, unknown_ratio, {mean: {field: llm_calls}}]

Included files are merged first, the including file last (mappings merge key by key, everything
else is replaced). Files whose name starts with ``_`` are templates: they can be included but are
not listed as tasks. The registry lists the built-in files in ``eval/tasks/``, then those of installed plugins (entry
points in group ``mmagents.tasks``, each naming a YAML file or a folder of them), then user files in
``$MMAGENTS_HOME/tasks/`` and in the folders of ``$MMAGENTS_TASK_PATH`` (which shadow built-ins of
the same name); a task can also be given directly as a path to its YAML file.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Includes merge like config layers do: mappings key by key, anything else replaced.
from mmagents._config import _merge as _deep_merge
from mmagents._registry import entry_point_targets, import_string
from mmagents.errors import TaskError
from mmagents.eval.metrics import METRICS, metric_key
from mmagents.eval.normalize import NORMALIZERS, Normalizer, build_normalizer

__all__ = [
    "RECORD_TRANSFORMS",
    "DatasetSpec",
    "MetricSpec",
    "NormalizerSpec",
    "TaskInfo",
    "TaskSpec",
    "find_task",
    "list_tasks",
    "load_task",
    "load_task_file",
    "register_task",
]

#: ``record:`` value transforms: ``"rounds|len"`` (a list's length), ``"error|present"`` (set?).
RECORD_TRANSFORMS = ("len", "present")

_RUNNER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricSpec(_Strict):
    """One metric: its registered name, its parameters and its key in ``metrics.json``."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    key: str = ""

    @model_validator(mode="after")
    def _known(self) -> MetricSpec:
        if self.name not in METRICS:
            raise ValueError(f"unknown metric {self.name!r}; known: {', '.join(sorted(METRICS))}")
        try:  # parameter names are checked now, not after a long run
            inspect.signature(METRICS[self.name]).bind([], **self.params)
        except TypeError as exc:
            raise ValueError(f"metric {self.name!r}: {exc}") from None
        if not self.key:
            self.key = metric_key(self.name, self.params)
        return self


class NormalizerSpec(_Strict):
    """The answer normaliser applied to predictions and targets before scoring."""

    name: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> NormalizerSpec:
        if self.name not in NORMALIZERS:
            known = ", ".join(sorted(NORMALIZERS))
            raise ValueError(f"unknown normalizer {self.name!r}; known: {known}")
        build_normalizer(self.name, self.params)  # bad parameters fail at validation time
        return self


class DatasetSpec(_Strict):
    """How to read the samples.

    Attributes:
        loader: ``jsonl`` (one JSON object per line), ``image_folder`` (``root/<class>/<image>``)
            or ``hf`` (Hugging Face ``datasets``: see :mod:`mmagents.eval.hf`).
        path: Default data file or folder (relative to the task file; for ``hf`` also a hub
            dataset name); ``--data`` overrides it.
        required: Fields every record must have, the target's included (checked at load time,
            naming file and line).
        image_fields: Fields holding image paths: resolved against the data file's folder and
            checked to exist.
        attach_classes: Give every sample a ``classes`` list (the sorted set of all targets),
            for classifiers that need the label space.
        split: ``loader: hf``: the split to read (needed when there are several).
        name: ``loader: hf``: the dataset configuration (``load_dataset(path, name)``).
        fields: ``loader: hf``: sample key → column (``col``, ``col.sub`` or ``col[].sub``).
        streaming: ``loader: hf``: read rows one at a time (flat memory) rather than as a table.
    """

    loader: Literal["jsonl", "image_folder", "hf"] = "jsonl"
    path: str | None = None
    required: list[str] = Field(default_factory=list)
    image_fields: list[str] = Field(default_factory=list)
    attach_classes: bool = False
    split: str | None = None
    name: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    streaming: bool = True

    @model_validator(mode="after")
    def _hf_only(self) -> DatasetSpec:
        hf_keys = [k for k in ("split", "name", "fields") if getattr(self, k)]
        if hf_keys and self.loader != "hf":
            raise ValueError(f"{', '.join(hf_keys)} only apply to loader: hf")
        return self


class TaskSpec(_Strict):
    """A resolved task (includes applied)."""

    task: str
    version: int | str
    description: str = ""
    runner: str | None = None
    pipeline: str | None = None
    inputs: dict[str, str] = Field(default_factory=dict)
    prediction: str | None = None
    record: dict[str, str] = Field(default_factory=dict)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    id_field: str = "id"
    target: str | None = "label"
    normalizer: NormalizerSpec = Field(default_factory=NormalizerSpec)
    metrics: list[MetricSpec] = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(default=None, description="the file it was read from")

    @field_validator("runner")
    @classmethod
    def _runner_format(cls, value: str | None) -> str | None:
        if value is not None and not _RUNNER.match(value):
            raise ValueError(f"runner must look like 'package.module:function', got {value!r}")
        return value

    @field_validator("normalizer", mode="before")
    @classmethod
    def _normalizer_shorthand(cls, value: Any) -> Any:
        # Accept `vqa` and `{name: label_map, mapping: ...}` as well as `{name:, params:}`.
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, Mapping) and "params" not in value:
            return {
                "name": value.get("name", "none"),
                "params": {k: v for k, v in value.items() if k != "name"},
            }
        return value

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_shorthand(cls, value: Any) -> Any:
        # Accept `- accuracy` and `- top_k: {k: 5}` as well as the full mapping form.
        if not isinstance(value, list):
            return value
        out: list[Any] = []
        for item in value:
            if isinstance(item, str):
                out.append({"name": item})
            elif isinstance(item, Mapping) and len(item) == 1 and "name" not in item:
                ((name, params),) = item.items()
                if not isinstance(params, Mapping | None):
                    raise ValueError(
                        f"metric {name!r}: parameters must be a mapping, got {params!r}"
                    )
                params = dict(params or {})
                key = params.pop("key", "")
                out.append({"name": name, "params": params, "key": key})
            else:
                out.append(item)
        return out

    @model_validator(mode="after")
    def _runs_something(self) -> TaskSpec:
        # A pipeline task declares its glue as data; a custom `runner:` replaces it entirely.
        if self.runner is None and self.pipeline is None:
            raise ValueError("a task needs `pipeline:` (with inputs/prediction) or `runner:`")
        if self.runner is not None:
            return self
        if not self.inputs or not self.prediction:
            raise ValueError(f"pipeline task {self.pipeline!r} needs `inputs:` and `prediction:`")
        for key, source in self.record.items():
            _, bar, transform = source.partition("|")
            if bar and transform not in RECORD_TRANSFORMS:
                raise ValueError(
                    f"record {key}: unknown transform {transform!r}; known: "
                    f"{', '.join(RECORD_TRANSFORMS)}"
                )
        return self

    @property
    def runs(self) -> str:
        """What runs each sample: ``pipeline:NAME`` or the runner's ``module:function``."""
        return self.runner or f"pipeline:{self.pipeline}"

    @model_validator(mode="after")
    def _unique_keys(self) -> TaskSpec:
        keys = [m.key for m in self.metrics]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate metric keys {duplicates}: give them distinct `key:`s")
        return self

    def build_normalizer(self) -> Normalizer:
        """The normaliser function of this task."""
        return build_normalizer(self.normalizer.name, self.normalizer.params)

    def data_path(self, override: str | Path | None = None) -> Path:
        """The data file/folder: ``override``, else ``dataset.path`` relative to the task file.

        Raises:
            TaskError: neither is given.
        """
        if override is not None:
            return Path(override).expanduser()
        if self.dataset.path is None:
            raise TaskError(f"task {self.task!r} has no default dataset: pass --data PATH")
        path = Path(self.dataset.path).expanduser()
        if not path.is_absolute() and self.source:
            path = Path(self.source).parent / path
        return path

    def to_yaml(self) -> str:
        """The resolved task as YAML (written next to every run's results)."""
        import yaml

        data = self.model_dump(mode="json", exclude={"source"})
        data["metrics"] = [{"name": m.name, "params": m.params, "key": m.key} for m in self.metrics]
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present: 10x faster
        return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)


# -- reading files ----------------------------------------------------------------------------


@cache
def _task_loader() -> type[Any]:
    """A safe YAML loader whose booleans are only ``true`` / ``false`` (YAML 1.2), so labels such
    as ``[yes, no]`` or ``[on, off]`` stay the strings a dataset holds (YAML 1.1 reads them as
    booleans)."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present
    bool_tag = "tag:yaml.org,2002:bool"
    loader: type[Any] = type("TaskLoader", (base,), {})
    loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != bool_tag]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return loader


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskError(f"cannot read task file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_task_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise TaskError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a task file must be a YAML mapping, got {type(data).__name__}")
    return data


def _include_path(ref: str, including: Path, config_home: Path | None) -> Path:
    if ref.endswith((".yaml", ".yml")):
        candidate = Path(ref).expanduser()
        return candidate if candidate.is_absolute() else including.parent / candidate
    found = _registry(config_home).get(ref)
    if found is None:
        raise TaskError(f"{including}: include {ref!r} is neither a .yaml file nor a known task")
    return found


def _resolve(path: Path, stack: tuple[Path, ...], config_home: Path | None) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(p.name for p in (*stack, path))
        raise TaskError(f"include cycle: {chain}")
    data = _read_yaml(path)
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise TaskError(f"{path}: include must be a file/task name or a list of them")
    merged: dict[str, Any] = {}
    for ref in includes:
        parent = _resolve(_include_path(ref, path, config_home), (*stack, path), config_home)
        parent.pop("task", None)  # a task's name is its own (or its file's), never inherited
        merged = _deep_merge(merged, parent)
    return _deep_merge(merged, data)


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "(task)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {message}")
    return f"{path}: invalid task:\n" + "\n".join(lines)


def load_task_file(path: str | Path, *, config_home: Path | None = None) -> TaskSpec:
    """Read, resolve (includes) and validate one task file.

    Args:
        path: The YAML file.
        config_home: ``Config.home``, to find user tasks named in ``include:``.

    Raises:
        TaskError: unreadable file, invalid YAML (with its line), include cycle, or a field that
            does not validate (each problem listed with its field path).
    """
    path = Path(path).expanduser()
    data = _resolve(path, (), config_home)
    data.setdefault("task", path.stem)
    data["source"] = str(path.resolve())
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise TaskError(_format_validation(path, exc)) from None


# -- registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    """A listed task: its name, file, and whether it ships with mmagents."""

    name: str
    path: Path
    builtin: bool


_EXTRA: dict[str, Path] = {}


def _builtin_dir() -> Path:
    return Path(str(resources.files("mmagents.eval") / "tasks"))


def _user_dirs(config_home: Path | None) -> list[Path]:
    dirs = [config_home / "tasks"] if config_home is not None else []
    dirs += [
        Path(p).expanduser()
        for p in os.environ.get("MMAGENTS_TASK_PATH", "").split(os.pathsep)
        if p
    ]
    return dirs


def _yaml_files(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix in (".yaml", ".yml") and not path.name.startswith("_"):
                yield path


def _plugin_tasks() -> dict[str, Path]:
    """name → file of the installed ``mmagents.tasks`` entry points.

    An entry point resolves to a path (``str``, ``Path`` or an importlib resource): a YAML file is
    the task named like the entry point; a folder contributes each of its task files by stem.

    Raises:
        TaskError: the entry point cannot be imported or does not name a YAML file or folder.
    """
    found: dict[str, Path] = {}
    for name, target in entry_point_targets("mmagents.tasks").items():
        try:
            path = Path(str(import_string(target)))
        except (ImportError, ValueError) as exc:
            raise TaskError(f"task plugin {name!r} ({target}): {exc}") from None
        if path.is_dir():
            found.update({p.stem: p for p in _yaml_files(path)})
        elif path.suffix in (".yaml", ".yml") and path.is_file():
            found[name] = path
        else:
            raise TaskError(
                f"task plugin {name!r} ({target}) must name a task YAML file or a folder of "
                f"them, got {path}"
            )
    return found


def _registry(config_home: Path | None) -> dict[str, Path]:
    """name → file; reading only the folder listings, never the files (lazy)."""
    found: dict[str, Path] = {p.stem: p for p in _yaml_files(_builtin_dir())}
    found.update(_plugin_tasks())
    for folder in _user_dirs(config_home):
        found.update({p.stem: p for p in _yaml_files(folder)})
    found.update(_EXTRA)
    return found


def register_task(name: str, path: str | Path) -> None:
    """Make the task file ``path`` available under ``name`` in this process."""
    _EXTRA[name] = Path(path).expanduser().resolve()


def list_tasks(config_home: Path | None = None) -> list[TaskInfo]:
    """Every task the registry knows, sorted by name (files are not parsed)."""
    builtin = _builtin_dir().resolve()
    return [
        TaskInfo(name, path, path.resolve().parent == builtin)
        for name, path in sorted(_registry(config_home).items())
    ]


def find_task(name_or_path: str | Path, config_home: Path | None = None) -> Path:
    """The file of a task given by name or path.

    Raises:
        TaskError: no such task.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise TaskError(f"task file not found: {candidate}")
        return candidate
    registry = _registry(config_home)
    if str(name_or_path) not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise TaskError(f"unknown task {str(name_or_path)!r}; known: {known}")
    return registry[str(name_or_path)]


def load_task(name_or_path: str | Path, config_home: Path | None = None) -> TaskSpec:
    """Load a task by registry name or file path (see :func:`load_task_file`)."""
    return load_task_file(find_task(name_or_path, config_home), config_home=config_home)
