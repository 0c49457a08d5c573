//! `cargo xtask bench --soak MINUTES`: the daemon left running under steady load with the profiler on, as a user
//! would leave it, its RSS and CPU sampled every 10 s and reported with their least-squares slope, so that growth
//! (issue 12: 72 -> 219 MB in 5 minutes, still rising) shows as a number and a plot instead of an anecdote.

use std::{
    fs,
    path::Path,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    app,
    daemon::{self, Features},
    process,
    results::{Soak, SoakSample},
    wrk::{self, Load},
};

/// The daemon's RSS beyond which `--ci` fails (issue 12: "under 150 MB at every load").
pub const RSS_LIMIT_MB: f64 = 150.0;

pub struct Settings {
    pub minutes: u64,
    /// Between two samples of the daemon's RSS and CPU.
    pub interval: Duration,
    /// gunicorn gthread workers, and threads in each (the load the report was made with).
    pub workers: u32,
    pub threads: u32,
    /// wrk's connections, all on one endpoint of tests/apps/bench_app.py.
    pub connections: u32,
    pub path: &'static str,
    pub sample_hz: u32,
}

pub struct Env<'a> {
    pub app_venv: &'a Path,
    pub daemon: &'a Path,
    pub features: &'a Features,
    pub work: &'a Path,
}

/// Log filter for the soak's daemon: its usual info lines, plus the store's periodic DuckDB memory breakdown
/// (fmd-daemon/src/store/memory.rs), which the report quotes.
const DAEMON_LOG_FILTER: &str = "info,fmd_daemon::store::memory=debug";
/// The message of that breakdown line.
const MEMORY_LINE: &str = "duckdb memory";

pub fn run(env: &Env<'_>, settings: &Settings) -> Result<Soak> {
    if !env.features.sample_hz {
        bail!("this fmd-daemon has no profiler (--sample-hz): the soak runs at level 3");
    }
    let log = |name: &str| env.work.join(format!("soak-{name}.log"));
    let spec = app::Spec {
        module: "bench_app:app",
        workers: settings.workers,
        worker_class: "gthread",
        threads: settings.threads,
        env: vec![],
    };
    let app = app::start(env.app_venv, &spec, "/trivial", &log("gunicorn"))?;
    let db = env.work.join("soak.duckdb");
    let daemon_log = log("daemon");
    let guard = daemon::attach_with(
        env.daemon,
        env.features,
        app.master(),
        &db,
        Some(settings.sample_hz),
        &daemon_log,
        Some(DAEMON_LOG_FILTER),
    )?;
    let pid = guard.pid();
    let duration = Duration::from_secs(settings.minutes * 60);
    let url = app.url(settings.path);
    let (threads, connections) = (1, settings.connections);
    let (done_tx, done_rx) = mpsc::channel();
    // wrk stops by itself after `duration`; the samples are taken meanwhile on this thread.
    let load = thread::spawn(move || {
        let measured = wrk::run(&Load {
            url: &url,
            threads,
            connections,
            duration,
        });
        let _ = done_tx.send(());
        measured
    });
    let started = Instant::now();
    let mut samples = vec![];
    let mut last_cpu = (started, process::cpu_seconds(pid));
    loop {
        let finished = done_rx.recv_timeout(settings.interval).is_ok();
        let now = Instant::now();
        if finished && now.duration_since(last_cpu.0) < settings.interval / 2 {
            // wrk ended just after a sample: a sample over a sliver of time would only add noise to the CPU.
            break;
        }
        let cpu = process::cpu_seconds(pid);
        let cpu_pct = match (last_cpu.1, cpu) {
            (Some(before), Some(after)) => {
                let wall = now.duration_since(last_cpu.0).as_secs_f64();
                Some((after - before) / wall.max(1e-3) * 100.0)
            }
            _ => None,
        };
        last_cpu = (now, cpu);
        let Some(rss_mb) = process::rss_mib(pid).map(mib_to_mb) else {
            bail!(
                "fmd-daemon exited during the soak: {}",
                daemon::tail(&daemon_log)
            );
        };
        let sample = SoakSample {
            t_s: now.duration_since(started).as_secs_f64(),
            rss_mb,
            cpu_pct,
        };
        eprintln!(
            "bench: soak t={:>5.0} s  daemon RSS {:6.1} MB  CPU {}",
            sample.t_s,
            sample.rss_mb,
            sample
                .cpu_pct
                .map_or_else(|| "?".into(), |c| format!("{c:.1}%"))
        );
        samples.push(sample);
        if finished {
            break;
        }
    }
    let measured = load
        .join()
        .map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??;
    // Let the daemon drain its ring buffer before stopping it.
    thread::sleep(Duration::from_secs(1));
    let peak_mb = process::peak_rss_mib(pid).map(mib_to_mb);
    guard.stop()?;
    if let Err(e) = app.guard.stop() {
        eprintln!("bench: {e:#} (after the soak: no effect on it)");
    }
    let stats = daemon::stats(env.daemon, &db)?;
    let log_text = fs::read_to_string(&daemon_log).unwrap_or_default();
    Ok(summarize(SoakRun {
        settings,
        samples,
        peak_mb,
        rps: measured.rps,
        wrk_requests: measured.requests,
        requests_stored: stats.requests_stored,
        events_lost: stats.events_lost,
        duckdb_memory: last_memory_line(&log_text),
    }))
}

struct SoakRun<'a> {
    settings: &'a Settings,
    samples: Vec<SoakSample>,
    peak_mb: Option<f64>,
    rps: f64,
    wrk_requests: u64,
    requests_stored: u64,
    events_lost: i64,
    duckdb_memory: Option<String>,
}

fn summarize(run: SoakRun<'_>) -> Soak {
    let s = run.settings;
    let warmup = warmup_s(s.minutes * 60);
    let steady: Vec<&SoakSample> = run.samples.iter().filter(|x| x.t_s >= warmup).collect();
    let rss_points: Vec<(f64, f64)> = steady.iter().map(|x| (x.t_s / 60.0, x.rss_mb)).collect();
    let cpu_points: Vec<(f64, f64)> = steady
        .iter()
        .filter_map(|x| Some((x.t_s / 60.0, x.cpu_pct?)))
        .collect();
    let cpu_all: Vec<f64> = run.samples.iter().filter_map(|x| x.cpu_pct).collect();
    let sampled_peak = run.samples.iter().map(|x| x.rss_mb).reduce(f64::max);
    Soak {
        note: None,
        app: format!(
            "tests/apps/bench_app.py under gunicorn, {} gthread workers x {} threads; wrk -t1 -c{} on {}; fmd-daemon \
             at level 3 (profiler at {} Hz)",
            s.workers, s.threads, s.connections, s.path, s.sample_hz
        ),
        duration_s: s.minutes * 60,
        interval_s: s.interval.as_secs(),
        warmup_s: warmup,
        rps: run.rps,
        wrk_requests: run.wrk_requests,
        requests_stored: run.requests_stored,
        events_lost: run.events_lost,
        // VmHWM also sees peaks between two samples; the sampled peak stands in when it is unreadable.
        rss_peak_mb: run.peak_mb.or(sampled_peak),
        rss_last_mb: run.samples.last().map(|x| x.rss_mb),
        rss_slope_mb_per_min: slope(&rss_points),
        cpu_mean_pct: mean(&cpu_all),
        cpu_slope_pct_per_min: slope(&cpu_points),
        duckdb_memory: run.duckdb_memory,
        samples: run.samples,
    }
}

/// The start-up the slopes leave out: the first minute (the daemon reads the interpreters, DuckDB fills its
/// first row groups and caches), or the first quarter of a run shorter than 4 minutes.
pub fn warmup_s(duration_s: u64) -> f64 {
    (duration_s as f64 / 4.0).min(60.0)
}

/// The least-squares slope of `points` (x, y); `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn mib_to_mb(mib: f64) -> f64 {
    mib * 1.048_576
}

/// The daemon's last DuckDB memory breakdown in its log (without the timestamp, level and colours).
fn last_memory_line(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(MEMORY_LINE))?;
    let plain = strip_ansi(line);
    let at = plain.find(MEMORY_LINE)?;
    Some(plain[at..].trim().to_owned())
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`): the daemon colours its log even into a file.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `--ci`: an error when the daemon's RSS went beyond [`RSS_LIMIT_MB`], with DuckDB's breakdown; no timings.
pub fn check(soak: &Soak) -> Result<()> {
    let peak = soak
        .rss_peak_mb
        .context("the soak recorded no RSS for the daemon")?;
    if peak > RSS_LIMIT_MB {
        bail!(
            "the daemon's RSS reached {peak:.1} MB, beyond {RSS_LIMIT_MB} MB; DuckDB's memory then: {}",
            soak.duckdb_memory
                .as_deref()
                .unwrap_or("no breakdown in the daemon's log")
        );
    }
    Ok(())
}

/// The soak as an SVG plot: RSS (MB) above, CPU (%) below, over minutes, with the RSS limit and the fitted
/// slope drawn in. Hand-written: two polylines and their axes need no plotting crate.
pub fn svg(soak: &Soak) -> String {
    const W: f64 = 720.0;
    const PANEL_H: f64 = 200.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const GAP: f64 = 60.0;
    let height = TOP + 2.0 * PANEL_H + GAP + 40.0;
    let minutes = (soak.duration_s as f64 / 60.0).max(1.0 / 6.0);
    let x = |t_s: f64| LEFT + (t_s / 60.0 / minutes).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    out += &format!(
        "<text x=\"{LEFT}\" y=\"20\" font-size=\"13\">fmd-daemon soak: {} min, {:.0} req/s, profiler on</text>\n",
        soak.duration_s / 60,
        soak.rps
    );
    let rss_max = soak
        .samples
        .iter()
        .map(|s| s.rss_mb)
        .fold(RSS_LIMIT_MB, f64::max)
        * 1.1;
    let cpu_max = soak
        .samples
        .iter()
        .filter_map(|s| s.cpu_pct)
        .fold(10.0, f64::max)
        * 1.1;
    let panels = [
        ("RSS (MB)", TOP, rss_max, "#1f77b4"),
        (
            "CPU (% of one core)",
            TOP + PANEL_H + GAP,
            cpu_max,
            "#d62728",
        ),
    ];
    for (i, (label, top, max, colour)) in panels.into_iter().enumerate() {
        let bottom = top + PANEL_H;
        let y = |v: f64| bottom - (v / max).clamp(0.0, 1.0) * PANEL_H;
        out += &format!(
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#999\"/>\n\
             <text x=\"{LEFT}\" y=\"{}\">{label}</text>\n",
            W - LEFT - RIGHT,
            top - 6.0
        );
        for k in 0..=4 {
            let v = max * f64::from(k) / 4.0;
            out += &format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>\n",
                LEFT - 6.0,
                y(v) + 4.0
            );
        }
        let whole = soak.duration_s / 60;
        let step = (whole / 10).max(1);
        for m in (0..=whole).step_by(step as usize) {
            let px = x(m as f64 * 60.0);
            out += &format!(
                "<line x1=\"{px:.1}\" y1=\"{bottom}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#999\"/>\
                 <text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{m} min</text>\n",
                bottom + 4.0,
                bottom + 16.0
            );
        }
        let points: Vec<String> = soak
            .samples
            .iter()
            .filter_map(|s| {
                let v = if i == 0 { Some(s.rss_mb) } else { s.cpu_pct };
                v.map(|v| format!("{:.1},{:.1}", x(s.t_s), y(v)))
            })
            .collect();
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        );
        if i == 0 {
            let limit = y(RSS_LIMIT_MB);
            out += &format!(
                "<line x1=\"{LEFT}\" y1=\"{limit:.1}\" x2=\"{}\" y2=\"{limit:.1}\" stroke=\"#888\" \
                 stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#666\">{RSS_LIMIT_MB} \
                 MB target</text>\n",
                W - RIGHT,
                W - RIGHT - 4.0,
                limit - 4.0
            );
        }
        let fitted = if i == 0 {
            soak.rss_slope_mb_per_min
                .map(|s| format!("slope after {:.0} s warm-up: {s:+.2} MB/min", soak.warmup_s))
        } else {
            soak.cpu_mean_pct.map(|m| {
                format!(
                    "mean {m:.1}%, slope {}",
                    soak.cpu_slope_pct_per_min
                        .map_or_else(|| "?".into(), |s| format!("{s:+.2} points/min"))
                )
            })
        };
        if let Some(text) = fitted {
            out += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{text}</text>\n",
                W - RIGHT,
                top - 6.0
            );
        }
    }
    out += "</svg>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_slope(points: &[(f64, f64)], expect: Option<f64>) {
        let got = slope(points);
        match (got, expect) {
            (Some(g), Some(e)) => {
                assert!((g - e).abs() < 1e-9, "{points:?}: got {g}, expected {e}")
            }
            _ => assert_eq!(got, expect, "{points:?}"),
        }
    }

    #[test]
    fn least_squares_slope() {
        check_slope(&[], None);
        check_slope(&[(1.0, 5.0)], None);
        // Every x the same: no slope to fit.
        check_slope(&[(2.0, 1.0), (2.0, 3.0)], None);
        check_slope(&[(0.0, 100.0), (1.0, 100.0), (2.0, 100.0)], Some(0.0));
        check_slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], Some(2.0));
        // Noise around a line: y = 10 - 0.5x with +-1 alternating residuals.
        check_slope(
            &[(0.0, 11.0), (1.0, 8.5), (2.0, 10.0), (3.0, 7.5)],
            Some(-0.9),
        );
    }

    #[test]
    fn warmup_is_a_minute_or_a_quarter_of_a_short_run() {
        assert_eq!(warmup_s(120), 30.0);
        assert_eq!(warmup_s(600), 60.0);
        assert_eq!(warmup_s(3600), 60.0);
    }

    fn soak(samples: &[(f64, f64, Option<f64>)], peak: Option<f64>) -> Soak {
        let settings = Settings {
            minutes: 2,
            interval: Duration::from_secs(10),
            workers: 2,
            threads: 2,
            connections: 8,
            path: "/cpu-light",
            sample_hz: 100,
        };
        summarize(SoakRun {
            settings: &settings,
            samples: samples
                .iter()
                .map(|&(t_s, rss_mb, cpu_pct)| SoakSample {
                    t_s,
                    rss_mb,
                    cpu_pct,
                })
                .collect(),
            peak_mb: peak,
            rps: 2000.0,
            wrk_requests: 10,
            requests_stored: 10,
            events_lost: 0,
            duckdb_memory: Some("duckdb memory total=1".into()),
        })
    }

    #[test]
    fn summary_leaves_the_warmup_out_of_the_slopes() {
        // A steep start-up, then flat: the slope after 30 s is zero though the run's is not.
        let s = soak(
            &[
                (10.0, 60.0, Some(30.0)),
                (20.0, 100.0, Some(20.0)),
                (30.0, 110.0, Some(10.0)),
                (60.0, 110.0, Some(10.0)),
                (120.0, 110.0, Some(10.0)),
            ],
            Some(115.0),
        );
        assert_eq!(s.rss_slope_mb_per_min, Some(0.0));
        assert_eq!(s.cpu_slope_pct_per_min, Some(0.0));
        assert_eq!(s.cpu_mean_pct, Some(16.0));
        assert_eq!((s.rss_peak_mb, s.rss_last_mb), (Some(115.0), Some(110.0)));
        assert!(check(&s).is_ok());
        // Without VmHWM the highest sample stands in.
        assert_eq!(soak(&[(10.0, 90.0, None)], None).rss_peak_mb, Some(90.0));
    }

    #[test]
    fn ci_check_fails_beyond_the_limit_with_the_breakdown() {
        let err = check(&soak(&[(10.0, 120.0, None)], Some(151.0))).expect_err("over the limit");
        let text = format!("{err:#}");
        assert!(
            text.contains("151.0 MB") && text.contains("duckdb memory total=1"),
            "{text}"
        );
        assert!(
            check(&soak(&[], None)).is_err(),
            "no RSS at all is a failure, not a pass"
        );
    }

    #[test]
    fn memory_line_is_the_last_one_without_its_prefix() {
        let log = "2026-12-01T05:00:00Z DEBUG fmd_daemon::store::memory: duckdb memory total_mb=10\n\
                   2026-12-01T05:01:00Z  INFO other\n\
                   2026-12-01T05:02:00Z DEBUG fmd_daemon::store::memory: duckdb memory total_mb=12\n";
        assert_eq!(
            last_memory_line(log).as_deref(),
            Some("duckdb memory total_mb=12")
        );
        assert_eq!(last_memory_line("nothing here"), None);
        let coloured = "\u{1b}[2m05:00\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m duckdb memory \u{1b}[3mduckdb_mb\u{1b}[0m=3.5";
        assert_eq!(
            last_memory_line(coloured).as_deref(),
            Some("duckdb memory duckdb_mb=3.5")
        );
    }

    #[test]
    fn svg_draws_both_series_and_the_limit() {
        let s = soak(
            &[
                (10.0, 80.0, Some(20.0)),
                (60.0, 90.0, Some(25.0)),
                (120.0, 95.0, Some(22.0)),
            ],
            None,
        );
        let svg = svg(&s);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains("150 MB target"), "{svg}");
        assert!(svg.contains("MB/min"), "{svg}");
    }
}
