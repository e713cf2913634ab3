#!/usr/bin/env python3
"""A Hugging Face checkpoint folder with a real model's shapes, config and tokenizer, but random
weights: for speed and device checks on a machine that a real model's weights cannot reach (the
GPU machine takes at most 64 MiB per transfer; qwen2.5-0.5b's GGUF is 491 MB).

Decode speed does not depend on the weights' values (greedy runs a fixed number of tokens), and a
logits comparison between two implementations is as strict on random weights as on trained ones.
Nothing here is a model to use.

Two steps, usually on two machines:

    # here (needs transformers + gguf): config.json and the tokenizer files from a GGUF
    .venv/bin/python scripts/make_random_checkpoint.py export --model qwen2.5-0.5b --out DIR
    # there (needs transformers + torch): model.safetensors with seeded random weights
    python3 scripts/make_random_checkpoint.py fill --out DIR [--dtype bf16] [--seed 0]

`fill` initializes every weight as transformers' `from_config` does (normal with the config's
initializer_range, norms at one), seeded, and saves in --dtype. Reference/benchmark script only --
never on the product's run path.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def export(model: str, out: str) -> None:
    import reference_common as rc
    from transformers import AutoConfig

    rc._quiet()
    r = rc.resolve(model)
    if r.gguf_file is None:
        raise SystemExit(f"{model}: export reads a GGUF file; a checkpoint folder has its config already")
    os.makedirs(out, exist_ok=True)
    config = AutoConfig.from_pretrained(r.directory, gguf_file=r.gguf_file)
    # transformers' GGUF config leaves the head untied and copies the embedding into it at load
    # time; a GGUF without `output.weight` ties them, and so must the random model (same cost).
    from gguf import GGUFReader

    config.tie_word_embeddings = not any(t.name == "output.weight" for t in GGUFReader(r.path).tensors)
    config.save_pretrained(out)
    rc.load_tokenizer(r).save_pretrained(out)
    print(f"wrote {sorted(os.listdir(out))} to {out}")


def fill(out: str, dtype: str, seed: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(out)
    kind = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_config(config, dtype=kind)
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {params / 1e6:.1f}M random parameters ({dtype}, seed {seed}) to {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    e = sub.add_parser("export", help="config.json and tokenizer files from a GGUF")
    e.add_argument("--model", required=True, help="registry name or .gguf path")
    e.add_argument("--out", required=True)
    f = sub.add_parser("fill", help="model.safetensors with seeded random weights")
    f.add_argument("--out", required=True, help="a folder holding config.json")
    f.add_argument("--dtype", default="bf16", choices=["f32", "bf16", "f16"])
    f.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.step == "export":
        export(args.model, args.out)
    else:
        fill(args.out, args.dtype, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
