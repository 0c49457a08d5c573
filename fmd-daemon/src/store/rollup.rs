//! Per-endpoint rollups of the `requests` table, kept current by the store, so the endpoints overview
//! reads a few rows per endpoint (and per hour of the last 7 days) instead of every request: its cost no
//! longer grows with the requests stored.
//!
//! - `endpoint_hours`: per (endpoint, rule, method, UTC hour): hits, 5xx errors, summed duration and the
//!   latest request's start. Exact. Serves the time windows (today, 7 days; later an hourly heatmap).
//! - `endpoint_durations`: per (endpoint, rule, UTC day, duration bucket): hits (for quantiles over a
//!   time range). Bucket `b` holds the durations `d` (in ms) with `1.01^b <= d < 1.01^(b+1)`, i.e.
//!   `b = floor(ln d / ln 1.01)` ([`BUCKET`]), and [`ZERO_BUCKET`] holds zero durations. [`quantile`]
//!   reads one from a histogram, placing the requests of a bucket evenly (geometrically) inside it; the estimate
//!   and the true value then lie in the same bucket, so **a median or p90 is within 1% (relative) of the
//!   exact `quantile_cont`**, and exact when it is 0 (up to floating-point rounding at a bucket's edge).
//! - `endpoint_totals` and `endpoint_duration_totals`: the same over all time (per method; per bucket),
//!   so the all-time figures read a few rows per endpoint however old the store is (merging the hours
//!   and days instead costs ~75 ms for 30 days at 200 endpoints, and grows with every day kept).
//! - `rollup_state`: the highest request id rolled up (the watermark). An empty table means 0.
//!
//! [`catch_up`] rolls up the requests above the watermark in SQL and moves it, in one transaction; the
//! writer runs it after each flush, and [`Store::open`](super::Store::open) when it opens a file (stores
//! written before migration 4, stores filled by other tools). Readers add the requests above the
//! watermark themselves (see [`super::endpoints`]), so they are exact even when the rollups lag. Requests
//! without an endpoint are not rolled up. Rows deleted from `requests` would stay counted here.

use duckdb::{params, Connection};

use super::{transaction, Error};

/// Migration 4: the rollup tables (see the module doc).
pub const MIGRATION: &str = "
    CREATE TABLE endpoint_hours (
        endpoint     VARCHAR NOT NULL,
        -- '' for a request stored without a rule.
        rule         VARCHAR NOT NULL,
        method       VARCHAR NOT NULL,
        hour         TIMESTAMP NOT NULL,
        hits         UBIGINT NOT NULL,
        -- Status >= 500.
        errors       UBIGINT NOT NULL,
        duration_ms  DOUBLE NOT NULL,
        last_ts      TIMESTAMP NOT NULL,
        PRIMARY KEY (endpoint, rule, method, hour)
    );
    -- A log-scaled duration histogram per endpoint and day (the bucketing is rollup.rs's BUCKET).
    CREATE TABLE endpoint_durations (
        endpoint  VARCHAR NOT NULL,
        rule      VARCHAR NOT NULL,
        day       DATE NOT NULL,
        bucket    SMALLINT NOT NULL,
        hits      UBIGINT NOT NULL,
        PRIMARY KEY (endpoint, rule, day, bucket)
    );
    -- All time, per method and per duration bucket (what the overview reads).
    CREATE TABLE endpoint_totals (
        endpoint     VARCHAR NOT NULL,
        rule         VARCHAR NOT NULL,
        method       VARCHAR NOT NULL,
        hits         UBIGINT NOT NULL,
        errors       UBIGINT NOT NULL,
        duration_ms  DOUBLE NOT NULL,
        last_ts      TIMESTAMP NOT NULL,
        PRIMARY KEY (endpoint, rule, method)
    );
    CREATE TABLE endpoint_duration_totals (
        endpoint  VARCHAR NOT NULL,
        rule      VARCHAR NOT NULL,
        bucket    SMALLINT NOT NULL,
        hits      UBIGINT NOT NULL,
        PRIMARY KEY (endpoint, rule, bucket)
    );
    -- One row: the highest request id the rollups include.
    CREATE TABLE rollup_state (
        last_id  BIGINT NOT NULL
    );
";

/// The bucket of zero durations (below every `floor(ln d / ln 1.01)` of a positive one).
pub const ZERO_BUCKET: i16 = i16::MIN;

/// Bucket width: each bucket's upper edge is this times its lower one.
pub const BUCKET_RATIO: f64 = 1.01;

/// The bucket of a `duration_ms` column, as SQL: the one definition of the bucketing, used for the
/// rollups and for reading requests not rolled up yet. A positive duration is at least 1 ns (bucket
/// -1389) and at most 2^64 ns (bucket 3066), well inside SMALLINT; the clamp only guards the cast.
pub const BUCKET: &str = "CAST(CASE WHEN duration_ms > 0 \
     THEN least(greatest(floor(ln(duration_ms) / ln(1.01)), -32767), 32767) \
     ELSE -32768 END AS SMALLINT)";

/// The watermark, as a SQL scalar subquery.
pub const WATERMARK: &str = "(SELECT coalesce(max(last_id), 0) FROM rollup_state)";

/// The columns after the keys of `endpoint_hours` and `endpoint_totals`, from `requests`, and how a
/// conflicting row adds them up.
const HOUR_AGGREGATES: &str =
    "count(*), count(*) FILTER (WHERE status >= 500), sum(duration_ms), max(ts)";
const HOUR_UPDATES: &str = "hits = hits + excluded.hits, errors = errors + excluded.errors, \
     duration_ms = duration_ms + excluded.duration_ms, last_ts = greatest(last_ts, excluded.last_ts)";

/// The `q` quantile (0 to 1) of the durations in `histogram` ((bucket, hits), by ascending bucket), as
/// `quantile_cont` would compute it from the durations themselves, within the bound of the module doc:
/// the values at the closest ranks are interpolated linearly, and the value at a rank is placed at its
/// share of its bucket. `None` for an empty histogram.
pub fn quantile(histogram: &[(i16, u64)], q: f64) -> Option<f64> {
    let n: u64 = histogram.iter().map(|(_, hits)| hits).sum();
    let last = n.checked_sub(1)? as f64;
    let pos = q.clamp(0.0, 1.0) * last;
    let (lo, hi) = (pos.floor(), pos.ceil());
    let value_at = |rank: f64| {
        let mut before = 0.0;
        for &(bucket, hits) in histogram {
            let hits = hits as f64;
            if rank < before + hits {
                if bucket == ZERO_BUCKET {
                    return 0.0;
                }
                return BUCKET_RATIO.powf(f64::from(bucket) + (rank - before + 0.5) / hits);
            }
            before += hits;
        }
        // Not reached: rank <= n - 1 lies in some bucket.
        0.0
    };
    let (at_lo, at_hi) = (value_at(lo), value_at(hi));
    Some(at_lo + (pos - lo) * (at_hi - at_lo))
}

/// What a [`catch_up`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Requests read above the old watermark (with or without an endpoint).
    pub requests: u64,
    /// The watermark now: every request with an id up to it is rolled up.
    pub watermark: i64,
}

/// Rolls up the requests above the watermark and moves it to the highest stored id, in one transaction.
pub fn catch_up(conn: &Connection) -> Result<CatchUp, Error> {
    transaction(conn, || {
        roll_up(conn).map_err(|source| Error::Sql {
            what: "roll up requests",
            source,
        })
    })
}

fn roll_up(conn: &Connection) -> duckdb::Result<CatchUp> {
    let from: i64 = conn.query_row(&format!("SELECT {WATERMARK}"), [], |row| row.get(0))?;
    let (to, requests): (i64, u64) = conn.query_row(
        "SELECT greatest(coalesce(max(id), ?1), ?1), count(*) FROM requests WHERE id > ?1",
        params![from],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if to > from {
        let rollups = [
            (
                "endpoint_hours",
                "method, date_trunc('hour', ts)",
                HOUR_AGGREGATES,
                HOUR_UPDATES,
            ),
            ("endpoint_totals", "method", HOUR_AGGREGATES, HOUR_UPDATES),
            (
                "endpoint_durations",
                &format!("CAST(ts AS DATE), {BUCKET}"),
                "count(*)",
                "hits = hits + excluded.hits",
            ),
            (
                "endpoint_duration_totals",
                BUCKET,
                "count(*)",
                "hits = hits + excluded.hits",
            ),
        ];
        for (table, keys, aggregates, updates) in rollups {
            conn.execute(
                &format!(
                    "INSERT INTO {table} \
                         SELECT endpoint, coalesce(rule, ''), {keys}, {aggregates} \
                         FROM requests WHERE id > ? AND id <= ? AND endpoint IS NOT NULL \
                         GROUP BY ALL \
                         ON CONFLICT DO UPDATE SET {updates}"
                ),
                params![from, to],
            )?;
        }
        conn.execute("DELETE FROM rollup_state", [])?;
        conn.execute("INSERT INTO rollup_state VALUES (?)", params![to])?;
    }
    Ok(CatchUp {
        requests,
        watermark: to,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::{
        request::Request,
        store::{
            append_requests, endpoints, schema, spawn_writer,
            test_support::{close, exact_quantile as quantile, request},
            time::Micros,
            EndpointRow, RunInfo, Store,
        },
    };

    const HOUR: Micros = 3_600_000_000;
    const DAY: Micros = 24 * HOUR;

    /// The bound the module doc promises, with room for floating-point rounding.
    const BOUND: f64 = 0.01 + 1e-12;

    /// The overview computed directly from the requests, as `endpoints()` must show them (no route
    /// tables are stored in these tests, so only requested endpoints are listed).
    fn exact(requests: &[Request], now: Micros) -> BTreeMap<(String, String), EndpointRow> {
        let today = now - now.rem_euclid(DAY);
        let week = now - 7 * DAY;
        let mut rows = BTreeMap::new();
        let mut durations: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
        let mut methods: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        let mut errors: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in requests {
            let Some(endpoint) = &r.endpoint else {
                continue;
            };
            let key = (endpoint.clone(), r.rule.clone().unwrap_or_default());
            let row = rows.entry(key.clone()).or_insert_with(|| EndpointRow {
                endpoint: key.0.clone(),
                rule: key.1.clone(),
                methods: Vec::new(),
                hits: 0,
                hits_today: 0,
                hits_7d: 0,
                median_ms: None,
                p90_ms: None,
                error_rate: None,
                last_requested: None,
                monitor_level: crate::store::MONITOR_LEVEL,
            });
            row.hits += 1;
            row.hits_today += u64::from(r.ts_us >= today);
            row.hits_7d += u64::from(r.ts_us >= week);
            row.last_requested = row.last_requested.max(Some(r.ts_us));
            durations
                .entry(key.clone())
                .or_default()
                .push(r.duration_ns as f64 / 1e6);
            methods
                .entry(key.clone())
                .or_default()
                .insert(r.method.clone());
            *errors.entry(key).or_default() += u64::from(r.status >= 500);
        }
        for (key, row) in &mut rows {
            let d = &durations[key];
            row.median_ms = quantile(d, 0.5);
            row.p90_ms = quantile(d, 0.9);
            row.error_rate = Some(errors[key] as f64 / row.hits as f64);
            row.methods = methods[key].iter().cloned().collect();
        }
        rows
    }

    /// Checks `endpoints(now)` on `conn` against [`exact`] over `requests`: everything exact but the
    /// quantiles, which must be within [`BOUND`].
    fn check(conn: &Connection, requests: &[Request], now: Micros) {
        let expect = exact(requests, now);
        let got = endpoints(conn, now).expect("endpoints");
        let keys = |rows: Vec<(&String, &String)>| {
            rows.into_iter()
                .map(|(e, r)| format!("{e} {r}"))
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(
            keys(got.iter().map(|r| (&r.endpoint, &r.rule)).collect()),
            keys(expect.keys().map(|(e, r)| (e, r)).collect()),
            "endpoints"
        );
        for row in &got {
            let e = &expect[&(row.endpoint.clone(), row.rule.clone())];
            let what = &row.endpoint;
            assert_eq!(
                (
                    &row.methods,
                    row.hits,
                    row.hits_today,
                    row.hits_7d,
                    row.error_rate,
                    row.last_requested
                ),
                (
                    &e.methods,
                    e.hits,
                    e.hits_today,
                    e.hits_7d,
                    e.error_rate,
                    e.last_requested
                ),
                "{what}: methods, hits, today, 7d, error rate, last"
            );
            for (name, g, x) in [
                ("median", row.median_ms, e.median_ms),
                ("p90", row.p90_ms, e.p90_ms),
            ] {
                let (g, x) = (g.expect(name), x.expect(name));
                let error = if x == 0.0 {
                    g.abs()
                } else {
                    (g / x - 1.0).abs()
                };
                assert!(error <= BOUND, "{what} {name}: got {g}, exact {x}");
            }
        }
    }

    fn hit(endpoint: Option<&str>, method: &str, ts: Micros, ns: u64, status: u16) -> Request {
        Request {
            ts_us: ts,
            duration_ns: ns,
            method: method.into(),
            status,
            endpoint: endpoint.map(str::to_owned),
            rule: endpoint.map(|e| format!("/{e}")),
            ..request(0)
        }
    }

    /// Requests over ten days before `now` across hour and day boundaries: three endpoints, one without
    /// a rule, unmatched ones, durations from 0 to 2^63 ns.
    fn traffic(now: Micros, n: u64) -> Vec<Request> {
        let midnight = now - now.rem_euclid(DAY);
        let mut out = Vec::new();
        for i in 0..n {
            // A pseudo-random spread (no rand crate needed): multiplicative hashing of i.
            let h = i.wrapping_mul(2_654_435_761) % 4_294_967_296;
            let ts = match i % 6 {
                // Around midnight and around the 7-day edge, to the microsecond.
                0 => midnight + (h % 2_000) as i64 - 1_000,
                1 => now - 7 * DAY + (h % 2_000) as i64 - 1_000,
                // Around an hour boundary of the 7-day edge's hour.
                2 => {
                    now - 7 * DAY - (now - 7 * DAY).rem_euclid(HOUR) + HOUR + (h % 2_000) as i64
                        - 1_000
                }
                _ => now - (h % (10 * DAY as u64)) as i64,
            };
            let ns = match i % 50 {
                0 => 0,
                1 => 1,
                2 => u64::MAX >> 1,
                _ => 100_000 + h % 500_000_000,
            };
            let endpoint = match i % 7 {
                0 => None,
                1 | 2 => Some("a"),
                3 => Some("b"),
                _ => Some("c"),
            };
            let method = ["GET", "POST", "HEAD"][(h % 3) as usize];
            let status = if h % 10 == 0 { 503 } else { 200 };
            let mut r = hit(endpoint, method, ts, ns, status);
            if i % 7 == 3 {
                r.rule = None;
            }
            out.push(r);
        }
        out
    }

    /// An hour-unaligned `now`: 2026-11-23T15:56:41.123456Z.
    const NOW: Micros = 1_795_449_401_123_456;

    /// Hits in each rollup table (hours, totals, days, duration totals), and the watermark.
    fn rollup_rows(conn: &Connection) -> ([u64; 4], i64) {
        conn.query_row(
            &format!(
                "SELECT (SELECT coalesce(sum(hits), 0) FROM endpoint_hours), \
                        (SELECT coalesce(sum(hits), 0) FROM endpoint_totals), \
                        (SELECT coalesce(sum(hits), 0) FROM endpoint_durations), \
                        (SELECT coalesce(sum(hits), 0) FROM endpoint_duration_totals), {WATERMARK}"
            ),
            [],
            |r| Ok(([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?], r.get(4)?)),
        )
        .expect("rollups")
    }

    #[tokio::test]
    async fn the_writer_rolls_up_and_readers_add_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let reader = store.reader().expect("reader");
        let run = RunInfo {
            target_pid: 1,
            version: "0.0.0".into(),
            started_at: NOW,
        };
        let (handle, _thread) = spawn_writer(store, run).expect("spawn");
        let all = traffic(NOW, 3_000);
        let (first, rest) = all.split_at(2_000);
        for chunk in first.chunks(500) {
            handle.insert(chunk.to_vec()).await.expect("insert");
        }
        handle.flush().await.expect("flush");
        let matched = first.iter().filter(|r| r.endpoint.is_some()).count() as u64;
        assert_eq!(rollup_rows(&reader), ([matched; 4], 2_000));
        check(&reader, first, NOW);
        // A tail the writer has not rolled up: appended behind its back, with the ids it would use.
        append_requests(&reader, 1, 2_001, rest).expect("append");
        assert_eq!(rollup_rows(&reader).1, 2_000);
        check(&reader, &all, NOW);
        // At other times of day and week, including on hour and day boundaries.
        for now in [
            NOW + 3 * HOUR,
            NOW - NOW.rem_euclid(DAY) + DAY,
            NOW - 2 * DAY + 1,
        ] {
            check(&reader, &all, now);
        }
        handle.stop().await.expect("stop");
    }

    #[test]
    fn catch_up_is_incremental_and_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let conn = store.connection();
        let all = traffic(NOW, 1_400);
        let mut written = 0;
        // Batches that split hours and days between catch-ups, so the upserts must add up.
        for (i, chunk) in all.chunks(300).enumerate() {
            append_requests(conn, 1, written as i64 + 1, chunk).expect("append");
            written += chunk.len();
            let done = catch_up(conn).expect("catch up");
            assert_eq!(
                done,
                CatchUp {
                    requests: chunk.len() as u64,
                    watermark: written as i64
                },
                "batch {i}"
            );
            check(conn, &all[..written], NOW);
        }
        assert_eq!(
            catch_up(conn).expect("again"),
            CatchUp {
                requests: 0,
                watermark: written as i64
            }
        );
        let matched = all.iter().filter(|r| r.endpoint.is_some()).count() as u64;
        assert_eq!(rollup_rows(conn), ([matched; 4], written as i64));
    }

    #[test]
    fn a_version_3_store_is_backfilled_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        let all = traffic(NOW, 1_000);
        {
            let store = Store::open(&path).expect("open");
            let conn = store.connection();
            // Back to what fmd with schema 3 left.
            conn.execute_batch(
                "DROP TABLE endpoint_hours; DROP TABLE endpoint_durations; DROP TABLE endpoint_totals; \
                 DROP TABLE endpoint_duration_totals; DROP TABLE rollup_state; \
                 DROP TABLE exception_occurrences; DROP TABLE exception_groups; \
                 DROP TABLE outliers; DROP TABLE endpoint_levels; DROP TABLE endpoint_unrecorded; \
                 DROP TABLE endpoint_averages; DROP TABLE users; \
                 UPDATE schema_version SET version = 3",
            )
            .expect("downgrade");
            append_requests(conn, 1, 1, &all).expect("append");
        }
        let store = Store::open(&path).expect("migrate");
        assert_eq!(
            schema::version(store.connection()).expect("version"),
            schema::VERSION
        );
        assert_eq!(
            store.caught_up(),
            CatchUp {
                requests: 1_000,
                watermark: 1_000
            }
        );
        let matched = all.iter().filter(|r| r.endpoint.is_some()).count() as u64;
        assert_eq!(rollup_rows(store.connection()), ([matched; 4], 1_000));
        check(store.connection(), &all, NOW);
        drop(store);
        // Read-only readers see the same.
        let store = Store::open_read_only(&path).expect("read-only");
        check(store.connection(), &all, NOW);
    }

    #[test]
    fn an_empty_state_table_means_nothing_is_rolled_up() {
        // As a store filled by another tool with a copy of the schema leaves it.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        let all = traffic(NOW, 700);
        {
            let store = Store::open(&path).expect("open");
            append_requests(store.connection(), 1, 1, &all).expect("append");
            check(store.connection(), &all, NOW);
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.caught_up().watermark, 700);
        check(store.connection(), &all, NOW);
    }

    /// `quantile` over the histogram of `durations` (bucketed as [`BUCKET`] does) against the exact one.
    fn check_quantile(durations: &[f64], q: f64) {
        let mut histogram: BTreeMap<i16, u64> = BTreeMap::new();
        for &d in durations {
            let bucket = if d > 0.0 {
                (d.ln() / BUCKET_RATIO.ln()).floor() as i16
            } else {
                ZERO_BUCKET
            };
            *histogram.entry(bucket).or_default() += 1;
        }
        let histogram: Vec<(i16, u64)> = histogram.into_iter().collect();
        close(
            super::quantile(&histogram, q),
            quantile(durations, q),
            BOUND,
            &format!("q {q} of {durations:?}"),
        );
    }

    #[test]
    fn quantiles_from_histograms_are_within_the_bound() {
        let spread: Vec<f64> = (0..1_000u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) % 100_000) as f64 / 7.0)
            .collect();
        let cases: &[&[f64]] = &[
            &[],
            &[0.0],
            &[0.0, 0.0, 5.0],
            &[1.0],
            &[1.0, 1e6],
            &[3.0, 1.0, 2.0, 10.0],
            &[1e-6, 1.8e13],
            &[2.0; 10],
            &spread,
        ];
        for durations in cases {
            for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
                check_quantile(durations, q);
            }
        }
    }

    #[test]
    fn buckets_hold_what_the_doc_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let check_bucket = |ms: f64| {
            let b: i16 = store
                .connection()
                .query_row(
                    &format!("SELECT {BUCKET} FROM (SELECT ?::DOUBLE AS duration_ms)"),
                    [ms],
                    |r| r.get(0),
                )
                .expect("bucket");
            if ms == 0.0 {
                assert_eq!(b, ZERO_BUCKET);
            } else {
                let (lo, hi) = (
                    BUCKET_RATIO.powi(b.into()),
                    BUCKET_RATIO.powi(i32::from(b) + 1),
                );
                assert!(
                    lo <= ms * (1.0 + 1e-12) && ms < hi * (1.0 + 1e-12),
                    "{ms} in bucket {b} [{lo}, {hi})"
                );
            }
        };
        for ms in [0.0, 1e-6, 0.5, 1.0, 1.01, 1.5, 1000.0, 1.8e13] {
            check_bucket(ms);
        }
    }
}
