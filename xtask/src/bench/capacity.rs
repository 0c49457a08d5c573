//! Capture pipeline capacity: the highest request rate the daemon records with nothing lost. The load comes
//! from a bare WSGI callable (bench_app:raw) under several gunicorn workers, the fastest Python server the
//! daemon can attach to, at increasing wrk connection counts; each step gets a fresh daemon and database.

use std::{path::Path, thread, time::Duration};

use anyhow::Result;

use super::{
    app,
    daemon::{self, Features},
    process,
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
        server:
            "gunicorn (sync workers) serving a bare WSGI callable (tests/apps/bench_app.py `raw`)"
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
    let spec = app::Spec {
        module: "bench_app:raw",
        workers: settings.workers,
        env: vec![],
    };
    let app = app::start(
        app_venv,
        &spec,
        "/",
        &work.join(format!("capacity-{connections}-gunicorn.log")),
    )?;
    let db = work.join(format!("capacity-{connections}.duckdb"));
    let guard = daemon::attach(
        daemon_bin,
        features,
        app.master(),
        &db,
        None,
        &work.join(format!("capacity-{connections}-daemon.log")),
    )?;
    let pid = guard.pid();
    let before = process::cpu_seconds(pid);
    let measured = wrk::run(&Load {
        url: &app.url("/"),
        threads: settings.threads,
        connections,
        duration: settings.duration,
    })?;
    // Let the daemon drain what is still in its ring buffers before reading its CPU time and stopping it.
    thread::sleep(Duration::from_secs(1));
    let after = process::cpu_seconds(pid);
    let rss = process::peak_rss_mib(pid);
    guard.stop()?;
    app.guard.stop()?;
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
