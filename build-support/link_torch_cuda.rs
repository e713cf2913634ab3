// Shared by the build scripts of crates that link libtorch into an executable (binaries and test
// binaries). The linker drops libtorch_cuda.so with --as-needed because nothing references its
// symbols directly; without it, CUDA is never detected at run time. We only ask for it when the
// libtorch in use ships the library, so CPU-only libtorch builds still link.
fn link_torch_cuda() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    let lib_dir = match std::env::var("LIBTORCH") {
        Ok(root) => Some(std::path::PathBuf::from(root).join("lib")),
        Err(_) => std::process::Command::new("python3")
            .args(["-c", "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())),
    };
    if let Some(dir) = lib_dir {
        if dir.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
