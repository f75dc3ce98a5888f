"""The paper's meme student (``--variant t5-clip``) end to end on tiny local T5 and CLIP models.

Both models are random-initialised, saved to a temp folder and loaded by ``from_pretrained``, the
path a user's google/flan-t5-base and openai/clip-vit-base-patch32 take. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from _paper_fixtures import write_mrharm  # noqa: E402
from _tiny_models import save_hf_clip  # noqa: E402

from mmagents.errors import ConfigError  # noqa: E402
from mmagents.eval.convert import convert  # noqa: E402
from mmagents.finetune.meme import MemeTrainConfig, train_meme_student  # noqa: E402
from mmagents.finetune.meme_data import read_memes  # noqa: E402
from mmagents.models.memes.student import MemeStudent  # noqa: E402


def save_tiny_t5(folder: Path) -> Path:
    """A T5ForConditionalGeneration (1 layer each side) + a byte-level tokenizer with T5's ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789 .,:'!?-":
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = T5Config(
        vocab_size=len(vocab),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_decoder_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return save_tiny_t5(root / "t5"), save_hf_clip(root / "clip")


@pytest.fixture
def harmc(tmp_path: Path) -> Path:
    data = write_mrharm(tmp_path, with_images=True)
    out = tmp_path / "harmc.jsonl"
    convert("mrharm", data, out, dataset="harmc", images=str(tmp_path / "images"))
    return out


def test_trains_both_stages_keeps_best_checkpoint_and_loads_as_student(
    tmp_path: Path, models: tuple[Path, Path], harmc: Path
) -> None:
    t5, clip = models
    cfg = MemeTrainConfig(
        variant="t5-clip",
        base_model=str(t5),
        clip_model=str(clip),
        rationale_epochs=2,
        epochs=2,
        batch_size=2,
        keep_label_statements=True,
        progress=False,
    )
    report = train_meme_student(harmc, tmp_path / "student", cfg, val_path=harmc)
    stages = report["t5_clip"]
    # 4 memes, batch 2: 2 steps per epoch; 1 meme has a rationale, so stage 1 has 1 per epoch.
    assert report["stages"] == {"rationale": 2, "label": 4}
    assert stages["rationale"]["epochs_validated"] == 2
    assert len(stages["label"]["val_accuracy"]) == 2 and stages["label"]["kept"].startswith("epoch")
    assert report["val"]["n"] == 4 and 0.0 <= report["val"]["accuracy"] <= 1.0
    student = MemeStudent(tmp_path / "student")
    memes = read_memes(harmc)
    probs = student._model.predict_proba(memes)
    assert probs.shape == (4,) and ((probs > 0) & (probs < 1)).all()
    verdict = student.classify(memes[0].text, image=memes[0].image)
    assert verdict.label in ("harmful", "harmless")
    assert len(student._model.generate_labels(memes[:2])) == 2
    meta = json.loads((tmp_path / "student" / "student.json").read_text())
    assert meta["variant"] == "t5-clip" and meta["options"]["clip_model"] == str(clip)


def test_image_features_reach_the_encoder(models: tuple[Path, Path], harmc: Path) -> None:
    """Different images change the encoder output: the fusion layers are in the path."""
    from PIL import Image

    from mmagents.models.memes.t5clip import FusedT5, load_t5_clip

    tokenizer, t5, clip, processor = load_t5_clip(str(models[0]), str(models[1]))
    model = FusedT5(t5, clip, processor)
    for layer in model.fusion:  # make the fusion non-trivial (random init is small but nonzero)
        torch.nn.init.normal_(layer.out.weight, std=1.0)
    ids = tokenizer(["a meme"], return_tensors="pt")
    outputs = []
    for colour in ((255, 0, 0), (0, 0, 255)):
        model._image = model.image_features([Image.new("RGB", (32, 32), colour)])
        outputs.append(model.t5.encoder(**ids).last_hidden_state)
    assert not torch.allclose(outputs[0], outputs[1])
    assert len(model.fusion) == t5.config.num_layers + 1


def test_refuses_memes_without_images(tmp_path: Path, models: tuple[Path, Path]) -> None:
    data = write_mrharm(tmp_path)
    out = tmp_path / "noimg.jsonl"
    convert("mrharm", data, out, dataset="harmc")
    cfg = MemeTrainConfig(
        variant="t5-clip", base_model=str(models[0]), clip_model=str(models[1]), progress=False
    )
    with pytest.raises(ConfigError, match="images"):
        train_meme_student(out, tmp_path / "s", cfg)


def test_cli_finetune_t5_clip(
    tmp_path: Path, models: tuple[Path, Path], harmc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmagents.cli import main

    args = ["finetune", "meme", "--variant", "t5-clip", "--train", str(harmc), "--val", str(harmc)]
    args += ["--out", str(tmp_path / "s"), "--base-model", str(models[0])]
    args += ["--clip-model", str(models[1]), "--steps", "1", "--batch-size", "4", "--no-augment"]
    assert main([*args, "--no-progress"]) == 0
    assert "trained t5-clip student" in capsys.readouterr().out


def test_student_serves_harmc_paper_protocol_and_classify_meme(
    tmp_path: Path, models: tuple[Path, Path], harmc: Path, fake_config: Any
) -> None:
    from mmagents.eval.runner import run_task
    from mmagents.graphs import get_pipeline
    from mmagents.runtime import Models

    cfg = MemeTrainConfig(
        variant="t5-clip", base_model=str(models[0]), clip_model=str(models[1]), steps=1,
        batch_size=4, augment=False, progress=False,
    )  # fmt: skip
    train_meme_student(harmc, tmp_path / "s", cfg)
    for protocol in ("paper", "default"):
        summary = run_task("harmc", fake_config, data=harmc, out=tmp_path / protocol,
                           progress=False, options={"model": str(tmp_path / "s"),
                                                    "protocol": protocol})  # fmt: skip
        assert summary.errors == 0 and summary.n == 4 and "macro_f1" in summary.metrics
    meme = read_memes(harmc)[1]
    pipeline, runtime = get_pipeline("meme"), Models(fake_config)
    settings = pipeline.settings_for(fake_config, {"model": str(tmp_path / "s")})
    graph = pipeline.build(fake_config, models=runtime, settings=settings)
    inputs = {"image": runtime.store.put(meme.image), "text": meme.text, "caption": meme.caption}
    out = graph.invoke(pipeline.inputs(inputs))
    assert out["prediction"] in ("harmful", "harmless") and 0.5 <= out["probability"] <= 1.0
