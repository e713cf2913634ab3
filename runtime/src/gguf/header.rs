//! Parsing and validation of the GGUF header: magic, version, metadata, tensor infos.
//!
//! Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count, the
//! metadata key/value pairs, the tensor infos, padding to the alignment, then the data section.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::{GgmlType, GgufError, MetaValue, TensorInfo};

const MAGIC: u32 = u32::from_le_bytes(*b"GGUF");
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Real files nest arrays at most one level; the cap keeps fuzzed input off the stack limit.
const MAX_ARRAY_DEPTH: u32 = 8;
/// Smallest possible encodings, used to reject counts that cannot fit in the bytes left before
/// allocating anything for them: a metadata pair is a key length, a type and at least one byte;
/// a tensor info is a name length, n_dims, a type and an offset.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

pub(super) struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

pub(super) fn parse(buf: &[u8], path: &Path) -> Result<Header, GgufError> {
    let mut r = Reader { buf, pos: 0, path };
    let magic = u32::from_le_bytes(r.array("the GGUF magic")?);
    if magic != MAGIC {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            magic,
        });
    }
    let version = u32::from_le_bytes(r.array("the GGUF version")?);
    // v1 used 32-bit counts and lengths; v2 and v3 share the layout read here.
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the metadata count")?;
    r.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, "tensor count")?;
    r.check_count(n_kv, MIN_KV_BYTES, "metadata count")?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.utf8(&format!("metadata key #{i}"))?;
        let ctx = format!("metadata key '{key}'");
        let ty = u32::from_le_bytes(r.array(&ctx)?);
        let value = r.value(ty, &ctx, 0)?;
        if metadata.insert(key, value).is_some() {
            return Err(r.malformed(format!("{ctx} appears twice")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => {
                return Err(r.malformed(format!(
                    "general.alignment is {}, expected a power of two",
                    v.describe()
                )))
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let info = r.tensor_info(i, alignment)?;
        if !names.insert(info.name.clone()) {
            return Err(r.malformed(format!("tensor '{}' appears twice", info.name)));
        }
        tensors.push(info);
    }

    let len = buf.len() as u64;
    let data_offset = align_up(r.pos as u64, alignment)
        .ok_or_else(|| r.malformed("data section offset overflows".to_string()))?;
    for t in &tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.byte_size()));
        match (start, end) {
            (Some(_), Some(end)) if end <= len => {}
            (Some(start), Some(end)) => {
                return Err(GgufError::Truncated {
                    path: path.to_path_buf(),
                    what: format!("tensor '{}'", t.name),
                    start,
                    end,
                    len,
                })
            }
            _ => {
                return Err(r.malformed(format!(
                    "tensor '{}' data offset {} overflows",
                    t.name, t.offset
                )))
            }
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    Some(pos.checked_add(alignment - 1)? / alignment * alignment)
}

/// A cursor over the mapped file; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos.min(self.buf.len())) as u64
    }

    fn path(&self) -> PathBuf {
        self.path.to_path_buf()
    }

    fn malformed(&self, problem: String) -> GgufError {
        GgufError::Malformed {
            path: self.path(),
            problem,
        }
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let start = self.pos as u64;
        let end = start.saturating_add(n);
        let slice = usize::try_from(end)
            .ok()
            .and_then(|e| self.buf.get(self.pos..e));
        match slice {
            Some(s) => {
                self.pos += s.len();
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                path: self.path(),
                what: what.to_string(),
                start,
                end,
                len: self.buf.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let bytes = self.bytes(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Rejects a count of items that cannot possibly fit in the rest of the file.
    fn check_count(&self, count: u64, min_item_bytes: u64, what: &str) -> Result<(), GgufError> {
        if count > self.remaining() / min_item_bytes {
            return Err(self.malformed(format!(
                "{what} {count} is impossible with {} bytes left in the file",
                self.remaining()
            )));
        }
        Ok(())
    }

    /// A length-prefixed byte string.
    fn string_bytes(&mut self, what: &str) -> Result<&'a [u8], GgufError> {
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(self.malformed(format!(
                "{what}: string length {len} exceeds the {} bytes left in the file",
                self.remaining()
            )));
        }
        self.bytes(len, what)
    }

    /// Keys and tensor names must be valid UTF-8: they are looked up by name.
    fn utf8(&mut self, what: &str) -> Result<String, GgufError> {
        let bytes = self.string_bytes(what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.malformed(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, ctx: &str, depth: u32) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(ctx)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(ctx)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(ctx)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(ctx)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(ctx)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(ctx)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(ctx)?)),
            7 => MetaValue::Bool(u8::from_le_bytes(self.array(ctx)?) != 0),
            // Lossy: some converters wrote raw bytes into vocabulary strings, and a replacement
            // character in one token beats refusing the whole model.
            8 => MetaValue::String(String::from_utf8_lossy(self.string_bytes(ctx)?).into_owned()),
            9 => self.meta_array(ctx, depth)?,
            10 => MetaValue::U64(u64::from_le_bytes(self.array(ctx)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(ctx)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(ctx)?)),
            _ => return Err(self.malformed(format!("{ctx} has unknown value type {ty}"))),
        })
    }

    fn meta_array(&mut self, ctx: &str, depth: u32) -> Result<MetaValue, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.malformed(format!(
                "{ctx} nests arrays deeper than {MAX_ARRAY_DEPTH} levels"
            )));
        }
        let elem_ty = u32::from_le_bytes(self.array(ctx)?);
        let count = self.u64(ctx)?;
        let min_elem_bytes = match elem_ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 4 + 8,
            _ => {
                return Err(
                    self.malformed(format!("{ctx} is an array of unknown value type {elem_ty}"))
                )
            }
        };
        self.check_count(count, min_elem_bytes, &format!("{ctx}: array length"))?;
        let mut items = Vec::with_capacity(count as usize);
        for _ in 0..count {
            items.push(self.value(elem_ty, ctx, depth + 1)?);
        }
        Ok(MetaValue::Array(items))
    }

    fn tensor_info(&mut self, index: u64, alignment: u64) -> Result<TensorInfo, GgufError> {
        let name = self.utf8(&format!("tensor info #{index}"))?;
        let ctx = format!("tensor info '{name}'");
        let n_dims = u32::from_le_bytes(self.array(&ctx)?);
        if n_dims > MAX_DIMS {
            return Err(GgufError::InvalidTensor {
                path: self.path(),
                tensor: name,
                problem: format!("n_dims is {n_dims}, GGUF allows at most {MAX_DIMS}"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&ctx)?);
        }
        let ty_id = u32::from_le_bytes(self.array(&ctx)?);
        let offset = self.u64(&ctx)?;
        let Some(ggml_type) = GgmlType::from_u32(ty_id) else {
            return Err(GgufError::UnknownType {
                path: self.path(),
                ty: ty_id,
                tensor: name,
            });
        };
        let invalid = |problem: String| GgufError::InvalidTensor {
            path: self.path(),
            tensor: name.clone(),
            problem,
        };

        // Shapes and sizes are i64 in ggml and PyTorch.
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| invalid(format!("dims {dims:?} overflow the element count")))?;
        let block = ggml_type.block_size() as u64;
        let row = dims.first().copied().unwrap_or(1);
        if row % block != 0 {
            return Err(invalid(format!(
                "row length {row} is not a multiple of the {} block size {block}",
                ggml_type.name()
            )));
        }
        (n_elements / block)
            .checked_mul(ggml_type.type_size() as u64)
            .ok_or_else(|| {
                invalid(format!(
                    "byte size of {n_elements} {} elements overflows",
                    ggml_type.name()
                ))
            })?;
        if offset % alignment != 0 {
            return Err(invalid(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        })
    }
}
