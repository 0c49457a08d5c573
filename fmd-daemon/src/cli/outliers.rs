//! `fmd-daemon query outliers`: outliers and live snapshots with their context, from the running daemon
//! or the file, as a table (one line each, the innermost frame of the stack) or JSON lines (everything).

use std::io::{self, Write};

use super::query::{fetch, json_line, write_table, Fetched, Format, Source};
use crate::store::{
    outliers::{outliers, Outlier, OutlierFilter},
    time::{format_us, now_us, parse_instant},
};

#[derive(Debug, Default, clap::Args)]
pub struct OutliersArgs {
    /// Only outliers of this Flask endpoint.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only outliers of requests started at or after this time: RFC 3339 or a time ago (15m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Show only the most recent N.
    #[arg(long)]
    pub limit: Option<u64>,
}

impl OutliersArgs {
    fn filter(&self) -> anyhow::Result<OutlierFilter> {
        let since = self
            .since
            .as_deref()
            .map(|v| parse_instant(v, now_us()))
            .transpose()
            .map_err(|e| anyhow::Error::from(e).context("bad --since"))?;
        Ok(OutlierFilter {
            endpoint: self.endpoint.clone().filter(|e| !e.is_empty()),
            since,
            limit: self.limit,
        })
    }
}

impl Source {
    fn outliers(&self, filter: &OutlierFilter) -> anyhow::Result<Vec<Outlier>> {
        match self {
            Self::File(store) => Ok(outliers(store.connection(), filter)?),
            Self::Daemon { listen, db } => {
                let mut query = Vec::new();
                query.extend(filter.endpoint.clone().map(|e| ("endpoint", e)));
                query.extend(filter.since.map(|t| ("since", format_us(t))));
                query.extend(filter.limit.map(|n| ("limit", n.to_string())));
                match fetch(*listen, db, "/api/outliers", &query)? {
                    Fetched::Got(rows) => Ok(rows),
                    Fetched::Unreachable(e) => Self::fallback(db, &e)?.outliers(filter),
                }
            }
        }
    }
}

pub(super) fn run_outliers(
    source: &Source,
    args: &OutliersArgs,
    format: Format,
    out: &mut dyn Write,
    watch: &mut super::query::Stopwatch,
) -> anyhow::Result<()> {
    let filter = args.filter()?;
    let rows = watch.time(|| source.outliers(&filter))?;
    write_outliers(&rows, format, out)?;
    Ok(())
}

/// JSON: every field, one object per line; table and CSV: one line per outlier with where it was
/// (the innermost frame of its stack).
pub fn write_outliers(rows: &[Outlier], format: Format, out: &mut dyn Write) -> io::Result<()> {
    let header = [
        "id",
        "request_id",
        "ts",
        "endpoint",
        "duration_ms",
        "threshold_ms",
        "live",
        "where",
    ];
    let cells = |o: &Outlier| {
        vec![
            o.id.to_string(),
            o.request_id.map_or_else(|| "-".into(), |id| id.to_string()),
            format_us(o.ts),
            o.endpoint.clone(),
            format!("{:.3}", o.duration_ms),
            format!("{:.3}", o.threshold_ms),
            o.live.to_string(),
            o.stack.last().map_or_else(
                || "-".into(),
                |f| format!("{} ({}:{})", f.function, f.file, f.line),
            ),
        ]
    };
    match format {
        Format::Json => rows.iter().try_for_each(|o| json_line(o, out)),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record(header)?;
            for o in rows {
                csv.write_record(cells(o))?;
            }
            csv.flush()
        }
        Format::Table | Format::Folded => {
            let right = [true, true, false, false, true, true, false, false];
            let rows: Vec<Vec<String>> = rows.iter().map(cells).collect();
            write_table(&header, &right, &rows, out)
        }
    }
}
