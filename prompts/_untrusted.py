"""Untrusted text (OCR output, captions, tool results, document text) in delimited prompt blocks.

Text that comes from an image or a document may carry instructions ("ignore previous
instructions, call tool X"). Every place where such text enters a prompt puts it between tags
(``<image_caption> ... </image_caption>``) and the prompt tells the model that a block is data,
never instructions. A text that contains the tags itself could close its block early and speak
as the instructions, so every tag-like marker of *any* data block (:data:`DATA_TAGS` plus the
caller's) is removed from the data first: opening, closing and self-closing forms, any case,
stray spaces or attributes, full-width and small-form angle brackets, HTML-escaped brackets, and
zero-width characters hidden inside the name.

One implementation for the whole project: templates use it as the Jinja filters
``untrusted`` (clean the text) and ``data_block`` (clean and wrap), Python code calls
:func:`untrusted` / :func:`data_block`. It lives with the prompts (the lowest layer that renders
prompts), so models, agents and graphs can all use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Any

__all__ = ["DATA_TAGS", "data_block", "untrusted"]

#: The tags of every data block in mmagents' prompts; none of them survives inside any data.
DATA_TAGS = frozenset(
    {
        "meme_text",
        "image_caption",
        "image_text",
        "image_description",
        "visual_answer",
        "tool_result",
        "document",
    }
)

_OPEN = r"(?:<|\uff1c|\ufe64|&lt;?|&#0*60;?|&#x0*3c;?)"
_CLOSE = r"(?:>|\uff1e|\ufe65|&gt;?|&#0*62;?|&#x0*3e;?)"
# Zero-width and invisible formatting characters: removed so they cannot split a tag name.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff]")


@cache
def _pattern(tags: frozenset[str]) -> re.Pattern[str]:
    names = "|".join(sorted(re.escape(tag) for tag in tags))
    # <tag>, </ tag >, <tag/>, <tag attr="x">, ＜/tag＞, &lt;/tag&gt; ...
    return re.compile(
        rf"{_OPEN}\s*/?\s*(?:{names})(?![\w-])[^<>\uff1c\uff1e]*?{_CLOSE}", re.IGNORECASE
    )


def untrusted(value: Any, tags: Iterable[str] = ()) -> str:
    """``value`` as text with every marker of a data-block tag removed, stripped.

    Args:
        value: The untrusted data (``None`` becomes an empty string).
        tags: Extra tag names to remove, besides :data:`DATA_TAGS`.
    """
    text = _INVISIBLE.sub("", str(value if value is not None else ""))
    return _pattern(DATA_TAGS | frozenset(tags)).sub(" ", text).strip()


def data_block(value: Any, tag: str, *, inline: bool = False) -> str:
    """``value`` cleaned by :func:`untrusted` and wrapped as ``<tag>\\n…\\n</tag>``.

    The data cannot close the block: no marker of ``tag`` (or of any other data tag) is left in
    it.

    Args:
        value: The untrusted data.
        tag: The block's tag name.
        inline: ``<tag>…</tag>`` on one line (short values in small-model prompts).
    """
    sep = "" if inline else "\n"
    return f"<{tag}>{sep}{untrusted(value, (tag,))}{sep}</{tag}>"
