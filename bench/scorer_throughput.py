"""Cue-scoring throughput against the scorer's own forward pass; LLM calls per 100 relation samples.

Run: ``.venv/bin/python bench/scorer_throughput.py [--open-clip ViT-B-32] [--batch 32]``.

* **describe**: :class:`DescriptorClassifier` (one ``embed_images`` per batch, cached text
  features, per-class means, explanations) versus ``scorer.embed_images`` on the same batch.
  Goal: ratio (throughput ours / raw) >= 0.9. For open_clip the bare ``model.encode_image`` on the
  already-preprocessed tensor is printed too (the backend's own preprocessing is not ours).
* **recode**: one graph invocation per sample (cues cached: the steady state of an eval run)
  versus ``scorer.embed_images`` of the same sample's regions (subject, object, union crops, and
  the drawn-boxes image when the scorer reads it).
* **LLM calls per 100 relation samples**: Visual-Genome-like pairs (40 common categories, the 50
  VG predicates as candidates), counted on a scripted chat model: calls grow with distinct
  (predicate, subject super-category, object super-category) keys, not with samples.

``--open-clip NAME`` builds that open_clip architecture with random weights in a temporary
``local-dir:`` folder (nothing is downloaded; speed does not depend on the weights). Otherwise the
active profile's scorer is used (offline: ``label_space``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

VG_PREDICATES = [
    "above",
    "across",
    "against",
    "along",
    "and",
    "at",
    "attached to",
    "behind",
    "belonging to",
    "between",
    "carrying",
    "covered in",
    "covering",
    "eating",
    "flying in",
    "for",
    "from",
    "growing on",
    "hanging from",
    "has",
    "holding",
    "in",
    "in front of",
    "laying on",
    "looking at",
    "lying on",
    "made of",
    "mounted on",
    "near",
    "of",
    "on",
    "on back of",
    "over",
    "painted on",
    "parked on",
    "part of",
    "playing",
    "riding",
    "says",
    "sitting on",
    "standing on",
    "to",
    "under",
    "using",
    "walking in",
    "walking on",
    "watching",
    "wearing",
    "wears",
    "with",
]
VG_CATEGORIES = [
    "man",
    "woman",
    "boy",
    "girl",
    "person",
    "dog",
    "cat",
    "horse",
    "elephant",
    "bird",
    "car",
    "bus",
    "train",
    "bike",
    "motorcycle",
    "table",
    "chair",
    "bench",
    "bed",
    "shirt",
    "hat",
    "jacket",
    "shoe",
    "hand",
    "head",
    "arm",
    "leg",
    "pizza",
    "banana",
    "tree",
    "plant",
    "building",
    "window",
    "fence",
    "street",
    "sidewalk",
    "cup",
    "plate",
    "phone",
    "umbrella",
]


def _best(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: weights, caches, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _images(n: int, config: Any) -> list[Any]:
    from PIL import Image

    from mmagents.samples import SAMPLES, sample_path

    rng = random.Random(0)
    photos = [Image.open(sample_path(name, config)).convert("RGB") for name in SAMPLES]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        x, y = rng.randrange(w // 4), rng.randrange(h // 4)
        out.append(photo.crop((x, y, x + 3 * w // 4, y + 3 * h // 4)))
    return out


def _random_open_clip(name: str, folder: Path) -> dict[str, str]:
    """Save ``name`` with random weights as an open_clip local-dir folder; return scorer options."""
    import open_clip
    import torch

    model = open_clip.create_model(name, pretrained=None)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    config = open_clip.get_model_config(name)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    return {"backend": "open_clip", "model": f"local-dir:{folder}"}


def bench_describe(scorer: Any, config: Any, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per batch: raw ``embed_images`` and the descriptor classifier."""
    from mmagents.graphs._cues import role_identity, text_feature_cache
    from mmagents.graphs.describe import DescriptorClassifier

    images = _images(batch, config)
    classes = VG_CATEGORIES
    table = {c: [f"{c} part {i}" for i in range(5)] for c in classes}
    cache, scorer_id = text_feature_cache(config), role_identity(config, "scorer")
    classifier = DescriptorClassifier(
        scorer, classes, table, text_features=lambda t: cache.features(scorer, scorer_id, t)
    )
    out = {
        "raw": _best(lambda: scorer.embed_images(images), repeats),
        "ours": _best(lambda: classifier.classify(images, top_k=5), repeats),  # as in eval
    }
    backbone = _bare_backbone(scorer, images)
    if backbone is not None:
        out["backbone"] = _best(backbone, repeats)
    return out


def _bare_backbone(scorer: Any, images: list[Any]) -> Callable[[], Any] | None:
    """``model.encode_image`` on the preprocessed batch (open_clip backends only)."""
    loaded_fn = getattr(scorer, "loaded", None)
    if loaded_fn is None or scorer.name != "open_clip":
        return None
    import torch

    loaded = loaded_fn()
    preprocess = loaded.extras["preprocess"]
    # The backend's input dtype (fp16 weights on GPUs; open_clip keeps some parameters fp32).
    dtype = loaded.extras.get("input_dtype") or torch.float32
    tensor = torch.stack([preprocess(im) for im in images]).to(loaded.device, dtype)

    def run() -> None:
        with torch.inference_mode():
            loaded.model.encode_image(tensor, normalize=True)
        if tensor.is_cuda:
            torch.cuda.synchronize()

    return run


def _relation_samples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        s, o = rng.sample(VG_CATEGORIES, 2)
        x, y = rng.randrange(0, 200), rng.randrange(0, 150)
        samples.append(
            {
                "subject": {"category": s, "box": [x, y, x + rng.randrange(40, 200), y + 120]},
                "object": {"category": o, "box": [x + 50, y + 60, x + 250, y + 250]},
            }
        )
    return samples


def _cue_reply(_messages: Any) -> str:
    return json.dumps(
        {"subject_cues": ["subject standing"], "object_cues": ["object with a flat top"],
         "spatial_cues": ["subject is above object"], "reasoning": "layout",
         "weights": {"subject": 0.3, "object": 0.3, "spatial": 0.4}, "plausible": True}
    )  # fmt: skip


def bench_recode(scorer: Any, config: Any, n: int, repeats: int) -> dict[str, float]:
    """Seconds for ``n`` samples: raw region forward passes and warm graph invocations."""
    from mmagents.graphs._cues import crop
    from mmagents.graphs._spatial import draw_spatial_image
    from mmagents.graphs.recode import build_recode_graph
    from mmagents.images import default_store
    from mmagents.models.fake import ScriptedChat
    from mmagents.runtime import Models

    llm = ScriptedChat(replies=[_cue_reply], cycle=True)
    graph = build_recode_graph(config, models=Models(config, llm=llm, scorer=scorer))
    store = default_store(config)
    handle = store.put(_images(1, config)[0])
    image = store.get(handle)
    predicates = ["on", "near", "under", "holding", "behind"]
    states = [{**s, "image": handle, "predicates": predicates} for s in _relation_samples(n)]
    mode = graph.invoke(states[0])["spatial_mode"]  # fills the cue cache too

    def regions(state: dict[str, Any]) -> list[Any]:
        sb, ob = state["subject"]["box"], state["object"]["box"]
        union = [min(sb[0], ob[0]), min(sb[1], ob[1]), max(sb[2], ob[2]), max(sb[3], ob[3])]
        out = [crop(image, sb), crop(image, ob), crop(image, union)]
        return out + ([draw_spatial_image(sb, ob)] if mode == "image" else [])

    return {
        "raw": _best(lambda: [scorer.embed_images(regions(s)) for s in states], repeats),
        "ours": _best(lambda: [graph.invoke(s) for s in states], repeats),
    }


def bench_llm_calls(n: int, categories: str = "fine") -> tuple[int, int]:
    """(cue-writer calls, naive calls = samples x candidates) for ``n`` VG-like samples."""
    from mmagents import load_config
    from mmagents.graphs.recode import RecodeSettings, build_recode_graph
    from mmagents.images import default_store
    from mmagents.models.fake import FakeEmbedder, FakeScorer, ScriptedChat
    from mmagents.runtime import Models

    with tempfile.TemporaryDirectory() as home:
        config = load_config(environ={"MMAGENTS_HOME": home})  # an empty cue cache
        llm = ScriptedChat(replies=[_cue_reply], cycle=True)
        models = Models(config, llm=llm, scorer=FakeScorer(), embed=FakeEmbedder())
        settings = RecodeSettings(categories=categories)  # type: ignore[arg-type]
        graph = build_recode_graph(config, models=models, settings=settings)
        handle = default_store(config).put(_images(1, config)[0])
        for sample in _relation_samples(n, seed=1):
            graph.invoke({**sample, "image": handle, "predicates": VG_PREDICATES})
        return len(llm.calls), n * len(VG_PREDICATES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--open-clip", metavar="NAME", help="random-init open_clip architecture")
    parser.add_argument("--batch", type=int, default=32, help="images per describe batch")
    parser.add_argument("--samples", type=int, default=20, help="relation samples timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--llm-samples", type=int, default=100)
    args = parser.parse_args()

    from mmagents import load_config
    from mmagents.models import load_role

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MMAGENTS_HOME": str(Path(tmp) / "home")}
        if args.open_clip:
            options = _random_open_clip(args.open_clip, Path(tmp))
            env.update({f"MMAGENTS_SCORER__{k.upper()}": v for k, v in options.items()})
        config = load_config(environ=env)
        scorer = load_role("scorer", config)
        print(f"scorer: {config.role('scorer').backend} {dict(config.role('scorer').options)}")
        d = bench_describe(scorer, config, args.batch, args.repeats)
        r = bench_recode(scorer, config, args.samples, args.repeats)
    print(f"\n{'stage':44} {'s':>9} {'items/s':>9} {'ratio':>7}")
    rows = [
        (f"describe: scorer.embed_images x{args.batch}", d["raw"], args.batch, None),
        (f"describe: DescriptorClassifier x{args.batch}", d["ours"], args.batch, d["raw"] / d["ours"]),
    ]  # fmt: skip
    if "backbone" in d:
        rows.insert(
            0, ("describe: bare encode_image (preprocessed)", d["backbone"], args.batch, None)
        )
        rows.append(
            ("  ours vs bare encode_image", d["ours"], args.batch, d["backbone"] / d["ours"])
        )
    rows += [
        (f"recode: region forward passes x{args.samples}", r["raw"], args.samples, None),
        (f"recode: graph invocations x{args.samples}", r["ours"], args.samples, r["raw"] / r["ours"]),
    ]  # fmt: skip
    for name, seconds, items, ratio in rows:
        cell = f"{ratio:7.2f}" if ratio is not None else f"{'':7}"
        print(f"{name:44} {seconds:9.4f} {items / seconds:9.1f} {cell}")
    print("goal: ratio (throughput ours / raw forward) >= 0.90")

    for categories in ("fine", "paper"):
        calls, naive = bench_llm_calls(args.llm_samples, categories)
        print(
            f"\nLLM calls, {args.llm_samples} relation samples x {len(VG_PREDICATES)} candidates, "
            f"{categories} cue keys: {calls} ({100 * calls / args.llm_samples:.1f} per 100 samples;"
            f" one call per sample-predicate: {naive}; ratio {calls / naive:.3f})"
        )


if __name__ == "__main__":
    main()
