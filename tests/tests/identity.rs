//! Versions and users end to end (issue 9): the app lives in a real git repository; a commit plus a HUP
//! gives the new workers' requests the new commit (loose ref, then packed refs, then a detached HEAD) with
//! no daemon restart, and `app_version` wins when set. Users come from each configured extractor on real
//! requests, including a session cookie the app signed itself; forwarded addresses count only from
//! trusted proxies.

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    client::{Conn, Req},
    fixtures::{apps_dir, GunicornOptions, TempDir},
    require_bpf, Daemon, Gunicorn, Venv,
};

/// Runs git in `repo` as a throwaway identity; returns its stdout, trimmed.
fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=fmd", "-c", "user.email=fmd@example.com"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .expect("run git (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git repository in `dir` holding the identity app as `app.py`, with one commit; returns its id.
fn app_repo(dir: &Path) -> String {
    std::fs::copy(apps_dir().join("identity.py"), dir.join("app.py")).expect("copy the app");
    git(dir, &["init", "-q"]);
    git(dir, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    commit(dir, "first")
}

/// Commits a change to `CHANGES`; returns the new commit's id.
fn commit(dir: &Path, message: &str) -> String {
    std::fs::write(dir.join("CHANGES"), message).expect("write");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn get(addr: &str, req: &Req) -> String {
    let answer = Conn::tcp(addr)
        .and_then(|mut c| c.send(req))
        .expect("request");
    assert_eq!(answer.status, 200, "{}", req.target);
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// HUPs gunicorn and waits until none of the old workers is left.
fn reload(app: &Gunicorn) {
    let old = app.workers();
    // SAFETY: kill(2) on the gunicorn master our fixture started.
    unsafe { libc::kill(app.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = app.workers();
        if now.len() == old.len() && now.iter().all(|w| !old.contains(w)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gunicorn did not replace its workers"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The stored requests by their query string, once `n` are there.
fn requests(daemon: &Daemon, n: usize) -> HashMap<String, Value> {
    let mut rows = vec![];
    for _ in 0..100 {
        rows = daemon.query("requests", &[]);
        if rows.len() >= n {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(rows.len() >= n, "{} rows, expected {n}", rows.len());
    rows.into_iter()
        .map(|r| (r["query"].as_str().unwrap_or_default().to_owned(), r))
        .collect()
}

#[test]
fn a_commit_and_a_hup_start_a_new_version() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("versions-git");
    let repo = dir.0.join("app");
    std::fs::create_dir_all(&repo).expect("mkdir");
    let first = app_repo(&repo);
    let chdir = repo.to_str().expect("UTF-8 path");
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "app:app",
            extra: &["--chdir", chdir],
            ..GunicornOptions::default()
        },
    );
    let daemon = Daemon::start(app.pid(), &dir.0);
    for i in 0..3 {
        get(&app.addr, &Req::get(&format!("/?phase=1&i={i}")));
    }
    // From a local (trusted) proxy, the forwarded client counts.
    get(
        &app.addr,
        &Req::get("/?phase=1&xff").header("X-Forwarded-For", "203.0.113.7"),
    );
    requests(&daemon, 4);

    // Deploy 2: a commit, its branch packed (no loose ref left), a HUP.
    let second = commit(&repo, "second");
    git(&repo, &["pack-refs", "--all"]);
    assert!(!repo.join(".git/refs/heads/main").exists());
    reload(&app);
    for i in 0..3 {
        get(&app.addr, &Req::get(&format!("/?phase=2&i={i}")));
    }
    requests(&daemon, 7);

    // Deploy 3: a commit checked out as a detached HEAD.
    let third = commit(&repo, "third");
    git(&repo, &["checkout", "-q", "--detach"]);
    let head = std::fs::read_to_string(repo.join(".git/HEAD")).expect("HEAD");
    assert_eq!(head.trim(), third, "HEAD is detached");
    reload(&app);
    for i in 0..3 {
        get(&app.addr, &Req::get(&format!("/?phase=3&i={i}")));
    }
    let rows = requests(&daemon, 10);

    for (phase, commit) in [(1, &first), (2, &second), (3, &third)] {
        for i in 0..3 {
            let row = &rows[&format!("phase={phase}&i={i}")];
            assert_eq!(row["version"], commit.as_str(), "phase {phase}: {row}");
        }
    }
    assert_eq!(rows["phase=1&xff"]["remote_ip"], "203.0.113.7");
    assert_eq!(rows["phase=1&i=0"]["remote_ip"], "127.0.0.1");

    let versions = daemon.query("versions", &[]);
    let got: Vec<(String, u64)> = versions
        .iter()
        .map(|v| {
            (
                v["version"].as_str().expect("version").to_owned(),
                v["hits"].as_u64().expect("hits"),
            )
        })
        .collect();
    assert_eq!(got, [(first, 4), (second, 3), (third, 3)]);
    let first_seen: Vec<&str> = versions
        .iter()
        .map(|v| v["first_seen"].as_str().expect("first_seen"))
        .collect();
    assert!(first_seen.windows(2).all(|w| w[0] < w[1]), "{first_seen:?}");
}

#[test]
fn app_version_wins_over_git() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("versions-config");
    let repo = dir.0.join("app");
    std::fs::create_dir_all(&repo).expect("mkdir");
    app_repo(&repo);
    let config = dir.0.join("fmd.toml");
    std::fs::write(&config, "app_version = \"2.0-rc1\"\n").expect("config");
    let chdir = repo.to_str().expect("UTF-8 path");
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "app:app",
            extra: &["--chdir", chdir],
            ..GunicornOptions::default()
        },
    );
    let daemon = Daemon::start_with(
        app.pid(),
        &dir.0.join("fmd.duckdb"),
        &["--config", config.to_str().expect("UTF-8 path")],
    );
    for i in 0..4 {
        get(&app.addr, &Req::get(&format!("/?i={i}")));
    }
    let rows = requests(&daemon, 4);
    assert!(rows.values().all(|r| r["version"] == "2.0-rc1"), "{rows:?}");
    let versions = daemon.query("versions", &[]);
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["hits"], 4);
}

/// `{"alg":"none","typ":"JWT"}.{"sub":"jwt-user","exp":4102444800}.sig`, base64url.
const JWT: &str =
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJqd3QtdXNlciIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";
/// `basic-user:pw`, base64.
const BASIC: &str = "YmFzaWMtdXNlcjpwdw==";

#[test]
fn users_from_every_extractor() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("users");
    let config = dir.0.join("fmd.toml");
    std::fs::write(
        &config,
        r#"
[users]
extract = [
    { from = "header", name = "X-User" },
    { from = "cookie", name = "uid" },
    { from = "query", name = "user" },
    { from = "jwt", claim = "sub" },
    { from = "basic_auth" },
    { from = "flask_session", key = "_user_id" },
]
[proxies]
trusted = ["10.0.0.0/8"]
"#,
    )
    .expect("config");
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "identity:app",
            ..GunicornOptions::default()
        },
    );
    let daemon = Daemon::start_with(
        app.pid(),
        &dir.0.join("fmd.duckdb"),
        &["--config", config.to_str().expect("UTF-8 path")],
    );
    let addr = &app.addr;
    get(
        addr,
        &Req::get("/?case=header").header("X-User", "header-user"),
    );
    get(
        addr,
        &Req::get("/?case=cookie").header("Cookie", "theme=dark; uid=cookie-user"),
    );
    get(addr, &Req::get("/?case=query&user=query%20user"));
    get(
        addr,
        &Req::get("/?case=jwt").header("Authorization", &format!("Bearer {JWT}")),
    );
    get(
        addr,
        &Req::get("/?case=basic").header("Authorization", &format!("Basic {BASIC}")),
    );
    // The app signs its session cookie with a key fmd never sees.
    let cookie = get(addr, &Req::get("/login/session-user"));
    assert!(!cookie.starts_with('.'), "{cookie}");
    let who = get(
        addr,
        &Req::get("/whoami?case=session").header("Cookie", &format!("session={cookie}")),
    );
    assert_eq!(who, "session-user", "the app reads its own cookie");
    let zipped = get(addr, &Req::get("/login/zlib-user?big=1"));
    assert!(zipped.starts_with('.'), "a compressed cookie: {zipped}");
    get(
        addr,
        &Req::get("/whoami?case=session-zlib").header("Cookie", &format!("session={zipped}")),
    );
    // First match wins: the header before the session.
    get(
        addr,
        &Req::get("/?case=both")
            .header("Cookie", &format!("session={cookie}"))
            .header("X-User", "header-wins"),
    );
    // Nobody; and a forwarded address from an untrusted peer (loopback is not in `trusted` here).
    get(
        addr,
        &Req::get("/?case=anonymous").header("X-Forwarded-For", "203.0.113.9"),
    );
    let rows = requests(&daemon, 11);
    for (case, user) in [
        ("case=header", Some("header-user")),
        ("case=cookie", Some("cookie-user")),
        ("case=query&user=query%20user", Some("query user")),
        ("case=jwt", Some("jwt-user")),
        ("case=basic", Some("basic-user")),
        ("case=session", Some("session-user")),
        ("case=session-zlib", Some("zlib-user")),
        ("case=both", Some("header-wins")),
        ("case=anonymous", None),
    ] {
        let row = &rows[case];
        assert_eq!(row["user"].as_str(), user, "{case}: {row}");
    }
    assert_eq!(rows["case=anonymous"]["remote_ip"], "127.0.0.1");
    // The basic-auth password is nowhere in what is shown.
    assert!(!rows.values().any(|r| r.to_string().contains("pw\"")));
}
