"""ocr backend ``rapidocr``: PP-OCRv4 detection + recognition through ONNX Runtime.

The ONNX models ship inside the ``rapidocr-onnxruntime`` wheel, so this works offline. The engine
loads on the first ``read`` call, once per process per set of options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmagents.errors import BackendError, BackendUnavailableError
from mmagents.models.base import OcrLine, load_once

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["RapidOCR", "sort_lines"]


def sort_lines(lines: list[OcrLine], tolerance: float = 0.5) -> list[OcrLine]:
    """Order lines top to bottom, and left to right within one visual row.

    Two lines share a row when their vertical centres differ by less than ``tolerance`` times the
    smaller line height (detectors return side-by-side words of one row in arbitrary order).
    """

    def top(line: OcrLine) -> float:
        return min(y for _, y in line.box)

    def bottom(line: OcrLine) -> float:
        return max(y for _, y in line.box)

    def left(line: OcrLine) -> float:
        return min(x for x, _ in line.box)

    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=top):
        centre, height = (top(line) + bottom(line)) / 2, bottom(line) - top(line)
        if rows:
            last = rows[-1][-1]
            last_centre = (top(last) + bottom(last)) / 2
            limit = tolerance * min(height, bottom(last) - top(last))
            if abs(centre - last_centre) < limit:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=left)]


class RapidOCR:
    """Text lines with boxes and confidences (the ``OCR`` protocol).

    Args:
        min_confidence: Lines recognised with a lower confidence are dropped.
        engine_options: Extra ``rapidocr_onnxruntime.RapidOCR`` keywords (e.g. ``det_box_thresh``).
    """

    name = "rapidocr"

    def __init__(self, min_confidence: float = 0.5, **engine_options: Any) -> None:
        self.min_confidence = min_confidence
        self.engine_options = engine_options

    def _engine(self) -> Any:
        key = ("ocr-rapidocr", repr(sorted(self.engine_options.items())), self.min_confidence)
        return load_once(key, self._build_engine)

    def _build_engine(self) -> Any:
        try:
            from rapidocr_onnxruntime import RapidOCR as Engine
        except ImportError as exc:
            raise BackendUnavailableError(
                "the rapidocr backend needs rapidocr-onnxruntime: pip install 'mmagents[offline]'"
            ) from exc
        # Options go to the constructor: passing them per call mutates shared engine state.
        return Engine(text_score=self.min_confidence, **self.engine_options)

    def read(self, image: Image.Image) -> list[OcrLine]:
        """Text lines of ``image``, top to bottom (empty when there is no text)."""
        import numpy as np

        engine = self._engine()
        # RapidOCR wants BGR arrays; reversing the channels of the RGB image gives exactly that.
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        try:
            result, _ = engine(pixels)
        except Exception as exc:  # onnxruntime and opencv raise assorted types
            raise BackendError(f"rapidocr failed: {exc}") from exc
        lines = [
            OcrLine(
                box=[(float(x), float(y)) for x, y in box],
                text=str(text),
                confidence=float(score),
            )
            for box, text, score in result or []
            if str(text).strip()
        ]
        return sort_lines(lines)
