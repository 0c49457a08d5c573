//! Live stack snapshots: the Python stack of a thread that is still serving a slow request, read from the
//! worker's memory (the same frame-chain walk the BPF sampler does, `python::stack`) and symbolised. Works
//! with the profiler off: each worker's interpreter is attached here on first use.

use std::collections::HashMap;

use fmd_common::profile::PyLayout;

use super::StackFrame;
use crate::python::{
    stack::{py_layout, python_frames, walk},
    symbols::Symbolizer,
    Interpreter,
};

struct Worker {
    interp: Interpreter,
    layout: PyLayout,
    symbols: Symbolizer,
}

/// Workers' interpreters, attached when a snapshot first needs them.
#[derive(Default)]
pub struct Snapshotter {
    workers: HashMap<u32, Option<Worker>>,
}

impl Snapshotter {
    /// Thread `tid` of worker `pid`: its frames now, outermost first; `None` when the worker's interpreter
    /// or the thread cannot be read (not Python, an unsupported version, the thread is gone).
    pub fn snapshot(&mut self, pid: u32, tid: u32) -> Option<Vec<StackFrame>> {
        let worker = self
            .workers
            .entry(pid)
            .or_insert_with(|| attach(pid))
            .as_mut()?;
        let tstate = *worker.interp.tid_map().ok()?.get(&tid)?;
        let (raw, _) = walk(&worker.interp.mem, &worker.layout, tstate);
        let reader = worker.interp.reader();
        let mut frames: Vec<StackFrame> = python_frames(&worker.layout, &raw)
            .map(|f| {
                let l = worker.symbols.locate(&reader, f.code, f.instr);
                let code = source_line(pid, &l.file, l.line);
                StackFrame {
                    function: l.function,
                    file: l.file,
                    line: l.line,
                    code,
                }
            })
            .collect();
        frames.reverse();
        Some(frames)
    }

    /// The worker exited (its pid may be reused by another process).
    pub fn forget(&mut self, pid: u32) {
        self.workers.remove(&pid);
    }
}

fn attach(pid: u32) -> Option<Worker> {
    match Interpreter::attach(pid) {
        Ok(interp) => {
            let layout = py_layout(&interp.layout)?;
            Some(Worker {
                interp,
                layout,
                symbols: Symbolizer::new(),
            })
        }
        Err(e) => {
            tracing::warn!(pid, error = %e, "no live stack snapshots of this worker");
            None
        }
    }
}

/// Line `line` of `file` as the worker sees it (through `/proc/PID/root`); snapshots are rare, so the file
/// is read each time.
fn source_line(pid: u32, file: &str, line: i32) -> Option<String> {
    if !file.starts_with('/') {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/root{file}")).ok()?;
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    text.lines().nth(index).map(|l| l.trim_end().to_owned())
}
