//! Between the wire (`proto::v1`) and the engine's types: tensors, sampling settings, capture
//! requests, finish reasons, deadlines. Nothing here trusts the request: every size is checked
//! before it is used.
use std::time::Duration;

use proto::v1 as pb;
use tch::{Kind, Tensor};
use tonic::metadata::MetadataMap;

use super::status::ServeError;
use crate::engine::{CapturePoint, CaptureSpec};
use crate::generate::{FinishReason, SamplingParams};

/// Default `max_new_tokens` when neither the request nor the agent sets it (capped by the room
/// left in the context).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;
/// Most dimensions a wire tensor may have.
const MAX_DIMS: usize = 8;

fn bad(message: String) -> ServeError {
    ServeError::BadRequest(message)
}

/// Bytes per element of a wire dtype.
pub fn dtype_size(dtype: pb::DType) -> Option<usize> {
    match dtype {
        pb::DType::DtypeF32 => Some(4),
        pb::DType::DtypeBf16 | pb::DType::DtypeF16 => Some(2),
        pb::DType::DtypeUnspecified => None,
    }
}

/// Decodes a wire tensor into f32 values and its shape, checking the dtype, the shape and that
/// `len(data) == product(shape) * size_of(dtype)`. `what` names the field in error messages.
pub fn decode_values(t: &pb::Tensor, what: &str) -> Result<(Vec<f32>, Vec<i64>), ServeError> {
    let dtype = pb::DType::try_from(t.dtype).map_err(|_| bad(format!("{what}: unknown dtype {} (expected F32, BF16 or F16)", t.dtype)))?;
    let size = dtype_size(dtype).ok_or_else(|| bad(format!("{what}: dtype is not set (expected F32, BF16 or F16)")))?;
    if t.shape.len() > MAX_DIMS {
        return Err(bad(format!("{what}: {} dimensions, at most {MAX_DIMS} are allowed", t.shape.len())));
    }
    let mut count: usize = 1;
    for &d in &t.shape {
        let d = usize::try_from(d).map_err(|_| bad(format!("{what}: negative dimension {d} in shape {:?}", t.shape)))?;
        count = count.checked_mul(d).ok_or_else(|| bad(format!("{what}: shape {:?} is too large", t.shape)))?;
    }
    let expected = count.checked_mul(size).ok_or_else(|| bad(format!("{what}: shape {:?} is too large", t.shape)))?;
    if t.data.len() != expected {
        return Err(bad(format!(
            "{what}: {} bytes of data, but shape {:?} of {dtype:?} needs {expected} ({count} elements x {size} bytes)",
            t.data.len(),
            t.shape
        )));
    }
    let values: Vec<f32> = match dtype {
        pb::DType::DtypeF32 => t.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        pb::DType::DtypeBf16 => t.data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        pb::DType::DtypeF16 => t.data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        pb::DType::DtypeUnspecified => Vec::new(),
    };
    Ok((values, t.shape.clone()))
}

/// A wire tensor as an f32 CPU tensor; NaN and infinite values are refused.
pub fn tensor_from_proto(t: &pb::Tensor, what: &str) -> Result<Tensor, ServeError> {
    let (values, shape) = decode_values(t, what)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("{what}: element {i} is {} (values must be finite)", values[i])));
    }
    Ok(Tensor::from_slice(&values).reshape(shape.as_slice()))
}

/// A tensor on the wire as F32, little-endian, row-major.
pub fn tensor_to_proto(t: &Tensor) -> pb::Tensor {
    let t = t.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
    let shape = t.size();
    let values = Vec::<f32>::try_from(&t.reshape([-1])).unwrap_or_default();
    let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    pb::Tensor { data, shape, dtype: pb::DType::DtypeF32 as i32 }
}

/// A wire tensor as a tch tensor (f32, CPU), for clients.
pub fn tensor_from_wire(t: &pb::Tensor) -> Result<Tensor, ServeError> {
    let (values, shape) = decode_values(t, "tensor")?;
    Ok(Tensor::from_slice(&values).reshape(shape.as_slice()))
}

/// `over`'s set fields replace `base`'s.
pub fn merge_sampling(base: Option<&pb::SamplingParams>, over: Option<&pb::SamplingParams>) -> pb::SamplingParams {
    let mut merged = base.cloned().unwrap_or_default();
    if let Some(o) = over {
        merged.max_new_tokens = o.max_new_tokens.or(merged.max_new_tokens);
        merged.temperature = o.temperature.or(merged.temperature);
        merged.top_k = o.top_k.or(merged.top_k);
        merged.top_p = o.top_p.or(merged.top_p);
        merged.seed = o.seed.or(merged.seed);
        if o.stop_token_ids.is_some() {
            merged.stop_token_ids = o.stop_token_ids.clone();
        }
        if !o.stop_strings.is_empty() {
            merged.stop_strings = o.stop_strings.clone();
        }
    }
    merged
}

/// The engine's sampling settings; unset fields take the server defaults. `room` is what the
/// context leaves after the prefix and prompt (the default max_new_tokens is capped by it).
pub fn sampling_params(p: &pb::SamplingParams, eos_token_ids: &[u32], room: usize) -> SamplingParams {
    let defaults = SamplingParams::default();
    SamplingParams {
        temperature: p.temperature.unwrap_or(defaults.temperature),
        top_k: p.top_k.map_or(defaults.top_k, |k| k as usize),
        top_p: p.top_p.unwrap_or(defaults.top_p),
        seed: p.seed.unwrap_or(defaults.seed),
        max_new_tokens: p.max_new_tokens.map_or(DEFAULT_MAX_NEW_TOKENS.min(room).max(1), |n| n as usize),
        stop_token_ids: p.stop_token_ids.as_ref().map_or_else(|| eos_token_ids.to_vec(), |s| s.ids.clone()),
        stop_strings: p.stop_strings.clone(),
    }
}

/// Checks an agent's default sampling against its model (CreateAgent).
pub fn validate_sampling(p: &pb::SamplingParams, context: i64, vocab: i64) -> Result<(), ServeError> {
    let params = sampling_params(p, &[], 1);
    params.validate()?;
    if let Some(n) = p.max_new_tokens {
        if n == 0 || i64::from(n) >= context {
            return Err(bad(format!("default_sampling.max_new_tokens must be in 1..{context} (the context), got {n}")));
        }
    }
    if let Some(&id) = params.stop_token_ids.iter().find(|&&id| i64::from(id) >= vocab) {
        return Err(bad(format!("default_sampling.stop_token_ids: {id} is outside the vocabulary (size {vocab})")));
    }
    Ok(())
}

pub fn capture_point(p: i32) -> Result<CapturePoint, ServeError> {
    match pb::CapturePoint::try_from(p) {
        Ok(pb::CapturePoint::LastPromptToken) => Ok(CapturePoint::LastPromptToken),
        Ok(pb::CapturePoint::LastGeneratedToken) => Ok(CapturePoint::LastGeneratedToken),
        Ok(pb::CapturePoint::MeanGenerated) => Ok(CapturePoint::MeanGenerated),
        Ok(pb::CapturePoint::Unspecified) | Err(_) => Err(bad(format!(
            "hidden_states.points: {p} is not a capture point (LAST_PROMPT_TOKEN, LAST_GENERATED_TOKEN or MEAN_GENERATED)"
        ))),
    }
}

pub fn capture_point_to_proto(p: CapturePoint) -> pb::CapturePoint {
    match p {
        CapturePoint::LastPromptToken => pb::CapturePoint::LastPromptToken,
        CapturePoint::LastGeneratedToken => pb::CapturePoint::LastGeneratedToken,
        CapturePoint::MeanGenerated => pb::CapturePoint::MeanGenerated,
    }
}

pub fn capture_spec(h: &pb::HiddenStatesRequest) -> Result<CaptureSpec, ServeError> {
    let points = h.points.iter().map(|&p| capture_point(p)).collect::<Result<Vec<_>, _>>()?;
    Ok(CaptureSpec { layers: h.layers.iter().map(|&l| l as usize).collect(), points })
}

pub fn finish_reason(f: FinishReason) -> pb::FinishReason {
    match f {
        FinishReason::Stop => pb::FinishReason::Stop,
        FinishReason::Length => pb::FinishReason::Length,
    }
}

/// The call's `grpc-timeout` (`<up to 8 digits><H|M|S|m|u|n>`), if it has a valid one.
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

pub fn device_name(d: tch::Device) -> String {
    match d {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

pub fn kind_name(k: Kind) -> String {
    match k {
        Kind::Float => "f32".into(),
        Kind::BFloat16 => "bf16".into(),
        Kind::Half => "f16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_and_lengths_are_checked() {
        let t = Tensor::from_slice(&[1.0f32, -2.5, 3.25, 0.0, 5.0, 6.0]).reshape([2, 3]);
        let wire = tensor_to_proto(&t);
        assert_eq!(wire.shape, vec![2, 3]);
        assert_eq!(wire.data.len(), 24);
        let back = tensor_from_proto(&wire, "x").unwrap();
        assert_eq!(back.size(), vec![2, 3]);
        assert_eq!(Vec::<f32>::try_from(&back.reshape([-1])).unwrap(), vec![1.0, -2.5, 3.25, 0.0, 5.0, 6.0]);
        let short = pb::Tensor { data: wire.data[..20].to_vec(), ..wire.clone() };
        assert!(tensor_from_proto(&short, "x").unwrap_err().to_string().contains("needs 24"));
        let bf16 = pb::Tensor { data: half::bf16::from_f32(1.5).to_le_bytes().to_vec(), shape: vec![1], dtype: pb::DType::DtypeBf16 as i32 };
        assert_eq!(decode_values(&bf16, "x").unwrap().0, vec![1.5]);
        let unset = pb::Tensor { dtype: 0, ..wire.clone() };
        assert!(tensor_from_proto(&unset, "x").is_err());
        let negative = pb::Tensor { shape: vec![-2, -3], ..wire.clone() };
        assert!(tensor_from_proto(&negative, "x").is_err());
        let huge = pb::Tensor { shape: vec![i64::MAX, i64::MAX], ..wire };
        assert!(tensor_from_proto(&huge, "x").is_err());
    }

    #[test]
    fn grpc_timeouts_parse() {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_millis(250)));
        m.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_secs(3)));
        m.insert("grpc-timeout", "123456789S".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
    }
}
