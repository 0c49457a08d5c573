//! Builds the BPF object (fmd-ebpf, with the nightly toolchain and bpf-linker) for embedding, and makes
//! the binaries find the dynamically linked libduckdb at run time.

use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

fn main() -> anyhow::Result<()> {
    link_duckdb()?;
    check_bpf_toolchain()?;
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .context("fmd-daemon has no parent directory")?
        .join("fmd-ebpf");
    let root = root.to_str().context("non-UTF-8 path to fmd-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "fmd-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

/// libduckdb-sys links `-lduckdb` from `DUCKDB_LIB_DIR` (set in .cargo/config.toml); the rpath lets the
/// daemon and its tests load it from there, or from beside the binary once installed.
fn link_duckdb() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    let Some(dir) = env::var_os("DUCKDB_LIB_DIR") else {
        bail!("DUCKDB_LIB_DIR is not set: build from the fmd workspace (its .cargo/config.toml sets it)");
    };
    let dir = PathBuf::from(dir);
    if !dir.join("libduckdb.so").is_file() {
        bail!(
            "{} has no libduckdb.so: run `cargo xtask setup` first",
            dir.display()
        );
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
    Ok(())
}

fn check_bpf_toolchain() -> anyhow::Result<()> {
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|o| o.status.success()) {
        bail!("bpf-linker is not installed: run `cargo xtask setup` (it builds bpf-linker 0.13.0 for the nightly's LLVM)");
    }
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output();
    let Ok(sysroot) = sysroot else {
        bail!("no rustup nightly toolchain: run `cargo xtask setup`")
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        bail!("the nightly toolchain lacks rust-src: run `cargo xtask setup`");
    }
    Ok(())
}
