//! The daemon's side of levels and outliers: applies each endpoint's level to finished requests (level 0:
//! counted, not stored; below 3: no profile stored), finds outliers against the running averages, builds
//! their context, decides when a running request is due a live snapshot, and hands everything to the
//! outlier writer. Fed by the daemon's pipeline; knows nothing of BPF.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    context::{request_context, Redactor},
    system::{machine_memory_used_bytes, rss_bytes, CpuMeter},
    trim_to_view, Detector, StackFrame,
};
use crate::{
    levels::{Levels, LAST_REQUESTED, OUTLIERS, PROFILES},
    request::Request,
    store::{
        outliers::{Outlier, OutlierBatch, OutlierSink},
        profiles::{ProfileFrame, ProfileRecord},
        time::{now_us, Micros},
    },
};

/// Soonest a running request gets another live snapshot.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(10);

/// What the monitor did, for the run's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorCounters {
    /// Requests of level-0 endpoints: counted, not stored.
    pub unrecorded: u64,
    pub outliers: u64,
    pub live_snapshots: u64,
    /// Profiles not stored because their endpoint is below level 3.
    pub profiles_skipped: u64,
    /// Outlier batches lost because the outlier writer was gone or far behind.
    pub batches_lost: u64,
}

pub struct Monitor {
    levels: Arc<Levels>,
    detector: Detector,
    redactor: Redactor,
    cpu: CpuMeter,
    sink: Option<OutlierSink>,
    pending: OutlierBatch,
    unrecorded: HashMap<String, (u64, Micros)>,
    /// Running requests snapshotted: (pid, tid, start ns) -> when.
    snapshots: HashMap<(u32, u32, u64), Instant>,
    pub counters: MonitorCounters,
}

/// A running request due a live snapshot.
pub struct Due {
    pub endpoint: String,
    pub threshold_ms: f64,
    pub elapsed_ms: f64,
    pub start_us: Micros,
    pub request: Request,
}

impl Monitor {
    pub fn new(
        levels: Arc<Levels>,
        detector: Detector,
        redactor: Redactor,
        sink: Option<OutlierSink>,
    ) -> Self {
        let mut cpu = CpuMeter::default();
        cpu.read();
        Self {
            levels,
            detector,
            redactor,
            cpu,
            sink,
            pending: OutlierBatch::default(),
            unrecorded: HashMap::new(),
            snapshots: HashMap::new(),
            counters: MonitorCounters::default(),
        }
    }

    /// `endpoint`'s level; an endpoint seen for the first time gets the default (stored with the next batch).
    pub fn level_of(&mut self, endpoint: &str) -> u8 {
        let (level, new) = self.levels.get_or_default(endpoint);
        if new {
            self.pending.new_levels.push((endpoint.to_owned(), level));
        }
        level
    }

    /// Whether a thread serving `endpoint` (`None`: not known yet) needs its stacks sampled.
    pub fn wants_stacks(&mut self, endpoint: Option<&str>) -> bool {
        endpoint.is_none_or(|e| self.level_of(e) >= OUTLIERS)
    }

    /// Applies levels to a batch of finished requests: level-0 ones leave `batch` (counted), outliers are
    /// kept with their profile's stack, and the profiles to store (level 3, or no endpoint) are returned.
    pub fn process(
        &mut self,
        batch: &mut Vec<Request>,
        profiles: Vec<ProfileRecord>,
    ) -> Vec<ProfileRecord> {
        let mut by_request: HashMap<(u32, u32, i64), ProfileRecord> = profiles
            .into_iter()
            .map(|p| ((p.worker_pid, p.tid, p.ts_us), p))
            .collect();
        let mut keep_profile: HashSet<(u32, u32, i64)> = HashSet::new();
        let mut outliers = Vec::new();
        batch.retain(|r| {
            let key = (r.worker_pid, r.tid, r.ts_us);
            let Some(endpoint) = r.endpoint.as_deref() else {
                keep_profile.insert(key);
                return true;
            };
            let level = self.level_of(endpoint);
            let ms = r.duration_ns as f64 / 1e6;
            let threshold = self.detector.observe(endpoint, ms);
            if level == LAST_REQUESTED {
                self.counters.unrecorded += 1;
                let entry = self
                    .unrecorded
                    .entry(endpoint.to_owned())
                    .or_insert((0, r.ts_us));
                entry.0 += 1;
                entry.1 = entry.1.max(r.ts_us);
                return false;
            }
            if level >= PROFILES {
                keep_profile.insert(key);
            }
            if let (Some(threshold_ms), true) = (threshold, level >= OUTLIERS) {
                let stack = by_request.get(&key).map(heaviest_stack).unwrap_or_default();
                outliers.push((r.clone(), threshold_ms, stack));
            }
            true
        });
        for (r, threshold_ms, stack) in outliers {
            let endpoint = r.endpoint.clone().unwrap_or_default();
            let o = self.outlier(
                &r,
                &endpoint,
                r.ts_us,
                ms(r.duration_ns),
                threshold_ms,
                stack,
                false,
            );
            self.pending.outliers.push(o);
            self.counters.outliers += 1;
        }
        let before = by_request.len();
        by_request.retain(|k, _| keep_profile.contains(k));
        self.counters.profiles_skipped += (before - by_request.len()) as u64;
        let mut kept: Vec<ProfileRecord> = by_request.into_values().collect();
        kept.sort_by_key(|p| p.ts_us);
        kept
    }

    /// Which running requests are due a live snapshot, from `(start ns, start µs, request, endpoint)` of
    /// every request in flight at `now_ns` (monotonic); forgets the requests no longer running.
    pub fn due(
        &mut self,
        now_ns: u64,
        running: Vec<(u64, Micros, Request, Option<String>)>,
    ) -> Vec<Due> {
        let now = Instant::now();
        let mut alive = HashSet::new();
        let mut due = Vec::new();
        for (start_ns, start_us, request, endpoint) in running {
            let key = (request.worker_pid, request.tid, start_ns);
            alive.insert(key);
            let Some(endpoint) = endpoint else { continue };
            if self.level_of(&endpoint) < OUTLIERS {
                continue;
            }
            let Some(threshold_ms) = self.detector.threshold_ms(&endpoint) else {
                continue;
            };
            let elapsed_ms = now_ns.saturating_sub(start_ns) as f64 / 1e6;
            if elapsed_ms <= threshold_ms {
                continue;
            }
            if self
                .snapshots
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < LIVE_INTERVAL)
            {
                continue;
            }
            self.snapshots.insert(key, now);
            due.push(Due {
                endpoint,
                threshold_ms,
                elapsed_ms,
                start_us,
                request,
            });
        }
        self.snapshots.retain(|k, _| alive.contains(k));
        due
    }

    /// Records a live snapshot (`frames` outermost first) of a running request.
    pub fn live(&mut self, due: &Due, frames: Vec<StackFrame>) {
        let stack = trim_to_view(frames);
        let o = self.outlier(
            &due.request,
            &due.endpoint,
            due.start_us,
            due.elapsed_ms,
            due.threshold_ms,
            stack,
            true,
        );
        self.pending.outliers.push(o);
        self.counters.live_snapshots += 1;
    }

    #[expect(clippy::too_many_arguments, reason = "one outlier's parts")]
    fn outlier(
        &mut self,
        r: &Request,
        endpoint: &str,
        start_us: Micros,
        duration_ms: f64,
        threshold_ms: f64,
        stack: Vec<StackFrame>,
        live: bool,
    ) -> Outlier {
        let context = request_context(r, &self.redactor);
        Outlier {
            id: 0,
            request_id: None,
            endpoint: endpoint.to_owned(),
            method: r.method.clone(),
            path: r.path.clone(),
            worker_pid: r.worker_pid,
            tid: r.tid,
            ts: start_us,
            taken_at: now_us(),
            duration_ms,
            threshold_ms,
            live,
            stack,
            cpu_percent: self.cpu.read(),
            worker_rss_bytes: rss_bytes(r.worker_pid),
            machine_memory_used_bytes: machine_memory_used_bytes(),
            headers: context.headers,
            request_values: context.request_values,
            environ: context.environ,
        }
    }

    /// The daemon's tick: keeps the CPU baseline fresh and hands what is pending to the writer.
    pub fn tick(&mut self) {
        self.cpu.read();
        self.flush();
    }

    pub fn flush(&mut self) {
        let mut batch = std::mem::take(&mut self.pending);
        batch.averages = self.detector.take_changed();
        batch.unrecorded = self
            .unrecorded
            .drain()
            .map(|(e, (n, last))| (e, n, last))
            .collect();
        if batch.is_empty() {
            return;
        }
        let Some(sink) = &self.sink else { return };
        if let Err(e) = sink.send(batch) {
            self.counters.batches_lost += 1;
            tracing::warn!(error = %e, "outliers, averages and level counts are lost");
        }
    }

    /// Stops the writer after what is queued (dropping the sink ends its thread).
    pub fn close(&mut self) {
        self.flush();
        self.sink = None;
    }

    /// (name, value) pairs for the run's counters.
    pub fn counter_values(&self) -> Vec<(&'static str, u64)> {
        let c = self.counters;
        vec![
            ("requests_unrecorded_level0", c.unrecorded),
            ("outliers", c.outliers),
            ("outlier_live_snapshots", c.live_snapshots),
            ("profiles_skipped_level", c.profiles_skipped),
            ("outlier_batches_lost", c.batches_lost),
        ]
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn stack_frame(f: ProfileFrame) -> StackFrame {
    StackFrame {
        function: f.function,
        file: f.file,
        line: f.line,
        code: f.source,
    }
}

/// The stack a profile spent most time in, trimmed to the view.
fn heaviest_stack(p: &ProfileRecord) -> Vec<StackFrame> {
    p.stacks
        .iter()
        .filter(|s| !s.frames.is_empty())
        .max_by_key(|s| s.weight_ns)
        .map(|s| trim_to_view(s.frames.iter().cloned().map(stack_frame).collect()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::profiles::ProfileStack;

    fn req(endpoint: &str, i: i64, ms: u64) -> Request {
        Request {
            ts_us: 1_000_000 + i,
            duration_ns: ms * 1_000_000,
            method: "GET".into(),
            path: "/x".into(),
            worker_pid: 1,
            tid: 1,
            endpoint: Some(endpoint.into()),
            head: b"GET /x?a=1 HTTP/1.1\r\nAuthorization: Basic x\r\n\r\n".to_vec(),
            query: Some("a=1".into()),
            ..Request::default()
        }
    }

    fn frame(function: &str, file: &str) -> ProfileFrame {
        ProfileFrame {
            file: file.into(),
            line: 3,
            function: function.into(),
            first_line: 1,
            source: Some("x()".into()),
        }
    }

    fn profile(r: &Request) -> ProfileRecord {
        let stack = |f: &str, w| ProfileStack {
            frames: vec![
                frame("dispatch_request", "/v/flask/app.py"),
                frame("view", "/app.py"),
                frame(f, "/app.py"),
            ],
            off_cpu: false,
            truncated: false,
            samples: 1,
            weight_ns: w,
        };
        ProfileRecord {
            worker_pid: r.worker_pid,
            tid: r.tid,
            ts_us: r.ts_us,
            duration_ns: r.duration_ns,
            path: r.path.clone(),
            endpoint: r.endpoint.clone(),
            stacks: vec![stack("light", 1), stack("helper", 9)],
            gc_ns: None,
        }
    }

    fn monitor(levels: &[(&str, u8)]) -> Monitor {
        let known = levels.iter().map(|(e, l)| ((*e).to_owned(), *l)).collect();
        Monitor::new(
            Arc::new(Levels::new(3, known)),
            Detector::new(2.5, HashMap::new()),
            Redactor::default(),
            None,
        )
    }

    #[test]
    fn levels_decide_rows_profiles_and_outliers() {
        let mut m = monitor(&[("zero", 0), ("one", 1), ("two", 2)]);
        let mut batch: Vec<Request> = Vec::new();
        for e in ["zero", "one", "two", "three"] {
            for i in 0..20 {
                batch.push(req(e, i, if i == 19 { 200 } else { 5 }));
            }
        }
        let profiles = batch.iter().map(profile).collect();
        let kept = m.process(&mut batch, profiles);
        assert!(batch.iter().all(|r| r.endpoint.as_deref() != Some("zero")));
        assert_eq!(batch.len(), 60);
        assert_eq!(m.counters.unrecorded, 20);
        assert!(kept.iter().all(|p| p.endpoint.as_deref() == Some("three")));
        assert_eq!(kept.len(), 20);
        // The slow request of levels 2 and 3 only, with the helper's stack trimmed to the view.
        let outliers = &m.pending.outliers;
        let endpoints: Vec<_> = outliers.iter().map(|o| o.endpoint.as_str()).collect();
        assert_eq!(endpoints, ["two", "three"]);
        let o = &outliers[0];
        assert_eq!((o.duration_ms, o.live), (200.0, false));
        assert!((o.threshold_ms - 12.5).abs() < 1e-9);
        let names: Vec<_> = o.stack.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["view", "helper"]);
        assert_eq!(o.headers["Authorization"], super::super::context::REDACTED);
        assert_eq!(o.request_values["query"]["a"], "1");
        assert!(o.machine_memory_used_bytes.is_some_and(|b| b > 0));
    }

    #[test]
    fn live_snapshots_at_most_every_ten_seconds() {
        let mut m = monitor(&[]);
        let mut warm: Vec<Request> = (0..20).map(|i| req("e", i, 5)).collect();
        m.process(&mut warm, Vec::new());
        let running = |start| vec![(start, 7, req("e", 99, 0), Some("e".to_owned()))];
        // 10 ms in: under the 12.5 ms threshold.
        assert!(m.due(10_000_000, running(0)).is_empty());
        let due = m.due(20_000_000, running(0));
        assert_eq!(due.len(), 1);
        assert!((due[0].elapsed_ms - 20.0).abs() < 1e-9);
        m.live(&due[0], vec![stack_frame(frame("view", "/app.py"))]);
        assert!(m.pending.outliers[0].live);
        // Not again within LIVE_INTERVAL; another request is due at once.
        assert!(m.due(30_000_000, running(0)).is_empty());
        assert_eq!(m.due(30_000_000, running(1)).len(), 1);
    }
}
