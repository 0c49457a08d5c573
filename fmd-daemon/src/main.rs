//! `fmd-daemon`: attach to a gunicorn app (`--pid`) and record its requests, or query what was recorded.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Instant,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use fmd_daemon::{
    cli,
    config::Config,
    daemon,
    store::{schema, DaemonFile, Store},
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "fmd-daemon",
    version,
    about = "Zero-instrumentation performance monitor for Flask apps under gunicorn",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print what was recorded (works while the daemon runs and after it stopped).
    Query(cli::QueryArgs),
    /// Read or change an endpoint's monitoring level (0-3), through the running daemon or in the file.
    Level(cli::LevelArgs),
    /// Check that fmd's BPF programs load and attach on this machine, then exit.
    Check,
    /// Bring a database up to date: apply pending schema migrations and roll up stored requests (the
    /// daemon does this itself when it starts; this is for files filled or copied by other tools).
    Migrate(MigrateArgs),
    /// Dashboard accounts: `user add NAME [--admin]`, `user list`, `user remove NAME` (through the
    /// running daemon, or in the stopped store).
    User(cli::UserArgs),
}

#[derive(Args)]
struct MigrateArgs {
    /// The fmd database file.
    #[arg(long, env = "FMD_DB", default_value = cli::DEFAULT_DB)]
    db: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    /// PID of the gunicorn master (watches all its workers, present and future) or of one worker.
    #[arg(long, env = "FMD_PID")]
    pid: Option<u32>,
    /// DuckDB file to store requests in [default: /var/lib/fmd/fmd.duckdb].
    #[arg(long, env = "FMD_DB")]
    db: Option<PathBuf>,
    /// Address of the dashboard, JSON API and metrics [default: 127.0.0.1:9876].
    #[arg(long, env = "FMD_LISTEN")]
    listen: Option<SocketAddr>,
    /// URL prefix of the dashboard and API behind a reverse proxy, e.g. /fmd [default: none].
    #[arg(long, env = "FMD_BASE_PATH")]
    base_path: Option<String>,
    /// Python stack samples per second per busy thread; 0 turns the profiler off [default: 100].
    #[arg(long, env = "FMD_SAMPLE_HZ")]
    sample_hz: Option<u64>,
    /// Profile wall-clock time (with sleeps and waits) or on-CPU time only [default: wall].
    #[arg(long, value_enum, env = "FMD_PROFILE_MODE")]
    profile_mode: Option<fmd_daemon::profile::ProfileMode>,
    /// Level (0-3) endpoints get when first seen [default: 3 with the profiler on, else 1].
    #[arg(long, env = "FMD_MONITOR_LEVEL", value_parser = clap::value_parser!(u8).range(0..=3))]
    monitor_level: Option<u8>,
    /// TOML configuration file [default: /etc/fmd/fmd.toml, if present].
    #[arg(long, env = "FMD_CONFIG")]
    config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FMD_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "info",
        1 => "fmd_daemon=debug,info",
        _ => "fmd_daemon=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Query(args)) => cli::run_query(args),
        Some(Command::Level(args)) => cli::run_level(args),
        Some(Command::Check) => {
            init_logging(cli.run.verbose, cli.run.log_format);
            check()
        }
        Some(Command::User(args)) => cli::run_user(args),
        Some(Command::Migrate(args)) => {
            init_logging(cli.run.verbose, cli.run.log_format);
            migrate(&args.db)
        }
        None => {
            init_logging(cli.run.verbose, cli.run.log_format);
            run(cli.run)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fmd-daemon: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check() -> anyhow::Result<()> {
    let mut capture = fmd_daemon::capture::Capture::load()?;
    // The sampler's frame walk is the program the verifier is most likely to refuse on another kernel.
    capture.start_sampler(100, fmd_daemon::profile::ProfileMode::Wall)?;
    drop(capture);
    #[expect(clippy::print_stdout, reason = "CLI output")]
    {
        println!("ok: fmd's BPF programs load and attach on this machine");
    }
    Ok(())
}

fn migrate(db: &Path) -> anyhow::Result<()> {
    // DuckDB lets one process open the file read-write: a running daemon holds it (and keeps it current).
    match DaemonFile::read(db) {
        Ok(Some(daemon)) if daemon.is_alive() => anyhow::bail!(
            "fmd-daemon (pid {}) holds {}: it migrated the file when it started and keeps its rollups \
             current; stop it first to migrate the file here",
            daemon.pid,
            db.display()
        ),
        // A stale file (the daemon was killed) or an unreadable one: opening the database tells.
        _ => {}
    }
    if !db.is_file() {
        anyhow::bail!("no fmd database at {}: nothing to migrate", db.display());
    }
    let started = Instant::now();
    // The WAL DuckDB may create here is as private as the store.
    fmd_daemon::store::file_modes::private_umask();
    fmd_daemon::store::file_modes::warn_if_exposed(db);
    let store = Store::open(db)?;
    let took = started.elapsed();
    let caught_up = store.caught_up();
    #[expect(clippy::print_stdout, reason = "CLI output")]
    {
        println!(
            "{}: schema version {} -> {}, rolled up {} requests (up to id {}) in {:.3} s",
            db.display(),
            store.migrated_from(),
            schema::VERSION,
            caught_up.requests,
            caught_up.watermark,
            took.as_secs_f64()
        );
    }
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let Some(pid) = args.pid else {
        anyhow::bail!(
            "pass --pid <PID of the gunicorn master or of a worker>, or a subcommand (see --help)"
        );
    };
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(db) = args.db {
        config.db = db;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(base) = args.base_path {
        config.base_path = base;
    }
    config.base_path = fmd_daemon::config::normalize_base_path(&config.base_path);
    if let Some(hz) = args.sample_hz {
        config.profiler.sample_hz = hz;
    }
    if let Some(mode) = args.profile_mode {
        config.profiler.mode = mode;
    }
    if let Some(level) = args.monitor_level {
        config.monitor_level = Some(level);
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(daemon::run(Arc::new(config), pid))
}
