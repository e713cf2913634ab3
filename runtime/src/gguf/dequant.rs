//! Dequantization of ggml tensor data to f32, bit-identical to ggml's `dequantize_row_*` and the
//! Python `gguf.quants.dequantize` (both compute in f32 with the operation order mirrored here:
//! f16 scales widened to f32, then `d * q` or `d * q + m` / `d * q - m`, never fused).
//!
//! Each type is a function over one block (`&[u8; TYPE_SIZE]` -> `&mut [f32; BLOCK_SIZE]`) with
//! fixed-size loops the compiler can vectorize; large tensors are split across a few threads.
use std::path::Path;

use half::f16;

use super::dequant_k::{q2_k, q3_k, q4_k, q5_k, q6_k};
use super::{GgmlType, GgufError};

/// Below this many elements a tensor is dequantized on the calling thread: spawning costs more
/// than it saves (norm weights, biases).
const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;
/// The target machines have few cores, and memory bandwidth stops scaling beyond a handful.
const MAX_THREADS: usize = 4;

/// Dequantizes `n_elements` values of type `ty` from `data`, which must hold exactly the bytes
/// of those elements. Errors name no file; `GgufFile::dequantize` reports the file and tensor.
pub fn dequantize(ty: GgmlType, data: &[u8], n_elements: usize) -> Result<Vec<f32>, GgufError> {
    dequantize_tensor(ty, data, n_elements, Path::new("<memory>"), "<unnamed>")
}

pub(crate) fn dequantize_tensor(
    ty: GgmlType,
    data: &[u8],
    n_elements: usize,
    path: &Path,
    tensor: &str,
) -> Result<Vec<f32>, GgufError> {
    let invalid = |problem: String| GgufError::InvalidTensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        problem,
    };
    let block = ty.block_size();
    if !n_elements.is_multiple_of(block) {
        return Err(invalid(format!(
            "{n_elements} elements is not a multiple of the {} block size {block}",
            ty.name()
        )));
    }
    let expected = (n_elements / block).checked_mul(ty.type_size());
    if expected != Some(data.len()) {
        return Err(invalid(format!(
            "{} bytes of data, but {n_elements} {} elements need {}",
            data.len(),
            ty.name(),
            expected.map_or_else(|| "more than fit in memory".to_string(), |n| n.to_string())
        )));
    }

    let mut out = vec![0f32; n_elements];
    match ty {
        GgmlType::F32 => run_blocks(data, &mut out, |b: &[u8; 4], y: &mut [f32; 1]| {
            y[0] = f32::from_le_bytes(*b)
        }),
        GgmlType::F16 => run_blocks(data, &mut out, |b: &[u8; 2], y: &mut [f32; 1]| {
            y[0] = f16_le(*b)
        }),
        // bf16 is the top half of an f32.
        GgmlType::BF16 => run_blocks(data, &mut out, |b: &[u8; 2], y: &mut [f32; 1]| {
            y[0] = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16)
        }),
        GgmlType::Q4_0 => run_blocks(data, &mut out, q4_0),
        GgmlType::Q4_1 => run_blocks(data, &mut out, q4_1),
        GgmlType::Q5_0 => run_blocks(data, &mut out, q5_0),
        GgmlType::Q5_1 => run_blocks(data, &mut out, q5_1),
        GgmlType::Q8_0 => run_blocks(data, &mut out, q8_0),
        GgmlType::Q2_K => run_blocks(data, &mut out, q2_k),
        GgmlType::Q3_K => run_blocks(data, &mut out, q3_k),
        GgmlType::Q4_K => run_blocks(data, &mut out, q4_k),
        GgmlType::Q5_K => run_blocks(data, &mut out, q5_k),
        GgmlType::Q6_K => run_blocks(data, &mut out, q6_k),
        _ => {
            return Err(GgufError::UnsupportedType {
                path: path.to_path_buf(),
                ty,
                tensor: tensor.to_string(),
            })
        }
    }
    Ok(out)
}

/// Applies `f` to every block; the caller has checked that `data` holds exactly
/// `out.len() / BS` blocks of `TS` bytes. Generic over `F` (not a fn pointer) so each block
/// function is inlined into its own loop.
fn run_blocks<const TS: usize, const BS: usize, F>(data: &[u8], out: &mut [f32], f: F)
where
    F: Fn(&[u8; TS], &mut [f32; BS]) + Copy + Send,
{
    let threads = if out.len() < PARALLEL_MIN_ELEMENTS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
    };
    if threads <= 1 {
        return blocks_serial(data, out, f);
    }
    let blocks_per_thread = (out.len() / BS).div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = data
            .chunks(blocks_per_thread * TS)
            .zip(out.chunks_mut(blocks_per_thread * BS));
        // The calling thread takes the first chunk instead of idling in the join.
        let first = chunks.next();
        for (d, o) in chunks {
            scope.spawn(move || blocks_serial(d, o, f));
        }
        if let Some((d, o)) = first {
            blocks_serial(d, o, f);
        }
    });
}

fn blocks_serial<const TS: usize, const BS: usize>(
    data: &[u8],
    out: &mut [f32],
    f: impl Fn(&[u8; TS], &mut [f32; BS]),
) {
    for (b, y) in data.chunks_exact(TS).zip(out.chunks_exact_mut(BS)) {
        // chunks_exact guarantees the lengths; the conversions cannot fail.
        if let (Ok(b), Ok(y)) = (b.try_into(), y.try_into()) {
            f(b, y);
        }
    }
}

/// An f16 stored little-endian, widened exactly to f32.
#[inline(always)]
pub(super) fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// Block layouts below are ggml-common.h's `block_q*`; the `d`/`m` fields are f16.
/// Low nibbles hold elements 0..16, high nibbles 16..32.
fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_le([b[0], b[1]]);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * (i32::from(q & 0x0F) - 8) as f32;
        y[j + 16] = d * (i32::from(q >> 4) - 8) as f32;
    }
}

fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_le([b[0], b[1]]);
    let m = f16_le([b[2], b[3]]);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = d * f32::from(q & 0x0F) + m;
        y[j + 16] = d * f32::from(q >> 4) + m;
    }
}

/// Bit `j` of the little-endian u32 `qh` is the fifth bit of element `j`.
fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_le([b[0], b[1]]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let q = b[6 + j];
        let lo = u32::from(q & 0x0F) | ((qh >> j) & 1) << 4;
        let hi = u32::from(q >> 4) | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (lo as i32 - 16) as f32;
        y[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_le([b[0], b[1]]);
    let m = f16_le([b[2], b[3]]);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let q = b[8 + j];
        let lo = u32::from(q & 0x0F) | ((qh >> j) & 1) << 4;
        let hi = u32::from(q >> 4) | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * lo as f32 + m;
        y[j + 16] = d * hi as f32 + m;
    }
}

fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_le([b[0], b[1]]);
    for j in 0..32 {
        y[j] = f32::from(b[2 + j] as i8) * d;
    }
}
