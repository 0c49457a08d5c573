//! Live: threads parked at known lines in every supported interpreter are walked the way BPF walks them
//! (`stack::walk`) and must symbolise to the exact functions, file and lines.

use std::{process::Command, time::Duration};

use super::{Location, Symbolizer};
use crate::python::{
    stack::{py_layout, python_frames, walk},
    testutil::{interpreters, spawn_json},
    Interpreter,
};

const SCRIPT: &str = include_str!("../testdata/stacks.py");

/// `inner` with the 8 bytes at `at` replaced by `value`.
struct Patched<'a, M> {
    inner: &'a M,
    at: u64,
    value: u64,
}

impl<M: crate::python::Memory> crate::python::Memory for Patched<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), crate::python::Error> {
        self.inner.read(addr, buf)?;
        let bytes = self.value.to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            if a >= self.at && a < self.at + 8 {
                *b = bytes[(a - self.at) as usize];
            }
        }
        Ok(())
    }
}

/// The innermost frames of the thread named `thread` must be `expect` (function, marker of the line).
fn check(
    label: &str,
    interp: &Interpreter,
    json: &serde_json::Value,
    thread: &str,
    expect: &[(&str, &str)],
    truncated: bool,
) {
    let tid = json["tids"][thread].as_u64().expect("tid") as u32;
    let file = json["file"].as_str().expect("file");
    let tstate = *interp
        .tid_map()
        .expect("tid map")
        .get(&tid)
        .unwrap_or_else(|| panic!("{label}: no tstate for {thread}"));
    let layout = py_layout(&interp.layout).expect("layout");
    let (raw, cut) = walk(&interp.mem, &layout, tstate);
    let frames: Vec<_> = python_frames(&layout, &raw).collect();
    assert_eq!(cut, truncated, "{label} {thread}: truncation");
    let mut sym = Symbolizer::new();
    let reader = interp.reader();
    let got: Vec<Location> = frames
        .iter()
        .map(|f| sym.locate(&reader, f.code, f.instr))
        .collect();
    for (i, (function, marker)) in expect.iter().enumerate() {
        let line = json["lines"][marker].as_i64().expect("line") as i32;
        let g = got
            .get(i)
            .unwrap_or_else(|| panic!("{label} {thread}: only {} frames", got.len()));
        assert_eq!(
            (g.function.as_str(), g.file.as_str(), g.line),
            (*function, file, line),
            "{label} {thread} frame {i}: {got:?}"
        );
    }
    assert_eq!(sym.counters.unknown, 0, "{label} {thread}");
    // The same again, in a new batch: every cached object is re-checked and still valid.
    sym.begin_batch();
    let again: Vec<Location> = frames
        .iter()
        .map(|f| sym.locate(&reader, f.code, f.instr))
        .collect();
    assert_eq!(again, got);
    assert_eq!(sym.counters.stale, 0);
    // A code object whose name pointer changed (freed, its address reused) is never shown from the cache.
    let first = frames.first().expect("a frame");
    let patched = Patched {
        inner: &interp.mem,
        at: first.code + interp.layout.code_name,
        value: 0x10,
    };
    let reader = crate::python::Reader::new(&patched, &interp.layout, &interp.types);
    sym.begin_batch();
    let relabelled = sym.locate(&reader, first.code, first.instr);
    assert_eq!(sym.counters.stale, 1, "{label}");
    if interp.layout.code_qualname.is_none() {
        // Before 3.11 the name is read through that pointer: now garbage, so unknown rather than wrong.
        assert_eq!(relabelled, Location::unknown(), "{label}");
    }
}

#[test]
fn walks_and_symbolises_every_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("stacks.py");
    std::fs::write(&script, SCRIPT).expect("write script");
    for (label, python) in interpreters() {
        let mut cmd = Command::new(&python);
        cmd.arg(&script);
        let spawned =
            spawn_json(cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{label}: {e:#}"));
        let interp =
            Interpreter::attach(spawned.pid()).unwrap_or_else(|e| panic!("{label}: attach: {e}"));
        let qualified = interp.version.minor >= 11;
        let middle = if qualified { "Outer.middle" } else { "middle" };
        check(
            &label,
            &interp,
            &spawned.json,
            "outer",
            &[
                ("inner", "inner-sleep"),
                (middle, "middle-call"),
                ("outer", "outer-call"),
            ],
            false,
        );
        let mut deep = vec![("recurse", "recurse-sleep")];
        deep.extend(std::iter::repeat_n(("recurse", "recurse-call"), 127));
        check(&label, &interp, &spawned.json, "deep", &deep, true);
    }
}
