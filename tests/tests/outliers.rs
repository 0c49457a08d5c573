//! Monitoring levels and outliers end to end (issue 9): real gunicorn serving tests/apps/outliers_app.py,
//! the real daemon. Level 0 stores no request rows while the last-requested time moves, and level 3 gives
//! profiles from the next request; slow requests of /mixed (in a named helper) are outliers with their stack,
//! redacted secrets, values, CPU and memory, and fast ones are not; a request blocked for 15 s gets a live
//! outlier before it ends.

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    client::{Conn, Req},
    fixtures::{apps_dir, daemon_binary, GunicornOptions, TempDir},
    require_bpf, Daemon, Gunicorn, Venv,
};

const VENV: &str = "debian3.11";
const REDACTED: &str = "[redacted]";

/// Line numbers of the markers (`# name`) in tests/apps/outliers_app.py.
fn markers() -> HashMap<String, i64> {
    let text = std::fs::read_to_string(apps_dir().join("outliers_app.py")).expect("app");
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| Some((l.rsplit_once("  # ")?.1.trim().to_owned(), i as i64 + 1)))
        .collect()
}

fn start(name: &str, workers: u32) -> Option<(Gunicorn, Daemon, TempDir)> {
    if !require_bpf() {
        return None;
    }
    let venv = Venv::get(VENV)?;
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "outliers_app:app",
            workers,
            ..GunicornOptions::default()
        },
    );
    let dir = TempDir::new(name);
    let daemon = Daemon::start(app.pid(), &dir.0);
    Some((app, daemon, dir))
}

fn send(addr: &str, req: &Req) -> u16 {
    let mut conn = Conn::tcp(addr).expect("connect");
    conn.send(&req.clone().closing()).expect("request").status
}

/// Polls `check` every 200 ms until it gives a value, or panics after `timeout` with `what`.
fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn endpoint(daemon: &Daemon, name: &str) -> Option<Value> {
    daemon
        .query("endpoints", &[])
        .into_iter()
        .find(|e| e["endpoint"] == name)
}

/// The daemon's local credential (`<db>.token`), when it writes one.
fn bearer(db: &Path) -> Option<String> {
    let mut path = db.as_os_str().to_owned();
    path.push(".token");
    std::fs::read_to_string(path)
        .ok()
        .map(|t| format!("Bearer {}", t.trim()))
}

fn has_profile(db: &Path, id: i64) -> bool {
    Command::new(daemon_binary())
        .args([
            "query",
            "profile",
            "--format",
            "json",
            "--request",
            &id.to_string(),
            "--db",
        ])
        .arg(db)
        .output()
        .expect("run query profile")
        .status
        .success()
}

#[test]
fn level_zero_stores_no_rows_and_level_three_profiles_at_once() {
    let Some((app, daemon, _dir)) = start("levels", 1) else {
        return;
    };
    assert_eq!(send(&app.addr, &Req::get("/quiet")), 200);
    // The worker's route table is read at its first request; its endpoints get the default level, 3.
    wait_for(
        Duration::from_secs(15),
        "quiet at level 3 with one hit",
        || endpoint(&daemon, "quiet").filter(|e| e["monitor_level"] == 3 && e["hits"] == 1),
    );
    let stored = daemon.query("requests", &["--endpoint", "quiet"]);
    let last_stored = stored.last().expect("one request")["ts"]
        .as_str()
        .expect("ts")
        .to_owned();

    // Level 0 through the CLI, which talks to the running daemon.
    let out = Command::new(daemon_binary())
        .args(["level", "set", "quiet", "0", "--db"])
        .arg(&daemon.db)
        .output()
        .expect("run level set");
    assert!(
        out.status.success(),
        "level set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..20 {
        assert_eq!(send(&app.addr, &Req::get("/quiet")), 200);
    }
    let row = wait_for(
        Duration::from_secs(10),
        "the last-requested time to move",
        || {
            endpoint(&daemon, "quiet").filter(|e| {
                e["last_requested"]
                    .as_str()
                    .is_some_and(|t| t > last_stored.as_str())
            })
        },
    );
    assert_eq!(row["monitor_level"], 0);
    assert_eq!(row["hits"], 1, "level-0 requests are not stored: {row}");
    assert_eq!(
        daemon.query("requests", &["--endpoint", "quiet"]).len(),
        stored.len()
    );
    // The count is stored every half second: all 20 soon.
    wait_for(
        Duration::from_secs(10),
        "20 requests counted at level 0",
        || {
            let out = Command::new(daemon_binary())
                .args(["level", "get", "quiet", "--db"])
                .arg(&daemon.db)
                .output()
                .expect("run level get");
            String::from_utf8_lossy(&out.stdout)
                .contains("level 0 (20 requests counted")
                .then_some(())
        },
    );

    // Level 3 through the API: the very next requests are profiled.
    let mut put = Req::post("/api/endpoints/quiet/level", br#"{"level":3}"#)
        .header("Content-Type", "application/json");
    put.method = "PUT".into();
    if let Some(b) = bearer(&daemon.db) {
        put = put.header("Authorization", &b);
    }
    let answer = Conn::tcp(&daemon.listen)
        .expect("connect to the API")
        .send(&put.closing())
        .expect("PUT level");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let switched = Instant::now();
    for _ in 0..5 {
        assert_eq!(send(&app.addr, &Req::get("/quiet")), 200);
    }
    assert!(
        switched.elapsed() < Duration::from_secs(1),
        "the requests after the switch took over a second"
    );
    let after = wait_for(Duration::from_secs(10), "the 5 new requests", || {
        let rows = daemon.query("requests", &["--endpoint", "quiet"]);
        (rows.len() == stored.len() + 5).then_some(rows)
    });
    for row in &after[stored.len()..] {
        let id = row["id"].as_i64().expect("id");
        wait_for(Duration::from_secs(10), "a profile of each", || {
            has_profile(&daemon.db, id).then_some(())
        });
    }
    assert_eq!(
        endpoint(&daemon, "quiet").expect("quiet")["monitor_level"],
        3
    );
}

/// The outliers of `endpoint` (finished or live).
fn outliers(daemon: &Daemon, endpoint: &str) -> Vec<Value> {
    daemon.query("outliers", &["--endpoint", endpoint])
}

#[test]
fn slow_requests_are_outliers_with_their_context() {
    let Some((app, daemon, _dir)) = start("outliers", 1) else {
        return;
    };
    let marks = markers();
    for n in 0..100 {
        let body = format!(r#"{{"user":"ann","password":"pw","n":{n}}}"#);
        let req = Req::post(&format!("/mixed?n={n}&q=hello&token=abc"), body.as_bytes())
            .header("Content-Type", "application/json")
            .header("Authorization", "Bearer s3cret")
            .header("X-Api-Key", "k3y");
        assert_eq!(send(&app.addr, &req), 200);
    }
    let slow: BTreeSet<i64> = (0..100).filter(|n| n % 20 == 19).collect();
    let found = wait_for(
        Duration::from_secs(15),
        "the slow requests' outliers",
        || {
            let got: Vec<Value> = outliers(&daemon, "mixed")
                .into_iter()
                .filter(|o| o["live"] == false)
                .collect();
            // Request rows are written within a second, the outliers on their own: wait for both.
            (got.len() >= slow.len() && got.iter().all(|o| o["request_id"].is_i64())).then_some(got)
        },
    );
    let ns: BTreeSet<i64> = found
        .iter()
        .map(|o| {
            o["request_values"]["json"]["n"]
                .as_i64()
                .expect("n in the JSON body")
        })
        .collect();
    assert_eq!(ns, slow, "exactly the slow requests are outliers");
    // The cores /proc/stat lists (`cpu0`, `cpu1`, ...).
    let cores = std::fs::read_to_string("/proc/stat")
        .expect("/proc/stat")
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    for o in &found {
        let n = o["request_values"]["json"]["n"].as_i64().unwrap_or(-1);
        let ctx = format!("outlier n={n}: {o}");
        assert!(o["request_id"].is_i64(), "{ctx}");
        let (duration, threshold) = (
            o["duration_ms"].as_f64().expect("duration"),
            o["threshold_ms"].as_f64().expect("threshold"),
        );
        assert!(
            duration >= 200.0 && duration > threshold && threshold > 0.0,
            "{ctx}"
        );
        // The stack starts at the view and names the helper's line.
        let stack = o["stack"].as_array().expect("stack");
        assert_eq!(
            stack.first().map(|f| &f["function"]),
            Some(&Value::from("mixed")),
            "{ctx}"
        );
        assert!(
            stack.iter().any(|f| f["function"] == "slow_helper"
                && f["line"] == marks["slow-helper-sleep"]
                && f["file"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("outliers_app.py"))
                && f["code"]
                    .as_str()
                    .is_some_and(|c| c.contains("time.sleep(0.2)"))),
            "{ctx}"
        );
        // Secrets redacted; the rest kept.
        let headers = &o["headers"];
        assert_eq!(headers["Authorization"], REDACTED, "{ctx}");
        assert_eq!(headers["X-Api-Key"], REDACTED, "{ctx}");
        assert_eq!(headers["Content-Type"], "application/json", "{ctx}");
        let values = &o["request_values"];
        assert_eq!(values["query"]["q"], "hello", "{ctx}");
        assert_eq!(values["query"]["token"], REDACTED, "{ctx}");
        assert_eq!(values["json"]["user"], "ann", "{ctx}");
        assert_eq!(values["json"]["password"], REDACTED, "{ctx}");
        let env = &o["environ"];
        assert_eq!(env["REQUEST_METHOD"], "POST", "{ctx}");
        assert_eq!(env["PATH_INFO"], "/mixed", "{ctx}");
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1", "{ctx}");
        assert_eq!(env["SERVER_NAME"], "fmd-test", "{ctx}");
        assert_eq!(env["CONTENT_TYPE"], "application/json", "{ctx}");
        assert_eq!(env["HTTP_AUTHORIZATION"], REDACTED, "{ctx}");
        assert!(
            env["QUERY_STRING"]
                .as_str()
                .is_some_and(|q| q.contains("token=[redacted]") && !q.contains("abc")),
            "{ctx}"
        );
        // The machine at that moment.
        let cpu = o["cpu_percent"].as_array().expect("cpu_percent");
        assert_eq!(cpu.len(), cores, "{ctx}");
        assert!(
            cpu.iter()
                .all(|p| p.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p))),
            "{ctx}"
        );
        assert!(
            o["worker_rss_bytes"].as_u64().is_some_and(|b| b > 1 << 20),
            "{ctx}"
        );
        assert!(
            o["machine_memory_used_bytes"]
                .as_u64()
                .is_some_and(|b| b > 1 << 20),
            "{ctx}"
        );
    }
    // The API answers the same filter, most recent first when limited.
    let mut conn = Conn::tcp(&daemon.listen).expect("connect to the API");
    let mut get = Req::get("/api/outliers?endpoint=mixed&limit=2");
    if let Some(b) = bearer(&daemon.db) {
        get = get.header("Authorization", &b);
    }
    let answer = conn.send(&get.closing()).expect("GET /api/outliers");
    assert_eq!(answer.status, 200);
    let listed: Vec<Value> = serde_json::from_slice(&answer.body).expect("JSON array");
    assert_eq!(listed.len(), 2);
}

#[test]
fn a_hanging_request_has_a_live_outlier_before_it_ends() {
    let Some((app, daemon, _dir)) = start("live", 1) else {
        return;
    };
    let marks = markers();
    // An average to measure against.
    for _ in 0..15 {
        assert_eq!(send(&app.addr, &Req::get("/block?secs=0")), 200);
    }
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let client = {
        let (addr, done) = (app.addr.clone(), Arc::clone(&done));
        thread::spawn(move || {
            let status = send(&addr, &Req::get("/block?secs=15"));
            done.store(true, Ordering::SeqCst);
            status
        })
    };
    let live = wait_for(Duration::from_secs(14), "a live outlier", || {
        outliers(&daemon, "block")
            .into_iter()
            .find(|o| o["live"] == true)
    });
    assert!(
        !done.load(Ordering::SeqCst),
        "the live outlier must be stored while the request runs"
    );
    let ctx = format!("{live}");
    assert!(started.elapsed() < Duration::from_secs(15), "{ctx}");
    assert!(live["request_id"].is_null(), "not stored yet: {ctx}");
    assert!(
        live["duration_ms"].as_f64().expect("duration")
            > live["threshold_ms"].as_f64().expect("threshold"),
        "{ctx}"
    );
    let stack = live["stack"].as_array().expect("stack");
    assert!(
        stack
            .iter()
            .any(|f| f["function"] == "block" && f["line"] == marks["block-sleep"]),
        "{ctx}"
    );
    assert_eq!(client.join().expect("client"), 200);
    // Once finished it is an outlier too, now with its stored request.
    // Its request row is written within a second, after the outlier: wait for both.
    let finished = wait_for(Duration::from_secs(10), "the finished outlier", || {
        outliers(&daemon, "block")
            .into_iter()
            // The blocked one: a fast warm-up request can be an outlier of its own.
            .find(|o| {
                o["live"] == false
                    && o["request_id"].is_i64()
                    && o["request_values"]["query"]["secs"] != "0"
            })
    });
    assert!(
        finished["duration_ms"]
            .as_f64()
            .is_some_and(|d| d >= 15_000.0),
        "{finished}"
    );
}
