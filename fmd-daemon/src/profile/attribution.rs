//! Which request a sample belongs to: the one its thread was serving when the sample was taken (same tid,
//! time inside the request's start..end). Requests are only known once they complete, so samples wait
//! here per thread, for a bounded time and count.

use std::collections::{HashMap, VecDeque};

use crate::request::Request;

/// A symbolised frame, interned by the daemon.
pub type FrameId = u32;

/// Samples older than this (monotonic) are dropped unattributed: no request runs that long unnoticed.
const MAX_AGE_NS: u64 = 120_000_000_000;
/// Samples waiting per thread, at most (a thread busy outside requests must not grow memory).
const MAX_PER_TID: usize = 50_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub tid: u32,
    /// Monotonic ns: when the CPU sample was taken, or when the thread was switched out.
    pub ts_ns: u64,
    /// The sampling period (CPU), or how long the thread stayed off CPU.
    pub weight_ns: u64,
    /// Innermost frame first.
    pub stack: Vec<FrameId>,
    pub truncated: bool,
    pub off_cpu: bool,
}

/// One stack's share of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSamples {
    /// Innermost frame first.
    pub stack: Vec<FrameId>,
    pub off_cpu: bool,
    pub truncated: bool,
    pub samples: u32,
    pub weight_ns: u64,
}

/// The samples of one finished request, keyed like its `requests` row (worker, thread, start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfiledRequest {
    pub worker_pid: u32,
    pub tid: u32,
    pub ts_us: i64,
    pub duration_ns: u64,
    pub path: String,
    pub endpoint: Option<String>,
    pub stacks: Vec<StackSamples>,
    /// Garbage collection inside the request (from the USDT probes; 0 where the interpreter has none).
    pub gc_ns: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttributionCounters {
    pub attributed: u64,
    /// Samples no request claimed (idle workers, work outside requests) once they aged out.
    pub unattributed: u64,
    /// Off-CPU stacks whose wake-up never came (lost record or thread exit).
    pub lost_off_cpu: u64,
}

#[derive(Debug)]
pub struct Attributor {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, as the assembler used for `Request::ts_us`.
    clock_offset_ns: i64,
    waiting: HashMap<u32, VecDeque<Sample>>,
    off_cpu: HashMap<u32, Sample>,
    /// `tid -> (start, length)` of garbage collections, monotonic ns.
    gc: HashMap<u32, VecDeque<(u64, u64)>>,
    pub counters: AttributionCounters,
}

impl Attributor {
    pub fn new(clock_offset_ns: i64) -> Self {
        Self {
            clock_offset_ns,
            waiting: HashMap::new(),
            off_cpu: HashMap::new(),
            gc: HashMap::new(),
            counters: AttributionCounters::default(),
        }
    }

    /// A CPU sample, or an off-CPU one whose weight is already known.
    pub fn push(&mut self, sample: Sample) {
        let q = self.waiting.entry(sample.tid).or_default();
        if q.len() >= MAX_PER_TID {
            q.pop_front();
            self.counters.unattributed += 1;
        }
        q.push_back(sample);
    }

    /// A stack taken as its thread left the CPU; it waits for [`Self::wake`].
    pub fn switched_out(&mut self, sample: Sample) {
        if self.off_cpu.insert(sample.tid, sample).is_some() {
            self.counters.lost_off_cpu += 1;
        }
    }

    /// The thread runs again after `off_ns`: its off-CPU stack gets that weight.
    pub fn wake(&mut self, tid: u32, off_ns: u64) {
        if let Some(mut s) = self.off_cpu.remove(&tid) {
            s.weight_ns = off_ns;
            self.push(s);
        }
    }

    /// A garbage collection of `length_ns` that ended at `end_ns` on `tid`.
    pub fn gc(&mut self, tid: u32, end_ns: u64, length_ns: u64) {
        let q = self.gc.entry(tid).or_default();
        if q.len() >= MAX_PER_TID {
            q.pop_front();
        }
        q.push_back((end_ns.saturating_sub(length_ns), length_ns));
    }

    /// Takes the samples of a finished request; `None` when it has none.
    pub fn attribute(&mut self, r: &Request) -> Option<ProfiledRequest> {
        let start = (r.ts_us as i128 * 1000 - i128::from(self.clock_offset_ns)).max(0) as u64;
        let end = start.saturating_add(r.duration_ns);
        let mut gc_ns = 0;
        if let Some(q) = self.gc.get_mut(&r.tid) {
            for &(a, len) in q.iter() {
                gc_ns += (a + len).min(end).saturating_sub(a.max(start));
            }
            q.retain(|&(a, len)| a + len > end);
        }
        let q = self.waiting.get_mut(&r.tid)?;
        let mut stacks: HashMap<(Vec<FrameId>, bool), StackSamples> = HashMap::new();
        for s in q.iter() {
            let weight = if s.off_cpu {
                let (a, b) = (
                    s.ts_ns.max(start),
                    s.ts_ns.saturating_add(s.weight_ns).min(end),
                );
                b.saturating_sub(a)
            } else if (start..=end).contains(&s.ts_ns) {
                s.weight_ns
            } else {
                0
            };
            if weight == 0 {
                continue;
            }
            self.counters.attributed += 1;
            let e = stacks
                .entry((s.stack.clone(), s.off_cpu))
                .or_insert_with(|| StackSamples {
                    stack: s.stack.clone(),
                    off_cpu: s.off_cpu,
                    truncated: s.truncated,
                    samples: 0,
                    weight_ns: 0,
                });
            e.samples += 1;
            e.weight_ns += weight;
        }
        // What ended before this request ended can belong to no later request of this thread.
        q.retain(|s| s.ts_ns.saturating_add(s.weight_ns) > end);
        if stacks.is_empty() {
            return None;
        }
        let mut stacks: Vec<StackSamples> = stacks.into_values().collect();
        stacks.sort_by(|a, b| {
            b.weight_ns
                .cmp(&a.weight_ns)
                .then_with(|| a.stack.cmp(&b.stack))
        });
        Some(ProfiledRequest {
            worker_pid: r.worker_pid,
            tid: r.tid,
            ts_us: r.ts_us,
            duration_ns: r.duration_ns,
            path: r.path.clone(),
            endpoint: r.endpoint.clone(),
            stacks,
            gc_ns,
        })
    }

    /// Drops what waited too long (monotonic `now_ns`).
    pub fn expire(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(MAX_AGE_NS);
        let mut dropped = 0;
        self.waiting.retain(|_, q| {
            let before = q.len();
            q.retain(|s| s.ts_ns.saturating_add(s.weight_ns) >= cutoff);
            dropped += (before - q.len()) as u64;
            !q.is_empty()
        });
        self.counters.unattributed += dropped;
        self.gc.retain(|_, q| {
            q.retain(|&(a, len)| a.saturating_add(len) >= cutoff);
            !q.is_empty()
        });
        let before = self.off_cpu.len();
        self.off_cpu.retain(|_, s| s.ts_ns >= cutoff);
        self.counters.lost_off_cpu += (before - self.off_cpu.len()) as u64;
    }

    /// Forgets a thread (its process exited).
    pub fn forget_tids(&mut self, tids: impl IntoIterator<Item = u32>) {
        for tid in tids {
            self.waiting.remove(&tid);
            self.gc.remove(&tid);
            self.off_cpu.remove(&tid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFSET: i64 = 1_000_000_000_000;

    fn cpu(tid: u32, ts_ns: u64, stack: &[FrameId]) -> Sample {
        Sample {
            tid,
            ts_ns,
            weight_ns: 10_000_000,
            stack: stack.to_vec(),
            truncated: false,
            off_cpu: false,
        }
    }

    fn request(tid: u32, start_ns: u64, duration_ns: u64) -> Request {
        Request {
            ts_us: ((start_ns as i64) + OFFSET) / 1000,
            duration_ns,
            worker_pid: 7,
            tid,
            path: "/x".into(),
            ..Request::default()
        }
    }

    /// Feeds `events` (in order), then attributes `req`; expects (stack, off_cpu, samples, weight ms).
    fn check(events: Vec<Event>, req: Request, expect: &[(&[FrameId], bool, u32, u64)]) {
        let mut a = Attributor::new(OFFSET);
        for e in events {
            match e {
                Event::Cpu(s) => a.push(s),
                Event::Out(s) => a.switched_out(s),
                Event::Wake(tid, ns) => a.wake(tid, ns),
            }
        }
        let got = a.attribute(&req).map(|p| {
            p.stacks
                .iter()
                .map(|s| {
                    (
                        s.stack.clone(),
                        s.off_cpu,
                        s.samples,
                        s.weight_ns / 1_000_000,
                    )
                })
                .collect::<Vec<_>>()
        });
        let want: Vec<_> = expect
            .iter()
            .map(|(s, o, n, w)| (s.to_vec(), *o, *n, *w))
            .collect();
        if want.is_empty() {
            assert_eq!(got, None);
        } else {
            assert_eq!(got, Some(want));
        }
    }

    enum Event {
        Cpu(Sample),
        Out(Sample),
        Wake(u32, u64),
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn samples_go_to_the_request_of_their_thread_and_time() {
        // Inside, on both edges, outside before and after, and another thread.
        check(
            vec![
                Event::Cpu(cpu(1, 999 * MS, &[9])),
                Event::Cpu(cpu(1, 1000 * MS, &[1, 2])),
                Event::Cpu(cpu(1, 1050 * MS, &[1, 2])),
                Event::Cpu(cpu(2, 1050 * MS, &[5])),
                Event::Cpu(cpu(1, 1100 * MS, &[3, 2])),
                Event::Cpu(cpu(1, 1101 * MS, &[9])),
            ],
            request(1, 1000 * MS, 100 * MS),
            &[(&[1, 2], false, 2, 20), (&[3, 2], false, 1, 10)],
        );
        check(
            vec![Event::Cpu(cpu(2, 1050 * MS, &[5]))],
            request(1, 1000 * MS, 100 * MS),
            &[],
        );
    }

    #[test]
    fn off_cpu_time_is_clipped_to_the_request() {
        let out = |ts| Sample {
            off_cpu: true,
            weight_ns: 0,
            ..cpu(1, ts, &[4, 2])
        };
        check(
            vec![
                // Waiting for the request before it started: only the part inside counts.
                Event::Out(out(900 * MS)),
                Event::Wake(1, 110 * MS),
                Event::Out(out(1040 * MS)),
                Event::Wake(1, 30 * MS),
                // Never woke: no weight.
                Event::Out(out(1090 * MS)),
            ],
            request(1, 1000 * MS, 100 * MS),
            &[(&[4, 2], true, 2, 40)],
        );
    }

    #[test]
    fn gc_time_is_clipped_to_the_request() {
        // (end, length) in ms of collections on thread 1, and the GC ms request 1000..1100 must get.
        for (gcs, want) in [
            (vec![(1010, 5), (1050, 10)], 15),
            (vec![(1005, 10)], 5),
            (vec![(1105, 10)], 5),
            (vec![(990, 5), (1200, 5)], 0),
        ] {
            let mut a = Attributor::new(OFFSET);
            a.push(cpu(1, 1050 * MS, &[1]));
            for (end, len) in gcs {
                a.gc(1, end * MS, len * MS);
            }
            a.gc(2, 1050 * MS, 7 * MS);
            let p = a
                .attribute(&request(1, 1000 * MS, 100 * MS))
                .expect("profile");
            assert_eq!(p.gc_ns / MS, want);
        }
    }
}
