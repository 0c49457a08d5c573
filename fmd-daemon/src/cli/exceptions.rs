//! `fmd-daemon query exceptions`: exception groups per endpoint as a table, JSON lines or CSV, and with
//! `--group G` one group's traceback with the source around each frame.

use std::io::Write;

use anyhow::{bail, Context as _};

use super::query::{fetch, json_line, write_table, Fetched, Format, Source, Stopwatch};
use crate::store::{
    self,
    time::{format_us, now_us, parse_instant},
    ExceptionFilter, ExceptionGroupDetail, ExceptionGroupRow,
};

#[derive(Debug, Default, clap::Args)]
pub struct ExceptionsArgs {
    /// Only exceptions of this Flask endpoint.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only occurrences at or after this time: RFC 3339 or a time ago (15m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// One group (the `group` column): its traceback, source lines, endpoints and latest requests.
    #[arg(long, conflicts_with_all = ["endpoint", "since"])]
    pub group: Option<String>,
}

impl Source {
    fn exception_groups(&self, filter: &ExceptionFilter) -> anyhow::Result<Vec<ExceptionGroupRow>> {
        match self {
            Self::File(store) => Ok(store::exception_groups(store.connection(), filter)?),
            Self::Daemon { listen, db } => {
                let mut query = Vec::new();
                query.extend(filter.endpoint.clone().map(|e| ("endpoint", e)));
                query.extend(filter.since.map(|t| ("since", format_us(t))));
                match fetch(*listen, db, "/api/exceptions", &query)? {
                    Fetched::Got(rows) => Ok(rows),
                    Fetched::Unreachable(e) => Self::fallback(db, &e)?.exception_groups(filter),
                }
            }
        }
    }

    fn exception_group(&self, group: &str) -> anyhow::Result<Option<ExceptionGroupDetail>> {
        match self {
            Self::File(store) => Ok(store::exception_group(store.connection(), group)?),
            Self::Daemon { listen, db } => {
                let path = format!("/api/exceptions/{group}");
                match fetch(*listen, db, &path, &[]) {
                    Ok(Fetched::Got(detail)) => Ok(Some(detail)),
                    Ok(Fetched::Unreachable(e)) => Self::fallback(db, &e)?.exception_group(group),
                    Err(e) if e.to_string().contains("404") => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

pub(super) fn run(
    source: &Source,
    args: &ExceptionsArgs,
    format: Format,
    out: &mut dyn Write,
    watch: &mut Stopwatch,
) -> anyhow::Result<()> {
    if format == Format::Folded {
        bail!("--format folded is for grouped-profile; use table, json or csv");
    }
    if let Some(group) = &args.group {
        let Some(detail) = watch.time(|| source.exception_group(group))? else {
            bail!("no exception group {group:?} (see `fmd-daemon query exceptions`)");
        };
        return Ok(write_group(&detail, format, out)?);
    }
    let since = args
        .since
        .as_deref()
        .map(|v| parse_instant(v, now_us()).context("bad --since"))
        .transpose()?;
    let filter = ExceptionFilter {
        endpoint: args.endpoint.clone().filter(|e| !e.is_empty()),
        group: None,
        since,
    };
    let rows = watch.time(|| source.exception_groups(&filter))?;
    Ok(write_groups(&rows, format, out)?)
}

/// Where a group was raised: its innermost frame.
fn raised_at(row: &ExceptionGroupRow) -> String {
    row.frames
        .last()
        .map(|f| format!("{}:{} in {}", f.file, f.line, f.function))
        .unwrap_or_default()
}

fn write_groups(
    rows: &[ExceptionGroupRow],
    format: Format,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        Format::Json => rows.iter().try_for_each(|row| json_line(row, out)),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record([
                "group",
                "type",
                "message",
                "endpoint",
                "count",
                "first_seen",
                "last_seen",
                "raised_at",
            ])?;
            for r in rows {
                csv.write_record([
                    r.group.clone(),
                    r.type_name.clone(),
                    r.message.clone(),
                    r.endpoint.clone().unwrap_or_default(),
                    r.count.to_string(),
                    format_us(r.first_seen),
                    format_us(r.last_seen),
                    raised_at(r),
                ])?;
            }
            csv.flush()
        }
        Format::Table | Format::Folded => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let message: String = r
                        .message
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(60)
                        .collect();
                    vec![
                        r.group.clone(),
                        r.endpoint.clone().unwrap_or_else(|| "-".to_owned()),
                        r.count.to_string(),
                        format_us(r.last_seen),
                        format!("{}: {message}", r.type_name),
                        raised_at(r),
                    ]
                })
                .collect();
            write_table(
                &[
                    "group",
                    "endpoint",
                    "count",
                    "last_seen",
                    "exception",
                    "raised_at",
                ],
                &[false, false, true, false, false, false],
                &cells,
                out,
            )
        }
    }
}

/// One group: JSON as one object; otherwise its traceback as Python prints it, with the source around
/// each frame (the frame's line marked `>`), then its endpoints and latest requests.
fn write_group(
    detail: &ExceptionGroupDetail,
    format: Format,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if format == Format::Json {
        return json_line(detail, out);
    }
    let g = &detail.group;
    writeln!(
        out,
        "group {}: {} occurrences, first {}, last {}",
        g.group,
        g.count,
        format_us(g.first_seen),
        format_us(g.last_seen)
    )?;
    for e in &detail.endpoints {
        writeln!(
            out,
            "  {}: {}",
            e.endpoint.as_deref().unwrap_or("-"),
            e.count
        )?;
    }
    let frames =
        |frames: &[crate::exceptions::DetailFrame], out: &mut dyn Write| -> std::io::Result<()> {
            writeln!(out, "Traceback (most recent call last):")?;
            for f in frames {
                writeln!(
                    out,
                    "  File \"{}\", line {}, in {}",
                    f.file, f.line, f.function
                )?;
                if f.context.is_empty() {
                    if let Some(code) = &f.code {
                        writeln!(out, "    {code}")?;
                    }
                }
                for l in &f.context {
                    let mark = if l.line == f.line { '>' } else { ' ' };
                    writeln!(out, "  {mark}{:>5} {}", l.line, l.code)?;
                }
            }
            Ok(())
        };
    writeln!(out)?;
    for e in &g.chain {
        frames(&e.frames, out)?;
        writeln!(out, "{}", exception_line(&e.type_name, &e.message))?;
        writeln!(out)?;
        writeln!(
            out,
            "{}",
            match e.relation {
                Some(crate::exceptions::traceback::Relation::Cause) =>
                    "The above exception was the direct cause of the following exception:",
                _ => "During handling of the above exception, another exception occurred:",
            }
        )?;
        writeln!(out)?;
    }
    frames(&g.frames, out)?;
    writeln!(out, "{}", exception_line(&g.type_name, &g.message))?;
    if !detail.requests.is_empty() {
        let ids: Vec<String> = detail.requests.iter().map(ToString::to_string).collect();
        writeln!(out, "\nlatest requests: {}", ids.join(" "))?;
    }
    Ok(())
}

fn exception_line(type_name: &str, message: &str) -> String {
    if message.is_empty() {
        type_name.to_owned()
    } else {
        format!("{type_name}: {message}")
    }
}
