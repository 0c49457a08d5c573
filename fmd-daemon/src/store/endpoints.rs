//! The app's endpoints: the route tables the daemon read (kept across deploys, so never-requested and
//! retired rules stay listed), how each run attributes requests (`attribution`), and the per-endpoint
//! figures that `/api/endpoints` and `fmd query endpoints` show.

use std::collections::{BTreeSet, VecDeque};

use duckdb::{
    params, params_from_iter,
    types::{TimeUnit, Value},
    Connection,
};
use serde::{Deserialize, Serialize};

use super::{
    rollup::{quantile, BUCKET, WATERMARK},
    time::Micros,
    transaction, Error,
};
use crate::flask::{attribution::Mode, RouteInfo};

/// The attribution modes as stored and shown (`mode` of [`EndpointList`]).
pub mod modes {
    /// Endpoints are Flask's, from a route table read in a worker's memory.
    pub const FLASK_ROUTES: &str = "flask-routes";
    /// No route table could be read: endpoints are `METHOD /path/<template>`.
    pub const PATH_TEMPLATES: &str = "path-templates";
    /// No worker's route table has been read yet (and none has failed).
    pub const PENDING: &str = "pending";
}

/// The stored name of an [`Attributor`](crate::flask::attribution::Attributor) mode.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Pending => modes::PENDING,
        Mode::FlaskRoutes => modes::FLASK_ROUTES,
        Mode::PathTemplates => modes::PATH_TEMPLATES,
    }
}

/// The level shown for an endpoint no daemon has given a level yet (see `store::levels`).
pub const MONITOR_LEVEL: u8 = 1;

const DAY_US: Micros = 86_400_000_000;
const HOUR_US: Micros = 3_600_000_000;

/// One endpoint as shown to users. Field names and order are the contract of `/api/endpoints` and
/// `fmd query endpoints` (JSON, CSV header).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointRow {
    /// The Flask endpoint name (`users.show`), or `METHOD /path/<template>` in path-template mode.
    pub endpoint: String,
    /// The rule template (`/users/<int:id>`).
    pub rule: String,
    /// From the latest route table listing the rule; for endpoints known only from requests, the methods
    /// they were requested with. Sorted; empty means any method.
    pub methods: Vec<String>,
    /// Requests over all time.
    pub hits: u64,
    /// Requests since 00:00 UTC of the query's day.
    pub hits_today: u64,
    /// Requests in the 7 × 24 hours before the query.
    pub hits_7d: u64,
    /// Median duration over all time (interpolated like `quantile_cont`); `None` if never requested.
    /// Read from log-scaled duration histograms (buckets 1% wide): within 1% of the exact median,
    /// exact when that is 0.
    pub median_ms: Option<f64>,
    /// 90th percentile duration over all time, within 1% like [`Self::median_ms`]; `None` if never
    /// requested.
    pub p90_ms: Option<f64>,
    /// Share of requests answered with a 5xx status, 0 to 1; `None` if never requested.
    pub error_rate: Option<f64>,
    /// The latest request's start, serialised as RFC 3339 UTC with microseconds; `None` if never requested.
    #[serde(with = "serde_opt_us")]
    pub last_requested: Option<Micros>,
    /// How closely fmd follows the endpoint (FMD's 0-3), as stored by `store::levels`.
    pub monitor_level: u8,
}

/// The endpoints answer: the endpoints with how they were found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointList {
    /// The latest run's [`modes`] value.
    pub mode: String,
    /// Rules in the latest route table the latest run read (0 when none was read).
    pub rules: u64,
    /// Requests that matched no endpoint (404, 405, trailing-slash redirects), over all time.
    pub unmatched: u64,
    pub endpoints: Vec<EndpointRow>,
}

/// How a run attributes requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub mode: String,
    pub rules: u64,
}

/// Records `run_id`'s attribution mode and rule count, replacing what it recorded before.
pub fn set_attribution(
    conn: &Connection,
    run_id: i64,
    mode: &str,
    rules: u64,
    at: Micros,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO attribution (run_id, mode, rules, updated_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT DO UPDATE SET mode = excluded.mode, rules = excluded.rules, updated_at = excluded.updated_at",
        params![run_id, mode, rules, Value::Timestamp(TimeUnit::Microsecond, at)],
    )
    .map(drop)
    .map_err(|source| Error::Sql {
        what: "record the attribution mode",
        source,
    })
}

/// The latest run's attribution; [`modes::PENDING`] with no rules when no run recorded one.
pub fn attribution(conn: &Connection) -> Result<Attribution, Error> {
    let found = conn.query_row(
        "SELECT mode, rules FROM attribution ORDER BY run_id DESC LIMIT 1",
        [],
        |row| {
            Ok(Attribution {
                mode: row.get(0)?,
                rules: row.get(1)?,
            })
        },
    );
    match found {
        Ok(attribution) => Ok(attribution),
        Err(duckdb::Error::QueryReturnedNoRows) => Ok(Attribution {
            mode: modes::PENDING.to_owned(),
            rules: 0,
        }),
        Err(source) => Err(Error::Sql {
            what: "read the attribution mode",
            source,
        }),
    }
}

/// Records a route table read at `at` by run `run_id`, in one transaction: a known (endpoint, rule,
/// methods) gets its `last_seen` moved forward, a new one gets a row; rules missing from `routes` keep
/// theirs. Returns the distinct rules recorded.
pub fn upsert_routes(
    conn: &Connection,
    run_id: i64,
    at: Micros,
    routes: &[RouteInfo],
) -> Result<usize, Error> {
    // Werkzeug keeps methods in a set: their order means nothing, so it must not make a new row.
    let keys: BTreeSet<(&str, &str, Vec<&str>)> = routes
        .iter()
        .map(|r| {
            let methods: BTreeSet<&str> = r.methods.iter().map(String::as_str).collect();
            (
                r.endpoint.as_str(),
                r.rule.as_str(),
                methods.into_iter().collect(),
            )
        })
        .collect();
    let sql_err = |source| Error::Sql {
        what: "record the route table",
        source,
    };
    if keys.is_empty() {
        return Ok(0);
    }
    // The whole table in three statements (a statement costs about a millisecond, and a big app has
    // hundreds of rules): staged in a temporary table, then matched against the stored rows at once.
    // Lists cannot be bound as parameters: one placeholder per method.
    let mut rows = Vec::with_capacity(keys.len());
    let mut values = Vec::new();
    for (endpoint, rule, methods) in &keys {
        rows.push(format!(
            "(?, ?, CAST([{}] AS VARCHAR[]))",
            vec!["?"; methods.len()].join(", ")
        ));
        values.push(Value::Text((*endpoint).to_owned()));
        values.push(Value::Text((*rule).to_owned()));
        values.extend(methods.iter().map(|m| Value::Text((*m).to_owned())));
    }
    let stage = format!(
        "CREATE OR REPLACE TEMP TABLE route_table AS SELECT * FROM (VALUES {}) AS t(endpoint, rule, methods)",
        rows.join(", ")
    );
    let at = Value::Timestamp(TimeUnit::Microsecond, at);
    let written = || -> duckdb::Result<()> {
        conn.execute(&stage, params_from_iter(&values))?;
        conn.execute(
            "UPDATE endpoints SET last_seen = greatest(endpoints.last_seen, ?), last_run_id = ? \
             FROM route_table n \
             WHERE endpoints.endpoint = n.endpoint AND endpoints.rule = n.rule AND endpoints.methods = n.methods",
            params![at, run_id],
        )?;
        conn.execute(
            "INSERT INTO endpoints (endpoint, rule, methods, first_seen, last_seen, first_run_id, last_run_id) \
             SELECT endpoint, rule, methods, ?1, ?1, ?2, ?2 FROM route_table n WHERE NOT EXISTS ( \
                 SELECT 1 FROM endpoints e \
                 WHERE e.endpoint = n.endpoint AND e.rule = n.rule AND e.methods = n.methods)",
            params![at, run_id],
        )?;
        conn.execute_batch("DROP TABLE route_table")
    };
    // A rollback drops the stage too.
    transaction(conn, || written().map_err(sql_err)).map(|()| keys.len())
}

/// The endpoints as of `now`: every (endpoint, rule) of the stored route tables, requested or not, and
/// every one that only requests name (path templates, rules of tables never stored), most requested
/// first, then by endpoint and rule. Requests that matched no endpoint are not listed (see [`unmatched`]).
///
/// Read from the rollups ([`super::rollup`]) plus the requests not rolled up yet, so the cost follows the
/// endpoints (and the last 7 days' hours), not the requests nor the age of the store. Counts, error rates, methods and times are exact; the
/// median and p90 are within 1% of the exact values (see [`EndpointRow::median_ms`]).
pub fn endpoints(conn: &Connection, now: Micros) -> Result<Vec<EndpointRow>, Error> {
    let today = now - now.rem_euclid(DAY_US);
    let week = now.saturating_sub(7 * DAY_US);
    // The 7-day window's first hour is partial unless `week` falls on an hour: whole hours from the
    // rollups, the partial one counted from the requests (an hour of rows, found by the ts zone maps).
    let week_hour = match week.rem_euclid(HOUR_US) {
        0 => week,
        rem => week - rem + HOUR_US,
    };
    // One statement, so the watermark and the rollups it covers are read from one snapshot.
    // An endpoint whose methods changed between deploys shows those of its latest table (the union when
    // that table has the rule twice with different methods).
    // All-time figures come from the totals, the windows from the last 7 days' hours; the duration
    // histogram comes back as two lists per endpoint and its quantiles are read in Rust (a window function
    // over the buckets cost ~25 ms where the lists cost ~5).
    let sql = format!(
        "
        WITH tail AS (
            SELECT endpoint, coalesce(rule, '') AS rule, method, ts, duration_ms, status
            FROM requests WHERE id > {WATERMARK} AND endpoint IS NOT NULL
        ),
        totals AS (
            SELECT endpoint, rule, method, hits, errors, last_ts FROM endpoint_totals
            UNION ALL
            SELECT endpoint, rule, method, count(*), count(*) FILTER (WHERE status >= 500), max(ts)
            FROM tail GROUP BY ALL
        ),
        recent AS (
            SELECT endpoint, rule, hour, hits FROM endpoint_hours WHERE hour >= $3
            UNION ALL
            SELECT endpoint, rule, date_trunc('hour', ts), 1 FROM tail
        ),
        windows AS (
            SELECT endpoint, rule,
                   coalesce(sum(hits) FILTER (WHERE hour >= $1), 0) AS hits_today,
                   coalesce(sum(hits) FILTER (WHERE hour >= $3), 0) AS hits_7d
            FROM recent GROUP BY endpoint, rule
        ),
        edge AS (
            SELECT endpoint, coalesce(rule, '') AS rule, count(*) AS hits FROM requests
            WHERE ts >= $2 AND ts < $3 AND endpoint IS NOT NULL GROUP BY ALL
        ),
        seen AS (
            SELECT endpoint, rule,
                   CAST(sum(hits) AS UBIGINT) AS hits,
                   CAST(sum(errors) AS DOUBLE) / CAST(sum(hits) AS DOUBLE) AS error_rate,
                   epoch_us(max(last_ts)) AS last_requested,
                   list_sort(list_distinct(list(method))) AS methods
            FROM totals GROUP BY endpoint, rule
        ),
        hist AS (
            SELECT endpoint, rule, list(bucket ORDER BY bucket) AS buckets, list(c ORDER BY bucket) AS counts
            FROM (
                SELECT endpoint, rule, bucket, CAST(sum(hits) AS UBIGINT) AS c FROM (
                    SELECT endpoint, rule, bucket, hits FROM endpoint_duration_totals
                    UNION ALL
                    SELECT endpoint, rule, {BUCKET}, 1 FROM tail
                ) GROUP BY ALL
            ) GROUP BY endpoint, rule
        ),
        latest AS (
            SELECT endpoint, rule, methods,
                   last_seen = max(last_seen) OVER (PARTITION BY endpoint, rule) AS is_latest
            FROM endpoints
        ),
        known AS (
            SELECT endpoint, rule, list_sort(list_distinct(flatten(list(methods)))) AS methods
            FROM latest WHERE is_latest GROUP BY endpoint, rule
        ),
        counted AS (
            SELECT s.endpoint, s.rule, s.methods, s.hits,
                   CAST(coalesce(w.hits_today, 0) AS UBIGINT) AS hits_today,
                   coalesce(w.hits_7d, 0) + coalesce(e.hits, 0) AS hits_7d,
                   h.buckets, h.counts, s.error_rate, s.last_requested
            FROM seen s
            LEFT JOIN windows w ON s.endpoint = w.endpoint AND s.rule = w.rule
            LEFT JOIN edge e ON s.endpoint = e.endpoint AND s.rule = e.rule
            LEFT JOIN hist h ON s.endpoint = h.endpoint AND s.rule = h.rule
        )
        SELECT coalesce(k.endpoint, s.endpoint) AS endpoint_, coalesce(k.rule, s.rule) AS rule_,
               coalesce(k.methods, s.methods), coalesce(s.hits, 0) AS hits_,
               coalesce(s.hits_today, 0), CAST(coalesce(s.hits_7d, 0) AS UBIGINT),
               s.buckets, s.counts, s.error_rate, s.last_requested
        FROM known k FULL OUTER JOIN counted s ON k.endpoint = s.endpoint AND k.rule = s.rule
        ORDER BY hits_ DESC, endpoint_, rule_"
    );
    let sql_err = |source| Error::Sql {
        what: "read endpoints",
        source,
    };
    let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(
            params![
                Value::Timestamp(TimeUnit::Microsecond, today),
                Value::Timestamp(TimeUnit::Microsecond, week),
                Value::Timestamp(TimeUnit::Microsecond, week_hour)
            ],
            |row| {
                let histogram = histogram(row.get(6)?, row.get(7)?);
                Ok(EndpointRow {
                    endpoint: row.get(0)?,
                    rule: row.get(1)?,
                    methods: strings(row.get(2)?),
                    hits: row.get(3)?,
                    hits_today: row.get(4)?,
                    hits_7d: row.get(5)?,
                    median_ms: quantile(&histogram, 0.5),
                    p90_ms: quantile(&histogram, 0.9),
                    error_rate: row.get(8)?,
                    last_requested: row.get(9)?,
                    monitor_level: MONITOR_LEVEL,
                })
            },
        )
        .map_err(sql_err)?;
    let mut rows: Vec<EndpointRow> = rows.collect::<Result<_, _>>().map_err(sql_err)?;
    super::levels::apply(conn, &mut rows, MONITOR_LEVEL)?;
    Ok(rows)
}

/// The (bucket, hits) pairs of the `buckets` and `counts` lists; anything else (never produced by the
/// query) gives none.
fn histogram(buckets: Value, counts: Value) -> Vec<(i16, u64)> {
    match (buckets, counts) {
        (Value::List(buckets), Value::List(counts)) => buckets
            .into_iter()
            .zip(counts)
            .filter_map(|pair| match pair {
                (Value::SmallInt(bucket), Value::UBigInt(hits)) => Some((bucket, hits)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The strings of a `VARCHAR[]` value; anything else (never produced by the query) gives none.
fn strings(value: Value) -> Vec<String> {
    match value {
        Value::List(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Text(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Requests stored without an endpoint: the app answered them without a view (404, 405, redirect).
pub fn unmatched(conn: &Connection) -> Result<u64, Error> {
    conn.query_row(
        "SELECT count(*) FROM requests WHERE endpoint IS NULL",
        [],
        |row| row.get(0),
    )
    .map_err(|source| Error::Sql {
        what: "count unmatched requests",
        source,
    })
}

/// The whole endpoints answer as of `now`.
pub fn endpoint_list(conn: &Connection, now: Micros) -> Result<EndpointList, Error> {
    let Attribution { mode, rules } = attribution(conn)?;
    Ok(EndpointList {
        mode,
        rules,
        unmatched: unmatched(conn)?,
        endpoints: endpoints(conn, now)?,
    })
}

/// Route tables and attribution modes the writer thread received and has not written yet; written with
/// the next batch and kept for retry when that fails, like counters.
#[derive(Debug, Default)]
pub(super) struct PendingEndpoints {
    tables: VecDeque<(Micros, Vec<RouteInfo>)>,
    mode: Option<(String, u64, Micros)>,
}

/// Route tables kept while writes fail; beyond it the oldest go (the daemon sends a table per worker
/// start, so a lost one returns with the next worker).
const MAX_PENDING_TABLES: usize = 64;

impl PendingEndpoints {
    pub(super) fn routes(&mut self, at: Micros, routes: Vec<RouteInfo>) {
        if self.tables.len() >= MAX_PENDING_TABLES {
            self.tables.pop_front();
            tracing::warn!("the fmd database stays unwritable; dropping the oldest route table");
        }
        self.tables.push_back((at, routes));
    }

    pub(super) fn mode(&mut self, at: Micros, mode: String, rules: u64) {
        self.mode = Some((mode, rules, at));
    }

    /// Writes what is pending (route tables in arrival order), keeping what failed; the error is the
    /// first one.
    pub(super) fn write(&mut self, conn: &Connection, run_id: i64) -> Result<(), Error> {
        // The mode first: a table that cannot be written must not hold it back.
        let mode = match &self.mode {
            Some((mode, rules, at)) => set_attribution(conn, run_id, mode, *rules, *at),
            None => Ok(()),
        };
        if mode.is_ok() {
            self.mode = None;
        }
        while let Some((at, routes)) = self.tables.front() {
            let rules = upsert_routes(conn, run_id, *at, routes)?;
            tracing::debug!(rules, "route table recorded");
            self.tables.pop_front();
        }
        mode
    }
}

/// Serde for an optional [`Micros`] field shown as RFC 3339 text or `null`.
mod serde_opt_us {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::store::time::{format_us, parse_rfc3339, Micros};

    pub fn serialize<S: Serializer>(us: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
        match us {
            Some(us) => s.serialize_str(&format_us(*us)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                parse_rfc3339(&text)
                    .ok_or_else(|| de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flask::test_support::route,
        request::Request,
        store::{
            append_requests, begin_run, spawn_writer,
            test_support::{close, exact_quantile as quantile, request},
            time::{now_us, parse_rfc3339},
            RunInfo, Store,
        },
    };

    /// 2026-11-23T15:56:41.123456Z
    const NOW: Micros = 1_795_449_401_123_456;
    const HOUR: Micros = 3_600_000_000;

    fn at(text: &str) -> Micros {
        parse_rfc3339(text).expect("time")
    }

    /// A request to `endpoint` (`None`: matched none) at `ts` taking `ms` and answered `status`.
    fn hit(
        endpoint: Option<(&str, &str)>,
        method: &str,
        ts: Micros,
        ms: f64,
        status: u16,
    ) -> Request {
        Request {
            ts_us: ts,
            duration_ns: (ms * 1e6).round() as u64,
            method: method.into(),
            status,
            endpoint: endpoint.map(|(e, _)| e.to_owned()),
            rule: endpoint.map(|(_, r)| r.to_owned()),
            ..request(0)
        }
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        (dir, store)
    }

    /// What the test expects of one endpoint; figures computed from the requests given.
    struct Expect<'a> {
        endpoint: &'a str,
        rule: &'a str,
        methods: &'a [&'a str],
        hits: (u64, u64, u64),
        durations: &'a [f64],
        errors: usize,
        last: Option<Micros>,
    }

    /// Quantiles come from the rollups' histograms: within 1% (store/rollup.rs), plus rounding.
    const QUANTILE_BOUND: f64 = 0.01 + 1e-12;

    /// Stores `tables` (route tables, one run each) and `hits`, then checks `endpoints(now)`.
    fn check(tables: &[Vec<RouteInfo>], hits: &[Request], now: Micros, expect: &[Expect<'_>]) {
        let (_dir, store) = open();
        let conn = store.connection();
        for (i, table) in tables.iter().enumerate() {
            upsert_routes(conn, i as i64 + 1, NOW - 1_000 + i as i64, table).expect("routes");
        }
        append_requests(conn, 1, 1, hits).expect("append");
        // Read while every request is above the watermark, then from the rollups.
        for rolled_up in [false, true] {
            if rolled_up {
                crate::store::rollup::catch_up(conn).expect("catch up");
            }
            check_rows(&endpoints(conn, now).expect("endpoints"), expect);
        }
    }

    fn check_rows(got: &[EndpointRow], expect: &[Expect<'_>]) {
        let names = |rows: Vec<(&str, &str)>| {
            rows.into_iter()
                .map(|(e, r)| format!("{e} {r}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                got.iter()
                    .map(|r| (r.endpoint.as_str(), r.rule.as_str()))
                    .collect()
            ),
            names(expect.iter().map(|e| (e.endpoint, e.rule)).collect()),
            "endpoints and their order"
        );
        for (row, e) in got.iter().zip(expect) {
            let what = &row.endpoint;
            assert_eq!(row.methods, e.methods, "{what} methods");
            assert_eq!(
                (row.hits, row.hits_today, row.hits_7d),
                e.hits,
                "{what} hits"
            );
            assert_eq!(row.last_requested, e.last, "{what} last_requested");
            assert_eq!(row.monitor_level, MONITOR_LEVEL);
            close(
                row.median_ms,
                quantile(e.durations, 0.5),
                QUANTILE_BOUND,
                &format!("{what} median"),
            );
            close(
                row.p90_ms,
                quantile(e.durations, 0.9),
                QUANTILE_BOUND,
                &format!("{what} p90"),
            );
            let rate =
                (!e.durations.is_empty()).then(|| e.errors as f64 / e.durations.len() as f64);
            close(row.error_rate, rate, 1e-12, &format!("{what} error_rate"));
        }
    }

    #[test]
    fn never_requested_endpoints_are_listed_empty() {
        check(
            &[vec![
                route("users.show", "/users/<int:id>", &["OPTIONS", "GET", "HEAD"]),
                route("index", "/", &["GET"]),
                route("any", "/any", &[]),
            ]],
            &[],
            NOW,
            &[
                Expect {
                    endpoint: "any",
                    rule: "/any",
                    methods: &[],
                    hits: (0, 0, 0),
                    durations: &[],
                    errors: 0,
                    last: None,
                },
                Expect {
                    endpoint: "index",
                    rule: "/",
                    methods: &["GET"],
                    hits: (0, 0, 0),
                    durations: &[],
                    errors: 0,
                    last: None,
                },
                Expect {
                    endpoint: "users.show",
                    rule: "/users/<int:id>",
                    methods: &["GET", "HEAD", "OPTIONS"],
                    hits: (0, 0, 0),
                    durations: &[],
                    errors: 0,
                    last: None,
                },
            ],
        );
        check(&[], &[], NOW, &[]);
    }

    #[test]
    fn hits_count_in_their_windows() {
        let a = Some(("a", "/a"));
        let midnight = at("2026-11-23T00:00:00Z");
        let week = NOW - 7 * 24 * HOUR;
        // (ts, ms, status): inside or just outside each window.
        let times = [
            (NOW - 1, 4.0, 200),                // today, 7d
            (midnight, 1.0, 500),               // today (first microsecond of the day), 7d
            (midnight - 1, 2.5, 200),           // yesterday, 7d
            (week, 8.0, 503),                   // 7d (first microsecond of the window)
            (week - 1, 16.0, 404),              // older
            (NOW - 400 * 24 * HOUR, 0.25, 200), // much older
        ];
        let hits: Vec<Request> = times
            .iter()
            .map(|&(ts, ms, status)| hit(a, "GET", ts, ms, status))
            .collect();
        let durations: Vec<f64> = times.iter().map(|t| t.1).collect();
        check(
            &[vec![route("a", "/a", &["GET"])]],
            &hits,
            NOW,
            &[Expect {
                endpoint: "a",
                rule: "/a",
                methods: &["GET"],
                hits: (6, 2, 4),
                durations: &durations,
                errors: 2,
                last: Some(NOW - 1),
            }],
        );
        // At midnight exactly, today starts empty; a day later, the week lost one more.
        check(
            &[],
            &hits,
            at("2026-11-24T00:00:00Z"),
            &[Expect {
                endpoint: "a",
                rule: "/a",
                methods: &["GET"],
                hits: (6, 0, 3),
                durations: &durations,
                errors: 2,
                last: Some(NOW - 1),
            }],
        );
    }

    #[test]
    fn medians_and_order_follow_the_requests() {
        let (a, b, c) = (Some(("a", "/a")), Some(("b", "/b/<x>")), Some(("c", "/c")));
        let a_ms = [3.0, 1.0, 2.0, 10.0];
        let b_ms = [7.5, 0.125, 3.25, 100.0, 42.0, 9.0, 1.0];
        let c_ms = [5.0, 6.0, 7.0, 8.0];
        let mut hits = Vec::new();
        for (i, ms) in a_ms.iter().enumerate() {
            hits.push(hit(a, "GET", NOW - 10 * HOUR + i as i64, *ms, 200));
        }
        for (i, ms) in b_ms.iter().enumerate() {
            hits.push(hit(
                b,
                if i % 2 == 0 { "PUT" } else { "GET" },
                NOW - 30 * HOUR + i as i64,
                *ms,
                200 + i as u16 * 50,
            ));
        }
        for (i, ms) in c_ms.iter().enumerate() {
            hits.push(hit(c, "GET", NOW - 20 * HOUR + i as i64, *ms, 200));
        }
        // Matched no endpoint: not listed.
        hits.push(hit(None, "GET", NOW, 1.0, 404));
        check(
            &[vec![
                route("a", "/a", &["GET", "HEAD"]),
                route("z", "/z", &["GET"]),
            ]],
            &hits,
            NOW,
            &[
                Expect {
                    endpoint: "b",
                    rule: "/b/<x>",
                    methods: &["GET", "PUT"],
                    hits: (7, 0, 7),
                    durations: &b_ms,
                    // Statuses 200, 250, ..., 500: the last one.
                    errors: 1,
                    last: Some(NOW - 30 * HOUR + 6),
                },
                Expect {
                    endpoint: "a",
                    rule: "/a",
                    methods: &["GET", "HEAD"],
                    hits: (4, 4, 4),
                    durations: &a_ms,
                    errors: 0,
                    last: Some(NOW - 10 * HOUR + 3),
                },
                Expect {
                    endpoint: "c",
                    rule: "/c",
                    methods: &["GET"],
                    hits: (4, 0, 4),
                    durations: &c_ms,
                    errors: 0,
                    last: Some(NOW - 20 * HOUR + 3),
                },
                Expect {
                    endpoint: "z",
                    rule: "/z",
                    methods: &["GET"],
                    hits: (0, 0, 0),
                    durations: &[],
                    errors: 0,
                    last: None,
                },
            ],
        );
    }

    #[test]
    fn path_templates_are_endpoints_of_their_own() {
        let hits = [
            hit(
                Some(("GET /orders/<int>", "/orders/<int>")),
                "GET",
                NOW,
                2.0,
                200,
            ),
            hit(
                Some(("GET /orders/<int>", "/orders/<int>")),
                "GET",
                NOW,
                4.0,
                200,
            ),
            hit(
                Some(("POST /orders/<int>", "/orders/<int>")),
                "POST",
                NOW,
                6.0,
                201,
            ),
            // One endpoint with two rules is two rows.
            hit(Some(("index", "/")), "GET", NOW, 1.0, 200),
            hit(Some(("index", "/index")), "GET", NOW, 1.0, 200),
        ];
        let one = |endpoint, rule, methods, durations: &'static [f64]| Expect {
            endpoint,
            rule,
            methods,
            hits: (
                durations.len() as u64,
                durations.len() as u64,
                durations.len() as u64,
            ),
            durations,
            errors: 0,
            last: Some(NOW),
        };
        check(
            &[vec![route("index", "/", &["GET"])]],
            &hits,
            NOW,
            &[
                one("GET /orders/<int>", "/orders/<int>", &["GET"], &[2.0, 4.0]),
                one("POST /orders/<int>", "/orders/<int>", &["POST"], &[6.0]),
                one("index", "/", &["GET"], &[1.0]),
                one("index", "/index", &["GET"], &[1.0]),
            ],
        );
    }

    /// The raw `endpoints` table: (endpoint, rule, methods, first_seen, last_seen, first_run, last_run).
    type Stored = (String, String, Vec<String>, Micros, Micros, i64, i64);

    fn stored(conn: &Connection) -> Vec<Stored> {
        let mut stmt = conn
            .prepare(
                "SELECT endpoint, rule, methods, epoch_us(first_seen), epoch_us(last_seen), first_run_id, \
                 last_run_id FROM endpoints ORDER BY endpoint, rule, first_seen",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    strings(r.get(2)?),
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    }

    #[test]
    fn route_tables_are_upserted() {
        let (_dir, store) = open();
        let conn = store.connection();
        let (t1, t2, t3) = (NOW, NOW + HOUR, NOW + 2 * HOUR);
        let first = [
            route("a", "/a", &["GET", "HEAD"]),
            route("b", "/b", &["POST"]),
            route("gone", "/gone", &["GET"]),
        ];
        assert_eq!(upsert_routes(conn, 1, t1, &first).expect("first"), 3);
        // A newer deploy: same rule in another method order (and twice), changed methods, a new rule.
        let second = [
            route("a", "/a", &["HEAD", "GET"]),
            route("a", "/a", &["GET", "HEAD", "GET"]),
            route("b", "/b", &["GET", "POST"]),
            route("new", "/new", &[]),
        ];
        assert_eq!(upsert_routes(conn, 2, t2, &second).expect("second"), 3);
        let s = |v: &[&str]| v.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>();
        let row = |e: &str, methods: &[&str], first: Micros, last: Micros, r1: i64, r2: i64| {
            (
                e.to_owned(),
                format!("/{e}"),
                s(methods),
                first,
                last,
                r1,
                r2,
            )
        };
        let expect = vec![
            row("a", &["GET", "HEAD"], t1, t2, 1, 2),
            row("b", &["POST"], t1, t1, 1, 1),
            row("b", &["GET", "POST"], t2, t2, 2, 2),
            row("gone", &["GET"], t1, t1, 1, 1),
            row("new", &[], t2, t2, 2, 2),
        ];
        assert_eq!(stored(conn), expect);
        // The same table again changes nothing but last_seen; an older clock never moves it back.
        upsert_routes(conn, 2, t3, &second).expect("again");
        upsert_routes(conn, 3, t1, &second).expect("older clock");
        let mut expect_again = expect.clone();
        for row in &mut expect_again {
            if row.4 == t2 {
                row.4 = t3;
                row.6 = 3;
            }
        }
        assert_eq!(stored(conn), expect_again);

        let listed: Vec<(String, Vec<String>)> = endpoints(conn, NOW)
            .expect("endpoints")
            .into_iter()
            .map(|r| (r.endpoint, r.methods))
            .collect();
        assert_eq!(
            listed,
            [
                ("a".to_owned(), s(&["GET", "HEAD"])),
                ("b".to_owned(), s(&["GET", "POST"])),
                ("gone".to_owned(), s(&["GET"])),
                ("new".to_owned(), s(&[])),
            ]
        );
    }

    #[test]
    fn odd_strings_are_stored_as_they_are() {
        let (_dir, store) = open();
        let conn = store.connection();
        let odd = [
            "a\0b",
            "'; DROP TABLE endpoints; --",
            "\u{1f600}\u{e9}",
            "",
            "\\?",
        ];
        let table: Vec<RouteInfo> = odd
            .iter()
            .map(|s| route(s, &format!("/{s}"), &[s, "GET"]))
            .collect();
        assert_eq!(
            upsert_routes(conn, 1, NOW, &table).expect("routes"),
            odd.len()
        );
        let mut got: Vec<(String, String, Vec<String>)> = endpoints(conn, NOW)
            .expect("endpoints")
            .into_iter()
            .map(|r| (r.endpoint, r.rule, r.methods))
            .collect();
        got.sort();
        let mut expect: Vec<(String, String, Vec<String>)> = odd
            .iter()
            .map(|s| {
                let mut methods = vec![(*s).to_owned(), "GET".to_owned()];
                methods.sort();
                ((*s).to_owned(), format!("/{s}"), methods)
            })
            .collect();
        expect.sort();
        assert_eq!(got, expect);
        assert_eq!(upsert_routes(conn, 1, NOW, &[]).expect("empty table"), 0);
        assert_eq!(stored(conn).len(), odd.len());
    }

    #[test]
    fn one_rule_twice_in_a_table_shows_the_union_of_methods() {
        let (_dir, store) = open();
        let conn = store.connection();
        let table = [
            route("x", "/x", &["GET"]),
            route("x", "/x", &["POST", "PUT"]),
        ];
        upsert_routes(conn, 1, NOW, &table).expect("routes");
        let rows = endpoints(conn, NOW).expect("endpoints");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].methods, ["GET", "POST", "PUT"]);
    }

    #[test]
    fn json_field_names_and_formats() {
        let row = EndpointRow {
            endpoint: "users.show".into(),
            rule: "/users/<int:id>".into(),
            methods: vec!["GET".into(), "HEAD".into()],
            hits: 12,
            hits_today: 3,
            hits_7d: 10,
            median_ms: Some(1.5),
            p90_ms: Some(4.25),
            error_rate: Some(0.25),
            last_requested: Some(NOW),
            monitor_level: 1,
        };
        let text = serde_json::to_string(&row).expect("json");
        assert_eq!(
            text,
            r#"{"endpoint":"users.show","rule":"/users/<int:id>","methods":["GET","HEAD"],"hits":12,"hits_today":3,"hits_7d":10,"median_ms":1.5,"p90_ms":4.25,"error_rate":0.25,"last_requested":"2026-11-23T15:56:41.123456Z","monitor_level":1}"#
        );
        assert_eq!(
            serde_json::from_str::<EndpointRow>(&text).expect("back"),
            row
        );
        let never = EndpointRow {
            hits: 0,
            hits_today: 0,
            hits_7d: 0,
            median_ms: None,
            p90_ms: None,
            error_rate: None,
            last_requested: None,
            ..row
        };
        let json = serde_json::to_value(&never).expect("json");
        for field in ["median_ms", "p90_ms", "error_rate", "last_requested"] {
            assert_eq!(json[field], serde_json::Value::Null, "{field}");
        }
        assert_eq!(
            serde_json::from_value::<EndpointRow>(json).expect("back"),
            never
        );
        assert!(serde_json::from_str::<EndpointRow>(&text.replace("2026-11-23T", "then")).is_err());
    }

    #[test]
    fn mode_names_are_the_attributors() {
        for mode in [Mode::Pending, Mode::FlaskRoutes, Mode::PathTemplates] {
            assert_eq!(serde_json::to_value(mode).expect("json"), mode_name(mode));
        }
    }

    #[test]
    fn attribution_is_the_latest_runs() {
        let (_dir, store) = open();
        let conn = store.connection();
        let check = |expect: (&str, u64)| {
            let got = attribution(conn).expect("attribution");
            assert_eq!((got.mode.as_str(), got.rules), expect);
        };
        check((modes::PENDING, 0));
        set_attribution(conn, 1, modes::FLASK_ROUTES, 12, NOW).expect("set");
        check((modes::FLASK_ROUTES, 12));
        set_attribution(conn, 1, modes::FLASK_ROUTES, 13, NOW).expect("set");
        check((modes::FLASK_ROUTES, 13));
        set_attribution(conn, 2, modes::PATH_TEMPLATES, 0, NOW).expect("set");
        check((modes::PATH_TEMPLATES, 0));
        set_attribution(conn, 1, modes::FLASK_ROUTES, 14, NOW).expect("set");
        check((modes::PATH_TEMPLATES, 0));
    }

    #[test]
    fn the_list_has_mode_rules_and_unmatched() {
        let (_dir, store) = open();
        let conn = store.connection();
        upsert_routes(conn, 1, NOW, &[route("a", "/a", &["GET"])]).expect("routes");
        set_attribution(conn, 1, modes::FLASK_ROUTES, 1, NOW).expect("mode");
        let hits = [
            hit(Some(("a", "/a")), "GET", NOW, 1.0, 200),
            hit(None, "GET", NOW, 1.0, 404),
            hit(None, "DELETE", NOW, 1.0, 405),
        ];
        append_requests(conn, 1, 1, &hits).expect("append");
        let list = endpoint_list(conn, NOW).expect("list");
        assert_eq!(
            (
                list.mode.as_str(),
                list.rules,
                list.unmatched,
                list.endpoints.len()
            ),
            (modes::FLASK_ROUTES, 1, 2, 1)
        );
        assert_eq!(list.endpoints, endpoints(conn, NOW).expect("endpoints"));
    }

    #[tokio::test]
    async fn the_writer_records_routes_and_mode() {
        let (_dir, store) = open();
        let reader = store.reader().expect("reader");
        let run = RunInfo {
            target_pid: 1,
            version: "0.0.0".into(),
            started_at: NOW,
        };
        // An earlier run that read a table.
        let earlier = begin_run(store.connection(), &run).expect("run");
        set_attribution(store.connection(), earlier, modes::FLASK_ROUTES, 9, NOW).expect("mode");
        let (handle, _thread) = spawn_writer(store, run).expect("spawn");
        // A new run starts pending, whatever the last one found.
        assert_eq!(attribution(&reader).expect("mode").mode, modes::PENDING);
        handle
            .set_routes(vec![
                route("a", "/a", &["GET"]),
                route("b", "/b", &["POST"]),
            ])
            .await
            .expect("routes");
        handle
            .set_attribution_mode(modes::FLASK_ROUTES, 2)
            .await
            .expect("mode");
        handle.flush().await.expect("flush");
        let list = endpoint_list(&reader, now_us()).expect("list");
        assert_eq!((list.mode.as_str(), list.rules), (modes::FLASK_ROUTES, 2));
        assert_eq!(
            list.endpoints
                .iter()
                .map(|r| r.endpoint.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let runs: Vec<(i64, i64)> = stored(&reader).into_iter().map(|r| (r.5, r.6)).collect();
        assert_eq!(runs, [(2, 2), (2, 2)]);
        handle.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_route_table_that_cannot_be_written_is_retried() {
        let (_dir, store) = open();
        let reader = store.reader().expect("reader");
        let run = RunInfo {
            target_pid: 1,
            version: "0.0.0".into(),
            started_at: NOW,
        };
        let (handle, _thread) = spawn_writer(store, run).expect("spawn");
        reader
            .execute_batch("ALTER TABLE endpoints RENAME TO away")
            .expect("hide");
        handle
            .set_routes(vec![route("a", "/a", &["GET"])])
            .await
            .expect("routes");
        handle
            .set_attribution_mode(modes::FLASK_ROUTES, 1)
            .await
            .expect("mode");
        assert!(handle.flush().await.is_err());
        // The mode did not wait for the table.
        assert_eq!(
            attribution(&reader).expect("mode").mode,
            modes::FLASK_ROUTES
        );
        reader
            .execute_batch("ALTER TABLE away RENAME TO endpoints")
            .expect("restore");
        handle.flush().await.expect("retry");
        assert_eq!(stored(&reader).len(), 1);
        let report = handle.stop().await.expect("stop");
        assert_eq!(report.write_errors, 1);
    }

    #[test]
    fn a_version_1_file_gains_the_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        {
            let store = Store::open(&path).expect("open");
            append_requests(store.connection(), 1, 1, &[request(0)]).expect("append");
            // Back to what fmd with schema 1 left (later migrations' tables dropped too).
            store
                .connection()
                .execute_batch(
                    "DROP TABLE endpoints; DROP TABLE attribution; DROP TABLE profile_samples; \
                     DROP TABLE profile_stacks; DROP TABLE profile_frames; DROP TABLE profiled_requests; \
                     DROP TABLE endpoint_hours; DROP TABLE endpoint_durations; DROP TABLE endpoint_totals; \
                     DROP TABLE endpoint_duration_totals; DROP TABLE rollup_state; \
                     DROP TABLE exception_occurrences; DROP TABLE exception_groups; \
                     DROP TABLE outliers; DROP TABLE endpoint_levels; DROP TABLE endpoint_unrecorded; \
                     DROP TABLE endpoint_averages; DROP TABLE users; \
                     UPDATE schema_version SET version = 1",
                )
                .expect("downgrade");
        }
        let store = Store::open(&path).expect("migrate");
        let list = endpoint_list(store.connection(), NOW).expect("list");
        assert_eq!(
            (list.mode.as_str(), list.endpoints.len()),
            (modes::PENDING, 1)
        );
        assert_eq!(list.endpoints[0].endpoint, "item");
    }
}
