//! Malformed input: every case must be a clean error naming the file, never a panic.
use runtime::gguf::{GgufError, GgufFile};

use super::fixture;

/// Writes `bytes` to a fresh temp file and returns the open error.
fn open_err(bytes: &[u8]) -> (tempfile::TempDir, GgufError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = GgufFile::open(&path).expect_err("malformed file must not open");
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
    (dir, err)
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture()).unwrap()
}

/// Byte offset just past the header string `s` (a key or tensor name) in the fixture.
fn after(bytes: &[u8], s: &str) -> usize {
    bytes
        .windows(s.len())
        .position(|w| w == s.as_bytes())
        .unwrap_or_else(|| panic!("{s} not in fixture"))
        + s.len()
}

#[test]
fn wrong_magic() {
    let mut bytes = fixture_bytes();
    bytes[..4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    assert!(
        err.to_string()
            .ends_with("bad.gguf: not a GGUF file (magic 0x12345678)"),
        "{err}"
    );
    let (_dir, err) = open_err(b"");
    assert!(
        err.to_string()
            .contains("truncated: the GGUF magic needs bytes 0..4 but the file has 0"),
        "{err}"
    );
}

#[test]
fn truncated_file_fails_at_open() {
    let bytes = fixture_bytes();
    let half = bytes.len() / 2;
    let (_dir, err) = open_err(&bytes[..half]);
    assert!(matches!(err, GgufError::Truncated { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("truncated: tensor 't.") && msg.contains(&format!("but the file has {half}")),
        "{msg}"
    );
}

#[test]
fn truncated_header_at_every_length_fails_cleanly() {
    let bytes = fixture_bytes();
    let header_end = GgufFile::open(&fixture()).unwrap().data_offset() as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    for len in 0..header_end {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let msg = GgufFile::open(&path)
            .expect_err("cut header must not open")
            .to_string();
        assert!(
            msg.contains("cut.gguf: truncated: ") || msg.contains("cut.gguf: malformed GGUF: "),
            "{len}: {msg}"
        );
    }
}

#[test]
fn unsupported_version() {
    let mut bytes = fixture_bytes();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    assert!(
        err.to_string().contains("unsupported GGUF version 1"),
        "{err}"
    );

    // v2 has the same layout as v3 and must read identically.
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let v2 = GgufFile::open(&path).unwrap();
    assert_eq!(v2.version(), 2);
    let v3 = GgufFile::open(&fixture()).unwrap();
    assert_eq!(
        v2.dequantize("t.q6_k").unwrap(),
        v3.dequantize("t.q6_k").unwrap()
    );
}

#[test]
fn unknown_quant_type() {
    let mut bytes = fixture_bytes();
    // tensor info: name, n_dims (u32) = 2, dims (2 x u64), type (u32), offset (u64)
    let type_at = after(&bytes, "t.q4_0") + 4 + 16;
    assert_eq!(bytes[type_at..type_at + 4], 2u32.to_le_bytes(), "Q4_0's id");
    bytes[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    assert!(
        err.to_string()
            .ends_with("bad.gguf: unknown ggml quantization type 99 for tensor 't.q4_0'"),
        "{err}"
    );
}

#[test]
fn too_many_dims() {
    let mut bytes = fixture_bytes();
    let n_dims_at = after(&bytes, "t.f32_4d");
    assert_eq!(bytes[n_dims_at..n_dims_at + 4], 4u32.to_le_bytes());
    bytes[n_dims_at..n_dims_at + 4].copy_from_slice(&5u32.to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    assert!(
        err.to_string()
            .ends_with("bad.gguf: tensor 't.f32_4d': n_dims is 5, GGUF allows at most 4"),
        "{err}"
    );
}

#[test]
fn absurd_string_length() {
    let mut bytes = fixture_bytes();
    // The first metadata key's length follows magic, version and the two counts.
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    let msg = err.to_string();
    assert!(
        msg.contains(
            "malformed GGUF: metadata key #0: string length 18446744073709551615 exceeds the"
        ),
        "{msg}"
    );

    let mut bytes = fixture_bytes();
    // general.architecture's value: type (u32 = 8, string), then its u64 length.
    let len_at = after(&bytes, "general.architecture") + 4;
    bytes[len_at..len_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    assert!(
        err.to_string()
            .contains("metadata key 'general.architecture': string length 1099511627776"),
        "{err}"
    );
}

#[test]
fn absurd_counts_and_bad_alignment() {
    let mut bytes = fixture_bytes();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    assert!(
        err.to_string()
            .contains("malformed GGUF: tensor count 18446744073709551615 is impossible"),
        "{err}"
    );

    let mut bytes = fixture_bytes();
    // test.arr_u8: type ARRAY (u32), element type (u32), then the u64 length.
    let len_at = after(&bytes, "test.arr_u8") + 8;
    bytes[len_at..len_at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    assert!(
        err.to_string()
            .contains("metadata key 'test.arr_u8': array length 9223372036854775807 is impossible"),
        "{err}"
    );

    let mut bytes = fixture_bytes();
    let value_at = after(&bytes, "general.alignment") + 4;
    bytes[value_at..value_at + 4].copy_from_slice(&48u32.to_le_bytes());
    let (_dir, err) = open_err(&bytes);
    assert!(
        err.to_string()
            .contains("general.alignment is u32 48, expected a power of two"),
        "{err}"
    );
}

#[test]
fn tensor_not_found() {
    let file = GgufFile::open(&fixture()).unwrap();
    assert!(file.tensor_info("nope").is_none());
    for err in [
        file.tensor_data("nope").unwrap_err(),
        file.dequantize("nope").unwrap_err(),
    ] {
        assert!(
            err.to_string()
                .ends_with("all_types.gguf: tensor 'nope' not found"),
            "{err}"
        );
    }
}

/// Random corruption of the header (xorshift, fixed seed): open and dequantize may fail but
/// must not panic or allocate absurdly.
#[test]
fn fuzzed_headers_never_panic() {
    let bytes = fixture_bytes();
    let header_end = GgufFile::open(&fixture()).unwrap().data_offset() as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.gguf");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..1500 {
        let mut corrupt = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % header_end as u64) as usize;
            corrupt[at] = match next() % 3 {
                0 => next() as u8,
                1 => 0xFF,
                _ => corrupt[at] ^ (1 << (next() % 8)),
            };
        }
        std::fs::write(&path, &corrupt).unwrap();
        if let Ok(file) = GgufFile::open(&path) {
            for t in file.tensors() {
                let _ = file.dequantize(&t.name);
            }
        }
    }
}
