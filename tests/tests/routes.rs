//! Endpoint attribution end to end: fmd reads the Flask route table out of each worker's memory and must
//! attribute every request exactly as the app itself resolved it, on every supported interpreter.

use std::{collections::HashMap, thread, time::Duration};

use serde_json::Value;
use tests::{
    client::{Conn, Req},
    fixtures::{GunicornOptions, TempDir},
    require_bpf, Daemon, Gunicorn, Venv,
};

/// (method, path): every kind of rule of tests/apps/routes_app.py, and requests no view serves.
const CASES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/shop/items/42"),
    ("GET", "/shop/items/abc"),
    ("GET", "/shop/items/1.5/cheaper"),
    ("GET", "/shop/files/a/b/c.txt"),
    ("GET", "/shop/orders/6f1c2a8e-1d5c-4a8b-9a63-0c2e2f1b8d7e"),
    ("GET", "/shop/orders/not-a-uuid"),
    ("GET", "/shop/books/"),
    ("GET", "/shop/music"),
    ("GET", "/shop/tags/red,green"),
    ("GET", "/admin/"),
    ("GET", "/admin/users/bob"),
    ("GET", "/api/items/3"),
    ("DELETE", "/api/items/3"),
    ("POST", "/api/items/3"),
    ("GET", "/thing"),
    ("POST", "/thing"),
    ("PUT", "/thing"),
    ("GET", "/users/new"),
    ("GET", "/users/alice"),
    ("GET", "/loose"),
    ("GET", "/loose/"),
    ("GET", "/docs/intro/start"),
    ("GET", "/no/such/page"),
];

/// Sends `CASES` `rounds` times; returns, by the `n` query parameter, what the app said it resolved
/// (`None` when no view answered: 404, 405, 308).
fn send_cases(addr: &str, rounds: usize) -> HashMap<String, (String, Option<(String, String)>)> {
    let mut expected = HashMap::new();
    for round in 0..rounds {
        for (i, (method, path)) in CASES.iter().enumerate() {
            let n = format!("n={round}-{i}");
            let mut req = Req::get(&format!("{path}?{n}"));
            req.method = (*method).to_owned();
            let answer = Conn::tcp(addr)
                .and_then(|mut c| c.send(&req))
                .expect("request");
            let resolved = (answer.status == 200).then(|| {
                let body: Value =
                    serde_json::from_slice(&answer.body).expect("the app answers JSON");
                (
                    body["endpoint"].as_str().expect("endpoint").to_owned(),
                    body["rule"].as_str().expect("rule").to_owned(),
                )
            });
            expected.insert(
                n,
                (format!("{method} {path} -> {}", answer.status), resolved),
            );
        }
    }
    expected
}

fn attribution(label: &str) {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get(label) else { return };
    let dir = TempDir::new(&format!("routes-{label}"));
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "routes_app:create_app()",
            ..Default::default()
        },
    );
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    let expected = send_cases(&app.addr, 3);
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    assert_eq!(rows.len(), expected.len());
    let mut routed = 0;
    for row in &rows {
        let n = row["query"].as_str().expect("query").to_owned();
        let (what, resolved) = &expected[&n];
        let got = row["endpoint"].as_str().map(|e| {
            (
                e.to_owned(),
                row["rule"].as_str().unwrap_or_default().to_owned(),
            )
        });
        assert_eq!(
            &got, resolved,
            "{what}: fmd's attribution differs from the app's"
        );
        routed += usize::from(got.is_some());
    }
    assert!(
        routed > rows.len() / 2,
        "most cases reach a view ({routed} of {})",
        rows.len()
    );

    // Every rule of the app is listed, requested or not, with its methods and hit count.
    let endpoints = tests::fixtures::query(&daemon.db, "endpoints", &[]);
    let by_rule: HashMap<&str, &Value> = endpoints
        .iter()
        .map(|e| (e["rule"].as_str().expect("rule"), e))
        .collect();
    let never = by_rule["/never/requested/<int:x>"];
    assert_eq!(never["endpoint"], "never_requested");
    assert_eq!(never["hits"], 0);
    assert_eq!(never["last_requested"], Value::Null);
    let methods = |rule: &str| -> Vec<String> {
        by_rule[rule]["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .map(|m| m.as_str().expect("str").to_owned())
            .collect()
    };
    assert_eq!(
        methods("/api/items/<int:item_id>"),
        ["DELETE", "GET", "HEAD", "OPTIONS"]
    );
    assert_eq!(by_rule["/shop/items/<int:item_id>"]["hits"], 3);
    assert_eq!(
        by_rule["/shop/items/<int:item_id>"]["endpoint"],
        "shop.item"
    );
    let thing: Vec<_> = endpoints
        .iter()
        .filter(|e| e["rule"] == "/thing")
        .map(|e| e["endpoint"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(thing.len(), 2, "one rule, two views by method: {thing:?}");
    // The 17 rules of routes_app.py plus Flask's static route.
    assert_eq!(endpoints.len(), 18, "{endpoints:?}");
}

#[test]
fn attribution_debian311() {
    attribution("debian3.11");
}

#[test]
fn attribution_py38() {
    attribution("py3.8");
}

#[test]
fn attribution_py39() {
    attribution("py3.9");
}

#[test]
fn attribution_py310() {
    attribution("py3.10");
}

#[test]
fn attribution_py311() {
    attribution("py3.11");
}

#[test]
fn attribution_py312() {
    attribution("py3.12");
}

#[test]
fn attribution_py313() {
    attribution("py3.13");
}

/// A HUP reload brings workers running changed code (one rule more); fmd picks their table up by itself.
#[test]
fn new_workers_with_new_rules_are_picked_up() {
    if !require_bpf() {
        return;
    }
    let Some(venv) = Venv::get("debian3.11") else {
        return;
    };
    let dir = TempDir::new("routes-reload");
    let flag = dir.0.join("extra-rule");
    let flag_env = format!("FMD_TEST_EXTRA_RULE_FLAG={}", flag.display());
    let app = Gunicorn::start(
        &venv,
        &GunicornOptions {
            app: "routes_app:create_app()",
            extra: &["--env", &flag_env],
            ..Default::default()
        },
    );
    let mut daemon = Daemon::start(app.pid(), &dir.0);
    let get = |path: &str| {
        Conn::tcp(&app.addr)
            .and_then(|mut c| c.send(&Req::get(path)))
            .expect("request")
            .status
    };
    assert_eq!(get("/added/1?phase=before"), 404);
    // A request is stored once its worker's route table is read: wait for that before the reload, so the
    // old workers' table is known (fmd reads a table at a worker's first request).
    for _ in 0..300 {
        if !daemon.query("requests", &[]).is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&flag, b"deploy").expect("flag");
    let old = app.workers();
    // SAFETY: kill(2) on our own gunicorn master.
    unsafe { libc::kill(app.pid() as i32, libc::SIGHUP) };
    let mut answered = false;
    for _ in 0..200 {
        let now = app.workers();
        if now.len() == 2
            && now.iter().all(|w| !old.contains(w))
            && get("/added/2?phase=after") == 200
        {
            answered = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(answered, "the reloaded workers serve the new rule");
    daemon.stop();
    let rows = tests::fixtures::query(&daemon.db, "requests", &[]);
    let after: Vec<_> = rows
        .iter()
        .filter(|r| r["query"] == "phase=after" && r["status"] == 200)
        .collect();
    assert_eq!(after.len(), 1, "{rows:?}");
    assert_eq!(after[0]["endpoint"], "added_later");
    assert_eq!(after[0]["rule"], "/added/<int:n>");
    let before: Vec<_> = rows
        .iter()
        .filter(|r| r["query"] == "phase=before")
        .collect();
    assert_eq!(before[0]["endpoint"], Value::Null);
}
