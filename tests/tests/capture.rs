//! Level 1 end to end: real gunicorn workers serve mixed traffic while fmd-daemon is attached; the store
//! must then hold exactly one correct row per request (issue: capture every HTTP request).

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::TcpListener,
    process::Command,
    sync::mpsc,
    thread,
    time::Duration,
};

use serde_json::Value;
use tests::{
    client::{Answer, Conn, Req},
    fixtures::{GunicornOptions, TempDir},
    require_bpf, Daemon, Gunicorn, Venv,
};

/// What the client sent and saw for request number `i` (its `?i=` query parameter).
#[derive(Debug)]
struct Sent {
    method: &'static str,
    path: String,
    query: String,
    status: u16,
    latency_ms: f64,
}

/// Request `i` of the mixed workload.
fn mixed_request(i: usize) -> (Req, &'static str, String) {
    let q = format!("i={i}");
    match i % 20 {
        0 => (Req::get(&format!("/sleep?{q}")), "GET", "/sleep".into()),
        1 => (
            Req::post(&format!("/echo?{q}"), &vec![b'x'; (i * 37) % 9000 + 1]),
            "POST",
            "/echo".into(),
        ),
        2 => (
            Req::get(&format!("/redirect?{q}")),
            "GET",
            "/redirect".into(),
        ),
        3 => (Req::get(&format!("/error?{q}")), "GET", "/error".into()),
        4 => (
            Req::get(&format!("/missing/{i}?{q}")),
            "GET",
            format!("/missing/{i}"),
        ),
        5 => (Req::get(&format!("/stream?{q}")), "GET", "/stream".into()),
        6 => (
            Req::get(&format!("/stream?{q}")).http10(),
            "GET",
            "/stream".into(),
        ),
        7 => (
            Req::get(&format!("/hello/closing?{q}")).closing(),
            "GET",
            "/hello/closing".into(),
        ),
        8 => (
            Req::post(&format!("/echo?{q}"), b"small=body&a=1"),
            "POST",
            "/echo".into(),
        ),
        _ => (
            Req::get(&format!("/hello/w{i}?{q}")),
            "GET",
            format!("/hello/w{i}"),
        ),
    }
}

fn expected_status(path: &str) -> u16 {
    match path {
        "/redirect" => 302,
        "/error" => 500,
        p if p.starts_with("/missing/") => 404,
        _ => 200,
    }
}

/// Sends requests `0..n` from `clients` threads, each on its own connection (reopened when the server
/// closes it); every 97th request has its head split over three writes.
fn send_mixed(addr: &str, n: usize, clients: usize) -> Vec<(usize, Sent)> {
    let (tx, rx) = mpsc::channel();
    thread::scope(|scope| {
        for c in 0..clients {
            let tx = tx.clone();
            scope.spawn(move || {
                let mut conn: Option<Conn> = None;
                for i in (c..n).step_by(clients) {
                    let (req, method, path) = mixed_request(i);
                    let c = conn.get_or_insert_with(|| Conn::tcp(addr).expect("connect"));
                    let answer: Answer = if i % 97 == 0 {
                        c.send_split(&req, 3)
                    } else {
                        c.send(&req)
                    }
                    .unwrap_or_else(|e| panic!("request {i} {method} {path}: {e}"));
                    if answer.closed || req.close || req.version == "HTTP/1.0" {
                        conn = None;
                    }
                    let sent = Sent {
                        method,
                        path,
                        query: format!("i={i}"),
                        status: answer.status,
                        latency_ms: answer.latency.as_secs_f64() * 1e3,
                    };
                    tx.send((i, sent)).expect("collect");
                }
            });
        }
    });
    drop(tx);
    let mut all: Vec<_> = rx.into_iter().collect();
    all.sort_by_key(|(i, _)| *i);
    all
}

fn rows_by_query(rows: &[Value]) -> HashMap<String, &Value> {
    let mut by_query = HashMap::new();
    for row in rows {
        let query = row["query"].as_str().unwrap_or_default().to_owned();
        assert!(
            by_query.insert(query.clone(), row).is_none(),
            "two rows for query {query:?}"
        );
    }
    by_query
}

fn mixed_traffic(label: &str, worker_class: &str) {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get(label) else { return };
    let dir = TempDir::new(&format!("mixed-{label}-{worker_class}"));
    let threads = if worker_class == "gthread" { 4 } else { 1 };
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            worker_class,
            threads,
            ..Default::default()
        },
    );
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    const N: usize = 2000;
    let sent = send_mixed(&app.addr, N, 4);
    daemon.stop();

    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    assert_eq!(
        rows.len(),
        N,
        "the store must hold exactly one row per request"
    );
    let by_query = rows_by_query(&rows);
    let workers = app.workers();
    for (i, s) in &sent {
        let row = by_query
            .get(&s.query)
            .unwrap_or_else(|| panic!("request {i} ({} {}) was not captured", s.method, s.path));
        assert_eq!(row["method"], s.method, "request {i}");
        assert_eq!(row["path"], s.path.as_str(), "request {i}");
        assert_eq!(
            s.status,
            expected_status(&s.path),
            "the app answered request {i} unexpectedly"
        );
        assert_eq!(row["status"], u64::from(s.status), "request {i} {}", s.path);
        let duration = row["duration_ms"]
            .as_f64()
            .expect("duration_ms is a number");
        assert!(duration > 0.0, "request {i}: duration {duration}");
        assert!(
            duration < s.latency_ms,
            "request {i} {}: fmd says {duration} ms, the client measured {} ms",
            s.path,
            s.latency_ms
        );
        if s.path == "/sleep" {
            assert!(
                duration >= 50.0,
                "request {i} slept 50 ms but fmd says {duration} ms"
            );
        }
        assert_eq!(row["remote_ip"], "127.0.0.1", "request {i}");
        let pid = row["worker_pid"].as_u64().expect("worker_pid") as u32;
        assert!(
            workers.contains(&pid),
            "request {i} served by {pid}, not a worker of {workers:?}"
        );
        assert!(
            row["bytes_in"].as_u64().unwrap_or(0) > 0 && row["bytes_out"].as_u64().unwrap_or(0) > 0,
            "request {i}: {row}"
        );
        assert!(
            row["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
            "ts is RFC 3339 UTC: {row}"
        );
    }
    let stats = tests::fixtures::query(&daemon.db, "stats", &[]);
    let stats = &stats[0];
    assert_eq!(stats["events_lost"], 0, "{stats}");
    assert_eq!(stats["unparseable"], 0, "{stats}");
}

#[test]
fn mixed_traffic_sync_debian311() {
    mixed_traffic("debian3.11", "sync");
}

#[test]
fn mixed_traffic_gthread_debian311() {
    mixed_traffic("debian3.11", "gthread");
}

#[test]
fn mixed_traffic_sync_py38() {
    mixed_traffic("py3.8", "sync");
}

#[test]
fn mixed_traffic_gthread_py38() {
    mixed_traffic("py3.8", "gthread");
}

#[test]
fn mixed_traffic_sync_py313() {
    mixed_traffic("py3.13", "sync");
}

#[test]
fn mixed_traffic_gthread_py313() {
    mixed_traffic("py3.13", "gthread");
}

/// Attached to a gunicorn that already serves traffic, fmd records every later request, including those of
/// the worker gunicorn starts after one is killed.
#[test]
fn attach_to_running_app_and_follow_new_workers() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("attach");
    // One worker, so that every request after the kill is served by its replacement.
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            workers: 1,
            ..Default::default()
        },
    );
    for i in 0..20 {
        Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(&format!("/hello/before?b={i}"))))
            .expect("request");
    }
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    let mut sent = 0;
    let mut send = |n: usize| {
        for _ in 0..n {
            let answer = Conn::tcp(&app.addr)
                .and_then(|mut c| c.send(&Req::get(&format!("/hello/after?a={sent}"))))
                .expect("request");
            assert_eq!(answer.status, 200);
            sent += 1;
        }
    };
    send(50);
    let old = app.workers();
    // SAFETY: kill(2) on a worker of our own gunicorn.
    unsafe { libc::kill(old[0] as i32, libc::SIGKILL) };
    let new_worker = loop {
        let now = app.wait_for_workers(1);
        if let Some(&w) = now.iter().find(|w| !old.contains(w)) {
            break w;
        }
        thread::sleep(Duration::from_millis(50));
    };
    send(100);
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    assert_eq!(
        rows.len(),
        sent,
        "every request after attachment, and only those"
    );
    assert!(
        rows.iter().all(|r| r["path"] == "/hello/after"),
        "requests before attachment are not in the store"
    );
    let by_new = rows
        .iter()
        .filter(|r| r["worker_pid"] == u64::from(new_worker))
        .count();
    assert_eq!(
        by_new, 100,
        "the replacement worker {new_worker} served the last 100 requests"
    );
}

/// `--pid` of one worker watches that worker only: exactly the requests it served are stored.
#[test]
fn single_worker_pid_watches_that_worker_only() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("one-worker");
    let app = Gunicorn::start(&venv, &GunicornOptions::default());
    let watched = app.workers()[0];
    let mut daemon = Daemon::start(watched, &dir.0);
    let mut served_by_watched = 0;
    // Which worker accepts is the kernel's choice: send until the watched one served some (bounded).
    for i in 0..2000 {
        if i >= 60 && served_by_watched >= 10 {
            break;
        }
        let answer = Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(&format!("/pid?i={i}"))))
            .expect("request");
        let pid: u32 = String::from_utf8_lossy(&answer.body)
            .parse()
            .expect("the app answers its pid");
        served_by_watched += usize::from(pid == watched);
    }
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    assert!(
        served_by_watched > 0,
        "the watched worker served none of 2,000 requests"
    );
    assert_eq!(rows.len(), served_by_watched, "{rows:?}");
    assert!(rows.iter().all(|r| r["worker_pid"] == u64::from(watched)));
}

/// The app's own HTTP client connection (to a local upstream) is not a served request.
#[test]
fn outgoing_connections_are_not_served_requests() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("outgoing");
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = upstream.local_addr().expect("addr").port();
    let upstream_thread = thread::spawn(move || {
        for _ in 0..10 {
            let (mut s, _) = upstream.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
                .expect("answer");
        }
    });
    let app = Gunicorn::start(&venv, &GunicornOptions::default());
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    for _ in 0..10 {
        let answer = Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(&format!("/outgoing?port={port}"))))
            .expect("request");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"upstream said hi");
    }
    upstream_thread.join().expect("upstream");
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    assert_eq!(rows.len(), 10, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["path"] == "/outgoing" && r["status"] == 200),
        "{rows:?}"
    );
}

/// Behind a proxy on a unix socket, the client address comes from X-Forwarded-For / X-Real-IP.
#[test]
fn unix_socket_bind_with_forwarded_for() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("unix");
    let socket = dir.0.join("app.sock");
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            unix_socket: Some(&socket),
            ..Default::default()
        },
    );
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    for i in 0..5 {
        // A unix-socket peer is a local proxy, trusted by default (config `[proxies] trusted`).
        let req = Req::get(&format!("/hello/proxied?i={i}"))
            .header("X-Forwarded-For", &format!("203.0.113.{i}"));
        assert_eq!(
            Conn::unix(&socket)
                .and_then(|mut c| c.send(&req))
                .expect("request")
                .status,
            200
        );
    }
    let req = Req::get("/hello/real?i=real").header("X-Real-IP", "198.51.100.7");
    assert_eq!(
        Conn::unix(&socket)
            .and_then(|mut c| c.send(&req))
            .expect("request")
            .status,
        200
    );
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    assert_eq!(rows.len(), 6);
    let by_query = rows_by_query(&rows);
    for i in 0..5 {
        assert_eq!(
            by_query[&format!("i={i}")]["remote_ip"],
            format!("203.0.113.{i}")
        );
    }
    assert_eq!(by_query["i=real"]["remote_ip"], "198.51.100.7");
}

/// While the daemon runs (and holds the DuckDB file), `query requests` answers through its API.
#[test]
fn query_while_the_daemon_runs() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("live-query");
    let app = Gunicorn::start(&venv, &GunicornOptions::default());
    let daemon = Daemon::start(app.pid(), &dir.0);
    for i in 0..7 {
        Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(&format!("/hello/live?i={i}"))))
            .expect("request");
    }
    let mut rows = vec![];
    for _ in 0..50 {
        rows = daemon.query("requests", &["--limit", "100"]);
        if rows.len() == 7 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        rows.len(),
        7,
        "rows are flushed at least once a second and visible while the daemon runs"
    );
    let limited = daemon.query("requests", &["--limit", "3"]);
    assert_eq!(limited.len(), 3);
}

fn daemon_error(args: &[&str]) -> (i32, String) {
    let out = Command::new(tests::fixtures::daemon_binary())
        .args(args)
        .output()
        .expect("run fmd-daemon");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wrong_pid_is_a_clear_error() {
    let (code, stderr) =
        daemon_error(&["--pid", "999999999", "--db", "/tmp/fmd-test-never.duckdb"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no process with PID 999999999"), "{stderr}");
}

#[test]
fn non_python_process_is_a_clear_error() {
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let (code, stderr) = daemon_error(&[
        "--pid",
        &sleeper.id().to_string(),
        "--db",
        "/tmp/fmd-test-never.duckdb",
    ]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_ne!(code, 0);
    assert!(stderr.contains("is not a Python process"), "{stderr}");
}

#[test]
fn unprivileged_user_is_told_to_run_as_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipping: needs root to drop to an unprivileged user");
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let mut python = Command::new(venv.python())
        .args(["-c", "import time; time.sleep(30)"])
        .spawn()
        .expect("python");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(tests::fixtures::daemon_binary())
        .args([
            "--pid",
            &python.id().to_string(),
            "--db",
            "/tmp/fmd-test-unprivileged/fmd.duckdb",
        ])
        .output()
        .expect("run setpriv");
    let _ = python.kill();
    let _ = python.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("root"),
        "the error must say to run as root: {stderr}"
    );
}

/// A keep-alive connection opened before fmd attached: its later requests are captured too.
#[test]
fn keep_alive_connection_opened_before_attachment() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("preexisting");
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            worker_class: "gthread",
            threads: 2,
            workers: 1,
            extra: &["--keep-alive", "60"],
            ..Default::default()
        },
    );
    let mut conn = Conn::tcp(&app.addr).expect("connect");
    let first = conn.send(&Req::get("/hello/before?k=0")).expect("request");
    assert!(!first.closed, "gthread keeps the connection open");
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    for k in 1..=5 {
        let answer = conn
            .send(&Req::get(&format!("/hello/after?k={k}")))
            .expect("request on the old connection");
        assert_eq!(answer.status, 200);
    }
    drop(conn);
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    let queries: Vec<&str> = rows.iter().filter_map(|r| r["query"].as_str()).collect();
    assert_eq!(queries, ["k=1", "k=2", "k=3", "k=4", "k=5"], "{rows:?}");
}

/// `gunicorn app:app & fmd-daemon --pid $!`: fmd attached to a master that has not forked its workers
/// yet follows the workers it forks later, and stores every request they serve (issue 13: this stored 0
/// of 14, silently).
#[test]
fn master_attached_before_it_forks_stores_every_request() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("prefork");
    let options = GunicornOptions {
        app: "gated:app",
        // `--preload`: the master imports gated.py, which waits for its gate, before binding and forking.
        extra: &["--preload"],
        ..Default::default()
    };
    let app = Gunicorn::spawn(&venv, &options);
    let gate = std::path::PathBuf::from(format!("/tmp/fmd-gate-{}", app.pid()));
    let _gate_cleanup = GateFile(gate.clone());
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    assert!(
        app.workers().is_empty(),
        "the master must not have forked before fmd attached (it waits for {})",
        gate.display()
    );
    std::fs::write(&gate, b"").expect("open the gate");
    app.wait_ready(&options);
    const N: usize = 40;
    let mut expected = HashMap::new();
    for i in 0..N {
        let (path, endpoint) = if i % 2 == 0 {
            (format!("/hello/p{i}"), "hello")
        } else {
            ("/pid".to_owned(), "pid")
        };
        let answer = Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(&format!("{path}?i={i}"))))
            .expect("request");
        assert_eq!(answer.status, 200, "request {i}");
        expected.insert(format!("i={i}"), (path, endpoint));
    }
    let workers = app.workers();
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    assert_eq!(
        rows.len(),
        N,
        "every request of the workers forked after attachment"
    );
    for (query, row) in rows_by_query(&rows) {
        let (path, endpoint) = &expected[&query];
        assert_eq!(row["path"], path.as_str(), "{row}");
        assert_eq!(row["endpoint"], *endpoint, "{row}");
        let pid = row["worker_pid"].as_u64().expect("worker_pid") as u32;
        assert!(
            workers.contains(&pid),
            "served by {pid}, not a worker of {workers:?}"
        );
    }
    let stats = tests::fixtures::query(&daemon.db, "stats", &[]);
    assert_eq!(
        stats[0]["counters"]["pids_table_full"], 0,
        "the pid table's inserts are counted: {stats:?}"
    );
}

/// Removes a gate file on drop.
struct GateFile(std::path::PathBuf);

impl Drop for GateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Flask app served by Werkzeug's server in one process (`python app.py`, no gunicorn): the target
/// serves every request itself and they are all stored.
#[test]
fn single_process_server_is_captured() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("single-process");
    let port = tests::fixtures::free_port();
    let server = Killed(
        Command::new(venv.python())
            .args(["single_process.py", &port.to_string()])
            .current_dir(tests::fixtures::apps_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the single-process server"),
    );
    let addr = format!("127.0.0.1:{port}");
    tests::fixtures::wait_for_port(&addr, Duration::from_secs(30));
    // Requests only: this test is about which process is captured, not about profiles.
    let mut daemon = Daemon::start_with(
        server.0.id(),
        &dir.0.join("fmd.duckdb"),
        &["--sample-hz", "0"],
    );
    const N: usize = 20;
    for i in 0..N {
        let answer = Conn::tcp(&addr)
            .and_then(|mut c| c.send(&Req::get(&format!("/hello/s{i}?i={i}"))))
            .expect("request");
        assert_eq!(answer.status, 200, "request {i}");
    }
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    assert_eq!(rows.len(), N, "{rows:?}");
    for row in &rows {
        assert_eq!(row["endpoint"], "hello", "{row}");
        assert_eq!(row["worker_pid"], u64::from(server.0.id()), "{row}");
        assert_eq!(row["status"], 200, "{row}");
    }
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Started with umask 000, the daemon still creates its state directory 0700 and the store, its WAL and
/// `<db>.daemon` 0600; a store left readable by others is reported when it is opened again.
#[test]
fn store_files_are_private_whatever_the_umask() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("modes");
    let state = dir.0.join("state");
    let db = state.join("fmd.duckdb");
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            workers: 1,
            ..Default::default()
        },
    );
    // SAFETY: umask(2) on this process; the end-to-end tests run one at a time, and the daemon inherits it.
    let previous = unsafe { libc::umask(0) };
    let mut daemon = Daemon::start_with(app.pid(), &db, &[]);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    for i in 0..5 {
        Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(&format!("/hello/private?i={i}"))))
            .expect("request");
    }
    let wal = state.join("fmd.duckdb.wal");
    for _ in 0..100 {
        if wal.exists() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&db), 0o600, "store");
    assert_eq!(mode(&wal), 0o600, "WAL");
    assert_eq!(mode(&state.join("fmd.duckdb.daemon")), 0o600, "daemon file");
    daemon.stop();
    assert_eq!(daemon.query("requests", &[]).len(), 5);

    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let out = Command::new(tests::fixtures::daemon_binary())
        .args(["migrate", "--db"])
        .arg(&db)
        .output()
        .expect("run fmd-daemon migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("readable by other users") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}
