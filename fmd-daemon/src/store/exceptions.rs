//! Exceptions logged while requests were served: one row per occurrence (the request, its group, its
//! message) and one per group (type, the latest message and traceback with source context, first and last
//! seen). Counts per endpoint come from the occurrences; a request's `exception` is the group of its
//! occurrence marked `raised`.

use std::collections::HashMap;

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
use crate::{
    exceptions::{Detail, DetailException, DetailFrame},
    request::Request,
};

/// Migration: the exception tables.
pub const MIGRATION: &str = "
    CREATE TABLE exception_groups (
        group_id    VARCHAR PRIMARY KEY,
        type        VARCHAR NOT NULL,
        -- The latest occurrence's message and traceback (JSON: frames with source context, chain).
        message     VARCHAR NOT NULL,
        detail      VARCHAR NOT NULL,
        first_seen  TIMESTAMP NOT NULL,
        last_seen   TIMESTAMP NOT NULL
    );
    CREATE TABLE exception_occurrences (
        request_id  BIGINT NOT NULL,
        group_id    VARCHAR NOT NULL,
        ts          TIMESTAMP NOT NULL,
        endpoint    VARCHAR,
        message     VARCHAR NOT NULL,
        -- The exception the request raised (its last traceback), as opposed to one it logged and handled.
        raised      BOOLEAN NOT NULL
    );
    CREATE INDEX exception_occurrences_request ON exception_occurrences (request_id);
    CREATE INDEX exception_occurrences_group ON exception_occurrences (group_id);
";

/// Appends the exceptions of `batch` (requests with ids `first_id..`) inside the caller's transaction.
pub(super) fn append_exceptions(
    conn: &Connection,
    first_id: i64,
    batch: &[Request],
) -> Result<(), Error> {
    let sql_err = |what| move |source| Error::Sql { what, source };
    if batch.iter().all(|r| r.exceptions.is_empty()) {
        return Ok(());
    }
    // One upsert per group and batch: DuckDB refuses to update one row twice in a statement.
    let mut groups: HashMap<&str, (&str, &str, &str, Micros, Micros)> = HashMap::new();
    {
        let mut appender = conn
            .appender("exception_occurrences")
            .map_err(sql_err("append exception occurrences"))?;
        for (id, r) in (first_id..).zip(batch) {
            for e in &r.exceptions {
                appender
                    .append_row(params![
                        id,
                        e.group,
                        Value::Timestamp(TimeUnit::Microsecond, r.ts_us),
                        r.endpoint,
                        e.message,
                        e.raised,
                    ])
                    .map_err(sql_err("append exception occurrences"))?;
                let g = groups.entry(e.group.as_str()).or_insert((
                    e.type_name.as_str(),
                    e.message.as_str(),
                    &*e.detail,
                    r.ts_us,
                    r.ts_us,
                ));
                g.3 = g.3.min(r.ts_us);
                if r.ts_us >= g.4 {
                    (g.1, g.2, g.4) = (e.message.as_str(), &*e.detail, r.ts_us);
                }
            }
        }
        appender
            .flush()
            .map_err(sql_err("append exception occurrences"))?;
    }
    let mut stmt = conn
        .prepare(
            "INSERT INTO exception_groups VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET \
             message = CASE WHEN excluded.last_seen >= last_seen THEN excluded.message ELSE message END, \
             detail = CASE WHEN excluded.last_seen >= last_seen THEN excluded.detail ELSE detail END, \
             first_seen = least(first_seen, excluded.first_seen), \
             last_seen = greatest(last_seen, excluded.last_seen)",
        )
        .map_err(sql_err("store exception groups"))?;
    for (group, (type_name, message, detail, first, last)) in groups {
        stmt.execute(params![
            group,
            type_name,
            message,
            detail,
            Value::Timestamp(TimeUnit::Microsecond, first),
            Value::Timestamp(TimeUnit::Microsecond, last),
        ])
        .map_err(sql_err("store exception groups"))?;
    }
    Ok(())
}

/// One exception group at one endpoint, as `/api/exceptions` and `query exceptions` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExceptionGroupRow {
    pub group: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// The latest occurrence's message.
    pub message: String,
    pub endpoint: Option<String>,
    /// Occurrences at this endpoint.
    pub count: u64,
    #[serde(with = "serde_us")]
    pub first_seen: Micros,
    #[serde(with = "serde_us")]
    pub last_seen: Micros,
    /// The raised exception's frames, outermost first, with the source around each.
    pub frames: Vec<DetailFrame>,
    /// Earlier exceptions of the chain, oldest first (empty when there was no chaining).
    pub chain: Vec<DetailException>,
}

/// Which groups to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExceptionFilter {
    pub endpoint: Option<String>,
    pub group: Option<String>,
    /// Occurrences from this time on count (`first_seen`/`last_seen` too).
    pub since: Option<Micros>,
}

/// Groups per endpoint, most recently seen first.
pub fn exception_groups(
    conn: &Connection,
    filter: &ExceptionFilter,
) -> Result<Vec<ExceptionGroupRow>, Error> {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(endpoint) = &filter.endpoint {
        conditions.push("o.endpoint = ?");
        values.push(Value::Text(endpoint.clone()));
    }
    if let Some(group) = &filter.group {
        conditions.push("o.group_id = ?");
        values.push(Value::Text(group.clone()));
    }
    if let Some(since) = filter.since {
        conditions.push("o.ts >= ?");
        values.push(Value::Timestamp(TimeUnit::Microsecond, since));
    }
    let where_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT g.group_id, g.type, g.message, o.endpoint, o.n, epoch_us(o.first), epoch_us(o.last), g.detail \
         FROM (SELECT group_id, endpoint, count(*) AS n, min(ts) AS first, max(ts) AS last \
               FROM exception_occurrences o {where_sql} GROUP BY group_id, endpoint) o \
         JOIN exception_groups g USING (group_id) \
         ORDER BY o.last DESC, g.group_id, o.endpoint NULLS LAST"
    );
    let sql_err = |source| Error::Sql {
        what: "read exception groups",
        source,
    };
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(duckdb::params_from_iter(values), |row| {
            let detail: String = row.get(7)?;
            // Written by this module from a `Detail`; a row that does not parse shows no frames.
            let detail: Detail = serde_json::from_str(&detail).unwrap_or_default();
            Ok(ExceptionGroupRow {
                group: row.get(0)?,
                type_name: row.get(1)?,
                message: row.get(2)?,
                endpoint: row.get(3)?,
                count: row.get(4)?,
                first_seen: row.get(5)?,
                last_seen: row.get(6)?,
                frames: detail.frames,
                chain: detail.chain,
            })
        })
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// One group over all its endpoints, for `/api/exceptions/{group}`: the fields of a row with the counts
/// summed (`endpoint` is where it occurred most), each endpoint's share, and the latest requests it
/// occurred in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExceptionGroupDetail {
    #[serde(flatten)]
    pub group: ExceptionGroupRow,
    pub endpoints: Vec<EndpointCount>,
    /// Ids of the latest requests (at most [`RECENT_REQUESTS`]) it occurred in, newest first.
    pub requests: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointCount {
    pub endpoint: Option<String>,
    pub count: u64,
    #[serde(with = "serde_us")]
    pub first_seen: Micros,
    #[serde(with = "serde_us")]
    pub last_seen: Micros,
}

/// Requests listed with a group.
pub const RECENT_REQUESTS: usize = 20;

/// The group `group` over all endpoints; `None` when no occurrence of it is stored.
pub fn exception_group(
    conn: &Connection,
    group: &str,
) -> Result<Option<ExceptionGroupDetail>, Error> {
    let rows = exception_groups(
        conn,
        &ExceptionFilter {
            group: Some(group.to_owned()),
            ..ExceptionFilter::default()
        },
    )?;
    let Some(most) = rows.iter().max_by_key(|r| r.count) else {
        return Ok(None);
    };
    let mut summary = most.clone();
    summary.count = rows.iter().map(|r| r.count).sum();
    summary.first_seen = rows
        .iter()
        .map(|r| r.first_seen)
        .min()
        .unwrap_or(most.first_seen);
    summary.last_seen = rows
        .iter()
        .map(|r| r.last_seen)
        .max()
        .unwrap_or(most.last_seen);
    let endpoints = rows
        .iter()
        .map(|r| EndpointCount {
            endpoint: r.endpoint.clone(),
            count: r.count,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
        })
        .collect();
    let sql_err = |source| Error::Sql {
        what: "read an exception group's requests",
        source,
    };
    let mut stmt = conn
        .prepare(
            "SELECT request_id FROM exception_occurrences WHERE group_id = ? \
             ORDER BY ts DESC, request_id DESC LIMIT ?",
        )
        .map_err(sql_err)?;
    let requests = stmt
        .query_map(params![group, RECENT_REQUESTS as u64], |row| row.get(0))
        .map_err(sql_err)?
        .collect::<Result<_, _>>()
        .map_err(sql_err)?;
    Ok(Some(ExceptionGroupDetail {
        group: summary,
        endpoints,
        requests,
    }))
}

/// SQL giving the group a request raised, for a `requests` row aliased `r` (NULL when it raised none).
pub(super) const REQUEST_EXCEPTION_SQL: &str =
    "(SELECT any_value(o.group_id) FROM exception_occurrences o WHERE o.request_id = r.id AND o.raised)";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        exceptions::Logged,
        store::{append_requests, requests, test_support::request, RequestFilter, Store},
    };

    fn logged(group: &str, type_name: &str, message: &str, raised: bool) -> Logged {
        let detail = Detail {
            frames: vec![DetailFrame {
                file: "/app/app.py".into(),
                line: 7,
                function: "helper".into(),
                code: Some("return d['missing']".into()),
                context: Vec::new(),
            }],
            chain: Vec::new(),
        };
        Logged {
            group: group.into(),
            type_name: type_name.into(),
            message: message.into(),
            detail: Arc::from(serde_json::to_string(&detail).expect("json")),
            raised,
        }
    }

    #[test]
    fn groups_count_per_endpoint_and_requests_carry_what_they_raised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let conn = store.connection();
        let mut batch: Vec<Request> = (0..6).map(request).collect();
        for (i, r) in batch.iter_mut().enumerate() {
            r.endpoint = Some(if i < 4 { "boom" } else { "other" }.into());
        }
        batch[0].exceptions = vec![logged("aaaa", "KeyError", "'first'", true)];
        batch[1].exceptions = vec![
            logged("bbbb", "ValueError", "handled", false),
            logged("aaaa", "KeyError", "'second'", true),
        ];
        batch[2].exceptions = vec![logged("aaaa", "KeyError", "'third'", true)];
        batch[4].exceptions = vec![logged("aaaa", "KeyError", "'elsewhere'", true)];
        // Two batches: the group's row is updated by the second.
        append_requests(conn, 1, 1, &batch[..2]).expect("append");
        append_requests(conn, 1, 3, &batch[2..]).expect("append");

        let rows = exception_groups(conn, &ExceptionFilter::default()).expect("groups");
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.group.as_str(),
                    r.endpoint.as_deref(),
                    r.count,
                    r.message.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("aaaa", Some("other"), 1, "'elsewhere'"),
                ("aaaa", Some("boom"), 3, "'elsewhere'"),
                ("bbbb", Some("boom"), 1, "handled"),
            ]
        );
        let boom = &rows[1];
        assert_eq!(
            (boom.first_seen, boom.last_seen),
            (batch[0].ts_us, batch[2].ts_us)
        );
        assert_eq!(boom.frames[0].function, "helper");
        let one = exception_groups(
            conn,
            &ExceptionFilter {
                group: Some("bbbb".into()),
                ..ExceptionFilter::default()
            },
        )
        .expect("group");
        assert_eq!(one.len(), 1);
        let at_boom = exception_groups(
            conn,
            &ExceptionFilter {
                endpoint: Some("boom".into()),
                ..ExceptionFilter::default()
            },
        )
        .expect("endpoint");
        assert_eq!(at_boom.len(), 2);
        let detail = exception_group(conn, "aaaa").expect("read").expect("found");
        assert_eq!(
            (
                detail.group.count,
                detail.group.endpoint.as_deref(),
                detail.endpoints.len()
            ),
            (4, Some("boom"), 2)
        );
        assert_eq!(detail.requests, [5, 3, 2, 1]);
        assert_eq!(exception_group(conn, "nope").expect("read"), None);

        let raised: Vec<_> = requests(conn, &RequestFilter::default())
            .expect("requests")
            .into_iter()
            .map(|r| r.exception)
            .collect();
        assert_eq!(
            raised,
            [
                Some("aaaa".into()),
                Some("aaaa".into()),
                Some("aaaa".into()),
                None,
                Some("aaaa".into()),
                None
            ]
        );
    }
}
