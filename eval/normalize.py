"""Answer normalisers: make a model's answer and the gold answer comparable before scoring.

A task names one normaliser (``normalizer: vqa`` or ``normalizer: {name: label_map, mapping: ...}``);
the harness applies it to every prediction and target (element-wise for lists) just before the
metrics are computed, so ``results.jsonl`` always keeps the raw answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmagents.errors import TaskError
from mmagents.memes import SYNONYMS as MEME_LABEL_SYNONYMS

__all__ = [
    "NORMALIZERS",
    "Normalizer",
    "build_normalizer",
    "label_map",
    "lower",
    "meme_label",
    "vqa_normalize",
]

Normalizer = Callable[[Any], Any]

# The answer-processing tables of the official VQA evaluation script (Antol et al., 2015).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id": "I'd", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itll": "it'll", "lets": "let's", "mightnt": "mightn't",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "shant": "shan't", "shed": "she'd", "shes": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "thats": "that's", "thered": "there'd",
    "theres": "there's", "theyd": "they'd", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "wasnt": "wasn't", "wed": "we'd", "weve": "we've", "werent": "weren't",
    "whats": "what's", "whatll": "what'll", "whatre": "what're", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "yall": "y'all", "youd": "you'd", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!"]  # fmt: skip
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _strip_punctuation(text: str) -> str:
    out = text
    for p in _PUNCTUATION:
        # Like the official script: a mark touching a space (or a digit comma) is deleted,
        # one inside a word becomes a space ("black-and-white" -> "black and white").
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def vqa_normalize(value: Any) -> Any:
    """Normalise a free-form answer the way the VQA evaluation does.

    Lower-cases, removes punctuation, maps number words to digits, drops articles and restores
    contractions: ``"Two dogs."`` → ``"2 dogs"``, ``"the Black-and-White cat"`` →
    ``"black and white cat"``. Non-strings pass through unchanged.
    """
    if not isinstance(value, str):
        return value
    text = _strip_punctuation(value.replace("\n", " ").replace("\t", " ").strip().lower())
    words = []
    for word in text.split():
        word = _NUMBERS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def lower(value: Any) -> Any:
    """Strip and lower-case strings; other values pass through."""
    return value.strip().lower() if isinstance(value, str) else value


def label_map(mapping: Mapping[str, Sequence[Any]]) -> Normalizer:
    """A normaliser that maps every known synonym to its canonical label.

    Args:
        mapping: canonical label → synonyms (compared case-insensitively after stripping; ints
            and strings such as ``1`` / ``"1"`` are both accepted). The canonical label is
            always a synonym of itself.

    Returns:
        A function returning the canonical label, or the lower-cased input when it is unknown
        (an unknown answer then simply counts as wrong).
    """
    table: dict[str, str] = {}
    for canonical, synonyms in mapping.items():
        for synonym in [canonical, *synonyms]:
            table[str(synonym).strip().lower()] = canonical

    def normalise(value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        key = str(value).strip().lower()
        return table.get(key, key)

    return normalise


def meme_label() -> Normalizer:
    """The harmful/harmless normaliser: the vocabulary the meme training data is read with.

    Every spelling of :data:`mmagents.memes.SYNONYMS` (``"somewhat harmful"``,
    ``"offensive"``, ``1`` ...) becomes ``harmful`` or ``harmless``; anything else is lower-cased
    and counts as wrong.
    """
    return label_map(MEME_LABEL_SYNONYMS)


def _identity(value: Any) -> Any:
    return value


#: name → factory taking the normaliser's parameters from the task YAML.
NORMALIZERS: dict[str, Callable[..., Normalizer]] = {
    "none": lambda: _identity,
    "lower": lambda: lower,
    "vqa": lambda: vqa_normalize,
    "label_map": label_map,
    "meme_label": meme_label,
}


def build_normalizer(name: str, params: Mapping[str, Any] | None = None) -> Normalizer:
    """Build normaliser ``name`` with ``params``; lists are normalised element-wise.

    Raises:
        TaskError: unknown name or bad parameters.
    """
    if name not in NORMALIZERS:
        raise TaskError(f"unknown normalizer {name!r}; known: {', '.join(sorted(NORMALIZERS))}")
    try:
        base = NORMALIZERS[name](**dict(params or {}))
    except TypeError as exc:
        raise TaskError(f"bad parameters for normalizer {name!r}: {exc}") from None

    def apply(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [apply(v) for v in value]
        return base(value)

    return apply
