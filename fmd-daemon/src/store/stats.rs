//! Daemon runs and their counters (events received, lost, unparseable, ...), stored generically as
//! `(run_id, name, value)`, and the totals over all runs that `/api/stats` and `fmd query stats` show.

use std::collections::BTreeMap;

use duckdb::{
    params, params_from_iter,
    types::{TimeUnit, Value},
    Connection,
};
use serde::{Deserialize, Serialize};

use super::{time::Micros, Error};

/// Counter names with a field of their own in [`Stats`]. Any other name is stored and summed too.
pub mod names {
    /// Events the daemon read from the ring buffer.
    pub const EVENTS_RECEIVED: &str = "events_received";
    /// Events the kernel dropped because the ring buffer was full.
    pub const EVENTS_LOST: &str = "events_lost";
    /// Requests whose bytes did not parse as HTTP/1.x.
    pub const UNPARSEABLE: &str = "unparseable";
    /// Requests whose connection ended before the response finished.
    pub const ABORTED: &str = "aborted";
    /// Connections whose event stream lost sync (missing bytes) and was dropped.
    pub const DESYNCED: &str = "desynced";
    /// Connections evicted from the daemon's table for being idle or too many.
    pub const EVICTED: &str = "evicted";
    /// Connections the BPF side could not track because its table was full.
    pub const CONN_TABLE_FULL: &str = "conn_table_full";
    /// Failed attempts to write a batch to the database (retried).
    pub const STORE_WRITE_ERRORS: &str = "store_write_errors";
    /// Requests dropped because the database stayed unwritable and the retry buffer was full.
    pub const STORE_ROWS_DROPPED: &str = "store_rows_dropped";
    /// Workers forked by a watched master that did not fit in BPF's pid table: none of their requests
    /// are captured.
    pub const PIDS_TABLE_FULL: &str = "pids_table_full";
    /// Accept/read/write syscalls BPF could not follow (its pending-syscall table was full).
    pub const PENDING_TABLE_FULL: &str = "pending_table_full";
    /// Profiler: threads BPF could not mark as serving a request (no off-CPU stacks for them).
    pub const SERVING_TABLE_FULL: &str = "profile_serving_table_full";
    /// Profiler: off-CPU waits BPF could not time (its table was full).
    pub const OFFCPU_TABLE_FULL: &str = "profile_offcpu_table_full";
    /// Profiler: GC collections whose start BPF could not keep (its table was full).
    pub const GC_TABLE_FULL: &str = "profile_gc_table_full";
}

/// What a daemon run records about itself when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// The pid fmd-daemon was pointed at (gunicorn master or worker).
    pub target_pid: u32,
    /// fmd's version.
    pub version: String,
    pub started_at: Micros,
}

/// Totals over every run in the database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests_stored: u64,
    pub runs: u64,
    pub events_received: i64,
    pub events_lost: i64,
    pub unparseable: i64,
    pub aborted: i64,
    pub desynced: i64,
    pub evicted: i64,
    pub conn_table_full: i64,
    pub store_write_errors: i64,
    pub store_rows_dropped: i64,
    /// Every counter summed over runs by name, including those above and any newer ones.
    pub counters: BTreeMap<String, i64>,
}

/// Records a new run and returns its id.
pub fn begin_run(conn: &Connection, run: &RunInfo) -> Result<i64, Error> {
    conn.query_row(
        "INSERT INTO daemon_runs (id, started_at, target_pid, version) \
         SELECT coalesce(max(id), 0) + 1, ?, ?, ? FROM daemon_runs RETURNING id",
        params![
            Value::Timestamp(TimeUnit::Microsecond, run.started_at),
            run.target_pid,
            run.version
        ],
        |row| row.get(0),
    )
    .map_err(|source| Error::Sql {
        what: "record the daemon run",
        source,
    })
}

/// Records when a run stopped.
pub fn end_run(conn: &Connection, run_id: i64, stopped_at: Micros) -> Result<(), Error> {
    conn.execute(
        "UPDATE daemon_runs SET stopped_at = ? WHERE id = ?",
        params![Value::Timestamp(TimeUnit::Microsecond, stopped_at), run_id],
    )
    .map(drop)
    .map_err(|source| Error::Sql {
        what: "record the end of the daemon run",
        source,
    })
}

/// Sets the run's running totals for the named counters, leaving others as they are. One statement, so
/// one commit: the writer calls this every second, and a commit per counter cost more than the requests.
pub fn set_counters<'a>(
    conn: &Connection,
    run_id: i64,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<(), Error> {
    // One row per name (the last value given wins): a statement may not update a row twice.
    let latest: BTreeMap<&str, i64> = values.into_iter().collect();
    let mut params = Vec::new();
    for (name, value) in latest {
        params.extend([
            Value::BigInt(run_id),
            Value::Text(name.to_owned()),
            Value::BigInt(value),
        ]);
    }
    if params.is_empty() {
        return Ok(());
    }
    let rows = vec!["(?, ?, ?)"; params.len() / 3].join(", ");
    conn.execute(
        &format!(
            "INSERT INTO counters (run_id, name, value) VALUES {rows} \
             ON CONFLICT DO UPDATE SET value = excluded.value"
        ),
        params_from_iter(params),
    )
    .map(drop)
    .map_err(|source| Error::Sql {
        what: "store counters",
        source,
    })
}

/// One run's counters by name.
pub fn counters(conn: &Connection, run_id: i64) -> Result<BTreeMap<String, i64>, Error> {
    let sql_err = |source| Error::Sql {
        what: "read counters",
        source,
    };
    let mut stmt = conn
        .prepare("SELECT name, value FROM counters WHERE run_id = ?")
        .map_err(sql_err)?;
    let rows = stmt
        .query_map(params![run_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// Totals over all runs.
pub fn stats(conn: &Connection) -> Result<Stats, Error> {
    let sql_err = |source| Error::Sql {
        what: "read stats",
        source,
    };
    let (requests_stored, runs): (u64, u64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM daemon_runs)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(sql_err)?;
    // sum() of BIGINT is HUGEINT in DuckDB; totals fit an i64 for any realistic run count.
    let mut stmt = conn
        .prepare(
            "SELECT name, CAST(sum(value) AS BIGINT) FROM counters GROUP BY name ORDER BY name",
        )
        .map_err(sql_err)?;
    let counters: BTreeMap<String, i64> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(sql_err)?
        .collect::<Result<_, _>>()
        .map_err(sql_err)?;
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    Ok(Stats {
        requests_stored,
        runs,
        events_received: get(names::EVENTS_RECEIVED),
        events_lost: get(names::EVENTS_LOST),
        unparseable: get(names::UNPARSEABLE),
        aborted: get(names::ABORTED),
        desynced: get(names::DESYNCED),
        evicted: get(names::EVICTED),
        conn_table_full: get(names::CONN_TABLE_FULL),
        store_write_errors: get(names::STORE_WRITE_ERRORS),
        store_rows_dropped: get(names::STORE_ROWS_DROPPED),
        counters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{append_requests, test_support::request, Store};

    /// Runs `runs` (each a list of counter updates, applied in order) and checks the summed totals.
    fn check(runs: &[&[(&str, i64)]], expect: &[(&str, i64)]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let conn = store.connection();
        for (i, updates) in runs.iter().enumerate() {
            let run = RunInfo {
                target_pid: 42,
                version: "0.0.0".into(),
                started_at: 1_000 * i as i64,
            };
            let id = begin_run(conn, &run).expect("begin");
            assert_eq!(id, i as i64 + 1);
            for &update in *updates {
                set_counters(conn, id, [update]).expect("set");
            }
            end_run(conn, id, 1_000 * i as i64 + 500).expect("end");
        }
        let stats = stats(conn).expect("stats");
        let expect: BTreeMap<String, i64> =
            expect.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(stats.counters, expect);
        assert_eq!(stats.runs, runs.len() as u64);
        assert_eq!(
            stats.events_lost,
            expect.get(names::EVENTS_LOST).copied().unwrap_or(0)
        );
        assert_eq!(
            stats.unparseable,
            expect.get(names::UNPARSEABLE).copied().unwrap_or(0)
        );
    }

    #[test]
    fn counters_are_set_per_run_and_summed_over_runs() {
        check(&[], &[]);
        check(&[&[]], &[]);
        check(
            &[&[("events_lost", 3), ("events_lost", 5)]],
            &[("events_lost", 5)],
        );
        check(
            &[
                &[("events_lost", 5), ("unparseable", 1)],
                &[("events_lost", 7), ("new_counter", 2)],
            ],
            &[("events_lost", 12), ("new_counter", 2), ("unparseable", 1)],
        );
        check(
            &[
                &[("aborted", 1)],
                &[("aborted", 2)],
                &[("aborted", 4), ("aborted", 8)],
            ],
            &[("aborted", 11)],
        );
    }

    #[test]
    fn stats_count_requests_and_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let conn = store.connection();
        let run = RunInfo {
            target_pid: 7,
            version: "1.2.3".into(),
            started_at: 1_795_449_401_000_000,
        };
        let id = begin_run(conn, &run).expect("begin");
        let batch: Vec<_> = (0..4).map(request).collect();
        append_requests(conn, id, 1, &batch).expect("append");
        set_counters(
            conn,
            id,
            [(names::EVENTS_RECEIVED, 9), (names::CONN_TABLE_FULL, 1)],
        )
        .expect("set");
        let stats = stats(conn).expect("stats");
        assert_eq!(
            (
                stats.requests_stored,
                stats.runs,
                stats.events_received,
                stats.conn_table_full,
                stats.aborted
            ),
            (4, 1, 9, 1, 0)
        );
        let row: (i64, Option<i64>, u32, String) = conn
            .query_row("SELECT epoch_us(started_at), epoch_us(stopped_at), target_pid, version FROM daemon_runs", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .expect("run row");
        assert_eq!(row, (1_795_449_401_000_000, None, 7, "1.2.3".to_owned()));
        assert_eq!(
            counters(conn, id)
                .expect("counters")
                .get(names::EVENTS_RECEIVED),
            Some(&9)
        );
    }
}
