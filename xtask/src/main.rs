//! fmd's only automation entry point (`cargo xtask <command>`), so no Makefile or shell scripts are needed.

mod offsets;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Regenerate fmd-daemon/src/python/offsets.rs from the pyenv interpreters' headers (needs gcc).
    GenOffsets {
        /// pyenv root (default: `pyenv root`).
        #[arg(long)]
        pyenv_root: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(&manifest).to_path_buf();
    let result = match cli.command {
        Cmd::GenOffsets { pyenv_root } => {
            offsets::gen_offsets(pyenv_root, &root.join("fmd-daemon/src/python/offsets.rs"))
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
