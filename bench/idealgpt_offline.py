"""IdealGPT on the real offline models: what one question costs, per question on the bundled photos.

Runs the graph (questioner and reasoner on the llm role, the socratic VLM answering) on the VQA
fixture's six questions plus a few the socratic eyes find hard (colour, people, day or night), and
prints per question: wall seconds, LLM calls, prompt and generated tokens, prompt tokens read from
llama.cpp's KV cache, prefix-cache restores (a saved system-prompt state loaded) and the answer.
Then the medians (goal: median <= 20 s per question with the 0.5B planner on an idle 2 cores).

    nice -n 10 .venv/bin/python bench/idealgpt_offline.py                       # 0.5B planner
    nice -n 10 .venv/bin/python bench/idealgpt_offline.py --model qwen2.5-coder-1.5b
    nice -n 10 .venv/bin/python bench/idealgpt_offline.py --prefix-states 0     # no saved states

"right" is a coarse check (the answer contains an accepted answer as whole words); six or nine questions measure
little, so read it beside the answers. State the machine's load with the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from PIL import Image

from mmagents import load_config
from mmagents.eval.vqa_fixture import VQA_FIXTURE
from mmagents.graphs._settings import resolve_settings
from mmagents.graphs.idealgpt import IdealGPTInput, IdealGPTSettings, build_idealgpt_graph
from mmagents.models.vlm_socratic import SocraticVLM
from mmagents.runtime import Models
from mmagents.samples import sample_path

#: Questions beyond the fixture's: sample → (question, accepted answers).
HARDER: dict[str, tuple[str, list[str]]] = {
    "astronaut": ("What colour is the person's suit?", ["orange"]),
    "camera": ("How many people are in the picture?", ["one", "1"]),
    "rocket": ("Is it day or night?", ["day"]),
}


class Usage(BaseCallbackHandler):
    """Counts llm calls and tokens from each reply's usage metadata."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls = self.prompt = self.generated = self.cached = self.restores = 0

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None) or {}
                meta = getattr(message, "response_metadata", None) or {}
                self.calls += 1
                self.prompt += usage.get("input_tokens", 0)
                self.generated += usage.get("output_tokens", 0)
                self.cached += (usage.get("input_token_details") or {}).get("cache_read", 0)
                self.restores += meta.get("prefix_cache") == "restored"


def questions(limit: int | None) -> list[tuple[str, str, list[str]]]:
    items = [(name, q, answers) for name, (q, answers, _, _) in VQA_FIXTURE.items()]
    items += [(name, q, answers) for name, (q, answers) in HARDER.items()]
    return items[:limit] if limit else items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="zoo model (default: the profile's)")
    parser.add_argument("--prefix-states", type=int, default=None, help="0 turns saved states off")
    parser.add_argument("--max-rounds", type=int, default=None, help="default: [graphs.idealgpt]")
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N questions")
    parser.add_argument(
        "--single-shot", action="store_true", help="IdealGPT's baseline: the VLM answers alone"
    )
    parser.add_argument(
        "--eyes",
        default="faces,region,light",
        help="socratic VLM additions to use, comma-separated (faces, region, light; '' = none)",
    )
    args = parser.parse_args()
    env = {**os.environ, "MMAGENTS_HOME": os.environ.get("MMAGENTS_HOME", tempfile.mkdtemp())}
    if args.model:
        env["MMAGENTS_LLM__MODEL"] = args.model
    if args.prefix_states is not None:
        env["MMAGENTS_LLM__PREFIX_STATES"] = str(args.prefix_states)
    config = load_config(environ=env)
    usage = Usage()
    models = Models(config)
    llm = models.llm
    llm.callbacks = [usage]  # every call of this model reports, whichever node makes it
    eyes = {e for e in args.eyes.split(",") if e}
    vlm = SocraticVLM(
        llm=llm,
        config=config,
        faces="faces" in eyes,
        region_colours="region" in eyes,
        light="light" in eyes,
    )
    models = Models(config, models.store, llm=llm, vlm=vlm)
    overrides = {"max_rounds": args.max_rounds} if args.max_rounds else None
    settings = resolve_settings(IdealGPTSettings, config, overrides)
    graph = build_idealgpt_graph(config, models=models, settings=settings)
    store = models.store
    with Image.open(sample_path("coins", config)) as photo:  # load every model before timing
        vlm.caption(photo.convert("RGB"))
    llm.invoke("Hi", max_tokens=1)
    usage.reset()
    print(
        f"{'single-shot (VLM alone)' if args.single_shot else 'IdealGPT'}; "
        f"eyes {sorted(eyes) or 'none'}; llm {config.role('llm').options}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"{'question':44s} {'wall s':>6s} {'calls':>5s} {'prompt':>6s} {'gen':>5s} "
        f"{'cached':>6s} {'restores':>8s}  right  answer"
    )
    rows = []
    for name, question, accepted in questions(args.limit)[args.skip :]:
        handle = store.put(sample_path(name, config))
        usage.reset()
        start = time.perf_counter()
        if args.single_shot:
            answer = vlm.answer(store.get(handle), question)
        else:
            state = graph.invoke(IdealGPTInput(image=handle, question=question).model_dump())
            answer = str(state.get("answer") or state.get("error") or "")
        wall = time.perf_counter() - start
        # Whole words: "1" must not match "10".
        right = any(re.search(rf"\b{re.escape(a.lower())}\b", answer.lower()) for a in accepted)
        rows.append((wall, usage.calls, usage.prompt, usage.generated, usage.cached, right))
        label = f"{name}: {question}"[:44]
        print(
            f"{label:44s} {wall:6.1f} {usage.calls:5d} {usage.prompt:6d} {usage.generated:5d} "
            f"{usage.cached:6d} {usage.restores:8d}  {'yes' if right else 'no ':5s}  "
            f"{answer[:60]!r}",
            flush=True,
        )
    walls = [r[0] for r in rows]
    print(
        f"median wall {statistics.median(walls):.1f} s per question "
        f"(mean {statistics.mean(walls):.1f}); median llm calls "
        f"{statistics.median(r[1] for r in rows):.0f}; prompt tokens {sum(r[2] for r in rows)}, "
        f"of which read from the KV cache {sum(r[4] for r in rows)}; generated "
        f"{sum(r[3] for r in rows)}; right {sum(r[5] for r in rows)}/{len(rows)}; "
        f"load average {os.getloadavg()[0]:.2f} at end"
    )


if __name__ == "__main__":
    main()
