//! `cargo xtask test`, the command README.md and CI run: unit tests of every default member, then the
//! end-to-end suite in tests/ against real gunicorn workers, BPF programs and DuckDB files.

use std::process::Command;

use anyhow::Result;

use crate::{build, command, paths, python, setup, web};

#[derive(clap::Args)]
pub struct Args {
    /// Run only the unit tests (no root needed).
    #[arg(long)]
    unit_only: bool,
    /// Only end-to-end tests whose name contains this.
    filter: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    setup::all()?;
    let daemon = build::release()?;
    // --release everywhere: one profile means DuckDB's bindings and aya are compiled once per machine.
    command::run(
        Command::new("cargo")
            .args(["test", "--release"])
            .current_dir(paths::workspace()),
    )?;
    web::test()?;
    if args.unit_only {
        return Ok(());
    }
    let mut e2e = Command::new("cargo");
    e2e.args(["test", "--release", "--package", "tests", "--"])
        .arg("--test-threads=1")
        .args(args.filter.iter())
        .env("FMD_DAEMON", &daemon)
        .env("FMD_VENVS", python::venvs_dir())
        .env("FMD_WEB_DIR", web::dir())
        .current_dir(paths::workspace());
    command::run(&mut e2e)
}
