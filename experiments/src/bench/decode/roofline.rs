//! The roofline facts of `tcomm bench decode`: the bytes a batch-1 decode step must read (from a
//! GGUF header or a safetensors checkpoint's headers) and the device's measured read bandwidth.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use runtime::device::WeightFormat;
use runtime::gguf::GgufFile;
use serde::Serialize;
use tch::{Kind, Tensor};

use super::super::kind_name;

#[derive(Serialize)]
pub(super) struct WeightInfo {
    pub format: String,
    pub dequantized_from: BTreeMap<String, usize>,
    pub parameters: u64,
    pub bytes_per_token: u64,
}

/// One tensor as the roofline sees it.
struct TensorFacts {
    /// The token embedding (a row gather per token, not a full read, unless it is also the head).
    embedding: bool,
    elements: u64,
    matrix: bool,
}

/// What the engine computes in, and the bytes a batch-1 decode step must read: every tensor once
/// at the compute dtype, the token embedding only when it doubles as the output head (`tied`).
/// With int8 weights every matrix is read at one byte per element (the per-row scales are noise).
fn count(tensors: &[TensorFacts], tied: bool, kind: Kind, format: WeightFormat, from: BTreeMap<String, usize>) -> WeightInfo {
    let elem = kind.elt_size_in_bytes() as u64;
    let read = tensors
        .iter()
        .filter(|t| !t.embedding || tied)
        .map(|t| t.elements * if format == WeightFormat::Int8 && t.matrix { 1 } else { elem })
        .sum();
    WeightInfo {
        format: match format {
            WeightFormat::Dense => kind_name(kind),
            WeightFormat::Int8 => format!("int8 weights (per-row scales), {} compute", kind_name(kind)),
        },
        dequantized_from: from,
        parameters: tensors.iter().map(|t| t.elements).sum(),
        bytes_per_token: read,
    }
}

/// Weight facts from the GGUF header (`dequantized_from` counts the tensors per ggml type).
pub(super) fn weight_info(file: &GgufFile, kind: Kind, format: WeightFormat) -> WeightInfo {
    let mut from = BTreeMap::new();
    let tensors: Vec<TensorFacts> = file
        .tensors()
        .iter()
        .map(|t| {
            *from.entry(t.ggml_type.name().to_string()).or_insert(0) += 1;
            TensorFacts { embedding: t.name == "token_embd.weight", elements: t.n_elements(), matrix: t.dims.len() == 2 }
        })
        .collect();
    count(&tensors, file.tensor_info("output.weight").is_none(), kind, format, from)
}

/// Weight facts of a safetensors checkpoint, from its headers only.
pub(super) fn checkpoint_weight_info(dir: &Path, kind: Kind, format: WeightFormat) -> anyhow::Result<WeightInfo> {
    let weights = runtime::weights::Weights::from_checkpoint_dir(dir, tch::Device::Cpu, kind)?;
    let listed = weights.checkpoint_tensors();
    let tied = !listed.iter().any(|(n, _)| n == "lm_head.weight");
    let tensors: Vec<TensorFacts> = listed
        .iter()
        .map(|(name, shape)| TensorFacts {
            embedding: name.ends_with("embed_tokens.weight"),
            elements: shape.iter().product::<i64>().max(0) as u64,
            matrix: shape.len() == 2,
        })
        .collect();
    let from = BTreeMap::from([("safetensors".to_string(), tensors.len())]);
    Ok(count(&tensors, tied, kind, format, from))
}

/// `model_type` from a checkpoint's config.json ("checkpoint" when it cannot be read).
pub(super) fn checkpoint_architecture(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("model_type").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| "checkpoint".into())
}

/// Read bandwidth in GB/s: a sum over a 1 GiB f32 tensor, best of 5 (after one untimed pass).
pub(super) fn memory_bandwidth_gbs(threads: usize, device: tch::Device) -> f64 {
    let _guard = tch::no_grad_guard();
    tch::set_num_threads(threads as i32);
    let elements: i64 = 1 << 28;
    let big = Tensor::ones([elements], (Kind::Float, device));
    let sync = |t: &Tensor| t.double_value(&[]);
    sync(&big.sum(Kind::Float));
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        sync(&big.sum(Kind::Float));
        best = best.min(start.elapsed().as_secs_f64());
    }
    (elements as f64 * 4.0) / best / 1e9
}
