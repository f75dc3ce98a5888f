"""ocr backend ``tesseract`` (optional): the Tesseract binary through ``pytesseract``.

Needs ``pip install 'mmagents[tesseract]'`` and the ``tesseract`` program on ``PATH`` (e.g.
``apt-get install tesseract-ocr``); without either it raises
:class:`~mmagents.errors.BackendUnavailableError` saying what to install.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from mmagents.errors import BackendError, BackendUnavailableError
from mmagents.models.base import OcrLine
from mmagents.models.ocr_rapidocr import sort_lines

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["TesseractOCR"]

_INSTALL_HINT = (
    "the tesseract backend needs pytesseract (pip install 'mmagents[tesseract]') and the tesseract "
    "program (e.g. apt-get install tesseract-ocr, brew install tesseract)"
)


class TesseractOCR:
    """Text lines from Tesseract (the ``OCR`` protocol).

    Args:
        lang: Tesseract language codes, e.g. ``"eng"`` or ``"eng+deu"``.
        min_confidence: Lines whose mean word confidence (0–1) is lower are dropped.
        config: Extra Tesseract command-line flags (e.g. ``"--psm 6"``).
        binary: Path of the ``tesseract`` program (default: found on ``PATH``).
    """

    name = "tesseract"

    def __init__(
        self,
        lang: str = "eng",
        min_confidence: float = 0.3,
        config: str = "",
        binary: str | None = None,
    ) -> None:
        self.lang = lang
        self.min_confidence = min_confidence
        self.config = config
        self.binary = binary

    def _module(self) -> Any:
        try:
            import pytesseract
        except ImportError as exc:
            raise BackendUnavailableError(_INSTALL_HINT) from exc
        binary = self.binary or shutil.which("tesseract")
        if binary is None:
            raise BackendUnavailableError(_INSTALL_HINT + ": no tesseract program on PATH")
        pytesseract.pytesseract.tesseract_cmd = binary
        return pytesseract

    def read(self, image: Image.Image) -> list[OcrLine]:
        """Text lines of ``image``, top to bottom (words grouped by Tesseract's line numbers)."""
        pytesseract = self._module()
        try:
            data = pytesseract.image_to_data(
                image.convert("RGB"),
                lang=self.lang,
                config=self.config,
                output_type=pytesseract.Output.DICT,
            )
        except (pytesseract.TesseractError, OSError) as exc:
            raise BackendError(f"tesseract failed: {exc}") from exc
        return sort_lines(self._group_lines(data))

    def _group_lines(self, data: dict[str, list[Any]]) -> list[OcrLine]:
        words: dict[tuple[int, int, int], list[int]] = {}
        for i, text in enumerate(data["text"]):
            if str(text).strip() and float(data["conf"][i]) >= 0:
                key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                words.setdefault(key, []).append(i)
        lines = []
        for idx in words.values():
            confidence = sum(float(data["conf"][i]) for i in idx) / len(idx) / 100.0
            if confidence < self.min_confidence:
                continue
            x1 = min(data["left"][i] for i in idx)
            y1 = min(data["top"][i] for i in idx)
            x2 = max(data["left"][i] + data["width"][i] for i in idx)
            y2 = max(data["top"][i] + data["height"][i] for i in idx)
            box = [
                (float(x1), float(y1)),
                (float(x2), float(y1)),
                (float(x2), float(y2)),
                (float(x1), float(y2)),
            ]
            text = " ".join(str(data["text"][i]).strip() for i in idx)
            lines.append(OcrLine(box=box, text=text, confidence=confidence))
        return lines
