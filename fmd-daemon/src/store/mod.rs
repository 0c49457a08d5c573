//! Where requests and run counters are kept: a DuckDB file, its schema, the writer thread and the queries
//! that `api` and `cli` share. The only module that touches DuckDB.
//!
//! DuckDB lets one process open a file read-write. The daemon holds it through [`Store::open`] and hands
//! the connection to [`spawn_writer`]; its API reads through [`Store::reader`] connections cloned from the
//! same database. Other processes (the CLI) use the daemon's HTTP API while [`DaemonFile`] says it runs,
//! and [`Store::open_read_only`] otherwise.

mod daemon_file;
mod endpoints;
mod exceptions;
pub mod file_modes;
pub mod levels;
mod mann_whitney;
pub mod memory;
pub mod outliers;
pub mod profiles;
mod registry;
mod requests;
pub mod rollup;
pub mod schema;
mod stats;
pub mod time;
pub mod users;
pub mod versions;
pub mod views;
mod writer;

use std::{
    io,
    path::{Path, PathBuf},
};

use duckdb::{AccessMode, Config, Connection};

pub use self::{
    daemon_file::DaemonFile,
    endpoints::{
        attribution, endpoint_list, endpoints, mode_name, modes, set_attribution, unmatched,
        upsert_routes, Attribution, EndpointList, EndpointRow, MONITOR_LEVEL,
    },
    exceptions::{
        exception_group, exception_groups, EndpointCount, ExceptionFilter, ExceptionGroupDetail,
        ExceptionGroupRow,
    },
    registry::{runtime_dir, Registration},
    requests::{append_requests, requests, RequestFilter, RequestRow},
    stats::{begin_run, counters, end_run, names, set_counters, stats, RunInfo, Stats},
    versions::{versions, VersionRow},
    writer::{spawn_writer, WriterHandle, WriterReport},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no fmd data at {}: start fmd-daemon --pid ... first or pass --db", path.display())]
    Missing { path: PathBuf },
    #[error("cannot create the directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the fmd database {} (is another fmd-daemon using it?)", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: duckdb::Error,
    },
    #[error(
        "the fmd database has schema version {found} but this fmd knows only up to {known}: it was written by a \
         newer fmd, use that one (or another --db)"
    )]
    TooNew { found: u32, known: u32 },
    #[error(
        "the fmd database has schema version {found} but this fmd needs {known}: run fmd-daemon on it once to \
         upgrade it"
    )]
    Outdated { found: u32, known: u32 },
    #[error("cannot migrate the fmd database to schema version {to}")]
    Migration {
        to: u32,
        #[source]
        source: duckdb::Error,
    },
    #[error("database error: cannot {what}")]
    Sql {
        what: &'static str,
        #[source]
        source: duckdb::Error,
    },
    #[error("cannot {what} {}", path.display())]
    DaemonFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid daemon file", path.display())]
    DaemonFileFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{input:?} is neither an RFC 3339 time (like 2026-11-23T15:56:41Z) nor a time ago (like 15m, 2h, 7d)")]
    BadTime { input: String },
    #[error("the store writer has stopped")]
    WriterGone,
    #[error("the store writer's queue is full")]
    WriterFull,
    #[error("cannot start the store writer thread")]
    WriterSpawn(#[source] io::Error),
}

/// An open fmd database with its schema checked (and, read-write, migrated).
pub struct Store {
    conn: Connection,
    path: PathBuf,
    migrated_from: u32,
    caught_up: rollup::CatchUp,
}

impl Store {
    /// Opens (creating it and its parent directories when missing) the database read-write, migrates it
    /// and rolls up the requests not rolled up yet ([`rollup::catch_up`]).
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            file_modes::create_private_dir(dir).map_err(|source| Error::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let conn = open_connection(path, AccessMode::ReadWrite)?;
        memory::bound(&conn)?;
        let migrated_from = schema::version(&conn)?;
        schema::migrate(&conn)?;
        // Stores written before the rollups existed, or filled by other tools, are rolled up here once.
        let caught_up = rollup::catch_up(&conn)?;
        if caught_up.requests > 0 {
            tracing::info!(
                requests = caught_up.requests,
                watermark = caught_up.watermark,
                "rolled up stored requests"
            );
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
            migrated_from,
            caught_up,
        })
    }

    /// Opens an existing database read-only; it must already have this build's schema version.
    pub fn open_read_only(path: &Path) -> Result<Self, Error> {
        if !path.is_file() {
            return Err(Error::Missing {
                path: path.to_owned(),
            });
        }
        let conn = open_connection(path, AccessMode::ReadOnly)?;
        let found = schema::version(&conn)?;
        match found.cmp(&schema::VERSION) {
            std::cmp::Ordering::Greater => {
                return Err(Error::TooNew {
                    found,
                    known: schema::VERSION,
                })
            }
            std::cmp::Ordering::Less => {
                return Err(Error::Outdated {
                    found,
                    known: schema::VERSION,
                })
            }
            std::cmp::Ordering::Equal => {}
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
            migrated_from: found,
            caught_up: rollup::CatchUp::default(),
        })
    }

    /// The schema version the file had before [`Store::open`] migrated it (0: a new file).
    pub fn migrated_from(&self) -> u32 {
        self.migrated_from
    }

    /// What [`Store::open`] rolled up; nothing for a read-only store.
    pub fn caught_up(&self) -> rollup::CatchUp {
        self.caught_up
    }

    /// A new connection to the same database, for readers in this process (the API) while the writer
    /// thread owns `self`.
    pub fn reader(&self) -> Result<Connection, Error> {
        self.conn.try_clone().map_err(|source| Error::Sql {
            what: "open a reader connection",
            source,
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Niceness of the threads that write DuckDB. Their work comes in bursts (a flush a second, a checkpoint
/// now and then) that can wait; at the default priority a burst takes a core from the monitored app and
/// shows in its tail latency. Capture itself keeps the default priority: it must keep the ring buffer
/// drained.
const WRITER_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority to [`WRITER_NICE`] (on Linux, `setpriority` with who = 0 acts on
/// the calling thread). Failure only costs the app a little latency: logged, never fatal.
pub(crate) fn lower_writer_priority() {
    // SAFETY: no pointers; sets the calling thread's nice value.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, WRITER_NICE) } != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the store writer's priority"
        );
    }
}

/// Runs `f` in one transaction: committed when it succeeds, rolled back when it or the commit fails, so
/// what `f` wrote is stored whole or not at all (and can be retried as is).
pub(crate) fn transaction<T>(
    conn: &Connection,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    conn.execute_batch("BEGIN TRANSACTION")
        .map_err(|source| Error::Sql {
            what: "begin a transaction",
            source,
        })?;
    let done = f().and_then(|value| {
        conn.execute_batch("COMMIT")
            .map(|()| value)
            .map_err(|source| Error::Sql {
                what: "commit",
                source,
            })
    });
    if done.is_err() {
        // Best effort: the first error is the one to report, and a failed commit has nothing to undo.
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

fn open_connection(path: &Path, mode: AccessMode) -> Result<Connection, Error> {
    let open = || {
        // No extension downloads: the daemon runs offline and needs none.
        let config = Config::default()
            .access_mode(mode)?
            .enable_autoload_extension(false)?;
        Connection::open_with_flags(path, config)
    };
    open().map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Request fixtures shared by the store, api and cli tests.

    use crate::request::Request;

    /// Asserts `got` is within `relative` of `expect` (absolutely when `expect` is 0); both absent is equal.
    pub fn close(got: Option<f64>, expect: Option<f64>, relative: f64, what: &str) {
        match (got, expect) {
            (Some(g), Some(e)) => {
                let error = if e == 0.0 {
                    g.abs()
                } else {
                    (g / e - 1.0).abs()
                };
                assert!(error <= relative, "{what}: got {g}, expected {e}");
            }
            (g, e) => assert_eq!(g, e, "{what}"),
        }
    }

    /// DuckDB's `quantile_cont` over `values`: linear interpolation between the closest ranks.
    pub fn exact_quantile(values: &[f64], q: f64) -> Option<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let last = sorted.len().checked_sub(1)?;
        let pos = q * last as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
    }

    /// A request with every field set and distinct per `i`, `ts_us` one millisecond apart from a fixed base.
    pub fn request(i: u32) -> Request {
        Request {
            ts_us: 1_795_449_401_123_456 + i64::from(i) * 1_000,
            duration_ns: 1_500_000 + u64::from(i),
            method: if i.is_multiple_of(2) { "GET" } else { "POST" }.to_owned(),
            path: format!("/item/{i}"),
            query: i.is_multiple_of(3).then(|| format!("q={i}")),
            http_version: "HTTP/1.1".to_owned(),
            status: 200 + (i % 5) as u16,
            bytes_in: 100 + u64::from(i),
            bytes_out: 2_000 + u64::from(i),
            remote_ip: (!i.is_multiple_of(4)).then(|| format!("10.0.0.{}", i % 250)),
            worker_pid: 4_000 + i % 3,
            tid: 5_000 + i,
            host: Some("localhost:8000".to_owned()),
            user_agent: (i % 2 == 1).then(|| "curl/8.5.0".to_owned()),
            head: format!("GET /item/{i} HTTP/1.1\r\n").into_bytes(),
            endpoint: i.is_multiple_of(2).then(|| "item".to_owned()),
            rule: i.is_multiple_of(2).then(|| "/item/<int:id>".to_owned()),
            ..Request::default()
        }
    }
}
