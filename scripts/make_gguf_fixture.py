#!/usr/bin/env python3
"""Writes the reference fixtures that runtime/tests/gguf.rs checks the Rust GGUF reader against.

Outputs (in runtime/tests/fixtures/gguf/):
  all_types.gguf           small GGUF: one tensor per ggml type, metadata keys of every value type
  all_types.expected.bin   little-endian f32: gguf.quants.dequantize of every supported tensor
  all_types.expected.json  where each tensor lies in the .bin, its type and shape, the expected
                           metadata (typed), and ggml's block/type sizes
  real_tensors.json        for the models fetched by scripts/setup: every tensor's name/type/shape/
                           offset, scalar metadata, and sums + first values of selected tensors

The Python `gguf` package is the reference: the Rust dequantizer must match it bit for bit.
Rerun with `.venv/bin/python scripts/make_gguf_fixture.py` (deterministic: fixed seed).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType as V, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quant_shape_from_byte_shape, quantize

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runtime" / "tests" / "fixtures" / "gguf"
REAL_MODELS = [
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m-q4_k_m.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
]
# A non-default alignment so the fixture exercises `general.alignment` (real models use 32).
ALIGNMENT = 64

# (key, value type, value, array element type). Nested arrays give the inner element type as a
# second sub type; GGUFWriter infers inner types itself (int -> INT32, str -> STRING).
METADATA = [
    ("test.u8", V.UINT8, 200, None),
    ("test.i8", V.INT8, -100, None),
    ("test.u16", V.UINT16, 60000, None),
    ("test.i16", V.INT16, -30000, None),
    ("test.u32", V.UINT32, 4_000_000_000, None),
    ("test.i32", V.INT32, -2_000_000_000, None),
    ("test.u64", V.UINT64, 2**63 + 5, None),
    ("test.i64", V.INT64, -(2**62) - 3, None),
    ("test.f32", V.FLOAT32, 1234.5678, None),
    ("test.f64", V.FLOAT64, math.pi, None),
    ("test.bool_true", V.BOOL, True, None),
    ("test.bool_false", V.BOOL, False, None),
    ("test.string", V.STRING, "héllo, GGUF ✓ 世界", None),
    ("test.empty_string", V.STRING, "", None),
    ("test.arr_u8", V.ARRAY, [0, 1, 255], V.UINT8),
    ("test.arr_i16", V.ARRAY, [-32768, 0, 32767], V.INT16),
    ("test.arr_i32", V.ARRAY, [-7, 0, 7, 2**31 - 1], V.INT32),
    ("test.arr_u64", V.ARRAY, [0, 2**64 - 1], V.UINT64),
    ("test.arr_f32", V.ARRAY, [0.5, -1.25, 1e-3], V.FLOAT32),
    ("test.arr_f64", V.ARRAY, [1e300, -2.5, 0.1], V.FLOAT64),
    ("test.arr_bool", V.ARRAY, [True, False, True], V.BOOL),
    ("test.arr_str", V.ARRAY, ["a", "bb", "", "ünïcode"], V.STRING),
    ("test.arr_nested", V.ARRAY, [[1, 2], [3], [4, 5, 6]], (V.ARRAY, V.INT32)),
    ("test.arr_nested_str", V.ARRAY, [["x", "y"], ["z"]], (V.ARRAY, V.STRING)),
]


def typed_json(vtype: V, value, sub=None) -> dict:
    """The expected value in a typed form the Rust test turns into a MetaValue. Floats travel as
    their bit patterns so JSON float parsing cannot blur the comparison."""
    if vtype == V.FLOAT32:
        return {"type": "f32", "bits": int(np.array(value, dtype=np.float32).view(np.uint32))}
    if vtype == V.FLOAT64:
        return {"type": "f64", "bits": int(np.array(value, dtype=np.float64).view(np.uint64))}
    if vtype == V.ARRAY:
        elem, inner = (sub if isinstance(sub, tuple) else (sub, None))
        return {"type": "array", "items": [typed_json(elem, v, inner) for v in value]}
    names = {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32",
             V.INT32: "i32", V.UINT64: "u64", V.INT64: "i64", V.BOOL: "bool", V.STRING: "string"}
    return {"type": names[vtype], "value": value}


def random_blocks(rng: np.random.Generator, qtype: Q, n_blocks: int) -> np.ndarray:
    """Uniformly random bytes for `n_blocks` blocks of `qtype`."""
    return rng.integers(0, 256, size=(n_blocks, GGML_QUANT_SIZES[qtype][1]), dtype=np.uint8)


def k_quant_blocks(rng: np.random.Generator, qtype: Q, n_blocks: int) -> np.ndarray:
    """Random raw K-quant blocks (the gguf package cannot quantize these types) whose f16
    super-block scales are overwritten with small finite values, so every output is finite."""
    blocks = random_blocks(rng, qtype, n_blocks)
    # byte offsets of the f16 `d` (and `dmin`) fields, from ggml-common.h block layouts
    scale_fields = {Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}
    for off in scale_fields[qtype]:
        scales = (rng.uniform(1e-4, 5e-2, n_blocks) * rng.choice([-1, 1], n_blocks)).astype(np.float16)
        scales[0] = np.float16(6e-6)  # an f16 subnormal scale
        scales[1] = 0  # an all-zero scale
        blocks[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def make_all_types(rng: np.random.Generator) -> None:
    writer = GGUFWriter(OUT / "all_types.gguf", arch="llama")
    writer.add_custom_alignment(ALIGNMENT)
    for key, vtype, value, sub in METADATA:
        elem = sub[0] if isinstance(sub, tuple) else sub
        writer.add_key_value(key, value, vtype, sub_type=elem)

    tensors: list[tuple[str, Q, np.ndarray]] = []  # name, type, raw bytes in GGUF byte shape

    def data(shape):
        x = rng.normal(0.0, 0.3, size=shape).astype(np.float32)
        x.reshape(-1)[:7] = [0.0, -0.0, 1e-30, -3.5, 65504.0, 1e-7, 2.0]
        if x.ndim > 1:
            x[-1] = 0.0  # an all-zero row: blocks with d == 0
        return x

    for qtype in (Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0):
        tensors.append((f"t.{qtype.name.lower()}", qtype, quantize(data((24, 128)), qtype).view(np.uint8)))
    # 1-D, 3-D and 4-D tensors, and a row length that is not a multiple of 32
    for name, shape in (("t.f32_1d", (100,)), ("t.f32_3d", (2, 3, 40)), ("t.f32_4d", (2, 2, 3, 8))):
        tensors.append((name, Q.F32, data(shape).view(np.uint8)))
    tensors.append(("t.f16_odd", Q.F16, data((5, 7)).astype(np.float16).view(np.uint8)))
    for qtype in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K):
        raw = k_quant_blocks(rng, qtype, 12)
        tensors.append((f"t.{qtype.name.lower()}", qtype, raw.reshape(6, -1)))
    # a type the Rust reader knows but does not dequantize (the gguf package cannot either)
    tensors.append(("t.q8_k_unsupported", Q.Q8_K, random_blocks(rng, Q.Q8_K, 2)))

    expected_tensors = []
    chunks = []
    offset = 0
    for name, qtype, raw in tensors:
        raw = np.ascontiguousarray(raw)
        writer.add_tensor(name, raw, raw_dtype=qtype)  # uint8 + raw_dtype: shape is the byte shape
        shape = quant_shape_from_byte_shape(raw.shape, qtype)
        entry = {"name": name, "ggml_type": qtype.name, "shape": list(shape)}
        if qtype != Q.Q8_K:
            if qtype in (Q.F32, Q.F16):
                # dequantize takes these as typed arrays; reinterpret the exact stored bytes
                values = dequantize(raw.view(np.float32 if qtype == Q.F32 else np.float16), qtype)
            else:
                values = dequantize(raw, qtype)
            values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
            assert values.size == math.prod(shape) and np.isfinite(values).all(), name
            entry.update(offset=offset, len=int(values.size))
            chunks.append(values.astype("<f4").tobytes())
            offset += values.size
        expected_tensors.append(entry)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    (OUT / "all_types.expected.bin").write_bytes(b"".join(chunks))
    metadata = {"general.architecture": typed_json(V.STRING, "llama"),
                "general.alignment": typed_json(V.UINT32, ALIGNMENT)}
    for key, vtype, value, sub in METADATA:
        metadata[key] = typed_json(vtype, value, sub)
    sizes = {t.name: {"id": int(t), "block_size": b, "type_size": s} for t, (b, s) in GGML_QUANT_SIZES.items()}
    index = {"tensors": expected_tensors, "metadata": metadata, "alignment": ALIGNMENT, "ggml_sizes": sizes}
    (OUT / "all_types.expected.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")


def scalar_metadata(reader: GGUFReader) -> dict:
    """Scalar keys with their values; arrays only by element type and length (vocabularies are
    huge). Skips the reader's pseudo-fields (GGUF.version etc.)."""
    out = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        if vtype == V.ARRAY:
            out[field.name] = {"type": "array", "len": len(field.data), "elem": field.types[-1].name}
        elif vtype == V.STRING:
            out[field.name] = typed_json(vtype, field.contents())
        else:
            value = field.parts[field.data[0]][0]
            out[field.name] = typed_json(vtype, value.item() if vtype != V.BOOL else bool(value))
    return out


def pick_tensors(reader: GGUFReader) -> list:
    """token_embd, an attention projection, an ffn_down and a norm, plus the first tensor of every
    ggml type in the file that these do not already cover."""
    by_name = {t.name: t for t in reader.tensors}
    picked = [by_name[n] for n in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight",
                                   "blk.0.attn_norm.weight") if n in by_name]
    for t in reader.tensors:
        if t.tensor_type not in {p.tensor_type for p in picked}:
            picked.append(t)
    return picked


def tensor_stats(tensor) -> dict:
    """Sum, sum of squares, sum of |x| (float64) and the first 64 values, dequantizing in row
    chunks so a 262144-row embedding does not need gigabytes of numpy temporaries."""
    rows = tensor.data.reshape(-1, tensor.data.shape[-1])
    total = total_sq = total_abs = 0.0
    first = None
    for start in range(0, rows.shape[0], 4096):
        values = dequantize(rows[start:start + 4096], tensor.tensor_type).astype(np.float64).reshape(-1)
        if first is None:
            first = values[:64].astype(np.float32)
        total += float(values.sum())
        total_sq += float(np.square(values).sum())
        total_abs += float(np.abs(values).sum())
    return {
        "name": tensor.name,
        "ggml_type": tensor.tensor_type.name,
        "sum": total,
        "sum_sq": total_sq,
        "sum_abs": total_abs,
        "first_bits": [int(b) for b in first.view(np.uint32)],
    }


def make_real(models: Path) -> None:
    files = []
    for file in REAL_MODELS:
        path = models / file
        if not path.exists():
            raise SystemExit(f"{path} is missing: run scripts/setup first")
        reader = GGUFReader(path)
        tensors = [{"name": t.name, "ggml_type": t.tensor_type.name,
                    "dims": [int(d) for d in t.shape], "offset": int(t.data_offset - reader.data_offset)}
                   for t in reader.tensors]
        stats = [tensor_stats(t) for t in pick_tensors(reader)]
        print(f"{file}: {len(tensors)} tensors, checked {[s['name'] for s in stats]}")
        files.append({"file": file, "data_offset": int(reader.data_offset), "metadata": scalar_metadata(reader),
                      "tensors": tensors, "checked": stats})
    (OUT / "real_tensors.json").write_text(json.dumps({"files": files}, separators=(",", ":")) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="folder with the setup's GGUF models")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    make_all_types(np.random.default_rng(20240611))
    make_real(args.models)


if __name__ == "__main__":
    main()
