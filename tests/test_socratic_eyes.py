"""The socratic VLM's added eyes: faces (MTCNN), the classified object's colours (class activation
map), brightness / sky cues. Each is labelled in the description; real photos and real weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmagents import Config
from mmagents.models.fake import FakeOCR
from mmagents.models.scorer_label_space import LabelSpaceScorer
from mmagents.models.vlm_socratic import SocraticDescription, SocraticVLM, count_faces, light_cues
from mmagents.samples import sample_path


def _photo(name: str, config: Config) -> Image.Image:
    with Image.open(sample_path(name, config)) as image:
        return image.convert("RGB")


def test_light_cues_tell_sky_from_dark() -> None:
    sky = np.zeros((90, 90, 3), np.uint8)
    sky[:30] = (110, 170, 235)  # blue sky above
    sky[30:] = (90, 120, 60)  # a field below
    cues = light_cues(Image.fromarray(sky))
    assert cues.sky > 0.9 and "suggests daytime outdoors" in cues.sentence()
    night = light_cues(Image.new("RGB", (60, 60), (12, 12, 20)))
    assert night.brightness < 0.1 and night.sky == 0
    assert night.sentence().startswith("Light (pixel statistics): dark")
    assert "night or a dark room" in night.sentence()


def test_each_cue_is_labelled_with_its_source() -> None:
    description = SocraticDescription(
        labels=[("tabby cat", 0.5)],
        text=[],
        colours=[("brown", 0.5)],
        faces=2,
        region=("tabby cat", [("brown", 0.6), ("grey", 0.3)]),
        light=light_cues(Image.new("RGB", (30, 30), "white")),
    )
    text = description.sentence()
    assert "Face detector (MTCNN): 2 faces." in text
    assert (
        "Colours where the classifier sees the tabby cat (class activation map): brown and grey."
        in text
    )
    assert "Light (pixel statistics): bright" in text
    plain = SocraticDescription(labels=[("tabby cat", 0.5)], text=[], colours=[])
    assert "MTCNN" not in plain.sentence() and "activation" not in plain.sentence()


@pytest.mark.parametrize(("name", "faces"), [("astronaut", 1), ("coffee", 0), ("rocket", 0)])
def test_mtcnn_counts_faces_in_real_photos(offline_config: Config, name: str, faces: int) -> None:
    pytest.importorskip("facenet_pytorch")
    assert count_faces(_photo(name, offline_config)) == faces


def test_region_colours_follow_the_classified_object(offline_config: Config) -> None:
    vlm = SocraticVLM(scorer=LabelSpaceScorer(), ocr=FakeOCR(text=""), read_text=False)
    description = vlm.describe(_photo("astronaut", offline_config))
    assert description.region is not None
    label, colours = description.region
    assert label == description.labels[0][0]
    assert colours and all(0 < share <= 1 for _, share in colours)
    assert "(class activation map)" in vlm.caption(_photo("astronaut", offline_config))
