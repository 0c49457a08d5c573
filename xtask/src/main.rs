//! fmd's only automation: installing the toolchain pieces, building, testing, the demo and benchmarks.
//! Run as `cargo xtask <command>` (the alias lives in .cargo/config.toml).

mod bench;
mod build;
mod command;
mod demo;
mod offsets;
mod paths;
mod python;
mod setup;
mod test;
mod web;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "fmd's build, test, demo and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need: rust-src and bpf-linker for the BPF build, libduckdb, the
    /// Python venvs of the test matrix, Debian packages.
    Setup,
    /// Build the dashboard (web/dist) and then the BPF programs and the daemon, which embeds it, in release
    /// mode into target/release/fmd-daemon.
    Build,
    /// Run every test: unit tests, then the end-to-end suite against real gunicorn workers (needs root).
    Test(test::Args),
    /// Start a sample Flask app under gunicorn, attach the daemon, send traffic and print where to look.
    Demo(demo::Args),
    /// Regenerate fmd-daemon/src/python/offsets.rs from the pyenv interpreters' headers (needs gcc).
    GenOffsets {
        /// pyenv root (default: `pyenv root`).
        #[arg(long)]
        pyenv_root: Option<std::path::PathBuf>,
    },
    /// Measure fmd's overhead on a Flask app against Flask-MonitoringDashboard and py-spy, the daemon's capture
    /// capacity and query speed at scale; writes BENCHMARKS.md and tests/bench/results.json.
    Bench(bench::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::all(),
        Command::Build => build::release().map(|_| ()),
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::GenOffsets { pyenv_root } => offsets::gen_offsets(
            pyenv_root,
            &paths::workspace().join("fmd-daemon/src/python/offsets.rs"),
        ),
        Command::Bench(args) => bench::run(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
