//! Overhead on the monitored app: the bench app under one sync gunicorn worker, bare and under each monitor
//! (fmd at levels 1 and 3, Flask-MonitoringDashboard at levels 1 and 3, py-spy), driven by wrk. The
//! configurations run round-robin so slow drifts of the machine (thermal, other load) spread over all of them.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{bail, Result};

use super::{
    app::{self, App},
    daemon::{self, Features},
    process::{self, Guard},
    report::ENDPOINTS,
    results::{median, Configuration, EndpointFigures, Overhead},
    wrk::{self, Load, Measured},
};

pub struct Settings {
    pub threads: u32,
    pub connections: u32,
    pub warmup: Duration,
    pub duration: Duration,
    pub repetitions: u32,
}

/// Where the pieces are.
pub struct Env<'a> {
    pub app_venv: &'a Path,
    pub tools_venv: &'a Path,
    pub daemon: &'a Path,
    pub features: &'a Features,
    /// Scratch space for databases, logs and profiles.
    pub work: &'a Path,
}

#[derive(Clone, Copy)]
enum Monitor {
    Bare,
    Fmd { sample_hz: Option<u32> },
    Dashboard { level: u8 },
    PySpy { rate: u32 },
}

struct Spec {
    name: &'static str,
    description: &'static str,
    monitor: Monitor,
}

const SPECS: &[Spec] = &[
    Spec { name: "bare", description: "no monitor", monitor: Monitor::Bare },
    Spec {
        name: "fmd-l1",
        description: "fmd-daemon attached to the gunicorn master, level 1 (requests only)",
        monitor: Monitor::Fmd { sample_hz: None },
    },
    Spec {
        name: "fmd-l3-100hz",
        description: "fmd-daemon, level 3 (requests and the profiler) sampling at 100 Hz",
        monitor: Monitor::Fmd { sample_hz: Some(100) },
    },
    Spec {
        name: "fmd-l3-5ms",
        description: "fmd-daemon, level 3 sampling every 5 ms (200 Hz)",
        monitor: Monitor::Fmd { sample_hz: Some(200) },
    },
    Spec {
        name: "dashboard-l1",
        description: "Flask-MonitoringDashboard (latest on PyPI) bound to the app, MONITOR_LEVEL=1 for every \
                      endpoint, SQLite",
        monitor: Monitor::Dashboard { level: 1 },
    },
    Spec {
        name: "dashboard-l3",
        description: "Flask-MonitoringDashboard, MONITOR_LEVEL=3 (profiler and outliers) for every endpoint, its \
                      default sampling period (5 ms)",
        monitor: Monitor::Dashboard { level: 3 },
    },
    Spec {
        name: "py-spy-100hz",
        description: "`py-spy record --rate 100 --nonblocking --pid <worker>` attached to the worker",
        monitor: Monitor::PySpy { rate: 100 },
    },
];

/// One repetition of one configuration.
struct Run {
    endpoints: BTreeMap<String, Measured>,
    monitor_cpu_s: Option<f64>,
    monitor_rss_mib: Option<f64>,
    worker_rss_mib: Option<f64>,
    /// wrk's responses, warm-ups included.
    served: u64,
    /// What fmd-daemon stored (fmd configurations with `query stats` only).
    stored: Option<u64>,
}

pub fn run(env: &Env<'_>, settings: &Settings) -> Overhead {
    let mut notes: BTreeMap<&str, String> = SPECS
        .iter()
        .filter_map(|s| match s.monitor {
            Monitor::Fmd { sample_hz: Some(_) } if !env.features.sample_hz => Some((
                s.name,
                "not available: profiler not implemented (fmd-daemon --help lists no --sample-hz)"
                    .into(),
            )),
            _ => None,
        })
        .collect();
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for rep in 0..settings.repetitions {
        let pending: Vec<&Spec> = SPECS
            .iter()
            .filter(|s| !notes.contains_key(s.name))
            .collect();
        for spec in pending {
            eprintln!(
                "bench: overhead, repetition {}/{}, {}",
                rep + 1,
                settings.repetitions,
                spec.name
            );
            match run_once(env, settings, spec, rep) {
                Ok(run) => runs.entry(spec.name).or_default().push(run),
                Err(e) => {
                    // A monitor that cannot run once will not run on the next repetition either.
                    eprintln!("bench: {} failed: {e:#}", spec.name);
                    notes.insert(spec.name, format!("not available: {e:#}"));
                    runs.remove(spec.name);
                }
            }
        }
    }
    summarise(settings, &runs, &notes)
}

fn summarise(
    settings: &Settings,
    runs: &BTreeMap<&str, Vec<Run>>,
    notes: &BTreeMap<&str, String>,
) -> Overhead {
    let mut configurations: Vec<Configuration> = SPECS
        .iter()
        .map(|spec| {
            let runs = runs.get(spec.name).map_or(&[][..], Vec::as_slice);
            let endpoints = ENDPOINTS
                .iter()
                .filter_map(|(endpoint, _)| {
                    let measured: Vec<Measured> = runs
                        .iter()
                        .filter_map(|r| r.endpoints.get(*endpoint).cloned())
                        .collect();
                    let of = |f: fn(&Measured) -> f64| {
                        median(&measured.iter().map(f).collect::<Vec<_>>())
                    };
                    Some((
                        (*endpoint).to_string(),
                        EndpointFigures {
                            rps: of(|m| m.rps)?,
                            p50_ms: of(|m| m.p50_ms)?,
                            p99_ms: of(|m| m.p99_ms)?,
                            ratio_to_bare: None,
                            p99_ratio_to_bare: None,
                            runs: measured,
                        },
                    ))
                })
                .collect();
            let requests: Vec<f64> = runs
                .iter()
                .map(|r| r.endpoints.values().map(|m| m.requests as f64).sum::<f64>())
                .collect();
            let per_1k: Vec<f64> = runs
                .iter()
                .zip(&requests)
                .filter_map(|(r, n)| Some(r.monitor_cpu_s? * 1e6 / n.max(1.0)))
                .collect();
            let peak = |f: fn(&Run) -> Option<f64>| runs.iter().filter_map(f).reduce(f64::max);
            Configuration {
                name: spec.name.into(),
                description: spec.description.into(),
                note: notes.get(spec.name).cloned(),
                endpoints,
                monitor_cpu_s: median(
                    &runs
                        .iter()
                        .filter_map(|r| r.monitor_cpu_s)
                        .collect::<Vec<_>>(),
                ),
                monitor_cpu_ms_per_1k: median(&per_1k),
                monitor_peak_rss_mib: peak(|r| r.monitor_rss_mib),
                worker_peak_rss_mib: peak(|r| r.worker_rss_mib),
                requests_served: runs
                    .iter()
                    .any(|r| r.stored.is_some())
                    .then(|| runs.iter().map(|r| r.served).sum()),
                requests_stored: runs
                    .iter()
                    .any(|r| r.stored.is_some())
                    .then(|| runs.iter().filter_map(|r| r.stored).sum()),
            }
        })
        .collect();
    let bare = configurations
        .iter()
        .find(|c| c.name == "bare")
        .map(|c| c.endpoints.clone())
        .unwrap_or_default();
    for config in &mut configurations {
        for (endpoint, figures) in &mut config.endpoints {
            if let Some(b) = bare.get(endpoint) {
                figures.ratio_to_bare = (b.rps > 0.0).then(|| figures.rps / b.rps);
                figures.p99_ratio_to_bare = (b.p99_ms > 0.0).then(|| figures.p99_ms / b.p99_ms);
            }
        }
    }
    Overhead {
        wrk_threads: settings.threads,
        connections: settings.connections,
        warmup_s: settings.warmup.as_secs(),
        duration_s: settings.duration.as_secs(),
        repetitions: settings.repetitions,
        configurations,
    }
}

fn run_once(env: &Env<'_>, settings: &Settings, spec: &Spec, rep: u32) -> Result<Run> {
    let log = |what: &str| env.work.join(format!("{}-{rep}-{what}.log", spec.name));
    let mut app_spec = app::Spec {
        module: "bench_app:app",
        workers: 1,
        worker_class: "sync",
        threads: 1,
        env: vec![],
    };
    if let Monitor::Dashboard { level } = spec.monitor {
        let config = dashboard_config(env.work, spec.name, level)?;
        app_spec.module = "bench_app_fmd:app";
        app_spec
            .env
            .push(("FMD_BENCH_DASHBOARD_CONFIG", config.display().to_string()));
    }
    let app = app::start(env.app_venv, &app_spec, "/trivial", &log("gunicorn"))?;
    let worker = *app
        .workers
        .first()
        .expect("app::start waits for the worker");
    let monitor = start_monitor(env, spec, &app, worker, rep)?;
    let monitor_pid = monitor.as_ref().map(Guard::pid);

    let mut endpoints = BTreeMap::new();
    let mut served = 0;
    let mut monitor_cpu_s = monitor_pid.map(|_| 0.0);
    for (endpoint, _) in ENDPOINTS {
        let url = app.url(&format!("/{endpoint}"));
        let load = |duration| Load {
            url: &url,
            threads: settings.threads,
            connections: settings.connections,
            duration,
        };
        served += wrk::run(&load(settings.warmup))?.requests;
        let before = monitor_pid.and_then(process::cpu_seconds);
        let measured = wrk::run(&load(settings.duration))?;
        let after = monitor_pid.and_then(process::cpu_seconds);
        if let (Some(total), Some(b), Some(a)) = (monitor_cpu_s.as_mut(), before, after) {
            *total += a - b;
        }
        served += measured.requests;
        endpoints.insert((*endpoint).to_string(), measured);
    }
    let mut run = Run {
        endpoints,
        monitor_cpu_s,
        monitor_rss_mib: monitor_pid.and_then(process::peak_rss_mib),
        worker_rss_mib: process::peak_rss_mib(worker),
        served,
        stored: None,
    };
    if let Some(mut monitor) = monitor {
        if let Some(status) = monitor.exited() {
            bail!(
                "{} exited during the run ({status}); see {}",
                spec.name,
                log("monitor").display()
            );
        }
        monitor.stop()?;
    }
    if let Err(e) = app.guard.stop() {
        // Its figures are in already; Flask-MonitoringDashboard's threads often hold the worker up.
        eprintln!("bench: {e:#} (after its measurements: no effect on them)");
    }
    if matches!(spec.monitor, Monitor::Fmd { .. }) && env.features.query_stats {
        run.stored = Some(daemon::stats(env.daemon, &fmd_db(env, spec, rep))?.requests_stored);
    }
    Ok(run)
}

fn start_monitor(
    env: &Env<'_>,
    spec: &Spec,
    app: &App,
    worker: u32,
    rep: u32,
) -> Result<Option<Guard>> {
    let log = env.work.join(format!("{}-{rep}-monitor.log", spec.name));
    match spec.monitor {
        Monitor::Bare | Monitor::Dashboard { .. } => Ok(None),
        Monitor::Fmd { sample_hz } => {
            let db = fmd_db(env, spec, rep);
            Ok(Some(daemon::attach(
                env.daemon,
                env.features,
                app.master(),
                &db,
                sample_hz,
                &log,
            )?))
        }
        Monitor::PySpy { rate } => {
            let profile = env.work.join(format!("{}-{rep}.txt", spec.name));
            let mut guard = Guard::spawn(
                "py-spy",
                Command::new(env.tools_venv.join("bin/py-spy"))
                    .args([
                        "record",
                        "--rate",
                        &rate.to_string(),
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--output",
                    ])
                    .arg(&profile)
                    .args(["--pid", &worker.to_string()]),
                &log,
                libc::SIGINT,
                Duration::from_secs(15),
            )?;
            // py-spy attaches within a fraction of a second; give it one before the warm-up, and make sure it did.
            thread::sleep(Duration::from_secs(1));
            if let Some(status) = guard.exited() {
                bail!("py-spy exited ({status}): {}", daemon::tail(&log));
            }
            Ok(Some(guard))
        }
    }
}

fn fmd_db(env: &Env<'_>, spec: &Spec, rep: u32) -> PathBuf {
    env.work.join(format!("{}-{rep}.duckdb", spec.name))
}

/// A dashboard configuration file with `level` for every endpoint and a fresh database, as its docs describe.
fn dashboard_config(work: &Path, name: &str, level: u8) -> Result<PathBuf> {
    let db = work.join(format!("{name}.sqlite"));
    let _ = fs::remove_file(&db);
    let path = work.join(format!("{name}.cfg"));
    fs::write(
        &path,
        format!(
            "[dashboard]\nMONITOR_LEVEL={level}\n\n[database]\nDATABASE=sqlite:///{}\n",
            db.display()
        ),
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(rps: f64, p99_ms: f64) -> Measured {
        Measured {
            requests: (rps * 10.0) as u64,
            rps,
            p50_ms: 1.0,
            p99_ms,
            errors: 0,
        }
    }

    fn run(rps: f64, p99_ms: f64, cpu: Option<f64>) -> Run {
        Run {
            endpoints: ENDPOINTS
                .iter()
                .map(|(e, _)| ((*e).to_string(), measured(rps, p99_ms)))
                .collect(),
            monitor_cpu_s: cpu,
            monitor_rss_mib: cpu.map(|_| 50.0),
            worker_rss_mib: Some(30.0),
            served: 100,
            stored: cpu.map(|_| 99),
        }
    }

    /// (configuration, rps of each repetition) → (configuration, median rps and ratio on `trivial`).
    fn check(input: Vec<(&'static str, Vec<f64>)>, expect: &[(&str, Option<(f64, f64)>)]) {
        let settings = Settings {
            threads: 1,
            connections: 4,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            repetitions: 3,
        };
        let runs = input
            .into_iter()
            .map(|(name, rps)| {
                (
                    name,
                    rps.into_iter().map(|r| run(r, 10.0, Some(0.5))).collect(),
                )
            })
            .collect();
        let notes = BTreeMap::from([(
            "fmd-l3-5ms",
            "not available: profiler not implemented".to_string(),
        )]);
        let overhead = summarise(&settings, &runs, &notes);
        for (name, want) in expect {
            let config = overhead
                .configurations
                .iter()
                .find(|c| c.name == *name)
                .expect("every spec is reported");
            let got = config
                .endpoints
                .get("trivial")
                .map(|f| (f.rps, f.ratio_to_bare.unwrap_or(f64::NAN)));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn medians_and_ratios_to_bare() {
        check(
            vec![
                ("bare", vec![1000.0, 900.0, 1100.0]),
                ("fmd-l1", vec![990.0, 500.0, 995.0]),
                ("py-spy-100hz", vec![800.0]),
            ],
            &[
                ("bare", Some((1000.0, 1.0))),
                ("fmd-l1", Some((990.0, 0.99))),
                ("py-spy-100hz", Some((800.0, 0.8))),
                ("fmd-l3-5ms", None),
            ],
        );
    }

    #[test]
    fn no_bare_means_no_ratio() {
        let runs = BTreeMap::from([("fmd-l1", vec![run(500.0, 1.0, Some(2.0))])]);
        let settings = Settings {
            threads: 1,
            connections: 4,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            repetitions: 1,
        };
        let overhead = summarise(&settings, &runs, &BTreeMap::new());
        let fmd = overhead
            .configurations
            .iter()
            .find(|c| c.name == "fmd-l1")
            .expect("reported");
        let trivial = fmd.endpoints.get("trivial").expect("measured");
        assert_eq!(
            (trivial.ratio_to_bare, fmd.monitor_cpu_s),
            (None, Some(2.0))
        );
        // 2 s of CPU over 4 endpoints x 5,000 requests: 0.1 ms per request, 100 ms per 1,000.
        assert_eq!(fmd.monitor_cpu_ms_per_1k, Some(100.0));
        assert_eq!(
            (fmd.requests_served, fmd.requests_stored),
            (Some(100), Some(99))
        );
    }
}
