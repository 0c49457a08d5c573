//! The running daemon: wires the ring buffer through the HTTP assembler to the store's writer, serves the
//! API, follows gunicorn's workers as they come and go, and on SIGINT/SIGTERM detaches and flushes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use fmd_common::{
    http::{kind, EventHeader},
    ROLE_WORKER,
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
    exceptions,
    flask::{
        app::{self as flask_app, UrlMap},
        attribution::Attributor,
        matcher::MapOptions,
    },
    identity::Identify,
    levels::Levels,
    outliers::{context::Redactor, monitor::Monitor, snapshot::Snapshotter, Detector},
    profile::Collector,
    request::Request,
    store::{self, names, profiles::ProfileSink, DaemonFile, RunInfo, Store, WriterHandle},
    version,
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
    info!(pid, ?target, "monitoring: {}", target.describe());
    // Before anything is created: the store, its WAL and `<db>.daemon` are private (0600, dir 0700).
    let umask = store::file_modes::private_umask();
    debug!(previous = format!("{umask:03o}"), "umask 077");
    store::file_modes::warn_if_exposed(&config.db);
    let store = Store::open(&config.db)?;
    let (monitor, levels, outlier_writer) = start_monitor(&config, &store)?;
    let api_state = api::AppState::new(store.reader()?).with_levels(levels);
    let mut capture = info_span!("attach").in_scope(Capture::load)?;
    let workers = watch_target(&mut capture, &target)?;
    for &worker in &workers {
        watch_log_fds(&mut capture, worker);
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
        match start_profiling(&config, &mut capture, &workers, &store, clock_offset) {
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
    api::auth::prepare(
        &api_state,
        &config.db,
        &format!("http://{listen}"),
        &config.base_path,
    )
    .await
    .context("cannot set up dashboard authentication")?;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let app = api::assets::mount(api::router(api_state), &config.base_path);
    let server = tokio::spawn(
        async move {
            let shutdown = async {
                let _ = api_stopped.await;
            };
            api::server::serve(listener, app, api::server::Limits::default(), shutdown).await;
        }
        .instrument(info_span!("api")),
    );
    DaemonFile {
        pid: std::process::id(),
        listen,
    }
    .write(&config.db)?;
    // So that `fmd-daemon query` finds this daemon without --db; a read-only /run costs only that.
    let registration = store::Registration {
        pid: std::process::id(),
        listen,
        db: std::path::absolute(&config.db).unwrap_or_else(|_| config.db.clone()),
    };
    if let Err(e) = registration.write(&store::runtime_dir()) {
        warn!(error = %e, "`fmd-daemon query` will need --db to find this daemon");
    }
    info!(
        %listen,
        db = %config.db.display(),
        "attached; dashboard and API at http://{listen}{}/",
        config.base_path
    );

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
    let identify = Identify {
        users: config.users.clone(),
        proxies: config.proxies.clone(),
    };
    let mut pipeline = Pipeline {
        capture,
        assembler: Assembler::new(limits, clock_offset).with_identify(identify),
        version_source: Arc::new(version::Source::new(
            config.app_version.as_deref(),
            config.git.as_deref(),
        )),
        versions: std::collections::HashMap::new(),
        version_error: None,
        exceptions: exceptions::Collector::new(clock_offset),
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
        monitor,
        snapshots: Snapshotter::default(),
        serving: std::collections::HashMap::new(),
        table_full_seen: (0, 0, 0),
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
    pipeline.monitor.close();
    drop(pipeline);
    let _ = outlier_writer.join();
    // The pipeline held the profile sink: the profile writer now stores what is queued and stops.
    if let Some(thread) = profile_writer {
        let _ = thread.join();
    }
    let report = writer.stop().await;
    let _ = stop_api.send(());
    let _ = server.await;
    let _ = writer_thread.join();
    if let Err(e) = store::Registration::remove(&store::runtime_dir(), registration.pid) {
        warn!(error = %e, "cannot unregister the daemon");
    }
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

/// Puts `pid`'s log descriptors under watch, so the tracebacks it logs while serving are seen. A failure
/// costs exception capture only.
fn watch_log_fds(capture: &mut Capture, pid: u32) {
    let fds = capture::logfds::log_descriptors(pid);
    match capture.watch_log_fds(pid, &fds) {
        Ok(()) => debug!(pid, ?fds, "watching log descriptors"),
        Err(e) => {
            warn!(pid, error = %e, "cannot watch the worker's log descriptors: its exceptions are not seen");
        }
    }
}

/// The levels (stored ones, and the default for new endpoints), the running averages and the outlier
/// writer.
fn start_monitor(
    config: &Config,
    store: &Store,
) -> anyhow::Result<(Monitor, Arc<Levels>, std::thread::JoinHandle<()>)> {
    let conn = store.connection();
    let levels = Arc::new(Levels::new(
        config.default_level(),
        store::levels::levels(conn)?,
    ));
    let detector = Detector::new(
        config.outlier_detection_constant,
        store::levels::averages(conn)?,
    );
    let (sink, thread) = store::outliers::spawn_outlier_writer(store.reader()?)?;
    info!(
        default_level = levels.default_level(),
        constant = config.outlier_detection_constant,
        "monitoring levels and outliers"
    );
    let monitor = Monitor::new(
        Arc::clone(&levels),
        detector,
        Redactor::new(&config.redact_fields),
        Some(sink),
    );
    Ok((monitor, levels, thread))
}

/// Writes the target's role, then (for a target whose forks are followed) the forks it already has: from
/// then on BPF adds each new fork inside the fork itself, so a worker started while fmd was loading is in
/// the listing and one started later is caught by BPF; none falls between. Returns the processes that
/// serve requests.
fn watch_target(capture: &mut Capture, target: &Target) -> Result<Vec<u32>, capture::Error> {
    let pid = target.pid();
    capture.watch(pid, target.role())?;
    let mut serving = Vec::new();
    if target.serves() {
        serving.push(pid);
    }
    if target.follows_forks() {
        let workers = procs::forked_children(pid);
        for &w in &workers {
            capture.watch(w, ROLE_WORKER)?;
        }
        info!(
            pid,
            workers = ?workers,
            "following its forks: {} already running",
            workers.len()
        );
        serving.extend(workers);
    }
    Ok(serving)
}

/// Attaches the stack sampler and reads each worker's interpreter. A failure costs the profiles only:
/// requests are still captured.
fn start_profiling(
    config: &Config,
    capture: &mut Capture,
    workers: &[u32],
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
    for &pid in workers {
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

/// A worker's route table, or why it could not be read, and the app version it runs.
type RouteResult = (
    u32,
    Result<UrlMap, flask_app::Error>,
    Result<String, version::git::Error>,
);

struct Pipeline {
    capture: Capture,
    assembler: Assembler,
    /// Tracebacks in what serving threads log, tied to their requests.
    exceptions: exceptions::Collector,
    attributor: Attributor,
    profiling: Option<Profiling>,
    /// Where workers' versions come from, and each worker's version once read (with its routes).
    version_source: Arc<version::Source>,
    versions: std::collections::HashMap<u32, String>,
    /// The last reason a version could not be read, so that each new worker does not warn again.
    version_error: Option<String>,
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
    /// Levels, outliers and live snapshots.
    monitor: Monitor,
    /// Live stack snapshots of slow running requests.
    snapshots: Snapshotter,
    /// tid -> start of the request it serves (monotonic ns), as last seen by [`Pipeline::note_serving`].
    serving: std::collections::HashMap<u32, u64>,
    /// The BPF table-full counters (connections, pids, pending syscalls) already warned about.
    table_full_seen: (u64, u64, u64),
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
                Some((pid, result, version)) = routes.recv() => self.on_routes(pid, result, version),
                _ = tick.tick() => {
                    self.assembler.expire(monotonic_ns(), &mut self.assembled);
                    self.attribute();
                    self.exceptions.expire(monotonic_ns());
                    self.attributor.expire(Instant::now(), &mut self.batch);
                    if let Some(p) = &mut self.profiling {
                        p.collector.refresh(&mut self.capture);
                        p.collector.expire(monotonic_ns());
                    }
                    self.hand_over().await;
                    self.snapshot_slow_requests();
                    self.monitor.tick();
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
                Ok(Some((pid, result, version))) => self.on_routes(pid, result, version),
                _ => break,
            }
        }
    }

    fn attribute(&mut self) {
        let now = Instant::now();
        for mut req in self.assembled.drain(..) {
            self.exceptions.on_request(&mut req);
            self.attributor.push(req, now, &mut self.batch);
        }
    }

    /// Reads `pid`'s Flask route table in the background, retrying while the worker is still starting,
    /// then its version (the app's `root_path` helps find its git checkout).
    fn read_routes(&mut self, pid: u32) {
        self.attributor.reading(pid);
        self.route_reads += 1;
        let tx = self.routes_tx.clone();
        let source = Arc::clone(&self.version_source);
        let version = move |root: Option<String>| {
            let source = Arc::clone(&source);
            async move {
                tokio::task::spawn_blocking(move || source.resolve(pid, root.as_deref()))
                    .await
                    .unwrap_or_else(|e| {
                        Err(version::git::Error::Read {
                            path: format!("/proc/{pid}/cwd").into(),
                            source: std::io::Error::other(e),
                        })
                    })
            }
        };
        tokio::spawn(
            async move {
                let mut last = None;
                for &delay in ROUTE_READ_DELAYS_MS {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    match tokio::task::spawn_blocking(move || flask_app::routes(pid)).await {
                        Ok(Ok(map)) => {
                            let v = version(map.root_path.clone()).await;
                            let _ = tx.send((pid, Ok(map), v));
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
                let v = version(None).await;
                let _ = tx.send((
                    pid,
                    Err(last.unwrap_or(flask_app::Error::NoFlaskApp { pid })),
                    v,
                ));
            }
            .instrument(info_span!("routes", pid)),
        );
    }

    fn on_routes(
        &mut self,
        pid: u32,
        result: Result<UrlMap, flask_app::Error>,
        version: Result<String, version::git::Error>,
    ) {
        self.route_reads = self.route_reads.saturating_sub(1);
        match version {
            Ok(v) => {
                info!(pid, version = %v, "worker's app version");
                self.versions.insert(pid, v);
            }
            Err(e) => {
                let error = format!("{:#}", anyhow::Error::from(e));
                if self.version_error.as_ref() != Some(&error) {
                    warn!(pid, %error, "cannot tell the app's version: requests get none (set app_version or git in the config)");
                    self.version_error = Some(error);
                }
            }
        }
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
                        for r in &routes {
                            self.monitor.level_of(&r.endpoint);
                        }
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
                kind::LOG => self.exceptions.on_log(&header, payload),
                kind::ACCEPT | kind::READ => {
                    if self.routes_asked.insert(header.tgid) {
                        self.read_routes(header.tgid);
                        // The app is loaded now: a syslog socket it opened is there.
                        watch_log_fds(&mut self.capture, header.tgid);
                    }
                    if header.kind == kind::READ {
                        if let Some(p) = &mut self.profiling {
                            p.collector
                                .note_thread(&mut self.capture, header.tgid, header.tid);
                        }
                    }
                    self.assembler.push(&header, payload, &mut self.assembled);
                    if header.kind == kind::READ {
                        self.note_serving(header.tgid, header.fd, header.tid);
                    }
                }
                _ => self.assembler.push(&header, payload, &mut self.assembled),
            }
        }
    }

    /// BPF already watches the child (so its first request is caught); drop it again if it is a thread.
    fn on_fork(&mut self, child: u32) {
        // Only the thread-group id is read: a single-process server starting a thread per request makes
        // this a per-request cost.
        match procs::tgid(child) {
            Some(tgid) if tgid == child => {
                info!(pid = child, "new worker");
                // What it inherited from the master (gunicorn's error log file, a preloaded app's logs).
                watch_log_fds(&mut self.capture, child);
                if let Some(p) = &mut self.profiling {
                    if let Err(e) = p.collector.add_worker(&mut self.capture, child) {
                        warn!(pid = child, error = %e, "cannot profile this worker");
                    }
                }
            }
            Some(_) => {
                debug!(tid = child, "the target started a thread, not a worker");
                let _ = self.capture.unwatch(child);
            }
            // Already gone: its exit record will clean up.
            None => {}
        }
    }

    fn on_exit(&mut self, pid: u32, header: &EventHeader, payload: &[u8]) {
        self.assembler.push(header, payload, &mut self.assembled);
        self.attribute();
        self.attributor.forget(pid, &mut self.batch);
        self.exceptions.forget(pid);
        if let Err(e) = self.capture.forget_log_fds(pid) {
            warn!(pid, error = %e, "cannot clean the log descriptor table");
        }
        self.routes_asked.remove(&pid);
        // Its requests still in the batch are tagged before its version goes (a reused pid must not
        // inherit it).
        self.tag_versions();
        self.versions.remove(&pid);
        self.snapshots.forget(pid);
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

    /// Gives the batch's requests their worker's version, where it is known.
    fn tag_versions(&mut self) {
        for req in &mut self.batch {
            if req.version.is_none() {
                req.version = self.versions.get(&req.worker_pid).cloned();
            }
        }
    }

    async fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.tag_versions();
        let mut batch = std::mem::take(&mut self.batch);
        let profiles = match &mut self.profiling {
            Some(p) => p.collector.take_profiles(&batch),
            None => Vec::new(),
        };
        let profiles = self.monitor.process(&mut batch, profiles);
        if let Some(p) = &mut self.profiling {
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

    /// A thread read from a client: when that starts a new request, tell the sampler whether its endpoint's
    /// level wants stacks (2 or more), so samples of lower levels are dropped before symbolisation.
    fn note_serving(&mut self, tgid: u32, fd: i32, tid: u32) {
        let Some(p) = &mut self.profiling else { return };
        let Some((start, req)) = self.assembler.latest_request(tgid, fd) else {
            return;
        };
        if req.tid != tid || self.serving.get(&tid) == Some(&start) {
            return;
        }
        self.serving.insert(tid, start);
        let endpoint = self.attributor.endpoint_of(req);
        let wanted = self.monitor.wants_stacks(endpoint.as_deref());
        p.collector.set_stacks_wanted(tid, wanted);
    }

    /// Live snapshots of requests running past their endpoint's threshold (see [`Monitor::due`]).
    fn snapshot_slow_requests(&mut self) {
        let mut running = Vec::new();
        let Self {
            assembler,
            attributor,
            ..
        } = self;
        assembler.in_flight(|start_ns, start_us, req| {
            let endpoint = attributor.endpoint_of(req);
            running.push((start_ns, start_us, req.clone(), endpoint));
        });
        if self.serving.len() > 4 * running.len() + 1024 {
            self.serving.clear();
        }
        for due in self.monitor.due(monotonic_ns(), running) {
            let frames = self
                .snapshots
                .snapshot(due.request.worker_pid, due.request.tid)
                .unwrap_or_default();
            self.monitor.live(&due, frames);
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

    /// Warns once per increase of a BPF table-full counter whose loss is requests, not profile detail.
    fn warn_table_full(&mut self, c: capture::BpfCounters) {
        let seen = (c.conn_table_full, c.pids_table_full, c.pending_table_full);
        if seen != self.table_full_seen {
            if c.pids_table_full > self.table_full_seen.1 {
                warn!(
                    workers = c.pids_table_full,
                    "new workers not captured: BPF's pid table is full"
                );
            }
            if c.conn_table_full > self.table_full_seen.0
                || c.pending_table_full > self.table_full_seen.2
            {
                warn!(
                    connections = c.conn_table_full,
                    syscalls = c.pending_table_full,
                    "requests lost: BPF's connection or pending-syscall table is full"
                );
            }
            self.table_full_seen = seen;
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
        let x = self.exceptions.counters();
        values.extend([
            ("exception_log_records", x.log_records),
            ("exceptions_recognised", x.recognised),
            ("exception_tracebacks_incomplete", x.incomplete),
            ("exception_tracebacks_outside_requests", x.outside_requests),
            ("exception_log_bytes_lost", x.bytes_lost),
            ("exception_source_unreadable", x.source_unreadable),
        ]);
        match self.capture.counters() {
            Ok(c) => {
                values.push((names::EVENTS_LOST, c.ringbuf_drops));
                values.push((names::CONN_TABLE_FULL, c.conn_table_full));
                values.push(("exception_log_writes_truncated", c.log_truncated));
                values.push((names::PIDS_TABLE_FULL, c.pids_table_full));
                values.push((names::PENDING_TABLE_FULL, c.pending_table_full));
                if c.ringbuf_drops > 0 {
                    warn!(
                        lost = c.ringbuf_drops,
                        "ring-buffer records lost (the daemon fell behind)"
                    );
                }
                self.warn_table_full(c);
            }
            Err(e) => warn!(error = %e, "cannot read the BPF counters"),
        }
        values.extend(self.monitor.counter_values());
        if let Some(p) = &self.profiling {
            values.extend(p.collector.counter_values());
            match self.capture.sampler_counters() {
                Ok(c) => values.extend([
                    ("profile_samples_sent", c.samples_sent),
                    ("profile_samples_lost", c.sample_drops),
                    ("profile_samples_truncated", c.samples_truncated),
                    (names::SERVING_TABLE_FULL, c.serving_table_full),
                    (names::OFFCPU_TABLE_FULL, c.offcpu_table_full),
                    (names::GC_TABLE_FULL, c.gc_table_full),
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
