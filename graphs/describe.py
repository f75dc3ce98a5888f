"""``describe``: visual classification via description (Menon & Vondrick, ICLR 2023).

The graph::

    START → descriptors → score → END

``descriptors`` takes each class's visual descriptors from the input's ``descriptor_table``, from
a published descriptor JSON (setting ``descriptors``: the ``{class: [descriptor, ...]}`` files of
the reference release) or asks the ``descriptor_writer`` LLM role, caching the answer per (class, model
identity, prompt version). ``score`` embeds the image once, rates it against "{class}, which
(is/has) {descriptor}" for every descriptor (text features cached on disk) and scores each class by
the mean over its descriptors; the best descriptors of the predicted class are its explanation.
The same pass scores the plain "{class}" texts: the paper's baseline, reported beside the
descriptor ranking.

>>> graph = build_describe_graph(config)
>>> out = graph.invoke({"image": handle, "classes": ["tabby cat", "goldfish"]},
...                    context=DescribeSettings(top_classes=1))
>>> out["prediction"], out["explanation"][0]["descriptor"]
"""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypedDict

import numpy as np
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from mmagents._config import Config
from mmagents.agents import descriptor_writer
from mmagents.errors import ConfigError
from mmagents.graphs._cues import (
    class_mean_scores,
    cue_cache,
    role_identity,
    single_threaded_blas,
    text_feature_cache,
)
from mmagents.graphs._settings import PipelineSettings, context_of, resolve_settings
from mmagents.models.base import feature_scores
from mmagents.prompts import load_prompt
from mmagents.runtime import Models, image_input

__all__ = [
    "ClassScore",
    "DescribeInput",
    "DescribeOutput",
    "DescribeSettings",
    "DescribeState",
    "DescriptorClassifier",
    "DescriptorScore",
    "build_describe_graph",
    "descriptor_sentence",
    "load_descriptor_file",
]

_VERBS_AS_IS = ("has", "often", "typically", "may", "can")


class DescribeSettings(PipelineSettings):
    """Knobs of one run (``[graphs.describe]``, or per run: ``--set top_classes=1``)."""

    section: ClassVar[str] = "graphs.describe"

    descriptors: str | None = Field(
        None,
        description="published descriptor JSON {class: [descriptor, ...]}; unset: the LLM "
        "writes each class's descriptors (cached per class, model and prompt version)",
    )
    label_space: Literal["input", "descriptors"] = Field(
        "input",
        description="input: rank the input's classes; descriptors: rank every class of the "
        "descriptor file (the paper ranks among the dataset's whole label space)",
    )
    top_classes: int | None = Field(5, ge=1, description="classes each ranking lists (null: all)")
    top_descriptors: int = Field(
        3, ge=1, le=50, description="descriptors of the predicted class that explain it"
    )
    max_repairs: int = Field(
        2, ge=0, le=10, description="repair attempts per LLM answer that does not validate"
    )
    protocol: Literal["default", "paper"] = Field(
        "default",
        description="paper: the reference release's texts (a '.' after every text for "
        "dataset=imagenet, the class-name baseline's too) and, without descriptors, its "
        "two-example descriptor prompt (graphs/_describe_paper.py, docs/reproduce.md)",
    )
    dataset: str | None = Field(
        None, description="the dataset the paper protocol's text suffix depends on (imagenet)"
    )


class DescribeInput(BaseModel):
    """One image and the classes to rank it among."""

    image: str = image_input("the image to classify (a file, or a stored image handle)")
    classes: list[str] | None = Field(
        None, min_length=1, description="candidate classes (default: the descriptor file's)"
    )
    descriptor_table: dict[str, list[str]] | None = Field(
        None, description="descriptors per class given with the request (instead of the file)"
    )


ClassScore = TypedDict("ClassScore", {"class": str, "score": float})


class DescriptorScore(TypedDict):
    """One descriptor of the predicted class and its score."""

    descriptor: str
    score: float


class DescribeOutput(TypedDict, total=False):
    """The result: both rankings (by descriptors and by plain class names) and the explanation."""

    prediction: str
    ranking: list[str]
    scores: list[ClassScore]
    explanation: list[DescriptorScore]
    prediction_baseline: str
    ranking_baseline: list[str]
    scores_baseline: list[ClassScore]
    descriptor_source: str
    scorer: str
    llm_calls: Annotated[int, operator.add]


class DescribeState(DescribeOutput, total=False):
    """The output's keys, the input, and the descriptors the ``descriptors`` node settled on."""

    image: str
    classes: list[str] | None
    descriptor_table: dict[str, list[str]] | None
    descriptors: dict[str, list[str]]


def descriptor_sentence(class_name: str, descriptor: str) -> str:
    """The text the scorer rates: "{class}, which (is/has) {descriptor}".

    This is the reference release's wording rule, kept exactly (its published numbers depend on
    it): a descriptor starting with the letter "a" (meant for "a"/"an") or with "used" takes
    "which is"; one starting with "has", "often", "typically", "may" or "can" takes "which";
    anything else takes "which has". Underscores in class names become spaces.
    """
    name = class_name.replace("_", " ")
    if descriptor.startswith("a") or descriptor.startswith("used"):
        return f"{name}, which is {descriptor}"
    if descriptor.startswith(_VERBS_AS_IS):
        return f"{name}, which {descriptor}"
    return f"{name}, which has {descriptor}"


def load_descriptor_file(path: str | Path) -> dict[str, list[str]]:
    """Read a descriptor JSON file ``{class: [descriptor, ...]}`` (the published format).

    Raises:
        ConfigError: missing file, invalid JSON, or not a mapping of names to string lists.
    """
    file = Path(path).expanduser()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"descriptor file not found: {file}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"descriptor file {file} is not valid JSON: {exc}") from None
    ok = isinstance(data, dict) and all(
        isinstance(v, list) and all(isinstance(d, str) for d in v) for v in data.values()
    )
    if not ok:
        raise ConfigError(f"descriptor file {file} must map class names to lists of strings")
    return {str(k): [d.strip() for d in v if d.strip()] for k, v in data.items()}


def _texts_of(
    classes: Sequence[str],
    descriptors: Mapping[str, list[str]],
    protocol: str = "default",
    suffix: str = "",
) -> list[list[str]]:
    """Per class, the texts to score; a class without descriptors falls back to its name.

    The ``paper`` protocol appends ``suffix`` (ImageNet's ".") and scores a class without
    descriptors by "{class}, which has " + suffix, as the reference does.
    """
    if protocol == "paper":
        # Imported here: _describe_paper builds on descriptor_sentence from this module.
        from mmagents.graphs._describe_paper import class_texts

        return [class_texts(c, descriptors.get(c, []), suffix) for c in classes]
    return [
        [descriptor_sentence(c, d) for d in descriptors.get(c, [])] or [c.replace("_", " ")]
        for c in classes
    ]


class _Nodes:
    """The graph's nodes over one runtime; settings are read per run.

    What they keep lives as long as the compiled graph (one eval run, one CLI call): the parsed
    descriptor files, the classifiers of the label spaces seen (text features fetched once), and
    the on-disk caches of written descriptors and text features.
    """

    def __init__(self, models: Models, default: DescribeSettings, config: Config) -> None:
        self.models = models
        self.default = default
        self.cache = cue_cache(config)
        self.features = text_feature_cache(config)
        self.scorer_id = role_identity(config, "scorer")
        self.llm_id = role_identity(config, "llm")
        self._files: dict[tuple[str, int], dict[str, list[str]]] = {}
        self._classifiers: dict[str, DescriptorClassifier] = {}
        self._lock = threading.Lock()

    def _file(self, path: str) -> dict[str, list[str]]:
        """A descriptor file, parsed once per (path, mtime): an eval run reads 1000 classes once."""
        file = Path(path).expanduser()
        try:
            key = (str(file.resolve()), file.stat().st_mtime_ns)
        except FileNotFoundError:
            raise ConfigError(f"descriptor file not found: {file}") from None
        with self._lock:
            if key not in self._files:
                self._files[key] = load_descriptor_file(file)
            return self._files[key]

    def descriptors(
        self, state: DescribeState, runtime: Runtime[DescribeSettings]
    ) -> dict[str, Any]:
        """The label space and its descriptors: given, from the file, else written by the LLM."""
        s = context_of(runtime, self.default)
        table: Mapping[str, list[str]] | None = state.get("descriptor_table")
        source = "input"
        if table is None and s.descriptors:
            table, source = self._file(s.descriptors), f"file:{s.descriptors}"
        classes = state.get("classes")
        if table is not None and (not classes or s.label_space == "descriptors"):
            classes = list(table)
        if not classes:
            raise ConfigError(
                "describe needs classes: give --classes, or a descriptor file "
                "(--set descriptors=FILE)"
            )
        if table is not None:
            missing = [c for c in classes if c not in table]
            if missing:
                raise ConfigError(
                    f"{len(missing)} class(es) have no descriptors in {source}: "
                    f"{', '.join(missing[:10])}"
                )
            return {
                "classes": classes,
                "descriptors": {c: list(table[c]) for c in classes},
                "descriptor_source": source,
                "llm_calls": 0,
            }
        calls = 0
        written: dict[str, list[str]] = {}
        for name in classes:
            if s.protocol == "paper":
                written[name], made = self._written_paper(name)
            else:
                written[name], made = self._written(name, s.max_repairs)
            calls += made
        return {
            "classes": classes,
            "descriptors": written,
            "descriptor_source": "llm",
            "llm_calls": calls,
        }

    def _written(self, class_name: str, max_repairs: int) -> tuple[list[str], int]:
        """(descriptors, LLM calls made) for one class, through the on-disk cue cache."""
        key = {
            "class": class_name,
            "model": self.llm_id,
            "prompt_version": descriptor_writer.prompt_version(),
        }
        attempts = 0

        def write() -> list[str]:
            nonlocal attempts
            writer = descriptor_writer.build_descriptor_writer(
                self.models.llm, max_repairs=max_repairs
            )
            answer = writer.invoke({"class_name": class_name}, get_config())
            attempts = answer.attempts
            return list(answer.value.visual_features)

        value, _created = self.cache.get_or_create("descriptors", key, write)
        return list(value), attempts

    def _written_paper(self, class_name: str) -> tuple[list[str], int]:
        """The published two-example prompt as one completion; its "- " lines are the descriptors."""
        from mmagents.graphs._describe_paper import (
            PROMPT_ROLE,
            descriptor_prompt,
            parse_descriptors,
        )

        key = {
            "class": class_name,
            "model": self.llm_id,
            "prompt": PROMPT_ROLE,
            "prompt_version": load_prompt(PROMPT_ROLE).version,
        }
        calls = 0

        def write() -> list[str]:
            nonlocal calls
            calls = 1
            reply = self.models.llm.invoke(descriptor_prompt(class_name), get_config())
            # The prompt ends inside the answer list ("-\n"): a reply that continues the list
            # without a leading "- " on its first line still counts, as "- " + that line.
            return parse_descriptors("- " + str(reply.content).lstrip("- "))

        value, _created = self.cache.get_or_create("descriptors", key, write)
        return list(value), calls

    def score(self, state: DescribeState, runtime: Runtime[DescribeSettings]) -> dict[str, Any]:
        """Score every class by its descriptors (and by its plain name, the baseline)."""
        s = context_of(runtime, self.default)
        classes, descriptors = state["classes"] or [], state["descriptors"]
        classifier = self.classifier(classes, descriptors, s)
        image = self.models.store.resolve(state["image"])
        (result,) = classifier.classify([image], top_k=s.top_classes)
        return {**result, "scorer": self.scorer_id}

    def classifier(
        self, classes: Sequence[str], descriptors: Mapping[str, list[str]], s: DescribeSettings
    ) -> DescriptorClassifier:
        """The classifier of this label space, reused across samples (one per class set)."""
        # Imported here: _describe_paper builds on descriptor_sentence from this module.
        from mmagents.graphs._describe_paper import suffix_for

        suffix = suffix_for(s.dataset) if s.protocol == "paper" else ""
        texts = [descriptors.get(c, []) for c in classes]
        key = json.dumps([list(classes), texts, s.top_descriptors, s.protocol, suffix])
        with self._lock:
            if key not in self._classifiers:
                if len(self._classifiers) >= 8:
                    self._classifiers.pop(next(iter(self._classifiers)))
                scorer = self.models.scorer
                self._classifiers[key] = DescriptorClassifier(
                    scorer,
                    classes,
                    descriptors,
                    text_features=lambda texts: self.features.features(
                        scorer, self.scorer_id, texts
                    ),
                    top_descriptors=s.top_descriptors,
                    protocol=s.protocol,
                    suffix=suffix,
                )
            return self._classifiers[key]


class DescriptorClassifier:
    """Batched classification by description over one label space.

    Text features of every "{class}, which ..." sentence and of every plain class name are fetched
    once, at construction; :meth:`classify` then costs one ``embed_images`` call per batch plus two
    matrix products.

    Args:
        scorer: The image–text scorer.
        classes: The label space.
        descriptors: Descriptors per class (a class without any is scored by its name alone).
        text_features: ``texts -> (n, d)`` features (default: ``scorer.embed_texts``, uncached).
        top_descriptors: How many descriptors explain each prediction.
        protocol: ``default`` or ``paper`` (the reference's texts, with ``suffix`` appended).
        suffix: Text appended to every scored text under the ``paper`` protocol.
    """

    def __init__(
        self,
        scorer: Any,
        classes: Sequence[str],
        descriptors: Mapping[str, list[str]],
        *,
        text_features: Any = None,
        top_descriptors: int = 3,
        protocol: str = "default",
        suffix: str = "",
    ) -> None:
        if not classes:
            raise ConfigError("classification needs at least one class")
        self.scorer = scorer
        self.classes = list(classes)
        self.names = [c.replace("_", " ") for c in self.classes]
        self.descriptors = [
            descriptors.get(c) or [n] for c, n in zip(self.classes, self.names, strict=True)
        ]
        groups = _texts_of(self.classes, descriptors, protocol, suffix)
        self.sizes = [len(g) for g in groups]
        flat = [t for g in groups for t in g]
        embed = text_features or scorer.embed_texts
        # The paper's class-name baseline gets the same suffix (load.py label_after_text).
        name_texts = [n + suffix for n in self.names] if protocol == "paper" else self.names
        features = np.asarray(embed(flat + name_texts), dtype=np.float32)
        self.descriptor_features = features[: len(flat)]
        self.name_features = features[len(flat) :]
        self.starts = np.cumsum([0, *self.sizes[:-1]])
        self.top_descriptors = top_descriptors

    def classify(self, images: Sequence[Any], *, top_k: int | None = None) -> list[DescribeOutput]:
        """One result per image: the :class:`DescribeOutput` fields of both rankings.

        Args:
            images: The batch (embedded in one ``embed_images`` call).
            top_k: How many classes each ranking lists (default: all).
        """
        image_features = np.asarray(self.scorer.embed_images(list(images)), dtype=np.float32)
        scale = float(self.scorer.logit_scale)
        class_scores, text_scores = class_mean_scores(
            image_features, self.descriptor_features, self.sizes, scale
        )
        with single_threaded_blas():
            baseline = feature_scores(scale, image_features, self.name_features)
        keep = len(self.classes) if top_k is None else max(1, min(top_k, len(self.classes)))
        order, base_order = _top(class_scores, keep), _top(baseline, keep)
        return [
            {
                "prediction": self.classes[order[i, 0]],
                "ranking": [self.classes[j] for j in order[i]],
                "scores": self._ranking(order[i], class_scores[i]),
                "explanation": self._explanation(int(order[i, 0]), text_scores[i]),
                "prediction_baseline": self.classes[base_order[i, 0]],
                "ranking_baseline": [self.classes[j] for j in base_order[i]],
                "scores_baseline": self._ranking(base_order[i], baseline[i]),
            }
            for i in range(len(images))
        ]

    def _ranking(self, order: Any, scores: Any) -> list[ClassScore]:
        return [{"class": self.classes[j], "score": round(float(scores[j]), 4)} for j in order]

    def _explanation(self, best: int, text_scores: Any) -> list[DescriptorScore]:
        """The predicted class's descriptors, best first (its "because it shows")."""
        start = self.starts[best]
        own = text_scores[start : start + self.sizes[best]]
        pairs = sorted(zip(self.descriptors[best], own, strict=True), key=lambda p: -float(p[1]))
        return [
            {"descriptor": d, "score": round(float(v), 4)} for d, v in pairs[: self.top_descriptors]
        ]


def _top(scores: Any, k: int) -> Any:
    """Indices of the ``k`` best columns of each row, best first (ties keep column order)."""
    if k < scores.shape[1]:
        candidates = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    ranked = np.argsort(-np.take_along_axis(scores, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, ranked, axis=1)


def build_describe_graph(
    config: Config | None = None,
    *,
    models: Models | None = None,
    settings: DescribeSettings | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[DescribeState, DescribeSettings, DescribeInput, DescribeOutput]:
    """Compile the classification-by-description graph (no model loads until a node needs it).

    Args:
        config: The configuration (roles, cache folder, ``[graphs.describe]``); default: the
            models' config, else :func:`~mmagents.load_config`.
        models: The runtime: ``llm`` (descriptor writer), ``scorer`` and the image store
            (default: ``Models(config)``).
        settings: The settings used when a run passes no ``context`` (default: from the config).
        checkpointer: A LangGraph checkpointer (runs then need a ``thread_id``).

    Raises:
        ConfigError: an invalid ``[graphs.describe]`` section.
    """
    models = models or Models(config)
    config = config or models.config
    default = settings or resolve_settings(DescribeSettings, config)
    nodes = _Nodes(models, default, config)
    graph = StateGraph(
        DescribeState,
        context_schema=DescribeSettings,
        input_schema=DescribeInput,
        output_schema=DescribeOutput,
    )
    graph.add_node("descriptors", nodes.descriptors)
    graph.add_node("score", nodes.score)
    graph.add_edge(START, "descriptors")
    graph.add_edge("descriptors", "score")
    graph.add_edge("score", END)
    return graph.compile(checkpointer=checkpointer, name="describe")
