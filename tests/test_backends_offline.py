"""The offline default backends on their real weights and real photos (scikit-image samples).

Models are loaded once per module and shared; every test uses a few images at most.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from langchain_core.language_models import BaseChatModel
from PIL import Image, ImageDraw, ImageFont

from mmagents import Config
from mmagents.errors import BackendError, BackendUnavailableError, ConfigError
from mmagents.models import load_role
from mmagents.models.base import OCR, VLM, Embedder, ImageGenerator, OcrLine, Scorer
from mmagents.models.embed_minilm import MiniLMEmbedder
from mmagents.models.fake import FakeOCR, FakeScorer, ScriptedChat
from mmagents.models.imagegen_gallery import GalleryRetriever
from mmagents.models.ocr_rapidocr import RapidOCR, sort_lines
from mmagents.models.ocr_tesseract import TesseractOCR
from mmagents.models.scorer_label_space import LabelSpaceScorer, imagenet_classes
from mmagents.models.vlm_socratic import SocraticVLM, dominant_colours
from mmagents.samples import SAMPLES, sample_path

pytestmark = pytest.mark.slow

CAT_WORDS = ("cat", "tabby", "lynx", "kitten")


# -- shared models and photos ----------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(offline_config: Config) -> dict[str, Image.Image]:
    return {name: Image.open(sample_path(name, offline_config)).convert("RGB") for name in SAMPLES}


@pytest.fixture(scope="module")
def scorer(offline_config: Config, pytestconfig: pytest.Config) -> LabelSpaceScorer:
    # pytest's own cache folder keeps the 1000 class-name embeddings between test runs.
    cache = getattr(pytestconfig, "cache", None)
    folder = cache.mkdir("mmagents-label-space") if cache else offline_config.cache_dir
    return LabelSpaceScorer(cache_dir=str(folder))


@pytest.fixture(scope="module")
def ocr() -> RapidOCR:
    return RapidOCR()


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow >= 10.1 bundles a scalable default font; DejaVu is the fallback on older builds.
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.truetype("DejaVuSans.ttf", size)


def _text_image(lines: list[str], size: tuple[int, int] = (720, 260)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((30, 30 + 110 * i), line, fill=(10, 10, 60), font=_font(64))
    return image


def _squash(text: str) -> str:
    return "".join(text.split()).lower()


# -- scorer ------------------------------------------------------------------------------------


def test_cat_photo_scores_cat_above_car(scorer: LabelSpaceScorer, photos: dict) -> None:
    cat, car = scorer.score([photos["cat"]], ["a photo of a cat", "a photo of a car"])[0]
    assert cat > car + 10, (cat, car)


@pytest.mark.parametrize(
    ("photo", "right", "wrong"),
    [
        ("coffee", "a cup of coffee", "a photo of a cat"),
        ("rocket", "a rocket on its launch pad", "a cup of coffee"),
        ("camera", "a camera on a tripod", "a rocket"),
    ],
)
def test_photos_prefer_their_description(
    scorer: LabelSpaceScorer, photos: dict, photo: str, right: str, wrong: str
) -> None:
    good, bad = scorer.score([photos[photo]], [right, wrong])[0]
    assert good > bad, (photo, good, bad)


def test_text_retrieves_its_photo_among_all_samples(scorer: LabelSpaceScorer, photos: dict) -> None:
    names = list(photos)
    scores = scorer.score(list(photos.values()), ["a cat", "a rocket", "a tripod"])
    assert [names[i] for i in scores.argmax(axis=0)] == ["cat", "rocket", "camera"]


def test_score_is_scaled_dot_product_of_unit_features(
    scorer: LabelSpaceScorer, photos: dict
) -> None:
    images = [photos["cat"], photos["coffee"], photos["coins"]]
    texts = ["a cat", "coffee", "money", "a vague thing"]
    img, txt = scorer.embed_images(images), scorer.embed_texts(texts)
    assert img.shape == (3, 1000) and txt.shape == (4, 1000)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        scorer.score(images, texts), scorer.logit_scale * img @ txt.T, rtol=1e-5, atol=1e-4
    )


def test_a_batch_is_one_forward_pass_and_matches_single_images(
    scorer: LabelSpaceScorer, photos: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = scorer._classifier()
    calls: list[int] = []

    def counting(batch: object) -> object:
        calls.append(len(batch))  # type: ignore[arg-type]
        return model(batch)

    monkeypatch.setattr(scorer, "_classifier", lambda: counting)
    images = list(photos.values())
    batch = scorer.embed_images(images)
    assert calls == [len(images)]
    single = np.concatenate([scorer.embed_images([im]) for im in images[:2]])
    np.testing.assert_allclose(batch[:2], single, atol=1e-4)


def test_top_labels_of_the_cat_are_cats(scorer: LabelSpaceScorer, photos: dict) -> None:
    labels = scorer.top_labels(photos["cat"], k=3)
    assert len(labels) == 3 and labels[0][1] >= labels[1][1] >= labels[2][1]
    assert any(word in labels[0][0].lower() for word in CAT_WORDS), labels
    assert len(imagenet_classes()) == 1000


# -- OCR ---------------------------------------------------------------------------------------


def test_rapidocr_reads_rendered_text_top_to_bottom(ocr: RapidOCR) -> None:
    lines = ocr.read(_text_image(["HELLO WORLD", "Fresh coffee 42"]))
    assert [_squash(line.text) for line in lines] == ["helloworld", "freshcoffee42"]
    for line in lines:
        assert line.confidence > 0.8
        assert len(line.box) == 4 and all(isinstance(v, float) for pt in line.box for v in pt)
        assert min(x for x, _ in line.box) >= 0 and max(x for x, _ in line.box) <= 720
    assert lines[0].box[0][1] < lines[1].box[0][1]


def test_rapidocr_finds_nothing_on_a_blank_image(ocr: RapidOCR) -> None:
    assert ocr.read(Image.new("RGB", (200, 120), "white")) == []


def test_sort_lines_orders_rows_then_columns() -> None:
    def line(text: str, x: float, y: float) -> OcrLine:
        return OcrLine([(x, y), (x + 50, y), (x + 50, y + 20), (x, y + 20)], text, 0.9)

    shuffled = [line("d", 0, 100), line("b", 200, 3), line("a", 0, 0), line("c", 400, 1)]
    assert [ln.text for ln in sort_lines(shuffled)] == ["a", "b", "c", "d"]


def test_tesseract_reads_rendered_text_when_installed() -> None:
    if shutil.which("tesseract") is None:
        pytest.skip("the tesseract program is not installed (apt-get install tesseract-ocr)")
    pytest.importorskip("pytesseract")
    lines = TesseractOCR().read(_text_image(["HELLO WORLD"]))
    assert "helloworld" in _squash(" ".join(line.text for line in lines))


def test_tesseract_without_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pytesseract")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BackendUnavailableError, match="tesseract-ocr"):
        TesseractOCR().read(Image.new("RGB", (10, 10)))


# -- embeddings --------------------------------------------------------------------------------


def test_minilm_embeddings_are_unit_and_semantic(embedder: MiniLMEmbedder) -> None:
    vectors = embedder.embed(
        ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell today."]
    )
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert embedder.embed([]).shape == (0, 384)


# -- gallery (imagegen stand-in) ---------------------------------------------------------------


def test_gallery_retrieves_the_cat_and_says_so(
    scorer: LabelSpaceScorer, offline_config: Config
) -> None:
    gallery = GalleryRetriever(scorer=scorer, config=offline_config)
    results = gallery.generate("a cat", n=3)
    assert len(results) == 3
    assert Path(results[0].source).name == "cat.png"
    assert len({r.source for r in results}) == 3
    scores = [r.meta["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert r.provenance == "retrieved" and "not generated" in r.meta["note"]
        assert Path(r.source).is_file() and r.image.mode == "RGB"
    assert "retriev" in gallery.name


def test_gallery_reads_a_user_folder_and_rejects_an_empty_one(
    scorer: LabelSpaceScorer, offline_config: Config, tmp_path: Path
) -> None:
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(sample_path("coffee", offline_config), folder / "sub" / "espresso.png")
    shutil.copy(sample_path("rocket", offline_config), folder / "launch.png")
    (folder / "notes.txt").write_text("not an image")
    gallery = GalleryRetriever(folder=str(folder), scorer=scorer)
    assert Path(gallery.generate("a cup of coffee")[0].source).name == "espresso.png"
    assert len(gallery.generate("anything", n=5)) == 2  # never more than the folder holds
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no images"):
        GalleryRetriever(folder=str(empty), scorer=scorer).generate("x")


# -- socratic VLM ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def socratic(scorer: LabelSpaceScorer, ocr: RapidOCR) -> SocraticVLM:
    return SocraticVLM(scorer=scorer, ocr=ocr, llm=ScriptedChat(replies=["unused"]))


def test_socratic_caption_of_the_cat_names_a_cat(socratic: SocraticVLM, photos: dict) -> None:
    caption = socratic.caption(photos["cat"])
    assert "ImageNet classifier" in caption  # says where the words come from
    assert any(word in caption.lower() for word in CAT_WORDS), caption
    assert "no readable text" in caption


def test_socratic_caption_includes_text_read_in_the_image(socratic: SocraticVLM) -> None:
    caption = socratic.caption(_text_image(["OPEN SUNDAY"]))
    assert "opensunday" in _squash(caption), caption


def test_dominant_colours_name_the_main_colours() -> None:
    image = Image.new("RGB", (100, 100), (210, 25, 25))
    image.paste((20, 40, 190), (0, 0, 100, 30))
    colours = dominant_colours(image, k=2)
    assert [name for name, _ in colours] == ["red", "blue"]
    assert colours[0][1] == pytest.approx(0.7, abs=0.05)


def test_socratic_labels_from_a_clip_like_scorer_are_zero_shot(photos: dict) -> None:
    class CountingScorer(FakeScorer):
        text_calls = 0

        def embed_texts(self, texts: list[str]) -> np.ndarray:
            type(self).text_calls += 1
            return super().embed_texts(texts)

    vlm = SocraticVLM(scorer=CountingScorer(), ocr=FakeOCR(text=""), llm=ScriptedChat(replies=[]))
    labels = vlm.labels(photos["cat"])
    vlm.labels(photos["coffee"])
    assert len(labels) == 3 and labels[0][1] >= labels[1][1] >= labels[2][1]
    assert all(0 < p <= 1 for _, p in labels)
    assert CountingScorer.text_calls == 1  # the 1000 class-name features are computed once


def test_socratic_answer_asks_the_llm_with_the_description(
    scorer: LabelSpaceScorer, photos: dict
) -> None:
    llm = ScriptedChat(replies=["It is a tabby cat. It looks calm.\nExtra line.", "  "])
    vlm = SocraticVLM(scorer=scorer, ocr=FakeOCR(text="MEOW"), llm=llm)
    assert vlm.answer(photos["cat"], "What animal is this?") == "It is a tabby cat."
    prompt = " ".join(str(m.content) for m in llm.calls[0])
    assert "What animal is this?" in prompt and "MEOW" in prompt
    assert vlm.caption(photos["cat"]) in prompt
    with pytest.raises(BackendError, match="empty answer"):
        vlm.answer(photos["cat"], "And now?")


def test_socratic_answer_with_the_real_llm(scorer: LabelSpaceScorer, photos: dict) -> None:
    pytest.importorskip("llama_cpp")
    from mmagents.models.llm_llamacpp import LlamaCppChat

    llm = LlamaCppChat(model="smollm2-135m", temperature=0.0, max_tokens=40, n_ctx=1024)
    vlm = SocraticVLM(scorer=scorer, ocr=FakeOCR(text=""), llm=llm, read_text=False)
    answer = vlm.answer(photos["cat"], "What animal is in the picture?")
    assert 0 < len(answer) <= 200 and "\n" not in answer


# -- protocol contract -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "protocol"),
    [
        ("vlm", VLM),
        ("scorer", Scorer),
        ("ocr", OCR),
        ("imagegen", ImageGenerator),
        ("embed", Embedder),
        ("llm", BaseChatModel),
    ],
)
def test_offline_defaults_satisfy_their_protocol(
    offline_config: Config, role: str, protocol: type
) -> None:
    backend = load_role(role, offline_config)
    assert isinstance(backend, protocol)
    again = load_role(role, offline_config)  # a new backend object: nothing process-wide keeps it
    assert again is not backend and type(again) is type(backend)


def test_optional_tesseract_satisfies_the_ocr_protocol() -> None:
    assert isinstance(TesseractOCR(), OCR)
