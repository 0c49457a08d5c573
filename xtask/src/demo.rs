//! `cargo xtask demo`: the sample shop app (tests/apps/demo_app.py) under gunicorn with two workers, fmd
//! attached to its master, some traffic, and where to look. Runs until Ctrl-C (or `--duration`).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{build, paths, python, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Port of the sample app.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Where the daemon serves its dashboard and API.
    #[arg(long, default_value = "127.0.0.1:9876")]
    listen: String,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long)]
    duration: Option<u64>,
}

/// Kills its process (SIGTERM, then SIGKILL) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: &Args) -> Result<()> {
    setup::build_tools()?;
    setup::debian(&["python3.11", "python3.11-venv"])?;
    let interp = python::matrix()
        .into_iter()
        .next()
        .context("no Python interpreter for the demo app")?;
    let venv = python::venvs_dir().join(&interp.label);
    python::ensure_venv(
        &interp.python,
        &venv,
        &paths::workspace().join("tests/apps/requirements.txt"),
    )?;
    let daemon = build::release()?;

    let db = paths::workspace().join(".fmd/demo.duckdb");
    let app_addr = format!("127.0.0.1:{}", args.port);
    if TcpStream::connect(&app_addr).is_ok() {
        bail!("port {} is already in use: pass --port", args.port);
    }
    let gunicorn = Guard(
        Command::new(venv.join("bin/gunicorn"))
            .args([
                "--workers",
                "2",
                "--bind",
                &app_addr,
                "--access-logfile",
                "/dev/null",
            ])
            // The demo app fails on purpose now and then; its tracebacks go to a file, not over the guide.
            .arg("--error-logfile")
            .arg(paths::workspace().join(".fmd/demo-gunicorn.log"))
            .arg("demo_app:app")
            .current_dir(paths::workspace().join("tests/apps"))
            .spawn()
            .context("cannot start gunicorn")?,
    );
    wait_for(&app_addr, "the demo app")?;
    let fmd = Guard(
        Command::new(&daemon)
            .arg("--pid")
            .arg(gunicorn.0.id().to_string())
            .arg("--db")
            .arg(&db)
            .args(["--listen", &args.listen])
            .spawn()
            .context("cannot start fmd-daemon")?,
    );
    wait_for(&args.listen, "fmd-daemon's API")?;

    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || handler_stop.store(true, Ordering::SeqCst))
        .context("cannot handle Ctrl-C")?;
    let sent = traffic(&app_addr, 300);
    print_guide(&args.listen, &db, &daemon, sent);
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        thread::sleep(Duration::from_secs(1));
        round += 1;
        if round.is_multiple_of(5) {
            traffic(&app_addr, 20);
        }
    }
    eprintln!("stopping the daemon and the demo app");
    drop(fmd);
    drop(gunicorn);
    Ok(())
}

fn wait_for(addr: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not start listening on {addr} within 60 s")
}

/// Sends `n` requests spread over the app's endpoints; returns how many got an answer.
fn traffic(addr: &str, n: usize) -> usize {
    const PATHS: &[(&str, &str)] = &[
        ("GET", "/"),
        ("GET", "/api/users"),
        ("GET", "/api/users/7"),
        ("GET", "/api/users/4242"),
        ("POST", "/api/users"),
        ("GET", "/api/search?q=user1"),
        ("GET", "/reports/monthly"),
        ("GET", "/compute/3000"),
        ("GET", "/flaky"),
        ("GET", "/no/such/page"),
    ];
    (0..n)
        .filter(|i| {
            let (method, path) = PATHS[i % PATHS.len()];
            let body = if method == "POST" {
                r#"{"name": "demo"}"#
            } else {
                ""
            };
            request(addr, method, path, body).is_ok()
        })
        .count()
}

fn request(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fmd-demo\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(())
}

fn print_guide(listen: &str, db: &Path, daemon: &Path, sent: usize) {
    let db = db.display();
    let daemon = daemon.display();
    println!(
        "\nfmd is monitoring the demo app (gunicorn, 2 workers) and has seen {sent} requests so far.\n\n  \
         dashboard:  http://{listen}/  (first run: open the setup link printed above to create your admin;\n              \
         or: {daemon} user add NAME --admin --db {db})\n  JSON API:   \
         curl -H \"Authorization: Bearer $(cat {db}.token)\" http://{listen}/api/requests?limit=5\n  CLI:        \
         {daemon} query requests --db {db} --format table --limit 20\n  stats:      {daemon} query stats --db {db}\n\n\
         The demo sends a little traffic every 5 s; press Ctrl-C to stop."
    );
}
