//! Named weights from a GGUF file or a safetensors checkpoint, handed out as tensors on the
//! model's device and dtype. Architectures ask for Hugging Face names (`model.layers.0...`);
//! GGUF names (`blk.0...`) are derived here so each architecture file is written once for both.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use tch::{Device, Kind, Tensor};

use crate::error::LoadError;
use crate::gguf::GgufFile;

/// Where a tensor of a safetensors checkpoint lives.
struct SafetensorsEntry {
    file: usize,
    kind: Kind,
    shape: Vec<i64>,
    start: usize,
    end: usize,
}

enum Source {
    Gguf { file: GgufFile, renames: Vec<(&'static str, &'static str)> },
    Safetensors { paths: Vec<PathBuf>, maps: Vec<Mmap>, index: HashMap<String, SafetensorsEntry> },
}

/// A read-only view of a model's weights; every tensor is materialized on request, once.
pub struct Weights {
    source: Source,
    path: PathBuf,
    device: Device,
    kind: Kind,
}

impl Weights {
    pub fn from_gguf(file: GgufFile, device: Device, kind: Kind) -> Self {
        let path = file.path().to_path_buf();
        Weights { source: Source::Gguf { file, renames: Vec::new() }, path, device, kind }
    }

    /// Opens `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub fn from_checkpoint_dir(dir: &Path, device: Device, kind: Kind) -> Result<Self, LoadError> {
        let index_path = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if index_path.exists() {
            let text = read_to_string(&index_path)?;
            let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| file_err(&index_path, e))?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| file_err(&index_path, "no 'weight_map' object"))?;
            let mut names: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            names.sort();
            names.dedup();
            names
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut paths = Vec::new();
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for (file_idx, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let f = std::fs::File::open(&path).map_err(|e| file_err(&path, format!("cannot open: {e}")))?;
            // SAFETY: the file is opened read-only and the map is dropped with `Weights`; like every
            // mmap-based loader we rely on the file not being truncated while the model is loading.
            let map = unsafe { Mmap::map(&f) }.map_err(|e| file_err(&path, format!("cannot map: {e}")))?;
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map[..])
                .map_err(|e| file_err(&path, format!("not a valid safetensors file: {e}")))?;
            let data_start = 8 + header_len;
            for (tensor_name, info) in meta.tensors() {
                let kind = match info.dtype {
                    safetensors::Dtype::F32 => Kind::Float,
                    safetensors::Dtype::F16 => Kind::Half,
                    safetensors::Dtype::BF16 => Kind::BFloat16,
                    safetensors::Dtype::F64 => Kind::Double,
                    other => return Err(file_err(&path, format!("tensor '{tensor_name}' has unsupported dtype {other:?}"))),
                };
                let (start, end) = info.data_offsets;
                index.insert(
                    tensor_name.clone(),
                    SafetensorsEntry {
                        file: file_idx,
                        kind,
                        shape: info.shape.iter().map(|&d| d as i64).collect(),
                        start: data_start + start,
                        end: data_start + end,
                    },
                );
            }
            paths.push(path);
            maps.push(map);
        }
        Ok(Weights { source: Source::Safetensors { paths, maps, index }, path: dir.to_path_buf(), device, kind })
    }

    /// GGUF files of some architectures name a layer differently from the common llama scheme
    /// (gemma3's sandwich norms); the architecture registers those renames of HF name parts.
    pub fn with_gguf_renames(mut self, extra: &[(&'static str, &'static str)]) -> Self {
        if let Source::Gguf { renames, .. } = &mut self.source {
            renames.extend_from_slice(extra);
        }
        self
    }

    pub fn is_gguf(&self) -> bool {
        matches!(self.source, Source::Gguf { .. })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Gguf { file, renames } => gguf_name(name, renames).is_some_and(|n| file.tensor_info(&n).is_some()),
            Source::Safetensors { index, .. } => index.contains_key(name),
        }
    }

    /// The tensor `name` (HF naming), checked against the expected shape, in f32 on the CPU
    /// (callers transform it, e.g. un-permute, before `place`).
    pub fn get_raw(&self, name: &str, expected: &[i64]) -> Result<Tensor, LoadError> {
        Ok(self.stored(name, expected)?.to_kind(Kind::Float))
    }

    /// A tensor as the file holds it, on the CPU: a safetensors tensor in its stored dtype, a GGUF
    /// tensor dequantized to f32.
    fn stored(&self, name: &str, expected: &[i64]) -> Result<Tensor, LoadError> {
        match &self.source {
            Source::Gguf { file, renames } => {
                let gname = gguf_name(name, renames).ok_or_else(|| self.missing(name))?;
                let info = file.tensor_info(&gname).ok_or_else(|| self.missing(&gname))?;
                let shape = info.shape();
                check_shape(&self.path, &gname, &shape, expected)?;
                let values = file.dequantize(&gname)?;
                Ok(Tensor::from_slice(&values).reshape(&shape))
            }
            Source::Safetensors { paths, maps, index } => {
                let entry = index.get(name).ok_or_else(|| self.missing(name))?;
                check_shape(&paths[entry.file], name, &entry.shape, expected)?;
                let bytes = maps[entry.file]
                    .get(entry.start..entry.end)
                    .ok_or_else(|| file_err(&paths[entry.file], format!("tensor '{name}' lies outside the file")))?;
                Ok(Tensor::f_from_data_size(bytes, &entry.shape, entry.kind)?)
            }
        }
    }

    /// Moves a (possibly transformed) weight to the model's device and compute dtype.
    pub fn place(&self, tensor: Tensor) -> Tensor {
        tensor.to_device(self.device).to_kind(self.kind)
    }

    /// `stored` followed by `place`. A safetensors tensor skips the f32 step: it travels to the
    /// device in its stored dtype and is cast there (the same values: every cast between these
    /// float types rounds through f32), which halves the bytes moved and the peak memory of a
    /// bf16 checkpoint.
    pub fn get(&self, name: &str, expected: &[i64]) -> Result<Tensor, LoadError> {
        Ok(self.place(self.stored(name, expected)?))
    }

    /// Like `get`, but `None` when the checkpoint does not have the tensor.
    pub fn get_opt(&self, name: &str, expected: &[i64]) -> Result<Option<Tensor>, LoadError> {
        if self.contains(name) {
            self.get(name, expected).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Every tensor of a safetensors checkpoint as (HF name, shape), sorted by name; empty for a
    /// GGUF file (whose header lists its own tensors). Reads headers only.
    pub fn checkpoint_tensors(&self) -> Vec<(String, Vec<i64>)> {
        let mut out: Vec<(String, Vec<i64>)> = match &self.source {
            Source::Gguf { .. } => Vec::new(),
            Source::Safetensors { index, .. } => index.iter().map(|(n, e)| (n.clone(), e.shape.clone())).collect(),
        };
        out.sort();
        out
    }

    fn missing(&self, name: &str) -> LoadError {
        LoadError::MissingTensor { path: self.path.clone(), name: name.to_string() }
    }
}

fn check_shape(path: &Path, name: &str, actual: &[i64], expected: &[i64]) -> Result<(), LoadError> {
    if actual == expected {
        Ok(())
    } else {
        Err(LoadError::ShapeMismatch {
            path: path.to_path_buf(),
            name: name.to_string(),
            actual: actual.to_vec(),
            expected: expected.to_vec(),
        })
    }
}

pub(crate) fn file_err(path: &Path, message: impl std::fmt::Display) -> LoadError {
    LoadError::File { path: path.to_path_buf(), message: message.to_string() }
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read: {e}")))
}

/// Translates a Hugging Face tensor name into llama.cpp's GGUF naming.
fn gguf_name(hf: &str, renames: &[(&str, &str)]) -> Option<String> {
    const TOP: [(&str, &str); 3] =
        [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")];
    if let Some((_, g)) = TOP.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    const LAYER: [(&str, &str); 15] = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.qkv_proj", "attn_qkv"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("pre_feedforward_layernorm", "ffn_norm"),
        ("post_feedforward_layernorm", "post_ffw_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("mlp.gate_up_proj", "ffn_up"),
    ];
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, suffix) = rest.rsplit_once('.')?;
    let mapped = renames
        .iter()
        .chain(LAYER.iter())
        .find(|(h, _)| *h == part)
        .map(|(_, g)| *g)?;
    Some(format!("blk.{layer}.{mapped}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `get` casts a safetensors tensor from its stored dtype directly; the values equal the
    /// f32 route's (`get_raw`, then `place`) for every stored and compute dtype.
    #[test]
    fn direct_casts_equal_the_f32_route() {
        let dir = tempfile::tempdir().expect("temp dir");
        tch::manual_seed(7);
        let base = Tensor::randn([5, 3], (Kind::Double, Device::Cpu)) * 1000.0;
        let stored = [("f64", Kind::Double), ("f32", Kind::Float), ("f16", Kind::Half), ("bf16", Kind::BFloat16)];
        let tensors: Vec<(&str, Tensor)> = stored.iter().map(|(name, kind)| (*name, base.to_kind(*kind))).collect();
        Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors")).expect("write");
        for compute in [Kind::Float, Kind::BFloat16, Kind::Half] {
            let w = Weights::from_checkpoint_dir(dir.path(), Device::Cpu, compute).expect("open");
            for (name, _) in stored {
                let direct = w.get(name, &[5, 3]).expect("get");
                let via_f32 = w.place(w.get_raw(name, &[5, 3]).expect("get_raw"));
                assert_eq!(direct.kind(), compute);
                assert!(direct.equal(&via_f32), "{name} -> {compute:?}: the direct cast differs");
            }
            assert!(w.get("f32", &[3, 5]).is_err(), "a wrong shape is an error");
        }
    }
}
