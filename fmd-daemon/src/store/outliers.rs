//! Outliers and live snapshots as stored and shown, and the thread that writes them (with the running
//! averages, new endpoints' levels and level-0 counts) on its own connection, so the request writer's
//! batches never wait for them.

use std::{
    collections::BTreeMap,
    sync::mpsc::{self, Receiver, SyncSender, TrySendError},
    thread::JoinHandle,
};

use duckdb::{
    params,
    types::{TimeUnit, Value},
    Connection,
};
use serde::{Deserialize, Serialize};

use super::{levels, time::Micros, Error};
use crate::outliers::{Average, StackFrame};

/// One outlier: a finished request slower than its endpoint's threshold, or (`live`) a snapshot of one
/// still running past it. Field names are the contract of `/api/outliers` and `query outliers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outlier {
    /// Assigned when stored (0 before).
    pub id: i64,
    /// The stored request's id; `None` while it runs (a live snapshot) or when it was not stored.
    pub request_id: Option<i64>,
    pub endpoint: String,
    pub method: String,
    pub path: String,
    pub worker_pid: u32,
    pub tid: u32,
    /// The request's start.
    #[serde(with = "super::time::serde_us")]
    pub ts: Micros,
    /// When this was recorded (the end of the request, or the snapshot).
    #[serde(with = "super::time::serde_us")]
    pub taken_at: Micros,
    /// Duration of the request; for a live snapshot, how long it had run.
    pub duration_ms: f64,
    pub threshold_ms: f64,
    pub live: bool,
    /// Where it spent its time, trimmed to the view function, outermost frame first.
    pub stack: Vec<StackFrame>,
    /// CPU use per core, in percent, over the half second or so before.
    pub cpu_percent: Vec<f64>,
    pub worker_rss_bytes: Option<u64>,
    pub machine_memory_used_bytes: Option<u64>,
    pub headers: BTreeMap<String, String>,
    pub request_values: serde_json::Value,
    pub environ: BTreeMap<String, String>,
}

/// What `/api/outliers` and `query outliers` filter on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutlierFilter {
    pub endpoint: Option<String>,
    pub since: Option<Micros>,
    /// The most recent N (all when `None`).
    pub limit: Option<u64>,
}

fn sql(what: &'static str) -> impl Fn(duckdb::Error) -> Error {
    move |source| Error::Sql { what, source }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Appends `outliers` with ids `first_id..` (inside the caller's transaction).
pub fn append_outliers(
    conn: &Connection,
    first_id: i64,
    outliers: &[Outlier],
) -> Result<(), Error> {
    let appended = (|| {
        let mut appender = conn.appender("outliers")?;
        for (id, o) in (first_id..).zip(outliers) {
            appender.append_row(params![
                id,
                o.endpoint,
                o.method,
                o.path,
                o.worker_pid,
                o.tid,
                Value::Timestamp(TimeUnit::Microsecond, o.ts),
                Value::Timestamp(TimeUnit::Microsecond, o.taken_at),
                o.live,
                o.duration_ms,
                o.threshold_ms,
                json(&o.stack),
                json(&o.cpu_percent),
                o.worker_rss_bytes,
                o.machine_memory_used_bytes,
                json(&o.headers),
                json(&o.request_values),
                json(&o.environ),
            ])?;
        }
        appender.flush()
    })();
    appended.map_err(sql("append outliers"))
}

/// The outliers matching `filter`, oldest first.
pub fn outliers(conn: &Connection, filter: &OutlierFilter) -> Result<Vec<Outlier>, Error> {
    let limit = filter
        .limit
        .map_or_else(String::new, |n| format!("LIMIT {}", n.min(i64::MAX as u64)));
    let query = format!(
        "SELECT o.id,
                (SELECT min(r.id) FROM requests r
                 WHERE r.ts = o.request_ts AND r.worker_pid = o.worker_pid AND r.tid = o.tid),
                o.endpoint, o.method, o.path, o.worker_pid, o.tid, epoch_us(o.request_ts), epoch_us(o.taken_at),
                o.duration_ms, o.threshold_ms, o.live, o.stack, o.cpu_percent, o.worker_rss_bytes,
                o.machine_memory_used_bytes, o.headers, o.request_values, o.environ
         FROM outliers o
         WHERE (?1 IS NULL OR o.endpoint = ?1) AND (?2 IS NULL OR o.request_ts >= ?2)
         ORDER BY o.id DESC {limit}"
    );
    let mut stmt = conn.prepare(&query).map_err(sql("read outliers"))?;
    let since = filter
        .since
        .map(|t| Value::Timestamp(TimeUnit::Microsecond, t))
        .unwrap_or(Value::Null);
    let rows = stmt
        .query_map(params![filter.endpoint, since], |r| {
            let text = |i: usize| -> duckdb::Result<String> { r.get(i) };
            Ok(Outlier {
                id: r.get(0)?,
                request_id: r.get(1)?,
                endpoint: r.get(2)?,
                method: r.get(3)?,
                path: r.get(4)?,
                worker_pid: r.get(5)?,
                tid: r.get(6)?,
                ts: r.get(7)?,
                taken_at: r.get(8)?,
                duration_ms: r.get(9)?,
                threshold_ms: r.get(10)?,
                live: r.get(11)?,
                stack: serde_json::from_str(&text(12)?).unwrap_or_default(),
                cpu_percent: serde_json::from_str(&text(13)?).unwrap_or_default(),
                worker_rss_bytes: r.get(14)?,
                machine_memory_used_bytes: r.get(15)?,
                headers: serde_json::from_str(&text(16)?).unwrap_or_default(),
                request_values: serde_json::from_str(&text(17)?).unwrap_or_default(),
                environ: serde_json::from_str(&text(18)?).unwrap_or_default(),
            })
        })
        .map_err(sql("read outliers"))?;
    let mut out: Vec<Outlier> = rows
        .collect::<Result<_, _>>()
        .map_err(sql("read outliers"))?;
    out.reverse();
    Ok(out)
}

/// What the daemon hands the outlier writer after each batch of requests.
#[derive(Debug, Default)]
pub struct OutlierBatch {
    pub outliers: Vec<Outlier>,
    pub averages: Vec<(String, Average)>,
    /// Endpoints seen for the first time, with the default level they got.
    pub new_levels: Vec<(String, u8)>,
    /// Level-0 requests: (endpoint, count, latest start).
    pub unrecorded: Vec<(String, u64, Micros)>,
}

impl OutlierBatch {
    pub fn is_empty(&self) -> bool {
        self.outliers.is_empty()
            && self.averages.is_empty()
            && self.new_levels.is_empty()
            && self.unrecorded.is_empty()
    }
}

/// Sending side of the outlier writer; dropping it stops the writer after what is queued.
pub struct OutlierSink {
    tx: SyncSender<OutlierBatch>,
}

impl OutlierSink {
    /// Queues a batch without waiting: [`Error::WriterFull`] when the writer is far behind.
    pub fn send(&self, batch: OutlierBatch) -> Result<(), Error> {
        self.tx.try_send(batch).map_err(|e| match e {
            TrySendError::Full(_) => Error::WriterFull,
            TrySendError::Disconnected(_) => Error::WriterGone,
        })
    }
}

/// Starts the outlier writer on `conn` (a [`super::Store::reader`] connection).
pub fn spawn_outlier_writer(conn: Connection) -> Result<(OutlierSink, JoinHandle<()>), Error> {
    let (tx, rx) = mpsc::sync_channel(256);
    let thread = std::thread::Builder::new()
        .name("fmd-outliers".into())
        .spawn(move || {
            super::lower_writer_priority();
            write_loop(&conn, &rx);
        })
        .map_err(Error::WriterSpawn)?;
    Ok((OutlierSink { tx }, thread))
}

fn write_loop(conn: &Connection, rx: &Receiver<OutlierBatch>) {
    let mut next_id = match conn.query_row(
        "SELECT coalesce(max(id), 0) + 1 FROM outliers",
        [],
        |r| r.get::<_, i64>(0),
    ) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outliers table: outliers are not stored");
            return;
        }
    };
    while let Ok(batch) = rx.recv() {
        let now = super::time::now_us();
        let n = batch.outliers.len() as i64;
        let stored = levels::in_transaction(conn, || {
            levels::insert_levels(conn, &batch.new_levels, now)?;
            levels::add_unrecorded(conn, &batch.unrecorded)?;
            levels::save_averages(conn, &batch.averages)?;
            append_outliers(conn, next_id, &batch.outliers)
        });
        match stored {
            Ok(()) => next_id += n,
            Err(e) => tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(e)),
                outliers = n,
                "cannot store outliers, averages and levels; they are lost"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{append_requests, test_support::request, Store};

    fn outlier(endpoint: &str, ts: Micros, live: bool) -> Outlier {
        Outlier {
            id: 0,
            request_id: None,
            endpoint: endpoint.into(),
            method: "GET".into(),
            path: "/x".into(),
            worker_pid: 7,
            tid: 7,
            ts,
            taken_at: ts + 10,
            duration_ms: 200.0,
            threshold_ms: 20.0,
            live,
            stack: vec![StackFrame {
                function: "helper".into(),
                file: "/app.py".into(),
                line: 3,
                code: Some("time.sleep(1)".into()),
            }],
            cpu_percent: vec![1.5, 2.0],
            worker_rss_bytes: Some(1 << 20),
            machine_memory_used_bytes: Some(1 << 30),
            headers: BTreeMap::from([("Host".into(), "h".into())]),
            request_values: serde_json::json!({"query": {"a": "1"}}),
            environ: BTreeMap::from([("PATH_INFO".into(), "/x".into())]),
        }
    }

    #[test]
    fn stored_and_read_with_their_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let c = store.connection();
        let mut r = request(1);
        r.worker_pid = 7;
        r.tid = 7;
        append_requests(c, 1, 41, &[r.clone()]).expect("request");
        let batch = [
            outlier("a", r.ts_us, false),
            outlier("b", 5, true),
            outlier("a", 9, true),
        ];
        append_outliers(c, 1, &batch).expect("append");
        let all = outliers(c, &OutlierFilter::default()).expect("read");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].request_id, Some(41), "joined to its request");
        assert_eq!(all[1].request_id, None);
        let mut want = batch[0].clone();
        want.id = 1;
        want.request_id = Some(41);
        assert_eq!(all[0], want);
        let a = outliers(
            c,
            &OutlierFilter {
                endpoint: Some("a".into()),
                limit: Some(1),
                ..OutlierFilter::default()
            },
        )
        .expect("read");
        assert_eq!(
            a.iter().map(|o| o.id).collect::<Vec<_>>(),
            [3],
            "the most recent"
        );
        let since = outliers(
            c,
            &OutlierFilter {
                since: Some(6),
                ..OutlierFilter::default()
            },
        )
        .expect("read");
        assert!(since.iter().all(|o| o.ts >= 6) && since.len() == 2);
    }
}
