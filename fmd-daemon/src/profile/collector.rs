//! The daemon's side of the sampler: attaches to each worker's interpreter, keeps BPF's layout and thread
//! tables current, symbolises incoming samples (with the line's source text), and hands each finished
//! request's samples to the store.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::fd::OwnedFd,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use fmd_common::{
    http::EventHeader,
    names,
    profile::{PyLayout, RawFrame, FLAG_OFF_CPU, FLAG_TRUNCATED, RAW_FRAME_SIZE},
};

use super::{
    attribution::{Attributor, FrameId, Sample},
    ProfileMode,
};
use crate::{
    capture::{self, sampler::SamplerTables, usdt, Capture},
    python::{
        self,
        stack::{py_layout, python_frames},
        symbols::{Location, Symbolizer},
        Interpreter,
    },
    request::Request,
    store::profiles::{ProfileFrame, ProfileRecord, ProfileStack},
};

/// How often each worker's thread list is re-read (new gthread threads, exited ones).
const REFRESH: Duration = Duration::from_secs(1);
/// Soonest a worker's thread list is re-read again for an unknown thread (bounds the cost of a thread that
/// is not a Python thread at all).
const EAGER_REFRESH: Duration = Duration::from_millis(20);
/// Source files larger than this are not read for line text.
const MAX_SOURCE_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the Python interpreter of worker {pid}")]
    Python {
        pid: u32,
        #[source]
        source: python::Error,
    },
    #[error("fmd has no frame layout for CPython {version} (worker {pid})")]
    Layout { pid: u32, version: String },
    #[error("cannot update the sampler's tables for worker {pid}")]
    Capture {
        pid: u32,
        #[source]
        source: capture::Error,
    },
}

struct Proc {
    /// Whether the interpreter has the GC probes (and they are attached).
    gc: bool,
    interp: Interpreter,
    layout: PyLayout,
    symbols: Symbolizer,
    /// `(code, instr) -> (batch, frame)`: frames resolved in the current batch need no lookup at all (the
    /// code object was checked in this batch; see `Symbolizer::begin_batch`).
    resolved: HashMap<(u64, u64), (u64, FrameId)>,
    batch: u64,
    tids: HashSet<u32>,
    refreshed: Instant,
}

/// Entries of `Proc::resolved` before it is cleared.
const MAX_RESOLVED: usize = 200_000;

/// Source lines of files, by path, re-read when the file's modification time changes.
#[derive(Default)]
struct Sources {
    files: HashMap<PathBuf, (Option<SystemTime>, Arc<Vec<String>>)>,
}

impl Sources {
    fn line(&mut self, pid: u32, file: &str, line: i32) -> Option<String> {
        if !file.starts_with('/') {
            return None;
        }
        // The app's own view of its files (it may run in another mount namespace or chroot).
        let path = PathBuf::from(format!("/proc/{pid}/root{file}"));
        let meta = fs::metadata(&path).ok()?;
        let mtime = meta.modified().ok();
        let stale = self.files.get(&path).is_none_or(|(m, _)| *m != mtime);
        if stale {
            if meta.len() > MAX_SOURCE_BYTES {
                return None;
            }
            let text = fs::read(&path).ok()?;
            let lines = String::from_utf8_lossy(&text)
                .lines()
                .map(str::to_owned)
                .collect();
            self.files.insert(path.clone(), (mtime, Arc::new(lines)));
        }
        let (_, lines) = self.files.get(&path)?;
        let index = usize::try_from(line).ok()?.checked_sub(1)?;
        lines.get(index).map(|l| l.trim_end().to_owned())
    }
}

/// Counters the collector adds to the run's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectorCounters {
    pub samples: u64,
    /// Samples of threads or processes fmd has no interpreter for (yet).
    pub samples_unknown_thread: u64,
    pub frames_unknown: u64,
    pub profiled_requests: u64,
    /// Samples of threads serving an endpoint below level 2: dropped unsymbolised.
    pub samples_skipped_level: u64,
}

pub struct Collector {
    mode: ProfileMode,
    period_ns: u64,
    procs: HashMap<u32, Proc>,
    tables: SamplerTables,
    frames: Vec<ProfileFrame>,
    frame_ids: HashMap<Location, FrameId>,
    sources: Sources,
    attributor: Attributor,
    /// Threads serving a request of an endpoint whose level needs no stacks (below 2).
    quiet: HashSet<u32>,
    /// Interpreter binaries (real paths) tried for GC probes: attached or not.
    gc_binaries: HashMap<PathBuf, bool>,
    /// Keep the GC probes attached.
    gc_links: Vec<OwnedFd>,
    pub counters: CollectorCounters,
}

impl Collector {
    /// `clock_offset_ns` must be the one the assembler turns monotonic times into `Request::ts_us` with.
    pub fn new(hz: u64, mode: ProfileMode, clock_offset_ns: i64) -> Self {
        Self {
            mode,
            period_ns: 1_000_000_000 / hz.max(1),
            procs: HashMap::new(),
            tables: SamplerTables::default(),
            frames: Vec::new(),
            frame_ids: HashMap::new(),
            sources: Sources::default(),
            attributor: Attributor::new(clock_offset_ns),
            quiet: HashSet::new(),
            gc_binaries: HashMap::new(),
            gc_links: Vec::new(),
            counters: CollectorCounters::default(),
        }
    }

    pub fn mode(&self) -> ProfileMode {
        self.mode
    }

    /// Starts sampling worker `pid`: reads its interpreter and fills BPF's tables.
    pub fn add_worker(&mut self, capture: &mut Capture, pid: u32) -> Result<(), Error> {
        let interp = Interpreter::attach(pid).map_err(|source| Error::Python { pid, source })?;
        let layout = py_layout(&interp.layout).ok_or_else(|| Error::Layout {
            pid,
            version: interp.version.to_string(),
        })?;
        capture
            .set_py_layout(pid, layout)
            .map_err(|source| Error::Capture { pid, source })?;
        tracing::info!(pid, version = %interp.version, "profiling worker");
        let gc = self.attach_gc(capture, pid, &interp);
        let mut proc = Proc {
            gc,
            interp,
            layout,
            symbols: Symbolizer::new(),
            resolved: HashMap::new(),
            batch: 0,
            tids: HashSet::new(),
            refreshed: Instant::now(),
        };
        refresh_threads(capture, &mut self.tables, pid, &mut proc)?;
        self.procs.insert(pid, proc);
        Ok(())
    }

    /// Attaches the GC probes of `interp`'s binary once per binary; false when it has none.
    fn attach_gc(&mut self, capture: &mut Capture, pid: u32, interp: &Interpreter) -> bool {
        let seen = PathBuf::from(format!("/proc/{pid}/root{}", interp.binary.path.display()));
        let real = fs::canonicalize(&seen).unwrap_or(seen);
        if let Some(&attached) = self.gc_binaries.get(&real) {
            return attached;
        }
        let attached = match usdt::probes(&real) {
            Ok(probes) => {
                let find = |name: &str| {
                    probes
                        .iter()
                        .find(|p| p.provider == "python" && p.name == name)
                };
                match (find("gc__start"), find("gc__done")) {
                    (Some(start), Some(done)) => {
                        let links = capture
                            .attach_usdt(names::GC_START_PROGRAM, &real, start)
                            .and_then(|a| {
                                Ok((a, capture.attach_usdt(names::GC_DONE_PROGRAM, &real, done)?))
                            });
                        match links {
                            Ok((a, b)) => {
                                self.gc_links.extend([a, b]);
                                tracing::info!(binary = %real.display(), "GC time per request from the USDT probes");
                                true
                            }
                            Err(e) => {
                                tracing::warn!(binary = %real.display(), error = %e, "cannot attach the GC probes");
                                false
                            }
                        }
                    }
                    _ => {
                        tracing::info!(binary = %real.display(), "no GC probes in this interpreter: GC time unavailable");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot look for USDT probes");
                false
            }
        };
        self.gc_binaries.insert(real, attached);
        attached
    }

    /// A `GC` record.
    pub fn on_gc(&mut self, h: &EventHeader) {
        self.attributor.gc(h.tid, h.ts_ns, h.len);
    }

    pub fn remove_worker(&mut self, capture: &mut Capture, pid: u32) {
        if let Some(p) = self.procs.remove(&pid) {
            self.attributor.forget_tids(p.tids);
        }
        capture.forget_python(&mut self.tables, pid);
    }

    /// Re-reads the thread lists that are due.
    pub fn refresh(&mut self, capture: &mut Capture) {
        for (&pid, proc) in &mut self.procs {
            if proc.refreshed.elapsed() < REFRESH {
                continue;
            }
            if let Err(e) = refresh_threads(capture, &mut self.tables, pid, proc) {
                tracing::debug!(pid, error = %e, "cannot refresh the thread list");
            }
        }
    }

    /// A watched worker's thread reads from a client: if BPF does not know its thread state yet (a gthread
    /// worker starts its threads on demand), re-read the thread list now rather than lose its first requests.
    pub fn note_thread(&mut self, capture: &mut Capture, tgid: u32, tid: u32) {
        let Some(proc) = self.procs.get_mut(&tgid) else {
            return;
        };
        if proc.tids.contains(&tid) || proc.refreshed.elapsed() < EAGER_REFRESH {
            return;
        }
        if let Err(e) = refresh_threads(capture, &mut self.tables, tgid, proc) {
            tracing::debug!(pid = tgid, error = %e, "cannot refresh the thread list");
        }
    }

    /// A ring-buffer drain starts (see [`Symbolizer::begin_batch`]).
    pub fn begin_batch(&mut self) {
        for p in self.procs.values_mut() {
            p.symbols.begin_batch();
            p.batch += 1;
        }
    }

    /// A `SAMPLE` record.
    pub fn on_sample(&mut self, h: &EventHeader, payload: &[u8]) {
        self.counters.samples += 1;
        if self.quiet.contains(&h.tid) {
            self.counters.samples_skipped_level += 1;
            return;
        }
        let Some(proc) = self.procs.get_mut(&h.tgid) else {
            self.counters.samples_unknown_thread += 1;
            return;
        };
        let raw: Vec<RawFrame> = payload
            .chunks_exact(RAW_FRAME_SIZE)
            .map(|c| {
                let word = |i: usize| {
                    c.get(i..i + 8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u64::from_le_bytes)
                };
                RawFrame {
                    code: word(0),
                    instr: word(8),
                }
            })
            .collect();
        let reader = proc.interp.reader();
        let mut stack = Vec::with_capacity(raw.len());
        for f in python_frames(&proc.layout, &raw) {
            if let Some(&(batch, id)) = proc.resolved.get(&(f.code, f.instr)) {
                if batch == proc.batch {
                    stack.push(id);
                    continue;
                }
            }
            let before = proc.symbols.counters.unknown;
            let location = proc.symbols.locate(&reader, f.code, f.instr);
            self.counters.frames_unknown += proc.symbols.counters.unknown - before;
            let id = match self.frame_ids.get(&location) {
                Some(&id) => id,
                None => {
                    let id = self.frames.len() as FrameId;
                    let source = self.sources.line(h.tgid, &location.file, location.line);
                    self.frames.push(ProfileFrame {
                        file: location.file.clone(),
                        line: location.line,
                        function: location.function.clone(),
                        first_line: location.first_line,
                        source,
                    });
                    self.frame_ids.insert(location, id);
                    id
                }
            };
            if proc.resolved.len() >= MAX_RESOLVED {
                proc.resolved.clear();
            }
            proc.resolved.insert((f.code, f.instr), (proc.batch, id));
            stack.push(id);
        }
        let sample = Sample {
            tid: h.tid,
            ts_ns: h.ts_ns,
            weight_ns: self.period_ns,
            stack,
            truncated: h.fd & FLAG_TRUNCATED != 0,
            off_cpu: h.fd & FLAG_OFF_CPU != 0,
        };
        if sample.off_cpu {
            self.attributor.switched_out(sample);
        } else {
            self.attributor.push(sample);
        }
    }

    /// Whether the request `tid` now serves needs its stacks (its endpoint's level is 2 or more); samples
    /// of a thread that does not are dropped before symbolisation.
    pub fn set_stacks_wanted(&mut self, tid: u32, wanted: bool) {
        if wanted {
            self.quiet.remove(&tid);
        } else {
            self.quiet.insert(tid);
        }
    }

    /// A `WAKE` record: the thread's pending off-CPU stack gets its weight.
    pub fn on_wake(&mut self, h: &EventHeader) {
        self.attributor.wake(h.tid, h.len);
    }

    /// The samples of each finished request in `batch` (those that have any).
    pub fn take_profiles(&mut self, batch: &[Request]) -> Vec<ProfileRecord> {
        let mut out = Vec::new();
        for r in batch {
            if let Some(proc) = self.procs.get_mut(&r.worker_pid) {
                if !proc.tids.contains(&r.tid) {
                    // A thread started since the last refresh (gthread): sample it from now on.
                    proc.refreshed = Instant::now() - REFRESH;
                }
            }
            let Some(p) = self.attributor.attribute(r) else {
                continue;
            };
            let gc_ns = self
                .procs
                .get(&r.worker_pid)
                .is_some_and(|p| p.gc)
                .then_some(p.gc_ns);
            self.counters.profiled_requests += 1;
            let frames = &self.frames;
            let resolve = |id: &FrameId| {
                frames.get(*id as usize).cloned().unwrap_or_else(|| {
                    let u = Location::unknown();
                    ProfileFrame {
                        file: u.file,
                        line: 0,
                        function: u.function,
                        first_line: 0,
                        source: None,
                    }
                })
            };
            out.push(ProfileRecord {
                worker_pid: p.worker_pid,
                tid: p.tid,
                ts_us: p.ts_us,
                duration_ns: p.duration_ns,
                path: p.path,
                endpoint: p.endpoint,
                gc_ns,
                stacks: p
                    .stacks
                    .into_iter()
                    .map(|s| ProfileStack {
                        // Stored outermost first, the order trees are built in.
                        frames: s.stack.iter().rev().map(resolve).collect(),
                        off_cpu: s.off_cpu,
                        truncated: s.truncated,
                        samples: s.samples,
                        weight_ns: s.weight_ns,
                    })
                    .collect(),
            });
        }
        out
    }

    pub fn expire(&mut self, now_monotonic_ns: u64) {
        self.attributor.expire(now_monotonic_ns);
    }

    /// (name, value) pairs for the run's counters.
    pub fn counter_values(&self) -> Vec<(&'static str, u64)> {
        let a = self.attributor.counters;
        vec![
            ("profile_samples", self.counters.samples),
            (
                "profile_samples_unknown_thread",
                self.counters.samples_unknown_thread,
            ),
            ("profile_frames_unknown", self.counters.frames_unknown),
            ("profile_requests", self.counters.profiled_requests),
            (
                "profile_samples_skipped_level",
                self.counters.samples_skipped_level,
            ),
            ("profile_samples_attributed", a.attributed),
            ("profile_samples_unattributed", a.unattributed),
            ("profile_off_cpu_lost", a.lost_off_cpu),
        ]
    }
}

fn refresh_threads(
    capture: &mut Capture,
    tables: &mut SamplerTables,
    pid: u32,
    proc: &mut Proc,
) -> Result<(), Error> {
    proc.refreshed = Instant::now();
    let threads = proc
        .interp
        .tid_map()
        .map_err(|source| Error::Python { pid, source })?;
    capture
        .set_tstates(tables, pid, &threads)
        .map_err(|source| Error::Capture { pid, source })?;
    proc.tids = threads.keys().copied().collect();
    Ok(())
}
