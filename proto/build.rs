//! Generates the tonic/prost code of `thoughtcomm/runtime/v1/runtime.proto` and its file
//! descriptor set (for server reflection), with the protoc vendored by `protoc-bin-vendored`.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build runs the protoc named by PROTOC; build scripts are single-threaded here.
    std::env::set_var("PROTOC", protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("runtime_descriptor.bin"))
        .compile_protos(&["thoughtcomm/runtime/v1/runtime.proto"], &["."])?;
    println!("cargo:rerun-if-changed=thoughtcomm");
    Ok(())
}
