"""Untrusted text (OCR output, captions, user data) placed inside delimited prompt blocks.

Prompts put such text between tags (``<meme_text> ... </meme_text>``) and tell the model that the
block is data. A text that contains the tags itself could close its block early and speak as the
instructions, so every tag-like marker of the prompt's blocks is removed from the data first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Any

__all__ = ["untrusted"]


@cache
def _pattern(tags: tuple[str, ...]) -> re.Pattern[str]:
    names = "|".join(re.escape(tag) for tag in tags)
    # Opening, closing and self-closing forms, with stray spaces: <tag>, </ tag >, <tag/>.
    return re.compile(rf"<\s*/?\s*(?:{names})\s*/?\s*>", re.IGNORECASE)


def untrusted(value: Any, tags: Iterable[str]) -> str:
    """``value`` as text with every ``<tag>`` / ``</tag>`` of ``tags`` removed, stripped.

    Args:
        value: The untrusted data (``None`` becomes an empty string).
        tags: The names of the prompt's delimiting tags.
    """
    return _pattern(tuple(tags)).sub(" ", str(value or "")).strip()
