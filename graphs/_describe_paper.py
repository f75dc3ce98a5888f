"""Classification by description's published rules (Menon & Vondrick, ICLR 2023) as functions.

Reference: sachit-menon/classify_by_description_release (``load.py`` at f283d49,
``loading_helpers.py`` at 7ad43b1, ``generate_descriptors.py`` / ``descriptor_strings.py``); the
full rule table with line numbers is in ``docs/reproduce.md``. Checked by hand-worked values in
``tests/test_paper_describe.py``.

Rules:
    * Each descriptor is scored as ``"{class}, {which-phrase} {descriptor}{suffix}"`` with the
      which-phrase of :func:`mmagents.graphs.describe.descriptor_sentence`; the suffix is ``"."``
      for ImageNet and empty for every other dataset (``load.py:101`` sets ``after_text`` only in
      the ImageNet branch). The class-name baseline scores ``"{class}{suffix}"``.
    * A class with an empty descriptor list is scored by the one text ``"{class}, which has "``
      + suffix (the reference substitutes ``[""]``).
    * Descriptors come from the two-example prompt in ``prompts/descriptor_writer_paper.yaml``
      (class underscores become spaces); the completion's lines starting with ``"- "`` are the
      descriptors.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmagents.graphs.describe import descriptor_sentence
from mmagents.prompts import _template, load_prompt

__all__ = [
    "PROMPT_ROLE",
    "class_texts",
    "descriptor_prompt",
    "label_text",
    "parse_descriptors",
    "suffix_for",
]

#: The prompt file holding the published wording.
PROMPT_ROLE = "descriptor_writer_paper"


def suffix_for(dataset: str | None) -> str:
    """The text appended to every scored sentence: ``"."`` for ImageNet only."""
    return "." if (dataset or "").lower() == "imagenet" else ""


def class_texts(class_name: str, descriptors: Sequence[str], suffix: str = "") -> list[str]:
    """The texts scored for one class, in descriptor order."""
    items = list(descriptors) or [""]
    return [descriptor_sentence(class_name, d) + suffix for d in items]


def label_text(class_name: str, suffix: str = "") -> str:
    """The class-name baseline's text (underscores become spaces)."""
    return class_name.replace("_", " ") + suffix


def descriptor_prompt(class_name: str) -> str:
    """The published completion prompt for one class, ending in ``"-\\n"`` as the reference's."""

    template = load_prompt(PROMPT_ROLE).variants["default"]["user"]
    # Jinja drops the template's final newline; the reference prompt ends with "-\n".
    return _template(template).render(class_name=class_name.replace("_", " ")) + "\n"


def parse_descriptors(completion: str) -> list[str]:
    """The descriptors of a completion: its lines that start with ``"- "``, prefix removed."""
    return [line[2:] for line in completion.split("\n") if line.startswith("- ")]
