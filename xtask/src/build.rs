//! The release build: the dashboard bundle (web/dist, embedded by the daemon), BPF programs (through
//! fmd-daemon's build script) and the daemon binary.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Result};

use crate::{command, paths, setup, web};

/// Builds `target/release/fmd-daemon` and returns its path.
pub fn release() -> Result<PathBuf> {
    setup::build_tools()?;
    // Before cargo: rust-embed reads web/dist when fmd-daemon compiles.
    web::build()?;
    command::run(
        Command::new("cargo")
            .args(["build", "--release", "--package", "fmd-daemon"])
            .current_dir(paths::workspace()),
    )?;
    let binary = paths::daemon_binary();
    if !binary.is_file() {
        bail!("cargo built no {}", binary.display());
    }
    Ok(binary)
}
