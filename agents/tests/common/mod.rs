//! Shared test helpers.

use std::path::PathBuf;

/// The shared data directory (`$TCOMM_DATA`, else `shared/data` next to the repository).
/// Data-backed tests fail, never skip, when it is missing: a silent skip would hide a broken setup.
pub fn data_dir() -> PathBuf {
    let dir = agents::dataset::resolve_data_dir(None).unwrap_or_else(|e| panic!("shared data not found: {e}"));
    assert!(
        dir.join("gsm8k").is_dir() && dir.join("math").is_dir(),
        "shared data directory {} lacks gsm8k/ or math/; set TCOMM_DATA to the directory holding \
         gsm8k/{{train,dev}}.jsonl and math/{{test_dev,math500_dev}}.jsonl",
        dir.display()
    );
    dir
}
