"""Glue of the ``interleaved`` task and of CoMM's four benchmark tasks (``comm-*``).

``interleaved`` composes two pipelines, ``comm`` then ``comm-filter``.

In the default ``continue`` mode the first ``k`` steps of a sample (text and images) are given to
the ``comm`` graph, which writes and illustrates the rest up to the sample's length (or
``steps``); the finished document is then scored by the ``comm-filter`` graph. ``mode=score``
scores the sample as it is. Judge scores and scorer metrics are reported as separate fields.

The ``comm-*`` tasks (:func:`eval_comm_sample`) run CoMM's image-to-text, text-to-image,
continuation and question-based generation tasks and record what the paper's metrics read: the
written step texts beside the ground truth (CIDEr), the generated image files beside the ground
truth's (SSIM, PSNR, LPIPS, IS, FID) and the ``comm_judge`` agent's 0–10 scores.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from mmagents._config import Config
from mmagents.agents.coherence_judge import CRITERIA
from mmagents.agents.comm_judge import CRITERIA as JUDGE_CRITERIA
from mmagents.agents.comm_judge import build_comm_judge
from mmagents.errors import ConfigError
from mmagents.graphs._comm_doc import DocStep, InterleavedDocument
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs.comm import CommInput, CommSettings, build_comm_graph
from mmagents.graphs.comm_filter import (
    CommFilterInput,
    CommFilterSettings,
    build_comm_filter_graph,
)
from mmagents.runtime import Models

__all__ = ["COMM_TASKS", "eval_comm_sample", "eval_interleaved_sample"]

_MODES = ("continue", "score")
#: The task's own options; every other one is a setting of the comm and/or comm-filter graph
#: (``min_alignment`` and ``min_consistency`` go to both: they measure the same thing).
_OWN = ("mode", "k", "steps")


def _int_option(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {key}={value!r} is not a valid int") from None


def _split(config: Config, options: Mapping[str, Any]) -> tuple[CommSettings, CommFilterSettings]:
    """The run's settings of each graph: defaults < config sections < the task's options.

    Raises:
        ConfigError: an option that is neither the task's nor a setting of either graph.
    """
    comm, judge = CommSettings.model_fields, CommFilterSettings.model_fields
    unknown = sorted(set(options) - set(_OWN) - set(comm) - set(judge))
    if unknown:
        known = sorted({*_OWN, *comm, *judge})
        raise ConfigError(f"unknown option(s) {unknown} for task interleaved; known: {known}")
    return (
        resolve_settings(CommSettings, config, {k: v for k, v in options.items() if k in comm}),
        resolve_settings(
            CommFilterSettings, config, {k: v for k, v in options.items() if k in judge}
        ),
    )


def eval_interleaved_sample(
    sample: dict[str, Any], *, models: Models, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Harness runner of the ``interleaved`` task.

    Args:
        sample: ``steps`` (``[{title?, text, image?}]``, image paths already resolved by the
            harness) and optionally ``topic``.
        models: The run's runtime (its backends go through the run's call cache).
        settings: ``mode`` (``continue`` | ``score``), ``k`` (given steps, default 2, at most all
            but one), ``steps`` (finished length), and any setting of the ``comm`` graph
            (generation) or the ``comm-filter`` graph (thresholds).

    Returns:
        ``prediction`` (``keep`` | ``drop``); the LLM-judge scores ``coherence`` and
        ``judge_<criterion>``; the scorer metrics ``alignment`` and ``consistency``; and counts
        (``given_steps``, ``generated_steps``, ``image_attempts``, ``steps_below_threshold``,
        ``llm_calls``). ``generated`` lists the written steps (text and image provenance).

    Raises:
        ConfigError: a bad mode, option or sample.
    """
    mode = str(settings.get("mode", "continue"))
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}")
    comm_settings, filter_settings = _split(models.config, settings)
    steps = sample.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError("an interleaved sample needs a non-empty 'steps' list")
    given = [DocStep.from_dict(s) for s in steps]
    for step in given:  # the harness resolved image paths; the graphs take handles
        step.image = models.store.put(step.image) if step.image else None
    topic = str(sample.get("topic") or "")
    if mode == "score":
        doc = InterleavedDocument(topic, given)
        k = len(given)
    else:
        k = max(1, min(_int_option(settings, "k", 2), len(given) - 1))
        total = _int_option(settings, "steps", len(given))
        inputs = CommInput(topic=topic, total_steps=max(total, k), steps=given[:k])
        graph = build_comm_graph(models=models, settings=comm_settings)
        doc = InterleavedDocument.from_output(graph.invoke(inputs.model_dump()))
    scored = CommFilterInput(topic=doc.topic, steps=doc.steps).model_dump()
    result = build_comm_filter_graph(models=models, settings=filter_settings).invoke(scored)
    return _record(doc, result, given=k)


def _record(doc: InterleavedDocument, result: Mapping[str, Any], *, given: int) -> dict[str, Any]:
    """The harness record: judge scores and scorer metrics as separate fields."""
    judge = result["judge"]
    written = [s for s in doc.steps if s.origin == "planned"]
    return {
        "prediction": result["decision"],
        "coherence": judge["coherence"],
        **{f"judge_{c}": judge[c] for c in CRITERIA},
        "alignment": result["image_text_alignment"],
        "consistency": result["image_sequence_consistency"],
        "given_steps": given,
        "generated_steps": len(written),
        "image_attempts": sum(s.attempts for s in doc.steps),
        "steps_below_threshold": sum(1 for s in doc.steps if s.passed is False),
        "llm_calls": int(doc.meta.get("llm_calls", 0)) + int(result["llm_calls"]),
        "generated": [
            {"title": s.title, "text": s.text, "provenance": s.provenance, "source": s.source}
            for s in written
        ],
    }


# -- CoMM's four benchmark tasks ----------------------------------------------------------------

#: CoMM task → the judge criteria its evaluation reports (eval/cal_gpt4o_score.py ``parse_scores``
#: over what eval/tot_metric/gpt4o_eval.py writes per task).
COMM_TASKS: dict[str, tuple[str, ...]] = {
    "image-to-text": (
        "completeness",
        "text_fidelity",
    ),  # task 1 (machine_evaluation_prompts/task_1.json)
    "text-to-image": ("image_coherence", "image_quality", "text_fidelity"),  # task 2
    "continuation": JUDGE_CRITERIA,  # task 3
    "question": JUDGE_CRITERIA,  # task 4
}
_COMM_OWN = ("task", "k", "judge", "judge_images")
_JUDGE_IMAGES = ("attach", "caption", "none")
#: The writer's question for one image of task 1 (image → text).
STEP_QUESTION = (
    "This image is step {index} of {total} of step-by-step instructions about: {topic}. "
    "Write the text of this step in one or two sentences: what is done, with what."
)


def _comm_options(models: Models, settings: Mapping[str, Any]) -> tuple[str, CommSettings]:
    task = str(settings.get("task", ""))
    if task not in COMM_TASKS:
        raise ConfigError(f"option task must be one of {sorted(COMM_TASKS)}, got {task!r}")
    unknown = sorted(set(settings) - set(_COMM_OWN) - set(CommSettings.model_fields))
    if unknown:
        known = sorted({*_COMM_OWN, *CommSettings.model_fields})
        raise ConfigError(f"unknown option(s) {unknown} for comm-{task}; known: {known}")
    if str(settings.get("judge_images", "attach")) not in _JUDGE_IMAGES:
        raise ConfigError(f"judge_images must be one of {_JUDGE_IMAGES}")
    comm = {k: v for k, v in settings.items() if k in CommSettings.model_fields}
    return task, resolve_settings(CommSettings, models.config, comm)


def _flag(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"option {key}={value!r} is not a boolean")
        return value.lower() in ("true", "1", "yes")
    return bool(value)


def _file_of(models: Models, handle: str | None) -> str | None:
    """The PNG file behind an image handle (records hold paths: metrics read them later)."""
    if handle is None:
        return None
    if models.store.root is None:
        raise ConfigError(
            "the CoMM tasks record image files: the runtime's image store needs a root"
        )
    return str(models.store.path(handle))


def _data_url(image: Any) -> str:
    """An image as CoMM sends it to the judge: longest edge at most 512 px, JPEG, base64."""
    picture = image.convert("RGB")
    picture.thumbnail((512, 512))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class _Rendered:
    """A document part as the judge's text (``(i) text <img_j>``) and its images in order."""

    def __init__(self, models: Models, mode: str) -> None:
        self.models, self.mode = models, mode
        self.images: list[str] = []

    def steps(self, steps: list[DocStep], *, first: int = 1, text: bool = True) -> str:
        parts = []
        for number, step in enumerate(steps, start=first):
            piece = f"({number})" + (f" {step.text}" if text and step.text else "")
            if step.image is not None:
                piece += " " + self._image(step.image)
            parts.append(piece)
        return " ".join(parts)

    def _image(self, handle: str) -> str:
        tag = f"<img_{len(self.images)}>"
        image = self.models.store.get(handle)
        if self.mode == "caption":
            self.images.append("")
            return f"{tag} [image: {self.models.vlm.caption(image)}]"
        self.images.append(_data_url(image) if self.mode == "attach" else "")
        return tag


def _judge(
    models: Models, task: str, given: str, output: str, rendered: _Rendered
) -> tuple[dict[str, Any], int]:
    """The judge's scores of the task's criteria (``judge_<criterion>``) and its LLM calls."""
    images = rendered.images if rendered.mode == "attach" else []
    answer = build_comm_judge(models.llm).invoke(
        {"given": given, "output": output, "images": images}
    )
    scores = answer.value
    fields: dict[str, Any] = {f"judge_{c}": getattr(scores, c).score for c in COMM_TASKS[task]}
    fields["judge_justifications"] = {c: getattr(scores, c).justification for c in COMM_TASKS[task]}
    return fields, answer.attempts


def _write_texts(models: Models, topic: str, steps: list[DocStep]) -> list[DocStep]:
    """Task 1: the vlm writes each step's text from its image."""
    written = []
    for index, step in enumerate(steps, start=1):
        assert step.image is not None
        question = STEP_QUESTION.format(index=index, total=len(steps), topic=topic or "a task")
        answer = models.vlm.answer(models.store.get(step.image), question)
        written.append(DocStep(text=" ".join(str(answer).split()), image=step.image))
    return written


def eval_comm_sample(
    sample: dict[str, Any], *, models: Models, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Harness runner of the four ``comm-*`` tasks (CoMM's benchmark, Chen et al., 2024).

    The tasks (eval/eval_metric.py ``evaluation_task1`` … ``evaluation_task4`` and the example
    inputs in eval/example/data_id_task{1,2,3,4}/results.json):

    * ``image-to-text``: given the topic and every step's image, write every step's text (the
      ``vlm`` role, one question per image); steps without an image are left out.
    * ``text-to-image``: given the topic and every step's text, draw every step's image (the
      ``comm`` graph over the given texts: the ``imagegen`` role, scored and retried).
    * ``continuation``: given the first ``k`` steps (text and images), write and illustrate the
      rest (the ``comm`` graph).
    * ``question``: given only the topic, write and illustrate the whole document, as many steps
      as the ground truth has.

    Args:
        sample: ``topic`` and ``steps`` (``[{text, image?}]``, image paths resolved by the
            harness), as ``mmagents eval convert comm`` writes them.
        models: The run's runtime.
        settings: ``task`` (one of :data:`COMM_TASKS`, set by the task file), ``k`` (given steps
            of ``continuation``, default 2, at most all but one), ``judge`` (default true),
            ``judge_images`` (``attach``: images go to the judge as image parts, as CoMM sends
            them to GPT-4o; ``caption``: the ``vlm``'s caption is written next to each
            placeholder, for a text-only judge; ``none``), and any setting of the ``comm`` graph.

    Returns:
        ``prediction`` (the written step texts), ``references`` (the ground-truth texts of those
        steps), ``generated_images`` / ``reference_images`` (image files per output step, or
        ``null``), ``judge_<criterion>`` (0–10) for the task's criteria with
        ``judge_justifications``, and counts (``given_steps``, ``generated_steps``,
        ``llm_calls``).

    Raises:
        ConfigError: a bad option or sample.
    """
    task, comm_settings = _comm_options(models, settings)
    steps = sample.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError("a CoMM sample needs a non-empty 'steps' list")
    truth = [DocStep.from_dict(s) for s in steps]
    for step in truth:
        step.image = models.store.put(step.image) if step.image else None
    topic = str(sample.get("topic") or "")
    mode = str(settings.get("judge_images", "attach"))
    rendered = _Rendered(models, mode)
    header = f"Topic: {topic}\n" if topic else ""
    llm_calls = 0
    if task == "image-to-text":
        truth = [s for s in truth if s.image is not None]
        if not truth:
            raise ConfigError("comm-image-to-text needs steps with images")
        k = 0
        output = _write_texts(models, topic, truth)
        given_text = header + rendered.steps(truth, text=False)
        output_text = " ".join(f"({i}) {s.text}" for i, s in enumerate(output, start=1))
    else:
        if task == "text-to-image":
            k = len(truth)
            given = [DocStep(title=s.title, text=s.text) for s in truth]
        elif task == "continuation":
            k = max(1, min(_int_option(settings, "k", 2), len(truth) - 1))
            given = truth[:k]
        else:
            k, given = 0, []
        inputs = CommInput(topic=topic, total_steps=len(truth), steps=given)
        graph = build_comm_graph(models=models, settings=comm_settings)
        doc = InterleavedDocument.from_output(graph.invoke(inputs.model_dump()))
        llm_calls += int(doc.meta.get("llm_calls", 0))
        if task == "text-to-image":
            output, k = doc.steps, 0
            given_text = header + rendered.steps(given)
            output_text = rendered.steps(output, text=False)
        else:
            output = doc.steps[k:]
            given_text = header + rendered.steps(doc.steps[:k])
            output_text = rendered.steps(output, first=k + 1)
        truth = truth[k:] if task == "continuation" else truth
    record: dict[str, Any] = {
        "prediction": [s.text for s in output],
        "references": [s.text for s in truth],
        "generated_images": []
        if task == "image-to-text"
        else [_file_of(models, s.image) for s in output],
        "reference_images": []
        if task == "image-to-text"
        else [_file_of(models, s.image) for s in truth],
        "given_steps": k,
        "generated_steps": len(output),
    }
    if _flag(settings, "judge", True):
        fields, calls = _judge(models, task, given_text, output_text, rendered)
        record.update(fields)
        llm_calls += calls
    record["llm_calls"] = llm_calls
    return record
