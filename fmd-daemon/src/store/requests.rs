//! The `requests` table: appending batches of [`Request`]s and the filtered read that `/api/requests` and
//! `fmd query requests` both serve, as [`RequestRow`]s whose JSON field names are a public contract.

use duckdb::{
    params,
    types::{TimeUnit, Value},
    Connection,
};
use serde::{Deserialize, Serialize};

use super::{
    time::{serde_us, Micros},
    transaction, Error,
};
use crate::request::Request;

/// One stored request as shown to users. Field names and order are the contract of `/api/requests` and
/// `fmd query requests` (JSON, CSV header).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRow {
    pub id: i64,
    /// Start time, serialised as RFC 3339 UTC with microseconds.
    #[serde(with = "serde_us")]
    pub ts: Micros,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub duration_ms: f64,
    pub remote_ip: Option<String>,
    pub worker_pid: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub endpoint: Option<String>,
    pub rule: Option<String>,
    pub http_version: String,
    pub tid: u32,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// The app version that served it (config `app_version` or the git commit).
    #[serde(default)]
    pub version: Option<String>,
    /// Who made it (the `[users]` extractors).
    #[serde(default)]
    pub user: Option<String>,
    /// The exception group the request raised (`/api/exceptions/{group}`), when it logged a traceback.
    pub exception: Option<String>,
}

/// Which requests to read. Bounds are microseconds since the epoch: `since` inclusive, `until` exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFilter {
    pub since: Option<Micros>,
    pub until: Option<Micros>,
    /// Keep only the most recent `limit` matches (still returned oldest first); `None` returns all.
    pub limit: Option<u64>,
    /// Exact Flask endpoint name.
    pub endpoint: Option<String>,
    /// Only requests before request `before_id` in the answer's order (time, then id): the next page of
    /// older rows is `before_id` = the first (oldest) id of the page just read.
    pub before_id: Option<i64>,
}

/// Reads the requests matching `filter`, oldest first (by `ts`, then `id`, i.e. arrival order for equal
/// times), which is the order a client sent them in.
pub fn requests(conn: &Connection, filter: &RequestFilter) -> Result<Vec<RequestRow>, Error> {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(since) = filter.since {
        conditions.push("ts >= ?");
        values.push(Value::Timestamp(TimeUnit::Microsecond, since));
    }
    if let Some(until) = filter.until {
        conditions.push("ts < ?");
        values.push(Value::Timestamp(TimeUnit::Microsecond, until));
    }
    if let Some(endpoint) = &filter.endpoint {
        conditions.push("endpoint = ?");
        values.push(Value::Text(endpoint.clone()));
    }
    if let Some(before) = filter.before_id {
        // The cursor is a position in (ts, id) order, so a page never skips or repeats a row whatever the
        // order ids were written in. An unknown id matches nothing.
        conditions.push(
            "(ts < (SELECT ts FROM requests WHERE id = ?) \
             OR (ts = (SELECT ts FROM requests WHERE id = ?) AND id < ?))",
        );
        values.extend([
            Value::BigInt(before),
            Value::BigInt(before),
            Value::BigInt(before),
        ]);
    }
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let columns = "id, epoch_us(ts), method, path, query, status, duration_ms, remote_ip, worker_pid, bytes_in, \
                   bytes_out, endpoint, rule, http_version, tid, host, user_agent, version, \"user\"";
    let exception = super::exceptions::REQUEST_EXCEPTION_SQL;
    let sql = match filter.limit {
        // The newest `limit` rows, then put back in time order (and only they look up their exception).
        Some(limit) => {
            values.push(Value::UBigInt(limit));
            format!(
                "SELECT *, {exception} FROM (SELECT {columns} FROM requests {filter_sql} ORDER BY ts DESC, id DESC \
                 LIMIT ?) r ORDER BY 2, 1"
            )
        }
        None => {
            format!("SELECT {columns}, {exception} FROM requests r {filter_sql} ORDER BY ts, id")
        }
    };
    let sql_err = |source| Error::Sql {
        what: "read requests",
        source,
    };
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(duckdb::params_from_iter(values), |row| {
            Ok(RequestRow {
                id: row.get(0)?,
                ts: row.get(1)?,
                method: row.get(2)?,
                path: row.get(3)?,
                query: row.get(4)?,
                status: row.get(5)?,
                duration_ms: row.get(6)?,
                remote_ip: row.get(7)?,
                worker_pid: row.get(8)?,
                bytes_in: row.get(9)?,
                bytes_out: row.get(10)?,
                endpoint: row.get(11)?,
                rule: row.get(12)?,
                http_version: row.get(13)?,
                tid: row.get(14)?,
                host: row.get(15)?,
                user_agent: row.get(16)?,
                version: row.get(17)?,
                user: row.get(18)?,
                exception: row.get(19)?,
            })
        })
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// The id the next appended request gets: one past the largest stored.
pub fn next_request_id(conn: &Connection) -> Result<i64, Error> {
    conn.query_row("SELECT coalesce(max(id), 0) + 1 FROM requests", [], |row| {
        row.get(0)
    })
    .map_err(|source| Error::Sql {
        what: "read the largest request id",
        source,
    })
}

/// Appends `batch` in one transaction with ids `first_id..`: all rows are stored or none, so a failed
/// batch can be retried as is.
pub fn append_requests(
    conn: &Connection,
    run_id: i64,
    first_id: i64,
    batch: &[Request],
) -> Result<(), Error> {
    transaction(conn, || append_rows(conn, run_id, first_id, batch))
}

/// Columns in the order [`append_rows`] gives values: named, so columns added by later migrations (in
/// whatever order they were merged) never shift the values.
const APPEND_COLUMNS: &[&str] = &[
    "id",
    "run_id",
    "ts",
    "duration_ns",
    "duration_ms",
    "method",
    "path",
    "query",
    "http_version",
    "status",
    "bytes_in",
    "bytes_out",
    "remote_ip",
    "worker_pid",
    "tid",
    "host",
    "user_agent",
    "head",
    "endpoint",
    "rule",
    "version",
    "user",
];

/// Appends `batch` with ids `first_id..`, and the exceptions they logged, inside the caller's transaction
/// (see [`transaction`]).
pub(super) fn append_rows(
    conn: &Connection,
    run_id: i64,
    first_id: i64,
    batch: &[Request],
) -> Result<(), Error> {
    let appended = (|| {
        let mut appender = conn.appender_with_columns("requests", APPEND_COLUMNS)?;
        for (id, r) in (first_id..).zip(batch) {
            appender.append_row(params![
                id,
                run_id,
                Value::Timestamp(TimeUnit::Microsecond, r.ts_us),
                r.duration_ns,
                // Exact for any duration below 2^53 ns (104 days).
                r.duration_ns as f64 / 1e6,
                r.method,
                r.path,
                r.query,
                r.http_version,
                r.status,
                r.bytes_in,
                r.bytes_out,
                r.remote_ip,
                r.worker_pid,
                r.tid,
                r.host,
                r.user_agent,
                r.head,
                r.endpoint,
                r.rule,
                r.version,
                r.user,
            ])?;
        }
        appender.flush()
    })();
    appended.map_err(|source| Error::Sql {
        what: "append requests",
        source,
    })?;
    super::versions::count(conn, batch)?;
    super::exceptions::append_exceptions(conn, first_id, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_support::request, Store};

    fn store_with(n: u32) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let batch: Vec<_> = (0..n).map(request).collect();
        append_requests(store.connection(), 1, 1, &batch).expect("append");
        (dir, store)
    }

    fn row_of(id: i64, r: &Request) -> RequestRow {
        RequestRow {
            id,
            ts: r.ts_us,
            method: r.method.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            status: r.status,
            duration_ms: r.duration_ns as f64 / 1e6,
            remote_ip: r.remote_ip.clone(),
            worker_pid: r.worker_pid,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            endpoint: r.endpoint.clone(),
            rule: r.rule.clone(),
            http_version: r.http_version.clone(),
            tid: r.tid,
            host: r.host.clone(),
            user_agent: r.user_agent.clone(),
            version: r.version.clone(),
            user: r.user.clone(),
            exception: None,
        }
    }

    #[test]
    fn appended_requests_read_back_field_by_field() {
        let (_dir, store) = store_with(50);
        let rows = requests(store.connection(), &RequestFilter::default()).expect("read");
        let expect: Vec<_> = (0..50)
            .map(|i| row_of(i64::from(i) + 1, &request(i)))
            .collect();
        assert_eq!(rows, expect);
        // The columns rows do not show.
        let (head, duration_ns, run_id): (Vec<u8>, u64, i64) = store
            .connection()
            .query_row(
                "SELECT head, duration_ns, run_id FROM requests WHERE id = 8",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("head");
        assert_eq!(
            (head, duration_ns, run_id),
            (request(7).head, request(7).duration_ns, 1)
        );
        assert_eq!(next_request_id(store.connection()).expect("next id"), 51);
    }

    #[test]
    fn extreme_values_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let r = Request {
            ts_us: 0,
            duration_ns: u64::MAX,
            method: "M\u{e9}\"'".into(),
            path: "/a,b\n".into(),
            status: u16::MAX,
            bytes_in: u64::MAX,
            worker_pid: u32::MAX,
            head: vec![0, 255, 10],
            ..Request::default()
        };
        append_requests(store.connection(), 1, 1, std::slice::from_ref(&r)).expect("append");
        assert_eq!(
            requests(store.connection(), &RequestFilter::default()).expect("read"),
            [row_of(1, &r)]
        );
    }

    fn check(filter: RequestFilter, expect_indexes: &[u32]) {
        let (_dir, store) = store_with(20);
        let ids: Vec<i64> = requests(store.connection(), &filter)
            .expect("read")
            .into_iter()
            .map(|r| r.id)
            .collect();
        let expect: Vec<i64> = expect_indexes.iter().map(|&i| i64::from(i) + 1).collect();
        assert_eq!(ids, expect, "{filter:?}");
    }

    #[test]
    fn filters_select_and_order() {
        let ts = |i: u32| request(i).ts_us;
        let all: Vec<u32> = (0..20).collect();
        check(RequestFilter::default(), &all);
        check(
            RequestFilter {
                since: Some(ts(15)),
                ..Default::default()
            },
            &[15, 16, 17, 18, 19],
        );
        check(
            RequestFilter {
                since: Some(ts(15) + 1),
                ..Default::default()
            },
            &[16, 17, 18, 19],
        );
        check(
            RequestFilter {
                until: Some(ts(3)),
                ..Default::default()
            },
            &[0, 1, 2],
        );
        check(
            RequestFilter {
                since: Some(ts(5)),
                until: Some(ts(8)),
                ..Default::default()
            },
            &[5, 6, 7],
        );
        check(
            RequestFilter {
                since: Some(ts(8)),
                until: Some(ts(5)),
                ..Default::default()
            },
            &[],
        );
        check(
            RequestFilter {
                limit: Some(3),
                ..Default::default()
            },
            &[17, 18, 19],
        );
        check(
            RequestFilter {
                limit: Some(0),
                ..Default::default()
            },
            &[],
        );
        check(
            RequestFilter {
                limit: Some(100),
                ..Default::default()
            },
            &all,
        );
        check(
            RequestFilter {
                endpoint: Some("item".into()),
                ..Default::default()
            },
            &[0, 2, 4, 6, 8, 10, 12, 14, 16, 18],
        );
        check(
            RequestFilter {
                endpoint: Some("nope".into()),
                ..Default::default()
            },
            &[],
        );
        check(
            RequestFilter {
                since: Some(ts(4)),
                until: Some(ts(15)),
                limit: Some(2),
                endpoint: Some("item".into()),
                before_id: None,
            },
            &[12, 14],
        );
    }

    #[test]
    fn pages_of_older_rows_follow_a_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        // Ids out of time order, and runs of equal times: the cursor must follow (ts, id), not ids.
        let batch: Vec<_> = (0..20)
            .map(|i| Request {
                ts_us: 1_000 * i64::from((i * 7) % 20 / 3),
                ..request(i)
            })
            .collect();
        append_requests(store.connection(), 1, 1, &batch).expect("append");
        let read = |limit, before_id| {
            requests(
                store.connection(),
                &RequestFilter {
                    limit,
                    before_id,
                    ..Default::default()
                },
            )
            .expect("read")
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<i64>>()
        };
        let all = read(None, None);
        assert_eq!(all.len(), 20);
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = read(Some(6), cursor);
            assert!(page.len() <= 6);
            let Some(&first) = page.first() else { break };
            cursor = Some(first);
            pages.push(page);
        }
        assert_eq!(pages.len(), 4);
        let joined: Vec<i64> = pages.into_iter().rev().flatten().collect();
        assert_eq!(joined, all, "pages neither skip nor repeat a row");
        assert!(
            read(Some(6), Some(999)).is_empty(),
            "an unknown cursor matches nothing"
        );
    }

    #[test]
    fn equal_times_keep_arrival_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let batch: Vec<_> = (0..5)
            .map(|i| Request {
                ts_us: 1_000,
                ..request(i)
            })
            .collect();
        append_requests(store.connection(), 1, 10, &batch).expect("append");
        let ids: Vec<i64> = requests(
            store.connection(),
            &RequestFilter {
                limit: Some(3),
                ..Default::default()
            },
        )
        .expect("read")
        .into_iter()
        .map(|r| r.id)
        .collect();
        assert_eq!(ids, [12, 13, 14]);
    }

    #[test]
    fn failed_batch_stores_nothing() {
        let (_dir, store) = store_with(3);
        // A constraint only the batch's second row breaks (request 11 has a query, 10 has none): the whole
        // batch must be rolled back.
        let conn = store.connection();
        conn.execute_batch(
            "UPDATE requests SET query = coalesce(query, 'q'); \
             ALTER TABLE requests ALTER COLUMN query SET NOT NULL",
        )
        .expect("constrain");
        let batch: Vec<_> = (12..16).map(request).collect();
        assert!(batch[0].query.is_some() && batch[1].query.is_none());
        assert!(append_requests(conn, 1, 4, &batch).is_err());
        assert_eq!(
            requests(store.connection(), &RequestFilter::default())
                .expect("read")
                .len(),
            3
        );
        conn.execute_batch("ALTER TABLE requests ALTER COLUMN query DROP NOT NULL")
            .expect("unconstrain");
        append_requests(conn, 1, 4, &batch).expect("retry");
        assert_eq!(
            requests(store.connection(), &RequestFilter::default())
                .expect("read")
                .len(),
            7
        );
    }

    #[test]
    fn json_field_names_and_time_format() {
        let row = row_of(7, &request(3));
        let json = serde_json::to_value(&row).expect("json");
        let expect = serde_json::json!({
            "id": 7,
            "ts": "2026-11-23T15:56:41.126456Z",
            "method": "POST",
            "path": "/item/3",
            "query": "q=3",
            "status": 203,
            "duration_ms": 1.500003,
            "remote_ip": "10.0.0.3",
            "worker_pid": 4000,
            "bytes_in": 103,
            "bytes_out": 2003,
            "endpoint": null,
            "rule": null,
            "http_version": "HTTP/1.1",
            "tid": 5003,
            "host": "localhost:8000",
            "user_agent": "curl/8.5.0",
            "version": null,
            "user": null,
            "exception": null,
        });
        assert_eq!(json, expect);
        let text = serde_json::to_string(&row).expect("text");
        assert!(
            text.starts_with(r#"{"id":7,"ts":"2026-11-23T15:56:41.126456Z","method""#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<RequestRow>(&text).expect("back"),
            row
        );
    }
}
