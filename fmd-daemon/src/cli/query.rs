//! `fmd-daemon query ...`: reads requests, endpoints and stats from the running daemon's API when `<db>.daemon` names
//! a live one (it holds the DuckDB file), else from the file read-only, and prints them as an aligned
//! table, JSON lines or CSV. The output is the same either way.

use std::{
    io::{self, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;

use crate::{
    api::MAX_LIMIT,
    store::{
        self,
        time::{format_us, now_us, parse_instant, Micros},
        DaemonFile, EndpointList, RequestFilter, RequestRow, Stats, Store,
    },
};

pub const DEFAULT_DB: &str = "/var/lib/fmd/fmd.duckdb";

/// `query`: read what fmd has stored.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(subcommand)]
    pub command: QueryCommand,
    /// The fmd database file [default: the store of the one running daemon, else
    /// /var/lib/fmd/fmd.duckdb].
    #[arg(long, env = "FMD_DB", global = true)]
    pub db: Option<PathBuf>,
    /// Output format: aligned table, JSON (one object per line) or CSV with a header row.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Print on stderr how long the query itself took (opening the store and writing the output
    /// excluded), like psql's `\timing`.
    #[arg(long, global = true)]
    pub timing: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum QueryCommand {
    /// Stored requests, oldest first.
    Requests(RequestsArgs),
    /// Every endpoint of the app, requested or not, with hits (all time, since 00:00 UTC, last 7 days)
    /// and latency; most requested first.
    Endpoints,
    /// Counters summed over every daemon run (events lost, unparseable requests, ...).
    Stats,
    /// One request's execution tree: each code line with its time and share of the request.
    Profile(super::profile::ProfileArgs),
    /// The merged profile of an endpoint's (or a path's) last profiled requests; `--format folded` for
    /// flame-graph tools.
    GroupedProfile(super::profile::GroupedArgs),
    /// App versions seen (config `app_version` or the git commit of the app's code): when each was first
    /// and last seen and how many requests it served, oldest first.
    Versions,
    /// Exceptions the app logged while serving requests, grouped by type and place, per endpoint; most
    /// recently seen first. `--group G` shows one group's traceback with its source.
    Exceptions(super::exceptions::ExceptionsArgs),
    /// Outliers (requests slower than their endpoint's threshold) and live snapshots of slow running
    /// requests, with stack, CPU, memory, headers, request values and environment (`--format json`).
    Outliers(super::outliers::OutliersArgs),
}

#[derive(Debug, Default, clap::Args)]
pub struct RequestsArgs {
    /// Only requests at or after this time: RFC 3339 (2026-11-23T15:56:41Z) or a time ago (15m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only requests before this time, in the same forms as --since.
    #[arg(long)]
    pub until: Option<String>,
    /// Show only the most recent N matching requests.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Only requests to this Flask endpoint.
    #[arg(long)]
    pub endpoint: Option<String>,
}

impl RequestsArgs {
    fn filter(&self, now: Micros) -> anyhow::Result<RequestFilter> {
        let time = |flag: &str, value: &Option<String>| -> anyhow::Result<Option<Micros>> {
            value
                .as_deref()
                .map(|v| parse_instant(v, now).with_context(|| format!("bad --{flag}")))
                .transpose()
        };
        Ok(RequestFilter {
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            limit: self.limit,
            // Empty means no filter, as in the API, so both sources answer alike.
            endpoint: self.endpoint.clone().filter(|e| !e.is_empty()),
            before_id: None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    /// Folded stacks (`grouped-profile` only), for flamegraph.pl, inferno or speedscope.
    Folded,
}

/// Runs a `query` subcommand, printing to stdout.
pub fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    let db = match &args.db {
        Some(db) => db.clone(),
        None => default_db(Path::new(DEFAULT_DB), &store::runtime_dir())?,
    };
    let source = Source::find(&db)?;
    let mut out = io::stdout().lock();
    let mut watch = Stopwatch::default();
    let result = match &args.command {
        QueryCommand::Requests(requests) => {
            let filter = requests.filter(now_us())?;
            let rows = watch.time(|| source.requests(&filter))?;
            written(write_requests(&rows, args.format, &mut out), &mut out)
        }
        QueryCommand::Endpoints => {
            let list = watch.time(|| source.endpoints(now_us()))?;
            if args.format == Format::Table {
                // Not part of the table, so `| sort` and friends see rows only.
                let mut err = io::stderr().lock();
                let _ = writeln!(err, "{}", super::describe_endpoints(&list));
            }
            written(
                super::write_endpoints(&list.endpoints, args.format, &mut out),
                &mut out,
            )
        }
        QueryCommand::Stats => {
            let stats = watch.time(|| source.stats())?;
            written(write_stats(&stats, args.format, &mut out), &mut out)
        }
        QueryCommand::Versions => {
            let rows = watch.time(|| source.versions())?;
            written(
                super::write_versions(&rows, args.format, &mut out),
                &mut out,
            )
        }
        QueryCommand::Profile(profile) => finish(
            super::profile::run_profile(&source, profile, args.format, &mut out, &mut watch),
            &mut out,
        ),
        QueryCommand::GroupedProfile(grouped) => finish(
            super::profile::run_grouped(&source, grouped, args.format, &mut out, &mut watch),
            &mut out,
        ),
        QueryCommand::Exceptions(exceptions) => finish(
            super::exceptions::run(&source, exceptions, args.format, &mut out, &mut watch),
            &mut out,
        ),
        QueryCommand::Outliers(outliers) => finish(
            super::outliers::run_outliers(&source, outliers, args.format, &mut out, &mut watch),
            &mut out,
        ),
    };
    if let (true, Ok(()), Some(took)) = (args.timing, &result, watch.took) {
        let _ = writeln!(io::stderr().lock(), "{}", timing_line(took));
    }
    result
}

/// The store to read without `--db`: `default` when a daemon runs on it; else the store of the one
/// running daemon registered in `runtime` (several: the user picks with `--db`); else `default`.
pub fn default_db(default: &Path, runtime: &Path) -> anyhow::Result<PathBuf> {
    if matches!(DaemonFile::read(default), Ok(Some(d)) if d.is_alive()) {
        return Ok(default.to_owned());
    }
    let running = store::Registration::running(runtime);
    match running.as_slice() {
        [] => Ok(default.to_owned()),
        [one] => {
            tracing::debug!(db = %one.db.display(), pid = one.pid, "reading the running daemon's store");
            Ok(one.db.clone())
        }
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|r| {
                    format!(
                        "  --db {}  (fmd-daemon pid {}, http://{})",
                        r.db.display(),
                        r.pid,
                        r.listen
                    )
                })
                .collect();
            bail!(
                "{} fmd daemons are running; pick one with --db:\n{}",
                several.len(),
                list.join("\n")
            )
        }
    }
}

/// `--timing`: the time spent in the query calls, without opening the store or writing the output.
#[derive(Debug, Default)]
pub(super) struct Stopwatch {
    took: Option<Duration>,
}

impl Stopwatch {
    /// Runs `query`, adding its wall time to the total.
    pub(super) fn time<T>(&mut self, query: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let answer = query();
        self.took = Some(self.took.unwrap_or_default() + start.elapsed());
        answer
    }
}

/// The line `--timing` prints on stderr, in psql's words so scripts can parse it (`Time: 12.345 ms`).
pub fn timing_line(took: Duration) -> String {
    format!("Time: {:.3} ms", took.as_secs_f64() * 1000.0)
}

/// Ends a command that wrote plain `io` output.
fn written(result: io::Result<()>, out: &mut dyn Write) -> anyhow::Result<()> {
    match result.and_then(|()| out.flush()) {
        // `fmd-daemon query requests | head` closes the pipe early: not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write the output"),
    }
}

/// Ends a command whose own errors are already `anyhow` (a closed pipe is not one).
fn finish(result: anyhow::Result<()>, out: &mut dyn Write) -> anyhow::Result<()> {
    let result = result.and_then(|()| Ok(out.flush()?));
    match result {
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Where the data comes from.
pub(super) enum Source {
    /// A running daemon's API; `db` to fall back on if it does not answer after all.
    Daemon {
        listen: SocketAddr,
        db: PathBuf,
    },
    File(Store),
}

impl Source {
    fn find(db: &Path) -> anyhow::Result<Self> {
        match DaemonFile::read(db) {
            Ok(Some(daemon)) if daemon.is_alive() => {
                tracing::debug!(pid = daemon.pid, listen = %daemon.listen, "asking the running daemon");
                return Ok(Self::Daemon {
                    listen: daemon.listen,
                    db: db.to_owned(),
                });
            }
            Ok(Some(daemon)) => {
                tracing::debug!(pid = daemon.pid, "stale daemon file: its process is gone");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(e)),
                "ignoring the daemon file"
            ),
        }
        Ok(Self::File(Store::open_read_only(db)?))
    }

    fn requests(&self, filter: &RequestFilter) -> anyhow::Result<Vec<RequestRow>> {
        match self {
            Self::File(store) => Ok(store::requests(store.connection(), filter)?),
            Self::Daemon { listen, db } => {
                // The API answers at most MAX_LIMIT rows at a time: read newest first, page by page.
                let mut pages: Vec<Vec<RequestRow>> = Vec::new();
                let mut wanted = filter.limit;
                let mut before = filter.before_id;
                loop {
                    let page_limit = wanted.map_or(MAX_LIMIT, |w| w.min(MAX_LIMIT));
                    // Times are resolved here, so `15m` means fifteen minutes before this command ran.
                    let mut query = Vec::new();
                    query.extend(filter.since.map(|t| ("since", format_us(t))));
                    query.extend(filter.until.map(|t| ("until", format_us(t))));
                    query.push(("limit", page_limit.to_string()));
                    query.extend(filter.endpoint.clone().map(|e| ("endpoint", e)));
                    query.extend(before.map(|id| ("before_id", id.to_string())));
                    let rows: Vec<RequestRow> = match fetch(*listen, db, "/api/requests", &query)? {
                        Fetched::Got(rows) => rows,
                        Fetched::Unreachable(e) if pages.is_empty() => {
                            return Self::fallback(db, &e)?.requests(filter)
                        }
                        Fetched::Unreachable(e) => {
                            bail!("the fmd daemon at {listen} stopped answering: {e}")
                        }
                    };
                    let full = rows.len() as u64 == page_limit;
                    before = rows.first().map(|r| r.id);
                    if let Some(w) = &mut wanted {
                        *w = w.saturating_sub(rows.len() as u64);
                    }
                    pages.push(rows);
                    if !full || wanted == Some(0) || before.is_none() {
                        break;
                    }
                }
                Ok(pages.into_iter().rev().flatten().collect())
            }
        }
    }

    /// `now` is used for the file; the daemon answers as of its own clock.
    fn endpoints(&self, now: Micros) -> anyhow::Result<EndpointList> {
        match self {
            Self::File(store) => Ok(store::endpoint_list(store.connection(), now)?),
            Self::Daemon { listen, db } => match fetch(*listen, db, "/api/endpoints", &[])? {
                Fetched::Got(list) => Ok(list),
                Fetched::Unreachable(e) => Self::fallback(db, &e)?.endpoints(now),
            },
        }
    }

    fn stats(&self) -> anyhow::Result<Stats> {
        match self {
            Self::File(store) => Ok(store::stats(store.connection())?),
            Self::Daemon { listen, db } => match fetch(*listen, db, "/api/stats", &[])? {
                Fetched::Got(stats) => Ok(stats),
                Fetched::Unreachable(e) => Self::fallback(db, &e)?.stats(),
            },
        }
    }

    /// The daemon file names a live pid but nothing answers there (a reused pid, a daemon still starting):
    /// try the file itself.
    pub(super) fn fallback(db: &Path, error: &ureq::Error) -> anyhow::Result<Self> {
        tracing::debug!(%error, "the daemon does not answer; opening the database");
        Store::open_read_only(db).map(Self::File).with_context(|| {
            format!(
                "the fmd daemon for {} does not answer its API ({error})",
                db.display()
            )
        })
    }
}

pub(super) enum Fetched<T> {
    Got(T),
    /// Nothing usable answered at the address.
    Unreachable(ureq::Error),
}

/// GETs `path` from the daemon's API and decodes the JSON; an API error becomes its message. Sends the
/// daemon's local credential (`<db>.token`) when this process can read it.
pub(super) fn fetch<T: DeserializeOwned>(
    listen: SocketAddr,
    db: &Path,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<Fetched<T>> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    let mut request = agent
        .get(format!("http://{listen}{path}"))
        .query_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    let token = crate::security::LocalToken::read(db);
    if let Some(token) = &token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = match request.call() {
        Ok(response) => response,
        Err(e) => return Ok(Fetched::Unreachable(e)),
    };
    let status = response.status();
    let reader = BufReader::new(response.body_mut().as_reader());
    if !status.is_success() {
        let body: serde_json::Value = serde_json::from_reader(reader).unwrap_or_default();
        let message = body["error"].as_str().unwrap_or("no error message");
        if status == 401 && token.is_none() {
            bail!(
                "the fmd daemon at {listen} answered {status}: run this as root, who can read its local \
                 credential {}",
                crate::security::LocalToken::path_for(db).display()
            );
        }
        bail!("the fmd daemon at {listen} answered {status}: {message}");
    }
    let value = serde_json::from_reader(reader)
        .with_context(|| format!("bad answer from the fmd daemon at {listen}{path}"))?;
    Ok(Fetched::Got(value))
}

/// Writes `rows` in `format`. Table: the main columns, aligned; JSON: every field, one object per line;
/// CSV: every field, with a header row named like the JSON fields.
pub fn write_requests(rows: &[RequestRow], format: Format, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Json => rows.iter().try_for_each(|row| json_line(row, out)),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            if rows.is_empty() {
                // serde writes the header with the first row; an empty result still gets one.
                csv.write_record(REQUEST_FIELDS)?;
            }
            rows.iter()
                .try_for_each(|row| csv.serialize(row))
                .map_err(io::Error::from)?;
            csv.flush()
        }
        Format::Table | Format::Folded => {
            let header = [
                "id",
                "ts",
                "method",
                "path",
                "status",
                "duration_ms",
                "remote_ip",
                "worker_pid",
                "bytes_in",
                "bytes_out",
                "endpoint",
                "version",
                "user",
            ];
            let right = [
                true, false, false, false, true, true, false, true, true, true, false, false, false,
            ];
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let target = match &r.query {
                        Some(q) => format!("{}?{q}", r.path),
                        None => r.path.clone(),
                    };
                    vec![
                        r.id.to_string(),
                        format_us(r.ts),
                        r.method.clone(),
                        target,
                        r.status.to_string(),
                        format!("{:.3}", r.duration_ms),
                        opt(&r.remote_ip),
                        r.worker_pid.to_string(),
                        r.bytes_in.to_string(),
                        r.bytes_out.to_string(),
                        opt(&r.endpoint),
                        short_version(r.version.as_deref()),
                        opt(&r.user),
                    ]
                })
                .collect();
            write_table(&header, &right, &cells, out)
        }
    }
}

/// A version for the table: git commits cut to 12 digits (as `git log --oneline` would, with room to
/// spare); JSON and CSV keep the whole id.
fn short_version(version: Option<&str>) -> String {
    match version {
        None => "-".to_owned(),
        Some(v) if v.len() >= 40 && v.bytes().all(|b| b.is_ascii_hexdigit()) => v[..12].to_owned(),
        Some(v) => v.to_owned(),
    }
}

/// [`RequestRow`]'s fields in order, for the CSV header of an empty result.
const REQUEST_FIELDS: [&str; 20] = [
    "id",
    "ts",
    "method",
    "path",
    "query",
    "status",
    "duration_ms",
    "remote_ip",
    "worker_pid",
    "bytes_in",
    "bytes_out",
    "endpoint",
    "rule",
    "http_version",
    "tid",
    "host",
    "user_agent",
    "version",
    "user",
    "exception",
];

/// Writes `stats`: JSON as one object on one line; table and CSV as `name, value` rows, the named counters
/// first, then any other counter.
pub fn write_stats(stats: &Stats, format: Format, out: &mut dyn Write) -> io::Result<()> {
    if format == Format::Json {
        return json_line(stats, out);
    }
    let mut rows = vec![
        ("requests_stored", i128::from(stats.requests_stored)),
        ("runs", i128::from(stats.runs)),
        ("events_received", i128::from(stats.events_received)),
        ("events_lost", i128::from(stats.events_lost)),
        ("unparseable", i128::from(stats.unparseable)),
        ("aborted", i128::from(stats.aborted)),
        ("desynced", i128::from(stats.desynced)),
        ("evicted", i128::from(stats.evicted)),
        ("conn_table_full", i128::from(stats.conn_table_full)),
        ("store_write_errors", i128::from(stats.store_write_errors)),
        ("store_rows_dropped", i128::from(stats.store_rows_dropped)),
    ];
    for (name, value) in &stats.counters {
        if !rows.iter().any(|(known, _)| known == name) {
            rows.push((name.as_str(), i128::from(*value)));
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, value)| vec![(*name).to_owned(), value.to_string()])
        .collect();
    match format {
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record(["name", "value"])?;
            cells.iter().try_for_each(|row| csv.write_record(row))?;
            csv.flush()
        }
        _ => write_table(&["name", "value"], &[false, true], &cells, out),
    }
}

pub(super) fn json_line(value: &impl serde::Serialize, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Columns separated by two spaces, each as wide as its widest cell (in chars), numbers right-aligned; no
/// trailing spaces.
pub(super) fn write_table(
    header: &[&str],
    right: &[bool],
    rows: &[Vec<String>],
    out: &mut dyn Write,
) -> io::Result<()> {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let all = || std::iter::once(&header).chain(rows);
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            all()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in all() {
        let mut line = String::new();
        for (c, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::request;

    fn row(i: u32) -> RequestRow {
        let r = request(i);
        RequestRow {
            id: i64::from(i) + 1,
            ts: r.ts_us,
            method: r.method,
            path: r.path,
            query: r.query,
            status: r.status,
            duration_ms: r.duration_ns as f64 / 1e6,
            remote_ip: r.remote_ip,
            worker_pid: r.worker_pid,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            endpoint: r.endpoint,
            rule: r.rule,
            http_version: r.http_version,
            tid: r.tid,
            host: r.host,
            user_agent: r.user_agent,
            version: r.version,
            user: r.user,
            exception: None,
        }
    }

    fn check(rows: &[RequestRow], format: Format, expect: &str) {
        let mut out = Vec::new();
        write_requests(rows, format, &mut out).expect("write");
        assert_eq!(String::from_utf8(out).expect("utf-8"), expect, "{format:?}");
    }

    #[test]
    fn requests_as_table() {
        let mut versioned = row(1);
        versioned.version = Some("1.4".into());
        versioned.user = Some("ann".into());
        let mut committed = row(10);
        committed.version = Some("0123456789abcdef0123456789abcdef01234567".into());
        check(
            &[row(0), versioned, committed],
            Format::Table,
            "\
id  ts                           method  path         status  duration_ms  remote_ip  worker_pid  bytes_in  bytes_out  endpoint  version       user
 1  2026-11-23T15:56:41.123456Z  GET     /item/0?q=0     200        1.500  -                4000       100       2000  item      -             -
 2  2026-11-23T15:56:41.124456Z  POST    /item/1         201        1.500  10.0.0.1         4001       101       2001  -         1.4           ann
11  2026-11-23T15:56:41.133456Z  GET     /item/10        200        1.500  10.0.0.10        4001       110       2010  item      0123456789ab  -
",
        );
        check(
            &[],
            Format::Table,
            "id  ts  method  path  status  duration_ms  remote_ip  worker_pid  bytes_in  bytes_out  endpoint  version  user\n",
        );
    }

    #[test]
    fn requests_as_csv() {
        let header = "id,ts,method,path,query,status,duration_ms,remote_ip,worker_pid,bytes_in,bytes_out,endpoint,rule,\
                      http_version,tid,host,user_agent,version,user,exception\n";
        check(&[], Format::Csv, header);
        let mut quoted = row(1);
        quoted.path = "/a,\"b\"".into();
        check(
            &[row(0), quoted],
            Format::Csv,
            &format!(
                "{header}1,2026-11-23T15:56:41.123456Z,GET,/item/0,q=0,200,1.5,,4000,100,2000,item,/item/<int:id>,HTTP/1.1,\
                 5000,localhost:8000,,,,\n2,2026-11-23T15:56:41.124456Z,POST,\"/a,\"\"b\"\"\",,201,1.500001,10.0.0.1,4001,101,\
                 2001,,,HTTP/1.1,5001,localhost:8000,curl/8.5.0,,,\n"
            ),
        );
    }

    #[test]
    fn requests_as_json_lines() {
        let mut out = Vec::new();
        write_requests(&[row(0), row(1)], Format::Json, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: Vec<RequestRow> = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(back, [row(0), row(1)]);
        assert!(
            lines[0].starts_with(r#"{"id":1,"ts":"2026-11-23T15:56:41.123456Z","#),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn stats_formats() {
        let stats = Stats {
            requests_stored: 12,
            runs: 2,
            events_lost: 3,
            counters: [
                ("events_lost".to_owned(), 3),
                ("symbols_unknown".to_owned(), 7),
            ]
            .into(),
            ..Stats::default()
        };
        let render = |format| {
            let mut out = Vec::new();
            write_stats(&stats, format, &mut out).expect("write");
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(
            render(Format::Table),
            "\
name                value
requests_stored        12
runs                    2
events_received         0
events_lost             3
unparseable             0
aborted                 0
desynced                0
evicted                 0
conn_table_full         0
store_write_errors      0
store_rows_dropped      0
symbols_unknown         7
"
        );
        assert!(render(Format::Csv).starts_with("name,value\nrequests_stored,12\nruns,2\n"));
        assert!(render(Format::Csv).ends_with("store_rows_dropped,0\nsymbols_unknown,7\n"));
        let json = render(Format::Json);
        assert_eq!(json.lines().count(), 1);
        assert_eq!(serde_json::from_str::<Stats>(&json).expect("json"), stats);
    }

    #[test]
    fn flags_become_a_filter() {
        let now = 1_795_449_401_123_456;
        let args = RequestsArgs {
            since: Some("2h".into()),
            until: Some("2026-11-23T15:00:00Z".into()),
            limit: Some(5),
            endpoint: Some("item".into()),
        };
        let filter = args.filter(now).expect("filter");
        assert_eq!(
            filter,
            RequestFilter {
                since: Some(now - 2 * 3_600_000_000),
                until: Some(1_795_446_000_000_000),
                limit: Some(5),
                endpoint: Some("item".into()),
                before_id: None,
            }
        );
        let bad = RequestsArgs {
            until: Some("later".into()),
            ..RequestsArgs::default()
        };
        let err = format!("{:#}", bad.filter(now).expect_err("bad"));
        assert!(
            err.starts_with("bad --until: \"later\" is neither"),
            "{err}"
        );
    }

    /// `argv` parsed by clap as `fmd-daemon query ...` is.
    fn parse(argv: &[&str]) -> Result<QueryArgs, clap::Error> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            query: Top,
        }
        #[derive(clap::Subcommand)]
        enum Top {
            Query(QueryArgs),
        }
        Cli::try_parse_from(argv).map(|cli| {
            let Top::Query(args) = cli.query;
            args
        })
    }

    #[test]
    fn clap_parses_the_flags() {
        let args = parse(&[
            "fmd-daemon",
            "query",
            "requests",
            "--since",
            "15m",
            "--limit",
            "3",
            "--format",
            "csv",
            "--db",
            "/tmp/x.duckdb",
        ])
        .expect("parse");
        assert_eq!(
            (args.format, args.db),
            (Format::Csv, Some(PathBuf::from("/tmp/x.duckdb")))
        );
        let QueryCommand::Requests(requests) = args.command else {
            panic!("not requests")
        };
        assert_eq!(
            (requests.since.as_deref(), requests.limit),
            (Some("15m"), Some(3))
        );
        assert!(parse(&["fmd-daemon", "query", "stats", "--format", "xml"]).is_err());
        let args = parse(&["fmd-daemon", "query", "endpoints", "--format", "json"])
            .expect("parse endpoints");
        assert!(matches!(
            (args.command, args.format),
            (QueryCommand::Endpoints, Format::Json)
        ));
    }

    #[test]
    fn timing_is_printed_in_psql_words() {
        let check =
            |took: Duration, expect: &str| assert_eq!(timing_line(took), expect, "{took:?}");
        check(Duration::from_micros(12_345), "Time: 12.345 ms");
        check(Duration::from_nanos(999), "Time: 0.001 ms");
        check(Duration::from_secs(2), "Time: 2000.000 ms");
    }

    #[test]
    fn stopwatch_adds_up_the_query_calls_only() {
        let mut watch = Stopwatch::default();
        assert_eq!(watch.took, None);
        let nap = |ms| std::thread::sleep(Duration::from_millis(ms));
        assert_eq!(
            watch.time(|| {
                nap(5);
                7
            }),
            7
        );
        nap(50);
        watch.time(|| nap(5));
        let took = watch.took.expect("timed");
        assert!(
            took >= Duration::from_millis(10) && took < Duration::from_millis(50),
            "{took:?}"
        );
    }

    #[test]
    fn timing_flag_goes_anywhere_after_query() {
        for (argv, expect) in [
            (&["q", "query", "endpoints"][..], false),
            (&["q", "query", "--timing", "endpoints"], true),
            (
                &[
                    "q",
                    "query",
                    "grouped-profile",
                    "--endpoint",
                    "e",
                    "--timing",
                ],
                true,
            ),
            (&["q", "query", "stats", "--db", "/x", "--timing"], true),
        ] {
            let args = parse(argv).expect("parse");
            assert_eq!(args.timing, expect, "{argv:?}");
        }
    }

    /// What a running daemon does for the CLI: serve `store`'s API on loopback and announce it beside `db`.
    async fn serve_as_daemon(store: &Store, db: &std::path::Path) {
        let app = crate::api::router(crate::api::AppState::new(store.reader().expect("reader")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let listen = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        std::fs::write(
            crate::security::LocalToken::path_for(db),
            crate::api::test_support::LOCAL_TOKEN,
        )
        .expect("local credential");
        DaemonFile {
            pid: std::process::id(),
            listen,
        }
        .write(db)
        .expect("daemon file");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endpoints_are_the_same_from_the_daemon_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_with_rows(dir.path(), 6);
        let routes = vec![crate::flask::RouteInfo {
            rule: "/never".into(),
            endpoint: "never".into(),
            methods: vec!["GET".into()],
            strict_slashes: true,
            host: None,
            subdomain: None,
        }];
        let store = Store::open(&db).expect("daemon open");
        store::upsert_routes(store.connection(), 1, now_us(), &routes).expect("routes");
        store::set_attribution(
            store.connection(),
            1,
            store::modes::FLASK_ROUTES,
            1,
            now_us(),
        )
        .expect("mode");
        let from_file = store::endpoint_list(store.connection(), now_us()).expect("list");
        // request(i) gives an endpoint to even i only: three are unmatched.
        assert_eq!((from_file.unmatched, from_file.endpoints.len()), (3, 2));
        serve_as_daemon(&store, &db).await;
        let from_daemon = tokio::task::spawn_blocking(move || {
            let source = Source::find(&db).expect("source");
            assert!(matches!(source, Source::Daemon { .. }));
            source.endpoints(now_us()).expect("endpoints")
        })
        .await
        .expect("task");
        assert_eq!(from_daemon, from_file);
        drop(store);
    }

    fn db_with_rows(dir: &Path, n: u32) -> PathBuf {
        let db = dir.join("fmd.duckdb");
        let store = Store::open(&db).expect("open");
        let batch: Vec<_> = (0..n).map(request).collect();
        store::append_requests(store.connection(), 1, 1, &batch).expect("append");
        db
    }

    #[test]
    fn reads_the_file_read_only_without_a_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_with_rows(dir.path(), 4);
        // A daemon file left by a killed daemon is ignored.
        DaemonFile {
            pid: 4_194_304,
            listen: "127.0.0.1:1".parse().expect("addr"),
        }
        .write(&db)
        .expect("daemon file");
        let source = Source::find(&db).expect("source");
        assert!(matches!(source, Source::File(_)));
        let rows = source
            .requests(&RequestFilter {
                limit: Some(2),
                ..Default::default()
            })
            .expect("rows");
        assert_eq!(rows, [row(2), row(3)]);
        assert_eq!(source.stats().expect("stats").requests_stored, 4);
    }

    #[test]
    fn without_db_the_running_daemon_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = dir.path().join("run");
        let default = dir.path().join("default.duckdb");
        let listen: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
        let me = std::process::id();
        // Nothing runs: the default path (whose absence the store reports).
        assert_eq!(default_db(&default, &runtime).expect("db"), default);
        // One daemon on another store: that store.
        let demo = dir.path().join("demo.duckdb");
        let register = |db: &Path| {
            DaemonFile { pid: me, listen }
                .write(db)
                .expect("daemon file");
            store::Registration {
                pid: me,
                listen,
                db: db.to_owned(),
            }
        };
        register(&demo).write(&runtime).expect("register");
        assert_eq!(default_db(&default, &runtime).expect("db"), demo);
        // Several: a list to pick from.
        let other = dir.path().join("other.duckdb");
        let mut second = register(&other);
        second.pid = 1; // a live pid whose entry names the other store...
        second.write(&runtime).expect("register");
        DaemonFile { pid: 1, listen }
            .write(&other)
            .expect("daemon file");
        let err = default_db(&default, &runtime)
            .expect_err("ambiguous")
            .to_string();
        assert!(
            err.starts_with("2 fmd daemons are running; pick one with --db:\n"),
            "{err}"
        );
        assert!(err.contains(&format!("--db {}", demo.display())), "{err}");
        assert!(err.contains(&format!("--db {}", other.display())), "{err}");
        // A daemon on the default store wins.
        DaemonFile { pid: me, listen }
            .write(&default)
            .expect("daemon file");
        assert_eq!(default_db(&default, &runtime).expect("db"), default);
    }

    #[test]
    fn missing_database_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("none.duckdb");
        let err = Source::find(&db).err().expect("must fail").to_string();
        assert_eq!(
            err,
            format!(
                "no fmd data at {}: start fmd-daemon --pid ... first or pass --db",
                db.display()
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn asks_the_running_daemon_and_gets_the_same_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db_with_rows(dir.path(), 6);
        let expect = {
            let store = Store::open_read_only(&db).expect("open");
            store::requests(
                store.connection(),
                &RequestFilter {
                    since: Some(row(2).ts),
                    ..Default::default()
                },
            )
            .expect("rows")
        };
        // The daemon holds the file read-write and serves it.
        let store = Store::open(&db).expect("daemon open");
        serve_as_daemon(&store, &db).await;

        let got = tokio::task::spawn_blocking(move || {
            let source = Source::find(&db).expect("source");
            assert!(matches!(source, Source::Daemon { .. }));
            let rows = source
                .requests(&RequestFilter {
                    since: Some(row(2).ts),
                    ..Default::default()
                })
                .expect("rows");
            let stats = source.stats().expect("stats");
            let Source::Daemon { listen, .. } = source else {
                panic!("not the daemon")
            };
            let err =
                fetch::<Vec<RequestRow>>(listen, &db, "/api/requests", &[("since", "soon".into())])
                    .err();
            (rows, stats, err.map(|e| e.to_string()))
        })
        .await
        .expect("task");
        assert_eq!(expect.len(), 4);
        assert_eq!(got.0, expect);
        assert_eq!(got.1.requests_stored, 6);
        let err = got.2.expect("a bad parameter must fail");
        assert!(
            err.contains("400 Bad Request: bad query parameter since"),
            "{err}"
        );
        drop(store);
    }
}
