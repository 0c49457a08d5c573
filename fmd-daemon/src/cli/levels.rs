//! `fmd-daemon level set ENDPOINT N` and `level get ENDPOINT`: an endpoint's monitoring level, changed
//! through the running daemon's API (applied from its next request) or, when no daemon runs, in the file.

use std::{
    io::{BufReader, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::store::{
    levels::{self, EndpointLevel},
    time::now_us,
    DaemonFile, Store, MONITOR_LEVEL,
};

#[derive(Debug, clap::Args)]
pub struct LevelArgs {
    #[command(subcommand)]
    pub command: LevelCommand,
    /// The fmd database file.
    #[arg(long, env = "FMD_DB", default_value = super::DEFAULT_DB, global = true)]
    pub db: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum LevelCommand {
    /// Set an endpoint's level: 0 only its last-requested time, 1 every request, 2 plus outliers, 3 plus
    /// profiles.
    Set {
        endpoint: String,
        #[arg(value_parser = clap::value_parser!(u8).range(0..=3))]
        level: u8,
    },
    /// Show an endpoint's level and how many of its requests level 0 counted without storing.
    Get { endpoint: String },
}

pub fn run_level(args: LevelArgs) -> anyhow::Result<()> {
    let answer = match &args.command {
        LevelCommand::Set { endpoint, level } => set(&args.db, endpoint, *level)?,
        LevelCommand::Get { endpoint } => get(&args.db, endpoint)?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: level {} ({} requests counted at level 0)",
        answer.endpoint, answer.level, answer.unrecorded_requests
    )?;
    Ok(())
}

fn running(db: &Path) -> Option<DaemonFile> {
    DaemonFile::read(db)
        .ok()
        .flatten()
        .filter(DaemonFile::is_alive)
}

/// The local credential the daemon writes next to its store (`<db>.token`), when present.
fn token(db: &Path) -> Option<String> {
    let mut path = db.as_os_str().to_owned();
    path.push(".token");
    std::fs::read_to_string(PathBuf::from(path))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn set(db: &Path, endpoint: &str, level: u8) -> anyhow::Result<EndpointLevel> {
    if let Some(daemon) = running(db) {
        return call(db, &daemon, endpoint, Some(level));
    }
    let store = Store::open(db)?;
    let conn = store.connection();
    if !levels::known_endpoint(conn, endpoint)? {
        bail!(
            "no endpoint {endpoint:?} in {} (see fmd-daemon query endpoints)",
            db.display()
        );
    }
    levels::set_level(conn, endpoint, level, now_us())?;
    Ok(levels::endpoint_level(conn, endpoint, MONITOR_LEVEL)?)
}

fn get(db: &Path, endpoint: &str) -> anyhow::Result<EndpointLevel> {
    if let Some(daemon) = running(db) {
        return call(db, &daemon, endpoint, None);
    }
    let store = Store::open_read_only(db)?;
    Ok(levels::endpoint_level(
        store.connection(),
        endpoint,
        MONITOR_LEVEL,
    )?)
}

/// `GET` or (with a level) `PUT /api/endpoints/{endpoint}/level` on the running daemon.
fn call(
    db: &Path,
    daemon: &DaemonFile,
    endpoint: &str,
    level: Option<u8>,
) -> anyhow::Result<EndpointLevel> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let name: String =
        percent_encoding::utf8_percent_encode(endpoint, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let url = format!("http://{}/api/endpoints/{name}/level", daemon.listen);
    let bearer = token(db).map(|t| format!("Bearer {t}"));
    let response = match level {
        Some(level) => {
            let mut request = agent.put(&url).header("content-type", "application/json");
            if let Some(b) = &bearer {
                request = request.header("authorization", b);
            }
            request.send(serde_json::json!({ "level": level }).to_string())
        }
        None => {
            let mut request = agent.get(&url);
            if let Some(b) = &bearer {
                request = request.header("authorization", b);
            }
            request.call()
        }
    };
    let mut response = response.with_context(|| {
        format!(
            "the fmd daemon (pid {}) at {} does not answer",
            daemon.pid, daemon.listen
        )
    })?;
    let status = response.status();
    let reader = BufReader::new(response.body_mut().as_reader());
    if !status.is_success() {
        let body: serde_json::Value = serde_json::from_reader(reader).unwrap_or_default();
        let message = body["error"].as_str().unwrap_or("no error message");
        bail!(
            "the fmd daemon at {} answered {status}: {message}",
            daemon.listen
        );
    }
    serde_json::from_reader(reader).context("bad answer from the fmd daemon")
}
