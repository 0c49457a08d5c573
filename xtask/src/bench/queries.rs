//! Query speed at scale: the same synthetic requests and profiles in an fmd DuckDB store and in
//! Flask-MonitoringDashboard's SQLite schema, and the dashboard's views timed on each
//! (tests/bench/query_store.py fills both in Python, where both engines have their official bindings, and
//! times the dashboard's own functions; the daemon's own queries are timed through its CLI).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use super::{
    daemon::Features,
    results::{Queries, QueryScale, Timing, ViewTiming},
};
use crate::{command, paths};

pub struct Settings {
    pub scales: Vec<u64>,
    pub runs: u32,
    /// Wall time after which a view stops being repeated (it has run at least once).
    pub budget_s: u64,
    /// A single run longer than this is interrupted; the view is then reported as slower than the cap.
    pub cap_s: u64,
}

/// What query_store.py prints, plus what the harness adds on the fmd side (the `serde(skip)` fields).
#[derive(Debug, Default, Deserialize, PartialEq)]
struct Output {
    rows: u64,
    #[serde(default)]
    generate_s: Option<f64>,
    schema_note: Option<String>,
    views: BTreeMap<String, Timed>,
    /// A few counts over the data, equal in both stores when they hold the same requests and profiles.
    #[serde(default)]
    fingerprint: BTreeMap<String, u64>,
    /// The endpoint whose requests are profiled (fmd side).
    #[serde(default)]
    profile_endpoint: Option<String>,
    /// Requests the grouped profile merged (the dashboard's `total_hits`; on the fmd side the CLI's answer).
    #[serde(default)]
    grouped_requests: Option<u64>,
    #[serde(skip)]
    rollup_build_s: Option<f64>,
    #[serde(skip)]
    rollup_note: Option<String>,
    /// Disagreements the harness found in the daemon's answers.
    #[serde(skip)]
    checks: Vec<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct Timed {
    p50_ms: Option<f64>,
    runs: u32,
    /// Set when a run hit the cap (`p50_ms` is then absent).
    over_s: Option<u64>,
    /// What the figure is, when it is not what the report's text says.
    #[serde(default)]
    note: Option<String>,
}

const VIEWS: &[&str] = &[
    "overview",
    "overview_cli",
    "heatmap",
    "version_quartiles",
    "grouped_profile",
];

/// How many of an endpoint's latest profiled requests both grouped profiles merge (the dashboard's fixed
/// limit, and `query grouped-profile`'s default).
pub const GROUPED_REQUESTS: u64 = 100;

pub struct Env<'a> {
    pub app_venv: &'a Path,
    pub tools_venv: &'a Path,
    pub work: &'a Path,
    pub daemon: &'a Path,
    /// What the daemon's CLI can do: `query endpoints`, `query grouped-profile`, `--timing`, `migrate`.
    pub features: &'a Features,
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
    remove_store(&file);
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
        // `fmd-daemon migrate` refuses to create a store (a mistyped path must not become an empty one):
        // the schema comes from a store this daemon wrote earlier in the run.
        if let Some(source) = schema_source(env.work, env.daemon) {
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
    if engine == "duckdb" {
        daemon_views(env, settings, &file, rows, &mut output);
    }
    // The stores are large (GBs at 10 M rows): keep the disk for the next scale.
    remove_store(&file);
    Ok(output)
}

fn remove_store(file: &Path) {
    for stale in ["", ".wal", ".daemon"] {
        let _ = fs::remove_file(format!("{}{stale}", file.display()));
    }
}

/// On the filled fmd store: `fmd-daemon migrate` (rollups), then the daemon's own overview and grouped
/// profile through its CLI. Failures become notes; the Python figures stay.
fn daemon_views(env: &Env<'_>, settings: &Settings, db: &Path, rows: u64, output: &mut Output) {
    let f = env.features;
    if f.migrate {
        let start = Instant::now();
        match command::output(Command::new(env.daemon).arg("migrate").arg("--db").arg(db)) {
            Ok(_) => output.rollup_build_s = Some(start.elapsed().as_secs_f64()),
            Err(e) => output.rollup_note = Some(format!("`fmd-daemon migrate` failed: {e:#}")),
        }
    } else {
        output.rollup_note = Some(
            "not built: this fmd-daemon has no `migrate` subcommand (no rollups; the overview reads the \
             requests table)"
                .into(),
        );
    }
    if f.query_endpoints {
        match time_cli(env.daemon, &["endpoints"], db, settings, f.query_timing) {
            Ok(runs) => {
                output.views.insert("overview_cli".into(), runs.wall);
                match runs.reported {
                    Some(reported) => {
                        output.views.insert("overview".into(), reported);
                    }
                    None => {
                        if let Some(sql) = output.views.get_mut("overview") {
                            sql.note = Some(
                                "the bench's SQL: this fmd-daemon has no `query --timing`".into(),
                            );
                        }
                    }
                }
                match total_hits(&runs.stdout) {
                    Some(hits) if hits == rows => {}
                    Some(hits) => output.checks.push(format!(
                        "**the daemon's overview counts {hits} requests, not {rows}**"
                    )),
                    None => output
                        .checks
                        .push("the daemon's overview output is not JSON lines with `hits`".into()),
                }
            }
            Err(e) => {
                output.views.insert("overview_cli".into(), failed(&e));
            }
        }
    }
    let Some(endpoint) = output.profile_endpoint.clone() else {
        return;
    };
    if !f.query_grouped_profile {
        return;
    }
    let limit = GROUPED_REQUESTS.to_string();
    let args = [
        "grouped-profile",
        "--endpoint",
        endpoint.as_str(),
        "--limit",
        limit.as_str(),
    ];
    match time_cli(env.daemon, &args, db, settings, f.query_timing) {
        Ok(runs) => {
            output.grouped_requests = grouped_requests(&runs.stdout);
            let timed = runs.reported.unwrap_or_else(|| Timed {
                note: Some("whole process: this fmd-daemon has no `query --timing`".into()),
                ..runs.wall
            });
            output.views.insert("grouped_profile".into(), timed);
        }
        Err(e) => {
            output.views.insert("grouped_profile".into(), failed(&e));
        }
    }
}

fn failed(e: &anyhow::Error) -> Timed {
    Timed {
        note: Some(format!("failed: {e:#}")),
        ..Timed::default()
    }
}

/// A daemon `query` command, run up to `settings.runs` times (fewer once the budget is spent).
struct CliRuns {
    /// The whole process, as a user would run it: start, opening the file, the query, the output.
    wall: Timed,
    /// The query alone, as the daemon reported it with `--timing`; `None` without `timing`.
    reported: Option<Timed>,
    /// The last run's output.
    stdout: String,
}

fn time_cli(
    daemon: &Path,
    args: &[&str],
    db: &Path,
    settings: &Settings,
    timing: bool,
) -> Result<CliRuns> {
    let mut wall = vec![];
    let mut reported = vec![];
    let mut stdout = String::new();
    let mut spent = 0.0;
    while wall.len() < settings.runs as usize
        && (wall.is_empty() || spent < settings.budget_s as f64)
    {
        let mut cmd = Command::new(daemon);
        cmd.arg("query")
            .args(args)
            .args(["--format", "json", "--db"])
            .arg(db);
        if timing {
            cmd.arg("--timing");
        }
        let start = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("cannot start {}", daemon.display()))?;
        let elapsed = start.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "`fmd-daemon query {}` failed: {}\n{stderr}",
                args.join(" "),
                out.status
            );
        }
        spent += elapsed;
        wall.push(elapsed * 1000.0);
        if timing {
            reported.push(reported_ms(&stderr).with_context(|| {
                format!(
                    "`fmd-daemon query {} --timing` printed no `Time: ... ms`",
                    args.join(" ")
                )
            })?);
        }
        stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let timed = |times: &[f64]| Timed {
        p50_ms: super::results::median(times),
        runs: times.len() as u32,
        over_s: None,
        note: None,
    };
    Ok(CliRuns {
        wall: timed(&wall),
        reported: timing.then(|| timed(&reported)),
        stdout,
    })
}

/// The query time `fmd-daemon query --timing` printed on stderr (`Time: 12.345 ms`, psql's words).
fn reported_ms(stderr: &str) -> Option<f64> {
    stderr.lines().rev().find_map(|line| {
        line.trim()
            .strip_prefix("Time: ")?
            .strip_suffix(" ms")?
            .parse()
            .ok()
    })
}

/// Requests over all endpoints in `query endpoints --format json` (one object per line, with `hits`).
fn total_hits(json_lines: &str) -> Option<u64> {
    json_lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["hits"].as_u64())
        .sum()
}

/// Requests merged, from `query grouped-profile --format json`.
fn grouped_requests(json: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(json.trim()).ok()?["requests"].as_u64()
}

/// A store fmd-daemon wrote earlier (overhead or capacity), whose schema the generated store copies: the
/// newest one that this daemon opens read-only, which it does only at exactly its own schema version (a file
/// left by an older build, as `--only queries` may find, has other tables).
fn schema_source(work: &Path, daemon: &Path) -> Option<PathBuf> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(work)
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
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.into_iter().rev().map(|(_, p)| p).find(|p| {
        command::output(
            Command::new(daemon)
                .args(["query", "stats", "--format", "json", "--db"])
                .arg(p),
        )
        .is_ok()
    })
}

/// How the fmd store differs from the daemon's schema, and whether the two stores hold different data or
/// the two grouped profiles merged different numbers of requests.
fn schema_note(fmd: &Result<Output>, dashboard: &Result<Output>) -> Option<String> {
    let mut notes: Vec<String> = fmd
        .as_ref()
        .ok()
        .and_then(|o| o.schema_note.clone())
        .into_iter()
        .collect();
    if let Ok(a) = fmd {
        notes.extend(a.checks.iter().cloned());
    }
    if let (Ok(a), Ok(b)) = (fmd, dashboard) {
        if a.fingerprint != b.fingerprint {
            notes.push(format!(
                "**the two stores differ** (fmd {:?}, dashboard {:?}): the timings compare different data",
                a.fingerprint, b.fingerprint
            ));
        }
        if let (Some(x), Some(y)) = (a.grouped_requests, b.grouped_requests) {
            if x != y {
                notes.push(format!(
                    "**the grouped profiles merged different requests** (fmd {x}, dashboard {y})"
                ));
            }
        }
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

fn scale(rows: u64, fmd: Result<Output>, dashboard: Result<Output>) -> QueryScale {
    let timing = |side: &Result<Output>, view: &str| {
        match side {
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
                note: t
                    .over_s
                    .map(|cap| {
                        format!("over {cap} s: interrupted after {} complete run(s)", t.runs)
                    })
                    .or_else(|| t.note.clone()),
            },
            None if view == "overview_cli" => Timing {
                p50_ms: None,
                runs: 0,
                note: Some("not available: this fmd-daemon has no `query endpoints`".into()),
            },
            None if view == "grouped_profile" => Timing {
                p50_ms: None,
                runs: 0,
                note: Some(
                    "not available: this fmd-daemon has no `query grouped-profile`, or the store no \
                     profiles"
                        .into(),
                ),
            },
            None => Timing {
                p50_ms: None,
                runs: 0,
                note: Some("not timed".into()),
            },
        },
    }
    };
    let fmd_out = fmd.as_ref().ok();
    let profiled = |o: &Output| o.fingerprint.get("profiled_requests").copied();
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
                    "overview_cli" => Timing {
                        p50_ms: None,
                        runs: 0,
                        note: Some("n/a (fmd's CLI only)".into()),
                    },
                    _ => timing(&dashboard, view),
                },
            })
            .collect(),
        generate_s: fmd_out.and_then(|o| o.generate_s),
        dashboard_generate_s: dashboard.as_ref().ok().and_then(|o| o.generate_s),
        rollup_build_s: fmd_out.and_then(|o| o.rollup_build_s),
        rollup_note: fmd_out.and_then(|o| o.rollup_note.clone()),
        profile_endpoint: fmd_out.and_then(|o| o.profile_endpoint.clone()),
        profiled_requests: fmd_out.and_then(profiled),
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
    fn grouped_profiles_rollups_and_checks() {
        let fmd_json = FMD.replace(
            r#""fingerprint": {"endpoint_hits": 5}"#,
            r#""fingerprint": {"endpoint_hits": 5, "profiled_requests": 5}, "profile_endpoint": "endpoint_7""#,
        );
        let mut fmd: Output = serde_json::from_str(&fmd_json).expect("fmd json");
        fmd.views.insert(
            "grouped_profile".into(),
            Timed {
                p50_ms: Some(3.0),
                runs: 5,
                ..Timed::default()
            },
        );
        fmd.grouped_requests = Some(5);
        fmd.rollup_build_s = Some(0.25);
        let dashboard_json = fmd_json.replace(
            r#""views": {"#,
            r#""grouped_requests": 5, "views": {"grouped_profile": {"p50_ms": 300.0, "runs": 2, "over_s": null}, "#,
        );
        let s = scale(100, Ok(fmd), output(&dashboard_json));
        let grouped = s.views.last().expect("views");
        assert_eq!(
            (
                grouped.view.as_str(),
                grouped.fmd.p50_ms,
                grouped.flask_monitoringdashboard.p50_ms
            ),
            ("grouped_profile", Some(3.0), Some(300.0))
        );
        assert_eq!(
            (
                s.generate_s,
                s.rollup_build_s,
                s.profiled_requests,
                s.profile_endpoint.as_deref(),
                s.schema_note.as_deref()
            ),
            (
                Some(1.0),
                Some(0.25),
                Some(5),
                Some("endpoint_7"),
                Some("extra columns")
            )
        );

        // A daemon that merged other requests than the dashboard, and counted other hits, is called out.
        let mut fmd: Output = serde_json::from_str(&fmd_json).expect("fmd json");
        fmd.grouped_requests = Some(4);
        fmd.checks.push("hits differ".into());
        let s = scale(100, Ok(fmd), output(&dashboard_json));
        assert_eq!(
            s.schema_note.as_deref(),
            Some(
                "extra columns; hits differ; **the grouped profiles merged different requests** (fmd 4, \
                 dashboard 5)"
            )
        );
    }

    #[test]
    fn daemon_cli_answers() {
        for (stderr, expect) in [
            ("Time: 12.345 ms\n", Some(12.345)),
            ("2 endpoints\nTime: 0.5 ms", Some(0.5)),
            ("Time: 1 ms\nTime: 2 ms\n", Some(2.0)),
            ("Time: fast\n", None),
            ("", None),
        ] {
            assert_eq!(reported_ms(stderr), expect, "{stderr:?}");
        }
        for (lines, expect) in [
            ("{\"hits\": 3}\n{\"hits\": 4}\n", Some(7)),
            ("", Some(0)),
            ("{\"hits\": 3}\nnot json\n", None),
            ("{\"endpoint\": \"x\"}\n", None),
        ] {
            assert_eq!(total_hits(lines), expect, "{lines:?}");
        }
        for (json, expect) in [
            ("{\"key\": \"e\", \"requests\": 100}\n", Some(100)),
            ("{\"key\": \"e\"}", None),
            ("", None),
        ] {
            assert_eq!(grouped_requests(json), expect, "{json:?}");
        }
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
