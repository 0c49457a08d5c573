//! Capture pipeline capacity: the highest request rate the daemon records with nothing lost. Flask under
//! gunicorn serves a few thousand requests per second on 2 cores, far below the 20,000 the target asks for, so
//! the load comes from tests/bench/capacity_server.py (a forking asyncio server with kept-alive connections,
//! still Python, which the daemon attaches to like a gunicorn master) at increasing wrk connection counts; each
//! step gets a fresh server, daemon and database.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{
    app,
    daemon::{self, Features},
    process::{self, Guard},
    results::{Capacity, CapacityStep},
    wrk::{self, Load},
};

pub struct Settings {
    pub workers: u32,
    pub threads: u32,
    pub connections: Vec<u32>,
    pub duration: Duration,
}

pub fn run(
    app_venv: &Path,
    daemon: &Path,
    features: &Features,
    work: &Path,
    settings: &Settings,
) -> Capacity {
    let mut capacity = Capacity {
        note: None,
        server: "tests/bench/capacity_server.py (asyncio, HTTP/1.1 keep-alive, a forking master), Python 3.11"
            .into(),
        workers: settings.workers,
        duration_s: settings.duration.as_secs(),
        steps: vec![],
        max_zero_loss_rps: None,
    };
    if !features.query_stats {
        capacity.note = Some(
            "not available: this fmd-daemon has no `query stats` command to read its counters from"
                .into(),
        );
        return capacity;
    }
    for &connections in &settings.connections {
        eprintln!("bench: capacity, {connections} connections");
        match step(app_venv, daemon, features, work, settings, connections) {
            Ok(s) => capacity.steps.push(s),
            Err(e) => {
                eprintln!("bench: capacity step failed: {e:#}");
                capacity.note = Some(format!("not available beyond the steps shown: {e:#}"));
                break;
            }
        }
    }
    capacity.max_zero_loss_rps = capacity
        .steps
        .iter()
        .filter(|s| s.lossless())
        .map(|s| s.rps)
        .reduce(f64::max);
    capacity
}

fn step(
    app_venv: &Path,
    daemon_bin: &Path,
    features: &Features,
    work: &Path,
    settings: &Settings,
    connections: u32,
) -> Result<CapacityStep> {
    let (server, addr) = start_server(
        app_venv,
        settings.workers,
        &work.join(format!("capacity-{connections}-server.log")),
    )?;
    let db = work.join(format!("capacity-{connections}.duckdb"));
    let guard = daemon::attach(
        daemon_bin,
        features,
        server.pid(),
        &db,
        None,
        &work.join(format!("capacity-{connections}-daemon.log")),
    )?;
    let pid = guard.pid();
    let before = process::cpu_seconds(pid);
    let measured = wrk::run(&Load {
        url: &format!("http://{addr}/"),
        threads: settings.threads,
        connections,
        duration: settings.duration,
    })?;
    // Let the daemon drain what is still in its ring buffers before reading its CPU time and stopping it.
    thread::sleep(Duration::from_secs(1));
    let after = process::cpu_seconds(pid);
    let rss = process::peak_rss_mib(pid);
    guard.stop()?;
    if let Err(e) = server.stop() {
        eprintln!("bench: {e:#} (after its measurement: no effect on it)");
    }
    let stats = daemon::stats(daemon_bin, &db)?;
    let cpu_ms_per_1k = match (before, after) {
        (Some(b), Some(a)) if stats.requests_stored > 0 => {
            Some((a - b) * 1e6 / stats.requests_stored as f64)
        }
        _ => None,
    };
    Ok(CapacityStep {
        connections,
        rps: measured.rps,
        wrk_requests: measured.requests,
        // The probes app::start sent before the daemon attached are not in the store, so nothing to subtract.
        requests_stored: stats.requests_stored,
        events_lost: stats.events_lost,
        daemon_cpu_ms_per_1k: cpu_ms_per_1k,
        daemon_peak_rss_mib: rss,
    })
}

/// Starts capacity_server.py with `workers` forked workers; returns it and its `127.0.0.1:PORT` once every
/// worker exists and the server answers.
fn start_server(venv: &Path, workers: u32, log: &Path) -> Result<(Guard, String)> {
    let addr = format!("127.0.0.1:{}", app::free_port()?);
    let port = addr.rsplit(':').next().unwrap_or_default().to_owned();
    let mut guard = Guard::spawn(
        "capacity_server.py",
        Command::new(venv.join("bin/python"))
            .arg(crate::paths::workspace().join("tests/bench/capacity_server.py"))
            .args([port, workers.to_string()]),
        log,
        libc::SIGTERM,
        Duration::from_secs(5),
    )?;
    process::wait_for_port(&addr, "capacity_server.py", Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while process::children(guard.pid()).len() < workers as usize || app::get(&addr, "/").is_err() {
        if let Some(status) = guard.exited() {
            bail!(
                "capacity_server.py exited ({status}): {}",
                daemon::tail(log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "capacity_server.py's workers did not answer within 30 s: {}",
                daemon::tail(log)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok((guard, addr))
}
