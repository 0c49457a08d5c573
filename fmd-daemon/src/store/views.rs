//! The dashboard's views over a time range: hourly load, daily utilization, use per version, duration
//! box plots per endpoint, one endpoint's charts, its profiled requests, the comparison of two intervals,
//! what got slower by code line, and the store's size. Whole hours and days are read from the rollups
//! (`rollup.rs`) so the views stay fast on large stores; partial days and the requests above the rollup
//! watermark are read from `requests`, so every count is exact.

use std::collections::{BTreeMap, HashMap, HashSet};

use duckdb::{
    params_from_iter,
    types::{TimeUnit, Value},
    Connection,
};
use serde::{Deserialize, Serialize};
use time::{macros::format_description, OffsetDateTime};

use super::{
    mann_whitney,
    profiles::{frames_of, stacks_of, FrameInfo},
    rollup::{quantile, BUCKET, WATERMARK},
    time::Micros,
    Error, RequestRow,
};

const HOUR_US: Micros = 3_600_000_000;
const DAY_US: Micros = 24 * HOUR_US;

/// A time range: `since` inclusive, `until` exclusive, microseconds since the epoch; `tz_minutes` is
/// the viewer's offset from UTC (east positive), for the views that bucket by local hour or day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub since: Micros,
    pub until: Micros,
    pub tz_minutes: i32,
}

impl Range {
    fn tz_us(&self) -> Micros {
        Micros::from(self.tz_minutes) * 60_000_000
    }
}

/// Requests in one local (day, hour).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCell {
    pub day: String,
    pub hour: u8,
    pub hits: u64,
}

/// Durations of a group of requests, as a box plot draws them (all in ms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoxStats {
    pub key: String,
    pub hits: u64,
    pub min_ms: f64,
    pub p25_ms: f64,
    pub median_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HourlyLoad {
    pub cells: Vec<HourCell>,
}

/// Requests per endpoint per local day: `series[i].hits[j]` is endpoint i on `days[j]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Daily {
    pub days: Vec<String>,
    pub series: Vec<Series>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub endpoint: String,
    pub hits: Vec<u64>,
}

/// Requests per endpoint per app version: `rows[i].hits[j]` is endpoint i under `versions[j]`.
/// `column` is the requests column versions come from, `None` while the store has none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionUse {
    pub column: Option<String>,
    pub versions: Vec<String>,
    pub rows: Vec<Series>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    pub endpoints: Vec<BoxStats>,
}

/// One endpoint's charts. `times` are the starts of `step_s`-long buckets; `status`, `median_ms`,
/// `p90_ms` and `hits` have one value per bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointView {
    pub hourly: Vec<HourCell>,
    pub step_s: i64,
    pub times: Vec<String>,
    pub status: Vec<StatusSeries>,
    pub median_ms: Vec<Option<f64>>,
    pub p90_ms: Vec<Option<f64>>,
    pub hits: Vec<u64>,
    /// The 20 client addresses with the most requests.
    pub by_ip: Vec<BoxStats>,
    /// `None` while requests carry no such column.
    pub by_version: Option<Vec<BoxStats>>,
    pub by_user: Option<Vec<BoxStats>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusSeries {
    /// `2xx`, `3xx`, ...
    pub class: String,
    pub hits: Vec<u64>,
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub hits: u64,
    pub median_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub error_rate: Option<f64>,
}

/// An endpoint in two intervals; `significant` when the Mann-Whitney U test of the durations gives
/// p < [`SIGNIFICANCE`]; `change` says which way the median moved then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    pub endpoint: String,
    pub a: Side,
    pub b: Side,
    pub u: Option<f64>,
    pub p_value: Option<f64>,
    pub significant: bool,
    pub change: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub rows: Vec<ReportRow>,
}

pub const SIGNIFICANCE: f64 = 0.05;
/// Durations per endpoint and interval the test ranks (a deterministic pseudo-random subset beyond it):
/// enough to detect any change worth showing, bounded in memory and time on big stores.
pub const TEST_SAMPLE: u64 = 5_000;

/// A code line's time per profiled request in two intervals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffLine {
    pub frame: FrameInfo,
    pub a_ms: f64,
    pub b_ms: f64,
    pub delta_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileDiff {
    pub a_requests: usize,
    pub b_requests: usize,
    /// Biggest increase first.
    pub lines: Vec<DiffLine>,
}

/// Profiled requests per interval a diff reads at most (the latest ones).
pub const DIFF_REQUESTS: usize = 1_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSize {
    pub kind: String,
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatabaseSize {
    pub total_bytes: u64,
    pub tables: Vec<TableSize>,
}

fn ts(us: Micros) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, us)
}

fn sql(what: &'static str) -> impl Fn(duckdb::Error) -> Error {
    move |source| Error::Sql { what, source }
}

/// `2026-12-01` and the hour of `utc_us` shifted by `tz_us`.
fn local_day_hour(utc_us: Micros, tz_us: Micros) -> (String, u8) {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(utc_us + tz_us) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let day = t
        .format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_default();
    (day, t.hour())
}

/// Does `requests` have this column (`version`, `user`: added by later migrations)?
fn has_column(conn: &Connection, column: &str) -> Result<bool, Error> {
    conn.query_row(
        "SELECT count(*) > 0 FROM information_schema.columns WHERE table_name = 'requests' AND column_name = ?",
        [column],
        |r| r.get(0),
    )
    .map_err(sql("look up a requests column"))
}

/// Requests per UTC hour (and endpoint) in `range`, from the hourly rollup plus the requests above
/// the watermark. Hours are whole: the hours that `since` and `until` fall in count entirely.
fn hours(
    conn: &Connection,
    range: &Range,
    endpoint: Option<&str>,
) -> Result<Vec<(String, Micros, u64)>, Error> {
    let first = range.since - range.since.rem_euclid(HOUR_US);
    let mut values = vec![ts(first), ts(range.until)];
    let filter = match endpoint {
        Some(e) => {
            values.push(Value::Text(e.to_owned()));
            "AND endpoint = ?3"
        }
        None => "",
    };
    let query = format!(
        "SELECT endpoint, epoch_us(hour), CAST(sum(hits) AS UBIGINT) FROM (
             SELECT endpoint, hour, hits FROM endpoint_hours WHERE hour >= ?1 AND hour < ?2 {filter}
             UNION ALL
             SELECT endpoint, date_trunc('hour', ts), 1 FROM requests
             WHERE id > {WATERMARK} AND endpoint IS NOT NULL AND ts >= ?1 AND ts < ?2 {filter}
         ) GROUP BY ALL ORDER BY 2, 1"
    );
    let mut stmt = conn.prepare(&query).map_err(sql("read hourly rollups"))?;
    let rows = stmt
        .query_map(params_from_iter(values), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(sql("read hourly rollups"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("read hourly rollups"))
}

fn cells(hours: &[(String, Micros, u64)], tz_us: Micros) -> Vec<HourCell> {
    let mut cells: BTreeMap<(String, u8), u64> = BTreeMap::new();
    for (_, hour, hits) in hours {
        *cells.entry(local_day_hour(*hour, tz_us)).or_default() += hits;
    }
    cells
        .into_iter()
        .map(|((day, hour), hits)| HourCell { day, hour, hits })
        .collect()
}

/// Requests per local (day, hour) of the requests attributed to an endpoint (`endpoint` to one).
/// Offsets that are not whole hours put each UTC hour in the local hour it starts in.
pub fn hourly_load(
    conn: &Connection,
    range: &Range,
    endpoint: Option<&str>,
) -> Result<HourlyLoad, Error> {
    Ok(HourlyLoad {
        cells: cells(&hours(conn, range, endpoint)?, range.tz_us()),
    })
}

/// Requests per endpoint per local day, every day of the range listed (empty ones too), endpoints by
/// most requests first.
pub fn daily(conn: &Connection, range: &Range) -> Result<Daily, Error> {
    let tz = range.tz_us();
    let mut days = Vec::new();
    let mut day = range.since;
    while day < range.until + DAY_US && days.len() < 400 {
        let (d, _) = local_day_hour(day, tz);
        if days.last() != Some(&d) && day < range.until.max(range.since + 1) {
            days.push(d);
        }
        day += DAY_US;
    }
    let (last, _) = local_day_hour(range.until.saturating_sub(1).max(range.since), tz);
    if days.last() != Some(&last) {
        days.push(last);
    }
    let index: HashMap<&str, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (endpoint, hour, hits) in hours(conn, range, None)? {
        let (d, _) = local_day_hour(hour, tz);
        if let Some(&i) = index.get(d.as_str()) {
            series
                .entry(endpoint)
                .or_insert_with(|| vec![0; days.len()])[i] += hits;
        }
    }
    let mut series: Vec<Series> = series
        .into_iter()
        .map(|(endpoint, hits)| Series { endpoint, hits })
        .collect();
    series.sort_by_key(|s| std::cmp::Reverse(s.hits.iter().sum::<u64>()));
    Ok(Daily { days, series })
}

/// Requests per endpoint and app version (versions in the order they were first seen).
pub fn versions(conn: &Connection, range: &Range) -> Result<VersionUse, Error> {
    if !has_column(conn, "version")? {
        return Ok(VersionUse {
            column: None,
            versions: Vec::new(),
            rows: Vec::new(),
        });
    }
    let mut stmt = conn
        .prepare(
            "SELECT endpoint, CAST(version AS VARCHAR) AS v, count(*)::UBIGINT, epoch_us(min(ts))
             FROM requests WHERE ts >= ? AND ts < ? AND endpoint IS NOT NULL AND version IS NOT NULL
             GROUP BY endpoint, v",
        )
        .map_err(sql("read versions"))?;
    let rows = stmt
        .query_map(params_from_iter([ts(range.since), ts(range.until)]), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, Micros>(3)?,
            ))
        })
        .map_err(sql("read versions"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("read versions"))?;
    let mut first_seen: HashMap<String, Micros> = HashMap::new();
    let mut table: BTreeMap<String, HashMap<String, u64>> = BTreeMap::new();
    for (endpoint, version, hits, first) in rows {
        let seen = first_seen.entry(version.clone()).or_insert(first);
        *seen = (*seen).min(first);
        *table
            .entry(endpoint)
            .or_default()
            .entry(version)
            .or_default() += hits;
    }
    let mut versions: Vec<String> = first_seen.keys().cloned().collect();
    versions.sort_by_key(|v| (first_seen[v], v.clone()));
    let rows = table
        .into_iter()
        .map(|(endpoint, hits)| Series {
            endpoint,
            hits: versions
                .iter()
                .map(|v| hits.get(v).copied().unwrap_or(0))
                .collect(),
        })
        .collect();
    Ok(VersionUse {
        column: Some("version".to_owned()),
        versions,
        rows,
    })
}

/// Box statistics from a duration histogram ((bucket, hits) by ascending bucket), within the rollups'
/// 1% bound.
fn box_from_histogram(key: String, histogram: &[(i16, u64)]) -> Option<BoxStats> {
    let q = |p| quantile(histogram, p);
    Some(BoxStats {
        key,
        hits: histogram.iter().map(|(_, h)| h).sum(),
        min_ms: q(0.0)?,
        p25_ms: q(0.25)?,
        median_ms: q(0.5)?,
        p75_ms: q(0.75)?,
        p90_ms: q(0.9)?,
        p99_ms: q(0.99)?,
        max_ms: q(1.0)?,
    })
}

/// Duration box plots per endpoint. Whole UTC days inside the range come from the daily histograms;
/// the partial days at its edges (and requests not rolled up yet) from the requests themselves.
pub fn performance(conn: &Connection, range: &Range) -> Result<Performance, Error> {
    let first_day = match range.since.rem_euclid(DAY_US) {
        0 => range.since,
        rem => range.since - rem + DAY_US,
    };
    let last_day = range.until - range.until.rem_euclid(DAY_US);
    let query = if first_day < last_day {
        format!(
            "SELECT endpoint, bucket, CAST(sum(hits) AS UBIGINT) FROM (
                 SELECT endpoint, bucket, hits FROM endpoint_durations
                 WHERE day >= CAST(?3 AS DATE) AND day < CAST(?4 AS DATE)
                 UNION ALL
                 SELECT endpoint, {BUCKET}, 1 FROM requests
                 WHERE endpoint IS NOT NULL AND (
                     (id > {WATERMARK} AND ts >= ?3 AND ts < ?4)
                     OR (ts >= ?1 AND ts < ?3) OR (ts >= ?4 AND ts < ?2))
             ) GROUP BY ALL ORDER BY 1, 2"
        )
    } else {
        format!(
            "SELECT endpoint, {BUCKET} AS b, count(*)::UBIGINT FROM requests
             WHERE endpoint IS NOT NULL AND ts >= ?1 AND ts < ?2 AND ?3 = ?3 AND ?4 = ?4
             GROUP BY ALL ORDER BY 1, 2"
        )
    };
    let values = [
        ts(range.since),
        ts(range.until),
        ts(first_day),
        ts(last_day),
    ];
    let mut stmt = conn
        .prepare(&query)
        .map_err(sql("read duration histograms"))?;
    let rows = stmt
        .query_map(params_from_iter(values), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i16>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })
        .map_err(sql("read duration histograms"))?;
    let mut histograms: BTreeMap<String, Vec<(i16, u64)>> = BTreeMap::new();
    for row in rows {
        let (endpoint, bucket, hits) = row.map_err(sql("read duration histograms"))?;
        histograms.entry(endpoint).or_default().push((bucket, hits));
    }
    Ok(Performance {
        endpoints: histograms
            .into_iter()
            .filter_map(|(endpoint, h)| box_from_histogram(endpoint, &h))
            .collect(),
    })
}

/// A bucket length giving at most about 120 buckets over `span_us`.
fn step_for(span_us: Micros) -> Micros {
    const STEPS_S: [i64; 10] = [
        60,
        300,
        600,
        900,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86400,
    ];
    STEPS_S
        .iter()
        .map(|s| s * 1_000_000)
        .find(|step| span_us / step <= 120)
        .unwrap_or(7 * DAY_US)
}

/// Exact box statistics of requests of `endpoint` in `range` grouped by `column` (top 20 by hits).
fn boxes_by(
    conn: &Connection,
    range: &Range,
    endpoint: &str,
    column: &str,
) -> Result<Vec<BoxStats>, Error> {
    let query = format!(
        "SELECT CAST({column} AS VARCHAR) AS k, count(*)::UBIGINT AS n,
                quantile_cont(duration_ms, [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0])
         FROM requests WHERE endpoint = ? AND ts >= ? AND ts < ? AND {column} IS NOT NULL
         GROUP BY k ORDER BY n DESC, k LIMIT 20"
    );
    let mut stmt = conn
        .prepare(&query)
        .map_err(sql("read durations per group"))?;
    let rows = stmt
        .query_map(
            params_from_iter([
                Value::Text(endpoint.to_owned()),
                ts(range.since),
                ts(range.until),
            ]),
            |r| {
                let q = match r.get::<_, Value>(2)? {
                    Value::List(items) | Value::Array(items) => items
                        .into_iter()
                        .map(|v| match v {
                            Value::Double(d) => d,
                            Value::Float(f) => f64::from(f),
                            _ => f64::NAN,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?, q))
            },
        )
        .map_err(sql("read durations per group"))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, hits, q): (String, u64, Vec<f64>) =
            row.map_err(sql("read durations per group"))?;
        if let [min, p25, median, p75, p90, p99, max] = q[..] {
            out.push(BoxStats {
                key,
                hits,
                min_ms: min,
                p25_ms: p25,
                median_ms: median,
                p75_ms: p75,
                p90_ms: p90,
                p99_ms: p99,
                max_ms: max,
            });
        }
    }
    Ok(out)
}

/// The endpoint page's charts over `range`.
pub fn endpoint_view(
    conn: &Connection,
    range: &Range,
    endpoint: &str,
) -> Result<EndpointView, Error> {
    let step = step_for(range.until - range.since);
    let start = range.since - range.since.rem_euclid(step);
    let buckets = usize::try_from((range.until - start + step - 1) / step)
        .unwrap_or(0)
        .max(1);
    let mut status: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    let mut hits = vec![0_u64; buckets];
    let mut median = vec![None; buckets];
    let mut p90 = vec![None; buckets];
    let values = [
        Value::Text(endpoint.to_owned()),
        ts(range.since),
        ts(range.until),
        Value::BigInt(start),
        Value::BigInt(step),
    ];
    {
        let mut stmt = conn
            .prepare(
                "SELECT (epoch_us(ts) - ?4) // ?5 AS b, status // 100 AS class, count(*)::UBIGINT
                 FROM requests WHERE endpoint = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY ALL",
            )
            .map_err(sql("read status codes over time"))?;
        let rows = stmt
            .query_map(params_from_iter(values.iter().cloned()), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u16>(1)?,
                    r.get::<_, u64>(2)?,
                ))
            })
            .map_err(sql("read status codes over time"))?;
        for row in rows {
            let (b, class, n) = row.map_err(sql("read status codes over time"))?;
            let Some(b) = usize::try_from(b).ok().filter(|b| *b < buckets) else {
                continue;
            };
            status.entry(class).or_insert_with(|| vec![0; buckets])[b] += n;
            hits[b] += n;
        }
    }
    {
        let mut stmt = conn
            .prepare(
                "SELECT (epoch_us(ts) - ?4) // ?5 AS b, quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.9)
                 FROM requests WHERE endpoint = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY ALL",
            )
            .map_err(sql("read durations over time"))?;
        let rows = stmt
            .query_map(params_from_iter(values.iter().cloned()), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, f64>(2)?,
                ))
            })
            .map_err(sql("read durations over time"))?;
        for row in rows {
            let (b, m, p) = row.map_err(sql("read durations over time"))?;
            if let Some(b) = usize::try_from(b).ok().filter(|b| *b < buckets) {
                median[b] = Some(m);
                p90[b] = Some(p);
            }
        }
    }
    let optional = |column: &str| -> Result<Option<Vec<BoxStats>>, Error> {
        if has_column(conn, column)? {
            boxes_by(conn, range, endpoint, &format!("\"{column}\"")).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(EndpointView {
        hourly: hourly_load(conn, range, Some(endpoint))?.cells,
        step_s: step / 1_000_000,
        times: (0..buckets)
            .map(|i| super::time::format_us(start + i as i64 * step))
            .collect(),
        status: status
            .into_iter()
            .map(|(class, hits)| StatusSeries {
                class: format!("{class}xx"),
                hits,
            })
            .collect(),
        median_ms: median,
        p90_ms: p90,
        hits,
        by_ip: boxes_by(conn, range, endpoint, "remote_ip")?,
        by_version: optional("version")?,
        by_user: optional("user")?,
    })
}

/// The requests of `endpoint` in `range` that have a profile, newest first.
pub fn profiled_requests(
    conn: &Connection,
    range: &Range,
    endpoint: &str,
    limit: u64,
) -> Result<Vec<RequestRow>, Error> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT r.id, epoch_us(r.ts), r.method, r.path, r.query, r.status, r.duration_ms, r.remote_ip,
                    r.worker_pid, r.bytes_in, r.bytes_out, r.endpoint, r.rule, r.http_version, r.tid, r.host,
                    r.user_agent, r.version, r.\"user\", {exception}
             FROM requests r JOIN profiled_requests p
               ON p.worker_pid = r.worker_pid AND p.tid = r.tid AND p.ts = r.ts
             WHERE r.endpoint = ? AND r.ts >= ? AND r.ts < ? ORDER BY r.ts DESC, r.id DESC LIMIT ?",
            exception = super::exceptions::REQUEST_EXCEPTION_SQL
        ))
        .map_err(sql("read profiled requests"))?;
    let rows = stmt
        .query_map(
            params_from_iter([
                Value::Text(endpoint.to_owned()),
                ts(range.since),
                ts(range.until),
                Value::UBigInt(limit),
            ]),
            |row| {
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
            },
        )
        .map_err(sql("read profiled requests"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("read profiled requests"))
}

/// Every endpoint requested in interval `a` or `b`: hits, median, p90 and error rate on each side, and
/// a Mann-Whitney U test of the durations (on at most [`TEST_SAMPLE`] per side).
pub fn reporting(conn: &Connection, a: &Range, b: &Range) -> Result<Report, Error> {
    let values = [ts(a.since), ts(a.until), ts(b.since), ts(b.until)];
    let side_sql = "CASE WHEN ts >= ?1 AND ts < ?2 THEN 0 ELSE 1 END";
    let window = "endpoint IS NOT NULL AND ((ts >= ?1 AND ts < ?2) OR (ts >= ?3 AND ts < ?4))";
    let mut sides: BTreeMap<String, [Side; 2]> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT endpoint, {side_sql} AS side, count(*)::UBIGINT, quantile_cont(duration_ms, 0.5),
                        quantile_cont(duration_ms, 0.9), avg(CASE WHEN status >= 500 THEN 1.0 ELSE 0.0 END)
                 FROM requests WHERE {window} GROUP BY ALL"
            ))
            .map_err(sql("compare intervals"))?;
        let rows = stmt
            .query_map(params_from_iter(values.iter().cloned()), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i32>(1)?,
                    Side {
                        hits: r.get(2)?,
                        median_ms: r.get(3)?,
                        p90_ms: r.get(4)?,
                        error_rate: r.get(5)?,
                    },
                ))
            })
            .map_err(sql("compare intervals"))?;
        let empty = || Side {
            hits: 0,
            median_ms: None,
            p90_ms: None,
            error_rate: None,
        };
        for row in rows {
            let (endpoint, side, stats) = row.map_err(sql("compare intervals"))?;
            let entry = sides.entry(endpoint).or_insert_with(|| [empty(), empty()]);
            entry[usize::from(side == 1)] = stats;
        }
    }
    let mut samples: HashMap<String, [Vec<f64>; 2]> = HashMap::new();
    {
        // hash(id) orders rows pseudo-randomly but reproducibly: the same store gives the same p-values.
        let mut stmt = conn
            .prepare(&format!(
                "SELECT endpoint, side, duration_ms FROM (
                     SELECT endpoint, {side_sql} AS side, duration_ms,
                            row_number() OVER (PARTITION BY endpoint, {side_sql} ORDER BY hash(id)) AS n
                     FROM requests WHERE {window}
                 ) WHERE n <= {TEST_SAMPLE}"
            ))
            .map_err(sql("sample durations"))?;
        let rows = stmt
            .query_map(params_from_iter(values.iter().cloned()), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i32>(1)?,
                    r.get::<_, f64>(2)?,
                ))
            })
            .map_err(sql("sample durations"))?;
        for row in rows {
            let (endpoint, side, duration) = row.map_err(sql("sample durations"))?;
            samples.entry(endpoint).or_default()[usize::from(side == 1)].push(duration);
        }
    }
    let rows = sides
        .into_iter()
        .map(|(endpoint, [a, b])| {
            let test = samples
                .get(&endpoint)
                .and_then(|[x, y]| mann_whitney::test(x, y));
            let significant = test.is_some_and(|t| t.p_value < SIGNIFICANCE);
            let change = match (significant, a.median_ms, b.median_ms) {
                (true, Some(ma), Some(mb)) if mb > ma => Some("slower".to_owned()),
                (true, Some(ma), Some(mb)) if mb < ma => Some("faster".to_owned()),
                _ => None,
            };
            ReportRow {
                endpoint,
                a,
                b,
                u: test.map(|t| t.u),
                p_value: test.map(|t| t.p_value),
                significant,
                change,
            }
        })
        .collect();
    Ok(Report { rows })
}

/// Each code line's inclusive time per profiled request of `endpoint` in interval `a` and in `b`,
/// biggest increase first (from the latest [`DIFF_REQUESTS`] profiled requests of each).
pub fn profile_diff(
    conn: &Connection,
    endpoint: &str,
    a: &Range,
    b: &Range,
) -> Result<ProfileDiff, Error> {
    let mut per_side: [HashMap<i64, f64>; 2] = [HashMap::new(), HashMap::new()];
    let mut counts = [0_usize; 2];
    let mut all_stacks = Vec::new();
    for (side, range) in [a, b].into_iter().enumerate() {
        let mut stmt = conn
            .prepare(
                "SELECT p.id FROM profiled_requests p LEFT JOIN requests r
                   ON p.worker_pid = r.worker_pid AND p.tid = r.tid AND p.ts = r.ts
                 WHERE coalesce(p.endpoint, r.endpoint) = ? AND p.ts >= ? AND p.ts < ?
                 ORDER BY p.ts DESC LIMIT ?",
            )
            .map_err(sql("select profiled requests"))?;
        let ids = stmt
            .query_map(
                params_from_iter([
                    Value::Text(endpoint.to_owned()),
                    ts(range.since),
                    ts(range.until),
                    Value::BigInt(DIFF_REQUESTS as i64),
                ]),
                |r| r.get::<_, i64>(0),
            )
            .map_err(sql("select profiled requests"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("select profiled requests"))?;
        counts[side] = ids.len();
        let stacks = stacks_of(conn, &ids)?;
        for stack in &stacks {
            // Inclusive time: a line counts once per stack, however often recursion repeats it.
            let distinct: HashSet<i64> = stack.frames.iter().copied().collect();
            for frame in distinct {
                *per_side[side].entry(frame).or_default() += stack.weight_ns as f64 / 1e6;
            }
        }
        all_stacks.extend(stacks);
    }
    let frames = frames_of(conn, &all_stacks)?;
    let per_request = |side: usize, frame: i64| {
        if counts[side] == 0 {
            0.0
        } else {
            per_side[side].get(&frame).copied().unwrap_or(0.0) / counts[side] as f64
        }
    };
    let mut lines: Vec<DiffLine> = frames
        .into_iter()
        .map(|frame| {
            let (a_ms, b_ms) = (per_request(0, frame.id), per_request(1, frame.id));
            DiffLine {
                frame,
                a_ms,
                b_ms,
                delta_ms: b_ms - a_ms,
            }
        })
        .collect();
    lines.sort_by(|x, y| y.delta_ms.total_cmp(&x.delta_ms));
    Ok(ProfileDiff {
        a_requests: counts[0],
        b_requests: counts[1],
        lines,
    })
}

/// What each kind of data takes: rows per table (DuckDB's estimate) and bytes (its storage blocks).
pub fn database_size(conn: &Connection) -> Result<DatabaseSize, Error> {
    let kind = |table: &str| match table {
        "requests" => "requests",
        t if t.starts_with("profile") => "profiles",
        t if t.starts_with("endpoint_") || t == "rollup_state" => "rollups",
        t if t.contains("outlier") => "outliers",
        t if t.contains("exception") => "exceptions",
        "endpoints" | "attribution" => "route tables",
        "users" | "sessions" => "accounts",
        _ => "bookkeeping",
    };
    let block_size: u64 = conn
        .query_row("SELECT block_size FROM pragma_database_size()", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql("read the database size"))?
        .try_into()
        .unwrap_or(262_144);
    let total_blocks: u64 = conn
        .query_row("SELECT used_blocks FROM pragma_database_size()", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql("read the database size"))?
        .try_into()
        .unwrap_or(0);
    let names = {
        let mut stmt = conn
            .prepare("SELECT table_name, estimated_size FROM duckdb_tables() WHERE database_name = current_database() ORDER BY table_name")
            .map_err(sql("list tables"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sql("list tables"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("list tables"))?
    };
    let mut tables = Vec::new();
    for (table, rows) in names {
        // Distinct persistent blocks of the table's columns; tables in memory only (not checkpointed
        // yet) have none, so they show 0 until DuckDB writes them.
        let blocks: i64 = conn
            .query_row(
                &format!(
                    "SELECT count(DISTINCT block_id) FROM pragma_storage_info('{}') WHERE persistent",
                    table.replace('\'', "''")
                ),
                [],
                |r| r.get(0),
            )
            .map_err(sql("read a table's storage"))?;
        tables.push(TableSize {
            kind: kind(&table).to_owned(),
            bytes: u64::try_from(blocks).unwrap_or(0) * block_size,
            rows: u64::try_from(rows).unwrap_or(0),
            table,
        });
    }
    tables.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.table.cmp(&y.table)));
    Ok(DatabaseSize {
        total_bytes: total_blocks * block_size,
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        request::Request,
        store::{
            append_requests,
            profiles::{append_profiles, Dedup, ProfileFrame, ProfileRecord, ProfileStack},
            rollup::catch_up,
            test_support::{close, exact_quantile, request},
            time::parse_rfc3339,
            Store,
        },
    };

    fn at(text: &str) -> Micros {
        parse_rfc3339(text).expect("time")
    }

    /// A request to `endpoint` at `ts` taking `ms`, answered `status`, from `ip`.
    fn hit(endpoint: &str, ts: Micros, ms: f64, status: u16, ip: &str) -> Request {
        Request {
            ts_us: ts,
            duration_ns: (ms * 1e6).round() as u64,
            status,
            endpoint: Some(endpoint.to_owned()),
            rule: Some(format!("/{endpoint}")),
            remote_ip: Some(ip.to_owned()),
            ..request(0)
        }
    }

    /// Requests over three UTC days (Nov 29 10:00 to Dec 1 20:00) to `a` and `b`; the first half rolled
    /// up, the rest above the watermark, so every view reads both paths.
    fn fixture() -> (tempfile::TempDir, Store, Vec<Request>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let start = at("2026-11-29T10:00:00Z");
        let mut hits = Vec::new();
        for i in 0..600_i64 {
            let ts = start + i * 587_000_000; // every ~9.8 minutes
            let endpoint = if i % 3 == 0 { "b" } else { "a" };
            let ms = 5.0 + (i % 17) as f64 * 1.5 + if endpoint == "b" { 40.0 } else { 0.0 };
            let status = if i % 50 == 0 { 500 } else { 200 };
            hits.push(hit(
                endpoint,
                ts,
                ms,
                status,
                if i % 4 == 0 { "10.0.0.1" } else { "10.0.0.2" },
            ));
        }
        let conn = store.connection();
        append_requests(conn, 1, 1, &hits[..300]).expect("append");
        catch_up(conn).expect("roll up");
        append_requests(conn, 1, 301, &hits[300..]).expect("append");
        (dir, store, hits)
    }

    fn in_range<'a>(hits: &'a [Request], range: &Range) -> impl Iterator<Item = &'a Request> + 'a {
        let (since, until) = (range.since, range.until);
        hits.iter()
            .filter(move |r| r.ts_us >= since && r.ts_us < until)
    }

    #[test]
    fn hourly_load_counts_every_request_in_local_hours() {
        let (_dir, store, hits) = fixture();
        for tz_minutes in [0, 60, -300, 330] {
            // Whole hours, so the rollups' hour granularity gives exact counts.
            let range = Range {
                since: at("2026-11-29T12:00:00Z"),
                until: at("2026-12-01T18:00:00Z"),
                tz_minutes,
            };
            let got = hourly_load(store.connection(), &range, None)
                .expect("load")
                .cells;
            let mut expect: BTreeMap<(String, u8), u64> = BTreeMap::new();
            for r in in_range(&hits, &range) {
                let hour = r.ts_us - r.ts_us.rem_euclid(HOUR_US);
                *expect
                    .entry(local_day_hour(hour, range.tz_us()))
                    .or_default() += 1;
            }
            let expect: Vec<HourCell> = expect
                .into_iter()
                .map(|((day, hour), hits)| HourCell { day, hour, hits })
                .collect();
            assert_eq!(got, expect, "tz {tz_minutes}");
            let one = hourly_load(store.connection(), &range, Some("b")).expect("load");
            let b = in_range(&hits, &range)
                .filter(|r| r.endpoint.as_deref() == Some("b"))
                .count();
            assert_eq!(one.cells.iter().map(|c| c.hits).sum::<u64>(), b as u64);
        }
        assert_eq!(
            local_day_hour(at("2026-11-30T23:30:00Z"), 60 * 60_000_000),
            ("2026-12-01".into(), 0)
        );
    }

    #[test]
    fn daily_lists_every_day_and_endpoint() {
        let (_dir, store, hits) = fixture();
        let range = Range {
            since: at("2026-11-28T00:00:00Z"),
            until: at("2026-12-02T00:00:00Z"),
            tz_minutes: 0,
        };
        let got = daily(store.connection(), &range).expect("daily");
        assert_eq!(
            got.days,
            ["2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01"]
        );
        assert_eq!(
            got.series
                .iter()
                .map(|s| s.endpoint.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        for s in &got.series {
            for (i, day) in got.days.iter().enumerate() {
                let expect = hits
                    .iter()
                    .filter(|r| {
                        r.endpoint.as_deref() == Some(&s.endpoint)
                            && local_day_hour(r.ts_us, 0).0 == *day
                    })
                    .count();
                assert_eq!(s.hits[i], expect as u64, "{} {day}", s.endpoint);
            }
        }
    }

    #[test]
    fn performance_quantiles_are_within_the_rollup_bound() {
        let (_dir, store, hits) = fixture();
        // Partial days at both ends and whole days between: histograms plus raw edges.
        for (since, until) in [
            ("2026-11-29T13:17:00Z", "2026-12-01T09:41:00Z"),
            ("2026-11-30T02:00:00Z", "2026-11-30T05:00:00Z"),
        ] {
            let range = Range {
                since: at(since),
                until: at(until),
                tz_minutes: 0,
            };
            let got = performance(store.connection(), &range).expect("performance");
            assert_eq!(got.endpoints.len(), 2, "{since}");
            for b in &got.endpoints {
                let durations: Vec<f64> = in_range(&hits, &range)
                    .filter(|r| r.endpoint.as_deref() == Some(&b.key))
                    .map(|r| r.duration_ns as f64 / 1e6)
                    .collect();
                assert_eq!(b.hits, durations.len() as u64, "{} {since}", b.key);
                for (got, q) in [
                    (b.min_ms, 0.0),
                    (b.p25_ms, 0.25),
                    (b.median_ms, 0.5),
                    (b.p90_ms, 0.9),
                    (b.max_ms, 1.0),
                ] {
                    close(
                        Some(got),
                        exact_quantile(&durations, q),
                        0.01 + 1e-9,
                        &format!("{} q{q}", b.key),
                    );
                }
            }
        }
    }

    #[test]
    fn versions_split_each_endpoint() {
        let (_dir, store, _) = fixture();
        let range = Range {
            since: 0,
            until: at("2027-01-01T00:00:00Z"),
            tz_minutes: 0,
        };
        store
            .connection()
            .execute_batch(
                "UPDATE requests SET version = CASE WHEN ts < TIMESTAMP '2026-11-30 12:00:00' THEN 'v1' ELSE 'v2' END",
            )
            .expect("set versions");
        let got = versions(store.connection(), &range).expect("versions");
        assert_eq!(got.column.as_deref(), Some("version"));
        assert_eq!(got.versions, ["v1", "v2"]);
        let total: u64 = got.rows.iter().flat_map(|r| r.hits.iter()).sum();
        assert_eq!(total, 600);
        let view = endpoint_view(store.connection(), &range, "a").expect("view");
        assert_eq!(view.by_version.expect("versions").len(), 2);
    }

    #[test]
    fn endpoint_view_buckets_status_and_durations() {
        let (_dir, store, hits) = fixture();
        let range = Range {
            since: at("2026-11-30T00:00:00Z"),
            until: at("2026-12-01T00:00:00Z"),
            tz_minutes: 0,
        };
        let got = endpoint_view(store.connection(), &range, "a").expect("view");
        assert_eq!(got.step_s, 900, "a day in 15-minute buckets");
        assert_eq!(got.times.len(), 96);
        let mine: Vec<&Request> = in_range(&hits, &range)
            .filter(|r| r.endpoint.as_deref() == Some("a"))
            .collect();
        assert_eq!(got.hits.iter().sum::<u64>(), mine.len() as u64);
        let errors: u64 = got
            .status
            .iter()
            .filter(|s| s.class == "5xx")
            .flat_map(|s| s.hits.iter())
            .sum();
        assert_eq!(
            errors,
            mine.iter().filter(|r| r.status >= 500).count() as u64
        );
        // The median of the first non-empty bucket, exactly.
        let first = got
            .hits
            .iter()
            .position(|h| *h > 0)
            .expect("a bucket with requests");
        let bucket_start = range.since + first as i64 * 900_000_000;
        let durations: Vec<f64> = mine
            .iter()
            .filter(|r| r.ts_us >= bucket_start && r.ts_us < bucket_start + 900_000_000)
            .map(|r| r.duration_ns as f64 / 1e6)
            .collect();
        close(
            got.median_ms[first],
            exact_quantile(&durations, 0.5),
            1e-9,
            "median",
        );
        assert_eq!(
            got.by_ip.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(),
            ["10.0.0.2", "10.0.0.1"]
        );
        assert_eq!(
            got.by_ip.iter().map(|b| b.hits).sum::<u64>(),
            mine.len() as u64
        );
    }

    #[test]
    fn reporting_flags_only_real_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let a_start = at("2026-11-30T00:00:00Z");
        let b_start = at("2026-12-01T00:00:00Z");
        let mut hits = Vec::new();
        for i in 0..200_i64 {
            let jitter = (i % 13) as f64;
            // `slow` doubles from A to B; `same` keeps its distribution; `new` exists only in B.
            hits.push(hit(
                "slow",
                a_start + i * 60_000_000,
                10.0 + jitter,
                200,
                "1.1.1.1",
            ));
            hits.push(hit(
                "slow",
                b_start + i * 60_000_000,
                20.0 + 2.0 * jitter,
                200,
                "1.1.1.1",
            ));
            hits.push(hit(
                "same",
                a_start + i * 60_000_000 + 1,
                30.0 + jitter,
                200,
                "1.1.1.1",
            ));
            hits.push(hit(
                "same",
                b_start + i * 60_000_000 + 1,
                30.0 + (12 - i % 13) as f64,
                if i < 20 { 503 } else { 200 },
                "1.1.1.1",
            ));
            hits.push(hit(
                "new",
                b_start + i * 60_000_000 + 2,
                1.0,
                200,
                "1.1.1.1",
            ));
        }
        append_requests(store.connection(), 1, 1, &hits).expect("append");
        let a = Range {
            since: a_start,
            until: b_start,
            tz_minutes: 0,
        };
        let b = Range {
            since: b_start,
            until: b_start + 86_400_000_000,
            tz_minutes: 0,
        };
        let report = reporting(store.connection(), &a, &b).expect("report");
        let row = |e: &str| report.rows.iter().find(|r| r.endpoint == e).expect(e);
        let slow = row("slow");
        assert!(
            slow.significant && slow.change.as_deref() == Some("slower"),
            "{slow:?}"
        );
        assert!(slow.p_value.expect("p") < 1e-6);
        assert_eq!((slow.a.hits, slow.b.hits), (200, 200));
        close(slow.a.median_ms, Some(16.0), 1e-9, "median A");
        let same = row("same");
        assert!(!same.significant && same.change.is_none(), "{same:?}");
        close(same.b.error_rate, Some(0.1), 1e-9, "error rate B");
        let new = row("new");
        assert_eq!((new.a.hits, new.u, new.significant), (0, None, false));
    }

    fn frame(function: &str, line: i32) -> ProfileFrame {
        ProfileFrame {
            file: "/app/app.py".into(),
            line,
            function: function.into(),
            first_line: 1,
            source: None,
        }
    }

    #[test]
    fn profile_diff_shows_what_got_slower() {
        let (_dir, store, hits) = fixture();
        let conn = store.connection();
        // Profiles of `a`'s requests: before Nov 30 `work` takes 4 ms; after it, 10 ms (`view` 2 ms always).
        let split = at("2026-11-30T12:00:00Z");
        let records: Vec<ProfileRecord> = hits
            .iter()
            .filter(|r| r.endpoint.as_deref() == Some("a"))
            .map(|r| {
                let work = if r.ts_us < split { 4 } else { 10 };
                ProfileRecord {
                    worker_pid: r.worker_pid,
                    tid: r.tid,
                    ts_us: r.ts_us,
                    duration_ns: r.duration_ns,
                    path: r.path.clone(),
                    endpoint: Some("a".into()),
                    gc_ns: None,
                    stacks: vec![
                        ProfileStack {
                            frames: vec![frame("view", 10)],
                            off_cpu: false,
                            truncated: false,
                            samples: 1,
                            weight_ns: 2_000_000,
                        },
                        ProfileStack {
                            frames: vec![frame("view", 11), frame("work", 20)],
                            off_cpu: false,
                            truncated: false,
                            samples: 1,
                            weight_ns: work * 1_000_000,
                        },
                    ],
                }
            })
            .collect();
        let mut dedup = Dedup::load(conn).expect("dedup");
        append_profiles(conn, &mut dedup, &records).expect("profiles");
        let a = Range {
            since: at("2026-11-29T00:00:00Z"),
            until: split,
            tz_minutes: 0,
        };
        let b = Range {
            since: split,
            until: at("2026-12-02T00:00:00Z"),
            tz_minutes: 0,
        };
        let diff = profile_diff(conn, "a", &a, &b).expect("diff");
        assert!(diff.a_requests > 0 && diff.b_requests > 0);
        // `work` and its caller's line (inclusive time) grew by 6 ms: they lead.
        close(
            Some(diff.lines[0].delta_ms),
            Some(6.0),
            1e-9,
            "largest increase",
        );
        let work = diff
            .lines
            .iter()
            .find(|l| l.frame.function == "work")
            .expect("work");
        close(Some(work.a_ms), Some(4.0), 1e-9, "work A");
        close(Some(work.b_ms), Some(10.0), 1e-9, "work B");
        assert!(diff.lines[..2].iter().any(|l| l.frame.function == "work"));
        let steady = diff
            .lines
            .iter()
            .find(|l| l.frame.line == 10)
            .expect("view line 10");
        close(Some(steady.delta_ms), Some(0.0), 1e-9, "view");

        let profiled = profiled_requests(conn, &b, "a", 5).expect("profiled");
        assert_eq!(profiled.len(), 5);
        assert!(
            profiled.windows(2).all(|w| w[0].ts >= w[1].ts),
            "newest first"
        );
        assert!(profiled_requests(conn, &b, "b", 5)
            .expect("none")
            .is_empty());
    }

    #[test]
    fn database_size_names_each_kind() {
        let (_dir, store, _) = fixture();
        store
            .connection()
            .execute_batch("CHECKPOINT")
            .expect("checkpoint");
        let size = database_size(store.connection()).expect("size");
        assert!(size.total_bytes > 0);
        let requests = size
            .tables
            .iter()
            .find(|t| t.table == "requests")
            .expect("requests");
        assert_eq!((requests.kind.as_str(), requests.rows), ("requests", 600));
        assert!(requests.bytes > 0);
        assert!(size.tables.iter().any(|t| t.kind == "rollups"));
    }

    #[test]
    fn steps_keep_charts_readable() {
        assert_eq!(step_for(HOUR_US), 60_000_000);
        assert_eq!(step_for(DAY_US), 900_000_000);
        assert_eq!(step_for(7 * DAY_US), 3 * HOUR_US);
        assert_eq!(step_for(90 * DAY_US), DAY_US);
    }
}
