//! Writes small GGUF v3 files for the CLI tests: a valid tiny llama with a byte-level tokenizer,
//! and variants of it broken in one way each.

pub enum Value {
    U32(u32),
    F32(f32),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

pub struct TensorSpec {
    pub name: String,
    /// GGUF order (fastest-varying first).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub fn write(path: &std::path::Path, metadata: &[(String, Value)], tensors: &[TensorSpec]) {
    const ALIGN: usize = 32;
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        match value {
            Value::U32(v) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::F32(v) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Value::StrArray(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for s in items {
                    put_str(&mut out, s);
                }
            }
            Value::I32Array(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for v in items {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0usize;
    let mut offsets = Vec::new();
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offsets.push(offset);
        offset += t.data.len().div_ceil(ALIGN) * ALIGN;
    }
    out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    let data_start = out.len();
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(data_start + off, 0);
        out.extend_from_slice(&t.data);
    }
    out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    std::fs::write(path, out).expect("write gguf");
}

/// The parts of a valid tiny llama (1 layer, hidden 8) with a 30-token byte-level vocabulary.
pub fn tiny_llama() -> (Vec<(String, Value)>, Vec<TensorSpec>) {
    let mut tokens: Vec<String> = vec!["<s>".into(), "</s>".into(), "Ġ".into(), "!".into()];
    tokens.extend(('a'..='z').map(|c| c.to_string()));
    let vocab = tokens.len() as u64;
    let metadata = vec![
        ("general.architecture".to_string(), Value::Str("llama".into())),
        ("llama.embedding_length".into(), Value::U32(8)),
        ("llama.feed_forward_length".into(), Value::U32(16)),
        ("llama.block_count".into(), Value::U32(1)),
        ("llama.attention.head_count".into(), Value::U32(2)),
        ("llama.attention.head_count_kv".into(), Value::U32(1)),
        ("llama.attention.layer_norm_rms_epsilon".into(), Value::F32(1e-5)),
        ("llama.context_length".into(), Value::U32(64)),
        ("llama.rope.dimension_count".into(), Value::U32(4)),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        ("tokenizer.ggml.model".into(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::Str("default".into())),
        ("tokenizer.ggml.token_type".into(), Value::I32Array(tokens.iter().enumerate().map(|(i, _)| if i < 2 { 3 } else { 1 }).collect())),
        ("tokenizer.ggml.tokens".into(), Value::StrArray(tokens)),
        ("tokenizer.ggml.merges".into(), Value::StrArray(Vec::new())),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
    ];
    let f32_tensor = |name: &str, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        let data = (0..n).flat_map(|i| (((i * 7919) % 97) as f32 / 97.0 - 0.5).to_le_bytes()).collect();
        TensorSpec { name: name.to_string(), dims: dims.to_vec(), ggml_type: 0, data }
    };
    let tensors = vec![
        f32_tensor("token_embd.weight", &[8, vocab]),
        f32_tensor("output_norm.weight", &[8]),
        f32_tensor("blk.0.attn_norm.weight", &[8]),
        f32_tensor("blk.0.attn_q.weight", &[8, 8]),
        f32_tensor("blk.0.attn_k.weight", &[8, 4]),
        f32_tensor("blk.0.attn_v.weight", &[8, 4]),
        f32_tensor("blk.0.attn_output.weight", &[8, 8]),
        f32_tensor("blk.0.ffn_norm.weight", &[8]),
        f32_tensor("blk.0.ffn_gate.weight", &[8, 16]),
        f32_tensor("blk.0.ffn_up.weight", &[8, 16]),
        f32_tensor("blk.0.ffn_down.weight", &[16, 8]),
    ];
    (metadata, tensors)
}
