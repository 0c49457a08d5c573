//! BENCHMARKS.md from a run's results: the tables, the machine, the exact command, and the targets
//! beside the measured figures, with misses stated plainly. Pure: results in, Markdown out.

use std::fmt::Write as _;

use super::results::{CapacityStep, Configuration, Results};

/// The endpoints of tests/apps/bench_app.py, in report order, with what each costs.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("trivial", "returns a constant"),
    ("cpu-light", "~0.3 ms of CPU"),
    ("cpu-heavy", "~20 ms of CPU in three levels of nested calls"),
    ("sleep", "5 ms `time.sleep`"),
];

pub fn render(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `cargo xtask bench` (xtask/src/bench/); the raw figures, every repetition included, are in \
         tests/bench/results.json. Issue 5 defines what is measured and the targets.\n"
    );
    if r.quick {
        let _ = writeln!(
            md,
            "> **Quick mode** (`--quick`): every configuration ran briefly, once, on a small store. These figures only \
             show that the harness works; they are not measurements.\n"
        );
    }
    machine(&mut md, r);
    targets_section(&mut md, r);
    overhead(&mut md, r);
    capacity(&mut md, r);
    queries(&mut md, r);
    soak(&mut md, r);
    md
}

fn machine(md: &mut String, r: &Results) {
    let m = &r.machine;
    let _ = writeln!(md, "## Machine and command\n");
    let _ = writeln!(
        md,
        "- Date: {}; the run took {} min {} s",
        r.date,
        r.elapsed_s / 60,
        r.elapsed_s % 60
    );
    let _ = writeln!(
        md,
        "- CPU: {} ({} logical cores), {:.1} GiB memory",
        m.cpu, m.cores, m.memory_gib
    );
    let _ = writeln!(md, "- Kernel: {}; OS: {}", m.kernel, m.os);
    let _ = writeln!(md, "- Python: {}; fmd-daemon: {}", m.python, m.fmd_daemon);
    let _ = writeln!(md, "- Packages and tools: {}", m.tools);
    let _ = writeln!(md, "- Command: `{}`\n", r.command);
}

/// One of the targets beside what was measured.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub target: &'static str,
    pub measured: String,
    pub verdict: String,
}

fn targets_section(md: &mut String, r: &Results) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(
        md,
        "| Target (issue 5) | Measured | Verdict |\n| --- | --- | --- |"
    );
    for t in targets(r) {
        let _ = writeln!(md, "| {} | {} | {} |", t.target, t.measured, t.verdict);
    }
    let _ = writeln!(md);
}

pub fn targets(r: &Results) -> Vec<Target> {
    let config = |name: &str| r.overhead.configurations.iter().find(|c| c.name == name);
    let mut out = vec![];

    // Level 1 throughput and tail latency, on every endpoint: the worst endpoint decides.
    let l1 = config("fmd-l1");
    out.push(worst_endpoint(
        "Level 1: throughput >= 99% of bare on every endpoint",
        l1,
        |f| f.ratio_to_bare,
        0.99,
        Direction::AtLeast,
    ));
    out.push(worst_endpoint(
        "Level 1: p99 latency within 2% of bare on every endpoint",
        l1,
        |f| f.p99_ratio_to_bare,
        1.02,
        Direction::AtMost,
    ));

    let l3 = config("fmd-l3-100hz");
    let heavy = l3
        .and_then(|c| c.endpoints.get("cpu-heavy"))
        .and_then(|f| f.ratio_to_bare);
    out.push(Target {
        target: "Level 3 @ 100 Hz: >= 97% of bare on the 20 ms endpoint",
        measured: heavy.map_or_else(String::new, |v| format!("{v:.3}x")),
        verdict: match (heavy, unavailable(l3)) {
            (Some(v), _) => threshold(v, 0.97, Direction::AtLeast, |d| {
                format!("{:.1} points", d * 100.0)
            }),
            (None, reason) => not_measured(&reason),
        },
    });
    out.push(better_than_rivals(
        l3,
        config("dashboard-l3"),
        config("py-spy-100hz"),
    ));

    let cap = r.capacity.max_zero_loss_rps;
    out.push(Target {
        target: "Zero lost events at 20,000 requests/s",
        measured: cap.map_or_else(String::new, |v| format!("lossless up to {v:.0} req/s")),
        verdict: match cap {
            Some(v) => {
                let verdict = threshold(v, 20_000.0, Direction::AtLeast, |d| format!("{d:.0} req/s"));
                let steps = &r.capacity.steps;
                if v < 20_000.0 && !steps.is_empty() && steps.iter().all(CapacityStep::lossless) {
                    format!(
                        "{verdict}: nothing was lost at any step; the load (server and wrk on the same cores as \
                         the daemon) topped out there, not the daemon"
                    )
                } else {
                    verdict
                }
            }
            None => not_measured(
                &r.capacity
                    .note
                    .clone()
                    .unwrap_or_else(|| "no lossless step".into()),
            ),
        },
    });

    let rss_mib = r
        .overhead
        .configurations
        .iter()
        .filter(|c| c.name.starts_with("fmd"))
        .filter_map(|c| c.monitor_peak_rss_mib)
        .chain(
            r.capacity
                .steps
                .iter()
                .filter_map(|s| s.daemon_peak_rss_mib),
        )
        .reduce(f64::max);
    let rss_mb = rss_mib.map(|v| v * 1.048_576);
    out.push(Target {
        target: "Daemon RSS under 150 MB",
        measured: rss_mb.map_or_else(String::new, |v| format!("peak {v:.1} MB")),
        verdict: match rss_mb {
            Some(v) => threshold(v, 150.0, Direction::AtMost, |d| format!("{d:.1} MB")),
            None => not_measured("no fmd run recorded"),
        },
    });

    let overview = r
        .queries
        .scales
        .iter()
        .find(|s| s.requests == 10_000_000)
        .and_then(|s| s.views.iter().find(|v| v.view == "overview"))
        .and_then(|v| v.fmd.p50_ms);
    out.push(Target {
        target: "Overview query under 100 ms at 10 M requests",
        measured: overview.map_or_else(String::new, |v| format!("{v:.1} ms")),
        verdict: match overview {
            Some(v) => threshold(v, 100.0, Direction::AtMost, |d| format!("{d:.1} ms")),
            None => not_measured(if r.quick {
                "--quick builds no 10 M store"
            } else {
                "no 10 M store timing"
            }),
        },
    });
    out
}

#[derive(Clone, Copy)]
enum Direction {
    AtLeast,
    AtMost,
}

/// `met`, or `MISSED by <how much>`.
fn threshold(value: f64, target: f64, dir: Direction, by: impl Fn(f64) -> String) -> String {
    let miss = match dir {
        Direction::AtLeast => target - value,
        Direction::AtMost => value - target,
    };
    if miss <= 0.0 {
        "met".into()
    } else {
        format!("**MISSED** by {}", by(miss))
    }
}

fn not_measured(reason: &str) -> String {
    format!("not measured: {reason}")
}

fn unavailable(c: Option<&Configuration>) -> String {
    match c {
        None => "configuration not run".into(),
        Some(c) => c.note.clone().unwrap_or_else(|| "no figures".into()),
    }
}

fn worst_endpoint(
    target: &'static str,
    config: Option<&Configuration>,
    figure: fn(&super::results::EndpointFigures) -> Option<f64>,
    limit: f64,
    dir: Direction,
) -> Target {
    let worst = config
        .into_iter()
        .flat_map(|c| &c.endpoints)
        .filter_map(|(e, f)| Some((e, figure(f)?)))
        .reduce(|a, b| {
            let b_worse = match dir {
                Direction::AtLeast => b.1 < a.1,
                Direction::AtMost => b.1 > a.1,
            };
            if b_worse {
                b
            } else {
                a
            }
        });
    match worst {
        Some((endpoint, v)) => Target {
            target,
            measured: format!("worst {v:.3}x ({endpoint})"),
            verdict: threshold(v, limit, dir, |d| {
                format!("{:.1} points on {endpoint}", d * 100.0)
            }),
        },
        None => Target {
            target,
            measured: String::new(),
            verdict: not_measured(&unavailable(config)),
        },
    }
}

fn better_than_rivals(
    l3: Option<&Configuration>,
    dashboard: Option<&Configuration>,
    py_spy: Option<&Configuration>,
) -> Target {
    let target =
        "Level 3 @ 100 Hz: better than Flask-MonitoringDashboard level 3 and py-spy @ 100 Hz";
    let Some(ours) = l3.filter(|c| c.note.is_none() && !c.endpoints.is_empty()) else {
        return Target {
            target,
            measured: String::new(),
            verdict: not_measured(&unavailable(l3)),
        };
    };
    let mut measured = vec![];
    let mut losses = vec![];
    for rival in [dashboard, py_spy]
        .into_iter()
        .flatten()
        .filter(|c| c.note.is_none())
    {
        let (mut wins, mut total) = (0, 0);
        for (endpoint, f) in &ours.endpoints {
            let (Some(a), Some(b)) = (
                f.ratio_to_bare,
                rival.endpoints.get(endpoint).and_then(|g| g.ratio_to_bare),
            ) else {
                continue;
            };
            total += 1;
            if a > b {
                wins += 1;
            } else {
                losses.push(format!("{endpoint} vs {} ({a:.3}x vs {b:.3}x)", rival.name));
            }
        }
        measured.push(format!(
            "ahead of {} on {wins}/{total} endpoints",
            rival.name
        ));
    }
    let verdict = match (measured.is_empty(), losses.is_empty()) {
        (true, _) => not_measured("no rival configuration has figures"),
        (false, true) => "met".into(),
        (false, false) => format!("**MISSED** on {}", losses.join(", ")),
    };
    Target {
        target,
        measured: measured.join("; "),
        verdict,
    }
}

fn overhead(md: &mut String, r: &Results) {
    let o = &r.overhead;
    let _ = writeln!(md, "## 1. Overhead on the app\n");
    let _ = writeln!(
        md,
        "tests/apps/bench_app.py under `gunicorn -w 1` (sync worker) on 127.0.0.1, driven by `wrk -t{} -c{}` for {} s \
         after a {} s warm-up per endpoint. Configurations run round-robin, {} repetition(s); each figure is the median \
         over repetitions. Ratios are to bare on the same endpoint (throughput: higher is better; p99: lower is \
         better).\n",
        o.wrk_threads, o.connections, o.duration_s, o.warmup_s, o.repetitions
    );
    for c in &o.configurations {
        let _ = writeln!(md, "- `{}`: {}", c.name, c.description);
    }
    let _ = writeln!(md);
    for (endpoint, what) in ENDPOINTS {
        let _ = writeln!(md, "### `/{endpoint}` ({what})\n");
        let _ = writeln!(
            md,
            "| Configuration | req/s | p50 ms | p99 ms | req/s vs bare | p99 vs bare | wrk errors |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for c in &o.configurations {
            match (&c.note, c.endpoints.get(*endpoint)) {
                (_, Some(f)) => {
                    let _ = writeln!(
                        md,
                        "| {} | {:.1} | {:.2} | {:.2} | {} | {} | {} |",
                        c.name,
                        f.rps,
                        f.p50_ms,
                        f.p99_ms,
                        ratio(f.ratio_to_bare),
                        ratio(f.p99_ratio_to_bare),
                        // Socket errors and non-2xx answers over every repetition: a monitor that breaks
                        // requests must not pass for a fast one.
                        f.runs.iter().map(|m| m.errors).sum::<u64>()
                    );
                }
                (Some(note), None) => {
                    let _ = writeln!(md, "| {} | {note} | | | | | |", c.name);
                }
                (None, None) => {
                    let _ = writeln!(md, "| {} | no figures | | | | | |", c.name);
                }
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "### Resources\n\nThe monitor process is fmd-daemon or py-spy (Flask-MonitoringDashboard runs inside the \
         worker, so its cost shows in the worker's RSS and the throughput). CPU is user + system time from \
         /proc/PID/stat over the measured windows; RSS is VmHWM.\n"
    );
    let _ = writeln!(md, "| Configuration | monitor CPU s | monitor CPU ms / 1k req | monitor peak RSS MiB | worker peak RSS MiB | fmd stored / served |");
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for c in o.configurations.iter().filter(|c| c.note.is_none()) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            c.name,
            opt(c.monitor_cpu_s, 2),
            opt(c.monitor_cpu_ms_per_1k, 2),
            opt(c.monitor_peak_rss_mib, 1),
            opt(c.worker_peak_rss_mib, 1),
            match (c.requests_stored, c.requests_served) {
                (Some(stored), Some(served)) => format!("{stored} / {served}"),
                _ => String::new(),
            }
        );
    }
    let _ = writeln!(md);
}

fn capacity(md: &mut String, r: &Results) {
    let c = &r.capacity;
    let _ = writeln!(md, "## 2. Capture pipeline capacity\n");
    if let Some(note) = &c.note {
        let _ = writeln!(md, "{note}\n");
    }
    if c.steps.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "{} with {} workers, wrk for {} s per step at increasing connection counts, fmd-daemon (level 1, profiler \
         off) attached to the master, all on the same machine. Lost = the daemon's `events_lost` counter; a step is lossless when nothing was lost and every \
         response wrk counted is stored.\n",
        c.server, c.workers, c.duration_s
    );
    let _ = writeln!(md, "| Connections | req/s | wrk responses | stored | events lost | lossless | daemon CPU ms / 1k req | daemon peak RSS MiB |");
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    );
    for s in &c.steps {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            s.connections,
            s.rps,
            s.wrk_requests,
            s.requests_stored,
            s.events_lost,
            if s.lossless() { "yes" } else { "no" },
            opt(s.daemon_cpu_ms_per_1k, 2),
            opt(s.daemon_peak_rss_mib, 1)
        );
    }
    let _ = writeln!(
        md,
        "\nHighest lossless rate: {}\n",
        c.max_zero_loss_rps
            .map_or_else(|| "none".into(), |v| format!("{v:.0} req/s"))
    );
}

fn queries(md: &mut String, r: &Results) {
    let q = &r.queries;
    let _ = writeln!(md, "## 3. Query speed at scale\n");
    let _ = writeln!(
        md,
        "The same synthetic requests and profiles (tests/bench/query_store.py: each row a pure function of its \
         number, spread evenly over the days, versions following time, 1% errors; every request of one endpoint \
         profiled with one of 5 call trees 10 to 18 lines deep, its duration shared out over the tree in fixed \
         parts) in an fmd DuckDB store with the daemon's schema (its profile tables: frames, stacks, samples with \
         weights) and in Flask-MonitoringDashboard's SQLite schema (level 3: a `StackLine` per call-tree node \
         with its inclusive time, referencing `CodeLine`), created by the dashboard itself with its indexes. A \
         fingerprint (hits of the profiled endpoint, errors, versions, profiled requests and their total time) \
         checks that both stores hold the same data. Once filled, the fmd store goes through `fmd-daemon migrate \
         --db FILE` (pending migrations and the rollups the overview reads) when the daemon has that \
         subcommand; its wall time is reported as the rollup build.\n"
    );
    let _ = writeln!(
        md,
        "fmd side:\n\n\
         - `overview`: the daemon's own overview, `fmd-daemon query endpoints --timing` (per endpoint: hits over \
         all time, today and the last 7 days, median and p90 duration, error rate, last request), the query \
         time the daemon reports (opening the store and writing the output excluded);\n\
         - `overview_cli`: the same command as a whole process, as a user runs it;\n\
         - `heatmap` and `version_quartiles`: the benchmark's own SQL through DuckDB's Python package at the \
         daemon's libduckdb version, since the daemon has no such views yet (requests per endpoint, day and \
         hour; duration quartiles per version of one endpoint);\n\
         - `grouped_profile`: the daemon's own `fmd-daemon query grouped-profile --endpoint E --limit {n} \
         --timing`: the latest {n} profiled requests of the endpoint merged into one call tree with per-line \
         totals and folded stacks, the query time the daemon reports.\n\n\
         Dashboard side: its own view functions, imported from the package and timed in-process: \
         `get_endpoint_overview`, `get_hourly_load` over all endpoints (its only day-by-hour view), \
         `get_endpoint_versions`, and `get_grouped_profiler` (the latest {n} profiled requests of the endpoint, \
         loaded with their stack lines and code lines and grouped by call path, with hits, total and standard \
         deviation per line). A note in a cell says where a figure is something else (a daemon without \
         `--timing`). p50 of up to 5 runs; a view is repeated until 30 s are spent, and a single run is \
         interrupted at the cap.\n",
        n = super::queries::GROUPED_REQUESTS
    );
    if let Some(note) = &q.note {
        let _ = writeln!(md, "{note}\n");
    }
    for s in &q.scales {
        let _ = writeln!(
            md,
            "### {} requests ({} endpoints, {} days, {} versions, {} users)\n",
            thousands(s.requests),
            s.endpoints,
            s.days,
            s.versions,
            s.users
        );
        if let Some(note) = &s.schema_note {
            let _ = writeln!(md, "{note}\n");
        }
        let _ = writeln!(md, "{}\n", store_line(s));
        let _ = writeln!(
            md,
            "| View | fmd (DuckDB) p50 ms | Flask-MonitoringDashboard (SQLite) p50 ms | speed-up |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: |");
        for v in &s.views {
            let speedup = match (v.fmd.p50_ms, v.flask_monitoringdashboard.p50_ms) {
                (Some(a), Some(b)) if a > 0.0 => format!("{:.1}x", b / a),
                _ => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {speedup} |",
                v.view,
                timing(&v.fmd),
                timing(&v.flask_monitoringdashboard)
            );
        }
        let _ = writeln!(md);
    }
}

/// How long the stores took to fill and the rollups to build, and what is profiled.
fn store_line(s: &super::results::QueryScale) -> String {
    let secs = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1} s"));
    let rollups = match (s.rollup_build_s, &s.rollup_note) {
        (Some(v), _) => format!("{v:.1} s"),
        (None, Some(note)) => note.clone(),
        (None, None) => "not run".to_owned(),
    };
    let profiled = match (s.profiled_requests, &s.profile_endpoint) {
        (Some(n), Some(e)) => format!("; profiled: every request of `{e}`, {}", thousands(n)),
        (Some(n), None) => format!("; profiled requests: {}", thousands(n)),
        _ => String::new(),
    };
    format!(
        "Stores filled in {} (fmd) and {} (Flask-MonitoringDashboard); rollup build (`fmd-daemon migrate`): \
         {rollups}{profiled}.",
        secs(s.generate_s),
        secs(s.dashboard_generate_s)
    )
}

fn timing(t: &super::results::Timing) -> String {
    match (t.p50_ms, &t.note) {
        (Some(ms), None) => format!("{ms:.1} ({} runs)", t.runs),
        (Some(ms), Some(note)) => format!("{ms:.1} ({} runs; {note})", t.runs),
        (None, Some(note)) => note.clone(),
        (None, None) => "no figure".into(),
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.3}x"))
}

/// The file the soak's plot is written to, beside BENCHMARKS.md.
pub const SOAK_PLOT: &str = "BENCHMARKS-soak.svg";

fn soak(md: &mut String, r: &Results) {
    let Some(s) = &r.soak else {
        return;
    };
    let _ = writeln!(
        md,
        "## 4. Soak: the daemon's memory and CPU over a long run
"
    );
    if let Some(note) = &s.note {
        let _ = writeln!(
            md,
            "{note}
"
        );
    }
    let _ = writeln!(
        md,
        "`cargo xtask bench --soak {}`: {}, for {} min; the daemon's RSS and CPU sampled every {} s. Slopes are least \
         squares over the samples after the first {:.0} s (start-up: interpreters read, DuckDB's first row groups and \
         caches). MB are 10^6 bytes. The machine is shared with other developers' builds, so CPU figures are noisy; \
         the RSS is what this section is for.\n",
        s.duration_s / 60,
        s.app,
        s.duration_s / 60,
        s.interval_s,
        s.warmup_s
    );
    let _ = writeln!(
        md,
        "![RSS and CPU of the daemon over the soak]({SOAK_PLOT})\n"
    );
    let _ = writeln!(md, "| Figure | Value |\n| --- | ---: |");
    let rows = [
        ("Requests/s (wrk)", format!("{:.0}", s.rps)),
        (
            "Responses (wrk) / stored / events lost",
            format!(
                "{} / {} / {}",
                thousands(s.wrk_requests),
                thousands(s.requests_stored),
                s.events_lost
            ),
        ),
        ("Peak RSS (MB)", opt(s.rss_peak_mb, 1)),
        ("Last RSS (MB)", opt(s.rss_last_mb, 1)),
        (
            "RSS slope after warm-up (MB/min)",
            opt(s.rss_slope_mb_per_min, 2),
        ),
        ("Mean CPU (% of one core)", opt(s.cpu_mean_pct, 1)),
        (
            "CPU slope after warm-up (points/min)",
            opt(s.cpu_slope_pct_per_min, 2),
        ),
    ];
    for (what, value) in rows {
        let _ = writeln!(md, "| {what} | {value} |");
    }
    let verdict = match s.rss_peak_mb {
        Some(v) => threshold(v, 150.0, Direction::AtMost, |d| format!("{d:.1} MB")),
        None => not_measured("no RSS sample"),
    };
    let _ = writeln!(md, "\nDaemon RSS under 150 MB over the soak: {verdict}.\n");
    if let Some(m) = &s.duckdb_memory {
        let _ = writeln!(md, "DuckDB's own accounting at the end (`duckdb_memory()`, as the daemon logs it): `{m}`\n");
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(String::new, |v| format!("{v:.decimals$}"))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{
        super::{
            results::{
                Capacity, CapacityStep, EndpointFigures, Overhead, Queries, QueryScale, Timing,
                ViewTiming,
            },
            wrk::Measured,
        },
        *,
    };

    fn figures(ratio: f64, p99_ratio: f64) -> EndpointFigures {
        EndpointFigures {
            rps: 1000.0 * ratio,
            p50_ms: 1.0,
            p99_ms: 2.0 * p99_ratio,
            ratio_to_bare: Some(ratio),
            p99_ratio_to_bare: Some(p99_ratio),
            // Two repetitions, one with errors: the table shows their sum.
            runs: vec![
                Measured {
                    errors: 1,
                    ..Measured::default()
                },
                Measured {
                    errors: 2,
                    ..Measured::default()
                },
            ],
        }
    }

    /// A configuration with the given (endpoint, rps ratio, p99 ratio) figures, or a note when `figures` is empty.
    fn config(name: &str, figs: &[(&str, f64, f64)]) -> Configuration {
        Configuration {
            name: name.into(),
            note: figs
                .is_empty()
                .then(|| "not available: profiler not implemented".into()),
            endpoints: figs
                .iter()
                .map(|(e, r, p)| ((*e).to_string(), figures(*r, *p)))
                .collect::<BTreeMap<_, _>>(),
            monitor_peak_rss_mib: (!figs.is_empty()).then_some(if name.starts_with("fmd") {
                100.0
            } else {
                500.0
            }),
            ..Configuration::default()
        }
    }

    fn results(
        configs: Vec<Configuration>,
        lossless_rps: Option<f64>,
        overview_ms: Option<f64>,
    ) -> Results {
        Results {
            command: "cargo xtask bench".into(),
            overhead: Overhead {
                configurations: configs,
                ..Overhead::default()
            },
            capacity: Capacity {
                max_zero_loss_rps: lossless_rps,
                note: None,
                ..Capacity::default()
            },
            queries: Queries {
                note: None,
                scales: vec![QueryScale {
                    requests: 10_000_000,
                    views: vec![ViewTiming {
                        view: "overview".into(),
                        fmd: Timing {
                            p50_ms: overview_ms,
                            runs: 5,
                            note: None,
                        },
                        flask_monitoringdashboard: Timing {
                            p50_ms: Some(9000.0),
                            runs: 2,
                            note: None,
                        },
                    }],
                    ..QueryScale::default()
                }],
            },
            ..Results::default()
        }
    }

    fn check(r: &Results, expect: &[(&str, &str)]) {
        let got: Vec<(String, String)> = targets(r)
            .into_iter()
            .map(|t| (t.measured, t.verdict))
            .collect();
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(m, v)| ((*m).to_string(), (*v).to_string()))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn every_target_met() {
        let r = results(
            vec![
                config("bare", &[("trivial", 1.0, 1.0), ("cpu-heavy", 1.0, 1.0)]),
                config(
                    "fmd-l1",
                    &[("trivial", 0.995, 1.01), ("cpu-heavy", 1.0, 1.0)],
                ),
                config(
                    "fmd-l3-100hz",
                    &[("trivial", 0.98, 1.0), ("cpu-heavy", 0.975, 1.0)],
                ),
                config(
                    "dashboard-l3",
                    &[("trivial", 0.1, 5.0), ("cpu-heavy", 0.6, 2.0)],
                ),
                config(
                    "py-spy-100hz",
                    &[("trivial", 0.97, 1.0), ("cpu-heavy", 0.97, 1.0)],
                ),
            ],
            Some(25_000.0),
            Some(40.0),
        );
        check(
            &r,
            &[
                ("worst 0.995x (trivial)", "met"),
                ("worst 1.010x (trivial)", "met"),
                ("0.975x", "met"),
                ("ahead of dashboard-l3 on 2/2 endpoints; ahead of py-spy-100hz on 2/2 endpoints", "met"),
                ("lossless up to 25000 req/s", "met"),
                ("peak 104.9 MB", "met"),
                ("40.0 ms", "met"),
            ],
        );
    }

    #[test]
    fn misses_say_by_how_much() {
        let r = results(
            vec![
                config("bare", &[("trivial", 1.0, 1.0)]),
                config("fmd-l1", &[("trivial", 0.95, 1.10), ("sleep", 0.999, 1.0)]),
                config(
                    "fmd-l3-100hz",
                    &[("cpu-heavy", 0.90, 1.0), ("trivial", 0.5, 1.0)],
                ),
                config(
                    "dashboard-l3",
                    &[("cpu-heavy", 0.95, 1.0), ("trivial", 0.1, 1.0)],
                ),
            ],
            Some(12_000.0),
            Some(250.0),
        );
        check(
            &r,
            &[
                (
                    "worst 0.950x (trivial)",
                    "**MISSED** by 4.0 points on trivial",
                ),
                (
                    "worst 1.100x (trivial)",
                    "**MISSED** by 8.0 points on trivial",
                ),
                ("0.900x", "**MISSED** by 7.0 points"),
                (
                    "ahead of dashboard-l3 on 1/2 endpoints",
                    "**MISSED** on cpu-heavy vs dashboard-l3 (0.900x vs 0.950x)",
                ),
                ("lossless up to 12000 req/s", "**MISSED** by 8000 req/s"),
                ("peak 104.9 MB", "met"),
                ("250.0 ms", "**MISSED** by 150.0 ms"),
            ],
        );
    }

    #[test]
    fn unavailable_configurations_are_not_measured() {
        let r = Results {
            capacity: Capacity {
                note: Some("not available: no query stats".into()),
                ..Capacity::default()
            },
            quick: true,
            ..results(
                vec![
                    config("bare", &[("trivial", 1.0, 1.0)]),
                    config("fmd-l3-100hz", &[]),
                ],
                None,
                None,
            )
        };
        let mut r = r;
        r.queries.scales.clear();
        check(
            &r,
            &[
                ("", "not measured: configuration not run"),
                ("", "not measured: configuration not run"),
                ("", "not measured: not available: profiler not implemented"),
                ("", "not measured: not available: profiler not implemented"),
                ("", "not measured: not available: no query stats"),
                ("", "not measured: no fmd run recorded"),
                ("", "not measured: --quick builds no 10 M store"),
            ],
        );
    }

    #[test]
    fn report_shows_tables_notes_and_command() {
        let mut r = results(
            vec![
                config("bare", &[("trivial", 1.0, 1.0)]),
                config("fmd-l3-5ms", &[]),
            ],
            Some(5000.0),
            Some(12.5),
        );
        r.capacity.steps = vec![CapacityStep {
            connections: 8,
            rps: 5000.0,
            wrk_requests: 100,
            requests_stored: 100,
            ..CapacityStep::default()
        }];
        let md = render(&r);
        for expect in [
            "- Command: `cargo xtask bench`",
            "| bare | 1000.0 | 1.00 | 2.00 | 1.000x | 1.000x | 3 |",
            "| fmd-l3-5ms | not available: profiler not implemented | | | | | |",
            "| 8 | 5000 | 100 | 100 | 0 | yes |",
            "### 10,000,000 requests",
            "| overview | 12.5 (5 runs) | 9000.0 (2 runs) | 720.0x |",
        ] {
            assert!(md.contains(expect), "missing {expect:?} in:\n{md}");
        }
        assert!(!md.contains("Quick mode"));
    }

    #[test]
    fn capacity_limited_by_the_load_says_so() {
        let step = |rps, lost| CapacityStep {
            rps,
            wrk_requests: 10,
            requests_stored: 10,
            events_lost: lost,
            ..CapacityStep::default()
        };
        let verdict = |steps: Vec<CapacityStep>| {
            let mut r = results(vec![], None, None);
            r.capacity.max_zero_loss_rps = steps
                .iter()
                .filter(|s| s.lossless())
                .map(|s| s.rps)
                .reduce(f64::max);
            r.capacity.steps = steps;
            targets(&r).swap_remove(4).verdict
        };
        assert_eq!(
            verdict(vec![step(9000.0, 0), step(15000.0, 0)]),
            "**MISSED** by 5000 req/s: nothing was lost at any step; the load (server and wrk on the same cores \
             as the daemon) topped out there, not the daemon"
        );
        assert_eq!(
            verdict(vec![step(9000.0, 0), step(15000.0, 3)]),
            "**MISSED** by 11000 req/s"
        );
        assert_eq!(verdict(vec![step(25000.0, 0)]), "met");
    }

    #[test]
    fn thousands_separators() {
        for (n, expect) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (10_000_000, "10,000,000"),
        ] {
            assert_eq!(thousands(n), expect);
        }
    }

    #[test]
    fn store_line_says_fill_rollup_and_profiles() {
        let scale = |generate_s: Option<f64>,
                     rollup_build_s: Option<f64>,
                     rollup_note: Option<&str>,
                     profiled: Option<u64>| QueryScale {
            generate_s,
            dashboard_generate_s: Some(20.04),
            rollup_build_s,
            rollup_note: rollup_note.map(str::to_owned),
            profile_endpoint: profiled.map(|_| "endpoint_7".to_owned()),
            profiled_requests: profiled,
            ..QueryScale::default()
        };
        for (s, expect) in [
            (
                scale(Some(3.21), Some(0.46), None, Some(50_000)),
                "Stores filled in 3.2 s (fmd) and 20.0 s (Flask-MonitoringDashboard); rollup build \
                 (`fmd-daemon migrate`): 0.5 s; profiled: every request of `endpoint_7`, 50,000.",
            ),
            (
                scale(None, None, Some("not built: no migrate"), None),
                "Stores filled in ? (fmd) and 20.0 s (Flask-MonitoringDashboard); rollup build \
                 (`fmd-daemon migrate`): not built: no migrate.",
            ),
        ] {
            assert_eq!(store_line(&s), expect);
        }
    }
}
