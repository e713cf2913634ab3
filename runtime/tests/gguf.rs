//! GGUF reader and dequantization, checked against the Python `gguf` package: the fixtures in
//! tests/fixtures/gguf are written by scripts/make_gguf_fixture.py.
use std::path::{Path, PathBuf};

use runtime::gguf::{dequant, GgmlType, GgufError, GgufFile, MetaValue};
use serde_json::Value;

// Not a separate test target: it shares this file's fixture helpers.
#[path = "gguf/malformed.rs"]
mod malformed;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn fixture() -> PathBuf {
    fixture_dir().join("all_types.gguf")
}

fn read_json(name: &str) -> Value {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The models downloaded by scripts/setup. Missing models fail the test rather than skip it, so
/// a green run always means the real files were checked.
fn models_dir() -> PathBuf {
    let dir = std::env::var_os("TCOMM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"));
    assert!(
        dir.is_dir(),
        "models folder {} not found: run scripts/setup to download the test models (or set TCOMM_MODELS)",
        dir.display()
    );
    dir
}

fn ggml_type(name: &str) -> GgmlType {
    (0..64)
        .filter_map(GgmlType::from_u32)
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no ggml type {name}"))
}

/// Asserts bit equality (so -0.0 vs 0.0 or a different NaN would fail too).
fn assert_bits_eq(name: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{name}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(
            a.to_bits(),
            e.to_bits(),
            "{name}[{i}]: got {a:e}, gguf.quants gives {e:e}"
        );
    }
}

#[test]
fn all_types_dequantize_bit_exact_to_gguf_package() {
    let index = read_json("all_types.expected.json");
    let bin = std::fs::read(fixture_dir().join("all_types.expected.bin")).unwrap();
    let expected_all: Vec<f32> = bin
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let file = GgufFile::open(&fixture()).unwrap();
    let entries = index["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), entries.len());

    let mut checked_types = std::collections::BTreeSet::new();
    for (info, entry) in file.tensors().iter().zip(entries) {
        let name = entry["name"].as_str().unwrap();
        assert_eq!(info.name, name, "tensors must come back in file order");
        assert_eq!(
            info.ggml_type.name(),
            entry["ggml_type"].as_str().unwrap(),
            "{name}"
        );
        let shape: Vec<i64> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        assert_eq!(info.shape(), shape, "{name}");
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        assert_eq!(info.dims, dims, "{name}");
        assert_eq!(
            info.n_elements(),
            shape.iter().product::<i64>() as u64,
            "{name}"
        );
        assert_eq!(
            file.tensor_data(name).unwrap().len() as u64,
            info.byte_size(),
            "{name}"
        );
        assert_eq!(
            info.offset % 64,
            0,
            "{name}: offsets follow general.alignment"
        );
        let Some(offset) = entry.get("offset").and_then(Value::as_u64) else {
            continue;
        };
        let len = entry["len"].as_u64().unwrap() as usize;
        let expected = &expected_all[offset as usize..offset as usize + len];

        assert_bits_eq(name, &file.dequantize(name).unwrap(), expected);
        let free =
            dequant::dequantize(info.ggml_type, file.tensor_data(name).unwrap(), len).unwrap();
        assert_bits_eq(name, &free, expected);
        checked_types.insert(info.ggml_type.name());
    }
    let want = [
        "BF16", "F16", "F32", "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K",
        "Q6_K", "Q8_0",
    ];
    assert_eq!(checked_types.into_iter().collect::<Vec<_>>(), want);
}

#[test]
fn unsupported_type_is_reported_with_type_and_tensor() {
    let file = GgufFile::open(&fixture()).unwrap();
    assert_eq!(
        file.tensor_info("t.q8_k_unsupported").unwrap().ggml_type,
        GgmlType::Q8_K
    );
    let err = file.dequantize("t.q8_k_unsupported").unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::UnsupportedType {
                ty: GgmlType::Q8_K,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("all_types.gguf")
            && msg.contains("Q8_K")
            && msg.contains("'t.q8_k_unsupported'"),
        "{msg}"
    );
}

#[test]
fn dequantize_rejects_wrong_sizes() {
    let msg = dequant::dequantize(GgmlType::Q4_0, &[0u8; 17], 32)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("17 bytes of data, but 32 Q4_0 elements need 18"),
        "{msg}"
    );
    let msg = dequant::dequantize(GgmlType::Q4_K, &[0u8; 144], 255)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("255 elements is not a multiple of the Q4_K block size 256"),
        "{msg}"
    );
    assert_eq!(
        dequant::dequantize(GgmlType::Q8_0, &[], 0).unwrap(),
        Vec::<f32>::new()
    );
}

fn meta_from_json(v: &Value) -> MetaValue {
    let int = || v["value"].as_i64().unwrap();
    let uint = || v["value"].as_u64().unwrap();
    let bits = || v["bits"].as_u64().unwrap();
    match v["type"].as_str().unwrap() {
        "u8" => MetaValue::U8(uint() as u8),
        "i8" => MetaValue::I8(int() as i8),
        "u16" => MetaValue::U16(uint() as u16),
        "i16" => MetaValue::I16(int() as i16),
        "u32" => MetaValue::U32(uint() as u32),
        "i32" => MetaValue::I32(int() as i32),
        "u64" => MetaValue::U64(uint()),
        "i64" => MetaValue::I64(int()),
        "f32" => MetaValue::F32(f32::from_bits(bits() as u32)),
        "f64" => MetaValue::F64(f64::from_bits(bits())),
        "bool" => MetaValue::Bool(v["value"].as_bool().unwrap()),
        "string" => MetaValue::String(v["value"].as_str().unwrap().to_string()),
        "array" => MetaValue::Array(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(meta_from_json)
                .collect(),
        ),
        other => panic!("unknown type {other} in fixture JSON"),
    }
}

#[test]
fn metadata_round_trips_with_types() {
    let index = read_json("all_types.expected.json");
    let expected = index["metadata"].as_object().unwrap();
    let file = GgufFile::open(&fixture()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.data_offset() % 64, 0);
    for (key, value) in expected {
        assert_eq!(
            file.get(key),
            Some(&meta_from_json(value)),
            "metadata key {key}"
        );
    }
    assert_eq!(file.metadata().len(), expected.len(), "no extra keys");

    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_str("test.string").unwrap(), "héllo, GGUF ✓ 世界");
    assert_eq!(file.get_u64("test.u64").unwrap(), (1u64 << 63) + 5);
    assert_eq!(file.get_u64("test.u8").unwrap(), 200);
    assert_eq!(file.get_f64("test.i32").unwrap(), -2_000_000_000.0);
    assert_eq!(file.get_f64("test.f32").unwrap(), f64::from(1234.5678f32));
    assert_eq!(
        file.get("test.bool_true").and_then(MetaValue::as_bool),
        Some(true)
    );
    let nested = file
        .get("test.arr_nested")
        .and_then(MetaValue::as_array)
        .unwrap();
    assert_eq!(nested[2].as_array().unwrap()[1], MetaValue::I32(5));

    let msg = file.get_u64("test.i8").unwrap_err().to_string();
    assert!(
        msg.contains(
            "all_types.gguf: metadata key 'test.i8' is i8 -100, expected a non-negative integer"
        ),
        "{msg}"
    );
    let msg = file.get_str("test.u8").unwrap_err().to_string();
    assert!(
        msg.contains("metadata key 'test.u8' is u8 200, expected a string"),
        "{msg}"
    );
    let msg = file.get_f64("no.such.key").unwrap_err().to_string();
    assert!(
        msg.contains("all_types.gguf: metadata key 'no.such.key' is missing"),
        "{msg}"
    );
}

#[test]
fn ggml_type_table_matches_gguf_package() {
    let index = read_json("all_types.expected.json");
    for (name, sizes) in index["ggml_sizes"].as_object().unwrap() {
        let id = sizes["id"].as_u64().unwrap() as u32;
        let ty = GgmlType::from_u32(id).unwrap_or_else(|| panic!("type {name} ({id}) unknown"));
        assert_eq!((ty.name(), ty.id()), (name.as_str(), id));
        assert_eq!(
            ty.block_size() as u64,
            sizes["block_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            ty.type_size() as u64,
            sizes["type_size"].as_u64().unwrap(),
            "{name}"
        );
    }
    for retired in [4, 5, 31, 32, 33, 36, 37, 38, 99, u32::MAX] {
        assert_eq!(GgmlType::from_u32(retired), None);
    }
}

fn gguf_type_name(v: &MetaValue) -> &'static str {
    match v {
        MetaValue::U8(_) => "UINT8",
        MetaValue::I8(_) => "INT8",
        MetaValue::U16(_) => "UINT16",
        MetaValue::I16(_) => "INT16",
        MetaValue::U32(_) => "UINT32",
        MetaValue::I32(_) => "INT32",
        MetaValue::U64(_) => "UINT64",
        MetaValue::I64(_) => "INT64",
        MetaValue::F32(_) => "FLOAT32",
        MetaValue::F64(_) => "FLOAT64",
        MetaValue::Bool(_) => "BOOL",
        MetaValue::String(_) => "STRING",
        MetaValue::Array(_) => "ARRAY",
    }
}

fn check_real_model(file_name: &str) {
    let all = read_json("real_tensors.json");
    let expected = all["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == file_name)
        .unwrap();
    let path = models_dir().join(file_name);
    assert!(
        path.is_file(),
        "{} not found: run scripts/setup to download the test models",
        path.display()
    );
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(
        file.data_offset(),
        expected["data_offset"].as_u64().unwrap()
    );

    let tensors = expected["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), tensors.len());
    for (info, t) in file.tensors().iter().zip(tensors) {
        assert_eq!(info.name, t["name"].as_str().unwrap());
        assert_eq!(
            info.ggml_type.name(),
            t["ggml_type"].as_str().unwrap(),
            "{}",
            info.name
        );
        let dims: Vec<u64> = t["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(info.dims, dims, "{}", info.name);
        assert_eq!(info.offset, t["offset"].as_u64().unwrap(), "{}", info.name);
    }

    let metadata = expected["metadata"].as_object().unwrap();
    assert_eq!(file.metadata().len(), metadata.len());
    for (key, want) in metadata {
        let got = file
            .get(key)
            .unwrap_or_else(|| panic!("{file_name}: missing {key}"));
        if want["type"] == "array" && want.get("len").is_some() {
            let items = got
                .as_array()
                .unwrap_or_else(|| panic!("{key} is not an array"));
            assert_eq!(items.len() as u64, want["len"].as_u64().unwrap(), "{key}");
            assert!(
                items.iter().all(|v| gguf_type_name(v) == want["elem"]),
                "{key}: element types"
            );
        } else {
            assert_eq!(got, &meta_from_json(want), "{file_name}: {key}");
        }
    }

    for check in expected["checked"].as_array().unwrap() {
        let name = check["name"].as_str().unwrap();
        let values = file.dequantize(name).unwrap();
        let info = file.tensor_info(name).unwrap();
        assert_eq!(
            info.ggml_type,
            ggml_type(check["ggml_type"].as_str().unwrap())
        );
        assert_eq!(values.len() as u64, info.n_elements());
        let first: Vec<f32> = check["first_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| f32::from_bits(b.as_u64().unwrap() as u32))
            .collect();
        assert_bits_eq(name, &values[..first.len()], &first);

        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let sum_sq: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        // Values are bit-identical, so only the summation order differs; scale the tolerance by
        // sum |x| when the signed sum nearly cancels.
        let (want_sum, want_sq) = (
            check["sum"].as_f64().unwrap(),
            check["sum_sq"].as_f64().unwrap(),
        );
        let floor = 1e-6 * check["sum_abs"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-3 * want_sum.abs().max(floor),
            "{name}: sum {sum} vs {want_sum}"
        );
        assert!(
            (sum_sq - want_sq).abs() <= 1e-3 * want_sq,
            "{name}: sum of squares {sum_sq} vs {want_sq}"
        );
    }
}

#[test]
fn real_model_smollm2_q4_1() {
    check_real_model("SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn real_model_gemma3_q4_k_m() {
    check_real_model("gemma-3-270m-q4_k_m.gguf");
}

#[test]
fn real_model_qwen25_q4_k_m() {
    check_real_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
}
