//! Level 3 end to end: real gunicorn workers run a view whose time is split between cpu_a() (CPU),
//! wait_b() (sleep) and cpu_c() (CPU) while fmd-daemon samples them; the grouped profile's shares must
//! match what the app measured, names, files and lines must be exact, the on-CPU mode must not see the
//! sleep, and a 300-deep recursion must be reported truncated (issue 4).

use std::{collections::HashMap, sync::mpsc, thread, time::Duration};

use serde_json::Value;
use tests::{
    client::{Conn, Req},
    fixtures::{apps_dir, GunicornOptions, TempDir},
    require_bpf, Daemon, Gunicorn, Venv,
};

const REQUESTS: usize = 200;
/// Largest allowed gap between a measured and a profiled share, in percentage points.
const TOLERANCE_PP: f64 = 5.0;

/// Line numbers of the markers (`# name`) in tests/apps/profiled.py, and the file's lines.
fn markers() -> (HashMap<String, i64>, Vec<String>) {
    let text = std::fs::read_to_string(apps_dir().join("profiled.py")).expect("profiled.py");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let marks = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((l.rsplit_once("  # ")?.1.trim().to_owned(), i as i64 + 1)))
        .collect();
    (marks, lines)
}

/// Sends `n` GET /work from `clients` threads; returns the summed (a, b, c) seconds the app measured.
fn send_work(addr: &str, n: usize, clients: usize) -> (f64, f64, f64) {
    let (tx, rx) = mpsc::channel();
    let per = n / clients;
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let tx = tx.clone();
            let addr = addr.to_owned();
            thread::spawn(move || {
                for _ in 0..per {
                    let mut conn = Conn::tcp(&addr).expect("connect");
                    let answer = conn.send(&Req::get("/work").closing()).expect("GET /work");
                    assert_eq!(answer.status, 200);
                    let v: Value = serde_json::from_slice(&answer.body).expect("JSON body");
                    tx.send((
                        v["a"].as_f64().unwrap_or(0.0),
                        v["b"].as_f64().unwrap_or(0.0),
                        v["c"].as_f64().unwrap_or(0.0),
                    ))
                    .expect("send");
                }
            })
        })
        .collect();
    drop(tx);
    let mut sum = (0.0, 0.0, 0.0);
    for (a, b, c) in rx {
        sum.0 += a;
        sum.1 += b;
        sum.2 += c;
    }
    for h in handles {
        h.join().expect("client thread");
    }
    sum
}

/// The grouped profile of /work: its total ms per (function, line) and the frame facts.
struct Grouped {
    requests: u64,
    /// (function, line) -> (total ms, file, source)
    lines: HashMap<(String, i64), (f64, String, String)>,
}

fn grouped(daemon: &Daemon, extra: &[&str]) -> Grouped {
    let mut args = vec!["--path", "/work", "--limit", "1000"];
    args.extend_from_slice(extra);
    let rows = daemon.query("grouped-profile", &args);
    let g = rows.first().expect("one JSON object");
    let frames: HashMap<i64, &Value> = g["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| (f["id"].as_i64().expect("id"), f))
        .collect();
    let mut lines = HashMap::new();
    for l in g["lines"].as_array().expect("lines") {
        let f = frames[&l["frame"].as_i64().expect("frame")];
        lines.insert(
            (
                f["function"].as_str().expect("function").to_owned(),
                f["line"].as_i64().expect("line"),
            ),
            (
                l["total_ms"].as_f64().expect("total"),
                f["file"].as_str().expect("file").to_owned(),
                f["source"].as_str().unwrap_or_default().to_owned(),
            ),
        );
    }
    Grouped {
        requests: g["requests"].as_u64().expect("requests"),
        lines,
    }
}

fn run(label: &str, worker_class: &str, mode: &str) {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get(label) else { return };
    let (marks, source) = markers();
    let file = apps_dir().join("profiled.py");
    let file = file.to_str().expect("UTF-8 path");
    let threads = if worker_class == "gthread" { 2 } else { 1 };
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "profiled:app",
            workers: 2,
            worker_class,
            threads,
            ..GunicornOptions::default()
        },
    );
    let dir = TempDir::new(&format!("profiler-{label}-{worker_class}-{mode}"));
    let mut daemon = Daemon::start_with(
        app.pid(),
        &dir.0.join("fmd.duckdb"),
        &["--profile-mode", mode],
    );
    // gthread: two client threads per worker thread pair, so requests interleave on the workers' threads.
    let clients = if worker_class == "gthread" { 4 } else { 2 };
    let (a, b, c) = send_work(&app.addr, REQUESTS, clients);
    let mut conn = Conn::tcp(&app.addr).expect("connect");
    assert_eq!(
        conn.send(&Req::get("/deep").closing())
            .expect("GET /deep")
            .status,
        200
    );
    thread::sleep(Duration::from_secs(2));

    let g = grouped(&daemon, &[]);
    let ctx = format!("{label} {worker_class} {mode}");
    assert!(
        g.requests as usize >= REQUESTS * 9 / 10,
        "{ctx}: only {} of {REQUESTS} requests profiled",
        g.requests
    );
    let at = |function: &str, marker: &str| -> (f64, String, String) {
        let line = marks[marker];
        g.lines
            .get(&(function.to_owned(), line))
            .cloned()
            .unwrap_or_else(|| {
                let mut known: Vec<_> = g.lines.keys().filter(|(_, l)| *l > 0).collect();
                known.sort();
                panic!("{ctx}: no {function} at line {line} ({marker}); have {known:?}")
            })
    };
    // Names, files, lines and source text are exact: the view's three call lines and the callees' lines.
    for (function, marker) in [
        ("work", "view-a"),
        ("cpu_a", "cpu_a-call"),
        ("cpu_c", "cpu_c-call"),
        ("spin", "spin-loop"),
    ] {
        let (_, f, text) = at(function, marker);
        assert_eq!(f, file, "{ctx}: {function}");
        assert_eq!(
            text.trim(),
            source[marks[marker] as usize - 1].trim(),
            "{ctx}: source of {function}"
        );
    }
    let (ta, _, _) = at("work", "view-a");
    let (tc, _, _) = at("work", "view-c");
    let tb = g
        .lines
        .get(&("work".to_owned(), marks["view-b"]))
        .map_or(0.0, |l| l.0);
    let sum = ta + tb + tc;
    let measured = a + b + c;
    let shares = [ta / sum, tb / sum, tc / sum].map(|s| s * 100.0);
    let truth = [a / measured, b / measured, c / measured].map(|s| s * 100.0);
    eprintln!(
        "{ctx}: profiled shares {shares:.1?} (of {sum:.0} ms), measured {truth:.1?} (of {:.0} ms)",
        measured * 1000.0
    );
    if mode == "wall" {
        let (wb, _, _) = at("wait_b", "wait_b-sleep");
        assert!(wb > 0.0, "{ctx}: no time in wait_b");
        for (i, name) in ["cpu_a", "wait_b", "cpu_c"].iter().enumerate() {
            assert!(
                (shares[i] - truth[i]).abs() <= TOLERANCE_PP,
                "{ctx}: {name} {:.1}% vs measured {:.1}%",
                shares[i],
                truth[i]
            );
        }
        // The profile accounts for the view's whole wall time.
        assert!(
            (sum / (measured * 1000.0) - 1.0).abs() < 0.1,
            "{ctx}: {sum:.0} ms profiled, {:.0} ms measured",
            measured * 1000.0
        );
    } else {
        assert!(
            shares[1] < 3.0,
            "{ctx}: wait_b has {:.1}% in CPU mode",
            shares[1]
        );
        let cpu_truth = [a / (a + c), c / (a + c)].map(|s| s * 100.0);
        let cpu_shares = [ta / (ta + tc), tc / (ta + tc)].map(|s| s * 100.0);
        for i in 0..2 {
            assert!(
                (cpu_shares[i] - cpu_truth[i]).abs() <= TOLERANCE_PP,
                "{ctx}: CPU shares {cpu_shares:?} vs {cpu_truth:?}"
            );
        }
    }

    check_trimmed(&daemon, &ctx);

    // The deep request: truncated, innermost frames exact.
    let deep = daemon.query("requests", &["--limit", "1000"]);
    let id = deep
        .iter()
        .rev()
        .find(|r| r["path"] == "/deep")
        .and_then(|r| r["id"].as_i64())
        .expect("the /deep request");
    let profile = daemon.query("profile", &["--request", &id.to_string()]);
    let profile = profile.first().expect("a profile of /deep");
    assert_eq!(
        profile["truncated"], true,
        "{ctx}: /deep not reported truncated"
    );
    let frames: HashMap<i64, &Value> = profile["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| (f["id"].as_i64().expect("id"), f))
        .collect();
    let seen: Vec<(String, i64)> = profile["tree"]
        .as_array()
        .expect("tree")
        .iter()
        .map(|n| {
            let f = frames[&n["frame"].as_i64().expect("frame")];
            (
                f["function"].as_str().expect("function").to_owned(),
                f["line"].as_i64().expect("line"),
            )
        })
        .collect();
    assert!(
        seen.contains(&("recurse".to_owned(), marks["deep-call"])),
        "{ctx}: {seen:?}"
    );
    // Truncated stacks start inside the recursion: the view is not among their frames.
    assert!(
        seen.contains(&("recurse".to_owned(), marks["deep-bottom"]))
            || seen.contains(&("spin".to_owned(), marks["spin-loop"]))
    );

    // GC time: measured where the interpreter has the USDT probes (Debian's python3.11), else unavailable.
    assert_eq!(conn_get(&app.addr, "/gc"), 200);
    thread::sleep(Duration::from_secs(2));
    let rows = daemon.query("requests", &["--limit", "1000"]);
    let id = rows
        .iter()
        .rev()
        .find(|r| r["path"] == "/gc")
        .and_then(|r| r["id"].as_i64())
        .expect("the /gc request");
    let profile = daemon.query("profile", &["--request", &id.to_string()]);
    let gc_ms = &profile.first().expect("a profile of /gc")["gc_ms"];
    if label == "debian3.11" {
        assert!(
            gc_ms.as_f64().is_some_and(|ms| ms > 0.0),
            "{ctx}: no GC time: {gc_ms}"
        );
    } else {
        assert!(gc_ms.is_null(), "{ctx}: GC time without probes: {gc_ms}");
    }
    daemon.stop();
}

/// The grouped tree of /work as (depth, function, file, share) rows.
fn tree_rows(daemon: &Daemon, extra: &[&str]) -> Vec<(u64, String, String, f64)> {
    let mut args = vec!["--path", "/work", "--limit", "1000"];
    args.extend_from_slice(extra);
    let rows = daemon.query("grouped-profile", &args);
    let g = rows.first().expect("one JSON object");
    let frames: HashMap<i64, &Value> = g["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| (f["id"].as_i64().expect("id"), f))
        .collect();
    g["tree"]
        .as_array()
        .expect("tree")
        .iter()
        .map(|n| {
            let f = frames[&n["frame"].as_i64().expect("frame")];
            (
                n["depth"].as_u64().expect("depth"),
                f["function"].as_str().expect("function").to_owned(),
                f["file"].as_str().expect("file").to_owned(),
                n["share"].as_f64().expect("share"),
            )
        })
        .collect()
}

/// Profiles start at the app's WSGI entry under one folded server node; `--full-stack` shows gunicorn's
/// frames; no share passes 100%.
fn check_trimmed(daemon: &Daemon, ctx: &str) {
    let view_depth = |rows: &[(u64, String, String, f64)]| {
        rows.iter()
            .find(|r| r.1.rsplit('.').next() == Some("work"))
            .map(|r| r.0)
            .unwrap_or_else(|| panic!("{ctx}: no view in {rows:?}"))
    };
    let trimmed = tree_rows(daemon, &[]);
    let roots: Vec<_> = trimmed.iter().filter(|r| r.0 == 0).collect();
    assert_eq!(roots.len(), 1, "{ctx}: one root: {roots:?}");
    assert_eq!(roots[0].1, "[server]", "{ctx}: {roots:?}");
    let entry = trimmed.iter().find(|r| r.0 == 1).expect("the app's entry");
    assert!(
        entry.2.ends_with("flask/app.py") && entry.1.ends_with("__call__"),
        "{ctx}: the app starts at Flask.__call__, not {entry:?}"
    );
    // gunicorn frames remain only below the app (its start_response, called by the app).
    assert!(
        !trimmed
            .iter()
            // (A `<module>` deeper down is a module the app imported lazily while serving.)
            .any(|r| r.0 <= 1 && (r.1 == "<module>" || r.2.contains("/gunicorn/"))),
        "{ctx}: server frames above the app left: {trimmed:?}"
    );
    let full = tree_rows(daemon, &["--full-stack"]);
    // The worker loop (gunicorn/workers/) is only ever above the app.
    assert!(
        full.iter().any(|r| r.2.contains("/gunicorn/workers/"))
            && !full.iter().any(|r| r.1 == "[server]"),
        "{ctx}: --full-stack shows gunicorn's frames"
    );
    assert!(
        view_depth(&trimmed) + 5 < view_depth(&full),
        "{ctx}: the view at depth {} trimmed, {} in full",
        view_depth(&trimmed),
        view_depth(&full)
    );
    for rows in [&trimmed, &full] {
        assert!(
            rows.iter().all(|r| r.3 <= 1.0 + 1e-9),
            "{ctx}: a share over 100%"
        );
        let root_sum: f64 = rows.iter().filter(|r| r.0 == 0).map(|r| r.3).sum();
        assert!(root_sum <= 1.0 + 1e-9, "{ctx}: roots add up to {root_sum}");
    }
}

fn conn_get(addr: &str, target: &str) -> u16 {
    Conn::tcp(addr)
        .expect("connect")
        .send(&Req::get(target).closing())
        .expect("GET")
        .status
}

macro_rules! matrix {
    ($($name:ident: $label:expr, $class:expr, $mode:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run($label, $class, $mode);
            }
        )*
    };
}

matrix! {
    wall_sync_debian311: "debian3.11", "sync", "wall";
    wall_gthread_debian311: "debian3.11", "gthread", "wall";
    cpu_sync_debian311: "debian3.11", "sync", "cpu";
    wall_sync_py38: "py3.8", "sync", "wall";
    wall_gthread_py38: "py3.8", "gthread", "wall";
    cpu_sync_py38: "py3.8", "sync", "cpu";
    wall_sync_py39: "py3.9", "sync", "wall";
    wall_gthread_py39: "py3.9", "gthread", "wall";
    cpu_sync_py39: "py3.9", "sync", "cpu";
    wall_sync_py310: "py3.10", "sync", "wall";
    wall_gthread_py310: "py3.10", "gthread", "wall";
    cpu_sync_py310: "py3.10", "sync", "cpu";
    wall_sync_py311: "py3.11", "sync", "wall";
    wall_gthread_py311: "py3.11", "gthread", "wall";
    cpu_sync_py311: "py3.11", "sync", "cpu";
    wall_sync_py312: "py3.12", "sync", "wall";
    wall_gthread_py312: "py3.12", "gthread", "wall";
    cpu_sync_py312: "py3.12", "sync", "cpu";
    wall_sync_py313: "py3.13", "sync", "wall";
    wall_gthread_py313: "py3.13", "gthread", "wall";
    cpu_sync_py313: "py3.13", "sync", "cpu";
}
