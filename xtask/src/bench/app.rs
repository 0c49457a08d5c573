//! The benchmark app (tests/apps/bench_app.py) under gunicorn on a free loopback port, ready to serve.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::process::{self, Guard};
use crate::paths;

pub struct App {
    pub guard: Guard,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub workers: Vec<u32>,
}

pub struct Spec<'a> {
    /// gunicorn's `module:callable`.
    pub module: &'a str,
    pub workers: u32,
    /// gunicorn's `--worker-class` (`sync`, `gthread`) and, for gthread, its `--threads`.
    pub worker_class: &'a str,
    pub threads: u32,
    pub env: Vec<(&'a str, String)>,
}

impl App {
    pub fn master(&self) -> u32 {
        self.guard.pid()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts gunicorn from `venv` and waits until every worker has answered `probe`.
pub fn start(venv: &Path, spec: &Spec<'_>, probe: &str, log: &Path) -> Result<App> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let gunicorn = venv.join("bin/gunicorn");
    let mut cmd = Command::new(&gunicorn);
    cmd.args([
        "--workers",
        &spec.workers.to_string(),
        "--worker-class",
        spec.worker_class,
        "--threads",
        &spec.threads.max(1).to_string(),
        "--bind",
        &addr,
    ])
    .arg("--chdir")
    .arg(paths::workspace().join("tests/apps"))
    .envs(spec.env.iter().map(|(k, v)| (k, v)));
    if supports_no_control_socket(&gunicorn) {
        // gunicorn >= 24 opens a control socket at one fixed path; parallel gunicorns would fight over it.
        cmd.arg("--no-control-socket");
    }
    cmd.arg(spec.module);
    // SIGQUIT is gunicorn's quick shutdown (nothing is left to serve). A worker that still lingers after
    // 5 s is held up by its monitor (Flask-MonitoringDashboard's threads at level 3) and is killed.
    let guard = Guard::spawn(
        "gunicorn",
        &mut cmd,
        log,
        libc::SIGQUIT,
        Duration::from_secs(5),
    )?;
    let mut app = App {
        guard,
        addr,
        workers: vec![],
    };
    process::wait_for_port(&app.addr, "gunicorn", Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        app.workers = process::children(app.master());
        if app.workers.len() == spec.workers as usize && get(&app.addr, probe).is_ok() {
            break;
        }
        if let Some(status) = app.guard.exited() {
            bail!("gunicorn exited ({status}); see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!(
                "gunicorn's workers did not answer {probe} within 60 s; see {}",
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    // Every worker must have imported the app before measuring: a few more probes reach the others.
    for _ in 0..spec.workers * 4 {
        get(&app.addr, probe)?;
    }
    Ok(app)
}

fn supports_no_control_socket(gunicorn: &Path) -> bool {
    Command::new(gunicorn)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--no-control-socket"))
}

pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// One GET; an error unless the answer is a 200.
pub fn get(addr: &str, path: &str) -> Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    if !answer.starts_with(b"HTTP/1.1 200") && !answer.starts_with(b"HTTP/1.0 200") {
        bail!(
            "GET {path} answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
    }
    Ok(())
}
