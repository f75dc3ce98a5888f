"""The hub backends (open_clip, transformers CLIP/BLIP/LLaVA/causal LM, diffusers) on tiny models.

Every model is random-initialised, saved to a session temp folder by ``tests/_tiny_models.py`` and
loaded back through the path a user's model takes (a config file naming local folders,
``from_pretrained``, open_clip's ``local-dir:`` and ``pretrained=<checkpoint>``). What is checked:
protocol conformance, shapes, that the saved weights (not a fresh init) are used, that
preprocessing travels with the weights, determinism, provenance, typed errors and load-once.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from PIL import Image
from pydantic import BaseModel

from mmagents import load_config
from mmagents.errors import BackendError, BackendUnavailableError, StructuredOutputError
from mmagents.models import load_role
from mmagents.models.base import VLM, ImageGenerator, Scorer

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import _tiny_models as tiny  # noqa: E402  (needs torch and transformers, checked above)

OPEN_CLIP_NAME = "mmagents-test-tiny-clip"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and spin-waiting workers on a busy machine made
    this file three times slower; the previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------- tiny model folders


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-hub")


@pytest.fixture(scope="session")
def open_clip_dir(tiny_root: Path) -> Path:
    pytest.importorskip("open_clip")
    return tiny.save_open_clip_local_dir(tiny_root / "open_clip_dir")


@pytest.fixture(scope="session")
def open_clip_checkpoint(tiny_root: Path) -> tuple[Path, Path]:
    pytest.importorskip("open_clip")
    return tiny.save_open_clip_checkpoint(tiny_root / "open_clip_ckpt", OPEN_CLIP_NAME)


@pytest.fixture(scope="session")
def hf_clip_dir(tiny_root: Path) -> Path:
    return tiny.save_hf_clip(tiny_root / "hf_clip")


@pytest.fixture(scope="session")
def blip_caption_dir(tiny_root: Path) -> Path:
    return tiny.save_blip(tiny_root / "blip_caption", vqa=False)


@pytest.fixture(scope="session")
def blip_vqa_dir(tiny_root: Path) -> Path:
    return tiny.save_blip(tiny_root / "blip_vqa", vqa=True)


@pytest.fixture(scope="session")
def blip2_dir(tiny_root: Path) -> Path:
    return tiny.save_blip2(tiny_root / "blip2")


@pytest.fixture(scope="session")
def llava_dir(tiny_root: Path) -> Path:
    return tiny.save_llava(tiny_root / "llava")


@pytest.fixture(scope="session")
def llama_dir(tiny_root: Path) -> Path:
    return tiny.save_llama(tiny_root / "llama")


@pytest.fixture(scope="session")
def sd_dir(tiny_root: Path) -> Path:
    pytest.importorskip("diffusers")
    return tiny.save_stable_diffusion(tiny_root / "sd")


def _without_chat_template(folder: Path, target: Path) -> Path:
    """A copy of ``folder`` without its chat template, like a base (not instruction-tuned) model."""
    shutil.copytree(folder, target, dirs_exist_ok=True)
    (target / "chat_template.jinja").unlink()
    return target


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return [Image.new("RGB", (40, 30), (220, 20, 20)), Image.new("L", (30, 50), 128), noise]


# --------------------------------------------------------------------------- scorers


def _open_clip_local(folder: Path, **options: Any) -> Any:
    from mmagents.models.scorer_open_clip import OpenClipScorer

    return OpenClipScorer(model=f"local-dir:{folder}", device="cpu", **options)


def _open_clip_checkpoint(config: Path, checkpoint: Path, **options: Any) -> Any:
    from mmagents.models.scorer_open_clip import OpenClipScorer

    return OpenClipScorer(
        model=OPEN_CLIP_NAME,
        pretrained=str(checkpoint),
        model_config=str(config),
        device="cpu",
        **options,
    )


def _hf_clip(folder: Path, **options: Any) -> Any:
    from mmagents.models.scorer_hf_clip import HFClipScorer

    return HFClipScorer(model=str(folder), device="cpu", **options)


@pytest.fixture(params=["open_clip_local_dir", "open_clip_checkpoint", "hf_clip"])
def make_scorer(request: pytest.FixtureRequest) -> Any:
    """A factory ``(**options) -> scorer`` for each scorer backend and weight source."""
    if request.param == "open_clip_local_dir":
        folder = request.getfixturevalue("open_clip_dir")
        return lambda **o: _open_clip_local(folder, **o)
    if request.param == "open_clip_checkpoint":
        config, checkpoint = request.getfixturevalue("open_clip_checkpoint")
        return lambda **o: _open_clip_checkpoint(config, checkpoint, **o)
    folder = request.getfixturevalue("hf_clip_dir")
    return lambda **o: _hf_clip(folder, **o)


def test_scorer_protocol_shapes_and_score_identity(make_scorer: Any, images: list[Any]) -> None:
    scorer = make_scorer()
    texts = ["a photo of a cat", "a red square", "noise"]
    img, txt = scorer.embed_images(images), scorer.embed_texts(texts)
    assert isinstance(scorer, Scorer)
    assert img.shape == (3, 16) and txt.shape == (3, 16)
    assert img.dtype == np.float32 and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    scores = scorer.score(images, texts[:2])
    assert scores.shape == (3, 2)
    np.testing.assert_allclose(scores, scorer.logit_scale * img @ txt[:2].T, rtol=1e-5)
    # Both libraries initialise the temperature to 1/0.07 and the checkpoint keeps it.
    assert scorer.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
    assert not np.allclose(img[0], img[2])  # different images, different features


def test_scorer_batches_give_the_same_features(make_scorer: Any, images: list[Any]) -> None:
    one_pass = make_scorer().embed_images(images)
    in_pairs = make_scorer(batch_size=2).embed_images(images)
    np.testing.assert_allclose(one_pass, in_pairs, atol=1e-5)


def test_open_clip_uses_the_saved_weights_and_their_preprocessing(
    open_clip_dir: Path, open_clip_checkpoint: tuple[Path, Path], images: list[Any]
) -> None:
    import open_clip

    local = _open_clip_local(open_clip_dir)
    from_checkpoint = _open_clip_checkpoint(*open_clip_checkpoint)
    # local-dir: open_clip_config.json's preprocess_cfg travels with the weights ...
    normalize = local.loaded().extras["preprocess"].transforms[-1]
    assert list(normalize.mean) == tiny.TINY_OPEN_CLIP_PREPROCESS["mean"]
    # ... while a bare checkpoint gets open_clip's default (OpenAI) normalisation.
    assert list(from_checkpoint.loaded().extras["preprocess"].transforms[-1].mean) != [0.5] * 3

    # The scores are open_clip's own forward on the saved weights (seed 0 vs seed 1 models).
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{open_clip_dir}")
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
    np.testing.assert_allclose(local.embed_images(images), expected.numpy(), atol=1e-5)
    assert not np.allclose(local.embed_images(images), from_checkpoint.embed_images(images))


def test_open_clip_precision_is_part_of_the_model_identity(
    open_clip_dir: Path, images: list[Any]
) -> None:
    full, half = (_open_clip_local(open_clip_dir, precision=p) for p in ("fp32", "pure_bf16"))
    assert full.loaded() is not half.loaded()
    assert next(half.loaded().model.parameters()).dtype == torch.bfloat16
    similarity = (full.embed_images(images) * half.embed_images(images)).sum(axis=1)
    assert similarity.min() > 0.98  # the same model, rounded


def test_hf_clip_matches_transformers_forward(hf_clip_dir: Path, images: list[Any]) -> None:
    from transformers import CLIPModel, CLIPProcessor

    model, processor = (
        CLIPModel.from_pretrained(hf_clip_dir),
        CLIPProcessor.from_pretrained(hf_clip_dir),
    )
    texts = ["a cat", "a much longer description of a red square " * 3]
    with torch.no_grad():
        inputs = processor(
            text=texts, images=images, return_tensors="pt", padding=True, truncation=True
        )
        logits = model(**inputs).logits_per_image
    np.testing.assert_allclose(
        _hf_clip(hf_clip_dir).score(images, texts), logits.numpy(), rtol=1e-4
    )


def test_scorers_report_missing_weights_as_typed_errors(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    with pytest.raises(BackendUnavailableError, match="missing"):
        _open_clip_local(tmp_path / "missing").embed_texts(["x"])
    with pytest.raises(BackendUnavailableError, match="missing"):
        _hf_clip(tmp_path / "missing").embed_texts(["x"])
    with pytest.raises(BackendError, match="precision"):
        _open_clip_local(tmp_path, precision="fp8")


# --------------------------------------------------------------------------- VLMs


def _vlm(model: Path, **options: Any) -> Any:
    from mmagents.models.vlm_hf import HFVLM

    return HFVLM(model=str(model), device="cpu", max_new_tokens=8, **options)


def test_blip_captioner_captions_and_refuses_questions(
    blip_caption_dir: Path, images: list[Any]
) -> None:
    vlm = _vlm(blip_caption_dir)
    assert isinstance(vlm, VLM)
    caption = vlm.caption(images[0])
    assert isinstance(caption, str) and caption == vlm.caption(images[0])
    with pytest.raises(BackendUnavailableError, match="vqa_model"):
        vlm.answer(images[0], "what colour is it?")


def test_blip_caption_prompt_is_not_echoed(blip_caption_dir: Path, images: list[Any]) -> None:
    captioned = _vlm(blip_caption_dir, caption_prompt="a photo of").caption(images[2])
    assert not captioned.lower().startswith("a photo of")


def test_blip_captioner_with_vqa_model_answers(
    blip_caption_dir: Path, blip_vqa_dir: Path, images: list[Any]
) -> None:
    vlm = _vlm(blip_caption_dir, vqa_model=str(blip_vqa_dir))
    answer = vlm.answer(images[1], "what is in the picture?")
    assert isinstance(answer, str) and answer == vlm.answer(images[1], "what is in the picture?")
    # The captioner still captions: the vqa model is only used for questions.
    assert vlm.caption(images[1]) == _vlm(blip_caption_dir).caption(images[1])


def test_blip_vqa_alone_captions_by_asking(blip_vqa_dir: Path, images: list[Any]) -> None:
    vlm = _vlm(blip_vqa_dir, caption_question="what is in the picture?")
    assert vlm.caption(images[0]) == vlm.answer(images[0], "what is in the picture?")


def test_blip2_answers_in_its_question_format(blip2_dir: Path, images: list[Any]) -> None:
    from mmagents.models.vlm_hf import BLIP2_QUESTION

    vlm = _vlm(blip2_dir)
    engine = vlm.engine(str(blip2_dir))
    assert type(engine.loaded.model).__name__ == "Blip2ForConditionalGeneration"
    answer = vlm.answer(images[0], "what is it?")
    # Only the new tokens come back: the echoed "Question: ... Answer:" prompt is cut off.
    full = engine.generate(images[0], BLIP2_QUESTION.format(question="what is it?"))
    assert answer == full and "Question:" not in answer
    assert isinstance(vlm.caption(images[0]), str)


def test_chat_template_vlm_captions_and_answers(llava_dir: Path, images: list[Any]) -> None:
    vlm = _vlm(llava_dir)
    engine = vlm.engine(str(llava_dir))
    assert type(engine.loaded.model).__name__ == "LlavaForConditionalGeneration"
    caption = vlm.caption(images[0])
    answer = vlm.answer(images[0], "What colour is the square?")
    assert isinstance(caption, str) and isinstance(answer, str)
    assert caption == vlm.caption(images[0])  # greedy decoding is reproducible
    # At most max_new_tokens new tokens (byte-level tokenizer: at most one byte each).
    assert len(answer.encode()) <= 8 * 4


def test_chat_vlm_without_template_is_refused(llava_dir: Path, tmp_path: Path) -> None:
    folder = _without_chat_template(llava_dir, tmp_path / "llava-base")
    with pytest.raises(BackendUnavailableError, match="chat template"):
        _vlm(folder).caption(Image.new("RGB", (8, 8)))


def test_vlm_missing_model_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError):
        _vlm(tmp_path / "nope").caption(Image.new("RGB", (8, 8)))


# --------------------------------------------------------------------------- llm


class Verdict(BaseModel):
    label: str
    confidence: float


def _chat(model: Path, **options: Any) -> Any:
    from mmagents.models.llm_hf import HFChat

    return HFChat(model=str(model), device="cpu", max_new_tokens=6, **options)


def test_hf_chat_generates_reproducibly_within_budget(llama_dir: Path) -> None:
    llm = _chat(llama_dir)
    messages = [HumanMessage(content="Say hello.")]
    reply = llm.invoke(messages)
    assert isinstance(reply, AIMessage) and isinstance(reply.content, str)
    assert reply.usage_metadata is not None
    assert 1 <= reply.usage_metadata["output_tokens"] <= 6
    assert llm.invoke(messages).content == reply.content
    sampled = _chat(llama_dir, temperature=1.0, seed=7)
    assert sampled.invoke(messages).content == sampled.invoke(messages).content


def test_hf_chat_takes_sampling_per_call(llama_dir: Path) -> None:
    from mmagents.models.sampling import supported_sampling

    llm = _chat(llama_dir)  # max_new_tokens=6, greedy
    messages = [HumanMessage(content="Say hello.")]
    assert supported_sampling(llm) == {"temperature", "top_p", "max_tokens", "stop", "seed"}
    # Sampled (greedy, this random model ends at once): some seeds run past 2 tokens freely.
    free = [llm.invoke(messages, temperature=1.0, seed=s) for s in range(6)]
    cut = [llm.invoke(messages, temperature=1.0, seed=s, max_tokens=2) for s in range(6)]
    assert any(r.usage_metadata and r.usage_metadata["output_tokens"] > 2 for r in free)
    for reply in cut:
        assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] <= 2
    assert any(r.response_metadata["finish_reason"] == "length" for r in cut)
    sampled = [llm.invoke(messages, temperature=1.0, seed=s).content for s in (3, 3, 4)]
    assert sampled[0] == sampled[1]  # the call's seed, not the model's
    assert llm.temperature == 0.0 and llm.max_new_tokens == 6  # the shared object is unchanged


def test_hf_chat_loads_once_and_is_thread_safe(llama_dir: Path) -> None:
    a, b = _chat(llama_dir), _chat(llama_dir)
    assert a.loaded() is b.loaded()
    prompts = [f"Count to {i}." for i in range(4)]
    sequential = [a.invoke(p).content for p in prompts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda p: b.invoke(p).content, prompts))
    assert parallel == sequential


def test_hf_chat_structured_output_fails_typed_on_a_random_model(llama_dir: Path) -> None:
    from mmagents.models.structured import invoke_structured

    llm = _chat(llama_dir)
    with pytest.raises(StructuredOutputError) as info:
        invoke_structured(llm, Verdict, [HumanMessage(content="Judge.")], max_repairs=1)
    assert info.value.attempts == 2


def test_hf_chat_base_model_is_refused(llama_dir: Path, tmp_path: Path) -> None:
    folder = _without_chat_template(llama_dir, tmp_path / "llama-base")
    with pytest.raises(BackendUnavailableError, match="chat template"):
        _chat(folder).invoke("hi")


def test_stop_sequences_cut_the_reply() -> None:
    from mmagents.models.llm_hf import _cut_at_stop

    assert _cut_at_stop("answer: yes\nQuestion: next", ["\nQuestion:", "zzz"]) == "answer: yes"
    assert _cut_at_stop("no stop here", None) == "no stop here"


# --------------------------------------------------------------------------- image generation


def _generator(folder: Path, **options: Any) -> Any:
    from mmagents.models.imagegen_diffusers import DiffusersGenerator

    defaults = {"num_inference_steps": 1, "guidance_scale": 0.0, "size": 32, "device": "cpu"}
    return DiffusersGenerator(model=str(folder), **{**defaults, **options})


def test_diffusers_generates_labelled_reproducible_images(sd_dir: Path) -> None:
    gen = _generator(sd_dir)
    assert isinstance(gen, ImageGenerator)
    first = gen.generate("a red cube", n=2)
    assert [g.provenance for g in first] == ["generated", "generated"]
    assert {g.source for g in first} == {str(sd_dir)}
    assert [g.meta["seed"] for g in first] == [0, 1]
    assert all(g.image.mode == "RGB" and g.image.size == (32, 32) for g in first)
    pixels = [np.asarray(g.image).astype(int) for g in first]
    assert np.abs(pixels[0] - pixels[1]).mean() > 5  # candidates differ
    again = np.asarray(gen.generate("a red cube", n=1)[0].image).astype(int)
    # Same seed, same image (up to rounding: a batch of one takes other float kernels).
    assert np.abs(again - pixels[0]).max() <= 2
    reseeded = _generator(sd_dir, seed=5).generate("a red cube")[0]
    assert np.abs(np.asarray(reseeded.image).astype(int) - pixels[0]).mean() > 5


def test_diffusers_rejects_bad_size() -> None:
    from mmagents.models.imagegen_diffusers import DiffusersGenerator

    with pytest.raises(BackendError, match="size"):
        DiffusersGenerator(model="x", size=[1, 2, 3])


# --------------------------------------------------------------------------- through the config


def test_hf_profile_with_local_folders_loads_every_hub_role(
    tmp_path: Path,
    open_clip_dir: Path,
    blip_caption_dir: Path,
    blip_vqa_dir: Path,
    llama_dir: Path,
    sd_dir: Path,
    images: list[Any],
) -> None:
    """A user's TOML file on the ``hf`` profile, with every model a local folder."""
    config_file = tmp_path / "mmagents.toml"
    config_file.write_text(
        f"""
profile = "hf"
[roles.llm]
model = "{llama_dir}"
max_new_tokens = 4
device = "cpu"
[roles.vlm]
model = "{blip_caption_dir}"
vqa_model = "{blip_vqa_dir}"
max_new_tokens = 4
device = "cpu"
[roles.scorer]
model = "local-dir:{open_clip_dir}"
device = "cpu"
[roles.imagegen]
model = "{sd_dir}"
size = 32
num_inference_steps = 1
device = "cpu"
"""
    )
    config = load_config(config_file, environ={"MMAGENTS_HOME": str(tmp_path / "home")})
    assert isinstance(load_role("llm", config).invoke("hi").content, str)
    vlm = load_role("vlm", config)
    assert isinstance(vlm.answer(images[0], "what is this?"), str)
    assert load_role("scorer", config).score(images[:1], ["a", "b"]).shape == (1, 2)
    assert load_role("imagegen", config).generate("x")[0].provenance == "generated"
    assert load_role("vlm", config) is not vlm  # a new backend object (the weights are shared)


def test_load_once_shares_models_across_threads(hf_clip_dir: Path) -> None:
    scorers = [_hf_clip(hf_clip_dir, batch_size=i + 1) for i in range(4)]
    barrier = threading.Barrier(4)

    def load(scorer: Any) -> Any:
        barrier.wait()
        return scorer.loaded()

    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = list(pool.map(load, scorers))
    assert all(item is loaded[0] for item in loaded)
