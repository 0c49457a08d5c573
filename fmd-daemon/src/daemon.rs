//! The running daemon: wires the ring buffer through the HTTP assembler to the store's writer, serves the
//! API, follows gunicorn's workers as they come and go, and on SIGINT/SIGTERM detaches and flushes.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use fmd_common::{http::kind, http::EventHeader, ROLE_MASTER, ROLE_WORKER};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};
use tracing::{debug, info, info_span, warn, Instrument as _};

use crate::{
    api,
    capture::{
        self,
        http::{Assembler, Limits},
        procs::{self, Target},
        Capture,
    },
    config::Config,
    profile::Collector,
    request::Request,
    store::{self, names, profiles::ProfileSink, DaemonFile, RunInfo, Store, WriterHandle},
};

/// How often counters are stored, idle connections expired and buffered rows handed to the writer.
const TICK: Duration = Duration::from_millis(500);

pub async fn run(config: Arc<Config>, pid: u32) -> anyhow::Result<()> {
    let target = procs::resolve(pid)?;
    info!(?target, "monitoring");
    let store = Store::open(&config.db)?;
    let api_state = api::AppState::new(store.reader()?);
    let mut capture = info_span!("attach").in_scope(Capture::load)?;
    watch_target(&mut capture, &target)?;
    // SAFETY: the ring buffer owns its map fd and keeps it open until the AsyncFd drops it.
    let ring = unsafe { AsyncFd::register_with_interest(capture.take_events()?, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("cannot poll the BPF ring buffer")?;

    let clock_offset = clock_offset_ns();
    let (profiling, profile_writer) = match start_profiling(&config, &mut capture, &target, &store, clock_offset) {
        Some((p, thread)) => (Some(p), Some(thread)),
        None => (None, None),
    };

    let run = RunInfo { target_pid: pid, version: env!("CARGO_PKG_VERSION").to_owned(), started_at: store::time::now_us() };
    let (writer, writer_thread) = store::spawn_writer(store, run)?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (use --listen to pick another address)", config.listen))?;
    let listen = listener.local_addr()?;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        async move {
            let shutdown = async {
                let _ = api_stopped.await;
            };
            axum::serve(listener, api::router(api_state)).with_graceful_shutdown(shutdown).await
        }
        .instrument(info_span!("api")),
    );
    DaemonFile { pid: std::process::id(), listen }.write(&config.db)?;
    info!(%listen, db = %config.db.display(), "attached; dashboard and API at http://{listen}/");

    let limits = Limits {
        keep_head: config.capture.keep_head_bytes,
        max_connections: config.capture.max_connections,
        idle_timeout_ns: config.capture.idle_timeout_secs.saturating_mul(1_000_000_000),
        ..Limits::default()
    };
    let mut pipeline = Pipeline {
        capture,
        assembler: Assembler::new(limits, clock_offset),
        profiling,
        writer: writer.clone(),
        target: target.pid(),
        batch: Vec::new(),
        events: 0,
        target_gone: false,
    };
    let result = pipeline.run(ring).await;

    // Whatever ended the loop, keep what was captured.
    pipeline.assembler.finish_all(&mut pipeline.batch);
    pipeline.hand_over().await;
    pipeline.store_counters().await;
    drop(pipeline);
    // The pipeline held the profile sink: the writer now stores what is queued and stops.
    if let Some(thread) = profile_writer {
        let _ = thread.join();
    }
    let report = writer.stop().await;
    let _ = stop_api.send(());
    let _ = server.await;
    let _ = writer_thread.join();
    DaemonFile::remove(&config.db)?;
    let report = report?;
    info!(rows = report.rows_written, write_errors = report.write_errors, "detached and flushed");
    result
}

/// Attaches the stack sampler and reads each worker's interpreter. A failure costs the profiles only: requests
/// are still captured.
fn start_profiling(
    config: &Config,
    capture: &mut Capture,
    target: &Target,
    store: &Store,
    clock_offset: i64,
) -> Option<(Profiling, std::thread::JoinHandle<()>)> {
    let p = &config.profiler;
    if p.sample_hz == 0 {
        info!("profiler off (sample_hz = 0)");
        return None;
    }
    let (sink, thread) = match store.reader().and_then(store::profiles::spawn_profile_writer) {
        Ok(started) => started,
        Err(e) => {
            warn!(error = %e, "cannot start the profile writer: profiling off");
            return None;
        }
    };
    if let Err(e) = capture.start_sampler(p.sample_hz, p.mode) {
        warn!(error = %e, "cannot attach the stack sampler: profiling off");
        return None;
    }
    let mut collector = Collector::new(p.sample_hz, p.mode, clock_offset);
    let workers = match target {
        Target::Master { workers, .. } => workers.clone(),
        Target::Worker { pid } => vec![*pid],
    };
    for pid in workers {
        if let Err(e) = collector.add_worker(capture, pid) {
            warn!(pid, error = %e, "cannot profile this worker");
        }
    }
    Some((Profiling { collector, sink }, thread))
}

struct Profiling {
    collector: Collector,
    sink: ProfileSink,
}

fn watch_target(capture: &mut Capture, target: &Target) -> Result<(), capture::Error> {
    match target {
        Target::Master { pid, workers } => {
            capture.watch(*pid, ROLE_MASTER)?;
            for &w in workers {
                capture.watch(w, ROLE_WORKER)?;
            }
        }
        Target::Worker { pid } => capture.watch(*pid, ROLE_WORKER)?,
    }
    Ok(())
}

/// `CLOCK_REALTIME - CLOCK_MONOTONIC`: turns BPF's monotonic timestamps into wall-clock time.
fn clock_offset_ns() -> i64 {
    fn now(clock: libc::clockid_t) -> i64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    }
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

struct Pipeline {
    capture: Capture,
    assembler: Assembler,
    profiling: Option<Profiling>,
    writer: WriterHandle,
    target: u32,
    batch: Vec<Request>,
    events: u64,
    target_gone: bool,
}

impl Pipeline {
    async fn run(&mut self, mut ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>) -> anyhow::Result<()> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("polling the ring buffer")?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                    if self.batch.len() >= 1024 {
                        self.hand_over().await;
                    }
                }
                _ = tick.tick() => {
                    // Samples do not wake the loop (see fmd-ebpf/src/sampler.rs): collect them here too.
                    self.drain(ring.get_mut());
                    self.assembler.expire(monotonic_ns(), &mut self.batch);
                    if let Some(p) = &mut self.profiling {
                        p.collector.refresh(&mut self.capture);
                        p.collector.expire(monotonic_ns());
                    }
                    self.hand_over().await;
                    self.store_counters().await;
                }
                _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            }
            if self.target_gone {
                warn!(pid = self.target, "the monitored process exited: stopping");
                break;
            }
        }
        // Records already in the ring buffer belong to this run.
        self.drain(ring.get_mut());
        Ok(())
    }

    fn drain(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        if let Some(p) = &mut self.profiling {
            p.collector.begin_batch();
        }
        while let Some(record) = ring.next() {
            self.events += 1;
            let Some((header, payload)) = EventHeader::parse(&record) else {
                warn!(len = record.len(), "malformed ring-buffer record");
                continue;
            };
            match header.kind {
                kind::FORK => self.on_fork(header.len as u32),
                kind::EXIT => self.on_exit(header.tgid, &header, payload),
                kind::SAMPLE => {
                    if let Some(p) = &mut self.profiling {
                        p.collector.on_sample(&header, payload);
                    }
                }
                kind::WAKE => {
                    if let Some(p) = &mut self.profiling {
                        p.collector.on_wake(&header);
                    }
                }
                kind::GC => {
                    if let Some(p) = &mut self.profiling {
                        p.collector.on_gc(&header);
                    }
                }
                _ => {
                    if header.kind == kind::READ {
                        if let Some(p) = &mut self.profiling {
                            p.collector.note_thread(&mut self.capture, header.tgid, header.tid);
                        }
                    }
                    self.assembler.push(&header, payload, &mut self.batch);
                }
            }
        }
    }

    /// BPF already watches the child (so its first request is caught); drop it again if it is a thread.
    fn on_fork(&mut self, child: u32) {
        match procs::inspect(child) {
            Ok(info) if info.tgid == child => {
                info!(pid = child, "new worker");
                if let Some(p) = &mut self.profiling {
                    if let Err(e) = p.collector.add_worker(&mut self.capture, child) {
                        warn!(pid = child, error = %e, "cannot profile this worker");
                    }
                }
            }
            Ok(_) => {
                debug!(tid = child, "the master started a thread, not a worker");
                let _ = self.capture.unwatch(child);
            }
            // Already gone: its exit record will clean up.
            Err(_) => {}
        }
    }

    fn on_exit(&mut self, pid: u32, header: &EventHeader, payload: &[u8]) {
        self.assembler.push(header, payload, &mut self.batch);
        match self.capture.forget_connections(pid) {
            Ok(n) if n > 0 => debug!(pid, connections = n, "forgot the connections of an exited worker"),
            Ok(_) => {}
            Err(e) => warn!(pid, error = %e, "cannot clean the connection table"),
        }
        if let Some(p) = &mut self.profiling {
            p.collector.remove_worker(&mut self.capture, pid);
        }
        if pid == self.target {
            self.target_gone = true;
        } else {
            info!(pid, "worker exited");
        }
    }

    async fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if let Some(p) = &mut self.profiling {
            let profiles = p.collector.take_profiles(&batch);
            if !profiles.is_empty() {
                if let Err(e) = p.sink.send(profiles) {
                    warn!(error = %e, "request profiles are lost");
                }
            }
        }
        if let Err(e) = self.writer.insert(batch).await {
            warn!(error = %e, "the store writer is gone; requests are lost");
        }
    }

    async fn store_counters(&mut self) {
        let a = self.assembler.counters();
        let mut values = vec![
            (names::EVENTS_RECEIVED, self.events),
            (names::UNPARSEABLE, a.unparseable),
            (names::ABORTED, a.aborted),
            (names::DESYNCED, a.desynced),
            (names::EVICTED, a.evicted),
        ];
        match self.capture.counters() {
            Ok(c) => {
                values.push((names::EVENTS_LOST, c.ringbuf_drops));
                values.push((names::CONN_TABLE_FULL, c.conn_table_full));
                if c.ringbuf_drops > 0 {
                    warn!(lost = c.ringbuf_drops, "ring-buffer records lost (the daemon fell behind)");
                }
            }
            Err(e) => warn!(error = %e, "cannot read the BPF counters"),
        }
        if let Some(p) = &self.profiling {
            values.extend(p.collector.counter_values());
            match self.capture.sampler_counters() {
                Ok(c) => values.extend([
                    ("profile_samples_sent", c.samples_sent),
                    ("profile_samples_lost", c.sample_drops),
                    ("profile_samples_truncated", c.samples_truncated),
                ]),
                Err(e) => warn!(error = %e, "cannot read the sampler counters"),
            }
        }
        let values = values.into_iter().map(|(k, v)| (k.to_owned(), i64::try_from(v).unwrap_or(i64::MAX))).collect();
        if let Err(e) = self.writer.set_counters(values).await {
            warn!(error = %e, "cannot store counters");
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
