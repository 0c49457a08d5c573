//! Installs what fmd's build and tests need on a fresh machine, each step skipped when already done:
//! rust-src and bpf-linker (the BPF build, per ../shared/notes/bpf-toolchain.md), DuckDB's shared library,
//! Debian packages (chromium for the browser tests), Node.js's presence (the dashboard build), and the Python
//! venvs of the test matrix.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{command, paths, python, web};

/// DuckDB release whose C API the `duckdb` crate (=1.10506.1) is built for.
pub const DUCKDB_VERSION: &str = "1.5.6";
/// The npm registry package in which DuckDB ships its official `libduckdb.so` for linux-x64.
const DUCKDB_NPM_PACKAGE: &str = "@duckdb/node-bindings-linux-x64@1.5.6-r.1";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the tests and the demo use.
const DEBIAN_PACKAGES: &[&str] = &["python3.11", "python3.11-venv", "curl", "chromium"];

pub fn all() -> Result<()> {
    build_tools()?;
    web::install()?;
    debian(DEBIAN_PACKAGES)?;
    // The version tests commit to git repositories; any git on PATH will do.
    if !command::exists("git") {
        debian(&["git"])?;
    }
    python::ensure_all()?;
    Ok(())
}

/// What `cargo build` of fmd-daemon needs.
pub fn build_tools() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    duckdb()?;
    Ok(())
}

fn rust_src() -> Result<()> {
    let sysroot = command::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the BPF programs")?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        return Ok(());
    }
    command::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// bpf-linker must be built against the nightly's own LLVM (no LLVM is linked statically).
fn bpf_linker() -> Result<()> {
    let installed = Command::new("bpf-linker").arg("--version").output();
    if installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let sysroot = command::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
        .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
    let llvm = llvm.trim_start_matches("lib").trim_end_matches(".so");
    let major = llvm
        .trim_start_matches("LLVM-")
        .split('-')
        .next()
        .unwrap_or_default();
    let rustflags = format!(
        "-L {0} -l dylib={llvm} -C link-arg=-Wl,-rpath,{0}",
        lib.display()
    );
    command::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major},no-llvm-linking")])
            .env("RUSTFLAGS", rustflags),
    )
}

/// Puts libduckdb.so where .cargo/config.toml's DUCKDB_LIB_DIR points, from the machine cache when there.
fn duckdb() -> Result<()> {
    let dest = paths::workspace().join(".fmd/duckdb/libduckdb.so");
    let cached = paths::cache()
        .join("duckdb")
        .join(DUCKDB_VERSION)
        .join("libduckdb.so");
    if !cached.is_file() {
        let dir = cached.parent().expect("has a parent");
        fs::create_dir_all(dir)?;
        let tmp = tempdir(dir)?;
        command::run(
            Command::new("npm")
                .args(["pack", "--silent", DUCKDB_NPM_PACKAGE])
                .current_dir(&tmp),
        )?;
        let tarball = fs::read_dir(&tmp)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "tgz"))
            .context("npm pack produced no tarball")?;
        command::run(
            Command::new("tar")
                .arg("xzf")
                .arg(&tarball)
                .arg("package/libduckdb.so")
                .current_dir(&tmp),
        )?;
        fs::rename(tmp.join("package/libduckdb.so"), &cached)?;
        fs::remove_dir_all(&tmp)?;
    }
    if dest.is_file() && fs::metadata(&dest)?.len() == fs::metadata(&cached)?.len() {
        return Ok(());
    }
    fs::create_dir_all(dest.parent().expect("has a parent"))?;
    fs::copy(&cached, &dest)
        .with_context(|| format!("cannot copy {} to {}", cached.display(), dest.display()))?;
    Ok(())
}

fn tempdir(parent: &Path) -> Result<std::path::PathBuf> {
    let dir = parent.join(format!("tmp-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Installs the Debian packages that are missing (apt needs root, which CI and the daemon have anyway).
pub fn debian(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let status = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !status
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !command::exists("apt-get") {
        bail!("missing Debian packages {missing:?} and no apt-get to install them");
    }
    command::run(Command::new("apt-get").arg("update").arg("-q"))?;
    command::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
