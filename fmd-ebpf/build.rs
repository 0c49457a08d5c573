//! Rebuilds the BPF object when bpf-linker changes (it is the linker of this crate's target).

fn main() {
    // Missing bpf-linker is reported by fmd-daemon's build script with the command that installs it; this
    // crate is also compiled for the host as a build-dependency, where the linker is not needed.
    if let Ok(bpf_linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
