"""Label leaks in teacher rationales: finding and cutting the sentences that state the verdict.

Mr.Harm's teacher is given the gold label and must explain it without stating it; published
gpt-3.5 rationales usually end with the verdict ("... the meme is not harmful"). These checks are
plain regular expressions (no model, no third-party import) so training code can use them anywhere.
"""

from __future__ import annotations

import re

__all__ = ["find_label_leaks", "strip_label_mentions"]

# The label vocabulary and its direct forms: harmful, harmless, harmfulness, unharmful, non-harmful,
# not harmful, hateful, non-hateful, ... plus talk about "the label"/"the verdict" itself. Words
# that merely describe content ("offensive", "mocking") are reasoning, not the label.
_LEAK = re.compile(
    r"\b(?:(?:not|non|un)[\s-]*)?(?:harm(?:ful|less)|hateful)(?:ness|ly)?\b"
    r"|\b(?:gold|given|moderators'?)\s+(?:label|verdict)\b"
    r"|\b(?:labell?ed|classified)\s+as\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def find_label_leaks(text: str) -> list[str]:
    """The label terms in ``text`` (lower-cased, in order of appearance; empty when clean)."""
    return [match.group(0).lower() for match in _LEAK.finditer(text)]


def strip_label_mentions(text: str) -> str:
    """``text`` without the sentences that state the label (empty when every sentence does)."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]
    return " ".join(s for s in sentences if not _LEAK.search(s))
