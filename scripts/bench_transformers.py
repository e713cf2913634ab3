#!/usr/bin/env python3
"""Decode-speed worker for `tcomm bench decode`: Hugging Face transformers on the same GGUF.

Runs ONE batch size per process (so that the peak RSS is that run's own), and prints one JSON
line on stdout with the metrics that `tcomm bench decode-worker` prints for this engine:

    {"side": "transformers", "batch": B, "prompt_tokens": P, "new_tokens": N, "threads": T,
     "load_s": .., "ttft_s": .., "total_s": .., "tokens_per_s": .., "decode_tokens_per_s": ..,
     "peak_rss_bytes": .., "tokens": [[..], ..], "attn_implementation": "sdpa", ...}

The model is loaded as in `reference_common.py` (`from_pretrained(dir, gguf_file=name,
dtype=...)`: every GGUF tensor dequantized, then cast to `--dtype`, f32 by default) and moved to
`--device` (cpu, cuda, cuda:N), the prompts are the exact token ids from
`--prompts-file` (a JSON list of lists; all the same length, so no padding is needed; left
padding is set anyway), greedy `generate` with `max_new_tokens = min_new_tokens = N` after one
warm-up run of `--warmup-tokens` new tokens.

ttft_s is the time from the `generate` call until the first new token of every sequence exists
(a logits processor notes the time of its first call, which comes right after the prefill; on
CUDA it synchronizes first, so that the time is the prefill's end, not its launch).

Reference/benchmark script only -- never on the product's run path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference_common as rc  # noqa: E402


DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def load_model(r: rc.Resolved, attn: str, dtype: str, device: str):
    """reference_common.load_model, with a choice of attention implementation, dtype and device."""
    import torch
    from transformers import AutoModelForCausalLM

    rc._quiet()
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        gguf_utils.tqdm = lambda it, **_: it
    except ImportError:
        pass
    kwargs = dict(dtype=getattr(torch, DTYPES[dtype]), attn_implementation=attn)
    if r.gguf_file is None:
        model = AutoModelForCausalLM.from_pretrained(r.directory, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(r.directory, gguf_file=r.gguf_file, **kwargs)
    return model.to(device).eval()


def synchronize(device: str):
    """Waits for the device's queued work (a no-op on the CPU), so that times are real."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class FirstCallClock:
    """A logits processor that records when generate first asks for the next token's scores."""

    def __init__(self, device: str):
        self.first = None
        self.device = device

    def __call__(self, input_ids, scores):
        if self.first is None:
            synchronize(self.device)
            self.first = time.perf_counter()
        return scores


def run(model, prompts, new_tokens: int, pad_id: int, device: str):
    import torch
    from transformers import LogitsProcessorList

    ids = torch.tensor(prompts, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    clock = FirstCallClock(device)
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad_id,
            logits_processor=LogitsProcessorList([clock]),
            num_beams=1,
            use_cache=True,
        )
    synchronize(device)
    end = time.perf_counter()
    ttft = (clock.first or end) - start
    return out[:, ids.shape[1]:].tolist(), ttft, end - start


def peak_device_bytes(device: str):
    """GPU memory this process holds as nvidia-smi reports it (CUDA context and the caching
    allocator's pool included: the measure `tcomm bench decode-worker` takes); None on the CPU."""
    import subprocess

    if not device.startswith("cuda"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=False,
        ).stdout
    except OSError:
        return None
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip() == str(os.getpid()) and mib.strip().isdigit():
            return int(mib.strip()) << 20
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="registry name, .gguf path or HF folder")
    p.add_argument("--prompts-file", required=True, help="JSON list of token-id lists")
    p.add_argument("--new-tokens", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup-tokens", type=int, default=16)
    p.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa (the default of transformers) or eager")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="f32", choices=sorted(DTYPES), help="compute dtype of the weights")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with open(args.prompts_file) as f:
        prompts = json.load(f)
    if not prompts or len({len(x) for x in prompts}) != 1:
        raise SystemExit("prompts must be a non-empty list of equal-length token lists")

    t0 = time.perf_counter()
    r = rc.resolve(args.model)
    tok = rc.load_tokenizer(r)
    model = load_model(r, args.attn, args.dtype, args.device)
    load_s = time.perf_counter() - t0
    tok.padding_side = "left"
    pad_id = tok.pad_token_id
    if pad_id is None:
        eos = model.generation_config.eos_token_id
        pad_id = eos if isinstance(eos, int) else (eos[0] if eos else 0)

    if args.warmup_tokens > 0:
        run(model, prompts, args.warmup_tokens, pad_id, args.device)
    tokens, ttft, total = run(model, prompts, args.new_tokens, pad_id, args.device)

    batch = len(prompts)
    generated = sum(len(t) for t in tokens)
    decode_s = max(total - ttft, 1e-9)
    print(
        json.dumps(
            {
                "side": "transformers",
                "batch": batch,
                "prompt_tokens": len(prompts[0]),
                "new_tokens": args.new_tokens,
                "threads": torch.get_num_threads(),
                "load_s": load_s,
                "ttft_s": ttft,
                "total_s": total,
                "tokens_per_s": generated / total,
                "decode_tokens_per_s": batch * (args.new_tokens - 1) / decode_s,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "peak_device_bytes": peak_device_bytes(args.device),
                "attn_implementation": args.attn,
                "torch": torch.__version__,
                "tokens": tokens,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
