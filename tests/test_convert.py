"""Converters from the papers' distributed formats (synthetic fixtures built in tests/_paper_fixtures)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from _paper_fixtures import (
    IMAGENET_CLASSES,
    write_imagenet,
    write_mrharm,
    write_snli_ve,
    write_vcr,
)

from mmagents.errors import ConfigError, DatasetError
from mmagents.eval.convert import CONVERTERS, convert
from mmagents.eval.convert.mrharm import caption_keys, load_captions
from mmagents.eval.convert.vcr import detokenize, position_word
from mmagents.eval.datasets import load_jsonl


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_table_lists_the_four_converters_lazily() -> None:
    assert {"vcr", "snli-ve", "imagenet", "mrharm"} <= set(CONVERTERS)
    assert all(":" in target for target in CONVERTERS.values())
    with pytest.raises(ConfigError, match="unknown converter"):
        convert("nope", ".", "x.jsonl")


def test_vcr_rewrites_object_tags_by_position_and_offsets_the_label(tmp_path: Path) -> None:
    write_vcr(tmp_path / "vcr")
    out = tmp_path / "vcr.jsonl"
    result = convert("vcr", tmp_path / "vcr", out)
    first, second = _read(out)
    # Two people (boxes centred at x=35 and x=245 of 300) and one cup: only the people are placed.
    assert first["question"] == "Why is person on the left holding cup?"
    assert first["choices"] == [
        "person on the left is thirsty.",
        "person on the right wants it.",
        "It is raining.",
        "person on the left and person on the right are friends.",
    ]
    assert first["answer"] == first["choices"][0] and first["answer_number"] == "1"
    assert second["answer_label"] == 3 and second["answer_number"] == "4"
    assert second["answer"] == "At work"
    assert Path(first["image"]).is_file() and result.notes["label_offset"] == 1
    assert len(load_jsonl(out, required=["image", "question", "choices", "answer"])) == 2


def test_vcr_position_bands_and_detokenize_edges() -> None:
    assert position_word([0, 0, 99, 1], 300) == "on the left"  # centre 49.5 < 100
    assert position_word([50, 0, 150, 1], 300) == "in the middle"  # centre 100: right band
    assert position_word([150, 0, 250, 1], 300) == "on the right"  # centre 200
    objects, boxes = ["dog", "person", "person", "person"], [[0, 0, 9, 9]] * 4
    assert detokenize([[0], "'s", "tail", "?"], objects, boxes, 300) == "dog's tail?"
    assert detokenize([[1, 2, 3]], objects, boxes, 300) == (
        "person on the left, person on the left and person on the left"
    )


def test_vcr_refuses_test_split_and_missing_metadata(tmp_path: Path) -> None:
    write_vcr(tmp_path / "vcr")
    with pytest.raises(ConfigError, match="held out"):
        convert("vcr", tmp_path / "vcr", tmp_path / "o.jsonl", split="test")
    os.remove(tmp_path / "vcr" / "vcr1images" / "movie_a" / "shot1.json")
    with pytest.raises(DatasetError, match="metadata file not found"):
        convert("vcr", tmp_path / "vcr", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def test_snli_ve_drops_unlabelled_pairs_and_lists_the_three_choices(tmp_path: Path) -> None:
    write_snli_ve(tmp_path / "ve")
    out = tmp_path / "ve.jsonl"
    result = convert("snli-ve", tmp_path / "ve", out, split="val")
    rows = _read(out)
    assert [r["answer"] for r in rows] == ["entailment", "contradiction"]
    assert rows[0]["choices"] == ["entailment", "neutral", "contradiction"]
    assert rows[0]["hypothesis"] == rows[0]["question"] == "An animal is outside."
    assert result.notes["dropped_without_gold_label"] == 1


def test_imagenet_labels_are_descriptor_keys_in_sorted_wnid_order(tmp_path: Path) -> None:
    root, descriptors = write_imagenet(tmp_path / "imagenet")
    out = tmp_path / "in.jsonl"
    convert("imagenet", root, out, descriptors=str(descriptors))
    rows = _read(out)
    assert [r["label"] for r in rows] == list(IMAGENET_CLASSES)
    assert rows[1]["label"] == "baluster / handrail" and rows[1]["wnid"] == "n02788148"
    with pytest.raises(ConfigError, match="descriptors"):
        convert("imagenet", root, out)


def test_imagenet_flat_layout_with_a_labels_file(tmp_path: Path) -> None:
    root, descriptors = write_imagenet(tmp_path / "imagenet")
    flat = tmp_path / "flat"
    flat.mkdir()
    lines = []
    for i, image in enumerate(sorted((root / "val").glob("*/*.JPEG"))):
        os.link(image, flat / image.name)
        lines.append(f"{image.name} {2 - i}")
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "flat.jsonl"
    convert("imagenet", flat, out, descriptors=str(descriptors), labels=str(tmp_path / "val.txt"))
    assert [r["label"] for r in _read(out)] == list(IMAGENET_CLASSES)[::-1]


def test_mrharm_harmc_labels_captions_rationales_and_duplicates(tmp_path: Path) -> None:
    data = write_mrharm(tmp_path, with_images=True)
    out = tmp_path / "harmc.jsonl"
    result = convert(
        "mrharm", data, out, dataset="harmc", split="train", images=str(tmp_path / "images")
    )
    rows = _read(out)
    assert [r["id"] for r in rows] == ["covid_memes_1", "covid_memes_2", "covid_memes_3",
                                       "covid_memes_2#2"]  # fmt: skip
    assert [r["label"] for r in rows] == ["harmless", "harmful", "harmful", "harmful"]
    assert rows[1]["fine_label"] == "somewhat harmful" and rows[1]["target"] == "individual"
    assert rows[0]["caption"] == "a poster about soap" and rows[0]["text"] == "Wash your hands"
    assert rows[1]["rationale"].startswith("The text blames") and "rationale" not in rows[0]
    assert rows[3]["source_id"] == "covid_memes_2" and Path(rows[0]["image"]).is_file()
    assert result.notes["repeated_ids"] == 1 and result.notes["exact_repeats"] == 1
    load_jsonl(out, required=["text", "caption", "label"])  # the harness accepts the ids
    convert("mrharm", data, out, dataset="harmc", duplicates="drop")
    assert [r["id"] for r in _read(out)] == ["covid_memes_1", "covid_memes_2", "covid_memes_3"]
    with pytest.raises(DatasetError, match="duplicate id"):
        convert("mrharm", data, out, dataset="harmc", duplicates="error")


def test_mrharm_fhm_and_harmp_caption_keys(tmp_path: Path) -> None:
    data = write_mrharm(tmp_path)
    out = tmp_path / "fhm.jsonl"
    convert("mrharm", data / "training and inference data", out, dataset="fhm")
    rows = _read(out)
    assert rows[0]["id"] == "1235" and rows[0]["caption"] == "two people"  # key "01235"
    assert rows[0]["label"] == "harmful" and rows[1]["label"] == "harmless"
    assert rows[0]["rationale"] == "The meme mocks a group by its appearance."
    result = convert("mrharm", data, out, dataset="harmp")
    assert _read(out)[1]["caption"] == "a flag" and result.notes["missing_captions"] == 0
    assert caption_keys("politics_x", None) == ["politics_x", "x"]


def test_mrharm_test_split_reads_no_rationales_by_default(tmp_path: Path) -> None:
    data = write_mrharm(tmp_path)
    folder = data / "training and inference data" / "harmc"
    (folder / "test.jsonl").write_text((folder / "train.jsonl").read_text())
    out = tmp_path / "t.jsonl"
    convert("mrharm", data, out, dataset="harmc", split="test")
    assert not any("rationale" in r for r in _read(out))


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_captions_unpickler_refuses_code_and_non_plain_values(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"a": _Evil()}))
    with pytest.raises(DatasetError, match="refused to load"):
        load_captions(evil)
    tupled = tmp_path / "tuple.pkl"
    tupled.write_bytes(pickle.dumps({"a": ("x",)}))
    with pytest.raises(DatasetError, match="plain"):
        load_captions(tupled)
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps({1235: ["first caption", "second"]}))
    assert load_captions(listed) == {"1235": "first caption"}


def test_mrharm_bad_dataset_and_labels(tmp_path: Path) -> None:
    data = write_mrharm(tmp_path)
    with pytest.raises(ConfigError, match="--dataset"):
        convert("mrharm", data, tmp_path / "o.jsonl", dataset="memes")
    train = data / "training and inference data" / "harmc" / "train.jsonl"
    train.write_text(json.dumps({"id": "x", "text": "t", "labels": ["maybe"]}) + "\n")
    with pytest.raises(DatasetError, match=r"train\.jsonl:1"):
        convert("mrharm", data, tmp_path / "o.jsonl", dataset="harmc")


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmagents.cli import main

    data = write_mrharm(tmp_path)
    out = tmp_path / "harmp.jsonl"
    code = main(["eval", "convert", "mrharm", str(data), "--dataset", "harmp", "--out", str(out)])
    assert code == 0 and len(_read(out)) == 2
    assert "wrote 2 records" in capsys.readouterr().out
