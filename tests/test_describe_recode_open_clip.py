"""Both cue-scoring graphs on a real (tiny, random-initialised) open_clip model.

The model is built here and saved as an open_clip ``local-dir:`` folder (config + weights), then
loaded back the way a user's checkpoint would be. Its scores mean nothing; what is checked is that
the graphs' numbers equal open_clip's own forward computed by hand, that every sample costs one
image forward pass, and that recode scores the drawn-boxes spatial image (the paper's path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmagents import Config, default_store, sample_path
from mmagents.graphs._spatial import draw_spatial_image
from mmagents.graphs.describe import build_describe_graph, descriptor_sentence
from mmagents.graphs.recode import RecodeSettings, build_recode_graph, spatial_text
from mmagents.models.fake import ScriptedChat
from mmagents.runtime import Models

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-open-clip")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    return folder


class TinyOpenClip:
    """A minimal Scorer over an open_clip model folder (counts image forward passes)."""

    name = "tiny-open-clip"

    def __init__(self, folder: Path) -> None:
        model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        self.logit_scale = float(model.logit_scale.exp().detach())
        self.image_forwards: list[int] = []

    def embed_images(self, images: list[Any]) -> np.ndarray:
        self.image_forwards.append(len(images))
        batch = torch.stack([self.preprocess(image) for image in images])
        with torch.no_grad():
            features = self.model.encode_image(batch)
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            features = self.model.encode_text(self.tokenizer(texts))
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    def score(self, images: list[Any], texts: list[str]) -> np.ndarray:
        return self.logit_scale * self.embed_images(images) @ self.embed_texts(texts).T


def _by_hand(clip: TinyOpenClip, images: list[Any], texts: list[str]) -> np.ndarray:
    """open_clip's forward, straight: normalised features, scaled cosine."""
    with torch.no_grad():
        image = clip.model.encode_image(torch.stack([clip.preprocess(i) for i in images]))
        text = clip.model.encode_text(clip.tokenizer(texts))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return (clip.model.logit_scale.exp() * image @ text.T).detach().numpy()


def test_describe_scores_equal_open_clip_forward(fake_config: Config, tiny_clip_dir: Path) -> None:
    clip = TinyOpenClip(tiny_clip_dir)
    table = {"tabby cat": ["whiskers", "a striped coat"], "goldfish": ["orange scales"]}
    graph = build_describe_graph(fake_config, models=Models(fake_config, scorer=clip))
    store = default_store(fake_config)
    handle = store.put(sample_path("cat", fake_config))
    result = graph.invoke({"image": handle, "descriptor_table": table})
    assert clip.image_forwards == [1]
    image = store.get(handle)
    for entry in result["scores"]:
        texts = [descriptor_sentence(entry["class"], d) for d in table[entry["class"]]]
        assert entry["score"] == pytest.approx(_by_hand(clip, [image], texts).mean(), abs=1e-3)


def test_recode_reads_the_drawn_boxes(fake_config: Config, tiny_clip_dir: Path) -> None:
    clip = TinyOpenClip(tiny_clip_dir)
    reply = json.dumps(
        {"subject_cues": ["subject sitting"], "object_cues": ["object with a flat top"],
         "spatial_cues": ["subject is above object", "subject overlaps object"],
         "reasoning": "layout matters", "weights": {"subject": 0.3, "object": 0.2, "spatial": 0.5},
         "plausible": True}
    )  # fmt: skip
    models = Models(fake_config, llm=ScriptedChat(replies=[reply], cycle=True), scorer=clip)
    graph = build_recode_graph(fake_config, models=models, settings=RecodeSettings(spatial="image"))
    subject = {"category": "cat", "box": [30, 20, 300, 200]}
    object_ = {"category": "sofa", "box": [0, 150, 451, 300]}
    handle = default_store(fake_config).put(sample_path("cat", fake_config))
    out = graph.invoke(
        {"image": handle, "subject": subject, "object": object_, "predicates": ["on", "near"]}
    )
    assert clip.image_forwards == [4]  # subject, object, union and spatial image in one pass
    ranking = out["ranking"]
    assert out["spatial_mode"] == "image" and len(ranking) == 2
    spatial = ranking[0]["evidence"]["spatial"]
    texts = [spatial_text(c, ("animal", "furniture")) for c in json.loads(reply)["spatial_cues"]]
    drawn = draw_spatial_image(subject["box"], object_["box"])
    assert spatial["score"] == pytest.approx(_by_hand(clip, [drawn], texts).mean(), abs=1e-3)


def test_through_the_open_clip_backend(fake_config: Config, tiny_clip_dir: Path) -> None:
    pytest.importorskip("mmagents.models.scorer_open_clip", reason="open_clip backend not built")
    from mmagents._config import RoleConfig
    from mmagents.models import load_backend

    scorer = load_backend(
        "scorer", RoleConfig("open_clip", {"model": f"local-dir:{tiny_clip_dir}"})
    )
    table = {"cat": ["whiskers", "a long tail"], "rocket": ["used for space flight"]}
    graph = build_describe_graph(fake_config, models=Models(fake_config, scorer=scorer))
    store = default_store(fake_config)
    handle = store.put(sample_path("cat", fake_config))
    result = graph.invoke({"image": handle, "descriptor_table": table})
    clip = TinyOpenClip(tiny_clip_dir)
    for entry in result["scores"]:
        texts = [descriptor_sentence(entry["class"], d) for d in table[entry["class"]]]
        want = _by_hand(clip, [store.get(handle)], texts).mean()
        assert entry["score"] == pytest.approx(want, abs=1e-3)
