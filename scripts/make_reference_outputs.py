#!/usr/bin/env python3
"""Write transformers reference outputs for the real GGUF models.

Reference generator only -- never on the product's run path.

Usage:
    .venv/bin/python scripts/make_reference_outputs.py [--models smollm2-135m,gemma3-270m,qwen2.5-0.5b]
                                                       [--out runtime/tests/fixtures/reference]

Needs the GGUF files under models/ (see reference_common.MODELS) and the python packages
torch, transformers, gguf, accelerate.  Writes ``<out>/<name>.json``:

{
  "model": name, "file": GGUF basename, "sha256": of the GGUF file,
  "transformers_version", "torch_version", "dtype": "float32", "attn_implementation": "eager",
  "config": {a few loaded config fields, for orientation},
  "logits": [ {"text", "token_ids": tok(text)["input_ids"] (add_special_tokens default: gemma
               prepends <bos>=2, smollm2 and qwen add nothing),
               "top": [{"id", "logit"} x10] at the last position, best first,
               "last_logits_sum", "last_logits_sumsq": sum / sum of squares (float64) of the whole
               last-position logit vector} ... ],
  "generate": [ {"messages", "chat_template_source", "prompt_text", "prompt_ids":
                 apply_chat_template(messages, add_generation_prompt=True) ids,
                 "eos_token_ids": stop ids used, "new_ids": greedy new tokens
                 (max_new_tokens 64, do_sample False; ends with the eos id when it stopped on one),
                 "new_text": decode(new_ids, skip_special_tokens=False)} ... ]
}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_common as rc  # noqa: E402

DEFAULT_OUT = os.path.join(rc.REPO, "runtime", "tests", "fixtures", "reference")


def make(name: str, out_dir: str) -> str:
    import torch
    import transformers

    t0 = time.time()
    r, tok, model = rc.load(name)
    cfg = model.config
    print(f"[{name}] loaded {type(model).__name__} in {time.time() - t0:.0f}s", file=sys.stderr)

    out = {
        "model": r.name,
        "file": os.path.basename(r.path),
        "sha256": rc.sha256_file(r.path),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "config": {
            k: getattr(cfg, k, None)
            for k in (
                "model_type",
                "vocab_size",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "intermediate_size",
                "rms_norm_eps",
                "rope_parameters",
                "tie_word_embeddings",
                "sliding_window",
                "layer_types",
                "query_pre_attn_scalar",
                "max_position_embeddings",
            )
            if getattr(cfg, k, None) is not None
        },
        "logits": [],
        "generate": [],
    }

    for text in rc.TEXTS:
        ids = tok(text)["input_ids"]
        logits = rc.last_position_logits(model, ids)
        out["logits"].append(
            {
                "text": text,
                "token_ids": ids,
                "top": rc.top_k(logits, 10),
                "last_logits_sum": float(logits.double().sum()),
                "last_logits_sumsq": float((logits.double() ** 2).sum()),
            }
        )
    print(f"[{name}] logits done ({time.time() - t0:.0f}s)", file=sys.stderr)

    template, source = rc.chat_template_for(tok, r)
    eos = rc.eos_ids(model, tok)
    for messages in rc.CHATS:
        prompt_text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, chat_template=template)
        enc = tok.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, chat_template=template, return_dict=True
        )
        prompt_ids = list(enc["input_ids"])
        ids = torch.tensor([prompt_ids], dtype=torch.long)
        with torch.no_grad():
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=64,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
            )
        new_ids = gen[0, len(prompt_ids):].tolist()
        out["generate"].append(
            {
                "messages": messages,
                "chat_template_source": source,
                "prompt_text": prompt_text,
                "prompt_ids": prompt_ids,
                "eos_token_ids": eos,
                "max_new_tokens": 64,
                "new_ids": new_ids,
                "new_text": tok.decode(new_ids, skip_special_tokens=False),
            }
        )
    print(f"[{name}] generate done ({time.time() - t0:.0f}s)", file=sys.stderr)

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(rc.MODELS))
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for name in [m for m in args.models.split(",") if m]:
        print(make(name, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
