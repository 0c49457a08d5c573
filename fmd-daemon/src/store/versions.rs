//! Application versions: the `version` and `user` columns of `requests`, and the `versions` table that
//! keeps when each version was first (and last) seen and how many requests it served, kept current by the
//! writer in the same transaction as the requests, so `query versions` never scans the requests.

use std::collections::BTreeMap;

use duckdb::{
    params,
    types::{TimeUnit, Value},
    Connection,
};
use serde::{Deserialize, Serialize};

use super::{
    time::{serde_us, Micros},
    Error,
};
use crate::request::Request;

/// Migration 5: the request columns and the versions table. `IF NOT EXISTS`: the store tests that rebuild
/// an older file drop that version's later tables, not the columns rows are appended with.
pub const MIGRATION: &str = r#"
    ALTER TABLE requests ADD COLUMN IF NOT EXISTS version VARCHAR;
    ALTER TABLE requests ADD COLUMN IF NOT EXISTS "user" VARCHAR;
    CREATE TABLE IF NOT EXISTS versions (
        version     VARCHAR PRIMARY KEY,
        first_seen  TIMESTAMP NOT NULL,
        last_seen   TIMESTAMP NOT NULL,
        hits        UBIGINT NOT NULL
    );
"#;

/// One row of `query versions` and `GET /api/versions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRow {
    pub version: String,
    /// Start time of the first request served by it, RFC 3339 UTC.
    #[serde(with = "serde_us")]
    pub first_seen: Micros,
    #[serde(with = "serde_us")]
    pub last_seen: Micros,
    pub hits: u64,
}

/// Counts `batch`'s requests into `versions` (inside the caller's transaction).
pub(super) fn count(conn: &Connection, batch: &[Request]) -> Result<(), Error> {
    let mut seen: BTreeMap<&str, (Micros, Micros, u64)> = BTreeMap::new();
    for r in batch {
        if let Some(v) = r.version.as_deref() {
            let e = seen.entry(v).or_insert((r.ts_us, r.ts_us, 0));
            e.0 = e.0.min(r.ts_us);
            e.1 = e.1.max(r.ts_us);
            e.2 += 1;
        }
    }
    if seen.is_empty() {
        return Ok(());
    }
    let sql = |source| Error::Sql {
        what: "count requests per version",
        source,
    };
    let mut stmt = conn
        .prepare(
            "INSERT INTO versions VALUES (?, ?, ?, ?) ON CONFLICT (version) DO UPDATE SET
               first_seen = least(versions.first_seen, excluded.first_seen),
               last_seen = greatest(versions.last_seen, excluded.last_seen),
               hits = versions.hits + excluded.hits",
        )
        .map_err(sql)?;
    for (version, (first, last, hits)) in seen {
        stmt.execute(params![
            version,
            Value::Timestamp(TimeUnit::Microsecond, first),
            Value::Timestamp(TimeUnit::Microsecond, last),
            hits
        ])
        .map_err(sql)?;
    }
    Ok(())
}

/// Every version seen, oldest first.
pub fn versions(conn: &Connection) -> Result<Vec<VersionRow>, Error> {
    let sql = |source| Error::Sql {
        what: "read versions",
        source,
    };
    let mut stmt = conn
        .prepare(
            "SELECT version, epoch_us(first_seen), epoch_us(last_seen), hits FROM versions
             ORDER BY first_seen, version",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(VersionRow {
                version: r.get(0)?,
                first_seen: r.get(1)?,
                last_seen: r.get(2)?,
                hits: r.get(3)?,
            })
        })
        .map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{append_requests, requests, test_support::request, RequestFilter, Store};

    #[test]
    fn versions_count_their_requests_across_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let tagged = |i: u32, version: Option<&str>, user: Option<&str>| Request {
            version: version.map(str::to_owned),
            user: user.map(str::to_owned),
            ..request(i)
        };
        let first = vec![
            tagged(0, Some("aaa"), Some("alice")),
            tagged(1, Some("aaa"), None),
            tagged(2, None, Some("bob")),
        ];
        append_requests(store.connection(), 1, 1, &first).expect("append");
        let second = vec![tagged(3, Some("aaa"), None), tagged(4, Some("bbb"), None)];
        append_requests(store.connection(), 1, 4, &second).expect("append");
        let got = versions(store.connection()).expect("versions");
        assert_eq!(
            got,
            [
                VersionRow {
                    version: "aaa".into(),
                    first_seen: request(0).ts_us,
                    last_seen: request(3).ts_us,
                    hits: 3
                },
                VersionRow {
                    version: "bbb".into(),
                    first_seen: request(4).ts_us,
                    last_seen: request(4).ts_us,
                    hits: 1
                }
            ]
        );
        let rows = requests(store.connection(), &RequestFilter::default()).expect("rows");
        let tags: Vec<_> = rows
            .iter()
            .map(|r| (r.version.as_deref(), r.user.as_deref()))
            .collect();
        assert_eq!(
            tags,
            [
                (Some("aaa"), Some("alice")),
                (Some("aaa"), None),
                (None, Some("bob")),
                (Some("aaa"), None),
                (Some("bbb"), None)
            ]
        );
    }
}
