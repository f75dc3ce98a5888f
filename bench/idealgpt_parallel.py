"""IdealGPT: parallel versus sequential answerers, with an I/O-bound VQA endpoint.

The answerer VLM is a client of a local HTTP endpoint (started here on 127.0.0.1) that sleeps a
fixed time per request, as a remote VQA model would. The same compiled graph runs one round with 3
sub-questions twice: answerers fanned out with ``Send`` (default), and one at a time
(``max_concurrency=1``). The LLM is an instant scripted fake, so the wall time is the VQA time.

    python bench/idealgpt_parallel.py [--delay 0.3] [--repeats 5]

Prints the median wall times and their ratio (goal: parallel / sequential <= 0.55), for the round
alone (caption given, as with the reference's precomputed captions) and for a whole run that also
asks the endpoint for the caption.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from mmagents import load_config
from mmagents.graphs._run import run_graph, thread_config
from mmagents.graphs.idealgpt import IdealGPTSettings, build_idealgpt_graph
from mmagents.images import default_store
from mmagents.models.fake import ScriptedChat
from mmagents.runtime import Models

SUB_QUESTIONS = ["What is the animal?", "What colour is its fur?", "What is it lying on?"]
GOAL = 0.55


@contextmanager
def sleepy_endpoint(delay: float) -> Iterator[str]:
    """A threaded HTTP server answering every GET after ``delay`` seconds; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            body = json.dumps({"text": f"reply to {query.get('q', [''])[0]}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # keep the bench output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class HttpVLM:
    """A VLM whose every call is one HTTP request to the endpoint (the image is not sent)."""

    name = "http-vlm"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _get(self, path: str, question: str = "") -> str:
        url = f"{self.base_url}/{path}?{urllib.parse.urlencode({'q': question})}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return str(json.loads(response.read())["text"])

    def caption(self, image: Image.Image) -> str:
        return self._get("caption")

    def answer(self, image: Image.Image, question: str) -> str:
        return self._get("answer", question)


def _timed_run(graph: Any, inputs: Any, max_concurrency: int | None) -> float:
    start = time.perf_counter()
    state = run_graph(graph, inputs, config=thread_config(max_concurrency=max_concurrency))
    took = time.perf_counter() - start
    assert len(state["rounds"][0]["sub_questions"]) == len(SUB_QUESTIONS), state
    return took


def measure(delay: float, repeats: int) -> dict[str, dict[str, float]]:
    """Median wall times (parallel, sequential) and their ratio, with and without the caption."""
    reply = json.dumps(
        {"sub_questions": SUB_QUESTIONS, "analysis": "a cat", "answer": "cat", "confidence": 1.0}
    )
    with tempfile.TemporaryDirectory() as home, sleepy_endpoint(delay) as url:
        config = load_config(environ={"MMAGENTS_HOME": home})
        handle = default_store(config).put(Image.new("RGB", (64, 64), (120, 90, 60)))
        models = Models(config, llm=ScriptedChat(replies=[reply], cycle=True), vlm=HttpVLM(url))
        settings = IdealGPTSettings(max_rounds=1)
        graph = build_idealgpt_graph(config, models=models, settings=settings)
        question = {"image": handle, "question": "What animal?"}
        cases = {
            "round (caption given)": {**question, "caption": "an animal"},
            "whole run (caption asked)": question,
        }
        _timed_run(graph, cases["round (caption given)"], None)  # warm-up: imports, sockets
        results = {}
        for name, inputs in cases.items():
            parallel = statistics.median(_timed_run(graph, inputs, None) for _ in range(repeats))
            sequential = statistics.median(_timed_run(graph, inputs, 1) for _ in range(repeats))
            results[name] = {
                "parallel_s": parallel,
                "sequential_s": sequential,
                "ratio": parallel / sequential,
            }
        return results


def main() -> int:
    """Run the bench and print the figures."""
    parser = argparse.ArgumentParser(description="IdealGPT parallel vs sequential answerers")
    parser.add_argument("--delay", type=float, default=0.3, help="seconds per VQA request")
    parser.add_argument("--repeats", type=int, default=5, help="runs per mode (median)")
    args = parser.parse_args()
    results = measure(args.delay, args.repeats)
    print(f"{len(SUB_QUESTIONS)} sub-questions, {args.delay:.2f} s per VQA request, "
          f"median of {args.repeats} runs")  # fmt: skip
    for name, r in results.items():
        verdict = "meets" if r["ratio"] <= GOAL else "misses"
        print(
            f"{name:<26} parallel {r['parallel_s']:.3f} s  sequential {r['sequential_s']:.3f} s  "
            f"ratio {r['ratio']:.2f} ({verdict} the goal <= {GOAL})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
