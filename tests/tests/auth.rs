//! Dashboard accounts end to end: the first-start setup link, `fmd-daemon user` on a stopped store and
//! through a running daemon (local credential), logging in over HTTP, and the CLI's queries still
//! working with authentication on.

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tests::{
    client::{Answer, Conn, Req},
    fixtures::{daemon_binary, GunicornOptions, TempDir},
    require_bpf, Daemon, Gunicorn, Venv,
};

/// `fmd-daemon user <args> --db <db>` with `stdin`: success, stdout, stderr.
fn user(db: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(daemon_binary())
        .arg("user")
        .args(args)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fmd-daemon user");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn users(db: &Path) -> Vec<(String, bool)> {
    let (ok, out, err) = user(db, &["list", "--format", "json"], "");
    assert!(ok, "user list: {err}");
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            (
                v["username"].as_str().expect("name").to_owned(),
                v["admin"] == true,
            )
        })
        .collect()
}

fn send(daemon: &Daemon, req: &Req) -> Answer {
    Conn::tcp(&daemon.listen)
        .and_then(|mut c| c.send(&req.clone().closing()))
        .expect("call the daemon")
}

fn json_of(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.body).unwrap_or(Value::Null)
}

/// Logs in; the `Cookie` header value and the CSRF token.
fn login(daemon: &Daemon, username: &str, password: &str) -> (String, String) {
    let body = json!({"username": username, "password": password}).to_string();
    let answer = send(daemon, &Req::post("/api/login", body.as_bytes()));
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let cookie = answer.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let csrf = json_of(&answer)["csrf_token"]
        .as_str()
        .expect("csrf_token")
        .to_owned();
    (pair, csrf)
}

fn token_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".token");
    PathBuf::from(name)
}

/// Waits for the setup link in the daemon's stderr.
fn setup_token(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(at) = text.find("/setup?token=") {
            let rest = &text[at + "/setup?token=".len()..];
            return rest.chars().take_while(char::is_ascii_hexdigit).collect();
        }
        assert!(
            Instant::now() < deadline,
            "no setup link in the log:\n{text}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn accounts_setup_login_and_the_cli() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("auth");
    let db = dir.0.join("fmd.duckdb");
    let app = Gunicorn::start(&venv, &GunicornOptions::default());

    // First start, no account: a one-time setup link on stderr instead of a default password.
    let log = dir.0.join("daemon.log");
    let mut daemon = Daemon::start_logged(app.pid(), &db, &log);
    let token = setup_token(&log);
    assert_eq!(token.len(), 64);
    let mode = std::fs::metadata(token_path(&db))
        .expect("local credential")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let session = send(&daemon, &Req::get("/api/session"));
    assert_eq!(
        (session.status, json_of(&session)["setup_required"].clone()),
        (401, json!(true))
    );
    let root = Req::get("/");
    let answer = send(&daemon, &root);
    assert_eq!(
        (answer.status, answer.header("location")),
        (302, Some("/login"))
    );
    let setup = |token: &str| {
        let body = json!({"token": token, "username": "root", "password": "root password"});
        send(
            &daemon,
            &Req::post("/api/setup", body.to_string().as_bytes()),
        )
    };
    assert_eq!(setup("0").status, 403);
    let answer = setup(&token);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(json_of(&answer)["admin"], true);
    assert_eq!(setup(&token).status, 409, "the link works once");
    // Traffic for the queries below.
    for i in 0..5 {
        let answer = Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(&format!("/hello/x?i={i}")).closing()))
            .expect("request");
        assert_eq!(answer.status, 200);
    }
    let (old_cookie, _) = login(&daemon, "root", "root password");
    daemon.stop();
    assert!(
        !token_path(&db).exists(),
        "the local credential goes with the daemon"
    );

    // A stopped store: accounts are changed in the file.
    let (ok, out, err) = user(&db, &["add", "alice", "--admin"], "alice password\n");
    assert!(ok, "{err}");
    assert_eq!(out, "created admin alice\n");
    let (ok, _, err) = user(&db, &["add", "alice"], "another password\n");
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = user(&db, &["add", "shorty"], "short\n");
    assert!(!ok && err.contains("too short"), "{err}");
    let (ok, _, err) = user(&db, &["add", "nopass"], "");
    assert!(!ok && err.contains("no password on stdin"), "{err}");
    assert_eq!(users(&db), [("alice".into(), true), ("root".into(), true)]);

    // A running daemon holds the file: the same commands go through its API with the local credential.
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    let (ok, out, err) = user(&db, &["add", "bob"], "bob password\n");
    assert!(ok, "{err}");
    assert_eq!(out, "created guest bob\n");
    assert_eq!(
        users(&db),
        [
            ("alice".into(), true),
            ("bob".into(), false),
            ("root".into(), true)
        ]
    );
    // A restart logged everyone out.
    let answer = send(
        &daemon,
        &Req::get("/api/endpoints").header("Cookie", &old_cookie),
    );
    assert_eq!(answer.status, 401);

    // Logging in over HTTP.
    let wrong = json!({"username": "bob", "password": "not bob's"}).to_string();
    assert_eq!(
        send(&daemon, &Req::post("/api/login", wrong.as_bytes())).status,
        401
    );
    assert_eq!(send(&daemon, &Req::get("/api/endpoints")).status, 401);
    let (bob, bob_csrf) = login(&daemon, "bob", "bob password");
    let answer = send(&daemon, &Req::get("/api/endpoints").header("Cookie", &bob));
    assert_eq!(answer.status, 200);
    assert!(
        json_of(&answer)["endpoints"].is_array(),
        "{}",
        json_of(&answer)
    );
    // A guest cannot manage accounts, even with the CSRF token.
    let carol = json!({"username": "carol", "password": "carol password"}).to_string();
    let answer = send(
        &daemon,
        &Req::post("/api/users", carol.as_bytes())
            .header("Cookie", &bob)
            .header("X-CSRF-Token", &bob_csrf),
    );
    assert_eq!(answer.status, 403);
    // An admin can, with the CSRF token only.
    let (alice, alice_csrf) = login(&daemon, "alice", "alice password");
    let add_carol = Req::post("/api/users", carol.as_bytes()).header("Cookie", &alice);
    assert_eq!(send(&daemon, &add_carol).status, 403);
    let answer = send(
        &daemon,
        &add_carol.clone().header("X-CSRF-Token", &alice_csrf),
    );
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // The CLI's queries send the local credential.
    assert_eq!(daemon.query("requests", &[]).len(), 5);
    assert_eq!(send(&daemon, &Req::get("/api/stats")).status, 401);
    assert_eq!(daemon.api(&Req::get("/api/stats")).status, 200);

    // Removing bob through the daemon ends his session.
    let (ok, out, err) = user(&db, &["remove", "bob"], "");
    assert!(ok, "{err}");
    assert_eq!(out, "removed bob\n");
    let answer = send(&daemon, &Req::get("/api/endpoints").header("Cookie", &bob));
    assert_eq!(answer.status, 401);
    daemon.stop();
    assert_eq!(
        users(&db),
        [
            ("alice".into(), true),
            ("carol".into(), false),
            ("root".into(), true)
        ]
    );
}
