"""``meme``: harmful-meme rationales and classification (Mr.Harm, Lin et al., EMNLP Findings 2023).

The graph::

    START → read_text → caption ─┬─ (no student) → write_rationale → END
                                 └─ (student)    → classify        → END

* ``read_text`` reads the meme's text with the ``ocr`` role and ``caption`` describes its image with
  the ``vlm`` role; each is skipped when the input already carries it (the shared datasets come
  with OCR text and ClipCap captions);
* ``write_rationale`` is the teacher: the ``rationale_writer`` LLM role writes an abductive
  rationale, given the gold label at training time and never stating it (label leaks are
  rewritten, then cut out). Without a label it explains the meme without a verdict;
* ``classify`` runs a trained student folder (``mmagents finetune meme``): label, probability and,
  for the generative student, its own rationale — no LLM at inference, as in the paper.

Batch mode (:func:`write_rationales`) writes a teacher rationale file for a whole dataset in the
published format (a JSON object ``{id: rationale}``), resumable: finished ids are appended to
``<out>.partial.jsonl`` as they come and skipped on the next run; LLM calls go through the
harness's model-call cache. Settings live in ``[graphs.meme]`` (``model``: default student folder,
``rationale``: let a generative student write its rationale, ``max_repairs``).
"""

from __future__ import annotations

import argparse
import json
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypedDict

from pydantic import Field

from mmagents.errors import ConfigError, RationaleLeakError, StructuredOutputError
from mmagents.graphs._settings import PipelineSettings, resolve_settings

if TYPE_CHECKING:
    from mmagents._config import Config

__all__ = [
    "MemeSettings",
    "MemeState",
    "build_meme_graph",
    "eval_meme_sample",
    "register_cli",
    "run_meme",
    "write_rationales",
]


class MemeSettings(PipelineSettings):
    """The ``[graphs.meme]`` section (one settings path: unknown keys rejected, types checked)."""

    section: ClassVar[str] = "graphs.meme"

    model: str = Field(
        "", description="trained student folder ('' = none: the graph writes teacher rationales)"
    )
    rationale: bool = Field(
        True, description="let a generative student write its own rationale when classifying"
    )
    max_repairs: int = Field(
        2, ge=0, le=10, description="structured-output repairs of the rationale writer"
    )


class MemeState(TypedDict, total=False):
    """State of one meme through the graph.

    Inputs: ``image`` (handle) and/or ``text`` + ``caption``; ``label`` (gold, teacher mode only).
    Outputs: ``rationale`` and its ``rationale_source`` (``teacher`` / ``student``), and with a
    student ``prediction``, ``probability`` (of the prediction) and ``p_harmful``.
    """

    image: str | None
    text: str
    caption: str
    label: str | None
    rationale: str | None
    rationale_source: str | None
    prediction: str
    probability: float
    p_harmful: float
    leak_rewritten: bool
    leak_stripped: bool
    llm_calls: Annotated[int, operator.add]


def _settings(config: Config, **overrides: Any) -> MemeSettings:
    return resolve_settings(MemeSettings, config, overrides)


class _MemeNodes:
    """The graph's nodes, holding the roles (loaded on first use) and the optional student."""

    def __init__(self, config: Config, llm: Any, student: Any, settings: MemeSettings) -> None:
        self.config = config
        self._llm = llm
        self.student = student
        self.settings = settings

    def _image(self, state: MemeState) -> Any:
        from mmagents.images import default_store

        handle = state.get("image")
        return default_store(self.config).get(handle) if handle else None

    def read_text(self, state: MemeState) -> dict[str, Any]:
        if state.get("text") is not None:
            return {}
        image = self._image(state)
        if image is None:
            raise ConfigError("the meme graph needs an image or the meme's text")
        from mmagents.models import load_role

        lines = load_role("ocr", self.config).read(image)
        return {"text": "\n".join(line.text for line in lines)}

    def caption(self, state: MemeState) -> dict[str, Any]:
        if state.get("caption") is not None:
            return {}
        image = self._image(state)
        if image is None:
            return {"caption": ""}
        from mmagents.models import load_role

        return {"caption": load_role("vlm", self.config).caption(image)}

    def route(self, state: MemeState) -> str:
        return "classify" if self.student is not None else "write_rationale"

    def write_rationale(self, state: MemeState) -> dict[str, Any]:
        from mmagents.agents.rationale_writer import write_rationale

        llm = self._llm
        if llm is None:
            from mmagents.models import load_role

            llm = load_role("llm", self.config)
        result = write_rationale(
            llm,
            state["text"],
            state.get("caption", ""),
            state.get("label"),
            max_repairs=self.settings.max_repairs,
        )
        return {
            "rationale": result.rationale,
            "rationale_source": "teacher",
            "leak_rewritten": result.leak_rewritten,
            "leak_stripped": result.leak_stripped,
            "llm_calls": result.llm_calls,
        }

    def classify(self, state: MemeState) -> dict[str, Any]:
        extra: dict[str, str] = {}
        handle = state.get("image")
        if handle:  # the t5-clip student reads the image itself
            from mmagents.images import default_store

            extra["image"] = str(default_store(self.config).path(handle))
        verdict = self.student.classify(
            state["text"], state.get("caption", ""), rationale=self.settings.rationale, **extra
        )
        return {
            "prediction": verdict.label,
            "probability": verdict.probability,
            "p_harmful": verdict.p_harmful,
            "rationale": verdict.rationale,
            "rationale_source": "student" if verdict.rationale else None,
            "llm_calls": 0,
        }


def build_meme_graph(
    config: Config, *, llm: Any = None, model: str | Path | None = None, **settings: Any
) -> Any:
    """Compile the meme graph.

    Args:
        config: The resolved configuration (roles, image store, ``[graphs.meme]``).
        llm: Chat model of the rationale writer (default: the ``llm`` role, loaded on first use).
        model: A trained student folder; default ``[graphs.meme] model`` (empty: no student, the
            graph writes teacher rationales).
        **settings: Overrides of :class:`MemeSettings` fields.

    Raises:
        ConfigError: ``model`` is not a trained student folder, or a bad setting.
    """
    from langgraph.graph import END, START, StateGraph

    chosen = _settings(config, **settings)
    folder = model if model is not None else (chosen.model or None)
    student = None
    if folder:
        from mmagents.models.memes.student import load_student

        student = load_student(folder)
    nodes = _MemeNodes(config, llm, student, chosen)
    graph = StateGraph(MemeState)
    graph.add_node("read_text", nodes.read_text)
    graph.add_node("caption", nodes.caption)
    graph.add_node("write_rationale", nodes.write_rationale)
    graph.add_node("classify", nodes.classify)
    graph.add_edge(START, "read_text")
    graph.add_edge("read_text", "caption")
    graph.add_conditional_edges("caption", nodes.route, ["write_rationale", "classify"])
    graph.add_edge("write_rationale", END)
    graph.add_edge("classify", END)
    return graph.compile()


def run_meme(
    config: Config,
    *,
    image: str | Path | None = None,
    text: str | None = None,
    caption: str | None = None,
    label: str | None = None,
    model: str | Path | None = None,
    llm: Any = None,
) -> dict[str, Any]:
    """Run the graph on one meme and return its final state (image as a handle).

    Args:
        config: The configuration.
        image: An image file, handle or data URL (OCR and caption come from it when not given).
        text: The meme's text (skips OCR).
        caption: The image caption (skips the vlm).
        label: Gold label: the teacher rationale is written for it (training-time use).
        model: A trained student folder: classify with it instead of writing a teacher rationale.
        llm: Chat model of the rationale writer.
    """
    state: dict[str, Any] = {"llm_calls": 0}
    if image is not None:
        from mmagents.images import default_store

        state["image"] = default_store(config).put(image)
    for key, value in (("text", text), ("caption", caption), ("label", label)):
        if value is not None:
            state[key] = value
    graph = build_meme_graph(config, llm=llm, model=model)
    return dict(graph.invoke(state))


# -- batch teacher rationales ------------------------------------------------------------------


def _done_ids(out: Path, partial: Path) -> dict[str, str]:
    done: dict[str, str] = {}
    if out.is_file():
        from mmagents.memes import load_rationale_file

        done.update(load_rationale_file(out))
    if partial.is_file():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that meme is redone
                continue
            done[str(record["id"])] = str(record["rationale"])
    return done


def write_rationales(
    data: str | Path,
    out: str | Path,
    config: Config,
    *,
    llm: Any = None,
    limit: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the teacher rationale of every meme of ``data`` to ``out`` (``{id: rationale}``).

    Resumable: each finished meme is appended to ``<out>.partial.jsonl`` at once, and memes
    already in ``out`` or in that file are skipped; at the end ``out`` is rewritten atomically
    with every rationale so far (in dataset order) and the partial file is removed. A meme whose
    answer never validates (or states the label in every sentence) is reported and retried on
    the next run.

    Args:
        data: Meme JSONL (``id``, ``text``, ``caption``, optional ``label``).
        out: The rationale JSON file to write.
        config: The configuration (llm role, cache folder).
        llm: Chat model (default: the ``llm`` role).
        limit: Only the first ``limit`` memes of ``data``.
        use_cache: Route LLM calls through the harness's SQLite call cache.
        progress: Show a progress bar.

    Returns:
        ``written`` (this run), ``skipped`` (already done), ``failed`` (ids with their error),
        ``total`` (rationales in ``out``), ``leaks_rewritten`` / ``leaks_stripped`` and ``out``.
    """
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    from mmagents.memes import read_memes

    memes = read_memes(data, require_label=False)[:limit]
    target = Path(out).expanduser()
    partial = target.with_name(target.name + ".partial.jsonl")
    done = _done_ids(target, partial)
    todo = [m for m in memes if m.id not in done]
    report: dict[str, Any] = {"written": 0, "skipped": len(memes) - len(todo), "failed": {}}
    report.update(leaks_rewritten=0, leaks_stripped=0)
    graph = build_meme_graph(config, llm=llm, model="")
    cache: Any = nullcontext()
    if use_cache:
        from mmagents.eval.cache import CallCache, installed
        from mmagents.eval.runner import default_cache_path

        cache = installed(CallCache(default_cache_path(config)))
    target.parent.mkdir(parents=True, exist_ok=True)
    with cache, partial.open("a", encoding="utf-8") as sink:
        for meme in tqdm(todo, desc="rationales", disable=not progress, unit="meme"):
            state = {"text": meme.text, "caption": meme.caption, "label": meme.label}
            try:
                result = graph.invoke({**state, "llm_calls": 0})
            except (StructuredOutputError, RationaleLeakError) as exc:
                report["failed"][meme.id] = f"{type(exc).__name__}: {exc}"
                continue
            done[meme.id] = result["rationale"]
            sink.write(json.dumps({"id": meme.id, "rationale": result["rationale"]}) + "\n")
            sink.flush()
            report["written"] += 1
            report["leaks_rewritten"] += int(result.get("leak_rewritten", False))
            report["leaks_stripped"] += int(result.get("leak_stripped", False))
    order = {m.id: i for i, m in enumerate(read_memes(data, require_label=False))}
    ordered = dict(sorted(done.items(), key=lambda kv: order.get(kv[0], len(order))))
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(ordered, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(target)
    partial.unlink(missing_ok=True)
    report.update(total=len(ordered), out=str(target))
    return report


# -- evaluation --------------------------------------------------------------------------------


def eval_meme_sample(sample: dict[str, Any], config: Config, **options: Any) -> dict[str, Any]:
    """Harness runner of ``meme-harmful``: a trained student, else the zero-shot llm baseline.

    Only the meme itself is read (``text`` + ``caption``, or ``image`` for OCR + caption); a
    sample's ``label`` and ``rationale`` (teacher text that states the label) are never shown to
    the model.

    Args:
        sample: ``text`` and ``caption``, and/or ``image`` (path or handle).
        config: The run's configuration.
        **options: ``model`` (a trained student folder; default ``[graphs.meme] model``; none:
            zero-shot with the llm role via :func:`mmagents.eval.baselines.meme_zero_shot`),
            ``rationale`` (let a generative student write its rationale; default false here),
            ``protocol`` (``paper``: the t5-clip student's generated answer is the prediction,
            as the reference reads it; see :func:`_paper_sample`).

    Returns:
        ``prediction``, ``confidence`` (probability of the prediction), ``p_harmful`` (student),
        ``rationale`` (generative student, when asked), ``llm_calls``.
    """
    meme = {k: sample[k] for k in ("text", "caption", "image") if sample.get(k) is not None}
    model = options.get("model") or _settings(config).model or None
    if model is None:
        from mmagents.eval.baselines import meme_zero_shot

        if "text" not in meme:
            meme.update(_perceive(meme, config))
        return meme_zero_shot(meme, config)
    protocol = str(options.get("protocol", "default"))
    if protocol == "paper":
        return _paper_sample(sample, str(model))
    if protocol != "default":
        raise ConfigError(f"meme: protocol must be default or paper, got {protocol!r}")
    # One graph per sample, built over this run's backends (a module cache of graphs kept the
    # first run's wrapped backends); the student's weights load once per process regardless.
    graph = build_meme_graph(config, model=str(model), rationale=bool(options.get("rationale")))
    state: dict[str, Any] = {"llm_calls": 0, **meme}
    if "image" in state:
        from mmagents.images import default_store

        state["image"] = default_store(config).put(state["image"])
    out = graph.invoke(state)
    return {
        "prediction": out["prediction"],
        "confidence": out["probability"],
        "p_harmful": out["p_harmful"],
        "rationale": out.get("rationale"),
        "llm_calls": out.get("llm_calls", 0),
    }


def _paper_sample(sample: dict[str, Any], model: str) -> dict[str, Any]:
    """Mr.Harm's reading of its student: greedy generation, the text after "The answer is: ".

    A generation that is neither label stays the prediction (the reference counts it wrong);
    ``confidence`` / ``p_harmful`` come from the two answers' likelihoods.
    """
    from mmagents.memes import MemeExample
    from mmagents.models.memes.student import load_student

    student = load_student(model)
    if student.variant != "t5-clip":
        raise ConfigError(
            "protocol=paper evaluates the paper's student: train it with "
            "`mmagents finetune meme --variant t5-clip`"
        )
    example = MemeExample(
        id=str(sample.get("id", "sample")),
        text=str(sample.get("text", "")),
        caption=str(sample.get("caption") or ""),
        image=sample.get("image"),
    )
    (label,) = student.generate_labels([example])
    (verdict,) = student.classify_many([example])
    return {
        "prediction": label,
        "confidence": verdict.p_harmful if label == "harmful" else 1.0 - verdict.p_harmful,
        "p_harmful": verdict.p_harmful,
        "llm_calls": 0,
    }


def _perceive(meme: dict[str, Any], config: Config) -> dict[str, str]:
    """OCR text and caption of an image-only sample (for the zero-shot baseline)."""
    from mmagents.images import default_store

    nodes = _MemeNodes(config, None, None, _settings(config))
    state: dict[str, Any] = {"image": default_store(config).put(meme["image"])}
    state.update(nodes.read_text(state))  # type: ignore[arg-type]
    state.update(nodes.caption(state))  # type: ignore[arg-type]
    return {"text": state["text"], "caption": state["caption"]}


# -- command line ------------------------------------------------------------------------------


def register_cli(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``mmagents run meme``: one meme (image or text + caption), or a rationale file (batch)."""
    source = parser.add_argument_group("one meme")
    source.add_argument("--image", metavar="PATH", help="meme image (text by OCR, caption by vlm)")
    source.add_argument("--text", help="the meme's text (skips OCR)")
    source.add_argument("--caption", help="the image caption (skips the vlm)")
    source.add_argument(
        "--label",
        choices=["harmful", "harmless"],
        help="gold label: write the teacher rationale for it (training-time use)",
    )
    source.add_argument("--model", metavar="DIR", help="classify with a trained student folder")
    batch = parser.add_argument_group("batch: a teacher rationale file for a dataset")
    batch.add_argument("--data", metavar="FILE", help="meme JSONL (id, text, caption, label)")
    batch.add_argument("--rationales-out", metavar="FILE", help="rationale JSON {id: text}")
    batch.add_argument("--limit", type=int, help="only the first N memes")
    batch.add_argument("--no-cache", action="store_true", help="bypass the model-call cache")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from mmagents.cli import config_from_args

    config = config_from_args(args)
    if args.data or args.rationales_out:
        if not (args.data and args.rationales_out):
            raise ConfigError("batch mode needs both --data FILE and --rationales-out FILE")
        report = write_rationales(
            args.data, args.rationales_out, config, limit=args.limit, use_cache=not args.no_cache
        )
        print(json.dumps(report, indent=2) if args.json else _batch_summary(report))
        return 1 if report["failed"] else 0
    if args.image is None and args.text is None:
        raise ConfigError("give --image PATH, or --text (and --caption), or --data for batch mode")
    out = run_meme(
        config,
        image=args.image,
        text=args.text,
        caption=args.caption,
        label=args.label,
        model=args.model,
    )
    result = {k: v for k, v in out.items() if k != "label"}
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"text: {out.get('text', '')!r}\ncaption: {out.get('caption', '')!r}")
    if "prediction" in out:
        print(f"prediction: {out['prediction']} (probability {out['probability']:.3f})")
    if out.get("rationale"):
        print(f"rationale ({out['rationale_source']}): {out['rationale']}")
    return 0


def _batch_summary(report: dict[str, Any]) -> str:
    lines = [
        f"wrote {report['written']} rationales, skipped {report['skipped']} already done; "
        f"{report['total']} in {report['out']}",
        f"label leaks: {report['leaks_rewritten']} rewritten, {report['leaks_stripped']} cut",
    ]
    lines += [f"failed {meme_id}: {error}" for meme_id, error in report["failed"].items()]
    return "\n".join(lines)
