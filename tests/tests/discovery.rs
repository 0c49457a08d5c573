//! `fmd-daemon query` without `--db` finds the running daemon wherever its store is (as `cargo xtask demo`
//! starts one on its own store), and asks for `--db` when several run (issue 9). The runtime directory is
//! the test's own (`FMD_RUNTIME_DIR`), so daemons of other tests on the machine do not count.

use std::{
    path::Path,
    process::{Child, Command, Output},
    thread,
    time::{Duration, Instant},
};

use tests::{
    client::{Conn, Req},
    fixtures::{daemon_binary, free_port, GunicornOptions, TempDir},
    require_bpf, Gunicorn, Venv,
};

/// A daemon started by hand (the fixture has no way to set its environment), stopped on drop.
struct Running(Child);

impl Running {
    fn start(pid: u32, db: &Path, runtime: &Path) -> Self {
        let child = Command::new(daemon_binary())
            .args(["--pid", &pid.to_string(), "--db"])
            .arg(db)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .env("FMD_RUNTIME_DIR", runtime)
            .spawn()
            .expect("start fmd-daemon");
        let deadline = Instant::now() + Duration::from_secs(60);
        let registered = || {
            std::fs::read_dir(runtime).is_ok_and(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name() == format!("{}.json", child.id()).as_str())
            })
        };
        while !registered() {
            assert!(Instant::now() < deadline, "the daemon did not register");
            thread::sleep(Duration::from_millis(50));
        }
        Self(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// `fmd-daemon query stats --format json` without `--db`.
fn query_without_db(runtime: &Path) -> Output {
    Command::new(daemon_binary())
        .args(["query", "stats", "--format", "json"])
        .env("FMD_RUNTIME_DIR", runtime)
        .env_remove("FMD_DB")
        .output()
        .expect("run fmd-daemon query")
}

#[test]
fn query_without_db_finds_the_running_daemon() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("discovery");
    let runtime = dir.0.join("run");
    let app = Gunicorn::start(&venv, &GunicornOptions::default());
    let first = Running::start(app.pid(), &dir.0.join("demo.duckdb"), &runtime);
    for i in 0..3 {
        Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(&format!("/hello/found?i={i}"))))
            .expect("request");
    }
    let mut stored = 0;
    for _ in 0..50 {
        let out = query_without_db(&runtime);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        stored = stats["requests_stored"].as_u64().expect("requests_stored");
        if stored == 3 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stored, 3, "the running daemon's store was read");

    // A second daemon: the user has to pick, and is told the choices.
    let second = Running::start(app.pid(), &dir.0.join("other.duckdb"), &runtime);
    let out = query_without_db(&runtime);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 fmd daemons are running; pick one with --db:"),
        "{err}"
    );
    assert!(
        err.contains("demo.duckdb") && err.contains("other.duckdb"),
        "{err}"
    );
    assert!(
        err.ends_with('\n'),
        "error lines end with a newline: {err:?}"
    );
    drop(second);
    drop(first);
    // Both stopped: their registrations are gone.
    assert_eq!(
        std::fs::read_dir(&runtime).map(|d| d.count()).unwrap_or(0),
        0
    );
}
