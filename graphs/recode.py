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
  read it, the drawn-boxes spatial image) in **one** forward pass — only those the graph has not
  embedded yet: region features are cached per graph by what the pixels are, so an image's
  pairs embed each object crop once — then for each predicate::

      score = w_s·S + w_o·O + w_p·P·0.6 + λ·T

  with S, O, P the mean scores of the subject crop / object crop / spatial evidence against the
  subject / object / spatial cues (written as the paper does: "cat, {cue}" with "subject" → the
  label, "object" → "something"; spatial cues with "red box" / "green box"), w the LLM's weights
  normalised to sum 1, 0.6 the paper's spatial factor, and T the plain triplet score of the union
  crop against "{subject} {predicate} {object}" (λ = ``triplet_weight``, default 1).

Spatial evidence: ``spatial = "image"`` scores the drawn-boxes image with the scorer (the paper);
``"geometric"`` uses :class:`~._spatial.GeometricSpatialScorer` (box geometry → canonical phrases →
``embed``-role similarity). ``"auto"`` (default) picks geometric for scorers that cannot read drawn
boxes (the offline ``label_space``), image otherwise. Settings (:class:`RecodeSettings`) come from
``[graphs.recode]`` and may change per run through the runtime context.

>>> graph = build_recode_graph(config)
>>> out = graph.invoke({"image": handle, "subject": {"category": "cat", "box": [30, 20, 300, 200]},
...                     "object": {"category": "sofa", "box": [0, 150, 451, 300]},
...                     "predicates": ["on", "near"]}, context=RecodeSettings(filter="none"))
>>> out["prediction"], out["ranked"]
"""

from __future__ import annotations

import operator
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypedDict

import numpy as np
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from mmagents._config import Config
from mmagents.agents import cue_writer
from mmagents.errors import ConfigError
from mmagents.graphs import _recode_paper as paper
from mmagents.graphs._cues import crop, cue_cache, role_identity, text_feature_cache
from mmagents.graphs._relation_vocab import cue_group, implausible_reason, super_category
from mmagents.graphs._settings import PipelineSettings, context_of, resolve_settings
from mmagents.graphs._spatial import GeometricSpatialScorer, draw_spatial_image, validate_box
from mmagents.models.base import feature_scores
from mmagents.runtime import Models, image_input

__all__ = [
    "Entity",
    "RecodeInput",
    "RecodeOutput",
    "RecodeSettings",
    "RecodeState",
    "build_recode_graph",
    "object_text",
    "spatial_text",
    "subject_text",
]

#: Scorers that see image content only (not drawn boxes): spatial cues go to the geometric scorer.
BOX_BLIND_SCORERS = frozenset({"label_space"})


class RecodeSettings(PipelineSettings):
    """Knobs of one run (``[graphs.recode]``, or per run: ``--set spatial=geometric``)."""

    section: ClassVar[str] = "graphs.recode"

    spatial: Literal["auto", "image", "geometric"] = Field(
        "auto",
        description="spatial evidence: image (drawn boxes through the scorer, the paper), "
        "geometric (box geometry), auto (geometric for scorers blind to drawn boxes)",
    )
    filter: Literal["rules", "llm", "both", "none"] = Field(
        "rules", description="implausible-pair filter: rule table, the cue writer's judgement"
    )
    weights: Literal["llm", "equal"] = Field(
        "llm", description="cue weights: the cue writer's, or 1/3 each (the paper's ablation)"
    )
    triplet_weight: float = Field(1.0, ge=0.0, description="λ: weight of the triplet score")
    spatial_factor: float = Field(
        0.6, ge=0.0, description="the paper's extra factor on the spatial term"
    )
    n_cues: int = Field(3, ge=1, le=cue_writer.MAX_CUES, description="cues asked for per kind")
    categories: Literal["fine", "paper"] = Field(
        "fine",
        description="cue-cache granularity: handmade super-categories, or RECODE's "
        "human / animal / product",
    )
    geometric_scale: float = Field(
        100.0, gt=0.0, description="scale of the geometric spatial score (CLIP's logit scale)"
    )
    predicates: list[str] | None = Field(
        None, description="candidate predicates when the input names none"
    )
    max_repairs: int = Field(
        2, ge=0, le=10, description="repair attempts per LLM answer that does not validate"
    )
    protocol: Literal["mmagents", "paper"] = Field(
        "mmagents",
        description="scoring: mmagents (cue score + triplet term, settings above) or paper "
        "(RECODE's reference: name terms + 2.0 x cue score, human/animal/product keys, "
        "layout bins, per-(label, predicate) filter tables; see graphs/_recode_paper.py)",
    )
    filter_tables: str | None = Field(
        None,
        description="protocol=paper: JSON file {subject: {label_predicate: bool}, object: {...}} "
        "(RECODE's sub/obj valid tables); none given = nothing filtered",
    )


class Entity(BaseModel):
    """A subject or object: its category and box ``[x1, y1, x2, y2]`` in pixels.

    Also read: ``name`` for ``category``, ``bbox`` for ``box``, Visual Genome's ``x, y, w, h``,
    and the list form ``[category, x1, y1, x2, y2]``.
    """

    category: str = Field(min_length=1, description="category name (cat, sofa)")
    box: list[float] = Field(description="[x1, y1, x2, y2] in pixels")

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) == 5:
            return {"category": value[0], "box": list(value[1:])}
        if not isinstance(value, Mapping):
            return value
        out = {k: v for k, v in value.items() if k in ("category", "box")}
        out.setdefault("category", value.get("name"))
        box = value.get("box") or value.get("bbox")
        if box is None and all(k in value for k in ("x", "y", "w", "h")):
            box = [value["x"], value["y"], value["x"] + value["w"], value["y"] + value["h"]]
        out["box"] = box
        return out

    @field_validator("box", mode="before")
    @classmethod
    def _box(cls, value: Any) -> list[float]:
        return validate_box(value, "the")


class RecodeInput(BaseModel):
    """One subject–object pair in one image, and the predicates to rank."""

    image: str = image_input("the image (a file, or a stored image handle)")
    subject: Entity = Field(description='{"category": ..., "box": [x1, y1, x2, y2]}')
    object: Entity = Field(description='{"category": ..., "box": [x1, y1, x2, y2]}')
    predicates: list[str] | None = Field(
        None, description="candidate predicates (default: the predicates setting)"
    )


class Filtered(TypedDict):
    """A candidate dropped as implausible, and why."""

    predicate: str
    reason: str


class RecodeOutput(TypedDict, total=False):
    """The result: scored predicates with their evidence, best first, and the filtered ones."""

    prediction: str | None
    ranked: list[str]
    ranking: list[dict[str, Any]]
    filtered: Annotated[list[Filtered], operator.add]
    subject: dict[str, Any]
    object: dict[str, Any]
    spatial_mode: str
    scorer: str
    llm_calls: Annotated[int, operator.add]


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


class RecodeState(RecodeOutput, total=False):
    """The output's keys, the input, and the working fields.

    ``prepare`` adds super-categories to ``subject`` / ``object``, ``to_score`` (the predicates
    that passed the filter), the cached ``cues`` and ``to_write`` (the cache misses); the cue
    branches merge into ``cues``.
    """

    image: str
    predicates: list[str] | None
    to_score: list[str]
    to_write: list[str]
    cues: Annotated[dict[str, dict[str, Any]], _merge]


class CueTask(TypedDict):
    """What one ``write_cues`` branch receives."""

    predicate: str
    subject_group: str
    object_group: str
    n_cues: int
    max_repairs: int


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


def _entity(value: Any, role: str) -> dict[str, Any]:
    try:
        return Entity.model_validate(value).model_dump()
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise ConfigError(f"invalid {role}: {problems}") from None


class _Recoder:
    """The graph's nodes over one runtime; settings are read per run."""

    def __init__(self, models: Models, default: RecodeSettings, config: Config) -> None:
        self.models = models
        self.default = default
        self.cache = cue_cache(config)
        self.features = text_feature_cache(config)
        self.ids = {role: role_identity(config, role) for role in ("llm", "scorer", "embed")}
        self.box_blind = config.role("scorer").backend in BOX_BLIND_SCORERS
        self.regions = _RegionFeatures()
        #: path → (file's mtime, its tables): read once per file version, not once per sample
        self._tables: dict[str, tuple[int, paper.FilterTables]] = {}

    def settings(self, runtime: Runtime[RecodeSettings]) -> RecodeSettings:
        return context_of(runtime, self.default)

    def filter_tables(self, path: str | None) -> paper.FilterTables:
        """The paper's filter tables of ``path`` (none: nothing filtered), read again only when
        the file changes.

        Raises:
            ConfigError: unreadable file or not ``{"subject": {...}, "object": {...}}``.
        """
        if path is None:
            return paper.FilterTables()
        try:
            stamp = Path(path).expanduser().stat().st_mtime_ns
        except OSError:
            return paper.read_filter_tables(path)  # raises the ConfigError naming the file
        cached = self._tables.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, paper.read_filter_tables(path))
            self._tables[path] = cached
        return cached[1]

    def spatial_mode(self, s: RecodeSettings) -> str:
        if s.spatial == "auto":
            return "geometric" if self.box_blind else "image"
        return s.spatial

    def prepare(self, state: RecodeState, runtime: Runtime[RecodeSettings]) -> dict[str, Any]:
        """Validate the input, drop rule-implausible predicates, look the rest up in the cache."""
        s = self.settings(runtime)
        entities = {}
        for role in ("subject", "object"):
            entity = _entity(state.get(role), role)
            group = super_category(entity["category"])
            if s.protocol == "paper":  # exact list membership (clip.py:252-258)
                key_group = paper.paper_category(entity["category"])
            else:
                key_group = cue_group(group, s.categories)
            entity.update(super=group, cue_group=key_group)
            entities[role] = entity
        given = state.get("predicates") or s.predicates or []
        predicates = list(dict.fromkeys(p.strip() for p in given if p.strip()))
        if not predicates:
            raise ConfigError(
                "recode needs at least one candidate predicate (--predicates, or "
                "--set predicates=[...])"
            )
        to_score: list[str] = []
        filtered: list[Filtered] = []
        tables = self.filter_tables(s.filter_tables) if s.protocol == "paper" else None
        for predicate in predicates:
            reason = None
            if tables is not None:
                sub, obj = entities["subject"]["category"], entities["object"]["category"]
                if not tables.valid(sub, obj, predicate):
                    reason = "paper: filter table (score 0)"
            elif s.filter in ("rules", "both"):
                reason = implausible_reason(
                    predicate, entities["subject"]["super"], entities["object"]["super"]
                )
            if reason:
                filtered.append({"predicate": predicate, "reason": reason})
            else:
                to_score.append(predicate)
        groups = (entities["subject"]["cue_group"], entities["object"]["cue_group"])
        # Cached cues are read here, so a warm run does not fan out at all.
        cached = {
            p: self.cache.get("relation_cues", self._cue_key(p, *groups, s.n_cues))
            for p in to_score
        }
        return {
            **entities,
            "predicates": predicates,
            "to_score": to_score,
            "to_write": [p for p, cues in cached.items() if cues is None],
            "cues": {p: cues for p, cues in cached.items() if cues is not None},
            "filtered": filtered,
        }

    def _cue_key(
        self, predicate: str, subject_group: str, object_group: str, n_cues: int
    ) -> dict[str, Any]:
        return {
            "predicate": predicate,
            "subject": subject_group,
            "object": object_group,
            "model": self.ids["llm"],
            "prompt_version": cue_writer.prompt_version(),
            "n_cues": n_cues,
        }

    def route(self, state: RecodeState, runtime: Runtime[RecodeSettings]) -> Any:
        """One ``write_cues`` branch per predicate whose cues are not cached (else to score)."""
        s = self.settings(runtime)
        subject, object_ = state["subject"]["cue_group"], state["object"]["cue_group"]
        sends = [
            Send(
                "write_cues",
                CueTask(
                    predicate=p,
                    subject_group=subject,
                    object_group=object_,
                    n_cues=s.n_cues,
                    max_repairs=s.max_repairs,
                ),
            )
            for p in state["to_write"]
        ]
        return sends or "score"

    def write_cues(self, state: CueTask) -> dict[str, Any]:
        """The cues of one predicate, from the on-disk cache or one structured LLM call."""
        key = self._cue_key(
            state["predicate"], state["subject_group"], state["object_group"], state["n_cues"]
        )
        attempts = 0

        def write() -> dict[str, Any]:
            nonlocal attempts
            writer = cue_writer.build_cue_writer(self.models.llm, max_repairs=state["max_repairs"])
            request: cue_writer.CueInput = {
                "predicate": state["predicate"],
                "subject": state["subject_group"],
                "object": state["object_group"],
                "n_cues": state["n_cues"],
            }
            answer = writer.invoke(request, get_config())
            attempts = answer.attempts
            return answer.value.model_dump()

        value, _created = self.cache.get_or_create("relation_cues", key, write)
        return {"cues": {state["predicate"]: value}, "llm_calls": attempts}

    def score(self, state: RecodeState, runtime: Runtime[RecodeSettings]) -> dict[str, Any]:
        """Rank the surviving predicates by the composite cue score plus the triplet score."""
        s = self.settings(runtime)
        cues = state.get("cues", {})
        dropped: list[Filtered] = []
        scored = []
        for predicate in state["to_score"]:
            paper_run = s.protocol == "paper"
            if not paper_run and s.filter in ("llm", "both") and not cues[predicate]["plausible"]:
                dropped.append({"predicate": predicate, "reason": "llm: judged implausible"})
            else:
                scored.append(predicate)
        image = self.models.store.resolve(state["image"])
        mode = "layout" if s.protocol == "paper" else self.spatial_mode(s)
        ranking = _Scoring(self, s, mode, image, state).rank(scored, cues) if scored else []
        filtered = [*state.get("filtered", []), *dropped]
        return {
            "prediction": ranking[0]["predicate"] if ranking else None,
            "ranked": [r["predicate"] for r in ranking] + [f["predicate"] for f in filtered],
            "ranking": ranking,
            "filtered": dropped,
            "spatial_mode": mode,
            "scorer": self.ids["scorer"],
        }


class _Scoring:
    """Scores of one sample: one forward pass over its regions, cached text features."""

    def __init__(
        self, nodes: _Recoder, settings: RecodeSettings, mode: str, image: Any, state: RecodeState
    ) -> None:
        self.nodes = nodes
        self.settings = settings
        self.mode = mode
        self.sub, self.obj = state["subject"], state["object"]
        sb, ob = self.sub["box"], self.obj["box"]
        union = [min(sb[0], ob[0]), min(sb[1], ob[1]), max(sb[2], ob[2]), max(sb[3], ob[3])]
        scorer = nodes.models.scorer
        self.scale = float(scorer.logit_scale)
        if mode == "layout":
            # The paper needs no union crop: subject crop, object crop, the pair's canonical
            # layout (tools/judge_spatial.py). Their features are cached per graph, so an image's
            # n(n-1) pairs embed its n crops and its distinct layouts, not 3 regions per pair.
            self.layout = paper.layout_name(sb, ob)
            self.region_features = nodes.regions.features(
                scorer,
                [
                    ((state["image"], tuple(sb)), lambda: crop(image, sb)),
                    ((state["image"], tuple(ob)), lambda: crop(image, ob)),
                    (("layout", self.layout), lambda: _layout_image(self.layout)),
                ],
            )
            self.geometric = None
            return
        # The same per-graph cache: an image's pairs embed each object crop once; only the
        # union crop (and the drawn boxes) are the pair's own. Misses go in one forward pass.
        handle = state["image"]
        regions: list[tuple[Any, Callable[[], Any]]] = [
            ((handle, tuple(sb)), lambda: crop(image, sb)),
            ((handle, tuple(ob)), lambda: crop(image, ob)),
            ((handle, tuple(union)), lambda: crop(image, union)),
        ]
        if mode == "image":
            regions.append((("boxes", tuple(sb), tuple(ob)), lambda: draw_spatial_image(sb, ob)))
        self.region_features = nodes.regions.features(scorer, regions)
        self.geometric = _geometric_scorer(nodes, settings) if mode == "geometric" else None

    def _texts(self, predicate: str, cues: Mapping[str, Any]) -> dict[str, list[str]]:
        s, o = self.sub["category"], self.obj["category"]
        if self.mode == "layout":  # the reference's rewrites (clip.py:260-323)
            key = f"{predicate}_{self.sub['cue_group']}_{self.obj['cue_group']}"
            return {
                "subject": [
                    paper.subject_cue_text(c, s) for c in paper.usable_cues(cues["subject_cues"])
                ],
                "object": [
                    paper.object_cue_text(c, o) for c in paper.usable_cues(cues["object_cues"])
                ],
                "spatial": [
                    paper.spatial_cue_text(c, key) for c in paper.usable_cues(cues["spatial_cues"])
                ],
                "triplet": [predicate],  # the bare name (PHOTO False: clip.py:166-168)
            }
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
        if self.mode in ("image", "layout"):
            kinds.append("spatial")
        flat = list(dict.fromkeys(t for p in predicates for k in kinds for t in texts[p][k]))
        scorer = self.nodes.models.scorer
        feats = self.nodes.features.features(scorer, self.nodes.ids["scorer"], flat)
        sims = feature_scores(self.scale, self.region_features, feats)  # regions x texts
        column = {t: i for i, t in enumerate(flat)}
        one = self._one_paper if self.mode == "layout" else self._one
        out = [one(p, texts[p], cues[p], sims, column) for p in predicates]
        return sorted(out, key=lambda e: -e["score"])

    def _kind(self, row: Any, texts: list[str], column: Mapping[str, int]) -> dict[str, Any]:
        values = [float(row[column[t]]) for t in texts]
        return {
            # No usable cue scores 0, as the reference skips an empty cue list (clip.py:411-412).
            "score": round(sum(values) / len(values), 4) if values else 0.0,
            "cues": [{"text": t, "score": round(v, 4)} for t, v in zip(texts, values, strict=True)],
        }

    def _spatial(self, row: Any, texts: list[str], column: Mapping[str, int]) -> dict[str, Any]:
        if self.mode == "image":
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
        opts = self.settings
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

    def _one_paper(
        self,
        predicate: str,
        texts: dict[str, list[str]],
        cues: Mapping[str, Any],
        sims: Any,
        column: Mapping[str, int],
    ) -> dict[str, Any]:
        """S_name + O_name + 2.0 (w_s S + w_o O + 0.6 w_p P) (graphs/_recode_paper.py)."""
        subject = self._kind(sims[0], texts["subject"], column)
        object_ = self._kind(sims[1], texts["object"], column)
        spatial = self._kind(sims[2], texts["spatial"], column)  # the layout image
        name = texts["triplet"]
        s_name = self._kind(sims[0], name, column)["score"]
        o_name = self._kind(sims[1], name, column)["score"]
        raw = [float(cues["weights"][k]) for k in ("subject", "object", "spatial")]
        ws, wo, wp = (paper.WEIGHT_SUM * w for w in paper.normalise_weights(raw))
        cue_term = ws * subject["score"] + wo * object_["score"]
        cue_term += wp * spatial["score"] * paper.SPATIAL_FACTOR
        score = (s_name + o_name + cue_term) / paper.TAU
        return {
            "predicate": predicate,
            "score": round(score, 4),
            "evidence": {
                "subject": {**subject, "weight": round(ws, 4)},
                "object": {**object_, "weight": round(wo, 4)},
                "spatial": {**spatial, "weight": round(wp, 4), "mode": f"layout:{self.layout}"},
                "triplet": {"text": name[0], "score": round(s_name + o_name, 4)},
                "reasoning": cues.get("reasoning", ""),
            },
        }


class _RegionFeatures:
    """Scorer image features of regions, per graph, bounded (LRU), embedded in one call per miss set.

    Keys name what the pixels are: ``(image handle, box)`` for a crop, ``("layout", name)`` for a
    canonical layout, ``("boxes", subject box, object box)`` for the drawn spatial image. One graph serves one runtime (one scorer), so the key needs no scorer id.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def features(self, scorer: Any, regions: list[tuple[Any, Callable[[], Any]]]) -> np.ndarray:
        with self._lock:
            missing = [(k, make) for k, make in regions if k not in self._items]
        if missing:
            unique = dict(missing)
            vectors = np.asarray(
                scorer.embed_images([make() for make in unique.values()]), dtype=np.float32
            )
            with self._lock:
                for key, vector in zip(unique, vectors, strict=True):
                    self._items[key] = vector
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        with self._lock:
            out = []
            for key, _make in regions:
                self._items.move_to_end(key)
                out.append(self._items[key])
            return np.stack(out)


def _layout_image(name: str) -> Any:
    """The drawn canonical layout (one of 1,944, so drawn once each per process)."""
    image = _LAYOUTS.get(name)
    if image is None:
        image = _LAYOUTS.setdefault(name, paper.draw_layout(name))
    return image


#: Pure function of the name (1,944 entries at most): shared, nothing run-specific in it.
_LAYOUTS: dict[str, Any] = {}


def _geometric_scorer(nodes: _Recoder, settings: RecodeSettings) -> GeometricSpatialScorer:
    """The geometric spatial scorer over the ``embed`` role, its features cached on disk."""
    embedder = _EmbedTexts(nodes.models.embed)
    embed_id = f"embed:{nodes.ids['embed']}"
    return GeometricSpatialScorer(
        lambda texts: nodes.features.features(embedder, embed_id, texts),
        scale=settings.geometric_scale,
    )


class _EmbedTexts:
    """The ``embed`` role seen through the scorer's ``embed_texts`` (for the feature cache)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def embed_texts(self, texts: list[str]) -> Any:
        return self.embedder.embed(texts)


def build_recode_graph(
    config: Config | None = None,
    *,
    models: Models | None = None,
    settings: RecodeSettings | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[RecodeState, RecodeSettings, RecodeInput, RecodeOutput]:
    """Compile the RECODE relation-ranking graph (no model loads until a node needs it).

    Args:
        config: The configuration (roles, cache folder, ``[graphs.recode]``); default: the
            models' config, else :func:`~mmagents.load_config`.
        models: The runtime: ``llm`` (cue writer), ``scorer``, ``embed`` (geometric spatial
            scorer) and the image store (default: ``Models(config)``).
        settings: The settings used when a run passes no ``context`` (default: from the config).
        checkpointer: A LangGraph checkpointer (runs then need a ``thread_id``).

    Raises:
        ConfigError: an invalid ``[graphs.recode]`` section (unknown keys included).
    """
    models = models or Models(config)
    config = config or models.config
    default = settings or resolve_settings(RecodeSettings, config)
    nodes = _Recoder(models, default, config)
    graph = StateGraph(
        RecodeState,
        context_schema=RecodeSettings,
        input_schema=RecodeInput,
        output_schema=RecodeOutput,
    )
    graph.add_node("prepare", nodes.prepare)
    graph.add_node("write_cues", nodes.write_cues, input_schema=CueTask)
    graph.add_node("score", nodes.score)
    graph.add_edge(START, "prepare")
    graph.add_conditional_edges("prepare", nodes.route, ["write_cues", "score"])
    graph.add_edge("write_cues", "score")
    graph.add_edge("score", END)
    return graph.compile(checkpointer=checkpointer, name="recode")
