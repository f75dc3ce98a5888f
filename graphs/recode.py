"""``recode``: zero-shot visual relation ranking with composite visual cues (Li et al., NeurIPS 2023).

The graph::

    START → prepare ─┬─ Send(write_cues) per predicate without cached cues ─→ score → END
                     └───────────────── (all cues cached) ─────────────────→ score

* ``prepare`` maps the subject and object categories to super-categories, drops implausible
  (category, predicate) pairs with the rule table of :mod:`._relation_vocab` (no LLM call) and
  reads the cached cues of the others;
* ``write_cues`` (one branch per missing predicate, run in parallel) asks the ``cue_writer`` role
  for subject, object and spatial cues plus, after a reasoning step, their weights — cached on
  disk per (predicate, subject super-category, object super-category, model, prompt version), so
  LLM calls grow with distinct keys, not with samples (``categories = "paper"`` uses RECODE's
  human / animal / product instead, at most 9 keys per predicate);
* ``score`` embeds the subject crop, the object crop, their union crop (and, when the scorer can
  read it, the drawn-boxes spatial image) in **one** forward pass, then for each predicate::

      score = w_s·S + w_o·O + w_p·P·0.6 + λ·T

  with S, O, P the mean scores of the subject crop / object crop / spatial evidence against the
  subject / object / spatial cues (written as the paper does: "cat, {cue}" with "subject" → the
  label, "object" → "something"; spatial cues with "red box" / "green box"), w the LLM's weights
  normalised to sum 1, 0.6 the paper's spatial factor, and T the plain triplet score of the union
  crop against "{subject} {predicate} {object}" (λ = ``triplet_weight``, default 1).

Spatial evidence: ``spatial = "image"`` scores the drawn-boxes image with the scorer (the paper);
``"geometric"`` uses :class:`~._spatial.GeometricSpatialScorer` (box geometry → canonical phrases →
``embed``-role similarity). ``"auto"`` (default) picks geometric for scorers that cannot read drawn
boxes (the offline ``label_space``), image otherwise. Options live in ``[graphs.recode]``.
"""

from __future__ import annotations

import argparse
import json
import operator
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from mmagents.errors import ConfigError

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = [
    "RecodeOptions",
    "RecodeState",
    "build_recode_graph",
    "eval_relations_sample",
    "register_cli",
]

#: Scorers that see image content only (not drawn boxes): spatial cues go to the geometric scorer.
BOX_BLIND_SCORERS = frozenset({"label_space"})


@dataclass(frozen=True)
class RecodeOptions:
    """Tunable parts of the pipeline (``[graphs.recode]`` in the config, or keyword overrides).

    Attributes:
        spatial: ``auto``, ``image`` (drawn boxes through the scorer) or ``geometric``.
        filter: Implausible-pair filter: ``rules`` (table), ``llm`` (cue writer's judgement),
            ``both`` or ``none``.
        weights: ``llm`` (the cue writer's weights) or ``equal`` (1/3 each, the paper's ablation).
        triplet_weight: λ, weight of the plain "subject predicate object" score.
        spatial_factor: The paper's extra factor on the spatial term (0.6).
        n_cues: Cues asked for per kind.
        categories: Cue-cache granularity: ``fine`` (the handmade super-categories, unknown
            categories as themselves) or ``paper`` (RECODE's human / animal / product).
        geometric_scale: Scale of the geometric spatial score (CLIP's logit scale by default).
    """

    spatial: str = "auto"
    filter: str = "rules"
    weights: str = "llm"
    triplet_weight: float = 1.0
    spatial_factor: float = 0.6
    n_cues: int = 3
    categories: str = "fine"
    geometric_scale: float = 100.0

    _CHOICES = {  # noqa: RUF012 (class constant, not a field)
        "spatial": ("auto", "image", "geometric"),
        "filter": ("rules", "llm", "both", "none"),
        "weights": ("llm", "equal"),
        "categories": ("fine", "paper"),
    }

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> RecodeOptions:
        """Options from ``[graphs.recode]`` with ``overrides`` on top (unknown keys ignored).

        Raises:
            ConfigError: a value is not one of the allowed choices or not a number.
        """
        names = {f.name: f.type for f in fields(cls)}
        raw = {**dict(config.section("graphs.recode")), **overrides}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in names or value is None:
                continue
            default = getattr(cls, key)
            try:
                values[key] = type(default)(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"[graphs.recode] {key} must be a number, got {value!r}"
                ) from None
        options = replace(cls(), **values)
        for key, allowed in cls._CHOICES.items():
            if getattr(options, key) not in allowed:
                raise ConfigError(f"[graphs.recode] {key} must be one of {allowed}")
        return options


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


class RecodeState(TypedDict, total=False):
    """Graph state.

    Inputs: ``image`` (handle), ``subject`` / ``object`` (``{"category": str, "box": [x1, y1, x2,
    y2]}``), ``predicates`` (candidates). ``prepare`` adds super-categories, ``to_score`` (the
    predicates that passed the filter), the cached ``cues`` and ``to_write`` (the cache misses);
    the cue branches merge into ``cues``; ``score`` writes ``result``.
    """

    image: str
    subject: dict[str, Any]
    object: dict[str, Any]
    predicates: list[str]
    to_score: list[str]
    to_write: list[str]
    filtered: Annotated[list[dict[str, str]], operator.add]
    cues: Annotated[dict[str, dict[str, Any]], _merge]
    llm_calls: Annotated[int, operator.add]
    result: dict[str, Any]


class CueTask(TypedDict):
    """What one ``write_cues`` branch receives."""

    predicate: str
    subject_group: str
    object_group: str


# -- cue texts (the paper's rewriting) -----------------------------------------------------------


def _sub(pattern: str, repl: str, text: str) -> str:
    return re.sub(rf"\b{re.escape(pattern)}\b", repl, text, flags=re.IGNORECASE)


def _tidy(text: str) -> str:
    return " ".join(text.replace("\n", " ").replace(".", " ").split())


def subject_text(cue: str, subject: str) -> str:
    """ "{subject}, {cue}" with "subject" → the label and "object" → "something"."""
    text = f"{subject}, {_tidy(cue)}"
    for word in ("the object", "object"):
        text = _sub(word, "something", text)
    return _sub("subject", subject, text)


def object_text(cue: str, object_: str) -> str:
    """ "{object}, {cue}" with "object" → the label and "subject" → "something"."""
    text = f"{object_}, {_tidy(cue)}"
    for word in ("the subject", "subject"):
        text = _sub(word, "something", text)
    return _sub("object", object_, text)


def spatial_text(cue: str, names: tuple[str, str]) -> str:
    """A spatial cue about the drawn boxes: subject → "red box", object → "green box"."""
    text = _sub("object", "green box", _sub("subject", "red box", _tidy(cue).lower()))
    if names[0] != names[1]:  # a category name in the cue also means its box
        text = _sub(names[1], "green box", _sub(names[0], "red box", text))
    return text[:1].upper() + text[1:]


def _weights(cues: Mapping[str, Any], mode: str) -> tuple[float, float, float]:
    if mode == "equal":
        return (1 / 3, 1 / 3, 1 / 3)
    raw = [max(0.0, float(cues["weights"][k])) for k in ("subject", "object", "spatial")]
    total = sum(raw)
    return (1 / 3, 1 / 3, 1 / 3) if total <= 0 else (raw[0] / total, raw[1] / total, raw[2] / total)


# -- nodes ---------------------------------------------------------------------------------------


class _Recoder:
    """The graph's nodes, bound to their models, caches and options."""

    def __init__(
        self, config: Config, options: RecodeOptions, llm: Any, scorer: Any, embedder: Any
    ) -> None:
        from mmagents.graphs._cues import cue_cache, role_identity, text_feature_cache

        self.config = config
        self.options = options
        self._models = {"llm": llm, "scorer": scorer, "embed": embedder}
        self.cache = cue_cache(config)
        self.features = text_feature_cache(config)
        self.ids = {role: role_identity(config, role) for role in ("llm", "scorer", "embed")}
        self.spatial_mode = options.spatial
        if self.spatial_mode == "auto":
            blind = config.role("scorer").backend in BOX_BLIND_SCORERS
            self.spatial_mode = "geometric" if blind else "image"

    def model(self, role: str) -> Any:
        """The backend of ``role`` (injected, else loaded from the config on first use)."""
        if self._models[role] is None:
            from mmagents.models import load_role

            self._models[role] = load_role(role, self.config)
        return self._models[role]

    def prepare(self, state: RecodeState) -> dict[str, Any]:
        """Validate the input, drop rule-implausible predicates, look the rest up in the cache."""
        from mmagents.graphs._relation_vocab import cue_group, implausible_reason, super_category
        from mmagents.graphs._spatial import validate_box

        entities = {}
        for role in ("subject", "object"):
            entity = dict(state[role])  # type: ignore[literal-required]
            category = str(entity.get("category") or entity.get("name") or "").strip()
            if not category:
                raise ConfigError(f"the {role} needs a category")
            box = validate_box(entity.get("box"), role)
            group = super_category(category)
            entities[role] = {
                "category": category,
                "box": box,
                "super": group,
                "cue_group": cue_group(group, self.options.categories),
            }
        predicates = list(dict.fromkeys(p.strip() for p in state["predicates"] if p.strip()))
        if not predicates:
            raise ConfigError("recode needs at least one candidate predicate")
        to_score, filtered = [], []
        for predicate in predicates:
            reason = None
            if self.options.filter in ("rules", "both"):
                reason = implausible_reason(
                    predicate, entities["subject"]["super"], entities["object"]["super"]
                )
            if reason:
                filtered.append({"predicate": predicate, "reason": reason})
            else:
                to_score.append(predicate)
        groups = (entities["subject"]["cue_group"], entities["object"]["cue_group"])
        # Cached cues are read here, so a warm run does not fan out at all.
        cached = {p: self.cache.get("relation_cues", self._cue_key(p, *groups)) for p in to_score}
        return {
            **entities,
            "predicates": predicates,
            "to_score": to_score,
            "to_write": [p for p, cues in cached.items() if cues is None],
            "cues": {p: cues for p, cues in cached.items() if cues is not None},
            "filtered": filtered,
        }

    def _cue_key(self, predicate: str, subject_group: str, object_group: str) -> dict[str, Any]:
        from mmagents.agents import cue_writer

        return {
            "predicate": predicate,
            "subject": subject_group,
            "object": object_group,
            "model": self.ids["llm"],
            "prompt_version": cue_writer.prompt_version(),
            "n_cues": self.options.n_cues,
        }

    def route(self, state: RecodeState) -> Any:
        """One ``write_cues`` branch per predicate whose cues are not cached (else to score)."""
        from langgraph.types import Send

        subject, object_ = state["subject"]["cue_group"], state["object"]["cue_group"]
        sends = [
            Send("write_cues", CueTask(predicate=p, subject_group=subject, object_group=object_))
            for p in state["to_write"]
        ]
        return sends or "score"

    def write_cues(self, state: CueTask) -> dict[str, Any]:
        """The cues of one predicate, from the on-disk cache or one structured LLM call."""
        from mmagents.agents import cue_writer

        key = self._cue_key(state["predicate"], state["subject_group"], state["object_group"])
        attempts = 0

        def write() -> dict[str, Any]:
            nonlocal attempts
            answer = cue_writer.build_cue_writer(self.model("llm")).invoke(
                {
                    "predicate": state["predicate"],
                    "subject": state["subject_group"],
                    "object": state["object_group"],
                    "n_cues": self.options.n_cues,
                }
            )
            attempts = answer.attempts
            return answer.value.model_dump()

        value, _created = self.cache.get_or_create("relation_cues", key, write)
        return {"cues": {state["predicate"]: value}, "llm_calls": attempts}

    def score(self, state: RecodeState) -> dict[str, Any]:
        """Rank the surviving predicates by the composite cue score plus the triplet score."""
        from mmagents.images import default_store

        cues = state.get("cues", {})
        filtered = list(state.get("filtered", []))
        scored = []
        for predicate in state["to_score"]:
            if self.options.filter in ("llm", "both") and not cues[predicate]["plausible"]:
                filtered.append({"predicate": predicate, "reason": "llm: judged implausible"})
            else:
                scored.append(predicate)
        image = default_store(self.config).get(state["image"])
        ranking = _Scoring(self, image, state).rank(scored, cues) if scored else []
        result = {
            "prediction": ranking[0]["predicate"] if ranking else None,
            "ranking": ranking,
            "filtered": filtered,
            "subject": state["subject"],
            "object": state["object"],
            "spatial_mode": self.spatial_mode,
            "scorer": self.ids["scorer"],
        }
        return {"result": result}


class _Scoring:
    """Scores of one sample: one forward pass over its regions, cached text features."""

    def __init__(self, nodes: _Recoder, image: Any, state: RecodeState) -> None:
        import numpy as np

        from mmagents.graphs._cues import crop
        from mmagents.graphs._spatial import draw_spatial_image

        self.nodes = nodes
        self.sub, self.obj = state["subject"], state["object"]
        sb, ob = self.sub["box"], self.obj["box"]
        union = [min(sb[0], ob[0]), min(sb[1], ob[1]), max(sb[2], ob[2]), max(sb[3], ob[3])]
        regions = [crop(image, sb), crop(image, ob), crop(image, union)]
        if nodes.spatial_mode == "image":
            regions.append(draw_spatial_image(sb, ob))
        scorer = nodes.model("scorer")
        # All regions of the image in one forward pass.
        self.region_features = np.asarray(scorer.embed_images(regions), dtype=np.float32)
        self.scale = float(scorer.logit_scale)
        self.geometric = _geometric_scorer(nodes) if nodes.spatial_mode == "geometric" else None

    def _texts(self, predicate: str, cues: Mapping[str, Any]) -> dict[str, list[str]]:
        s, o = self.sub["category"], self.obj["category"]
        supers = (self.sub["cue_group"], self.obj["cue_group"])
        return {
            "subject": [subject_text(c, s) for c in cues["subject_cues"]],
            "object": [object_text(c, o) for c in cues["object_cues"]],
            "spatial": [spatial_text(c, supers) for c in cues["spatial_cues"]],
            "triplet": [f"{s} {predicate} {o}"],
        }

    def rank(self, predicates: list[str], cues: Mapping[str, Mapping[str, Any]]) -> list[dict]:
        """Evidence and score of each predicate, best first."""
        texts = {p: self._texts(p, cues[p]) for p in predicates}
        kinds = ["subject", "object", "triplet"]
        if self.nodes.spatial_mode == "image":
            kinds.append("spatial")
        flat = list(dict.fromkeys(t for p in predicates for k in kinds for t in texts[p][k]))
        scorer = self.nodes.model("scorer")
        feats = self.nodes.features.features(scorer, self.nodes.ids["scorer"], flat)
        sims = self.scale * (self.region_features @ feats.T)  # regions x texts, scorer units
        column = {t: i for i, t in enumerate(flat)}
        out = [self._one(p, texts[p], cues[p], sims, column) for p in predicates]
        return sorted(out, key=lambda e: -e["score"])

    def _kind(self, row: Any, texts: list[str], column: Mapping[str, int]) -> dict[str, Any]:
        values = [float(row[column[t]]) for t in texts]
        return {
            "score": round(sum(values) / len(values), 4),
            "cues": [{"text": t, "score": round(v, 4)} for t, v in zip(texts, values, strict=True)],
        }

    def _spatial(self, row: Any, texts: list[str], column: Mapping[str, int]) -> dict[str, Any]:
        if self.nodes.spatial_mode == "image":
            return {**self._kind(row, texts, column), "mode": "image"}
        assert self.geometric is not None
        score, matches = self.geometric.score(self.sub["box"], self.obj["box"], texts)
        scale = self.geometric.scale
        cues = [
            {"text": m.cue, "score": round(scale * m.similarity, 4), "matched": m.phrase}
            for m in matches
        ]
        return {"score": round(score, 4), "cues": cues, "mode": "geometric"}

    def _one(
        self,
        predicate: str,
        texts: dict[str, list[str]],
        cues: Mapping[str, Any],
        sims: Any,
        column: Mapping[str, int],
    ) -> dict[str, Any]:
        opts = self.nodes.options
        subject = self._kind(sims[0], texts["subject"], column)
        object_ = self._kind(sims[1], texts["object"], column)
        triplet = self._kind(sims[2], texts["triplet"], column)
        spatial = self._spatial(sims[3] if len(sims) > 3 else None, texts["spatial"], column)
        ws, wo, wp = _weights(cues, opts.weights)
        score = (
            ws * subject["score"]
            + wo * object_["score"]
            + wp * spatial["score"] * opts.spatial_factor
            + opts.triplet_weight * triplet["score"]
        )
        return {
            "predicate": predicate,
            "score": round(score, 4),
            "evidence": {
                "subject": {**subject, "weight": round(ws, 4)},
                "object": {**object_, "weight": round(wo, 4)},
                "spatial": {**spatial, "weight": round(wp, 4)},
                "triplet": {"text": texts["triplet"][0], "score": triplet["score"]},
                "reasoning": cues.get("reasoning", ""),
            },
        }


def _geometric_scorer(nodes: _Recoder) -> Any:
    """The geometric spatial scorer over the ``embed`` role, its features cached on disk."""
    from mmagents.graphs._spatial import GeometricSpatialScorer

    embedder = _EmbedTexts(nodes.model("embed"))
    embed_id = f"embed:{nodes.ids['embed']}"
    return GeometricSpatialScorer(
        lambda texts: nodes.features.features(embedder, embed_id, texts),
        scale=nodes.options.geometric_scale,
    )


class _EmbedTexts:
    """The ``embed`` role seen through the scorer's ``embed_texts`` (for the feature cache)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def embed_texts(self, texts: list[str]) -> Any:
        return self.embedder.embed(texts)


def build_recode_graph(
    config: Config,
    *,
    llm: Any = None,
    scorer: Any = None,
    embedder: Any = None,
    **options: Any,
) -> Any:
    """Compile the RECODE relation-ranking graph.

    Args:
        config: The resolved configuration.
        llm: Chat model for the cue writer (default: the ``llm`` role, loaded on first use).
        scorer: Image–text scorer (default: the ``scorer`` role).
        embedder: Sentence embedder of the geometric spatial scorer (default: the ``embed`` role).
        **options: Overrides of :class:`RecodeOptions` (``spatial``, ``filter``, ...).

    Returns:
        A compiled graph over :class:`RecodeState`; ``result`` holds ``prediction``, ``ranking``
        (each predicate with its score and per-cue evidence), ``filtered`` and ``spatial_mode``.
    """
    from langgraph.graph import END, START, StateGraph

    nodes = _Recoder(config, RecodeOptions.from_config(config, **options), llm, scorer, embedder)
    graph = StateGraph(RecodeState)
    graph.add_node("prepare", nodes.prepare)
    graph.add_node("write_cues", nodes.write_cues, input_schema=CueTask)
    graph.add_node("score", nodes.score)
    graph.add_edge(START, "prepare")
    graph.add_conditional_edges("prepare", nodes.route, ["write_cues", "score"])
    graph.add_edge("write_cues", "score")
    graph.add_edge("score", END)
    return graph.compile()


# -- evaluation ----------------------------------------------------------------------------------

_GRAPHS: dict[str, Any] = {}
_GRAPHS_LOCK = threading.Lock()


def _entity(value: Any, role: str) -> dict[str, Any]:
    """``{"category", "box"}`` from a sample's entity (accepts ``name`` and VG's x/y/w/h too)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"sample {role} must be an object with a category and a box")
    box = value.get("box") or value.get("bbox")
    if box is None and all(k in value for k in ("x", "y", "w", "h")):
        box = [value["x"], value["y"], value["x"] + value["w"], value["y"] + value["h"]]
    return {"category": value.get("category") or value.get("name"), "box": box}


def eval_relations_sample(sample: dict[str, Any], config: Config, **options: Any) -> dict[str, Any]:
    """Harness runner of the ``relations`` task: rank candidate predicates for one pair.

    Args:
        sample: ``image``, ``subject`` and ``object`` (``{"category", "box": [x1, y1, x2, y2]}``),
            ``predicates`` (candidates; else ``options["predicates"]``).
        config: The run's configuration.
        **options: ``predicates`` (list or comma-separated), and :class:`RecodeOptions` fields.

    Returns:
        ``prediction``: all candidates ranked (scored ones by score, then the filtered ones), for
        Recall@K; ``top1``; ``llm_calls`` (cue-writer calls this sample made; cache hits cost 0).
    """
    from mmagents.images import default_store

    predicates = sample.get("predicates") or options.get("predicates") or []
    if isinstance(predicates, str):
        predicates = [p.strip() for p in predicates.split(",") if p.strip()]
    overrides = {k: v for k, v in options.items() if k in RecodeOptions.__dataclass_fields__}
    key = repr((repr(config), sorted(overrides.items())))
    with _GRAPHS_LOCK:
        if key not in _GRAPHS:
            _GRAPHS[key] = build_recode_graph(config, **overrides)
    out = _GRAPHS[key].invoke(
        {
            "image": default_store(config).put(sample["image"]),
            "subject": _entity(sample.get("subject"), "subject"),
            "object": _entity(sample.get("object"), "object"),
            "predicates": list(predicates),
        }
    )
    result = out["result"]
    ranked = [r["predicate"] for r in result["ranking"]] + [
        f["predicate"] for f in result["filtered"]
    ]
    return {"prediction": ranked, "top1": ranked[0], "llm_calls": out.get("llm_calls", 0)}


# -- command line --------------------------------------------------------------------------------


def register_cli(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents run recode --image P --subject CAT X1 Y1 X2 Y2 --object ... --predicates ...``."""
    parser.add_argument("--image", required=True, help="image file (or a stored image handle)")
    entity = ("CATEGORY", "X1", "Y1", "X2", "Y2")
    parser.add_argument("--subject", nargs=5, required=True, metavar=entity)
    parser.add_argument("--object", nargs=5, required=True, metavar=entity)
    parser.add_argument("--predicates", nargs="+", required=True, metavar="PREDICATE")
    parser.add_argument(
        "--spatial",
        choices=RecodeOptions._CHOICES["spatial"],
        help="spatial evidence: drawn boxes through the scorer, box geometry, or auto (default)",
    )
    parser.add_argument(
        "--filter",
        choices=RecodeOptions._CHOICES["filter"],
        help="implausible-pair filter: rule table (default), the cue writer's judgement, ...",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_run_cli)


def _cli_entity(values: list[str], role: str) -> dict[str, Any]:
    try:
        box = [float(v) for v in values[1:]]
    except ValueError:
        raise ConfigError(f"--{role} takes CATEGORY X1 Y1 X2 Y2, got {values}") from None
    return {"category": values[0], "box": box}


def _run_cli(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args
    from mmagents.images import default_store

    config = config_from_args(args)
    graph = build_recode_graph(config, spatial=args.spatial, filter=args.filter)
    out = graph.invoke(
        {
            "image": default_store(config).put(args.image),
            "subject": _cli_entity(args.subject, "subject"),
            "object": _cli_entity(args.object, "object"),
            "predicates": list(args.predicates),
        }
    )
    result = {**out["result"], "llm_calls": out.get("llm_calls", 0)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s, o = result["subject"]["category"], result["object"]["category"]
    print(f"{s} ? {o}   (spatial evidence: {result['spatial_mode']})")
    for entry in result["ranking"]:
        ev = entry["evidence"]
        print(
            f"  {entry['score']:9.3f}  {entry['predicate']:<16} subject {ev['subject']['score']:.2f}"
            f"  object {ev['object']['score']:.2f}  spatial {ev['spatial']['score']:.2f}"
            f"  triplet {ev['triplet']['score']:.2f}"
        )
    for entry in result["filtered"]:
        print(f"  {'filtered':>9}  {entry['predicate']:<16} {entry['reason']}")
    return 0
