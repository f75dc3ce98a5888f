"""Category knowledge for ``recode``: super-categories and the implausible-pair rule table.

RECODE caches cues per (predicate, subject super-category, object super-category) so that LLM
calls grow with distinct keys, not with samples; the paper used three super-categories (human,
animal, product). This handmade table is finer (a dozen groups over the common Visual Genome /
COCO categories, no WordNet needed); a category it does not know is its own super-category.

The implausibility filter is a **rule table** (deterministic, no LLM call): predicates that only an
animate subject can do, predicates whose object must be of a given kind. A rule applies only when
the category is in the table: an unknown category is never filtered out (no evidence against it).
The LLM-judged alternative (the cue writer's ``plausible`` flag, cached with the cues) is selected
with ``[graphs.recode] filter = "llm"`` (or ``"both"``).
"""

from __future__ import annotations

__all__ = ["KNOWN_SUPER_CATEGORIES", "cue_group", "implausible_reason", "super_category"]

# fmt: off
_GROUPS: dict[str, tuple[str, ...]] = {
    "human": (
        "man", "woman", "person", "people", "boy", "girl", "child", "kid", "lady", "guy", "men",
        "player", "skier", "surfer", "rider", "skateboarder", "baby", "driver", "biker", "human",
        "astronaut", "women", "children", "tennis player", "batter", "catcher", "pilot",
    ),
    "animal": (
        "cat", "dog", "horse", "bird", "cow", "sheep", "elephant", "bear", "zebra", "giraffe",
        "animal", "kitten", "puppy", "duck", "pigeon", "seagull", "lamb", "fish", "tabby cat",
    ),
    "vehicle": (
        "car", "bus", "truck", "train", "motorcycle", "bike", "bicycle", "airplane", "plane",
        "boat", "vehicle", "van", "taxi", "jeep", "rocket", "ship", "tractor", "scooter",
    ),
    "furniture": (
        "chair", "couch", "sofa", "bed", "table", "desk", "bench", "shelf", "cabinet", "drawer",
        "counter", "dining table", "toilet", "sink", "stool", "armchair", "dresser",
    ),
    "clothing": (
        "shirt", "jacket", "coat", "hat", "cap", "helmet", "pant", "pants", "jean", "jeans",
        "short", "shorts", "shoe", "sneaker", "boot", "sock", "glove", "tie", "dress", "skirt",
        "sweater", "vest", "uniform", "scarf", "sunglasses", "glasses", "suit", "flight suit",
    ),
    "body part": (
        "arm", "leg", "hand", "head", "face", "ear", "eye", "nose", "mouth", "neck", "hair",
        "finger", "paw", "tail", "wing", "foot", "feet", "beard", "teeth", "mane",
    ),
    "food": (
        "pizza", "banana", "orange", "fruit", "vegetable", "food", "sandwich", "apple",
        "broccoli", "carrot", "hot dog", "donut", "cake", "bread", "meat", "cheese", "coffee",
        "drink",
    ),
    "plant": ("tree", "plant", "flower", "leaf", "branch", "bush", "grass", "leaves", "trunk"),
    "structure": (
        "building", "house", "tower", "roof", "window", "door", "fence", "railing", "pole",
        "post", "sign", "wall", "bridge", "stairs", "column", "launch pad", "street light",
        "light",
    ),
    "place": (
        "street", "sidewalk", "road", "beach", "snow", "mountain", "hill", "field", "ground",
        "water", "wave", "sky", "track", "room", "floor", "ocean", "sand", "dirt", "runway",
    ),
    "tableware": (
        "cup", "plate", "bowl", "glass", "bottle", "vase", "fork", "knife", "spoon", "pot", "mug",
        "saucer", "coffee cup", "wine glass", "jar", "tray", "pan",
    ),
    "device": (
        "laptop", "phone", "screen", "tv", "television", "keyboard", "mouse", "remote", "clock",
        "lamp", "camera", "monitor", "computer", "cell phone", "tripod",
    ),
    "sports equipment": (
        "skateboard", "surfboard", "ski", "skis", "kite", "racket", "frisbee", "ball",
        "tennis racket", "snowboard", "bat", "baseball bat", "sports ball",
    ),
    "accessory": ("bag", "backpack", "umbrella", "handbag", "suitcase", "book", "paper", "towel"),
}

_TABLE: dict[str, str] = {name: group for group, names in _GROUPS.items() for name in names}

#: The super-categories of the table (anything else maps to itself).
KNOWN_SUPER_CATEGORIES: frozenset[str] = frozenset(_GROUPS)

_ANIMATE = frozenset({"human", "animal"})
#: predicate → subject super-categories that can do it.
_SUBJECT_RULES: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        (
            "eating", "holding", "carrying", "watching", "looking at", "walking on",
            "walking in", "sitting on", "standing on", "laying on", "lying on", "sitting in",
            "standing in", "standing next to", "playing with", "feeding", "catching",
            "throwing", "grazing on",
        ),
        _ANIMATE,
    ),
    **dict.fromkeys(
        ("wearing", "wears", "using", "playing", "riding", "talking on"), frozenset({"human"})
    ),
    "parked on": frozenset({"vehicle"}),
    "parked along": frozenset({"vehicle"}),
    "growing on": frozenset({"plant"}),
    "growing in": frozenset({"plant"}),
    "flying in": frozenset({"animal", "vehicle", "sports equipment"}),
}
#: predicate → object super-categories it can take.
_OBJECT_RULES: dict[str, frozenset[str]] = {
    "wearing": frozenset({"clothing", "accessory", "sports equipment"}),
    "wears": frozenset({"clothing", "accessory", "sports equipment"}),
    "eating": frozenset({"food", "plant"}),
    "riding": frozenset({"vehicle", "animal", "sports equipment", "place"}),
    "parked on": frozenset({"place", "structure"}),
    "flying in": frozenset({"place"}),
}
# fmt: on


def super_category(category: str) -> str:
    """The super-category of ``category`` (lower-cased), or the category itself when unknown.

    A plural the table does not list is looked up in its singular form ("cats" → "animal").
    """
    name = " ".join(category.lower().replace("_", " ").split())
    if name in _TABLE:
        return _TABLE[name]
    if name.endswith("s") and name[:-1] in _TABLE:
        return _TABLE[name[:-1]]
    return name


def cue_group(super_category: str, mode: str = "fine") -> str:
    """The category a cue-cache key uses: the super-category itself (``fine``), or the paper's
    three groups (``paper``: human, animal, everything else "product"), which bounds the cue
    writer's calls at 9 per predicate.
    """
    if mode == "fine" or super_category in _ANIMATE:
        return super_category
    return "product"


def implausible_reason(predicate: str, subject_super: str, object_super: str) -> str | None:
    """Why "subject predicate object" is implausible by the rule table, or ``None`` if it is not.

    Only known super-categories are judged; unknown ones always pass.
    """
    pred = " ".join(predicate.lower().split())
    allowed = _SUBJECT_RULES.get(pred)
    if allowed and subject_super in KNOWN_SUPER_CATEGORIES and subject_super not in allowed:
        return (
            f"rule: the subject of '{pred}' is {' or '.join(sorted(allowed))}, not {subject_super}"
        )
    allowed = _OBJECT_RULES.get(pred)
    if allowed and object_super in KNOWN_SUPER_CATEGORIES and object_super not in allowed:
        return f"rule: the object of '{pred}' is {' or '.join(sorted(allowed))}, not {object_super}"
    return None
