"""Shared loading code for the transformers reference scripts.

Used by ``make_reference_outputs.py`` and ``check_logits.py``.  Reference generators / check
scripts only -- never on the product's run path.

Loading: ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=file, dtype=float32,
attn_implementation="eager")`` and ``AutoTokenizer.from_pretrained(dir, gguf_file=file)``.
For llama / qwen2 / gemma3 GGUFs transformers (5.x) uses its *legacy* GGUF loader
(``transformers/modeling_gguf_pytorch_utils.py``): every tensor is dequantized to float32 with
gguf-py's numpy ``dequantize`` at load time, then put into a plain dense model.  Needs the
``accelerate`` package (``from_pretrained(gguf_file=...)`` refuses to run without it).
"""

from __future__ import annotations

import pathlib

import hashlib
import os
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(REPO, "models")

# name -> GGUF file name under models/
MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
    "qwen2.5-0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}

# The gemma-3-270m GGUF carries no `tokenizer.chat_template`, so transformers' tokenizer has
# none.  This is google's Gemma 3 template (text parts only; images render as <start_of_image>).
GEMMA3_CHAT_TEMPLATE = (
    pathlib.Path(__file__).resolve().parent.parent / "runtime/src/tokenizer/gemma3_chat_template.jinja"
).read_text()

# Varied texts for the logits references.
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "The roots are $x = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}$, hence \\boxed{42}.",
    "Zürich café naïve — 東京は日本の首都です。 Привет, мир! 🙂",
    "3.14159 + 2.71828 = 5.85987; 1234567890 * 9876543210 = 12193263111263526900",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\tprint(fib(10))  ",
]

CHATS = [
    [{"role": "user", "content": "What is 12*7?"}],
    [
        {"role": "system", "content": "You are a careful math tutor. Answer briefly."},
        {"role": "user", "content": "Janet has 3 apples and buys 5 more. She eats 2. How many apples does she have?"},
    ],
]


@dataclass
class Resolved:
    name: str  # registry name, or the file/dir basename
    directory: str  # what from_pretrained gets as its first argument
    gguf_file: str | None  # file name inside `directory`, None for a HF folder
    path: str  # full path of the .gguf file or of the HF folder


def resolve(model: str) -> Resolved:
    """A registry NAME (see MODELS), a path to a .gguf file, or a HF checkpoint folder."""
    if model in MODELS:
        path = os.path.join(MODELS_DIR, MODELS[model])
        return Resolved(model, MODELS_DIR, MODELS[model], path)
    path = os.path.abspath(model)
    if os.path.isfile(path) and path.endswith(".gguf"):
        base = os.path.basename(path)
        name = next((n for n, f in MODELS.items() if f == base), base)
        return Resolved(name, os.path.dirname(path), base, path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        return Resolved(os.path.basename(path.rstrip("/")), path, None, path)
    raise SystemExit(f"unknown model {model!r}: not one of {sorted(MODELS)}, a .gguf file or a HF folder")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _quiet():
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def load_tokenizer(r: Resolved):
    from transformers import AutoTokenizer

    _quiet()
    if r.gguf_file is None:
        tok = AutoTokenizer.from_pretrained(r.directory)
    else:
        tok = AutoTokenizer.from_pretrained(r.directory, gguf_file=r.gguf_file)
    return tok


def chat_template_for(tok, r: Resolved) -> tuple[str | None, str]:
    """(template, source): the tokenizer's own, or the Gemma 3 fallback for gemma3 GGUFs without one."""
    if tok.chat_template:
        return tok.chat_template, "gguf" if r.gguf_file else "tokenizer"
    if "<start_of_turn>" in tok.get_vocab():
        return GEMMA3_CHAT_TEMPLATE, "fallback:gemma3 (the GGUF has no tokenizer.chat_template)"
    return None, "none"


def load_model(r: Resolved):
    import torch
    from transformers import AutoModelForCausalLM

    _quiet()
    try:  # the legacy GGUF loader draws a plain tqdm bar over the tensors
        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        gguf_utils.tqdm = lambda it, **_: it
    except ImportError:
        pass
    kwargs = dict(dtype=torch.float32, attn_implementation="eager")
    if r.gguf_file is None:
        model = AutoModelForCausalLM.from_pretrained(r.directory, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(r.directory, gguf_file=r.gguf_file, **kwargs)
    return model.eval()


def load(model: str):
    r = resolve(model)
    return r, load_tokenizer(r), load_model(r)


def eos_ids(model, tok) -> list[int]:
    """Stop ids for greedy generation: the generation config's eos, plus the end-of-turn token
    of the chat format when the GGUF's eos is not it (gemma: <eos>=1 and <end_of_turn>=106)."""
    eos = model.generation_config.eos_token_id
    ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    vocab = tok.get_vocab()
    for t in ("<end_of_turn>", "<|im_end|>"):
        if t in vocab and vocab[t] not in ids:
            ids.append(vocab[t])
    return ids


def last_position_logits(model, token_ids: list[int]):
    """float32 logits [vocab] at the last position of a single unpadded sequence."""
    import torch

    with torch.no_grad():
        ids = torch.tensor([token_ids], dtype=torch.long)
        return model(ids).logits[0, -1].float()


def top_k(logits, k: int = 10) -> list[dict]:
    import torch

    vals, idx = torch.topk(logits, k)
    return [{"id": int(i), "logit": float(v)} for v, i in zip(vals.tolist(), idx.tolist())]
