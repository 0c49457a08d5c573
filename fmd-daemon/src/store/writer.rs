//! The one thread that writes to DuckDB: it owns the read-write connection, batches requests from an
//! mpsc into appender transactions at least once a second, and keeps (bounded) what it could not write
//! yet, so a slow or full disk costs rows only after a long outage and never blocks or crashes capture.

use std::{
    collections::BTreeMap,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::{
    endpoints::{modes, set_attribution, PendingEndpoints},
    requests::{append_rows, next_request_id},
    rollup::catch_up,
    stats::{begin_run, end_run, names, set_counters, RunInfo},
    time::now_us,
    transaction, Error, Store,
};
use crate::{flask::RouteInfo, request::Request};

/// Longest time a received request waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest time written requests wait to be rolled up. Readers count the not-yet-rolled-up tail from the
/// requests themselves, so this trades a little read time for the writer's: a catch-up has a fixed cost of
/// several statements, which at every flush was as much CPU as writing the requests.
const ROLLUP_INTERVAL: Duration = Duration::from_secs(10);
/// Pending requests that trigger a write before the interval is up.
const BATCH_ROWS: usize = 4_096;
/// Requests kept for retry while writes fail (about a minute at a busy site's rate); the oldest beyond
/// this are dropped and counted.
const MAX_PENDING: usize = 200_000;
/// Messages queued for the writer before `try_insert` reports it full.
const QUEUE: usize = 1_024;
/// How often the C heap is trimmed ([`super::memory::trim_c_heap`]) and the DuckDB memory breakdown logged
/// (only when debug logging of `store::memory` is on): often enough that a soak of a few minutes has several
/// lines and the heap never holds much freed memory, rarely enough to cost nothing.
const MEMORY_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// How often the writer checkpoints. Appended rows stay in memory (`IN_MEMORY_TABLE` in `duckdb_memory()`)
/// until a checkpoint writes them to the file; DuckDB's own trigger (a 16 MB WAL) was not reached within
/// minutes at a few hundred requests a second while that memory climbed past 20 MB. A checkpoint a minute
/// bounds it by a minute of requests and costs one write of what that minute appended.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// Tries of the last write when stopping, and the pause between them.
const STOP_ATTEMPTS: u32 = 3;
const STOP_RETRY_PAUSE: Duration = Duration::from_millis(200);

enum Message {
    Insert(Vec<Request>),
    Counters(Vec<(String, i64)>),
    Routes(Vec<RouteInfo>),
    Attribution { mode: String, rules: u64 },
    Flush(oneshot::Sender<Result<(), Error>>),
    Stop(oneshot::Sender<WriterReport>),
}

/// What the writer did over its life; returned by [`WriterHandle::stop`] and by its thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterReport {
    pub run_id: i64,
    pub rows_written: u64,
    pub write_errors: u64,
    /// Dropped because writes kept failing and [`MAX_PENDING`] was reached.
    pub rows_dropped: u64,
    /// Still unwritten when the writer stopped (the last writes failed).
    pub rows_unwritten: u64,
}

/// The sending side of the writer; clone it freely. Dropping every handle stops the writer like
/// [`WriterHandle::stop`], without the acknowledgement.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
    run_id: i64,
}

impl WriterHandle {
    /// The id of the run this writer records (in `daemon_runs`).
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// Queues requests, waiting while the queue is full.
    pub async fn insert(&self, batch: Vec<Request>) -> Result<(), Error> {
        self.tx
            .send(Message::Insert(batch))
            .await
            .map_err(|_| Error::WriterGone)
    }

    /// Queues requests without waiting: [`Error::WriterFull`] when the queue is full (the caller counts
    /// the loss), so a capture loop is never held up by the disk.
    pub fn try_insert(&self, batch: Vec<Request>) -> Result<(), Error> {
        self.tx
            .try_send(Message::Insert(batch))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::WriterFull,
                mpsc::error::TrySendError::Closed(_) => Error::WriterGone,
            })
    }

    /// Sets this run's running totals for the named counters (see [`names`]); written with the next batch.
    pub async fn set_counters(&self, values: Vec<(String, i64)>) -> Result<(), Error> {
        self.tx
            .send(Message::Counters(values))
            .await
            .map_err(|_| Error::WriterGone)
    }

    /// Records a worker's route table (all endpoints of the app, requested or not), read now; rules of
    /// earlier tables stay recorded. Written with the next batch.
    pub async fn set_routes(&self, routes: Vec<RouteInfo>) -> Result<(), Error> {
        self.tx
            .send(Message::Routes(routes))
            .await
            .map_err(|_| Error::WriterGone)
    }

    /// Records how this run attributes requests ([`modes`]: see [`super::mode_name`]) and the rules of the
    /// latest route table read. A run starts [`modes::PENDING`]. Written with the next batch.
    pub async fn set_attribution_mode(&self, mode: &str, rules: usize) -> Result<(), Error> {
        self.tx
            .send(Message::Attribution {
                mode: mode.to_owned(),
                rules: u64::try_from(rules).unwrap_or(u64::MAX),
            })
            .await
            .map_err(|_| Error::WriterGone)
    }

    /// Writes everything queued before this call and rolls it up; the error is the write's when it
    /// failed (the rows are kept and retried).
    pub async fn flush(&self) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Message::Flush(ack))
            .await
            .map_err(|_| Error::WriterGone)?;
        done.await.map_err(|_| Error::WriterGone)?
    }

    /// Writes everything queued before this call, records the end of the run and stops the thread.
    pub async fn stop(self) -> Result<WriterReport, Error> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Message::Stop(ack))
            .await
            .map_err(|_| Error::WriterGone)?;
        done.await.map_err(|_| Error::WriterGone)
    }
}

/// Records a new run in `store` and starts the writer thread on it. Take any [`Store::reader`]
/// connections the API needs before calling this.
pub fn spawn_writer(
    store: Store,
    run: RunInfo,
) -> Result<(WriterHandle, JoinHandle<WriterReport>), Error> {
    spawn_with(store, run, MAX_PENDING)
}

fn spawn_with(
    store: Store,
    run: RunInfo,
    max_pending: usize,
) -> Result<(WriterHandle, JoinHandle<WriterReport>), Error> {
    let run_id = begin_run(store.connection(), &run)?;
    set_attribution(
        store.connection(),
        run_id,
        modes::PENDING,
        0,
        run.started_at,
    )?;
    let next_id = next_request_id(store.connection())?;
    // A private current-thread runtime gives the blocking thread a receive with a timeout.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(Error::WriterSpawn)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = Writer {
        store,
        next_id,
        pending: Vec::new(),
        max_pending,
        counters: BTreeMap::new(),
        counters_written: BTreeMap::new(),
        endpoints: PendingEndpoints::default(),
        rollup_behind: false,
        last_rollup: Instant::now(),
        roll_up_now: false,
        report: WriterReport {
            run_id,
            ..WriterReport::default()
        },
    };
    let thread = std::thread::Builder::new()
        .name("fmd-store".into())
        .spawn(move || {
            super::lower_writer_priority();
            writer.run(&runtime, rx)
        })
        .map_err(Error::WriterSpawn)?;
    Ok((WriterHandle { tx, run_id }, thread))
}

struct Writer {
    store: Store,
    next_id: i64,
    pending: Vec<Request>,
    max_pending: usize,
    /// The latest value of every counter, and the values the store holds: only changes are written.
    counters: BTreeMap<String, i64>,
    counters_written: BTreeMap<String, i64>,
    endpoints: PendingEndpoints,
    /// Requests were appended since the last successful [`catch_up`].
    rollup_behind: bool,
    last_rollup: Instant,
    /// Set for an explicit flush and for the last write: they roll up too.
    roll_up_now: bool,
    report: WriterReport,
}

impl Writer {
    fn run(
        mut self,
        runtime: &tokio::runtime::Runtime,
        mut rx: mpsc::Receiver<Message>,
    ) -> WriterReport {
        let span = tracing::info_span!("store_writer", run_id = self.report.run_id);
        let _enter = span.enter();
        let mut last_write = Instant::now();
        let mut last_memory_log = Instant::now();
        let mut last_checkpoint = Instant::now();
        loop {
            let deadline = tokio::time::Instant::from_std(last_write + FLUSH_INTERVAL);
            let message =
                runtime.block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await });
            match message {
                Ok(Some(Message::Insert(batch))) => {
                    self.pending.extend(batch);
                    self.bound_pending();
                }
                Ok(Some(Message::Counters(values))) => {
                    self.counters.extend(values);
                }
                Ok(Some(Message::Routes(routes))) => self.endpoints.routes(now_us(), routes),
                Ok(Some(Message::Attribution { mode, rules })) => {
                    self.endpoints.mode(now_us(), mode, rules);
                }
                Ok(Some(Message::Flush(ack))) => {
                    self.roll_up_now = true;
                    let result = self.write();
                    self.roll_up_now = false;
                    // The requester may have gone away; nothing to do about it.
                    let _ = ack.send(result);
                    last_write = Instant::now();
                    continue;
                }
                Ok(Some(Message::Stop(ack))) => {
                    let report = self.finish();
                    let _ = ack.send(report);
                    return report;
                }
                Ok(None) => return self.finish(),
                Err(_timeout) => {}
            }
            // Checked after every message too: under a steady stream the timeout never fires.
            if self.pending.len() >= BATCH_ROWS || Instant::now() >= last_write + FLUSH_INTERVAL {
                // A failure is logged and counted in write(); the rows stay pending for the next tick.
                let _ = self.write();
                last_write = Instant::now();
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                last_checkpoint = Instant::now();
                let _span = tracing::debug_span!("checkpoint").entered();
                if let Err(e) = self.store.connection().execute_batch("CHECKPOINT") {
                    // Another connection's open transaction can hold it off: the next minute tries again.
                    tracing::debug!(error = %e, "cannot checkpoint the fmd database");
                }
            }
            if last_memory_log.elapsed() >= MEMORY_LOG_INTERVAL {
                last_memory_log = Instant::now();
                self.log_memory();
            }
        }
    }

    fn log_memory(&self) {
        super::memory::trim_c_heap();
        if !tracing::enabled!(target: "fmd_daemon::store::memory", tracing::Level::DEBUG) {
            return;
        }
        match super::memory::Breakdown::read(self.store.connection()) {
            Ok(b) => b.log(),
            Err(e) => tracing::debug!(error = %error_chain(&e), "cannot read duckdb memory"),
        }
    }

    /// Writes pending requests and changed counters in one transaction (a commit is the costly part of a
    /// small write), then route tables and the attribution mode, then rolls up the new requests (retried
    /// with the next write when that fails; readers count them meanwhile).
    fn write(&mut self) -> Result<(), Error> {
        let conn = self.store.connection();
        let changed: Vec<(String, i64)> = self
            .counters
            .iter()
            .filter(|&(k, v)| self.counters_written.get(k) != Some(v))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if !self.pending.is_empty() || !changed.is_empty() {
            let _span = tracing::debug_span!("flush", rows = self.pending.len()).entered();
            let (run_id, next_id) = (self.report.run_id, self.next_id);
            let pending = &self.pending;
            let written = transaction(conn, || {
                if !pending.is_empty() {
                    append_rows(conn, run_id, next_id, pending)?;
                }
                set_counters(conn, run_id, changed.iter().map(|(k, v)| (k.as_str(), *v)))
            });
            if let Err(e) = written {
                return Err(self.failed(e));
            }
            let rows = self.pending.len();
            self.next_id += rows as i64;
            self.report.rows_written += rows as u64;
            self.pending.clear();
            self.counters_written.extend(changed);
            self.rollup_behind = rows > 0 || self.rollup_behind;
        }
        if let Err(e) = self.endpoints.write(conn, self.report.run_id) {
            return Err(self.failed(e));
        }
        if self.rollup_behind && (self.last_rollup.elapsed() >= ROLLUP_INTERVAL || self.roll_up_now)
        {
            let _span = tracing::debug_span!("rollup").entered();
            if let Err(e) = catch_up(conn) {
                return Err(self.failed(e));
            }
            self.rollup_behind = false;
            self.last_rollup = Instant::now();
        }
        Ok(())
    }

    fn failed(&mut self, error: Error) -> Error {
        self.report.write_errors += 1;
        self.set_own_counter(names::STORE_WRITE_ERRORS, self.report.write_errors);
        tracing::warn!(
            error = %error_chain(&error),
            pending = self.pending.len(),
            "cannot write to the fmd database; keeping the rows to retry"
        );
        error
    }

    /// Drops the oldest pending requests beyond `max_pending` ([`MAX_PENDING`] outside tests).
    fn bound_pending(&mut self) {
        let excess = self.pending.len().saturating_sub(self.max_pending);
        if excess > 0 {
            self.pending.drain(..excess);
            self.report.rows_dropped += excess as u64;
            self.set_own_counter(names::STORE_ROWS_DROPPED, self.report.rows_dropped);
            tracing::warn!(
                dropped = excess,
                "the fmd database stays unwritable; dropping the oldest requests"
            );
        }
    }

    fn set_own_counter(&mut self, name: &str, value: u64) {
        self.counters
            .insert(name.to_owned(), i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// The last writes on stop: retried a little, then the run's end is recorded and the WAL checkpointed
    /// so readers opening the file find everything in it.
    fn finish(mut self) -> WriterReport {
        // Leave the store rolled up, so readers of the file need not scan a tail.
        self.roll_up_now = true;
        for attempt in 1..=STOP_ATTEMPTS {
            if self.write().is_ok() {
                break;
            }
            if attempt < STOP_ATTEMPTS {
                std::thread::sleep(STOP_RETRY_PAUSE);
            }
        }
        self.report.rows_unwritten = self.pending.len() as u64;
        if self.report.rows_unwritten > 0 {
            tracing::error!(
                rows = self.report.rows_unwritten,
                "stopping with requests the database did not take"
            );
        }
        let conn = self.store.connection();
        if let Err(e) = end_run(conn, self.report.run_id, now_us()) {
            tracing::warn!(error = %error_chain(&e), "cannot record the end of the run");
        }
        if let Err(e) = conn.execute_batch("CHECKPOINT") {
            tracing::warn!(error = %e, "cannot checkpoint the fmd database");
        }
        tracing::info!(rows = self.report.rows_written, "store writer stopped");
        self.report
    }
}

/// `error: cause: cause` for a log line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{counters, requests, test_support::request, RequestFilter};

    fn run_info() -> RunInfo {
        RunInfo {
            target_pid: 1234,
            version: "0.0.0".into(),
            started_at: now_us(),
        }
    }

    fn hide_requests(conn: &duckdb::Connection) {
        conn.execute_batch("ALTER TABLE requests RENAME TO requests_away")
            .expect("hide");
    }

    fn restore_requests(conn: &duckdb::Connection) {
        conn.execute_batch("ALTER TABLE requests_away RENAME TO requests")
            .expect("restore");
    }

    fn ids(conn: &duckdb::Connection) -> Vec<i64> {
        requests(conn, &RequestFilter::default())
            .expect("read")
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    #[tokio::test]
    async fn stop_writes_everything_and_ends_the_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        let (handle, thread) =
            spawn_writer(Store::open(&path).expect("open"), run_info()).expect("spawn");
        for chunk in (0..100).collect::<Vec<_>>().chunks(7) {
            handle
                .insert(chunk.iter().copied().map(request).collect())
                .await
                .expect("insert");
        }
        handle
            .set_counters(vec![
                ("events_received".into(), 5),
                ("events_lost".into(), 1),
            ])
            .await
            .expect("set");
        handle
            .set_counters(vec![("events_received".into(), 9)])
            .await
            .expect("set");
        let report = handle.stop().await.expect("stop");
        assert_eq!(thread.join().expect("join"), report);
        assert_eq!(
            (report.run_id, report.rows_written, report.rows_unwritten),
            (1, 100, 0)
        );

        let store = Store::open_read_only(&path).expect("reopen");
        let rows = requests(store.connection(), &RequestFilter::default()).expect("read");
        assert_eq!(rows.len(), 100);
        assert!(rows
            .iter()
            .zip(0..)
            .all(|(row, i)| row.path == request(i).path && row.id == i64::from(i) + 1));
        let counters = counters(store.connection(), 1).expect("counters");
        assert_eq!(
            (counters.get("events_received"), counters.get("events_lost")),
            (Some(&9), Some(&1))
        );
        let stopped: Option<i64> = store
            .connection()
            .query_row(
                "SELECT epoch_us(stopped_at) FROM daemon_runs WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .expect("run");
        assert!(stopped.is_some());
    }

    #[tokio::test]
    async fn second_run_continues_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        for run in 1..=2 {
            let (handle, _thread) =
                spawn_writer(Store::open(&path).expect("open"), run_info()).expect("spawn");
            assert_eq!(handle.run_id(), run);
            handle
                .insert((0..3).map(request).collect())
                .await
                .expect("insert");
            handle.stop().await.expect("stop");
        }
        let store = Store::open_read_only(&path).expect("reopen");
        assert_eq!(ids(store.connection()), [1, 4, 2, 5, 3, 6]);
    }

    #[tokio::test]
    async fn rows_become_visible_within_the_flush_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let reader = store.reader().expect("reader");
        let (handle, _thread) = spawn_writer(store, run_info()).expect("spawn");
        handle.insert(vec![request(0)]).await.expect("insert");
        tokio::time::sleep(FLUSH_INTERVAL + Duration::from_millis(500)).await;
        assert_eq!(ids(&reader), [1]);
        handle.insert(vec![request(1)]).await.expect("insert");
        handle.flush().await.expect("flush");
        assert_eq!(ids(&reader), [1, 2]);
        drop(handle);
    }

    #[tokio::test]
    async fn failed_writes_are_counted_and_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        let store = Store::open(&path).expect("open");
        let reader = store.reader().expect("reader");
        let (handle, thread) = spawn_writer(store, run_info()).expect("spawn");
        // Move the table away so the writer's appends fail, as a full disk would make them.
        hide_requests(&reader);
        handle
            .insert((0..5).map(request).collect())
            .await
            .expect("insert");
        assert!(handle.flush().await.is_err());
        handle
            .try_insert((5..8).map(request).collect())
            .expect("try_insert");
        assert!(handle.flush().await.is_err());
        restore_requests(&reader);
        handle.flush().await.expect("retry");
        assert_eq!(ids(&reader), (1..=8).collect::<Vec<_>>());
        let report = handle.stop().await.expect("stop");
        assert_eq!(
            (
                report.rows_written,
                report.write_errors,
                report.rows_dropped
            ),
            (8, 2, 0)
        );
        drop(thread);
        assert_eq!(
            counters(&reader, 1)
                .expect("counters")
                .get(names::STORE_WRITE_ERRORS),
            Some(&2)
        );
    }

    #[tokio::test]
    async fn retry_buffer_is_bounded_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let reader = store.reader().expect("reader");
        let (handle, _thread) = spawn_with(store, run_info(), 5).expect("spawn");
        hide_requests(&reader);
        handle
            .insert((0..4).map(request).collect())
            .await
            .expect("insert");
        assert!(handle.flush().await.is_err());
        handle
            .insert((4..8).map(request).collect())
            .await
            .expect("insert");
        assert!(handle.flush().await.is_err());
        restore_requests(&reader);
        handle.flush().await.expect("retry");
        let paths: Vec<String> = requests(&reader, &RequestFilter::default())
            .expect("read")
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, (3..8).map(|i| request(i).path).collect::<Vec<_>>());
        let report = handle.stop().await.expect("stop");
        assert_eq!(
            (
                report.rows_written,
                report.rows_dropped,
                report.write_errors
            ),
            (5, 3, 2)
        );
        assert_eq!(
            counters(&reader, 1)
                .expect("counters")
                .get(names::STORE_ROWS_DROPPED),
            Some(&3)
        );
    }

    #[tokio::test]
    async fn dropping_every_handle_still_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        let (handle, thread) =
            spawn_writer(Store::open(&path).expect("open"), run_info()).expect("spawn");
        handle
            .insert((0..3).map(request).collect())
            .await
            .expect("insert");
        drop(handle);
        let report = tokio::task::spawn_blocking(move || thread.join().expect("join"))
            .await
            .expect("task");
        assert_eq!(report.rows_written, 3);
        assert_eq!(
            ids(Store::open_read_only(&path).expect("reopen").connection()),
            [1, 2, 3]
        );
    }
}
