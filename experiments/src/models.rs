//! `tcomm models`: the known models and their state on disk.
use std::io::Read;

use anyhow::Context;
use clap::Args;
use runtime::registry::{self, KNOWN_MODELS};
use sha2::{Digest, Sha256};

#[derive(Args)]
pub struct ModelsArgs {
    /// Also check each file's sha256 (reads every byte).
    #[arg(long)]
    verify: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let dir = registry::models_dir();
    let mut rows = Vec::new();
    for m in KNOWN_MODELS {
        let path = dir.join(m.file);
        let size = std::fs::metadata(&path).map(|md| md.len()).ok();
        let status = match size {
            None => "missing (run scripts/setup)".to_string(),
            Some(s) if s != m.bytes => format!("wrong size {s} (expected {})", m.bytes),
            Some(_) if args.verify => {
                if sha256_of(&path)? == m.sha256 { "ok (sha256 verified)".into() } else { "sha256 MISMATCH".into() }
            }
            Some(_) => "ok".into(),
        };
        rows.push(serde_json::json!({
            "name": m.name, "file": path.display().to_string(), "bytes": m.bytes,
            "sha256": m.sha256, "wheels": m.wheels, "description": m.description, "status": status,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("models folder: {} (override with TCOMM_MODELS)", dir.display());
        println!("{:<14} {:<36} DESCRIPTION", "NAME", "STATUS");
        for (m, row) in KNOWN_MODELS.iter().zip(&rows) {
            let status = row["status"].as_str().unwrap_or("");
            let default = if m.name == registry::DEFAULT_MODEL { " [default]" } else { "" };
            println!("{:<14} {:<36} {}{}", m.name, status, m.description, default);
        }
    }
    Ok(())
}

fn sha256_of(path: &std::path::Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    hash_file(&mut hasher, path)?;
    Ok(hex(&hasher.finalize()))
}

/// Feeds every byte of `path` to `hasher`.
pub fn hash_file(hasher: &mut Sha256, path: &std::path::Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("{}: read failed", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
