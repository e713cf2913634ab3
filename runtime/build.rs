include!("../build-support/link_torch_cuda.rs");

fn main() {
    link_torch_cuda();
}
