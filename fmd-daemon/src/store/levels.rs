//! Stored monitoring levels per endpoint, the level-0 requests counted instead of stored, and the running
//! averages outliers are measured against (so they survive restarts). Migration 5 also creates the
//! outliers table (`store/outliers.rs`).

use std::collections::HashMap;

use duckdb::{
    params,
    types::{TimeUnit, Value},
    Connection,
};
use serde::{Deserialize, Serialize};

use super::{time::Micros, transaction, Error};
use crate::outliers::Average;

pub const MIGRATION: &str = "
    -- The monitoring level (0-3) of each endpoint: set by the user, or the default when first seen.
    CREATE TABLE endpoint_levels (
        endpoint    VARCHAR PRIMARY KEY,
        level       UTINYINT NOT NULL,
        updated_at  TIMESTAMP NOT NULL
    );
    -- Requests of level-0 endpoints: counted, not stored.
    CREATE TABLE endpoint_unrecorded (
        endpoint        VARCHAR PRIMARY KEY,
        requests        UBIGINT NOT NULL,
        last_requested  TIMESTAMP NOT NULL
    );
    -- The running average outliers are measured against.
    CREATE TABLE endpoint_averages (
        endpoint  VARCHAR PRIMARY KEY,
        requests  UBIGINT NOT NULL,
        mean_ms   DOUBLE NOT NULL
    );
    -- One row per outlier or live snapshot. JSON columns are kept as text: they are shown, not queried.
    CREATE TABLE outliers (
        id                         BIGINT PRIMARY KEY,
        endpoint                   VARCHAR NOT NULL,
        method                     VARCHAR NOT NULL,
        path                       VARCHAR NOT NULL,
        worker_pid                 UINTEGER NOT NULL,
        tid                        UINTEGER NOT NULL,
        -- The request's start: with worker_pid and tid, it finds the request row once stored.
        request_ts                 TIMESTAMP NOT NULL,
        taken_at                   TIMESTAMP NOT NULL,
        live                       BOOLEAN NOT NULL,
        duration_ms                DOUBLE NOT NULL,
        threshold_ms               DOUBLE NOT NULL,
        stack                      VARCHAR NOT NULL,
        cpu_percent                VARCHAR NOT NULL,
        worker_rss_bytes           UBIGINT,
        machine_memory_used_bytes  UBIGINT,
        headers                    VARCHAR NOT NULL,
        request_values             VARCHAR NOT NULL,
        environ                    VARCHAR NOT NULL
    );
    CREATE INDEX outliers_endpoint_ts ON outliers (endpoint, request_ts);
";

/// One endpoint's level as `GET`/`PUT /api/endpoints/{endpoint}/level` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointLevel {
    pub endpoint: String,
    pub level: u8,
    /// Requests counted but not stored while the endpoint was at level 0.
    pub unrecorded_requests: u64,
    /// The latest level-0 request's start (RFC 3339, UTC).
    pub last_unrecorded: Option<String>,
}

fn sql(what: &'static str) -> impl Fn(duckdb::Error) -> Error {
    move |source| Error::Sql { what, source }
}

fn ts(us: Micros) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, us)
}

/// Whether fmd knows `endpoint`: it has a level, is in a route table or named by a request.
pub fn known_endpoint(conn: &Connection, endpoint: &str) -> Result<bool, Error> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM endpoint_levels WHERE endpoint = ?1)
             OR EXISTS (SELECT 1 FROM endpoints WHERE endpoint = ?1)
             OR EXISTS (SELECT 1 FROM requests WHERE endpoint = ?1)",
        params![endpoint],
        |r| r.get(0),
    )
    .map_err(sql("look for an endpoint"))
}

/// Every stored level.
pub fn levels(conn: &Connection) -> Result<HashMap<String, u8>, Error> {
    let mut stmt = conn
        .prepare("SELECT endpoint, level FROM endpoint_levels")
        .map_err(sql("read levels"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u8>(1)?)))
        .map_err(sql("read levels"))?;
    rows.collect::<Result<_, _>>().map_err(sql("read levels"))
}

/// Sets `endpoint`'s level (the user's choice).
pub fn set_level(conn: &Connection, endpoint: &str, level: u8, now: Micros) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO endpoint_levels VALUES (?, ?, ?)
         ON CONFLICT (endpoint) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at",
        params![endpoint, level, ts(now)],
    )
    .map(drop)
    .map_err(sql("set a level"))
}

/// Stores the default level of endpoints seen for the first time; a level already stored wins.
pub fn insert_levels(conn: &Connection, new: &[(String, u8)], now: Micros) -> Result<(), Error> {
    for (endpoint, level) in new {
        conn.execute(
            "INSERT INTO endpoint_levels VALUES (?, ?, ?) ON CONFLICT (endpoint) DO NOTHING",
            params![endpoint, level, ts(now)],
        )
        .map_err(sql("store a default level"))?;
    }
    Ok(())
}

/// Adds level-0 requests: `(endpoint, requests, latest start)`.
pub fn add_unrecorded(conn: &Connection, counts: &[(String, u64, Micros)]) -> Result<(), Error> {
    for (endpoint, n, last) in counts {
        conn.execute(
            "INSERT INTO endpoint_unrecorded VALUES (?, ?, ?)
             ON CONFLICT (endpoint) DO UPDATE SET requests = endpoint_unrecorded.requests + excluded.requests,
                 last_requested = greatest(endpoint_unrecorded.last_requested, excluded.last_requested)",
            params![endpoint, n, ts(*last)],
        )
        .map_err(sql("count level-0 requests"))?;
    }
    Ok(())
}

/// Level-0 requests per endpoint: (count, latest start).
pub fn unrecorded(conn: &Connection) -> Result<HashMap<String, (u64, Micros)>, Error> {
    let mut stmt = conn
        .prepare("SELECT endpoint, requests, epoch_us(last_requested) FROM endpoint_unrecorded")
        .map_err(sql("read level-0 counts"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .map_err(sql("read level-0 counts"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("read level-0 counts"))
}

/// One endpoint's level and level-0 count; `default` when no level is stored for it.
pub fn endpoint_level(
    conn: &Connection,
    endpoint: &str,
    default: u8,
) -> Result<EndpointLevel, Error> {
    let level = levels(conn)?.get(endpoint).copied().unwrap_or(default);
    let (unrecorded_requests, last) = unrecorded(conn)?
        .get(endpoint)
        .map_or((0, None), |&(n, t)| (n, Some(super::time::format_us(t))));
    Ok(EndpointLevel {
        endpoint: endpoint.to_owned(),
        level,
        unrecorded_requests,
        last_unrecorded: last,
    })
}

/// The stored running averages.
pub fn averages(conn: &Connection) -> Result<HashMap<String, Average>, Error> {
    let mut stmt = conn
        .prepare("SELECT endpoint, requests, mean_ms FROM endpoint_averages")
        .map_err(sql("read averages"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                Average {
                    requests: r.get(1)?,
                    mean_ms: r.get(2)?,
                },
            ))
        })
        .map_err(sql("read averages"))?;
    rows.collect::<Result<_, _>>().map_err(sql("read averages"))
}

pub fn save_averages(conn: &Connection, averages: &[(String, Average)]) -> Result<(), Error> {
    for (endpoint, a) in averages {
        conn.execute(
            "INSERT INTO endpoint_averages VALUES (?, ?, ?)
             ON CONFLICT (endpoint) DO UPDATE SET requests = excluded.requests, mean_ms = excluded.mean_ms",
            params![endpoint, a.requests, a.mean_ms],
        )
        .map_err(sql("store averages"))?;
    }
    Ok(())
}

/// What the endpoints view takes from here: the stored level (else `fallback`) and, for level-0
/// requests, a later last-requested time than the stored requests give.
pub(super) fn apply(
    conn: &Connection,
    rows: &mut [super::EndpointRow],
    fallback: u8,
) -> Result<(), Error> {
    let levels = levels(conn)?;
    let unrecorded = unrecorded(conn)?;
    for row in rows {
        row.monitor_level = levels.get(&row.endpoint).copied().unwrap_or(fallback);
        if let Some(&(_, last)) = unrecorded.get(&row.endpoint) {
            row.last_requested = Some(row.last_requested.map_or(last, |t| t.max(last)));
        }
    }
    Ok(())
}

/// Runs `f` in one transaction (the outlier writer stores a batch at once).
pub(super) fn in_transaction(
    conn: &Connection,
    f: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    transaction(conn, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn levels_counts_and_averages_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let c = store.connection();
        insert_levels(c, &[("a".into(), 3), ("b".into(), 3)], 1).expect("insert");
        set_level(c, "a", 0, 2).expect("set");
        // A default never overrides a stored level.
        insert_levels(c, &[("a".into(), 3)], 3).expect("insert");
        assert_eq!(
            levels(c).expect("levels"),
            HashMap::from([("a".into(), 0), ("b".into(), 3)])
        );
        add_unrecorded(c, &[("a".into(), 2, 100)]).expect("add");
        add_unrecorded(c, &[("a".into(), 3, 50)]).expect("add");
        let got = endpoint_level(c, "a", 3).expect("level");
        assert_eq!((got.level, got.unrecorded_requests), (0, 5));
        assert_eq!(endpoint_level(c, "zzz", 2).expect("level").level, 2);
        let avg = Average {
            requests: 12,
            mean_ms: 4.5,
        };
        save_averages(c, &[("a".into(), avg)]).expect("save");
        save_averages(
            c,
            &[(
                "a".into(),
                Average {
                    requests: 13,
                    ..avg
                },
            )],
        )
        .expect("save");
        assert_eq!(averages(c).expect("averages")["a"].requests, 13);
    }
}
