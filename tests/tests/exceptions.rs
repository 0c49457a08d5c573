//! Exceptions end to end (issue 9): real gunicorn workers run views that raise; Flask logs each traceback
//! (its default handler to gunicorn's error log on stderr, or the app's own log file) and fmd-daemon,
//! attached from outside, must record each on its request with type, message and the helper's file and
//! line, group them (50 KeyErrors from one place are one group of 50, a ValueError another), keep
//! chained exceptions, and show the source around the frames; with sync and gthread workers.

use std::{
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    client::{Conn, Req},
    fixtures::{apps_dir, GunicornOptions, TempDir},
    require_bpf, Daemon, Gunicorn, Venv,
};

const BOOMS: usize = 50;
const BADS: usize = 10;
const OKS: usize = 20;

/// The line of `# raises` in the app: where the KeyError is raised.
fn raise_line() -> u64 {
    let text = std::fs::read_to_string(apps_dir().join("exceptions_app.py")).expect("app source");
    text.lines()
        .position(|l| l.trim_end().ends_with("# raises"))
        .expect("a `# raises` marker") as u64
        + 1
}

/// Sends the traffic from `clients` threads, one connection per request; returns nothing but panics on a
/// wrong status.
fn send(addr: &str, clients: usize) {
    let mut plan: Vec<(&str, u16)> = Vec::new();
    plan.extend(std::iter::repeat_n(("/boom", 500), BOOMS));
    plan.extend(std::iter::repeat_n(("/bad", 500), BADS));
    plan.extend(std::iter::repeat_n(("/ok", 200), OKS));
    plan.push(("/chained", 500));
    thread::scope(|s| {
        for part in plan.chunks(plan.len().div_ceil(clients)) {
            s.spawn(move || {
                for (path, status) in part {
                    let mut conn = Conn::tcp(addr).expect("connect");
                    let answer = conn.send(&Req::get(path).closing()).expect("request");
                    assert_eq!(answer.status, *status, "GET {path}");
                }
            });
        }
    });
}

/// Polls `query exceptions` until the counts add up (the writer flushes every second).
fn groups(daemon: &Daemon) -> Vec<Value> {
    let want = (BOOMS + BADS + 1) as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = daemon.query("exceptions", &[]);
        let total: u64 = rows.iter().filter_map(|r| r["count"].as_u64()).sum();
        if total >= want || Instant::now() > deadline {
            return rows;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

fn run(label: &str, worker_class: &str, log_to_file: bool) {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get(label) else { return };
    let name = format!(
        "exc-{label}-{worker_class}-{}",
        if log_to_file { "file" } else { "stderr" }
    );
    let dir = TempDir::new(&name);
    let log_file = dir.0.join("app.log");
    let env = format!("FMD_TEST_LOG_FILE={}", log_file.display());
    let extra: &[&str] = if log_to_file { &["--env", &env] } else { &[] };
    let threads = if worker_class == "gthread" { 4 } else { 1 };
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "exceptions_app:app",
            worker_class,
            threads,
            extra,
            ..Default::default()
        },
    );
    // Without the profiler: exception capture must not depend on it (nor wait for its programs to load).
    let mut daemon =
        Daemon::start_with(app.pid(), &dir.0.join("fmd.duckdb"), &["--sample-hz", "0"]);
    send(&app.addr, 4);
    let rows = groups(&daemon);
    let line = raise_line();

    // 50 KeyErrors raised in one place: one group of 50, on the view's endpoint.
    let key_errors: Vec<&Value> = rows.iter().filter(|r| r["type"] == "KeyError").collect();
    let summary: Vec<String> = rows
        .iter()
        .map(|r| {
            let frames: Vec<String> = r["frames"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{}:{}", f["function"], f["line"]))
                .collect();
            format!(
                "{} {} {} {} {frames:?}",
                r["group"], r["type"], r["endpoint"], r["count"]
            )
        })
        .collect();
    assert_eq!(key_errors.len(), 1, "one KeyError group: {summary:#?}");
    let ke = key_errors[0];
    assert_eq!(
        (
            ke["count"].as_u64(),
            ke["endpoint"].as_str(),
            ke["message"].as_str()
        ),
        (Some(BOOMS as u64), Some("boom"), Some("'missing'")),
        "{ke:#}"
    );
    let frames = ke["frames"].as_array().expect("frames");
    let helper = frames.last().expect("the innermost frame");
    assert_eq!(helper["function"], "lookup", "{helper:#}");
    assert!(
        helper["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("tests/apps/exceptions_app.py")),
        "{helper:#}"
    );
    assert_eq!(helper["line"].as_u64(), Some(line), "{helper:#}");
    assert_eq!(helper["code"], "return table[\"missing\"]  # raises");
    // The source around it, read from the app's file.
    let context = helper["context"].as_array().expect("context");
    assert!(
        context.iter().any(|l| l["line"].as_u64() == Some(line)
            && l["code"].as_str().is_some_and(|c| c.contains("# raises"))),
        "{context:#?}"
    );
    assert!(
        frames.iter().any(|f| f["function"] == "boom"),
        "the view is on the stack"
    );

    // Another type from another place: its own group.
    let bad = rows
        .iter()
        .find(|r| r["type"] == "ValueError")
        .expect("the ValueError group");
    assert_eq!(
        (bad["count"].as_u64(), bad["endpoint"].as_str()),
        (Some(BADS as u64), Some("bad"))
    );
    assert_ne!(bad["group"], ke["group"]);

    // `raise ... from`: the chain keeps the KeyError that caused it.
    let chained = rows
        .iter()
        .find(|r| r["type"] == "RuntimeError")
        .expect("the chained group");
    assert_eq!(chained["message"], "lookup failed");
    assert_eq!(chained["chain"][0]["type"], "KeyError", "{chained:#}");
    assert_eq!(chained["chain"][0]["relation"], "cause", "{chained:#}");
    assert_eq!(rows.len(), 3, "{rows:#?}");

    // Requests carry the group they raised; the others none.
    let requests = daemon.query("requests", &[]);
    let count = |path: &str, group: &Value| {
        requests
            .iter()
            .filter(|r| r["path"] == path && r["exception"] == *group)
            .count()
    };
    assert_eq!(count("/boom", &ke["group"]), BOOMS);
    assert_eq!(count("/bad", &bad["group"]), BADS);
    assert_eq!(count("/ok", &Value::Null), OKS);

    // One group through the daemon's API, with its latest requests.
    let group = ke["group"].as_str().expect("group id");
    let detail = daemon.query("exceptions", &["--group", group]);
    assert_eq!(detail.len(), 1);
    assert_eq!(detail[0]["count"].as_u64(), Some(BOOMS as u64));
    let ids = detail[0]["requests"].as_array().expect("requests");
    assert!(!ids.is_empty());
    for id in ids {
        let row = requests
            .iter()
            .find(|r| r["id"] == *id)
            .expect("a stored request");
        assert_eq!(
            (row["path"].as_str(), row["status"].as_u64()),
            (Some("/boom"), Some(500))
        );
    }

    daemon.stop();
    // The same after the daemon stopped (from the file).
    let after = tests::fixtures::query(&daemon.db, "exceptions", &["--endpoint", "boom"]);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["count"].as_u64(), Some(BOOMS as u64));
    if log_to_file {
        let text = std::fs::read_to_string(&log_file).expect("the app's log file");
        assert_eq!(
            text.matches("KeyError: 'missing'").count(),
            BOOMS + 1,
            "the app logged to its file"
        );
    }
}

#[test]
fn exceptions_sync_stderr() {
    run("py3.13", "sync", false);
}

#[test]
fn exceptions_gthread_stderr() {
    run("debian3.11", "gthread", false);
}

#[test]
fn exceptions_sync_log_file() {
    run("py3.8", "sync", true);
}

#[test]
fn exceptions_gthread_log_file() {
    run("py3.12", "gthread", true);
}
