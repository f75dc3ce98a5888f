"""What the offline planner writes, beyond IdealGPT: descriptors, RECODE cues, tool calls, rationales.

Small, honest samples on the real llm role (default: the profile's, i.e. Qwen2.5-Coder-0.5B):

* descriptor JSON: 10 ImageNet classes; share valid on the first call, and after <= 2 repairs;
* RECODE cues: 6 (predicate, subject, object) triples; same two shares;
* chat tool calls: 10 scripted requests, each with the tool a user would expect; success = that
  tool, with arguments that validate against its schema (tools are not run);
* meme rationales: the first 8 Harm-C *train* memes (``../shared/data``; gold label given, as at
  training time); label-leak rate = share of first answers that state the label (then rewritten).

    nice -n 10 .venv/bin/python bench/planner_quality.py [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

from mmagents import load_config
from mmagents.agents.cue_writer import build_cue_writer
from mmagents.agents.descriptor_writer import build_descriptor_writer
from mmagents.agents.rationale_writer import build_rationale_writer
from mmagents.errors import MMAgentsError
from mmagents.runtime import Models
from mmagents.tools import build_tools

CLASSES = [
    "tabby cat",
    "espresso",
    "space shuttle",
    "golden retriever",
    "school bus",
    "goldfish",
    "acoustic guitar",
    "umbrella",
    "broccoli",
    "lighthouse",
]
TRIPLES = [
    ("on", "animal", "furniture"),
    ("holding", "person", "tool"),
    ("riding", "person", "vehicle"),
    ("under", "animal", "furniture"),
    ("wearing", "person", "clothing"),
    ("near", "vehicle", "building"),
]
H = "img_0123456789abcdef"
#: request → the tool a user would expect.
REQUESTS = [
    (f"[image {H} attached] Describe this picture.", "caption"),
    (f"[image {H} attached] What colour is the car?", "answer_question"),
    (f"[image {H} attached] Read the text on the sign.", "read_text"),
    (f"[image {H} attached] Which ImageNet class is this?", "classify_image"),
    (f"[image {H} attached] Is this meme harmful?", "classify_meme"),
    ("Make me a picture of a red bicycle.", "generate_image"),
    (
        f"[image {H} attached] How well does 'a dog on a beach' match this photo?",
        "score_image_text",
    ),
    (f"[image {H} attached] Crop the top left quarter of the image.", "crop_region"),
    (f"[image {H} attached] What is written on the cup?", "read_text"),
    (f"[image {H} attached] Write a caption for this image.", "caption"),
]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "memes" / "harmc"


def _share(hits: int, total: int) -> str:
    return f"{hits}/{total} ({hits / total:.0%})" if total else "0/0"


def structured_shares(runnable: Any, inputs: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(valid on the first call, valid after repairs, total)."""
    first = final = 0
    for item in inputs:
        try:
            out = runnable.invoke(item)
        except MMAgentsError:
            continue
        final += 1
        first += out.attempts == 1
    return first, final, len(inputs)


def tool_calls(llm: Any, config: Any) -> tuple[int, int, list[str]]:
    tools = build_tools(config)
    by_name = {t.name: t for t in tools}
    bound = llm.bind_tools(tools)
    ok, seen = 0, []
    for request, expected in REQUESTS:
        message = bound.invoke([HumanMessage(request)])
        call = message.tool_calls[0] if message.tool_calls else None
        valid = False
        if call is not None and call["name"] == expected:
            schema = by_name[expected].args_schema
            try:
                schema.model_validate(call["args"])  # type: ignore[union-attr]
                valid = True
            except Exception:  # a pydantic ValidationError: the call is not usable
                valid = False
        ok += valid
        seen.append(call["name"] if call else "(answered)")
    return ok, len(REQUESTS), seen


def rationales(llm: Any, n: int) -> tuple[int, int, int, int]:
    """(first answers leaking the label, still leaking after the rewrite, failed, total)."""
    if not (SHARED / "train.jsonl").is_file():
        return 0, 0, 0, 0
    writer = build_rationale_writer(llm)
    leaked = stripped = failed = 0
    with open(SHARED / "train.jsonl", encoding="utf-8") as lines:
        memes = [json.loads(line) for _, line in zip(range(n), lines, strict=False)]
    for meme in memes:
        try:
            out = writer.invoke(
                {"text": meme["text"], "caption": meme["caption"], "label": meme["label"]}
            )
        except MMAgentsError:
            failed += 1
            continue
        leaked += out.leak_rewritten
        stripped += out.leak_stripped
    return leaked, stripped, failed, len(memes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="zoo model (default: the profile's)")
    parser.add_argument("--memes", type=int, default=8, help="Harm-C train memes to explain")
    args = parser.parse_args()
    env = {**os.environ, "MMAGENTS_HOME": os.environ.get("MMAGENTS_HOME", tempfile.mkdtemp())}
    if args.model:
        env["MMAGENTS_LLM__MODEL"] = args.model
    for role in ("vlm", "scorer", "ocr", "imagegen", "embed"):  # tools are built, never run
        env[f"MMAGENTS_{role.upper()}__BACKEND"] = "fake"
    config = load_config(environ=env)
    llm = Models(config).llm
    print(f"llm {config.role('llm').options}; load average {os.getloadavg()[0]:.2f} at start")
    start = time.perf_counter()
    first, final, total = structured_shares(
        build_descriptor_writer(llm), [{"class_name": c} for c in CLASSES]
    )
    print(
        f"descriptor JSON valid: first call {_share(first, total)}, after repairs "
        f"{_share(final, total)}  [{time.perf_counter() - start:.0f} s]",
        flush=True,
    )
    start = time.perf_counter()
    first, final, total = structured_shares(
        build_cue_writer(llm), [{"predicate": p, "subject": s, "object": o} for p, s, o in TRIPLES]
    )
    print(
        f"RECODE cues valid: first call {_share(first, total)}, after repairs "
        f"{_share(final, total)}  [{time.perf_counter() - start:.0f} s]",
        flush=True,
    )
    start = time.perf_counter()
    ok, total, seen = tool_calls(llm, config)
    print(
        f"chat tool calls: {_share(ok, total)} right tool with valid arguments; chose {seen}  "
        f"[{time.perf_counter() - start:.0f} s]",
        flush=True,
    )
    start = time.perf_counter()
    leaked, stripped, failed, total = rationales(llm, args.memes)
    print(
        f"meme rationales (Harm-C train, label given): first answer leaks the label "
        f"{_share(leaked, total)}; still leaking after the rewrite (sentences cut) "
        f"{_share(stripped, total)}; failed {failed}  [{time.perf_counter() - start:.0f} s]"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
