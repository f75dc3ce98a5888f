"""A trained meme student folder as a backend: ``load_student(folder).classify(text, caption)``.

The folder written by ``mmagents finetune meme`` holds ``student.json`` (``kind = "meme_student"``,
its variant, base model and training options) beside the weights. :func:`load_student` checks it
and returns a :class:`MemeStudent`, whatever the variant: the encoder student gives a label and its
probability, the generative student also writes its own rationale, the t5-clip student (the
paper's) reads the meme image and can generate its answer. No LLM is involved at inference, as in
the paper.

This module is inference only; training (``mmagents.finetune``) writes the folder with
:func:`write_student_meta` and imports the variants' networks from here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmagents.errors import ConfigError
from mmagents.memes import LABELS, MemeExample

__all__ = [
    "KIND",
    "VARIANTS",
    "MemeStudent",
    "StudentPrediction",
    "load_student",
    "read_student_meta",
    "write_student_meta",
]

#: ``student.json``'s ``kind`` of a meme student.
KIND = "meme_student"
#: The student variants, as ``student.json`` names them.
VARIANTS = ("encoder", "generative", "t5-clip")


@dataclass(frozen=True)
class StudentPrediction:
    """A student's verdict on one meme.

    Attributes:
        label: ``"harmful"`` or ``"harmless"``.
        probability: Probability of ``label`` (the confidence, >= 0.5).
        p_harmful: Probability of ``"harmful"``.
        rationale: The student's rationale (generative variant, when asked), else ``None``.
    """

    label: str
    probability: float
    p_harmful: float
    rationale: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def write_student_meta(
    folder: Path,
    *,
    variant: str,
    base_model: str,
    with_rationales: bool,
    options: Any,
    fingerprint: str,
) -> None:
    """Write ``student.json``: what :func:`load_student` needs to rebuild the student."""
    meta = {
        "kind": KIND,
        "variant": variant,
        "labels": list(LABELS),
        "base_model": base_model,
        "trained_with_rationales": with_rationales,
        "options": asdict(options),
        "fingerprint": fingerprint,
    }
    (folder / "student.json").write_text(json.dumps(meta, indent=2))


def read_student_meta(folder: str | Path) -> dict[str, Any]:
    """The ``student.json`` of a trained student folder.

    Raises:
        ConfigError: the folder holds no (valid) ``student.json`` of a meme student.
    """
    path = Path(folder).expanduser() / "student.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path.parent} is not a trained student folder (no student.json): "
            "train one with `mmagents finetune meme --train FILE --out DIR`"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc.msg}") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise ConfigError(f"{path} does not describe a meme student (kind != {KIND!r})")
    if meta.get("variant") not in VARIANTS:
        raise ConfigError(f"{path}: unknown student variant {meta.get('variant')!r}")
    return meta


class MemeStudent:
    """One interface over the three student variants.

    Args:
        folder: A trained student folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.meta = read_student_meta(self.folder)
        self.variant: str = self.meta["variant"]
        self._lock = threading.Lock()  # torch modules are shared by the harness's threads
        if self.variant == "encoder":
            from mmagents.models.memes.encoder import EncoderStudent

            self._model: Any = EncoderStudent(self.folder)
        elif self.variant == "t5-clip":
            from mmagents.models.memes.t5clip import T5ClipStudent

            self._model = T5ClipStudent(self.folder)
        else:
            from mmagents.models.memes.generative import GenerativeStudent

            self._model = GenerativeStudent(self.folder)

    @property
    def writes_rationales(self) -> bool:
        """Whether :meth:`classify` can return a rationale (generative variant)."""
        return self.variant == "generative"

    def classify_many(self, examples: Sequence[MemeExample]) -> list[StudentPrediction]:
        """Labels and probabilities for many memes (no rationales: the fast path for evaluation)."""
        with self._lock:
            probs = self._model.predict_proba(list(examples))
        return [_prediction(float(p)) for p in probs]

    def generate_labels(self, examples: Sequence[MemeExample]) -> list[str]:
        """The t5-clip student's generated labels (the reference's reading of its output).

        Raises:
            ConfigError: another variant (it has no generated answer).
        """
        if self.variant != "t5-clip":
            raise ConfigError(f"a {self.variant} student does not generate its answer")
        with self._lock:
            labels: list[str] = self._model.generate_labels(list(examples))
        return labels

    def classify(
        self, text: str, caption: str = "", *, rationale: bool = True, image: str | None = None
    ) -> StudentPrediction:
        """Classify one meme from its text and caption (and image: the t5-clip student reads it).

        Args:
            text: The meme's text (OCR).
            caption: The image caption.
            rationale: Also write a rationale (generative variant only; ignored otherwise).
            image: Path of the meme image.
        """
        example = MemeExample(id="input", text=text, caption=caption, image=image)
        with self._lock:
            p_harmful = float(self._model.predict_proba([example])[0])
            written = (
                self._model.rationale(example) if rationale and self.writes_rationales else None
            )
        return _prediction(p_harmful, written)


def _prediction(p_harmful: float, rationale: str | None = None) -> StudentPrediction:
    label = LABELS[1] if p_harmful >= 0.5 else LABELS[0]
    probability = p_harmful if label == LABELS[1] else 1.0 - p_harmful
    return StudentPrediction(label, round(probability, 6), round(p_harmful, 6), rationale)


def load_student(folder: str | Path) -> MemeStudent:
    """The student in ``folder``, its ``student.json`` checked before any heavy import.

    Each call loads the weights anew: there is no process-wide cache. Whoever holds the student
    keeps it as long as it needs it (a compiled meme graph keeps the students its runs use).

    Raises:
        ConfigError: ``folder`` is not a trained meme student.
    """
    path = Path(folder).expanduser().resolve()
    read_student_meta(path)  # validates before any heavy import
    return MemeStudent(path)
