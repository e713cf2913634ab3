//! K-quant block dequantizers (256-element super-blocks), mirroring ggml's `dequantize_row_q*_K`
//! and `gguf.quants` element order and f32 operation order exactly. Layouts: ggml-common.h.
use super::dequant::f16_le;

/// block_q2_K: scales[16] (low nibble scale, high nibble min, per 16 elements), qs[64] (2-bit),
/// d, dmin. Element `128*h + 32*s + l` is bits `2s..2s+2` of `qs[32*h + l]`.
pub(super) fn q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let d = f16_le([b[80], b[81]]);
    let dmin = f16_le([b[82], b[83]]);
    for (g, out) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(scales[g] & 0x0F);
        let ml = dmin * f32::from(scales[g] >> 4);
        let (h, shift, l0) = (g / 8, 2 * ((g % 8) / 2), 16 * (g % 2));
        let q = &qs[32 * h + l0..32 * h + l0 + 16];
        for (o, &q) in out.iter_mut().zip(q) {
            *o = dl * f32::from((q >> shift) & 3) - ml;
        }
    }
}

/// block_q3_K: hmask[32], qs[64] (low 2 bits, arranged as in Q2_K), scales[12] (16 6-bit
/// scales, offset by 32), d. Element `32*k + l` takes its high bit from bit `k` of `hmask[l]`;
/// a *cleared* bit subtracts 4.
pub(super) fn q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16_le([b[108], b[109]]);
    for (g, out) in y.chunks_exact_mut(16).enumerate() {
        let low = if g < 8 { sc[g] & 0x0F } else { sc[g - 8] >> 4 };
        let high = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
        let dl = d * f32::from((low | high << 4) as i8 - 32);
        let (h, shift, l0) = (g / 8, 2 * ((g % 8) / 2), 16 * (g % 2));
        let hbit = g / 2; // 32-element row index k
        let q = &qs[32 * h + l0..32 * h + l0 + 16];
        let m = &hmask[l0..l0 + 16];
        for ((o, &q), &m) in out.iter_mut().zip(q).zip(m) {
            let low2 = ((q >> shift) & 3) as i8;
            let minus4 = if (m >> hbit) & 1 == 0 { 4 } else { 0 };
            *o = dl * f32::from(low2 - minus4);
        }
    }
}

/// The 8 pairs of 6-bit (scale, min) of Q4_K/Q5_K, packed in 12 bytes (ggml `get_scale_min_k4`).
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// block_q4_K: d, dmin, scales[12], qs[128]. Sub-block `2c + h` (32 elements) is nibble `h` of
/// `qs[32c..32c + 32]`.
pub(super) fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = f16_le([b[0], b[1]]);
    let dmin = f16_le([b[2], b[3]]);
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (j, out) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
        let shift = 4 * (j % 2);
        let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (o, &q) in out.iter_mut().zip(q) {
            *o = dl * f32::from((q >> shift) & 0x0F) - ml;
        }
    }
}

/// block_q5_K: Q4_K plus qh[32]: bit `j` of `qh[l]` is the fifth bit of sub-block `j`, lane `l`.
pub(super) fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = f16_le([b[0], b[1]]);
    let dmin = f16_le([b[2], b[3]]);
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (j, out) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
        let shift = 4 * (j % 2);
        let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for ((o, &q), &h) in out.iter_mut().zip(q).zip(qh) {
            let v = ((q >> shift) & 0x0F) | ((h >> j) & 1) << 4;
            *o = dl * f32::from(v) - ml;
        }
    }
}

/// block_q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (i8, per 16 elements), d.
/// In each 128-element half `c`, element `32s + l` has low bits from nibble `s / 2` of
/// `ql[64c + 32(s % 2) + l]` and high bits `2s..2s+2` of `qh[32c + l]`; values are offset by 32.
pub(super) fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_le([b[208], b[209]]);
    for (g, out) in y.chunks_exact_mut(16).enumerate() {
        let dl = d * f32::from(scales[g] as i8);
        let (c, s, l0) = (g / 8, (g % 8) / 2, 16 * (g % 2));
        let lo = &ql[64 * c + 32 * (s % 2) + l0..][..16];
        let hi = &qh[32 * c + l0..][..16];
        let (lo_shift, hi_shift) = (4 * (s / 2), 2 * s);
        for ((o, &lo), &hi) in out.iter_mut().zip(lo).zip(hi) {
            let q = ((lo >> lo_shift) & 0x0F) | ((hi >> hi_shift) & 3) << 4;
            *o = dl * f32::from(q as i8 - 32);
        }
    }
}
