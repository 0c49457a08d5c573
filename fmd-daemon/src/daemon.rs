//! The running daemon: wires the ring buffer through the HTTP assembler to the store's writer, serves the
//! API, follows gunicorn's workers as they come and go, and on SIGINT/SIGTERM detaches and flushes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use fmd_common::{
    http::{kind, EventHeader},
    ROLE_MASTER, ROLE_WORKER,
};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
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
    flask::{
        app::{self as flask_app, UrlMap},
        attribution::Attributor,
        matcher::MapOptions,
    },
    profile::Collector,
    request::Request,
    store::{self, names, profiles::ProfileSink, DaemonFile, RunInfo, Store, WriterHandle},
};

/// How often the ring buffer is drained: BPF wakes the daemon only when the buffer fills (see
/// fmd-ebpf/src/http.rs), so records wait at most this long and the daemon wakes ~50 times a second, not
/// once per syscall.
const DRAIN: Duration = Duration::from_millis(20);

/// How often counters are stored, idle connections expired and buffered rows handed to the writer.
const TICK: Duration = Duration::from_millis(500);

/// When to (re)try reading a worker's route table. The first read starts at the worker's first accepted
/// connection: by then gunicorn has loaded the app, so the table is complete; retries cover a process
/// that is busy or briefly inconsistent.
const ROUTE_READ_DELAYS_MS: &[u64] = &[0, 100, 300, 1000];
/// At shutdown, how long to wait for route reads still under way (their requests wait for them).
const ROUTE_READ_GRACE: Duration = Duration::from_secs(3);

pub async fn run(config: Arc<Config>, pid: u32) -> anyhow::Result<()> {
    let target = procs::resolve(pid)?;
    info!(?target, "monitoring");
    let store = Store::open(&config.db)?;
    let api_state = api::AppState::new(store.reader()?);
    let mut capture = info_span!("attach").in_scope(Capture::load)?;
    watch_target(&mut capture, &target)?;
    let workers = match &target {
        Target::Master { workers, .. } => workers.clone(),
        Target::Worker { pid } => vec![*pid],
    };
    for &worker in &workers {
        let fds = procs::accepted_sockets(worker);
        if !fds.is_empty() {
            let added = capture.track_existing(worker, &fds, monotonic_ns())?;
            info!(
                pid = worker,
                connections = added,
                "following connections opened before fmd attached"
            );
        }
    }
    // SAFETY: the ring buffer owns its map fd and keeps it open until the AsyncFd drops it.
    let clock_offset = clock_offset_ns();
    let (profiling, profile_writer) =
        match start_profiling(&config, &mut capture, &target, &store, clock_offset) {
            Some((p, thread)) => (Some(p), Some(thread)),
            None => (None, None),
        };
    let ring =
        unsafe { AsyncFd::register_with_interest(capture.take_events()?, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("cannot poll the BPF ring buffer")?;

    let run = RunInfo {
        target_pid: pid,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: store::time::now_us(),
    };
    let (writer, writer_thread) = store::spawn_writer(store, run)?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (use --listen to pick another address)",
                config.listen
            )
        })?;
    let listen = listener.local_addr()?;
    // Before the daemon file announces us: the CLI reads the local credential right after it.
    api::auth::prepare(&api_state, &config.db, &format!("http://{listen}"), "")
        .await
        .context("cannot set up dashboard authentication")?;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        async move {
            let shutdown = async {
                let _ = api_stopped.await;
            };
            // The client's address: login attempts are rate-limited per address.
            let app = api::router(api_state)
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        .instrument(info_span!("api")),
    );
    DaemonFile {
        pid: std::process::id(),
        listen,
    }
    .write(&config.db)?;
    info!(%listen, db = %config.db.display(), "attached; dashboard and API at http://{listen}/");

    let limits = Limits {
        keep_head: config.capture.keep_head_bytes,
        max_connections: config.capture.max_connections,
        idle_timeout_ns: config
            .capture
            .idle_timeout_secs
            .saturating_mul(1_000_000_000),
        ..Limits::default()
    };
    let (routes_tx, routes_rx) = mpsc::unbounded_channel();
    let mut pipeline = Pipeline {
        capture,
        assembler: Assembler::new(limits, clock_offset),
        profiling,
        attributor: Attributor::default(),
        routes_tx,
        routes_asked: std::collections::HashSet::new(),
        route_reads: 0,
        new_routes: None,
        stored_mode: None,
        writer: writer.clone(),
        target: target.pid(),
        assembled: Vec::new(),
        batch: Vec::new(),
        events: 0,
        target_gone: false,
    };
    let mut routes_rx = routes_rx;
    let result = pipeline.run(ring, &mut routes_rx).await;
    pipeline.await_route_reads(&mut routes_rx).await;

    // Whatever ended the loop, keep what was captured.
    pipeline.assembler.finish_all(&mut pipeline.assembled);
    pipeline.attribute();
    pipeline.attributor.finish(&mut pipeline.batch);
    pipeline.hand_over().await;
    pipeline.store_counters().await;
    drop(pipeline);
    // The pipeline held the profile sink: the profile writer now stores what is queued and stops.
    if let Some(thread) = profile_writer {
        let _ = thread.join();
    }
    let report = writer.stop().await;
    let _ = stop_api.send(());
    let _ = server.await;
    let _ = writer_thread.join();
    DaemonFile::remove(&config.db)?;
    crate::security::LocalToken::remove(&config.db)?;
    let report = report?;
    info!(
        rows = report.rows_written,
        write_errors = report.write_errors,
        "detached and flushed"
    );
    result
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

/// Attaches the stack sampler and reads each worker's interpreter. A failure costs the profiles only:
/// requests are still captured.
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
    let (sink, thread) = match store
        .reader()
        .and_then(store::profiles::spawn_profile_writer)
    {
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

/// `CLOCK_REALTIME - CLOCK_MONOTONIC`: turns BPF's monotonic timestamps into wall-clock time.
fn clock_offset_ns() -> i64 {
    fn now(clock: libc::clockid_t) -> i64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    }
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// A worker's route table, or why it could not be read.
type RouteResult = (u32, Result<UrlMap, flask_app::Error>);

struct Pipeline {
    capture: Capture,
    assembler: Assembler,
    attributor: Attributor,
    profiling: Option<Profiling>,
    routes_tx: mpsc::UnboundedSender<RouteResult>,
    /// Workers whose route table was asked for, and how many reads are still under way.
    routes_asked: std::collections::HashSet<u32>,
    route_reads: usize,
    /// A route table read since the last tick, for the store's endpoint list.
    new_routes: Option<Vec<crate::flask::RouteInfo>>,
    /// The attribution mode and rule count last stored.
    stored_mode: Option<(&'static str, usize)>,
    writer: WriterHandle,
    target: u32,
    /// Requests out of the assembler, not yet attributed.
    assembled: Vec<Request>,
    /// Attributed requests for the writer.
    batch: Vec<Request>,
    events: u64,
    target_gone: bool,
}

impl Pipeline {
    async fn run(
        &mut self,
        mut ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
        routes: &mut mpsc::UnboundedReceiver<RouteResult>,
    ) -> anyhow::Result<()> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(TICK);
        let mut drain = tokio::time::interval(DRAIN);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("polling the ring buffer")?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                    self.attribute();
                    if self.batch.len() >= 1024 {
                        self.hand_over().await;
                    }
                }
                _ = drain.tick() => {
                    self.drain(ring.get_mut());
                    self.attribute();
                    if self.batch.len() >= 1024 {
                        self.hand_over().await;
                    }
                }
                Some((pid, result)) = routes.recv() => self.on_routes(pid, result),
                _ = tick.tick() => {
                    self.assembler.expire(monotonic_ns(), &mut self.assembled);
                    self.attribute();
                    self.attributor.expire(Instant::now(), &mut self.batch);
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
        self.attribute();
        Ok(())
    }

    /// Lets route reads under way finish, so the requests waiting for them get their endpoints.
    async fn await_route_reads(&mut self, routes: &mut mpsc::UnboundedReceiver<RouteResult>) {
        let deadline = tokio::time::Instant::now() + ROUTE_READ_GRACE;
        while self.route_reads > 0 {
            match tokio::time::timeout_at(deadline, routes.recv()).await {
                Ok(Some((pid, result))) => self.on_routes(pid, result),
                _ => break,
            }
        }
    }

    fn attribute(&mut self) {
        let now = Instant::now();
        for req in self.assembled.drain(..) {
            self.attributor.push(req, now, &mut self.batch);
        }
    }

    /// Reads `pid`'s Flask route table in the background, retrying while the worker is still starting.
    fn read_routes(&mut self, pid: u32) {
        self.attributor.reading(pid);
        self.route_reads += 1;
        let tx = self.routes_tx.clone();
        tokio::spawn(
            async move {
                let mut last = None;
                for &delay in ROUTE_READ_DELAYS_MS {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    match tokio::task::spawn_blocking(move || flask_app::routes(pid)).await {
                        Ok(Ok(map)) => {
                            let _ = tx.send((pid, Ok(map)));
                            return;
                        }
                        Ok(Err(e)) => {
                            debug!(pid, error = %e, "route table not readable yet");
                            last = Some(e);
                        }
                        Err(e) => warn!(pid, error = %e, "route reader task failed"),
                    }
                    if procs::inspect(pid).is_err() {
                        break;
                    }
                }
                let _ = tx.send((
                    pid,
                    Err(last.unwrap_or(flask_app::Error::NoFlaskApp { pid })),
                ));
            }
            .instrument(info_span!("routes", pid)),
        );
    }

    fn on_routes(&mut self, pid: u32, result: Result<UrlMap, flask_app::Error>) {
        self.route_reads = self.route_reads.saturating_sub(1);
        match result {
            Ok(map) => {
                let options = MapOptions {
                    strict_slashes: map.strict_slashes,
                    merge_slashes: map.merge_slashes,
                    host_matching: map.host_matching,
                    ..MapOptions::default()
                };
                let routes = map.routes.clone();
                match self
                    .attributor
                    .set_routes(pid, map.routes, options, &mut self.batch)
                {
                    Ok(rules) => {
                        info!(pid, rules, "read the Flask route table");
                        self.new_routes = Some(routes);
                    }
                    Err(e) => {
                        warn!(pid, error = %e, "cannot use the route table: endpoints will be path templates");
                        self.attributor.set_unavailable(pid, &mut self.batch);
                    }
                }
            }
            Err(e) => {
                warn!(pid, error = %e, "cannot read the Flask route table: endpoints will be path templates");
                self.attributor.set_unavailable(pid, &mut self.batch);
            }
        }
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
                kind::ACCEPT | kind::READ => {
                    if self.routes_asked.insert(header.tgid) {
                        self.read_routes(header.tgid);
                    }
                    if header.kind == kind::READ {
                        if let Some(p) = &mut self.profiling {
                            p.collector
                                .note_thread(&mut self.capture, header.tgid, header.tid);
                        }
                    }
                    self.assembler.push(&header, payload, &mut self.assembled);
                }
                _ => self.assembler.push(&header, payload, &mut self.assembled),
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
        self.assembler.push(header, payload, &mut self.assembled);
        self.attribute();
        self.attributor.forget(pid, &mut self.batch);
        self.routes_asked.remove(&pid);
        match self.capture.forget_connections(pid) {
            Ok(n) if n > 0 => debug!(
                pid,
                connections = n,
                "forgot the connections of an exited worker"
            ),
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

    /// Stores route tables read since the last call and the attribution mode when it changed.
    async fn store_attribution(&mut self) {
        if let Some(routes) = self.new_routes.take() {
            if let Err(e) = self.writer.set_routes(routes).await {
                warn!(error = %e, "cannot store the route table");
            }
        }
        let mode = (
            store::mode_name(self.attributor.mode()),
            self.attributor.routes().map_or(0, <[_]>::len),
        );
        if self.stored_mode != Some(mode) {
            if let Err(e) = self.writer.set_attribution_mode(mode.0, mode.1).await {
                warn!(error = %e, "cannot store the attribution mode");
            }
            self.stored_mode = Some(mode);
        }
    }

    async fn store_counters(&mut self) {
        self.store_attribution().await;
        let a = self.assembler.counters();
        let r = self.attributor.counters();
        let mut values = vec![
            ("requests_routed", r.routed),
            ("requests_unrouted", r.unrouted),
            ("requests_templated", r.templated),
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
                    warn!(
                        lost = c.ringbuf_drops,
                        "ring-buffer records lost (the daemon fell behind)"
                    );
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
        let values = values
            .into_iter()
            .map(|(k, v)| (k.to_owned(), i64::try_from(v).unwrap_or(i64::MAX)))
            .collect();
        if let Err(e) = self.writer.set_counters(values).await {
            warn!(error = %e, "cannot store counters");
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
