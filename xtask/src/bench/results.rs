//! What a benchmark run measured, as written to tests/bench/results.json and read back by
//! `cargo xtask bench --report-only` to render BENCHMARKS.md again. Every field has a default, so results
//! written before a field existed still render.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::wrk::Measured;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    /// The exact command that produced these figures.
    pub command: String,
    pub quick: bool,
    /// UTC, RFC 3339.
    pub date: String,
    /// How long the whole run took, setup and builds included.
    pub elapsed_s: u64,
    pub machine: Machine,
    pub overhead: Overhead,
    pub capacity: Capacity,
    pub queries: Queries,
    /// `--soak MINUTES`, run on its own and merged into the results it finds (the other sections stay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    pub cpu: String,
    pub cores: u32,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    pub python: String,
    pub fmd_daemon: String,
    /// Versions of the other moving parts: Flask, gunicorn, Flask-MonitoringDashboard, py-spy, DuckDB, wrk.
    pub tools: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overhead {
    pub wrk_threads: u32,
    pub connections: u32,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub repetitions: u32,
    pub configurations: Vec<Configuration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Configuration {
    /// Stable key (`bare`, `fmd-l1`, ...).
    pub name: String,
    /// What was run, for the report.
    pub description: String,
    /// Why there are no figures, when there are none (`not available: ...`).
    pub note: Option<String>,
    /// Per endpoint (`trivial`, `cpu-light`, `cpu-heavy`, `sleep`): medians over the repetitions.
    pub endpoints: BTreeMap<String, EndpointFigures>,
    /// The monitor process's (fmd-daemon's or py-spy's) user + system CPU time over the measured windows,
    /// median over the repetitions.
    pub monitor_cpu_s: Option<f64>,
    /// The monitor process's CPU time per 1,000 requests served in the measured windows, in ms.
    pub monitor_cpu_ms_per_1k: Option<f64>,
    /// The monitor process's peak RSS (VmHWM), the highest over the repetitions.
    pub monitor_peak_rss_mib: Option<f64>,
    /// The gunicorn worker's peak RSS, the highest over the repetitions.
    pub worker_peak_rss_mib: Option<f64>,
    /// fmd only, summed over the repetitions: responses wrk counted (warm-ups included) and requests the
    /// daemon stored, a check that level 1 kept up with the load it was measured under.
    pub requests_served: Option<u64>,
    pub requests_stored: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointFigures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// rps over bare's rps on the same endpoint.
    pub ratio_to_bare: Option<f64>,
    /// p99 over bare's p99 on the same endpoint.
    pub p99_ratio_to_bare: Option<f64>,
    /// Every repetition, in run order.
    pub runs: Vec<Measured>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capacity {
    pub note: Option<String>,
    pub server: String,
    pub workers: u32,
    pub duration_s: u64,
    pub steps: Vec<CapacityStep>,
    /// The highest wrk throughput among the steps with nothing lost.
    pub max_zero_loss_rps: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CapacityStep {
    pub connections: u32,
    pub rps: f64,
    /// Responses wrk counted.
    pub wrk_requests: u64,
    pub requests_stored: u64,
    pub events_lost: i64,
    pub daemon_cpu_ms_per_1k: Option<f64>,
    pub daemon_peak_rss_mib: Option<f64>,
}

impl CapacityStep {
    /// Nothing lost: no dropped events, and every response wrk saw is stored (wrk may count a few fewer than
    /// the daemon, for requests in flight when it stopped, never more).
    pub fn lossless(&self) -> bool {
        self.events_lost == 0 && self.requests_stored >= self.wrk_requests
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Queries {
    pub note: Option<String>,
    pub scales: Vec<QueryScale>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryScale {
    pub requests: u64,
    pub endpoints: u32,
    pub days: u32,
    pub versions: u32,
    pub users: u32,
    /// How the generated fmd store differs from the daemon's own schema, if at all.
    pub schema_note: Option<String>,
    pub views: Vec<ViewTiming>,
    /// Seconds to fill the fmd store (requests and profiles), before `rollup_build_s`.
    pub generate_s: Option<f64>,
    /// Seconds to fill the dashboard's store (requests and profiles).
    pub dashboard_generate_s: Option<f64>,
    /// Seconds `fmd-daemon migrate --db FILE` took on the filled fmd store (pending migrations and the
    /// overview's rollups); `None` when the daemon has no `migrate` or it failed (`rollup_note` says).
    pub rollup_build_s: Option<f64>,
    pub rollup_note: Option<String>,
    /// The endpoint whose requests are all profiled, and how many they are (the same in both stores).
    pub profile_endpoint: Option<String>,
    pub profiled_requests: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewTiming {
    /// `overview`, `heatmap`, `version_quartiles`, `grouped_profile`.
    pub view: String,
    pub fmd: Timing,
    pub flask_monitoringdashboard: Timing,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// Median wall time of the runs.
    pub p50_ms: Option<f64>,
    pub runs: u32,
    pub note: Option<String>,
}

/// The daemon left running under steady load (`--soak MINUTES`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Soak {
    pub note: Option<String>,
    /// The load, the app and the daemon's level, for the report.
    pub app: String,
    pub duration_s: u64,
    pub interval_s: u64,
    /// The start the slopes leave out.
    pub warmup_s: f64,
    pub rps: f64,
    pub wrk_requests: u64,
    pub requests_stored: u64,
    pub events_lost: i64,
    /// MB are 10^6 bytes here, as in the target.
    pub rss_peak_mb: Option<f64>,
    pub rss_last_mb: Option<f64>,
    /// Least-squares slope of the samples after the warm-up.
    pub rss_slope_mb_per_min: Option<f64>,
    /// Percent of one core, over the whole run.
    pub cpu_mean_pct: Option<f64>,
    pub cpu_slope_pct_per_min: Option<f64>,
    /// The daemon's last DuckDB memory breakdown (`duckdb_memory()`), as it logged it.
    pub duckdb_memory: Option<String>,
    pub samples: Vec<SoakSample>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SoakSample {
    /// Seconds since the load started.
    pub t_s: f64,
    pub rss_mb: f64,
    /// The daemon's CPU over the interval before the sample, in percent of one core.
    pub cpu_pct: Option<f64>,
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[f64], expect: Option<f64>) {
        assert_eq!(median(values), expect, "{values:?}");
    }

    #[test]
    fn medians() {
        check(&[], None);
        check(&[3.0], Some(3.0));
        check(&[5.0, 1.0, 3.0], Some(3.0));
        check(&[4.0, 1.0, 3.0, 2.0], Some(2.5));
        check(&[f64::NAN, 2.0], Some(2.0));
    }

    #[test]
    fn results_without_newer_fields_still_parse() {
        let old = r#"{"command": "cargo xtask bench", "machine": {"cpu": "x"}, "overhead": {"configurations": [{"name": "bare"}]}}"#;
        let parsed: Results = serde_json::from_str(old).expect("defaults fill the gaps");
        assert_eq!(
            (
                parsed.command.as_str(),
                parsed.machine.cpu.as_str(),
                parsed.overhead.configurations[0].name.as_str()
            ),
            ("cargo xtask bench", "x", "bare")
        );
        assert!(serde_json::from_str::<Results>(r#"{"quick": "yes"}"#).is_err());
    }

    #[test]
    fn lossless_steps() {
        let step = |wrk_requests, requests_stored, events_lost| CapacityStep {
            wrk_requests,
            requests_stored,
            events_lost,
            ..CapacityStep::default()
        };
        for (s, expect) in [
            (step(100, 100, 0), true),
            (step(100, 103, 0), true),
            (step(100, 99, 0), false),
            (step(100, 100, 1), false),
        ] {
            assert_eq!(s.lossless(), expect, "{s:?}");
        }
    }
}
