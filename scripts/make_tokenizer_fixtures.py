#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers for runtime/tests/tokenizer.rs.

For each GGUF model it loads `AutoTokenizer.from_pretrained(models_dir, gguf_file=...)`, exactly as a
Python user would, and records for a fixed, seeded set of strings: the ids with and without special
tokens, and the decode of those ids with and without skipping special tokens; for a set of
conversations: the rendered chat template (with and without the generation prompt) and its token
ids. It also writes two tiny Hugging Face tokenizer folders (trained here, a few KB each) and the
reference outputs for them, so `TextTokenizer::from_hf_dir` is tested against transformers too.

Everything is deterministic: re-running it with the same transformers / tokenizers versions
rewrites byte-identical files (the versions are recorded in each fixture).

    .venv/bin/python scripts/make_tokenizer_fixtures.py [--models DIR] [--out DIR]
"""

import pathlib
import argparse
import json
import os
import random
import shutil
import sys

# The tokenizers trainers run on several threads unless told otherwise, and the Unigram trainer's
# float sums then depend on the thread schedule; one thread keeps the outputs reproducible.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

GGUF_MODELS = [
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ("qwen2", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
]

# The Gemma 3 GGUF carries no chat template, so transformers refuses apply_chat_template on it (the
# fixture records that error). To still test the Gemma tokenizer through a real template, the
# conversations are also rendered with the template of google/gemma-3-*-it (tokenizer_config.json),
# passed explicitly as transformers' `chat_template=` argument.
GEMMA3_TEMPLATE = (
    pathlib.Path(__file__).resolve().parent.parent / "runtime/src/tokenizer/gemma3_chat_template.jinja"
).read_text()

FIXED_STRINGS = [
    "",
    " ",
    "  ",
    "\n",
    "\t",
    "\n\n\n",
    " \t \n ",
    "Hello",
    "Hello, world!",
    " Hello world",
    "Hello world ",
    "  leading and trailing  ",
    "\tTabbed\tline\t",
    "line one\nline two\r\nline three\rline four",
    "multiple     spaces     between     words",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see they've done it, haven't they? We'd go; it's John's.",
    "ALL CAPS SENTENCE WITH NUMBERS 123",
    "camelCaseIdentifier and snake_case_identifier and kebab-case-identifier",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
    "If x + 3 = 10, then x = 7. Therefore 2x = 14.",
    "The answer is 42.",
    "#### 18",
    "Step 1: 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * $2 = $18.\nThe answer is $18.",
    "1234567",
    "3.14159",
    "2.718281828459045",
    "1,234,567.89",
    "-0.5 + 1e10 - 6.02e23",
    "100%",
    "$1,000,000",
    "12:30 pm on 2024-01-15",
    "0x1F 0b1010 0o777",
    "99999999999999999999999999",
    "1 2 3 4 5 6 7 8 9 10",
    "007",
    "x^2 + y^2 = z^2",
    "$\\frac{a}{b} + \\sqrt{x^2 + 1}$",
    "\\begin{equation} E = mc^2 \\end{equation}",
    "$$\\int_0^\\infty e^{-x^2} dx = \\frac{\\sqrt{\\pi}}{2}$$",
    "\\boxed{\\dfrac{3}{4}}",
    "\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}",
    "Let $f(x) = 3x^2 - 5x + 2$. Find $f'(1)$.",
    "∀x ∈ ℝ, x² ≥ 0",
    "α β γ δ ε ζ η θ",
    "∑∏∫∂∇√∞≈≠≤≥±×÷",
    "café naïve résumé façade coöperate",
    "Ångström Ærø Øresund straße",
    "e\u0301 versus \u00e9",
    "Ça va? Très bien, merci!",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε",
    "你好，世界！",
    "我爱自然语言处理。今天天气很好。",
    "日本語のテキストです。カタカナとひらがな。",
    "한국어 문장입니다.",
    "中文English混合text",
    "مرحبا بالعالم",
    "שלום עולם",
    "English then عربي then English",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "Tiếng Việt có dấu",
    "😀",
    "Hello 👋 world 🌍!",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 and 🇫🇷 flags",
    "emoji🙂inside🙃words",
    "👍🏽 skin tone",
    "♥♦♣♠ ☺ ☃ ★",
    "\u200b zero width space and \u200d joiner",
    "non\u00a0breaking\u00a0space",
    "ideographic\u3000space",
    "soft\u00adhyphen",
    "\ufeffBOM at start",
    "control \u0007 bell and \u001b escape",
    "tab\tseparated\tvalues\t1\t2",
    "a\n\nb\n\n\nc",
    "trailing newline\n",
    "\n\nleading newlines",
    "    indented code",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    println!(\"Hello, {}!\", name);\n}",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "<div class=\"container\"><p>Hello</p></div>",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "import numpy as np\nx = np.arange(10).reshape(2, 5)",
    "// comment\n/* block */\n# hash comment",
    "https://example.com/path?query=1&other=two#frag",
    "user@example.com",
    "C:\\Users\\name\\file.txt",
    "a = b == c != d <= e >= f && g || h",
    "!!!???...,,,;;;:::",
    "((()))[[[]]]{{{}}}",
    "----====____****",
    "'single' \"double\" `back`",
    "spaced punctuation , like . this ? and ! don 't it 's we 're I 'm they 've ' quoted '",
    "«guillemets» „quotes“ “curly” ‘single’",
    "…ellipsis—em dash–en dash",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>user\nHello<|im_end|>",
    "text<|im_end|>more text",
    "<|im_start|>assistant\n",
    " <|im_start|> spaced <|im_end|> ",
    "<end_of_turn>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos>",
    "<eos>",
    "<pad>",
    "<unk>",
    "<mask>",
    "<s>",
    "</s>",
    "<bos>Hello<eos>",
    "[multimodal]",
    "<think>reasoning</think>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    "<tool_call>{\"name\": \"f\"}</tool_call>",
    "<|im_start|><|im_start|><|im_end|><|im_end|>",
    "<|im_start",
    "im_end|>",
    "<0x41>",
    "▁already▁has▁metaspace",
    "Ġalready Ġbyte Ġlevel",
    "a",
    "ab",
    "abc",
    ".",
    "?",
    "I",
    "  a",
    "a  ",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "the the the the the the the the the the",
    "                                                  ",
    "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    "\t\t\t\t\t\t\t\t",
    " \n \n \n ",
    "Mixed: 中文, English, 123, 😀, café, and <|im_end|>!",
    "Q: What is 15% of 80?\nA: 15% of 80 is 0.15 × 80 = 12.",
    "The train leaves at 3:45 PM and travels 120 km at 80 km/h.",
    "She has 3 apples, buys 2 dozen more, and gives away 1/4 of them.",
    "Tom's car gets 25 mpg; a 300-mile trip costs 12 gallons × $3.50 = $42.00.",
    "First, compute 7 × 8 = 56. Then 56 ÷ 4 = 14. Finally, 14 + 9 = 23.",
]

WORDS = ["the", "apple", "Zürich", "数学", "😀", "42", "3.5", "1,000", "x²", "$\\alpha$", "don't", "naïve", "ОК",
         "عرب", "<|im_end|>", "<end_of_turn>", "<bos>", "<|endoftext|>", "print(x)", "->", "...", "—", "🚀", "ß",
         "1234567", "0.001", "Hello", "WORLD", "token", "é", "語", "#", "@user", "http://a.b/c", "\\n", "{}", "[]"]
SEPARATORS = [" ", "  ", "\n", "\t", "", ", ", " \n", "\n\n", "   ", ". "]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a math tutor. Explain every step and put the final answer after ####.",
    "Réponds en français, s'il te plaît. 🙂",
    "",
    "Line one of the system prompt.\nLine two, with a tab\there.",
    "  You answer tersely.  ",
    "你是一个乐于助人的助手。",
]
USER_TURNS = [
    "Hi!",
    "What is 17 * 23?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Write a haiku about autumn.",
    "Translate 'good morning' into Japanese.",
    "  padded question with spaces  ",
    "Multi-line\nquestion\n\nwith blank lines",
    "Explain $\\int_0^1 x^2 dx$ please.",
    "¿Qué hora es? 🕒",
    "Can you write a Python function that reverses a string?",
    "",
    "Is 1234567 a prime number?",
    "Tell me about <|im_start|> tokens.",
    "What does <end_of_turn> mean?",
    "مرحبا، كيف حالك؟",
    "\n",
]
ASSISTANT_TURNS = [
    "Hello! How can I help you today?",
    "17 * 23 = 391.",
    "In April she sold 48 clips, in May 24, so 48 + 24 = 72.\n#### 72",
    "Crisp leaves falling,\nwhispers of the fading sun,\nautumn breathes goodbye.",
    "おはようございます (ohayō gozaimasu).",
    "Sure:\n```python\ndef rev(s):\n    return s[::-1]\n```",
    "",
    "  Answer with surrounding spaces.  ",
    "No, 1234567 = 127 × 9721.",
    "The integral equals $\\frac{1}{3}$.",
]


def random_strings(rng, count):
    out = []
    for _ in range(count):
        n = rng.randint(1, 12)
        parts = []
        for _ in range(n):
            parts.append(rng.choice(WORDS))
            parts.append(rng.choice(SEPARATORS))
        text = "".join(parts)
        if rng.random() < 0.2:
            text = rng.choice([" ", "\n", "  ", "\t"]) + text
        if rng.random() < 0.3:
            text = text.rstrip()
        out.append(text)
    return out


def all_strings():
    rng = random.Random(20240501)
    strings = list(FIXED_STRINGS) + random_strings(rng, 100)
    # Drop exact duplicates while keeping order, so every case is distinct.
    return list(dict.fromkeys(strings))


def conversations():
    rng = random.Random(7)
    convs = [
        [{"role": "user", "content": "Hello!"}],
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": ""}],
        [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
         {"role": "user", "content": "And 3+3?"}],
        [{"role": "user", "content": "Ends with the assistant"}, {"role": "assistant", "content": "Yes."}],
        # Not alternating: Gemma's template raises, the others render it.
        [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
        [{"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "ok"}],
        [{"role": "system", "content": "sys"}, {"role": "system", "content": "second system"},
         {"role": "user", "content": "hi"}],
        [{"role": "user", "content": "call a tool"}, {"role": "assistant", "content": "calling"},
         {"role": "tool", "content": "{\"result\": 42}"}],
    ]
    while len(convs) < 64:
        conv = []
        if rng.random() < 0.6:
            conv.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        turns = rng.randint(1, 4)
        for t in range(turns):
            conv.append({"role": "user", "content": rng.choice(USER_TURNS)})
            if t < turns - 1 or rng.random() < 0.15:
                conv.append({"role": "assistant", "content": rng.choice(ASSISTANT_TURNS)})
        convs.append(conv)
    return convs


def error_record(exc):
    return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__, "error_type": type(exc).__name__}


def input_ids(out):
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); 4.x a plain list.
    return list(out["input_ids"]) if hasattr(out, "keys") else list(out)


def string_cases(tok, strings):
    cases = []
    for text in strings:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        ids_plain = tok(text, add_special_tokens=False)["input_ids"]
        cases.append({
            "text": text,
            "ids": ids,
            "ids_no_special": ids_plain,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    return cases


def decode_cases(tok, rng, count):
    """Decodes of random id sequences: byte-fallback pieces, special tokens and ordinary tokens mixed."""
    special = sorted(set(tok.all_special_ids))
    size = len(tok)
    cases = []
    for _ in range(count):
        ids = []
        for _ in range(rng.randint(1, 16)):
            r = rng.random()
            if r < 0.2 and special:
                ids.append(rng.choice(special))
            elif r < 0.4:
                ids.append(rng.randrange(0, min(size, 600)))
            else:
                ids.append(rng.randrange(0, size))
        cases.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return cases


def conversation_cases(tok, convs, template):
    cases = []
    for messages in convs:
        case = {"messages": messages}
        try:
            case["text"] = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                   add_generation_prompt=True)
            case["text_no_generation_prompt"] = tok.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=False)
            case["ids"] = input_ids(tok.apply_chat_template(messages, chat_template=template,
                                                            add_generation_prompt=True))
        except Exception as exc:  # the template's own raise_exception, or transformers' checks
            case.update(error_record(exc))
        cases.append(case)
    return cases


def chat_template_error(tok):
    try:
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    except Exception as exc:
        return error_record(exc)
    return None


def describe(tok, source, strings, convs, template_override=None):
    import tokenizers
    import transformers
    template = template_override or tok.chat_template
    fixture = {
        "source": source,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "len": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "special_tokens_map": tok.special_tokens_map,
        "chat_template": tok.chat_template,
        "chat_template_error": chat_template_error(tok) if tok.chat_template is None else None,
        "template_override": template_override,
        "strings": string_cases(tok, strings),
        "decodes": decode_cases(tok, random.Random(99), 40),
        "conversations": conversation_cases(tok, convs, template) if template else [],
        "empty_conversation": None,
    }
    if template:
        try:
            tok.apply_chat_template([], chat_template=template, tokenize=False, add_generation_prompt=True)
        except Exception as exc:
            fixture["empty_conversation"] = error_record(exc)
    return fixture


def write_json(path, value):
    """One top-level list element per line: small diffs when a reference changes, and still compact."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("{\n")
        items = list(value.items())
        for i, (key, item) in enumerate(items):
            f.write(json.dumps(key) + ": ")
            if isinstance(item, list) and item:
                f.write("[\n")
                f.write(",\n".join(json.dumps(x, ensure_ascii=False) for x in item))
                f.write("\n]")
            else:
                f.write(json.dumps(item, ensure_ascii=False))
            f.write(",\n" if i + 1 < len(items) else "\n")
        f.write("}\n")


# ---------------------------------------------------------------- tiny Hugging Face folders

# Plain (not "-") block tags on their own indented lines: only trim_blocks + lstrip_blocks, as
# transformers sets them, make those lines vanish.
BYTELEVEL_TEMPLATE = """{%- set ns = namespace(turns=0) -%}
{% for message in messages %}
    {% if loop.first and message['role'] != 'system' %}
<|im_start|>system
You are a tiny test model.<|im_end|>
    {% endif %}
    {% set ns.turns = ns.turns + 1 %}
<|im_start|>{{ message.role }}
    {% if message.role == 'assistant' %}
{% generation %}{{ message.content | trim }}{% endgeneration %}
    {% elif message.role == 'tool' %}
{{ {'output': message.content, 'turn': ns.turns} | tojson }}
    {% elif message.content.startswith('  ') %}
{{ message.content.strip() | upper }} ({{ message.content | length }} chars, {{ message.content.split() | length }} words)
    {% else %}
{{ message.content | replace('\n', ' / ') }}
    {% endif %}
<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}
"""

UNIGRAM_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'].strip() %}"
    "{% set rest = messages[1:] %}{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system %}{{ bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' "
    "+ message['content'].strip() + ' [/INST]' }}"
    "{% else %}{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}{% endif %}"
    "{% else %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '' }}{% endif %}"
    "{# words: {{ messages | length }} #}"
)


def training_corpus(strings):
    return strings * 3 + USER_TURNS + ASSISTANT_TURNS + SYSTEM_PROMPTS


def write_bytelevel_dir(folder, strings):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(strings), trainer)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8", newline="\n") as f:
        f.write(BYTELEVEL_TEMPLATE)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
              "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>", "clean_up_tokenization_spaces": False,
              "model_max_length": 8192}
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(config, f, indent=2)


def write_unigram_dir(folder, strings):
    """A Unigram (SentencePiece-style) tokenizer. Its pieces come from a BPE training, which is
    deterministic where the Unigram trainer is not, and are scored by rank."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = metaspace
    bpe.train_from_iterator(training_corpus(strings), trainers.BpeTrainer(vocab_size=400, show_progress=False))
    pieces = [t for t, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])]
    vocab = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + [(p, -1.0 - i / 2048) for i, p in enumerate(pieces)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0))
    tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(os.path.join(folder, "tokenizer.json"))
    # transformers ignores add_bos_token when there is a tokenizer.json (its post-processor decides);
    # clean_up_tokenization_spaces it honours for a non-BPE model.
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True, "add_eos_token": False,
              "clean_up_tokenization_spaces": True, "chat_template": UNIGRAM_TEMPLATE}
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, f, indent=2)


# ---------------------------------------------------------------- tiny synthetic GGUFs
# The three real models cover transformers' Gemma and byte-level builders. These files (metadata
# only, a few KB) cover the others a GGUF can ask for: a Llama-style SentencePiece vocabulary (with
# a chat template that writes `bos_token` itself), Phi-3's variant of it, and a byte-level
# vocabulary that lacks `<|endoftext|>` and names a Llama-3 split regex.

def sentencepiece_vocab(strings):
    """A SentencePiece BPE model trained here, exported the way llama.cpp's converter does."""
    import io
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([s for s in training_corpus(strings) if s.strip()]), model_writer=model,
        vocab_size=700, model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
        user_defined_symbols=["<|user|>", "<|assistant|>"], control_symbols=["<|end|>"],
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_unknown(i):
            kind = 2
        elif sp.is_control(i):
            kind = 3
        elif sp.is_byte(i):
            kind = 6
        elif piece in ("<|user|>", "<|assistant|>"):
            kind = 4  # USER_DEFINED
        else:
            kind = 1
        tokens.append(piece)
        scores.append(sp.get_score(i))
        types.append(kind)
    return tokens, scores, types, (sp.bos_id(), sp.eos_id(), sp.unk_id())


def byte_level_vocab(strings):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                  special_tokens=["<|begin_of_text|>", "<|eot_id|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(strings), trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    types = [3 if t.startswith("<|") else 1 for t in tokens]
    # A control token spelled outside the byte alphabet: a llama.cpp mislabel transformers skips.
    tokens.append("<｜end▁of▁sentence｜>")
    types.append(3)
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    return tokens, types, merges


def write_gguf(path, arch, fill):
    import gguf
    writer = gguf.GGUFWriter(path, arch)
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_feed_forward_length(16)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_synthetic_ggufs(folder, strings):
    """The GGUF files, by fixture name."""
    os.makedirs(folder, exist_ok=True)
    tokens, scores, types, (bos, eos, unk) = sentencepiece_vocab(strings)

    def spm_fill(template):
        def fill(writer):
            writer.add_tokenizer_model("llama")
            writer.add_token_list(tokens)
            writer.add_token_scores(scores)
            writer.add_token_types(types)
            writer.add_bos_token_id(bos)
            writer.add_eos_token_id(eos)
            writer.add_unk_token_id(unk)
            if template:
                writer.add_chat_template(template)
        return fill

    files = {"spm_llama": "spm_llama.gguf", "spm_phi3": "spm_phi3.gguf", "bpe_llama3": "bpe_llama3.gguf"}
    write_gguf(os.path.join(folder, files["spm_llama"]), "llama", spm_fill(UNIGRAM_TEMPLATE))
    write_gguf(os.path.join(folder, files["spm_phi3"]), "phi3", spm_fill(None))

    bl_tokens, bl_types, merges = byte_level_vocab(strings)

    def bpe_fill(writer):
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("llama-bpe")
        writer.add_token_list(bl_tokens)
        writer.add_token_types(bl_types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(bl_tokens.index("<|begin_of_text|>"))
        writer.add_eos_token_id(bl_tokens.index("<|eot_id|>"))
        writer.add_add_bos_token(True)
        writer.add_eot_token_id(bl_tokens.index("<|eot_id|>"))
    write_gguf(os.path.join(folder, files["bpe_llama3"]), "llama", bpe_fill)
    return files


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=os.environ.get("TCOMM_MODELS", os.path.join(root, "models")))
    parser.add_argument("--out", default=os.path.join(root, "runtime", "tests", "fixtures", "tokenizer"))
    parser.add_argument("--only", help="comma-separated fixture names (smollm2, gemma3, qwen2, hf_bytelevel, "
                        "hf_unigram, spm_llama, spm_phi3, bpe_llama3)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    from transformers import AutoTokenizer
    os.makedirs(args.out, exist_ok=True)
    strings = all_strings()
    convs = conversations()

    for name, path in [("hf_bytelevel", write_bytelevel_dir), ("hf_unigram", write_unigram_dir)]:
        if only and name not in only:
            continue
        folder = os.path.join(args.out, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        path(folder, strings)
        tok = AutoTokenizer.from_pretrained(folder)
        write_json(os.path.join(args.out, f"{name}.json"), describe(tok, name, strings, convs))
        print(f"{name}: {type(tok).__name__}, {len(tok)} tokens", file=sys.stderr)

    # Smaller fixtures for the synthetic files: the fixed strings and 20 conversations.
    synthetic_dir = os.path.join(args.out, "gguf")
    if not only or only & {"spm_llama", "spm_phi3", "bpe_llama3"}:
        # All three together: a fixture must come from the file committed next to it.
        for name, gguf in write_synthetic_ggufs(synthetic_dir, strings).items():
            tok = AutoTokenizer.from_pretrained(synthetic_dir, gguf_file=gguf)
            fixture = describe(tok, f"gguf/{gguf}", list(dict.fromkeys(FIXED_STRINGS)), convs[:20])
            write_json(os.path.join(args.out, f"{name}.json"), fixture)
            print(f"{name}: {type(tok).__name__}, {len(tok)} tokens", file=sys.stderr)

    for name, gguf in GGUF_MODELS:
        if only and name not in only:
            continue
        tok = AutoTokenizer.from_pretrained(args.models, gguf_file=gguf)
        override = GEMMA3_TEMPLATE if tok.chat_template is None and name == "gemma3" else None
        fixture = describe(tok, gguf, strings, convs, override)
        write_json(os.path.join(args.out, f"{name}.json"), fixture)
        print(f"{name}: {type(tok).__name__}, {len(fixture['strings'])} strings, "
              f"{len(fixture['conversations'])} conversations", file=sys.stderr)


if __name__ == "__main__":
    main()
