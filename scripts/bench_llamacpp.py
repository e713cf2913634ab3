#!/usr/bin/env python3
"""Decode-speed worker for `tcomm bench decode`: llama.cpp (llama-cpp-python) at batch 1.

Runs the GGUF as stored (llama.cpp computes on the quantized weights), on the first prompt of
`--prompts-file` (token ids), greedy, exactly `--new-tokens` new tokens (end-of-sequence is
ignored), after a warm-up of `--warmup-tokens`. Prints one JSON line:

    {"side": "llamacpp", "batch": 1, "tokens_per_s": .., "decode_tokens_per_s": .., "ttft_s": ..,
     "total_s": .., "load_s": .., "peak_rss_bytes": .., "threads": T}

Exits 3 with a message when llama_cpp is not importable. Benchmark script only.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def generate(llm, prompt: list[int], n: int) -> tuple[float, float, int]:
    llm.reset()
    start = time.perf_counter()
    first = None
    count = 0
    # temp=0 is greedy; sampling from `generate` never stops by itself, so we stop at n tokens.
    for _ in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
        count += 1
        if first is None:
            first = time.perf_counter()
        if count >= n:
            break
    end = time.perf_counter()
    return (first or end) - start, end - start, count


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="path of the .gguf file")
    p.add_argument("--prompts-file", required=True)
    p.add_argument("--new-tokens", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup-tokens", type=int, default=16)
    args = p.parse_args()
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama.cpp: not installed (pip install llama-cpp-python)", file=sys.stderr)
        return 3
    with open(args.prompts_file) as f:
        prompt = json.load(f)[0]
    t0 = time.perf_counter()
    llm = Llama(
        model_path=args.model,
        n_ctx=len(prompt) + args.new_tokens + 8,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_batch=max(len(prompt), 8),
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    if args.warmup_tokens > 0:
        generate(llm, prompt, args.warmup_tokens)
    ttft, total, count = generate(llm, prompt, args.new_tokens)
    print(
        json.dumps(
            {
                "side": "llamacpp",
                "batch": 1,
                "prompt_tokens": len(prompt),
                "new_tokens": count,
                "threads": args.threads,
                "load_s": load_s,
                "ttft_s": ttft,
                "total_s": total,
                "tokens_per_s": count / total,
                "decode_tokens_per_s": (count - 1) / max(total - ttft, 1e-9),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
