//! Log records as BPF sends them (pieces of writes, some lost) against requests of the same threads.

use fmd_common::http::kind;

use super::*;

const PID: u32 = 4242;
const TID: u32 = 4243;

fn tb_text(file: &str, kind: &str) -> String {
    format!(
        "[2026-12-01 10:00:00,000] ERROR in app: Exception on /boom [GET]\n\
         Traceback (most recent call last):\n  File \"{file}\", line 3, in view\n    return helper()\n\
         \x20 File \"{file}\", line 7, in helper\n    return d['missing']\n           ~^^^^^^^^^^^\n\
         {kind}: 'missing'\n"
    )
}

/// Sends `text` as one write of `tid` on `fd` at `ts_ns`, in records of at most `MAX_DATA` bytes,
/// skipping the records whose index is in `lose`.
fn write(c: &mut Collector, tid: u32, fd: i32, ts_ns: u64, text: &[u8], lose: &[usize]) {
    for (i, piece) in text.chunks(MAX_DATA).take(MAX_LOG_CHUNKS).enumerate() {
        if lose.contains(&i) {
            continue;
        }
        let header = EventHeader {
            kind: kind::LOG,
            tgid: PID,
            tid,
            fd,
            ts_ns,
            conn_ts: (i * MAX_DATA) as u64,
            len: text.len() as u64,
            copied: piece.len() as u32,
            _pad: 0,
        };
        c.on_log(&header, piece);
    }
}

/// A request of `tid` from `start_ns` to `end_ns` (monotonic; the clock offset is 0).
fn request(c: &mut Collector, tid: u32, start_ns: u64, end_ns: u64) -> Request {
    let mut req = Request {
        ts_us: (start_ns / 1_000) as i64,
        duration_ns: end_ns - start_ns,
        worker_pid: PID,
        tid,
        ..Request::default()
    };
    c.on_request(&mut req);
    req
}

fn summary(req: &Request) -> Vec<(String, String, bool)> {
    req.exceptions
        .iter()
        .map(|e| (e.type_name.clone(), e.message.clone(), e.raised))
        .collect()
}

#[test]
fn a_traceback_written_while_serving_is_the_requests() {
    let mut c = Collector::new(0);
    write(
        &mut c,
        TID,
        2,
        1_500_000,
        tb_text("/app/app.py", "KeyError").as_bytes(),
        &[],
    );
    let req = request(&mut c, TID, 1_000_000, 2_000_000);
    assert_eq!(
        summary(&req),
        [("KeyError".into(), "'missing'".into(), true)]
    );
    let detail: Detail = serde_json::from_str(&req.exceptions[0].detail).expect("detail json");
    assert_eq!(
        detail
            .frames
            .iter()
            .map(|f| (f.function.as_str(), f.line))
            .collect::<Vec<_>>(),
        [("view", 3), ("helper", 7)]
    );
    assert_eq!(
        detail.frames[1].code.as_deref(),
        Some("return d['missing']")
    );
    assert_eq!(c.counters().recognised, 1);
    // Its thread's state is gone with it.
    assert!(c.threads.is_empty());
}

#[test]
fn other_threads_and_other_times_are_not_the_requests() {
    let mut c = Collector::new(0);
    // Before the request (a gthread pool thread logging between requests).
    write(
        &mut c,
        TID,
        2,
        500_000,
        tb_text("/app/app.py", "KeyError").as_bytes(),
        &[],
    );
    // Another thread, during the request.
    write(
        &mut c,
        TID + 1,
        2,
        1_500_000,
        tb_text("/app/app.py", "ValueError").as_bytes(),
        &[],
    );
    let req = request(&mut c, TID, 1_000_000, 2_000_000);
    assert!(req.exceptions.is_empty());
    assert_eq!(c.counters().outside_requests, 1);
    let other = request(&mut c, TID + 1, 1_000_000, 2_000_000);
    assert_eq!(summary(&other)[0].0, "ValueError");
}

#[test]
fn a_write_in_several_records_is_reassembled() {
    let mut c = Collector::new(0);
    // Deep enough to need three records.
    let mut text = String::from("Traceback (most recent call last):\n");
    for i in 0..200 {
        text.push_str(&format!(
            "  File \"/app/deep.py\", line {i}, in level{i}\n    level{}()\n",
            i + 1
        ));
    }
    text.push_str("RecursionError: too deep\n");
    assert!(text.len() > 2 * MAX_DATA);
    write(&mut c, TID, 2, 1_500_000, text.as_bytes(), &[]);
    let req = request(&mut c, TID, 1_000_000, 2_000_000);
    assert_eq!(
        summary(&req),
        [("RecursionError".into(), "too deep".into(), true)]
    );
    let detail: Detail = serde_json::from_str(&req.exceptions[0].detail).expect("json");
    assert_eq!(detail.frames.len(), 200);
    assert_eq!(c.counters().bytes_lost, 0);
}

#[test]
fn a_lost_record_drops_that_traceback_and_is_counted() {
    let mut c = Collector::new(0);
    let mut text = String::from("Traceback (most recent call last):\n");
    for i in 0..200 {
        text.push_str(&format!(
            "  File \"/app/deep.py\", line {i}, in level{i}\n    level{}()\n",
            i + 1
        ));
    }
    text.push_str("RecursionError: too deep\n");
    write(&mut c, TID, 2, 1_500_000, text.as_bytes(), &[1]);
    // The next traceback of the same request is still found.
    write(
        &mut c,
        TID,
        2,
        1_600_000,
        tb_text("/app/app.py", "KeyError").as_bytes(),
        &[],
    );
    let req = request(&mut c, TID, 1_000_000, 2_000_000);
    assert_eq!(
        summary(&req),
        [("KeyError".into(), "'missing'".into(), true)]
    );
    let counters = c.counters();
    assert!(counters.bytes_lost > 0, "{counters:?}");
    assert_eq!(counters.incomplete, 1, "{counters:?}");
}

#[test]
fn the_next_requests_records_read_first_do_not_move_a_traceback() {
    // The daemon drains a batch of records, then attributes the requests that came out of it: by then the
    // thread may already have served (and logged for) its next request.
    let mut c = Collector::new(0);
    write(
        &mut c,
        TID,
        2,
        1_500_000,
        tb_text("/app/app.py", "KeyError").as_bytes(),
        &[],
    );
    write(
        &mut c,
        TID,
        2,
        2_500_000,
        tb_text("/app/app.py", "ValueError").as_bytes(),
        &[],
    );
    // And the start of a third one, still in progress.
    write(
        &mut c,
        TID,
        2,
        3_500_000,
        b"Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\n",
        &[],
    );
    let first = request(&mut c, TID, 1_000_000, 2_000_000);
    let second = request(&mut c, TID, 2_000_000, 3_000_000);
    write(&mut c, TID, 2, 3_600_000, b"    f()\nTypeError: t\n", &[]);
    let third = request(&mut c, TID, 3_000_000, 4_000_000);
    assert_eq!(
        summary(&first),
        [("KeyError".into(), "'missing'".into(), true)]
    );
    assert_eq!(
        summary(&second),
        [("ValueError".into(), "'missing'".into(), true)]
    );
    assert_eq!(summary(&third), [("TypeError".into(), "t".into(), true)]);
    assert_eq!(c.counters().incomplete, 0);
}

#[test]
fn a_traceback_over_several_writes_is_one() {
    // Python 3.8's block-buffered stderr, or a buffer smaller than the record: the record is cut anywhere.
    let mut c = Collector::new(0);
    let text = tb_text("/app/app.py", "KeyError");
    let (a, b) = text.split_at(text.len() / 2);
    write(&mut c, TID, 2, 1_500_000, a.as_bytes(), &[]);
    write(&mut c, TID, 2, 1_500_100, b.as_bytes(), &[]);
    let req = request(&mut c, TID, 1_000_000, 2_000_000);
    assert_eq!(
        summary(&req),
        [("KeyError".into(), "'missing'".into(), true)]
    );
}

#[test]
fn the_same_traceback_on_stderr_and_in_a_file_counts_once() {
    let mut c = Collector::new(0);
    let text = tb_text("/app/app.py", "KeyError");
    write(&mut c, TID, 2, 1_400_000, text.as_bytes(), &[]);
    write(&mut c, TID, 7, 1_400_100, text.as_bytes(), &[]);
    let req = request(&mut c, TID, 1_000_000, 2_000_000);
    assert_eq!(req.exceptions.len(), 1);
}

#[test]
fn the_last_traceback_is_the_one_raised() {
    let mut c = Collector::new(0);
    // A handled exception logged with logger.exception, then the one that propagated.
    write(
        &mut c,
        TID,
        2,
        1_300_000,
        tb_text("/app/app.py", "ValueError").as_bytes(),
        &[],
    );
    write(
        &mut c,
        TID,
        2,
        1_400_000,
        tb_text("/app/app.py", "KeyError").as_bytes(),
        &[],
    );
    let req = request(&mut c, TID, 1_000_000, 2_000_000);
    assert_eq!(
        summary(&req),
        [
            ("ValueError".into(), "'missing'".into(), false),
            ("KeyError".into(), "'missing'".into(), true)
        ]
    );
    assert_ne!(req.exceptions[0].group, req.exceptions[1].group);
}

#[test]
fn groups_are_stable_and_frames_carry_the_source_around_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("app.py");
    let source: String = (1..=12).map(|n| format!("source line {n}\n")).collect();
    std::fs::write(&file, source).expect("write");
    let file = file.to_str().expect("utf-8");
    // The source is read through /proc/PID/root: use our own pid.
    let mut c = Collector::new(0);
    let pid = std::process::id();
    let mut groups = Vec::new();
    for i in 0..3u64 {
        let header = EventHeader {
            kind: kind::LOG,
            tgid: pid,
            tid: TID,
            fd: 2,
            ts_ns: 1_000_000 * (i + 1) + 500,
            conn_ts: 0,
            len: tb_text(file, "KeyError").len() as u64,
            copied: 0,
            _pad: 0,
        };
        c.on_log(&header, tb_text(file, "KeyError").as_bytes());
        let mut req = Request {
            ts_us: (1_000 * (i + 1)) as i64,
            duration_ns: 1_000,
            worker_pid: pid,
            tid: TID,
            ..Request::default()
        };
        c.on_request(&mut req);
        groups.push(req.exceptions[0].group.clone());
        let detail: Detail = serde_json::from_str(&req.exceptions[0].detail).expect("json");
        let helper = &detail.frames[1];
        assert_eq!(helper.context.first().map(|l| l.line), Some(2));
        assert_eq!(
            helper
                .context
                .iter()
                .find(|l| l.line == 7)
                .map(|l| l.code.as_str()),
            Some("source line 7")
        );
    }
    assert!(groups.iter().all(|g| *g == groups[0]));
    assert_eq!(c.details.len(), 1);
}
