//! Where things live: the workspace, and the per-machine cache that survives between clones and CI runs
//! (venvs, libduckdb), so a second run on the same machine does not install everything again.

use std::path::PathBuf;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `FMD_CACHE_DIR`, else `~/.cache/fmd`.
pub fn cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("FMD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/fmd")
}

/// Cargo's target directory as cargo itself resolves it (CARGO_TARGET_DIR or `<workspace>/target`).
pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

pub fn daemon_binary() -> PathBuf {
    target().join("release/fmd-daemon")
}
