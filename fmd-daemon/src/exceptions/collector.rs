//! The daemon's side of exception capture: reassembles each thread's log writes (a write may come as
//! several records, a traceback may span several writes), runs the recogniser per thread and descriptor,
//! and when the request a thread served comes out of the assembler, gives it the tracebacks logged while
//! it was served, grouped and with source context.

use std::{collections::HashMap, sync::Arc};

use fmd_common::http::{EventHeader, MAX_DATA, MAX_LOG_CHUNKS};

use super::{
    fingerprint::fingerprint,
    source::SourceFiles,
    traceback::{Exception, Recogniser, Traceback},
    Detail, DetailException, DetailFrame, Logged,
};
use crate::request::Request;

/// Tracebacks kept per thread while waiting for its request (a thread logging without serving).
const MAX_FOUND_PER_THREAD: usize = 64;
/// Threads with log state before the oldest are dropped (workers come and go).
const MAX_THREADS: usize = 16_384;
/// Details (group + lines) kept before the cache is emptied.
const MAX_DETAILS: usize = 4_096;
/// A thread's state is dropped when it logged nothing for this long (its request never came).
const IDLE_NS: u64 = 60_000_000_000;
/// Timestamps of requests are microseconds: a write in the request's last microsecond is still its own.
const SLACK_NS: u64 = 1_000;

/// What exception capture counted, for the run's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Log records received (pieces of writes by serving threads to log descriptors).
    pub log_records: u64,
    /// Tracebacks recognised and tied to their request.
    pub recognised: u64,
    /// Tracebacks cut before their exception line (lost or truncated copies, interleaved output).
    pub incomplete: u64,
    /// Tracebacks logged outside any request fmd saw on that thread.
    pub outside_requests: u64,
    /// Bytes of log writes that were not copied (longer than the copy bound, or lost on the way).
    pub bytes_lost: u64,
    /// Source files that could not be read for a frame's context.
    pub source_unreadable: u64,
}

#[derive(Default)]
struct Stream {
    recogniser: Recogniser,
    /// Offset the next record of the current write starts at; `None` between writes.
    expect: Option<u64>,
    /// Bytes of the current write not received yet.
    missing: u64,
}

#[derive(Default)]
struct Thread {
    streams: Vec<(i32, Stream)>,
    /// Tracebacks completed on this thread: (time of the write that ended it, descriptor, traceback).
    found: Vec<(u64, i32, Traceback)>,
    last_ns: u64,
}

/// A group and the `(file, line)` of every frame of one of its tracebacks: same key, same detail.
type DetailKey = (String, Vec<(String, u32)>);

pub struct Collector {
    clock_offset_ns: i64,
    threads: HashMap<(u32, u32), Thread>,
    sources: SourceFiles,
    details: HashMap<DetailKey, Arc<str>>,
    counters: Counters,
}

impl Collector {
    /// `clock_offset_ns` must be the one the assembler turns monotonic times into `Request::ts_us` with.
    pub fn new(clock_offset_ns: i64) -> Self {
        Self {
            clock_offset_ns,
            threads: HashMap::new(),
            sources: SourceFiles::default(),
            details: HashMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            source_unreadable: self.sources.unreadable,
            ..self.counters
        }
    }

    /// A [`fmd_common::http::kind::LOG`] record: a piece of a write, at offset `header.conn_ts`.
    pub fn on_log(&mut self, header: &EventHeader, payload: &[u8]) {
        self.counters.log_records += 1;
        if self.threads.len() >= MAX_THREADS
            && !self.threads.contains_key(&(header.tgid, header.tid))
        {
            // Far more threads than workers have: whatever they buffered is lost, and counted.
            for t in self.threads.values() {
                self.counters.outside_requests += t.found.len() as u64;
            }
            self.threads.clear();
        }
        let thread = self.threads.entry((header.tgid, header.tid)).or_default();
        thread.last_ns = header.ts_ns;
        let stream = match thread.streams.iter().position(|(fd, _)| *fd == header.fd) {
            Some(i) => &mut thread.streams[i].1,
            None => {
                thread.streams.push((header.fd, Stream::default()));
                &mut thread.streams.last_mut().expect("just pushed").1
            }
        };
        let offset = header.conn_ts;
        let total = header.len;
        match stream.expect {
            // The first record of a write, as expected.
            None if offset == 0 => {}
            Some(expect) if expect == offset => {}
            // A record of the previous write, or its start, was lost on the way.
            _ => {
                self.counters.bytes_lost += stream.missing.max(1);
                stream.recogniser.gap();
            }
        }
        if offset == 0 && stream.expect.is_some() {
            // The previous write's tail never came.
            stream.expect = None;
        }
        stream.recogniser.set_time(header.ts_ns);
        stream.recogniser.feed(payload);
        let end = offset + payload.len() as u64;
        let last_record = end >= total
            || payload.len() < MAX_DATA
            || offset >= ((MAX_LOG_CHUNKS - 1) * MAX_DATA) as u64;
        if last_record {
            if end < total {
                // Longer than the copy bound (counted by BPF too) or a short first iovec.
                self.counters.bytes_lost += total - end;
                stream.recogniser.end_of_write();
                stream.recogniser.gap();
            } else {
                stream.recogniser.end_of_write();
            }
            stream.expect = None;
            stream.missing = 0;
        } else {
            stream.expect = Some(end);
            stream.missing = total - end;
        }
        collect(thread, header.fd, &mut self.counters);
    }

    /// Gives `req` the exceptions its thread logged while serving it (the last is the one it raised).
    pub fn on_request(&mut self, req: &mut Request) {
        let key = (req.worker_pid, req.tid);
        let Some(thread) = self.threads.get_mut(&key) else {
            return;
        };
        let start_ns = (req.ts_us.saturating_mul(1_000)).saturating_sub(self.clock_offset_ns);
        let start_ns = u64::try_from(start_ns).unwrap_or(0);
        let end_ns = start_ns.saturating_add(req.duration_ns);
        // The request is over: what its thread was writing during it is complete. (Records of its next
        // request may have been read already: a traceback started after this one ended is left alone.)
        for (fd, stream) in &mut thread.streams {
            if stream
                .recogniser
                .in_progress_since()
                .is_some_and(|t| t > end_ns.saturating_add(SLACK_NS))
            {
                continue;
            }
            let done = stream.recogniser.finish();
            self.counters.incomplete += std::mem::take(&mut stream.recogniser.counters.incomplete);
            stream.recogniser.counters.long_lines = 0;
            thread
                .found
                .extend(done.into_iter().map(|tb| (tb.ts_ns, *fd, tb)));
        }
        let mut mine = Vec::new();
        let mut later = Vec::new();
        for (ts, fd, tb) in thread.found.drain(..) {
            if ts > end_ns.saturating_add(SLACK_NS) {
                later.push((ts, fd, tb));
            } else if ts.saturating_add(SLACK_NS) < start_ns {
                self.counters.outside_requests += 1;
            } else {
                mine.push((fd, tb));
            }
        }
        thread.found = later;
        if thread.found.is_empty() && thread.streams.iter().all(|(_, s)| s.recogniser.is_idle()) {
            self.threads.remove(&key);
        }
        let mine = dedupe_across_descriptors(mine);
        let n = mine.len();
        for (i, tb) in mine.into_iter().enumerate() {
            let Some(raised) = tb.raised() else {
                continue;
            };
            let group = fingerprint(&tb);
            let logged = Logged {
                type_name: raised.type_name.clone(),
                message: raised.message.clone(),
                detail: self.detail(req.worker_pid, &group, &tb),
                group,
                raised: i + 1 == n,
            };
            self.counters.recognised += 1;
            req.exceptions.push(logged);
        }
    }

    /// Drops the state of threads that logged nothing since `now_ns - IDLE_NS` (monotonic).
    pub fn expire(&mut self, now_ns: u64) {
        let before = now_ns.saturating_sub(IDLE_NS);
        let counters = &mut self.counters;
        self.threads.retain(|_, t| {
            let keep = t.last_ns >= before;
            if !keep {
                counters.outside_requests += t.found.len() as u64;
            }
            keep
        });
    }

    /// Forgets an exited worker's threads.
    pub fn forget(&mut self, pid: u32) {
        let counters = &mut self.counters;
        self.threads.retain(|&(tgid, _), t| {
            if tgid == pid {
                counters.outside_requests += t.found.len() as u64;
            }
            tgid != pid
        });
    }

    /// The group's detail with source context, read once per group and frame lines.
    fn detail(&mut self, pid: u32, group: &str, tb: &Traceback) -> Arc<str> {
        let lines: Vec<(String, u32)> = tb
            .chain
            .iter()
            .flat_map(|e| e.frames.iter().map(|f| (f.file.clone(), f.line)))
            .collect();
        let key = (group.to_owned(), lines);
        if let Some(d) = self.details.get(&key) {
            return Arc::clone(d);
        }
        let frames = |e: &Exception, sources: &mut SourceFiles| -> Vec<DetailFrame> {
            e.frames
                .iter()
                .map(|f| DetailFrame {
                    file: f.file.clone(),
                    line: f.line,
                    function: f.function.clone(),
                    code: f.code.clone(),
                    context: sources.around(pid, &f.file, f.line),
                })
                .collect()
        };
        let n = tb.chain.len();
        let detail = Detail {
            frames: tb
                .raised()
                .map(|e| frames(e, &mut self.sources))
                .unwrap_or_default(),
            chain: tb.chain[..n.saturating_sub(1)]
                .iter()
                .enumerate()
                .map(|(i, e)| DetailException {
                    type_name: e.type_name.clone(),
                    message: e.message.clone(),
                    relation: tb.chain.get(i + 1).and_then(|next| next.relation),
                    frames: frames(e, &mut self.sources),
                })
                .collect(),
        };
        let json: Arc<str> = serde_json::to_string(&detail)
            .unwrap_or_else(|_| "{}".to_owned())
            .into();
        if self.details.len() >= MAX_DETAILS {
            self.details.clear();
        }
        self.details.insert(key, Arc::clone(&json));
        json
    }
}

/// Moves the tracebacks the recogniser of `fd` completed into the thread's list (bounded).
fn collect(thread: &mut Thread, fd: i32, counters: &mut Counters) {
    let Some((_, stream)) = thread.streams.iter_mut().find(|(f, _)| *f == fd) else {
        return;
    };
    counters.incomplete += std::mem::take(&mut stream.recogniser.counters.incomplete);
    for tb in stream.recogniser.take() {
        if thread.found.len() >= MAX_FOUND_PER_THREAD {
            counters.outside_requests += 1;
            thread.found.remove(0);
        }
        thread.found.push((tb.ts_ns, fd, tb));
    }
}

/// The same traceback logged to two descriptors (stderr and a file) is one exception: per distinct
/// traceback, keep as many as the descriptor that logged it most often, in the order first seen.
fn dedupe_across_descriptors(found: Vec<(i32, Traceback)>) -> Vec<Traceback> {
    // (traceback, times per descriptor, most times on one descriptor)
    let mut seen: Vec<(Traceback, HashMap<i32, usize>, usize)> = Vec::new();
    let mut out = Vec::new();
    for (fd, tb) in found {
        let i = match seen.iter().position(|(t, _, _)| t.chain == tb.chain) {
            Some(i) => i,
            None => {
                seen.push((tb.clone(), HashMap::new(), 0));
                seen.len() - 1
            }
        };
        let (_, per_fd, most) = &mut seen[i];
        let n = per_fd.entry(fd).or_default();
        *n += 1;
        if *n > *most {
            *most = *n;
            out.push(tb);
        }
    }
    out
}

#[cfg(test)]
mod tests;
