//! Reader for GGUF model files (llama.cpp's format): metadata, tensor infos, and memory-mapped
//! tensor data, dequantized to f32 on request.
//!
//! Every value read from the file is bounds-checked and every size is computed with checked
//! arithmetic, so a corrupt or hostile file yields a `GgufError`, never a panic. Tensor data
//! ranges are validated when the file is opened: a truncated download fails at `open`.
pub mod dequant;
mod dequant_k;
mod header;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use types::{GgmlType, MetaValue, TensorInfo};

/// Errors name the file and the problem in one line, since they often end up as the whole CLI
/// output.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a GGUF file (magic {magic:#010x})", path.display())]
    NotGguf { path: PathBuf, magic: u32 },
    #[error("{}: unsupported GGUF version {version} (versions 2 and 3 are supported)", path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{}: truncated: {what} needs bytes {start}..{end} but the file has {len}", path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("{}: malformed GGUF: {problem}", path.display())]
    Malformed { path: PathBuf, problem: String },
    #[error("{}: unknown ggml quantization type {ty} for tensor '{tensor}'", path.display())]
    UnknownType {
        path: PathBuf,
        ty: u32,
        tensor: String,
    },
    #[error("{}: tensor '{tensor}': {problem}", path.display())]
    InvalidTensor {
        path: PathBuf,
        tensor: String,
        problem: String,
    },
    #[error("{}: tensor '{tensor}' has ggml type {}, which cannot be dequantized yet", path.display(), ty.name())]
    UnsupportedType {
        path: PathBuf,
        ty: GgmlType,
        tensor: String,
    },
    #[error("{}: tensor '{name}' not found", path.display())]
    TensorNotFound { path: PathBuf, name: String },
    #[error("{}: metadata key '{key}' {problem}", path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// An open, memory-mapped GGUF file (versions 2 and 3).
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Maps the file and parses and validates its header and tensor infos.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private to this process. As with every mmap-based
        // model loader, the file must not be truncated or rewritten while it is open; all reads
        // are bounds-checked against the length seen here.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = header::parse(&mmap, path)?;
        let by_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        tracing::debug!(
            path = %path.display(),
            version = header.version,
            tensors = header.tensors.len(),
            metadata_keys = header.metadata.len(),
            architecture = header.metadata.get("general.architecture").and_then(MetaValue::as_str).unwrap_or("?"),
            alignment = header.alignment,
            data_offset = header.data_offset,
            bytes = mmap.len(),
            "opened GGUF file"
        );
        Ok(GgufFile {
            path: path.to_path_buf(),
            mmap,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor offset (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where tensor data starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.typed(key, "a string", MetaValue::as_str)
    }

    /// Any integer type with a non-negative value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.typed(key, "a non-negative integer", MetaValue::as_u64)
    }

    /// Any numeric type.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.typed(key, "a number", MetaValue::as_f64)
    }

    /// `general.architecture`, e.g. "llama", "qwen2", "gemma3".
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The raw (possibly quantized) bytes of a tensor, borrowed from the mapping.
    pub fn tensor_data(&self, name: &str) -> Result<&[u8], GgufError> {
        let info = self.find(name)?;
        // Validated at open; recomputed with checks so a logic error cannot become a panic.
        let range = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some(start..start.checked_add(info.byte_size())?));
        range
            .and_then(|r| {
                self.mmap
                    .get(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?)
            })
            .ok_or_else(|| GgufError::InvalidTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                problem: "data range lies outside the file".to_string(),
            })
    }

    /// The tensor as f32 values in row-major PyTorch order (`info.shape()`), which is also the
    /// GGUF storage order.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.find(name)?;
        let data = self.tensor_data(name)?;
        let n_elements =
            usize::try_from(info.n_elements()).map_err(|_| GgufError::InvalidTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                problem: format!("{} elements do not fit in memory", info.n_elements()),
            })?;
        dequant::dequantize_tensor(info.ggml_type, data, n_elements, &self.path, name)
    }

    fn find(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::TensorNotFound {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        convert: impl Fn(&'a MetaValue) -> Option<T>,
    ) -> Result<T, GgufError> {
        let problem = match self.metadata.get(key) {
            None => "is missing".to_string(),
            Some(value) => match convert(value) {
                Some(v) => return Ok(v),
                None => format!("is {}, expected {expected}", value.describe()),
            },
        };
        Err(GgufError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            problem,
        })
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}
