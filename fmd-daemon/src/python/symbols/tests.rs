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
    // The same again comes from the validated cache.
    let again: Vec<Location> = frames
        .iter()
        .map(|f| sym.locate(&reader, f.code, f.instr))
        .collect();
    assert_eq!(again, got);
    assert_eq!(sym.counters.stale, 0);
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
