"""Small synthetic datasets in the papers' distributed formats (VCR, SNLI-VE, ImageNet, Mr.Harm).

Every file is written here from the format's published description; no real data is read.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from PIL import Image


def _image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (30, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_vcr(root: Path) -> Path:
    """``root/val.jsonl`` + ``root/vcr1images/``: two questions, one image with two people."""
    images = root / "vcr1images" / "movie_a"
    _image(images / "shot1.jpg", (200, 30, 30), (300, 100))
    (images / "shot1.json").write_text(
        json.dumps(
            {
                "boxes": [[10, 0, 60, 90, 0.9], [200, 0, 290, 90, 0.9], [120, 40, 160, 80, 0.8]],
                "width": 300,
                "height": 100,
                "names": ["person", "person", "cup"],
            }
        )
    )
    base = {
        "movie": "movie_a",
        "objects": ["person", "person", "cup"],
        "img_fn": "movie_a/shot1.jpg",
        "metadata_fn": "movie_a/shot1.json",
    }
    rows = [
        {
            **base,
            "annot_id": "val-0",
            "question": ["Why", "is", [0], "holding", [2], "?"],
            "answer_choices": [
                [[0], "is", "thirsty", "."],
                [[1], "wants", "it", "."],
                ["It", "is", "raining", "."],
                [[0, 1], "are", "friends", "."],
            ],
            "answer_label": 0,
        },
        {
            **base,
            "annot_id": "val-1",
            "question": ["Where", "are", [0, 1], "?"],
            "answer_choices": [["At", "home"], ["In", "a", "bar"], ["Outside"], ["At", "work"]],
            "answer_label": 3,
        },
    ]
    return _jsonl(root / "val.jsonl", rows)


def write_snli_ve(root: Path) -> Path:
    """``root/snli_ve_dev.jsonl`` + ``root/flickr30k_images/``: three pairs, one unlabelled."""
    images = root / "flickr30k_images"
    _image(images / "1000.jpg", (10, 120, 10))
    _image(images / "1001.jpg", (10, 10, 120))
    rows = [
        {
            "pairID": "1000.jpg#0r1e",
            "Flikr30kID": "1000.jpg",
            "sentence1": "A dog runs on grass.",
            "sentence2": "An animal is outside.",
            "gold_label": "entailment",
            "captionID": "1000.jpg#0",
        },
        {
            "pairID": "1001.jpg#1r1c",
            "Flikr30kID": "1001.jpg",
            "sentence1": "A man sleeps.",
            "sentence2": "A man is running a marathon.",
            "gold_label": "contradiction",
            "captionID": "1001.jpg#1",
        },
        {
            "pairID": "1001.jpg#1r1x",
            "Flikr30kID": "1001.jpg",
            "sentence1": "A man sleeps.",
            "sentence2": "Nobody knows.",
            "gold_label": "-",
            "captionID": "1001.jpg#1",
        },
    ]
    return _jsonl(root / "snli_ve_dev.jsonl", rows)


#: Three classes in descriptor-file order; two carry a "/" and so cannot be folder names.
IMAGENET_CLASSES = {
    "tench": ["a freshwater fish", "olive green or brown in color"],
    "baluster / handrail": ["a vertical post", "used to support a rail"],
    "cardboard box / carton": ["has flaps on top", "brown corrugated sides"],
}
#: WordNet ids in sorted order: index i of the sorted ids is the i-th descriptor key.
IMAGENET_WNIDS = ["n01440764", "n02788148", "n02971356"]


def write_imagenet(root: Path) -> tuple[Path, Path]:
    """``root/val/<wnid>/*.JPEG`` (torchvision layout) and a descriptor file; returns both."""
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    for i, (wnid, colour) in enumerate(zip(IMAGENET_WNIDS, colours, strict=True)):
        _image(root / "val" / wnid / f"ILSVRC2012_val_0000000{i + 1}.JPEG", colour)
    descriptors = root / "descriptors_imagenet.json"
    descriptors.write_text(json.dumps(IMAGENET_CLASSES))
    return root, descriptors


def write_mrharm(root: Path, *, with_images: bool = False) -> Path:
    """A ``Data`` folder in the Mr.Harm release layout for harmc, harmp and FHM (train split).

    Harm-C holds a repeated id (an exact copy) and a politics-prefixed caption key lives in Harm-P.
    Returns the ``Data`` folder.
    """
    data = root / "Data"
    sub = data / "training and inference data"
    harmc = [
        {"id": "covid_memes_1", "image": "covid_memes_1.png", "labels": ["not harmful"],
         "text": "Wash your hands\n"},
        {"id": "covid_memes_2", "image": "covid_memes_2.png",
         "labels": ["somewhat harmful", "individual"], "text": "He did this"},
        {"id": "covid_memes_3", "image": "covid_memes_3.png",
         "labels": ["very harmful", "society"], "text": "They all lie"},
        {"id": "covid_memes_2", "image": "covid_memes_2.png",
         "labels": ["somewhat harmful", "individual"], "text": "He did this"},
    ]  # fmt: skip
    _jsonl(sub / "harmc" / "train.jsonl", harmc)
    _pickle(sub / "harmc" / "captions.pkl", {
        "covid_memes_1": "a poster about soap", "covid_memes_2": "a man at a desk",
        "covid_memes_3": "people in a crowd",
    })  # fmt: skip
    harmp = [
        {"id": "memes_10", "image": "memes_10.png", "labels": ["not harmful"], "text": "Vote"},
        {"id": "memes_11", "image": "memes_11.png",
         "labels": ["very harmful", "organization"], "text": "Party of thieves"},
    ]  # fmt: skip
    _jsonl(sub / "harmp" / "train.jsonl", harmp)
    _pickle(
        sub / "harmp" / "captions.pkl", {"memes_10": "a ballot box", "politics_memes_11": "a flag"}
    )
    fhm = [
        {"id": 1235, "img": "img/01235.png", "label": 1, "text": "look at them"},
        {"id": 42953, "img": "img/42953.png", "label": 0, "text": "its their character"},
    ]
    _jsonl(sub / "FHM" / "train.jsonl", fhm)
    _pickle(sub / "FHM" / "captions.pkl", {"01235": "two people", "42953": "a portrait"})
    (data / "harmc_rationale.json").write_text(
        json.dumps({"covid_memes_2": "The text blames a specific person for the pandemic."})
    )
    (data / "FHM_rationale.json").write_text(
        json.dumps({"01235": "The meme mocks a group by its appearance."})
    )
    if with_images:
        for i, row in enumerate(harmc):
            _image(root / "images" / row["image"], (40 * i, 80, 120))
    return data


def _pickle(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value))
