//! Query speed at scale: the same synthetic requests in an fmd DuckDB store and in Flask-MonitoringDashboard's
//! SQLite schema, and the dashboard's views timed on each (tests/bench/query_store.py does the work in
//! Python, where both engines have their official bindings).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde::Deserialize;

use super::results::{Queries, QueryScale, Timing, ViewTiming};
use crate::{command, paths};

pub struct Settings {
    pub scales: Vec<u64>,
    pub runs: u32,
    /// Wall time after which a view stops being repeated (it has run at least once).
    pub budget_s: u64,
    /// A single run longer than this is interrupted; the view is then reported as slower than the cap.
    pub cap_s: u64,
}

/// What query_store.py prints.
#[derive(Debug, Deserialize, PartialEq)]
struct Output {
    rows: u64,
    schema_note: Option<String>,
    views: std::collections::BTreeMap<String, Timed>,
    /// A few counts over the data, equal in both stores when they hold the same requests.
    #[serde(default)]
    fingerprint: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Timed {
    p50_ms: Option<f64>,
    runs: u32,
    /// Set when a run hit the cap (`p50_ms` is then absent).
    over_s: Option<u64>,
}

/// Why the grouped profile has no timing on either side.
const NO_PROFILES: &str =
    "not timed: query_store.py generates requests only, no profile samples yet";

const VIEWS: &[&str] = &[
    "overview",
    "overview_cli",
    "heatmap",
    "version_quartiles",
    "grouped_profile",
];

pub struct Env<'a> {
    pub app_venv: &'a Path,
    pub tools_venv: &'a Path,
    pub work: &'a Path,
    pub daemon: &'a Path,
    /// The daemon has `query endpoints`, its own overview query, to time on the generated store.
    pub query_endpoints: bool,
}

pub fn run(env: &Env<'_>, settings: &Settings) -> Queries {
    let start_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        - 30 * 86_400;
    let mut queries = Queries {
        note: None,
        scales: vec![],
    };
    for &rows in &settings.scales {
        eprintln!("bench: queries, {rows} requests");
        let fmd = store(env, settings, "duckdb", rows, start_epoch);
        let dashboard = store(env, settings, "dashboard", rows, start_epoch);
        queries.scales.push(scale(rows, fmd, dashboard));
    }
    queries
}

fn store(
    env: &Env<'_>,
    settings: &Settings,
    engine: &str,
    rows: u64,
    start_epoch: u64,
) -> Result<Output> {
    let (venv, file) = match engine {
        "duckdb" => (
            env.tools_venv,
            env.work.join(format!("queries-{rows}.duckdb")),
        ),
        _ => (
            env.app_venv,
            env.work.join(format!("queries-{rows}.sqlite")),
        ),
    };
    for stale in ["", ".wal", ".daemon"] {
        let _ = fs::remove_file(format!("{}{stale}", file.display()));
    }
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(paths::workspace().join("tests/bench/query_store.py"))
        .arg(engine)
        .arg("--db")
        .arg(&file)
        .args([
            "--rows",
            &rows.to_string(),
            "--start-epoch",
            &start_epoch.to_string(),
        ])
        .args([
            "--runs",
            &settings.runs.to_string(),
            "--budget-s",
            &settings.budget_s.to_string(),
            "--cap-s",
            &settings.cap_s.to_string(),
        ]);
    if engine == "duckdb" {
        if let Some(source) = schema_source(env.work) {
            cmd.arg("--schema-from").arg(source);
        }
    }
    let out = command::output(&mut cmd)?;
    // Flask-MonitoringDashboard prints its own messages to stdout (e.g. when a session closes after a
    // failed commit): the result is the last JSON line.
    let json = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_default();
    let mut output: Output = serde_json::from_str(json.trim())
        .with_context(|| format!("cannot read query_store.py's output: {out}"))?;
    if engine == "duckdb" && env.query_endpoints {
        output.views.insert(
            "overview_cli".into(),
            time_cli(env.daemon, &file, settings)?,
        );
    }
    // The stores are large (GBs at 10 M rows): keep the disk for the next scale.
    let _ = fs::remove_file(&file);
    Ok(output)
}

/// `fmd-daemon query endpoints` on the store, as a user would run it: process start, opening the file and
/// the daemon's own overview query.
fn time_cli(daemon: &Path, db: &Path, settings: &Settings) -> Result<Timed> {
    let mut times = vec![];
    let mut spent = 0.0;
    while times.len() < settings.runs as usize
        && (times.is_empty() || spent < settings.budget_s as f64)
    {
        let start = std::time::Instant::now();
        command::output(
            Command::new(daemon)
                .args(["query", "endpoints", "--format", "json", "--db"])
                .arg(db),
        )?;
        let elapsed = start.elapsed().as_secs_f64();
        spent += elapsed;
        times.push(elapsed * 1000.0);
    }
    Ok(Timed {
        p50_ms: super::results::median(&times),
        runs: times.len() as u32,
        over_s: None,
    })
}

/// A store fmd-daemon wrote earlier in this run (overhead or capacity), whose schema the generated store copies.
fn schema_source(work: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(work)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.ends_with(".duckdb") && !name.starts_with("queries-")
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// How the fmd store differs from the daemon's schema, and whether the two stores hold different data.
fn schema_note(fmd: &Result<Output>, dashboard: &Result<Output>) -> Option<String> {
    let mut notes: Vec<String> = fmd
        .as_ref()
        .ok()
        .and_then(|o| o.schema_note.clone())
        .into_iter()
        .collect();
    if let (Ok(a), Ok(b)) = (fmd, dashboard) {
        if a.fingerprint != b.fingerprint {
            notes.push(format!(
                "**the two stores differ** (fmd {:?}, dashboard {:?}): the timings compare different data",
                a.fingerprint, b.fingerprint
            ));
        }
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

fn scale(rows: u64, fmd: Result<Output>, dashboard: Result<Output>) -> QueryScale {
    let timing = |side: &Result<Output>, view: &str| match side {
        Err(e) => Timing {
            p50_ms: None,
            runs: 0,
            note: Some(format!("failed: {e:#}")),
        },
        Ok(out) if out.rows != rows => Timing {
            p50_ms: None,
            runs: 0,
            note: Some(format!("store holds {} rows, not {rows}", out.rows)),
        },
        Ok(out) => match out.views.get(view) {
            Some(t) => Timing {
                p50_ms: t.p50_ms,
                runs: t.runs,
                note: t.over_s.map(|cap| {
                    format!("over {cap} s: interrupted after {} complete run(s)", t.runs)
                }),
            },
            None if view == "overview_cli" => Timing {
                p50_ms: None,
                runs: 0,
                note: Some("not available: this fmd-daemon has no `query endpoints`".into()),
            },
            None if view == "grouped_profile" => Timing {
                p50_ms: None,
                runs: 0,
                note: Some(NO_PROFILES.into()),
            },
            None => Timing {
                p50_ms: None,
                runs: 0,
                note: Some("not timed".into()),
            },
        },
    };
    QueryScale {
        requests: rows,
        endpoints: 200,
        days: 30,
        versions: 20,
        users: 5000,
        schema_note: schema_note(&fmd, &dashboard),
        views: VIEWS
            .iter()
            .map(|view| ViewTiming {
                view: (*view).to_string(),
                fmd: timing(&fmd, view),
                flask_monitoringdashboard: match *view {
                    "grouped_profile" => Timing {
                        p50_ms: None,
                        runs: 0,
                        note: Some(NO_PROFILES.into()),
                    },
                    "overview_cli" => Timing {
                        p50_ms: None,
                        runs: 0,
                        note: Some("n/a (fmd's CLI only)".into()),
                    },
                    _ => timing(&dashboard, view),
                },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(json: &str) -> Result<Output> {
        Ok(serde_json::from_str(json)?)
    }

    fn check(
        rows: u64,
        fmd: Result<Output>,
        dashboard: Result<Output>,
        expect: &[(&str, Option<f64>, Option<f64>)],
    ) {
        let got: Vec<(String, Option<f64>, Option<f64>)> = scale(rows, fmd, dashboard)
            .views
            .into_iter()
            .map(|v| (v.view, v.fmd.p50_ms, v.flask_monitoringdashboard.p50_ms))
            .collect();
        let expect: Vec<(String, Option<f64>, Option<f64>)> = expect
            .iter()
            .map(|(v, a, b)| ((*v).to_string(), *a, *b))
            .collect();
        assert_eq!(got, expect);
    }

    const FMD: &str = r#"{"rows": 100, "generate_s": 1.0, "schema_note": "extra columns",
        "views": {"overview": {"p50_ms": 1.5, "runs": 5, "over_s": null},
                  "heatmap": {"p50_ms": 2.0, "runs": 5, "over_s": null},
                  "version_quartiles": {"p50_ms": 0.5, "runs": 5, "over_s": null}},
        "fingerprint": {"endpoint_hits": 5}}"#;

    #[test]
    fn both_sides_timed() {
        let dashboard = FMD.replace("1.5", "150.0").replace(
            r#""p50_ms": 2.0, "runs": 5, "over_s": null"#,
            r#""p50_ms": null, "runs": 0, "over_s": 120"#,
        );
        check(
            100,
            output(FMD),
            output(&dashboard),
            &[
                ("overview", Some(1.5), Some(150.0)),
                ("overview_cli", None, None),
                ("heatmap", Some(2.0), None),
                ("version_quartiles", Some(0.5), Some(0.5)),
                ("grouped_profile", None, None),
            ],
        );
        let heatmap = &scale(100, output(FMD), output(&dashboard)).views[2];
        assert_eq!(
            heatmap.flask_monitoringdashboard.note.as_deref(),
            Some("over 120 s: interrupted after 0 complete run(s)")
        );
    }

    #[test]
    fn failed_or_short_stores_give_no_figures() {
        check(
            200,
            output(FMD),
            Err(anyhow::anyhow!("python failed")),
            &[
                ("overview", None, None),
                ("overview_cli", None, None),
                ("heatmap", None, None),
                ("version_quartiles", None, None),
                ("grouped_profile", None, None),
            ],
        );
        assert_eq!(
            scale(100, output(FMD), output(FMD)).schema_note.as_deref(),
            Some("extra columns")
        );
        let other = FMD.replace(r#""endpoint_hits": 5"#, r#""endpoint_hits": 6"#);
        assert_eq!(
            scale(100, output(FMD), output(&other))
                .schema_note
                .as_deref(),
            Some(
                "extra columns; **the two stores differ** (fmd {\"endpoint_hits\": 5}, dashboard \
                 {\"endpoint_hits\": 6}): the timings compare different data"
            )
        );
    }
}
