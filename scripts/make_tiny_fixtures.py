#!/usr/bin/env python3
"""Generate tiny random-weight HF checkpoints + transformers reference outputs.

Reference generator only -- never on the product's run path.

Usage:
    .venv/bin/python scripts/make_tiny_fixtures.py [--out runtime/tests/fixtures/tiny] [--only llama,qwen3]

For every architecture below this writes ``<out>/<arch>/`` containing

* ``config.json``, ``generation_config.json``, ``model.safetensors``: written by
  ``model.save_pretrained(dir, safe_serialization=True)`` in float32.  The config is in the
  transformers-5 format (``rope_parameters`` dict instead of the legacy top-level
  ``rope_theta`` / ``rope_scaling``).  Tied models (``tie_word_embeddings: true``) store
  no ``lm_head.weight``.
* ``reference.safetensors`` with (all computed by transformers, eager attention, float32,
  CPU, from the model *reloaded from the saved folder*, so the reference is exactly what
  transformers computes from the files on disk):

  - ``input_ids``     int64   [2, T]            two different random sequences (T=12; phi3_long T=16)
  - ``logits``        float32 [2, T, vocab]     ``model(input_ids).logits`` (no padding, no attention mask)
  - ``hidden_states`` float32 [L+1, 2, T, hidden]  ``torch.stack(model(input_ids, output_hidden_states=True).hidden_states)``
        transformers convention:
          index 0   = embedding output (for gemma3: already multiplied by sqrt(hidden_size),
                      rounded to the weight dtype, i.e. ``emb * torch.tensor(sqrt(h)).float()``)
          index l   = output of decoder layer l (residual stream), for 1 <= l < L
          index L   = output of the LAST layer WITH THE FINAL NORM APPLIED (the raw
                      output of layer L is not exposed); ``lm_head(hidden_states[L]) == logits``
  - ``greedy_ids``    int64   [1, 10]           new tokens only of
        ``model.generate(input_ids[:1, :6], max_new_tokens=10, do_sample=False)`` with
        ``eos_token_id=None`` (so all 10 are plain argmax tokens; no min_new_tokens processor).
        The script cross-checks this against a cache-free greedy loop (full re-forward each step).

  The safetensors header ``__metadata__`` has one key, ``reference``, a JSON string recording
  arch, seed, T, transformers/torch versions and the smallest top1-top2 logit margin seen in the
  greedy steps.

Weights: every matrix / embedding / bias ~ N(0, 0.2^2); RMSNorm weights 1 + 0.1*N(0,1), except
gemma3 whose RMSNorm computes ``x * (1 + w)``: there w = 0.1*N(0,1) (effective scale ~1, and a
loader that forgets the ``1 +`` is caught immediately), final norm w = 3 + 0.1*N(0,1), and
embedding std 0.05 (see ``init_weights``).  Seeds are fixed per architecture: the
first of base, base+100, ... whose greedy continuation has >= 7 distinct tokens and a top1-top2
margin >= 0.01 at every step (random tiny models like to repeat one token).

Architectures (all eager attention, float32; unless noted vocab 512, hidden 64, 4 heads,
2 kv heads, head_dim 16, intermediate 96, 2 layers, max_position_embeddings 128):

  llama       LlamaForCausalLM, Llama-3 style: rope_theta 5e5, rope llama3 scaling
              (factor 8, low 1, high 4, original_max 8192), GQA 4q/2kv, head_dim 16, untied lm_head.
              With head_dim 16 and theta 5e5 the 8 frequencies fall in all three llama3 bands
              (unscaled, smoothed, divided by factor).
  llama_tied  LlamaForCausalLM, SmolLM2 style: rope_theta 1e5, no scaling, tied embeddings.
  qwen2       Qwen2ForCausalLM: q/k/v biases, rope_theta 1e6, tied (like Qwen2.5-0.5B).
  qwen3       Qwen3ForCausalLM: q_norm/k_norm (per-head RMSNorm before RoPE), head_dim 24
              (!= 64/4), tied, rope_theta 1e6.
  gemma3      Gemma3ForCausalLM / Gemma3TextConfig, like gemma-3-270m: 6 layers with layer_types
              5 sliding : 1 full, sliding_window 4 (key j visible from query i iff i-4 < j <= i),
              rope_theta 1e6 (full_attention layers) / 1e4 (sliding layers), head_dim 24,
              query_pre_attn_scalar 32 (scaling = 32**-0.5, deliberately != head_dim**-0.5),
              1 kv head (MQA, like 270m), intermediate 64, gelu_pytorch_tanh, sqrt(hidden) embedding scale,
              q_norm/k_norm, 4 norms per layer, tied.
  phi3        Phi3ForCausalLM, Phi-4-mini style: fused qkv_proj [q;k;v] and gate_up_proj [gate;up],
              partial_rotary_factor 0.75 (rotary_dim 12 of head_dim 16, rotate_half inside those 12),
              longrope with short_factor/long_factor of length 6, original_max_position_embeddings 32,
              max_position_embeddings 128 => attention_factor sqrt(1 + ln(128/32)/ln(32)) multiplies
              cos and sin.  All sequences (T=12, greedy 6+10=16) stay <= 32, so short_factor only.
  phi3_long   Same weights-shape family, original_max_position_embeddings 8, T=16 > 8 so the
              forward uses long_factor (attention_factor sqrt(1 + ln(16)/ln(8))).  transformers picks
              short vs long from max(position_ids)+1 of the *current forward call*; in generate(),
              Phi3ForCausalLM.prepare_inputs_for_generation DROPS THE KV CACHE and re-runs the whole
              sequence the first time the total length reaches original_max+1 (here 9), so every
              greedy step is equivalent to a full forward over the whole sequence: steps whose total
              length <= 8 use short_factor everywhere, later ones long_factor everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

import transformers
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "runtime", "tests", "fixtures", "tiny")

VOCAB = 512
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
INTER = 96
MAX_POS = 128
GREEDY_PROMPT = 6
GREEDY_NEW = 10

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS,
    intermediate_size=INTER,
    num_hidden_layers=2,
    max_position_embeddings=MAX_POS,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def _phi3_factors(seed: int, n: int) -> tuple[list[float], list[float]]:
    g = torch.Generator().manual_seed(seed)
    # short ~1, long grows with the frequency index like real Phi-4-mini factors
    short = [round(1.0 + 0.05 * float(x), 4) for x in torch.rand(n, generator=g)]
    long = [round(1.0 + (i + 1) * 1.5 + float(x), 4) for i, x in enumerate(torch.rand(n, generator=g))]
    return short, long


def build(arch: str):
    """Return (model_class, config, seed, T)."""
    if arch == "llama":
        cfg = LlamaConfig(
            **{**COMMON, "max_position_embeddings": 131072},
            head_dim=16,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            tie_word_embeddings=False,
            hidden_act="silu",
        )
        return LlamaForCausalLM, cfg, 1001, 12
    if arch == "llama_tied":
        cfg = LlamaConfig(
            **COMMON,
            head_dim=16,
            rope_theta=100000.0,
            tie_word_embeddings=True,
            hidden_act="silu",
        )
        return LlamaForCausalLM, cfg, 1002, 12
    if arch == "qwen2":
        cfg = Qwen2Config(
            **{**COMMON, "rms_norm_eps": 1e-6},
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            use_sliding_window=False,
            hidden_act="silu",
        )
        return Qwen2ForCausalLM, cfg, 1003, 12
    if arch == "qwen3":
        cfg = Qwen3Config(
            **{**COMMON, "rms_norm_eps": 1e-6},
            head_dim=24,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            attention_bias=False,
            use_sliding_window=False,
            hidden_act="silu",
        )
        return Qwen3ForCausalLM, cfg, 1004, 12
    if arch == "gemma3":
        n_layers = 6
        cfg = Gemma3TextConfig(
            **{
                **COMMON,
                "num_hidden_layers": n_layers,
                "num_key_value_heads": 1,
                "intermediate_size": 64,
                "rms_norm_eps": 1e-6,
                "bos_token_id": 2,
                "eos_token_id": 1,
                "pad_token_id": 0,
            },
            head_dim=24,
            query_pre_attn_scalar=32,
            sliding_window=4,
            layer_types=[
                "sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n_layers)
            ],
            rope_theta=1000000.0,
            rope_local_base_freq=10000.0,
            hidden_activation="gelu_pytorch_tanh",
            tie_word_embeddings=True,
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
        )
        return Gemma3ForCausalLM, cfg, 1005, 12
    if arch in ("phi3", "phi3_long"):
        head_dim = HIDDEN // HEADS
        rotary_dim = int(head_dim * 0.75)
        short, long = _phi3_factors(77 if arch == "phi3" else 78, rotary_dim // 2)
        orig = 32 if arch == "phi3" else 8
        cfg = Phi3Config(
            **{**COMMON, "pad_token_id": 0, "eos_token_id": 2},
            original_max_position_embeddings=orig,
            rope_theta=10000.0,
            partial_rotary_factor=0.75,
            rope_scaling={
                "type": "longrope",
                "short_factor": short,
                "long_factor": long,
            },
            tie_word_embeddings=True,
            hidden_act="silu",
        )
        return Phi3ForCausalLM, cfg, 1006 if arch == "phi3" else 1007, (12 if arch == "phi3" else 16)
    raise ValueError(arch)


ARCHS = ["llama", "llama_tied", "qwen2", "qwen3", "gemma3", "phi3", "phi3_long"]


@torch.no_grad()
def init_weights(model, arch: str, seed: int) -> None:
    """N(0, 0.2^2) matrices/biases, 1 + 0.1*N(0,1) norms.

    gemma3 differs: its norms are zero-centred (``x * (1 + w)``) so w = 0.1*N(0,1); its embedding
    is multiplied by sqrt(hidden)=8 and tied with lm_head, and with std 0.2 the current token's
    embedding dominates the residual stream so greedy decoding just repeats the last token.  So the
    gemma3 embedding has std 0.05 and the final norm w = 3 + 0.1*N(0,1) (logits keep a std ~1.6).
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # tied params appear once
        if "norm" in name:
            noise = 0.1 * torch.randn(p.shape, generator=g)
            if arch != "gemma3":
                p.copy_(1.0 + noise)
            elif name == "model.norm.weight":
                p.copy_(3.0 + noise)  # effective scale 1 + w ~ 4, see init_weights' docstring
            else:
                p.copy_(noise)
        elif arch == "gemma3" and name == "model.embed_tokens.weight":
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def greedy_no_cache(model, prompt: torch.Tensor, n: int) -> tuple[torch.Tensor, float]:
    ids = prompt.clone()
    min_margin = float("inf")
    for _ in range(n):
        logits = model(ids, use_cache=False).logits[:, -1, :]
        top2 = torch.topk(logits[0], 2).values
        min_margin = min(min_margin, float(top2[0] - top2[1]))
        nxt = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[:, prompt.shape[1]:], min_margin


def new_model(arch: str, seed: int):
    cls, cfg, _, T = build(arch)
    torch.manual_seed(seed)
    model = cls._from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()
    init_weights(model, arch, seed)
    g = torch.Generator().manual_seed(seed + 10_000)
    input_ids = torch.randint(3, VOCAB, (2, T), generator=g, dtype=torch.int64)
    return cls, model, input_ids, T


def pick_seed(arch: str) -> int:
    """First seed (base, base+100, ...) whose greedy continuation is varied and not near a tie.

    Random tiny models often fall into repeating one token, which would make the greedy test weak
    (a wrong sliding window / cache could still reproduce it).
    """
    base = build(arch)[2]
    for attempt in range(50):
        seed = base + 100 * attempt
        _, model, input_ids, _ = new_model(arch, seed)
        toks, margin = greedy_no_cache(model, input_ids[:1, :GREEDY_PROMPT], GREEDY_NEW)
        if len(set(toks[0].tolist())) >= 7 and margin >= 0.01:
            return seed
    raise RuntimeError(f"{arch}: no seed with a varied greedy continuation")


def make(arch: str, out_root: str) -> dict:
    seed = pick_seed(arch)
    cls, model, input_ids, T = new_model(arch, seed)
    model.generation_config.eos_token_id = None
    model.generation_config.do_sample = False
    out_dir = os.path.join(out_root, arch)
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.endswith((".json", ".safetensors")):
            os.remove(os.path.join(out_dir, f))
    model.save_pretrained(out_dir, safe_serialization=True)

    # Reload what is on disk, and compute references from that.
    m = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    assert type(m) is cls, (type(m), cls)
    sd0, sd1 = model.state_dict(), m.state_dict()
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]), k

    assert not torch.equal(input_ids[0], input_ids[1])
    with torch.no_grad():
        out = m(input_ids, output_hidden_states=True)
        logits = out.logits.float().contiguous()
        hidden = torch.stack(out.hidden_states).float().contiguous()
        L = m.config.num_hidden_layers
        assert hidden.shape == (L + 1, 2, T, HIDDEN), hidden.shape
        assert torch.allclose(m.lm_head(hidden[-1]), logits, atol=1e-5, rtol=0)
        # batch independence: each row equals a batch-of-one forward
        for b in range(2):
            single = m(input_ids[b : b + 1]).logits
            assert torch.allclose(single[0], logits[b], atol=1e-5, rtol=0), f"{arch}: batch row {b} differs"

        prompt = input_ids[:1, :GREEDY_PROMPT]
        gen = m.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=GREEDY_NEW,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        greedy = gen[:, GREEDY_PROMPT:].contiguous()
        assert greedy.shape == (1, GREEDY_NEW), greedy.shape
        ref_greedy, margin = greedy_no_cache(m, prompt, GREEDY_NEW)
        assert torch.equal(ref_greedy, greedy), f"{arch}: generate {greedy} != no-cache loop {ref_greedy}"

    meta = {
        "arch": arch,
        "model_class": cls.__name__,
        "seed": str(seed),
        "T": str(T),
        "greedy_prompt_len": str(GREEDY_PROMPT),
        "greedy_min_top2_margin": f"{margin:.6f}",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "attn_implementation": "eager",
    }
    save_file(
        {"input_ids": input_ids, "logits": logits, "hidden_states": hidden, "greedy_ids": greedy},
        os.path.join(out_dir, "reference.safetensors"),
        # one key holding sorted JSON: safetensors writes a multi-key metadata map in hash order,
        # which would make regenerated files differ byte-wise
        metadata={"reference": json.dumps(meta, sort_keys=True)},
    )
    os.chmod(os.path.join(out_dir, "reference.safetensors"), 0o644)
    os.chmod(os.path.join(out_dir, "model.safetensors"), 0o644)
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    info = {
        "arch": arch,
        "bytes": size,
        "logits_absmax": float(logits.abs().max()),
        "logits_std": float(logits.std()),
        "greedy": greedy[0].tolist(),
        "greedy_min_margin": margin,
        "rope": m.config.rope_parameters,
    }
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(ARCHS))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    archs = [a for a in args.only.split(",") if a] or ARCHS
    total = 0
    for arch in archs:
        info = make(arch, args.out)
        total += info["bytes"]
        print(json.dumps(info, default=str))
        if info["greedy_min_margin"] < 1e-3:
            print(f"WARNING: {arch}: greedy top-2 margin {info['greedy_min_margin']:.2e} is tiny", file=sys.stderr)
    print(f"total fixture bytes: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
