//! Load generation with `wrk` and the parsing of its report (throughput, latency percentiles, errors).

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::command;

/// One wrk run as the benchmark drives it.
pub struct Load<'a> {
    pub url: &'a str,
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
}

/// What one wrk run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Responses completed during the run.
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
}

pub fn run(load: &Load<'_>) -> Result<Measured> {
    let out = command::output(
        Command::new("wrk")
            .arg(format!("--threads={}", load.threads))
            .arg(format!("--connections={}", load.connections))
            .arg(format!("--duration={}s", load.duration.as_secs().max(1)))
            .args(["--timeout=10s", "--latency"])
            .arg(load.url),
    )?;
    parse(&out).with_context(|| format!("cannot read wrk's report:\n{out}"))
}

/// Parses wrk's text report (wrk 4.x, run with `--latency`). `None` when a figure is missing.
pub fn parse(report: &str) -> Option<Measured> {
    let mut measured = Measured::default();
    let (mut requests, mut rps, mut p50, mut p99) = (None, None, None, None);
    for line in report.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("50%"), Some(value), None) => p50 = latency_ms(value),
            (Some("99%"), Some(value), None) => p99 = latency_ms(value),
            (Some(n), Some("requests"), Some("in")) => requests = n.parse().ok(),
            (Some("Requests/sec:"), Some(value), None) => rps = value.parse().ok(),
            (Some("Socket"), Some("errors:"), _) => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                measured.errors += line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
            (Some("Non-2xx"), _, _) => {
                measured.errors += line.rsplit(':').next()?.trim().parse::<u64>().ok()?;
            }
            _ => {}
        }
    }
    measured.requests = requests?;
    measured.rps = rps?;
    measured.p50_ms = p50?;
    measured.p99_ms = p99?;
    Some(measured)
}

/// A wrk duration such as `812.00us`, `1.23ms`, `2.01s` or `1.50m`, in milliseconds.
fn latency_ms(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 3s test @ http://127.0.0.1:18080/cpu-light
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    36.67ms   29.83ms 201.27ms   90.76%
    Req/Sec   127.70     55.87   230.00     73.33%
  Latency Distribution
     50%  812.00us
     75%   39.49ms
     90%   61.55ms
     99%    1.69s
  384 requests in 3.08s, 61.88KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:    124.57
Transfer/sec:     20.07KB
";

    fn check(report: &str, expect: Option<Measured>) {
        assert_eq!(parse(report), expect, "report:\n{report}");
    }

    #[test]
    fn full_report() {
        check(
            REPORT,
            Some(Measured {
                requests: 384,
                rps: 124.57,
                p50_ms: 0.812,
                p99_ms: 1690.0,
                errors: 10,
            }),
        );
    }

    #[test]
    fn clean_report_has_no_errors() {
        let clean: String = REPORT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        check(
            &clean,
            Some(Measured {
                requests: 384,
                rps: 124.57,
                p50_ms: 0.812,
                p99_ms: 1690.0,
                errors: 0,
            }),
        );
    }

    #[test]
    fn report_without_latency_distribution_is_rejected() {
        let no_latency: String = REPORT
            .lines()
            .filter(|l| !l.contains('%'))
            .map(|l| format!("{l}\n"))
            .collect();
        check(&no_latency, None);
        check("", None);
    }

    #[test]
    fn latency_units() {
        for (input, expect) in [
            ("1.00us", Some(0.001)),
            ("2.5ms", Some(2.5)),
            ("3s", Some(3000.0)),
            ("1.5m", Some(90_000.0)),
            ("7", None),
            ("1x", None),
        ] {
            assert_eq!(latency_ms(input), expect, "{input}");
        }
    }
}
