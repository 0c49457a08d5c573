//! `cargo xtask bench`: what monitoring with fmd costs the app, side by side with Flask-MonitoringDashboard and
//! py-spy; how many requests per second the daemon records without losing any; and how fast the dashboard's
//! views are at millions of requests. Writes BENCHMARKS.md and tests/bench/results.json (issue 5).

mod app;
mod capacity;
mod daemon;
mod machine;
mod overhead;
mod process;
mod queries;
mod report;
mod results;
mod soak;
mod wrk;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{build, paths, python, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Smoke mode for CI: every configuration briefly (1-2 s, one repetition, a 100k-row store). Figures are
    /// meaningless; results go to target/bench/ unless --output-dir says otherwise.
    #[arg(long)]
    quick: bool,
    /// Only render BENCHMARKS.md again from an existing results.json.
    #[arg(long)]
    report_only: bool,
    /// Measure this fmd-daemon binary instead of building target/release/fmd-daemon.
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Run only these parts (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Where BENCHMARKS.md and results.json go (default: the repository for a full run, target/bench/ for
    /// --quick).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Run only the soak: steady load with the profiler on for MINUTES, the daemon's RSS and CPU sampled every
    /// 10 s. Its section, figures and plot are merged into the results found at the output (the other sections
    /// stay as they are).
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u64).range(1..=24 * 60))]
    soak: Option<u64>,
    /// With --soak: the CI variant. Results go to target/bench/ (unless --output-dir), and a daemon RSS beyond
    /// 150 MB fails the run with DuckDB's memory breakdown; no timing is asserted.
    #[arg(long, requires = "soak")]
    ci: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Overhead,
    Capacity,
    Queries,
}

/// The app venv: every app configuration runs on one interpreter and one Flask, so only the monitor differs.
const APP_REQUIREMENTS: &str = "# cargo xtask bench: the benchmark app's venv\nflask>=2.2\ngunicorn>=21\nflask-monitoringdashboard\n";

/// The tools venv, kept out of the app's: py-spy, and DuckDB's Python package at the daemon's libduckdb version
/// (so the query benchmark times the engine fmd ships with).
fn tools_requirements() -> String {
    format!(
        "# cargo xtask bench: the benchmark's tools\npy-spy\nduckdb=={}\n",
        setup::DUCKDB_VERSION
    )
}

pub fn run(args: &Args) -> Result<()> {
    let work = paths::target().join("bench");
    let (markdown, json) = outputs(args, &work);
    if args.report_only {
        return write(&markdown, &report::render(&read_results(&json)?));
    }

    let started = std::time::Instant::now();
    setup::debian(&["wrk", "python3.11", "python3.11-venv"])?;
    if let Some(minutes) = args.soak {
        return run_soak(args, minutes, &work, &markdown, &json);
    }
    let interp = python::matrix()
        .into_iter()
        .next()
        .context("no Python interpreter for the benchmark app")?;
    let venvs = python::venvs_dir();
    fs::create_dir_all(&work)?;
    let app_venv = venvs.join("bench-app");
    let tools_venv = venvs.join("bench-tools");
    for (venv, requirements) in [
        (&app_venv, APP_REQUIREMENTS.to_owned()),
        (&tools_venv, tools_requirements()),
    ] {
        let file = work.join(format!(
            "{}.requirements.txt",
            venv.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ));
        fs::write(&file, requirements)?;
        python::ensure_venv(&interp.python, venv, &file)?;
    }
    let daemon = match &args.daemon {
        Some(path) => path.clone(),
        None => build::release()?,
    };
    let features = daemon::Features::probe(&daemon);
    eprintln!("bench: {} supports {features:?}", daemon.display());

    let wanted = |part| args.only.is_empty() || args.only.contains(&part);
    let mut results = results::Results {
        command: command_line(),
        quick: args.quick,
        date: utc_now(),
        machine: machine::describe(&app_venv, &tools_venv, &daemon),
        ..results::Results::default()
    };
    if wanted(Part::Overhead) {
        let settings = if args.quick {
            overhead::Settings {
                threads: 1,
                connections: 4,
                warmup: secs(1),
                duration: secs(1),
                repetitions: 1,
            }
        } else {
            // 7 configurations x 4 endpoints x 3 repetitions x 8 s is 11 minutes of load; with app starts,
            // capacity and the 10 M-row stores the whole run stays under 30 minutes on 2 cores.
            overhead::Settings {
                threads: 1,
                connections: 4,
                warmup: secs(2),
                duration: secs(6),
                repetitions: 3,
            }
        };
        let env = overhead::Env {
            app_venv: &app_venv,
            tools_venv: &tools_venv,
            daemon: &daemon,
            features: &features,
            work: &work,
        };
        results.overhead = overhead::run(&env, &settings);
    }
    if wanted(Part::Capacity) {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        // One server worker per core: the asyncio workers never block, so more would only take turns.
        let settings = capacity::Settings {
            workers: cores,
            threads: 2,
            connections: if args.quick {
                vec![16]
            } else {
                vec![4, 16, 64, 256, 1024]
            },
            duration: secs(if args.quick { 1 } else { 5 }),
        };
        results.capacity = capacity::run(&app_venv, &daemon, &features, &work, &settings);
    }
    if wanted(Part::Queries) {
        let settings = if args.quick {
            queries::Settings {
                scales: vec![100_000],
                runs: 2,
                budget_s: 5,
                cap_s: 60,
            }
        } else {
            queries::Settings {
                scales: vec![1_000_000, 10_000_000],
                runs: 5,
                budget_s: 30,
                // Flask-MonitoringDashboard's overview at 10 M requests runs for minutes; a lower bound is
                // the finding, and the whole benchmark has to fit in 30 minutes.
                cap_s: 120,
            }
        };
        let env = queries::Env {
            app_venv: &app_venv,
            tools_venv: &tools_venv,
            work: &work,
            daemon: &daemon,
            features: &features,
        };
        results.queries = queries::run(&env, &settings);
    }

    // A soak is run on its own (--soak); a full run keeps the one already recorded.
    results.soak = read_results(&json).ok().and_then(|r| r.soak);
    results.elapsed_s = started.elapsed().as_secs();
    write(&json, &(serde_json::to_string_pretty(&results)? + "\n"))?;
    write(&markdown, &report::render(&results))?;
    eprintln!("bench: wrote {} and {}", markdown.display(), json.display());
    Ok(())
}

fn run_soak(args: &Args, minutes: u64, work: &Path, markdown: &Path, json: &Path) -> Result<()> {
    let interp = python::matrix()
        .into_iter()
        .next()
        .context("no Python interpreter for the benchmark app")?;
    fs::create_dir_all(work)?;
    let app_venv = python::venvs_dir().join("bench-app");
    let requirements = work.join("bench-app.requirements.txt");
    fs::write(&requirements, APP_REQUIREMENTS)?;
    python::ensure_venv(&interp.python, &app_venv, &requirements)?;
    let daemon = match &args.daemon {
        Some(path) => path.clone(),
        None => build::release()?,
    };
    let features = daemon::Features::probe(&daemon);
    let env = soak::Env {
        app_venv: &app_venv,
        daemon: &daemon,
        features: &features,
        work,
    };
    // The load the report was made with: 2 gthread workers x 2 threads, 8 connections on the 0.3 ms
    // endpoint (about 2,700 req/s on 2 cores), the profiler at its default 100 Hz.
    let settings = soak::Settings {
        minutes,
        interval: secs(10),
        workers: 2,
        threads: 2,
        connections: 8,
        path: "/cpu-light",
        sample_hz: 100,
    };
    eprintln!("bench: soak, {minutes} min");
    let mut soak = soak::run(&env, &settings)?;
    soak.note = args.ci.then(|| {
        "CI soak (`--ci`): a short run on a shared CI machine; only the RSS limit is checked."
            .to_owned()
    });
    // Merge into what is there, so a soak never erases the other sections' figures.
    let mut results = read_results(json).unwrap_or_else(|_| results::Results {
        command: command_line(),
        date: utc_now(),
        machine: machine::describe(&app_venv, &app_venv, &daemon),
        ..results::Results::default()
    });
    results.soak = Some(soak);
    let soak = results.soak.as_ref().expect("just set");
    let plot = markdown.with_file_name(report::SOAK_PLOT);
    write(&plot, &soak::svg(soak))?;
    write(json, &(serde_json::to_string_pretty(&results)? + "\n"))?;
    write(markdown, &report::render(&results))?;
    eprintln!(
        "bench: soak: peak RSS {} MB, RSS slope {} MB/min, mean CPU {}%; wrote {}, {} and {}",
        soak.rss_peak_mb
            .map_or_else(|| "?".into(), |v| format!("{v:.1}")),
        soak.rss_slope_mb_per_min
            .map_or_else(|| "?".into(), |v| format!("{v:+.2}")),
        soak.cpu_mean_pct
            .map_or_else(|| "?".into(), |v| format!("{v:.1}")),
        markdown.display(),
        json.display(),
        plot.display()
    );
    if args.ci {
        soak::check(soak)?;
    }
    Ok(())
}

fn read_results(json: &Path) -> Result<results::Results> {
    let text =
        fs::read_to_string(json).with_context(|| format!("cannot read {}", json.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot parse {}", json.display()))
}

/// (BENCHMARKS.md, results.json)
fn outputs(args: &Args, work: &Path) -> (PathBuf, PathBuf) {
    match (&args.output_dir, args.quick || args.ci) {
        (Some(dir), _) => (dir.join("BENCHMARKS.md"), dir.join("results.json")),
        (None, true) => (work.join("BENCHMARKS.md"), work.join("results.json")),
        (None, false) => (
            paths::workspace().join("BENCHMARKS.md"),
            paths::workspace().join("tests/bench/results.json"),
        ),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The command as typed, from the arguments xtask got (`cargo xtask` itself does not reach us).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

fn utc_now() -> String {
    crate::command::output(std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}
