//! Device, dtype and weight-format selection: `cpu`, `cuda`, `cuda:N` or `auto`.
use tch::{Device, Kind};

use crate::error::LoadError;

/// Parses a user's `--device` value. `auto` picks the first CUDA device when libtorch sees one.
pub fn parse_device(spec: &str) -> Result<Device, LoadError> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:") {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| LoadError::Device(format!("bad device '{other}': expected cpu, cuda, cuda:N or auto")))
                .and_then(cuda),
            None => Err(LoadError::Device(format!("bad device '{other}': expected cpu, cuda, cuda:N or auto"))),
        },
    }
}

fn cuda(index: usize) -> Result<Device, LoadError> {
    let count = tch::Cuda::device_count() as usize;
    if index < count {
        Ok(Device::Cuda(index))
    } else if count == 0 {
        Err(LoadError::Device(format!(
            "cuda:{index} requested but libtorch sees no CUDA device (is libtorch_cuda linked and a driver present?)"
        )))
    } else {
        Err(LoadError::Device(format!("cuda:{index} requested but only {count} CUDA device(s) exist")))
    }
}

/// Compute dtype: f32 on the CPU (exact comparisons with transformers), bf16 on CUDA (speed).
pub fn default_kind(device: Device) -> Kind {
    match device {
        Device::Cpu => Kind::Float,
        _ => Kind::BFloat16,
    }
}

/// Parses `--dtype` (`auto`, `f32`, `bf16`, `f16`).
pub fn parse_kind(spec: &str, device: Device) -> Result<Kind, LoadError> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(default_kind(device)),
        "f32" | "float32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "float16" | "half" => Ok(Kind::Half),
        other => Err(LoadError::Device(format!("bad dtype '{other}': expected auto, f32, bf16 or f16"))),
    }
}

/// Whether this CPU computes in bf16 natively (AVX512-BF16). Without it libtorch's bf16 matrix
/// products and attention convert element by element and run several times slower than f32 on
/// the same values (measured on a 2-core AVX2 EPYC, one thread: a 4864 x 896 projection of 27 rows
/// 70 ms against 19 ms, of 512 rows 1424 ms against 229 ms; attention of 27 rows over 900 keys
/// 122 ms against 10 ms), so a bf16 model on such a CPU multiplies in f32 and rounds to bf16 (see
/// `Transformer::load`). Other architectures are taken as native (no change).
pub fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Whether tensors of `kind` on `device` take the f32 route of `cpu_has_native_bf16`.
pub fn bf16_in_f32(device: Device, kind: Kind) -> bool {
    device == Device::Cpu && kind == Kind::BFloat16 && !cpu_has_native_bf16()
}

/// How the projections' weights are stored (`--weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// In the compute dtype.
    Dense,
    /// int8 with one scale per output row, dequantized inside libtorch's weight-only kernel
    /// (CPU only).
    Int8,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Dense => "dense",
            WeightFormat::Int8 => "int8",
        }
    }
}

/// Parses `--weights` (`dense`, `int8`).
pub fn parse_weights(spec: &str) -> Result<WeightFormat, LoadError> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "dense" => Ok(WeightFormat::Dense),
        "int8" => Ok(WeightFormat::Int8),
        other => Err(LoadError::Device(format!("bad weight format '{other}': expected dense or int8"))),
    }
}
