//! The dashboard end to end (issue 10): real gunicorn workers serve the demo app, fmd-daemon captures
//! and profiles them into a real store and serves the embedded dashboard under `--base-path /fmd`; then
//! web/tests/e2e.mjs drives Debian's headless Chromium through every view and checks what each chart
//! drew against what this harness sent. Screenshots land in target/web-screenshots/.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use tests::{
    client::{Conn, Req},
    fixtures::{workspace, GunicornOptions, TempDir},
    require_bpf, Daemon, Gunicorn, Venv,
};

const BASE: &str = "/fmd";
const USER: &str = "e2e-admin";
const PASSWORD: &str = "e2e-password-0123";

/// What the harness sent: (path, endpoint it should be attributed to, how many times).
const TRAFFIC: &[(&str, Option<&str>, usize)] = &[
    ("/", Some("index"), 10),
    ("/api/users", Some("api.list_users"), 20),
    ("/api/users/7", Some("api.get_user"), 30),
    ("/reports/daily", Some("report"), 30),
    ("/compute/3000", Some("compute"), 20),
    ("/flaky", Some("flaky"), 40),
    ("/no/such/page", None, 5),
];

/// One sent request: when (µs since the epoch), its endpoint and the status it got.
struct Sent {
    at_us: i64,
    endpoint: Option<&'static str>,
    status: u16,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Sends [`TRAFFIC`] from 3 client threads (so the slow reports overlap) and returns every request.
fn send_traffic(addr: &str) -> Vec<Sent> {
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..3)
        .map(|client| {
            let tx = tx.clone();
            let addr = addr.to_owned();
            thread::spawn(move || {
                for &(path, endpoint, n) in TRAFFIC {
                    for i in 0..n {
                        if i % 3 != client {
                            continue;
                        }
                        let at_us = now_us();
                        let mut conn = Conn::tcp(&addr).expect("connect");
                        let answer = conn.send(&Req::get(path).closing()).expect("request");
                        tx.send(Sent {
                            at_us,
                            endpoint,
                            status: answer.status,
                        })
                        .expect("send");
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let sent: Vec<Sent> = rx.into_iter().collect();
    for h in handles {
        h.join().expect("client thread");
    }
    sent
}

/// GET `path` on the daemon's API (under the base path) as JSON, with the local credential.
fn api(daemon: &Daemon, path: &str) -> Value {
    let mut conn = Conn::tcp(&daemon.listen).expect("connect to the daemon");
    let answer = conn
        .send(
            &Req::get(&format!("{BASE}{path}"))
                .header("Authorization", &format!("Bearer {}", daemon.token()))
                .closing(),
        )
        .expect("API request");
    assert_eq!(
        answer.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    serde_json::from_slice(&answer.body).expect("JSON")
}

fn utc_day_hour(us: i64) -> (i64, i64) {
    let s = us.div_euclid(1_000_000);
    (s.div_euclid(86_400), s.rem_euclid(86_400) / 3_600)
}

/// Creates the harness's admin with `fmd-daemon user add` when this build has accounts (the auth work);
/// returns whether it did. The browser logs in with it when the dashboard asks.
fn create_user(db: &std::path::Path) -> bool {
    let daemon = tests::fixtures::daemon_binary();
    let has_users = Command::new(&daemon)
        .args(["user", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_users {
        return false;
    }
    let mut child = Command::new(&daemon)
        .args(["user", "add", USER, "--admin", "--db"])
        .arg(db)
        .stdin(Stdio::piped())
        .spawn()
        .expect("fmd-daemon user add");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{PASSWORD}").expect("password");
    }
    let status = child.wait().expect("user add");
    assert!(status.success(), "fmd-daemon user add failed: {status}");
    true
}

fn chromium() -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", "command -v chromium || command -v chromium-browser"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty());
    PathBuf::from(
        found.expect("chromium is not installed (cargo xtask setup installs Debian's chromium)"),
    )
}

#[test]
fn dashboard_in_a_real_browser() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let web =
        std::env::var_os("FMD_WEB_DIR").map_or_else(|| workspace().join("web"), PathBuf::from);
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "web/node_modules is missing: run through `cargo xtask test` (it runs npm ci)"
    );
    let dir = TempDir::new("web");
    let db = dir.0.join("fmd.duckdb");
    let logged_in = create_user(&db);
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "demo_app:app",
            workers: 2,
            ..Default::default()
        },
    );
    let daemon = Daemon::start_with(app.pid(), &db, &["--base-path", BASE, "--sample-hz", "200"]);

    let sent = send_traffic(&app.addr);
    assert_eq!(sent.len(), TRAFFIC.iter().map(|t| t.2).sum::<usize>());
    // Everything is stored (the writer flushes every second) before the browser looks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = api(&daemon, "/api/requests?since=1h&limit=1000");
        let n = stored.as_array().map_or(0, Vec::len);
        if n >= sent.len() {
            assert_eq!(n, sent.len(), "more requests stored than sent");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {} requests stored",
            sent.len()
        );
        thread::sleep(Duration::from_millis(250));
    }

    let endpoints = api(&daemon, "/api/endpoints");
    let listed = endpoints["endpoints"].as_array().expect("endpoints").len();
    let hit: BTreeSet<&str> = sent.iter().filter_map(|s| s.endpoint).collect();
    assert!(
        listed >= hit.len() + 2,
        "the route table lists the app's endpoints ({listed})"
    );
    let statuses = |endpoint: &str| -> usize {
        sent.iter()
            .filter(|s| s.endpoint == Some(endpoint))
            .map(|s| s.status / 100)
            .collect::<BTreeSet<_>>()
            .len()
    };
    let hour_cells: BTreeSet<(i64, i64)> = sent
        .iter()
        .filter(|s| s.endpoint.is_some())
        .map(|s| utc_day_hour(s.at_us))
        .collect();
    // The browser shows "now-1h": the UTC days that hour touches.
    let now = now_us();
    let days = if utc_day_hour(now - 3_600_000_000).0 == utc_day_hour(now).0 {
        1
    } else {
        2
    };
    let expect = json!({
        "from": "now-1h",
        "endpoints": listed,
        "endpoints_hit": hit.len(),
        "hour_cells": hour_cells.len(),
        "days": days,
        "requests": sent.len(),
        "profiled_endpoint": "report",
        "profiled_function": "report",
        "profiled_status_classes": statuses("report"),
        "flaky_endpoint": "flaky",
        "flaky_status_classes": statuses("flaky"),
    });
    let expect_file = dir.0.join("expect.json");
    std::fs::write(&expect_file, expect.to_string()).expect("write expectations");

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    let screenshots = target.join("web-screenshots");
    let mut node = Command::new("node");
    node.arg(web.join("tests/e2e.mjs"))
        .current_dir(&web)
        .env("FMD_URL", format!("http://{}{BASE}/", daemon.listen))
        .env("FMD_EXPECT", &expect_file)
        .env("FMD_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", chromium());
    if logged_in {
        node.env("FMD_USER", USER).env("FMD_PASSWORD", PASSWORD);
    }
    let status = node.status().expect("run node web/tests/e2e.mjs");
    assert!(
        status.success(),
        "browser checks failed (screenshots in {})",
        screenshots.display()
    );
    drop(daemon);
    drop(app);
}
