"""Tiny random-initialised hub models, saved the way real ones are published.

Each builder writes a folder that the matching backend loads through the same path a user's model
takes (``from_pretrained(folder)``, open_clip's ``local-dir:`` or ``pretrained=<checkpoint>``).
Nothing is downloaded: the tokenizers are built here from a byte-level alphabet (CLIP BPE, LLaMA
chat) or a small word list (BERT WordPiece for BLIP). Every model is a few hundred kilobytes.
The outputs are meaningless; tests check shapes, protocols and determinism, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

#: ChatML, with image parts rendered as the processor's ``<image>`` placeholder.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_SPECIALS = ["<|im_start|>", "<|im_end|>", "<pad>", "<image>"]

TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}
#: A preprocessing that differs from open_clip's default, to show it travels with the weights.
TINY_OPEN_CLIP_PREPROCESS = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def clip_tokenizer(max_length: int = 32) -> Any:
    """A CLIP BPE tokenizer with no merges: every byte is a token (vocabulary of 514)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _byte_alphabet():
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def bert_tokenizer() -> Any:
    """A BERT WordPiece tokenizer over letters, digits and a few words, with BLIP's ``[DEC]``."""
    from transformers import BertTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    words += list(letters + "0123456789?.,!'") + ["##" + c for c in letters]
    words += ["a", "the", "photo", "picture", "of", "cat", "dog", "what", "is", "in", "this"]
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    return BertTokenizer(vocab=vocab, bos_token="[DEC]")


def chat_tokenizer(*, image_token: bool = True) -> Any:
    """A byte-level tokenizer with ChatML special tokens, ``<image>`` and a chat template.

    ``image_token=False`` leaves ``<image>`` out, as in a text-only LM's tokenizer (BLIP-2's
    processor adds it itself).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = CHAT_SPECIALS if image_token else CHAT_SPECIALS[:-1]
    vocab = {char: i for i, char in enumerate(_byte_alphabet())}
    for token in specials:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        **({"extra_special_tokens": {"image_token": "<image>"}} if image_token else {}),
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _tiny_llama_config(tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny_vision(**extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
        **extra,
    }


def save_open_clip_local_dir(folder: Path) -> Path:
    """open_clip's ``local-dir:`` layout: ``open_clip_config.json`` + safetensors weights."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_OPEN_CLIP)
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": TINY_OPEN_CLIP_PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


def save_open_clip_checkpoint(folder: Path, name: str) -> tuple[Path, Path]:
    """A custom architecture's JSON config (``<name>.json``) and a ``.pt`` state-dict checkpoint."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    model = open_clip.CLIP(**TINY_OPEN_CLIP)
    checkpoint = folder / "tiny_clip.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    config = folder / f"{name}.json"
    config.write_text(json.dumps(TINY_OPEN_CLIP))
    return config, checkpoint


def save_hf_clip(folder: Path) -> Path:
    """A ``CLIPModel`` + ``CLIPProcessor`` folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = clip_tokenizer()
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=_tiny_vision(), projection_dim=16))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_blip(folder: Path, *, vqa: bool) -> Path:
    """A BLIP captioner (``BlipForConditionalGeneration``) or answerer (``...ForQuestionAnswering``)."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = bert_tokenizer()
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "encoder_hidden_size": 32,
        "max_position_embeddings": 64,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    config = BlipConfig(text_config=text, vision_config=_tiny_vision(), projection_dim=16)
    torch.manual_seed(0)
    model = (BlipForQuestionAnswering if vqa else BlipForConditionalGeneration)(config)
    model.save_pretrained(folder)
    images = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_bert(folder: Path, *, hidden: int = 32, layers: int = 2) -> Path:
    """A ``BertModel`` (two heads, feed-forward twice ``hidden``) with the small WordPiece
    vocabulary, saved like a sentence-encoder folder."""
    from transformers import BertConfig, BertModel

    tokenizer = bert_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_llama(folder: Path) -> Path:
    """A one-layer ``LlamaForCausalLM`` with a ChatML tokenizer."""
    from transformers import LlamaForCausalLM

    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_llama_config(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_llava(folder: Path) -> Path:
    """A ``LlavaForConditionalGeneration`` (CLIP vision tower + LLaMA) with a chat-template processor."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = chat_tokenizer()
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_tiny_vision()),
        text_config=_tiny_llama_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(folder)
    return folder


def save_blip2(folder: Path) -> Path:
    """A ``Blip2ForConditionalGeneration`` (ViT, Q-Former with 4 queries, OPT) and its processor."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        BlipImageProcessor,
        OPTConfig,
    )

    tokenizer = chat_tokenizer(image_token=False)
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        num_query_tokens=4,
    )
    text = OPTConfig(
        vocab_size=len(tokenizer),  # the processor has added <image>
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=128,
        word_embed_proj_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    qformer = Blip2QFormerConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        encoder_hidden_size=32,
        vocab_size=len(tokenizer),
    )
    config = Blip2Config(
        vision_config=_tiny_vision(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_stable_diffusion(folder: Path) -> Path:
    """A ``StableDiffusionPipeline`` (UNet, VAE, CLIP text encoder, tokenizer, scheduler)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    pipeline: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder
