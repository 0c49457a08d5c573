//! Route tables read out of real Flask processes (every supported interpreter, script and gunicorn factory),
//! compared with what the app printed from `url_map.iter_rules()`; plus the pure helpers.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use super::*;
use crate::python::{
    binary::{Binary, Version},
    layout::Layout,
    objects::tests::types_in_region,
    testutil::{garbage, interpreters, spawn_json, XorShift, BASE, SIZE},
    SliceMemory,
};

const APP: &str = include_str!("../testdata/fmdapp.py");
const VENVS: &str = "/tmp/fmd-test-venvs";

#[test]
fn gunicorn_specs() {
    fn check(cmdline: &str, expect: Option<(&str, &str)>) {
        let args: Vec<String> = cmdline.split(' ').map(str::to_owned).collect();
        let got = gunicorn_app_spec(&args);
        assert_eq!(
            got.as_ref().map(|(m, a)| (m.as_str(), a.as_str())),
            expect,
            "{cmdline}"
        );
    }
    check(
        "/v/bin/python /v/bin/gunicorn -w 2 -b 0.0.0.0:8000 myapp.wsgi:app",
        Some(("myapp.wsgi", "app")),
    );
    check("gunicorn -b unix:/run/x.sock 'pkg:create_app()'", None);
    check(
        "gunicorn -b unix:/run/x.sock pkg:create_app()",
        Some(("pkg", "create_app()")),
    );
    check(
        "gunicorn --bind=localhost:8000 pkg.app:make(debug=True)",
        Some(("pkg.app", "make(debug=True)")),
    );
    check("gunicorn -b 127.0.0.1:8000 myapp", None);
    check("python app.py serve:now", None);
}

#[test]
fn converters_in_templates() {
    fn check(rule: &str, expect: &[&str]) {
        assert_eq!(template_converters(rule), expect, "{rule}");
    }
    check("/", &[]);
    check("/user/<int:id>", &["int"]);
    check("/<x>/<path:rest>", &["default", "path"]);
    check(
        "/any/<any(a, b):x>/<string(length=2):c>",
        &["any", "string"],
    );
    check("/broken/<int:id", &[]);
}

/// A venv named `name` with `packages` for `python`, created once and cached under /tmp/fmd-test-venvs.
fn venv(label: &str, python: &Path, name: &str, packages: &[&str]) -> PathBuf {
    let dir = Path::new(VENVS).join(name);
    let bin = dir.join("bin/python");
    let ready = || {
        Command::new(&bin)
            .args(["-c", "import flask, gunicorn"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        eprintln!(
            "{label}: creating {} ({packages:?} from PyPI)",
            dir.display()
        );
        let ok = Command::new(python)
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&bin)
                .args(["-m", "pip", "install", "-q"])
                .args(packages)
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok && ready(),
            "{label}: cannot create a venv with flask at {}",
            dir.display()
        );
    }
    dir
}

fn expected(j: &serde_json::Value) -> Vec<RouteInfo> {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let mut routes: Vec<RouteInfo> = j["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| RouteInfo {
            rule: s(&r["rule"]).unwrap_or_default(),
            endpoint: s(&r["endpoint"]).unwrap_or_default(),
            methods: r["methods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(s)
                .collect(),
            strict_slashes: r["strict_slashes"].as_bool().unwrap_or(false),
            host: s(&r["host"]),
            subdomain: s(&r["subdomain"]),
        })
        .collect();
    routes.sort();
    routes
}

fn check(label: &str, pid: u32, j: &serde_json::Value, expect_via: &str) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The process printed its JSON from inside its start-up; on a loaded machine it may not have finished
    // binding its module globals yet. Give it a few tries to settle before asserting on one read.
    for _ in 0..10 {
        let settled = Interpreter::attach(pid).is_ok_and(|interp| {
            find_apps(&interp, &cmdline)
                .is_ok_and(|apps| apps.len() == 1 && apps[0].via.starts_with(expect_via))
        });
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let interp = Interpreter::attach(pid).unwrap_or_else(|e| panic!("{label}: attach {pid}: {e}"));
    let apps = find_apps(&interp, &cmdline).unwrap_or_else(|e| panic!("{label}: find_apps: {e}"));
    assert_eq!(apps.len(), 1, "{label}: {apps:?}");
    assert!(
        apps[0].via.starts_with(expect_via),
        "{label}: found via {:?}, expected {expect_via}",
        apps[0].via
    );
    let map =
        read_url_map(&interp, apps[0].addr).unwrap_or_else(|e| panic!("{label}: url_map: {e}"));
    let want = expected(j);
    assert!(
        want.len() >= 10,
        "{label}: the app printed {} rules",
        want.len()
    );
    assert_eq!(map.routes, want, "{label}: routes");
    assert_eq!(
        map.strict_slashes,
        j["strict_slashes"].as_bool().unwrap_or(true),
        "{label}"
    );
    assert_eq!(
        map.merge_slashes,
        j["merge_slashes"].as_bool().unwrap_or(true),
        "{label}"
    );
    assert_eq!(
        map.converters.get("int").map(String::as_str),
        Some("IntegerConverter"),
        "{label}: {:?}",
        map.converters
    );
    assert_eq!(
        map.converters.get("any").map(String::as_str),
        Some("AnyConverter"),
        "{label}"
    );
    assert_eq!(
        map.defaults.get("/page/"),
        Some(&vec![("n".to_owned(), "1".to_owned())]),
        "{label}"
    );
    // The convenience entry point agrees.
    let start = std::time::Instant::now();
    let again = routes(pid);
    let took = start.elapsed();
    assert_eq!(
        again.map(|m| m.routes).ok(),
        Some(want),
        "{label}: routes()"
    );
    eprintln!(
        "{label}: ok ({} routes, via {}; routes() took {took:?})",
        map.routes.len(),
        apps[0].via
    );
}

#[test]
fn reads_url_map_of_real_apps() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fmdapp.py"), APP).expect("write app");
    let mut cases = Vec::new();
    for (label, python) in interpreters() {
        let name = if label.starts_with("debian") {
            "sys3.11".to_owned()
        } else {
            label.replace("pyenv ", "")
        };
        // Werkzeug before 2.2 (Map._rules, Map.merge_slashes a plain attribute), on one interpreter.
        if label == "pyenv 3.9" {
            cases.push((
                format!("{label} flask 2.0"),
                python.clone(),
                format!("{name}-flask2.0"),
                vec!["flask==2.0.3", "werkzeug==2.0.3", "gunicorn"],
            ));
        }
        cases.push((label, python, name, vec!["flask", "gunicorn"]));
    }
    for (label, python, name, packages) in cases {
        let venv = venv(&label, &python, &name, &packages);
        // A script: the app is reachable only through the module-level ProxyFix wrapper.
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.arg(dir.path().join("fmdapp.py"));
        let child =
            spawn_json(cmd, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{label}: {e:#}"));
        check(
            &format!("{label} script"),
            child.pid(),
            &child.json,
            "module __main__.application",
        );
        drop(child);

        // gunicorn with an app factory: the app is only in the worker's frames (`self.wsgi`).
        let sock = dir
            .path()
            .join(format!("g-{}.sock", label.replace(' ', "-")));
        let mut cmd = Command::new(venv.join("bin/gunicorn"));
        cmd.current_dir(dir.path())
            .args(["-w", "1", "-b"])
            .arg(format!("unix:{}", sock.display()))
            .arg("fmdapp:create_app()");
        let master = spawn_json(cmd, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{label} gunicorn: {e:#}"));
        let worker = master.json["pid"].as_u64().unwrap_or(0) as u32;
        assert_ne!(
            worker,
            master.pid(),
            "{label}: the factory ran in the master"
        );
        // Let the worker reach its accept loop.
        std::thread::sleep(Duration::from_millis(500));
        check(&format!("{label} gunicorn"), worker, &master.json, "frame ");
        drop(master);

        // gunicorn with `module:app`: found from the command line.
        let mut cmd = Command::new(venv.join("bin/gunicorn"));
        cmd.current_dir(dir.path())
            .env("FMD_MODULE_APP", "1")
            .args(["-w", "1", "-b"])
            .arg(format!("unix:{}", sock.display()))
            .arg("fmdapp:app");
        let master = spawn_json(cmd, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{label} gunicorn: {e:#}"));
        let worker = master.json["pid"].as_u64().unwrap_or(0) as u32;
        check(
            &format!("{label} gunicorn module:app"),
            worker,
            &master.json,
            "gunicorn fmdapp:app",
        );
    }
}

/// Two apps behind werkzeug's DispatcherMiddleware: both are found, each with its own routes.
#[test]
fn finds_every_app_behind_a_dispatcher() {
    const SCRIPT: &str = r#"
import json, os, time
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
def build():
    front, admin = Flask("front"), Flask("admin")
    front.add_url_rule("/", "home", lambda: "h")
    admin.add_url_rule("/users/<int:id>", "user", lambda id: "u")
    print(json.dumps({"rules": sorted(r.rule for a in (front, admin) for r in a.url_map.iter_rules())}), flush=True)
    return DispatcherMiddleware(front, {"/admin": admin})
application = build()
while True:
    time.sleep(3600)
"#;
    let Some((label, python)) = interpreters().into_iter().find(|(l, _)| l == "pyenv 3.12") else {
        eprintln!("skipping: no pyenv 3.12");
        return;
    };
    let venv = venv(&label, &python, "3.12", &["flask", "gunicorn"]);
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg("-c").arg(SCRIPT);
    let child =
        spawn_json(cmd, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    let found = apps(child.pid()).unwrap_or_else(|e| panic!("{label}: {e}"));
    let mut vias: Vec<&str> = found.iter().map(|(a, _)| a.via.as_str()).collect();
    vias.sort_unstable();
    assert_eq!(
        vias,
        [
            "module __main__.application.app",
            "module __main__.application.mounts"
        ]
    );
    let mut rules: Vec<String> = found
        .iter()
        .flat_map(|(_, m)| m.routes.iter().map(|r| r.rule.clone()))
        .collect();
    rules.sort();
    let want: Vec<String> = child.json["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    assert_eq!(rules, want);
}

/// The whole pipeline (attach, threads, frames, modules, app search, url_map) over garbage memory: errors or
/// empty results, never a panic or a hang.
#[test]
fn garbage_memory_never_panics_or_hangs() {
    let start = std::time::Instant::now();
    let pid = std::process::id();
    let mut attached = 0;
    for seed in [7u64, 0xfeed] {
        let mut rng = XorShift(seed);
        for bytes in garbage(seed) {
            for layout in Layout::all() {
                let mut bytes = bytes.clone();
                let runtime_off = (rng.next_u64() % (SIZE as u64 / 2)) & !7;
                if layout.debug_offsets.is_some() {
                    // Let 3.13 get past the cookie and version checks into the garbage offsets.
                    let at = runtime_off as usize;
                    bytes[at..at + 8].copy_from_slice(b"xdebugpy");
                    let version =
                        (u64::from(layout.version.0) << 24) | (u64::from(layout.version.1) << 16);
                    bytes[at + 8..at + 16].copy_from_slice(&version.to_le_bytes());
                }
                // One interpreter state (garbage apart from its `next`), so the walks below really run.
                let interp_off = SIZE as u64 / 2 + ((rng.next_u64() % (SIZE as u64 / 4)) & !7);
                let head_at = (runtime_off + layout.runtime_interpreters_head) as usize;
                if head_at + 8 <= SIZE {
                    bytes[head_at..head_at + 8].copy_from_slice(&(BASE + interp_off).to_le_bytes());
                }
                let next_at = (interp_off + layout.interp_next) as usize;
                if next_at + 8 <= SIZE {
                    bytes[next_at..next_at + 8].copy_from_slice(&0u64.to_le_bytes());
                }
                let mem = SliceMemory::new().with_region(BASE, bytes);
                let mut symbols = types_in_region(&mut rng).by_name;
                symbols.insert("_PyRuntime", BASE + runtime_off);
                let binary = Binary {
                    path: "/garbage/libpython3.so".into(),
                    load_bias: 0,
                    version: Version {
                        major: layout.version.0,
                        minor: layout.version.1,
                        micro: None,
                    },
                    symbols,
                };
                let Ok(interp) = Interpreter::with_memory(pid, binary, mem) else {
                    continue;
                };
                attached += 1;
                if let Ok(threads) = interp.threads() {
                    for t in threads.iter().take(8) {
                        for f in interp.frames(t).unwrap_or_default().iter().take(8) {
                            let _ = interp.frame_locals(f);
                            let _ = interp.code_name(f.code);
                        }
                    }
                }
                let _ = interp.tid_map();
                let _ = interp.modules();
                let cmdline = vec!["gunicorn".to_owned(), "app:app".to_owned()];
                let _ = find_apps(&interp, &cmdline);
                for _ in 0..20 {
                    let _ = read_url_map(&interp, (BASE + rng.next_u64() % SIZE as u64) & !7);
                }
            }
        }
    }
    assert!(
        attached > 10,
        "only {attached} garbage interpreters attached"
    );
    eprintln!(
        "{attached} garbage interpreters walked in {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "took {:?}",
        start.elapsed()
    );
}
