//! fmd-daemon as the benchmark drives it: what the binary at hand can do (read from its `--help`), attaching
//! it to a gunicorn master, and reading its counters back with `fmd-daemon query stats`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use super::process::Guard;
use crate::command;

/// What the daemon being measured supports, so the harness follows it as features land.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Features {
    /// `--sample-hz`: the level-3 profiler.
    pub sample_hz: bool,
    /// `--level`: an explicit monitoring level, passed when the daemon has it so that level 1 stays level 1
    /// whatever the daemon's default becomes.
    pub level: bool,
    /// `query stats`: the counters the capacity measurement reads.
    pub query_stats: bool,
    /// `query endpoints`: the daemon's own overview query, timed on the query benchmark's stores.
    pub query_endpoints: bool,
    /// `query grouped-profile`: the daemon's own grouped profile, timed on the query benchmark's stores.
    pub query_grouped_profile: bool,
    /// `query --timing`: the daemon reports how long the query itself took, so the benchmark times the
    /// daemon's code without its process start and store open.
    pub query_timing: bool,
    /// `migrate --db FILE`: applies pending migrations and builds the rollups the overview reads.
    pub migrate: bool,
}

impl Features {
    pub fn probe(daemon: &Path) -> Self {
        let help = |args: &[&str]| {
            Command::new(daemon)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let top = help(&["--help"]).unwrap_or_default();
        Self::from_help(&top, help(&["query", "--help"]).as_deref())
    }

    /// `top` is `fmd-daemon --help`; `query` is `fmd-daemon query --help` when it succeeded.
    fn from_help(top: &str, query: Option<&str>) -> Self {
        let query = query.unwrap_or_default();
        Self {
            sample_hz: lists_flag(top, "--sample-hz"),
            level: lists_flag(top, "--level"),
            query_stats: lists_command(query, "stats"),
            query_endpoints: lists_command(query, "endpoints"),
            query_grouped_profile: lists_command(query, "grouped-profile"),
            query_timing: lists_flag(query, "--timing"),
            migrate: lists_command(top, "migrate"),
        }
    }
}

/// True when clap's `help` lists the subcommand `name` (an indented line starting with it).
fn lists_command(help: &str, name: &str) -> bool {
    help.lines()
        .any(|line| line.starts_with(' ') && line.split_whitespace().next() == Some(name))
}

/// True when `help` documents `flag` (as a whole word, not as a prefix of a longer flag).
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let next = help[at + flag.len()..].chars().next();
        let prev = help[..at].chars().next_back();
        !next.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
            && !prev.is_some_and(|c| c.is_alphanumeric() || c == '-')
    })
}

/// Starts the daemon on gunicorn `master`, recording into `db` (a fresh file), and waits until it has
/// attached (it then writes `<db>.daemon`). Dropping or stopping the guard sends SIGINT, on which the daemon
/// flushes and exits.
pub fn attach(
    daemon: &Path,
    features: &Features,
    master: u32,
    db: &Path,
    sample_hz: Option<u32>,
    log: &Path,
) -> Result<Guard> {
    attach_with(daemon, features, master, db, sample_hz, log, None)
}

/// [`attach`] with the daemon's `RUST_LOG` set to `log_filter`.
pub fn attach_with(
    daemon: &Path,
    features: &Features,
    master: u32,
    db: &Path,
    sample_hz: Option<u32>,
    log: &Path,
    log_filter: Option<&str>,
) -> Result<Guard> {
    for stale in [
        db.to_path_buf(),
        marker(db),
        db.with_extension("duckdb.wal"),
    ] {
        let _ = fs::remove_file(stale);
    }
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(daemon);
    cmd.arg("--pid")
        .arg(master.to_string())
        .arg("--db")
        .arg(db)
        .args(["--listen", &listen]);
    if features.level {
        cmd.args(["--level", if sample_hz.is_some() { "3" } else { "1" }]);
    }
    if let Some(filter) = log_filter {
        cmd.env("RUST_LOG", filter);
    }
    if features.sample_hz {
        // The profiler is on by default (100 Hz); level 1 has to turn it off with 0.
        cmd.args(["--sample-hz", &sample_hz.unwrap_or(0).to_string()]);
    }
    // The daemon flushes its last batch to DuckDB on SIGINT: give it time.
    let mut guard = Guard::spawn(
        "fmd-daemon",
        &mut cmd,
        log,
        libc::SIGINT,
        Duration::from_secs(30),
    )?;
    // Loading the BPF programs takes a few seconds, and much longer on a machine busy with builds.
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    while !marker(db).exists() {
        if let Some(status) = guard.exited() {
            bail!(
                "fmd-daemon exited ({status}) before attaching: {}",
                tail(log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "fmd-daemon did not attach within {} s (no {}): {}",
                ATTACH_TIMEOUT.as_secs(),
                marker(db).display(),
                tail(log)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(guard)
}

const ATTACH_TIMEOUT: Duration = Duration::from_secs(180);

fn marker(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".daemon");
    PathBuf::from(name)
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The last few lines of a log, for error messages.
pub fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let joined = lines.into_iter().rev().collect::<Vec<_>>().join(" | ");
    if joined.is_empty() {
        "no output".into()
    } else {
        joined
    }
}

/// The part of `fmd-daemon query stats --format json` the benchmark reads.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Stats {
    pub requests_stored: u64,
    pub events_lost: i64,
}

pub fn stats(daemon: &Path, db: &Path) -> Result<Stats> {
    let out = command::output(
        Command::new(daemon)
            .args(["query", "stats", "--db"])
            .arg(db)
            .args(["--format", "json"]),
    )?;
    parse_stats(&out).with_context(|| format!("cannot read `fmd-daemon query stats` output: {out}"))
}

fn parse_stats(json: &str) -> Result<Stats> {
    Ok(serde_json::from_str(json.trim())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(top: &str, stats: Option<&str>, expect: Features) {
        assert_eq!(
            Features::from_help(top, stats),
            expect,
            "top: {top:?}, stats: {stats:?}"
        );
    }

    #[test]
    fn features_follow_the_help_text() {
        let today = "Usage: fmd-daemon [OPTIONS] --pid <PID>\n  --pid <PID>\n  --db <DB>\n  --listen <ADDR>\n";
        let query =
            "Commands:\n  requests  Stored requests\n  stats     Counters\n  help  Print this\n";
        check(today, None, Features::default());
        check(
            today,
            Some(query),
            Features {
                query_stats: true,
                ..Features::default()
            },
        );
        check(
            &format!("{today}  --sample-hz <HZ>  sampling frequency\n"),
            Some(&format!("{query}  endpoints  Endpoints with hits\n")),
            Features {
                sample_hz: true,
                level: false,
                query_stats: true,
                query_endpoints: true,
                ..Features::default()
            },
        );
        check(
            &format!("Commands:\n  query    Print what was recorded\n  migrate  Apply migrations\n{today}"),
            Some(&format!(
                "{query}  grouped-profile  Merged profile\n      --timing  Print how long\n"
            )),
            Features {
                query_stats: true,
                query_grouped_profile: true,
                query_timing: true,
                migrate: true,
                ..Features::default()
            },
        );
        // A longer flag that merely starts with the name does not count, nor does a mention in prose.
        check(
            &format!("{today}  --sample-hz-max <HZ>\n  --no-sample-hz\n"),
            Some("Usage: fmd-daemon query stats and endpoints are coming\n"),
            Features::default(),
        );
        check(
            &format!("{today}  --level <LEVEL>\n"),
            None,
            Features {
                level: true,
                ..Features::default()
            },
        );
    }

    #[test]
    fn stats_json() {
        let json = r#"{"requests_stored": 1200, "runs": 1, "events_received": 5000, "events_lost": 3, "counters": {}}"#;
        assert_eq!(
            parse_stats(json).ok(),
            Some(Stats {
                requests_stored: 1200,
                events_lost: 3
            })
        );
        assert!(parse_stats(r#"{"requests_stored": 1}"#).is_err());
        assert!(parse_stats("").is_err());
    }

    #[test]
    fn marker_is_beside_the_db() {
        assert_eq!(
            marker(Path::new("/tmp/a.duckdb")),
            PathBuf::from("/tmp/a.duckdb.daemon")
        );
    }
}
