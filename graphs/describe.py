"""``describe``: visual classification via description (Menon & Vondrick, ICLR 2023).

The graph::

    START → descriptors → score → END

``descriptors`` takes each class's visual descriptors from a published descriptor JSON (the
``{class: [descriptor, ...]}`` files of the reference release) or asks the ``descriptor_writer``
LLM role, caching the answer per (class, model identity, prompt version). ``score`` embeds the
image once, rates it against "{class}, which (is/has) {descriptor}" for every descriptor (text
features cached on disk) and scores each class by the mean over its descriptors; the best
descriptors of the predicted class are its explanation. The same pass scores the plain "{class}"
texts: the paper's baseline, reported beside the descriptor ranking.

>>> graph = build_describe_graph(config)
>>> out = graph.invoke({"image": handle, "classes": ["tabby cat", "goldfish"]})
>>> out["result"]["prediction"], out["result"]["explanation"][0]["descriptor"]
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from mmagents.errors import ConfigError

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = [
    "DescribeState",
    "DescriptorClassifier",
    "build_describe_graph",
    "descriptor_sentence",
    "eval_classify_sample",
    "load_descriptor_file",
    "register_cli",
]

_VERBS_AS_IS = ("has", "often", "typically", "may", "can")


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
        stat = file.stat()
    except FileNotFoundError:
        raise ConfigError(f"descriptor file not found: {file}") from None
    return dict(_load_descriptor_file(str(file.resolve()), stat.st_mtime_ns))


@lru_cache(maxsize=8)
def _load_descriptor_file(path: str, _mtime: int) -> dict[str, list[str]]:
    # Cached per (path, mtime): an eval run loads the 1000-class file once, not per sample.
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"descriptor file {path} is not valid JSON: {exc}") from None
    ok = isinstance(data, dict) and all(
        isinstance(v, list) and all(isinstance(d, str) for d in v) for v in data.values()
    )
    if not ok:
        raise ConfigError(f"descriptor file {path} must map class names to lists of strings")
    return {str(k): [d.strip() for d in v if d.strip()] for k, v in data.items()}


class DescribeState(TypedDict, total=False):
    """Graph state: inputs (``image`` handle, ``classes``), then what the nodes add."""

    image: str
    classes: list[str]
    descriptors: dict[str, list[str]]
    descriptor_source: str
    llm_calls: Annotated[int, operator.add]
    result: dict[str, Any]


#: The protocols: ``default`` (ours) and ``paper`` (the reference release's texts, see
#: graphs/_describe_paper.py and docs/reproduce.md).
PROTOCOLS = ("default", "paper")


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


class _Describer:
    """The graph's nodes, bound to their models and caches."""

    def __init__(
        self,
        config: Config,
        llm: Any,
        scorer: Any,
        table: Mapping[str, list[str]] | None,
        source: str,
        top_descriptors: int,
        top_classes: int | None,
        protocol: str = "default",
        suffix: str = "",
    ) -> None:
        from mmagents.graphs._cues import cue_cache, role_identity, text_feature_cache

        self.protocol, self.suffix = protocol, suffix
        self.config = config
        self._llm = llm
        self._scorer = scorer
        self.table = table
        self.source = source
        self.top_descriptors = top_descriptors
        self.top_classes = top_classes
        self.cache = cue_cache(config)
        self.features = text_feature_cache(config)
        self.scorer_id = role_identity(config, "scorer")
        self.llm_id = role_identity(config, "llm")
        self._classifiers: dict[str, DescriptorClassifier] = {}
        self._lock = threading.Lock()

    @property
    def llm(self) -> Any:
        if self._llm is None:
            from mmagents.models import load_role

            self._llm = load_role("llm", self.config)
        return self._llm

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from mmagents.models import load_role

            self._scorer = load_role("scorer", self.config)
        return self._scorer

    # -- nodes ---------------------------------------------------------------------------------

    def descriptors(self, state: DescribeState) -> dict[str, Any]:
        """Descriptors of every class: from the table, else written (and cached) by the LLM."""
        classes = state["classes"]
        if self.table is not None:
            missing = [c for c in classes if c not in self.table]
            if missing:
                raise ConfigError(
                    f"{len(missing)} class(es) have no descriptors in {self.source}: "
                    f"{', '.join(missing[:10])}"
                )
            return {
                "descriptors": {c: list(self.table[c]) for c in classes},
                "descriptor_source": self.source,
                "llm_calls": 0,
            }
        calls = 0
        out: dict[str, list[str]] = {}
        for name in classes:
            out[name], made = self._written(name)
            calls += made
        return {"descriptors": out, "descriptor_source": "llm", "llm_calls": calls}

    def _written(self, class_name: str) -> tuple[list[str], int]:
        """(descriptors, LLM calls made) for one class, through the on-disk cue cache."""
        if self.protocol == "paper":
            return self._written_paper(class_name)
        from mmagents.agents import descriptor_writer

        key = {
            "class": class_name,
            "model": self.llm_id,
            "prompt_version": descriptor_writer.prompt_version(),
        }
        attempts = 0

        def write() -> list[str]:
            nonlocal attempts
            writer = descriptor_writer.build_descriptor_writer(self.llm)
            answer = writer.invoke({"class_name": class_name})
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
        from mmagents.prompts import load_prompt

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
            reply = self.llm.invoke(descriptor_prompt(class_name))
            # The prompt ends inside the answer list ("-\n"): a reply that continues the list
            # without a leading "- " on its first line still counts, as "- " + that line.
            return parse_descriptors("- " + str(reply.content).lstrip("- "))

        value, _created = self.cache.get_or_create("descriptors", key, write)
        return list(value), calls

    def score(self, state: DescribeState) -> dict[str, Any]:
        """Score every class by its descriptors (and by its plain name, the baseline)."""
        from mmagents.images import default_store

        classifier = self.classifier(state["classes"], state["descriptors"])
        image = default_store(self.config).get(state["image"])
        (result,) = classifier.classify([image], top_k=self.top_classes)
        result["descriptor_source"] = state.get("descriptor_source", "llm")
        result["scorer"] = self.scorer_id
        return {"result": result}

    def classifier(
        self, classes: Sequence[str], descriptors: Mapping[str, list[str]]
    ) -> DescriptorClassifier:
        """The classifier of this label space, reused across samples (one per class set)."""
        key = json.dumps([list(classes), [descriptors.get(c, []) for c in classes], self.protocol])
        with self._lock:
            if key not in self._classifiers:
                if len(self._classifiers) >= 8:
                    self._classifiers.pop(next(iter(self._classifiers)))
                self._classifiers[key] = DescriptorClassifier(
                    self.scorer,
                    classes,
                    descriptors,
                    text_features=lambda texts: self.features.features(
                        self.scorer, self.scorer_id, texts
                    ),
                    top_descriptors=self.top_descriptors,
                    protocol=self.protocol,
                    suffix=self.suffix,
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
        import numpy as np

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

    def classify(self, images: Sequence[Any], *, top_k: int | None = None) -> list[dict[str, Any]]:
        """One result per image: ``prediction``, ranked ``scores``, ``explanation``, ``baseline``.

        Args:
            images: The batch (embedded in one ``embed_images`` call).
            top_k: How many classes each ranking lists (default: all).
        """
        import numpy as np

        from mmagents.graphs._cues import class_mean_scores, single_threaded_blas

        image_features = np.asarray(self.scorer.embed_images(list(images)), dtype=np.float32)
        scale = float(self.scorer.logit_scale)
        class_scores, text_scores = class_mean_scores(
            image_features, self.descriptor_features, self.sizes, scale
        )
        with single_threaded_blas():
            baseline = scale * (image_features @ self.name_features.T)
        keep = len(self.classes) if top_k is None else max(1, min(top_k, len(self.classes)))
        order, base_order = _top(class_scores, keep), _top(baseline, keep)
        return [
            {
                "prediction": self.classes[order[i, 0]],
                "scores": self._ranking(order[i], class_scores[i]),
                "explanation": self._explanation(int(order[i, 0]), text_scores[i]),
                "baseline": {
                    "prediction": self.classes[base_order[i, 0]],
                    "scores": self._ranking(base_order[i], baseline[i]),
                },
            }
            for i in range(len(images))
        ]

    def _ranking(self, order: Any, scores: Any) -> list[dict[str, Any]]:
        return [{"class": self.classes[j], "score": round(float(scores[j]), 4)} for j in order]

    def _explanation(self, best: int, text_scores: Any) -> list[dict[str, Any]]:
        """The predicted class's descriptors, best first (its "because it shows")."""
        start = self.starts[best]
        own = text_scores[start : start + self.sizes[best]]
        pairs = sorted(zip(self.descriptors[best], own, strict=True), key=lambda p: -float(p[1]))
        return [
            {"descriptor": d, "score": round(float(v), 4)} for d, v in pairs[: self.top_descriptors]
        ]


def _top(scores: Any, k: int) -> Any:
    """Indices of the ``k`` best columns of each row, best first (ties keep column order)."""
    import numpy as np

    if k < scores.shape[1]:
        candidates = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    ranked = np.argsort(-np.take_along_axis(scores, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, ranked, axis=1)


def _table_of(descriptors: Mapping[str, list[str]] | str | Path | None) -> tuple[Any, str]:
    if descriptors is None:
        return None, "llm"
    if isinstance(descriptors, Mapping):
        return descriptors, "table"
    return load_descriptor_file(descriptors), f"file:{descriptors}"


def build_describe_graph(
    config: Config,
    *,
    llm: Any = None,
    scorer: Any = None,
    descriptors: Mapping[str, list[str]] | str | Path | None = None,
    top_descriptors: int = 3,
    top_classes: int | None = None,
    protocol: str = "default",
    dataset: str | None = None,
) -> Any:
    """Compile the classification-by-description graph.

    Args:
        config: The resolved configuration (models, cache folder, image limits).
        llm: Chat model for the descriptor writer (default: the ``llm`` role, loaded on first use).
        scorer: Image–text scorer (default: the ``scorer`` role).
        descriptors: A published descriptor table, or the path of its JSON file; ``None`` asks the
            LLM for each class (cached per class, model and prompt version).
        top_descriptors: How many of the predicted class's descriptors explain the prediction.
        top_classes: How many classes the rankings list (default: all).
        protocol: ``default``, or ``paper``: the reference release's texts (a "." after every
            text for ``dataset="imagenet"``, the class-name baseline included) and, without a
            descriptor table, its two-example descriptor prompt.
        dataset: The dataset name the ``paper`` protocol's text suffix depends on.

    Returns:
        A compiled LangGraph graph over :class:`DescribeState`; its ``result`` holds
        ``prediction``, ``scores``, ``explanation``, ``baseline`` and ``descriptor_source``.
    """
    from langgraph.graph import END, START, StateGraph

    from mmagents.graphs._describe_paper import suffix_for

    if protocol not in PROTOCOLS:
        raise ConfigError(f"describe: protocol must be one of {PROTOCOLS}, got {protocol!r}")
    table, source = _table_of(descriptors)
    suffix = suffix_for(dataset) if protocol == "paper" else ""
    nodes = _Describer(
        config, llm, scorer, table, source, top_descriptors, top_classes, protocol, suffix
    )
    graph = StateGraph(DescribeState)
    graph.add_node("descriptors", nodes.descriptors)
    graph.add_node("score", nodes.score)
    graph.add_edge(START, "descriptors")
    graph.add_edge("descriptors", "score")
    graph.add_edge("score", END)
    return graph.compile()


# -- evaluation --------------------------------------------------------------------------------

_GRAPHS: dict[tuple[str, str, int, str, str], Any] = {}
_GRAPHS_LOCK = threading.Lock()


def _cached_graph(
    config: Config,
    descriptors: str | None,
    top_k: int,
    protocol: str = "default",
    dataset: str = "",
) -> Any:
    """One compiled graph per (config, descriptor file, top k, protocol) for a whole eval run."""
    key = (repr(config), str(descriptors), top_k, protocol, dataset)
    with _GRAPHS_LOCK:
        if key not in _GRAPHS:
            _GRAPHS[key] = build_describe_graph(
                config,
                descriptors=descriptors,
                top_classes=top_k,
                protocol=protocol,
                dataset=dataset or None,
            )
        return _GRAPHS[key]


def _class_list(value: Any) -> list[str]:
    """Classes from a list, a comma-separated string, or a file (JSON list/table or one per line)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value)
    if os.path.isfile(text):
        body = Path(text).read_text(encoding="utf-8")
        if text.endswith(".json"):
            data = json.loads(body)
            return [str(k) for k in (data.keys() if isinstance(data, dict) else data)]
        return [line.strip() for line in body.splitlines() if line.strip()]
    return [c.strip() for c in text.split(",") if c.strip()]


def eval_classify_sample(sample: dict[str, Any], config: Config, **options: Any) -> dict[str, Any]:
    """Harness runner of the ``classify`` task: one image, ranked with and without descriptors.

    The label space is, first found: ``options["classes"]``; all classes of the descriptor file
    (``options["descriptors"]``: the paper ranks among the dataset's whole label space, e.g. the
    1000 ImageNet classes); ``sample["classes"]`` (the harness attaches the data's label set).

    Args:
        sample: ``image`` (path or handle) and optionally ``classes``.
        config: The run's configuration.
        **options: ``classes`` (list, comma-separated string or file), ``descriptors`` (a
            descriptor JSON file; default: LLM-written), ``top_k`` (default 5), ``protocol``
            (``default`` / ``paper``) and ``dataset`` (``imagenet`` gives the paper's ".").

    Returns:
        ``prediction`` and ``ranking`` (the ``top_k`` best classes by descriptors),
        ``prediction_baseline`` and ``ranking_baseline`` (by plain class names, the paper's
        comparison), ``explanation`` (the prediction's best descriptors) and ``llm_calls``.

    Raises:
        ConfigError: no label space, or a class without descriptors in the file.
    """
    from mmagents.images import default_store

    if options.get("classes"):
        classes = _class_list(options["classes"])
    elif options.get("descriptors"):
        classes = list(load_descriptor_file(options["descriptors"]))
    else:
        classes = _class_list(sample.get("classes") or [])
    if not classes:
        raise ConfigError(
            "classify needs classes: --set classes=..., descriptors=FILE or data labels"
        )
    top_k = int(options.get("top_k", 5))
    graph = _cached_graph(
        config,
        options.get("descriptors"),
        top_k,
        str(options.get("protocol", "default")),
        str(options.get("dataset") or ""),
    )
    handle = default_store(config).put(sample["image"])
    out = graph.invoke({"image": handle, "classes": classes})
    result = out["result"]
    return {
        "prediction": result["prediction"],
        "ranking": [s["class"] for s in result["scores"]],
        "prediction_baseline": result["baseline"]["prediction"],
        "ranking_baseline": [s["class"] for s in result["baseline"]["scores"]],
        "explanation": [e["descriptor"] for e in result["explanation"]],
        "llm_calls": out.get("llm_calls", 0),
    }


# -- command line ------------------------------------------------------------------------------


def register_cli(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents run describe --image PATH --classes a b c [--descriptors FILE] [--json]``."""
    parser.add_argument("--image", required=True, help="image file (or a stored image handle)")
    parser.add_argument("--classes", nargs="+", required=True, metavar="CLASS")
    parser.add_argument(
        "--descriptors", metavar="FILE", help="descriptor JSON {class: [descriptor, ...]}"
    )
    parser.add_argument("--top", type=int, default=5, help="classes to show (default 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args
    from mmagents.images import default_store

    config = config_from_args(args)
    graph = build_describe_graph(config, descriptors=args.descriptors, top_classes=args.top)
    handle = default_store(config).put(args.image)
    out = graph.invoke({"image": handle, "classes": list(args.classes)})
    result = {**out["result"], "image": handle, "llm_calls": out.get("llm_calls", 0)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"prediction: {result['prediction']}  (plain class names: {result['baseline']['prediction']})"
    )
    for entry in result["scores"]:
        print(f"  {entry['score']:9.3f}  {entry['class']}")
    print("because it shows:")
    for entry in result["explanation"]:
        print(f"  {entry['score']:9.3f}  {entry['descriptor']}")
    return 0
