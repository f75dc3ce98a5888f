"""llama.cpp generation speed alone and beside a competing CPU load, with and without OMP_WAIT_POLICY.

OpenMP reads its wait policy once, when the library loads, so every condition runs in a fresh
subprocess whose environment sets (``PASSIVE``) or removes the policy before llama_cpp is imported.
The competing load is one busy-looping process per ``--load`` core. Each condition loads the model,
warms up, then decodes for at most ``--seconds`` and reports tokens/s.

    nice -n 10 .venv/bin/python bench/llm_contention.py               # 0.5B planner, 2 threads
    .venv/bin/python bench/llm_contention.py --model smollm2-135m --threads 0   # 0 = auto threads

Last line: ``ratio under load: R (policy on) vs R0 (policy off)`` where R = loaded / alone tokens/s
(goal R >= 0.8). On a shared machine "alone" means "without *our* extra load": say how loaded it was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
from llama_cpp import Llama   # first: OpenMP loads under the parent's choice, before mmagents' own
from mmagents.models import zoo
from mmagents._cpu import CpuMeter
threads = args["threads"] or CpuMeter().free()
llm = Llama(model_path=str(zoo.ensure_model(args["model"])), n_ctx=512, n_threads=threads,
            seed=0, verbose=False)
prompt = "Write the numbers from 1 to 200, separated by commas: 1, 2, 3,"
# End-of-text is banned so every condition decodes the same number of tokens.
ends = {llm.token_eos(), *llm.tokenize(b"<|im_end|><|endoftext|>", add_bos=False, special=True)}
bias = {int(t): -100.0 for t in ends}
list(llm.create_completion(prompt, max_tokens=4, temperature=0.0, stream=True))  # warm-up
start, tokens = time.perf_counter(), 0
for _ in llm.create_completion(prompt, max_tokens=args["tokens"], temperature=0.0, stream=True,
                               logit_bias=bias):
    tokens += 1
    if time.perf_counter() - start > args["seconds"]:
        break
print(json.dumps({"tokens": tokens, "seconds": time.perf_counter() - start, "threads": threads}))
"""

_BUSY = "while True: pass"


def _condition(policy: bool, load: int, args: argparse.Namespace) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    hogs = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(load)]
    try:
        time.sleep(0.5 if hogs else 0)
        payload = json.dumps(
            {
                "model": args.model,
                "threads": args.threads,
                "tokens": args.tokens,
                "seconds": args.seconds,
            }
        )
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, payload],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=args.seconds + 300,
        )
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["tps"] = result["tokens"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="zoo model name")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (0 = auto)")
    parser.add_argument("--load", type=int, default=1, help="busy processes beside it")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to decode per condition")
    parser.add_argument("--seconds", type=float, default=20.0, help="decode time limit")
    args = parser.parse_args()
    load1 = os.getloadavg()[0]
    print(
        f"model {args.model}, threads {args.threads or 'auto'}, competing busy processes "
        f"{args.load}, {os.cpu_count()} cores, load average before: {load1:.2f}"
    )
    tps: dict[tuple[bool, int], float] = {}
    for policy in (True, False):
        for load in (0, args.load):
            result = _condition(policy, load, args)
            tps[(policy, load)] = result["tps"]
            name = "PASSIVE" if policy else "unset (OpenMP default)"
            print(
                f"policy {name:24s} load {load}: {result['tps']:6.2f} tokens/s "
                f"({result['tokens']} tokens in {result['seconds']:.1f} s, "
                f"{result['threads']} threads)"
            )
    ratio_on = tps[(True, args.load)] / tps[(True, 0)]
    ratio_off = tps[(False, args.load)] / tps[(False, 0)]
    print(f"ratio under load: {ratio_on:.2f} (policy on) vs {ratio_off:.2f} (policy off)")


if __name__ == "__main__":
    main()
