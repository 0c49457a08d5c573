//! `fmd-daemon query profile --request ID` and `query grouped-profile --endpoint E` (or `--path P`): the
//! profile views in a terminal, as an indented tree and a flat table, JSON, CSV or folded stacks.

use std::{collections::HashMap, io, io::Write};

use anyhow::bail;

use super::query::{fetch, Fetched, Format, Source, Stopwatch};
use crate::store::{
    self,
    profiles::{FrameInfo, GroupedProfile, ProfileKey, RequestProfile},
};

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The request's id (the `id` column of `query requests`).
    #[arg(long)]
    pub request: i64,
    /// Every frame from the thread's start (gunicorn's too) instead of the app's part under one node.
    #[arg(long)]
    pub full_stack: bool,
}

#[derive(Debug, clap::Args)]
pub struct GroupedArgs {
    /// Merge the last profiled requests of this Flask endpoint.
    #[arg(long, required_unless_present = "path", conflicts_with = "path")]
    pub endpoint: Option<String>,
    /// Merge the last profiled requests with this exact path (for requests without an endpoint).
    #[arg(long)]
    pub path: Option<String>,
    /// How many of the most recent profiled requests to merge.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Every frame from the thread's start (gunicorn's too) instead of the app's part under one node.
    #[arg(long)]
    pub full_stack: bool,
}

impl GroupedArgs {
    fn key(&self) -> anyhow::Result<ProfileKey> {
        match (&self.endpoint, &self.path) {
            (Some(e), _) => Ok(ProfileKey::Endpoint(e.clone())),
            (None, Some(p)) => Ok(ProfileKey::Path(p.clone())),
            (None, None) => bail!("pass --endpoint E or --path P"),
        }
    }
}

impl Source {
    fn request_profile(&self, id: i64, full: bool) -> anyhow::Result<Option<RequestProfile>> {
        match self {
            Self::File(store) => Ok(store::profiles::request_profile_view(
                store.connection(),
                id,
                full,
            )?),
            Self::Daemon { listen, db } => {
                match fetch::<RequestProfile>(
                    *listen,
                    db,
                    &format!("/api/requests/{id}/profile"),
                    &[("full_stack", u8::from(full).to_string())],
                ) {
                    Ok(Fetched::Got(p)) => Ok(Some(p)),
                    Ok(Fetched::Unreachable(e)) => {
                        Self::fallback(db, &e)?.request_profile(id, full)
                    }
                    Err(e) if e.to_string().contains("404") => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn grouped_profile(
        &self,
        key: &ProfileKey,
        n: usize,
        full: bool,
    ) -> anyhow::Result<GroupedProfile> {
        match self {
            Self::File(store) => Ok(store::profiles::grouped_profile_view(
                store.connection(),
                key,
                n,
                full,
            )?),
            Self::Daemon { listen, db } => {
                let n_param = ("n", n.to_string());
                let full_param = ("full_stack", u8::from(full).to_string());
                let fetched = match key {
                    ProfileKey::Endpoint(e) => {
                        let e = percent_encoding::utf8_percent_encode(
                            e,
                            percent_encoding::NON_ALPHANUMERIC,
                        );
                        fetch(
                            *listen,
                            db,
                            &format!("/api/endpoints/{e}/grouped-profile"),
                            &[n_param, full_param],
                        )?
                    }
                    ProfileKey::Path(p) => fetch(
                        *listen,
                        db,
                        "/api/paths/grouped-profile",
                        &[n_param, full_param, ("path", p.clone())],
                    )?,
                };
                match fetched {
                    Fetched::Got(p) => Ok(p),
                    Fetched::Unreachable(e) => {
                        Self::fallback(db, &e)?.grouped_profile(key, n, full)
                    }
                }
            }
        }
    }
}

pub fn run_profile(
    source: &Source,
    args: &ProfileArgs,
    format: Format,
    out: &mut dyn Write,
    watch: &mut Stopwatch,
) -> anyhow::Result<()> {
    let Some(p) = watch.time(|| source.request_profile(args.request, args.full_stack))? else {
        bail!(
            "request {} has no profile (unknown id, or no samples: shorter than the sampling period, or the profiler \
             was off)",
            args.request
        );
    };
    Ok(write_request_profile(&p, format, out)?)
}

pub fn run_grouped(
    source: &Source,
    args: &GroupedArgs,
    format: Format,
    out: &mut dyn Write,
    watch: &mut Stopwatch,
) -> anyhow::Result<()> {
    let key = args.key()?;
    let p = watch.time(|| source.grouped_profile(&key, args.limit, args.full_stack))?;
    Ok(write_grouped(&p, format, out)?)
}

fn label(frames: &HashMap<i64, &FrameInfo>, id: i64) -> (String, String) {
    match frames.get(&id) {
        Some(f) => (
            format!("{} ({}:{})", f.function, f.file, f.line),
            f.source.clone().unwrap_or_default().trim().to_owned(),
        ),
        None => ("<unknown>".to_owned(), String::new()),
    }
}

pub fn write_request_profile(
    p: &RequestProfile,
    format: Format,
    out: &mut dyn Write,
) -> io::Result<()> {
    let frames: HashMap<i64, &FrameInfo> = p.frames.iter().map(|f| (f.id, f)).collect();
    let rows = p.tree.iter().map(|n| (n.depth, n));
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, p)?;
            out.write_all(b"\n")
        }
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record([
                "depth", "function", "file", "line", "time_ms", "share", "hits", "source",
            ])?;
            for (depth, n) in rows {
                let f = frames.get(&n.frame);
                csv.write_record([
                    depth.to_string(),
                    f.map_or("<unknown>".into(), |f| f.function.clone()),
                    f.map_or(String::new(), |f| f.file.clone()),
                    f.map_or(String::new(), |f| f.line.to_string()),
                    format!("{:.3}", n.time_ms),
                    format!("{:.4}", n.share),
                    n.hits.to_string(),
                    f.and_then(|f| f.source.clone()).unwrap_or_default(),
                ])?;
            }
            csv.flush()
        }
        Format::Table | Format::Folded => {
            writeln!(
                out,
                "request {}: {:.1} ms, {} samples, GC {}{}",
                p.request_id,
                p.duration_ms,
                p.samples,
                p.gc_ms
                    .map_or("unavailable".to_owned(), |ms| format!("{ms:.1} ms")),
                if p.truncated {
                    " (some stacks truncated)"
                } else {
                    ""
                }
            )?;
            writeln!(out, "{:>10} {:>7} {:>6}  code", "time ms", "share", "hits")?;
            for (depth, n) in rows {
                let (name, source) = label(&frames, n.frame);
                writeln!(
                    out,
                    "{:>10.1} {:>6.1}% {:>6}  {}{}{}{}",
                    n.time_ms,
                    n.share * 100.0,
                    n.hits,
                    "  ".repeat(depth),
                    name,
                    if source.is_empty() { "" } else { "  | " },
                    source
                )?;
            }
            Ok(())
        }
    }
}

pub fn write_grouped(p: &GroupedProfile, format: Format, out: &mut dyn Write) -> io::Result<()> {
    let frames: HashMap<i64, &FrameInfo> = p.frames.iter().map(|f| (f.id, f)).collect();
    match format {
        Format::Folded => out.write_all(p.folded.as_bytes()),
        Format::Json => {
            serde_json::to_writer(&mut *out, p)?;
            out.write_all(b"\n")
        }
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record([
                "function", "file", "line", "hits", "avg_ms", "std_ms", "total_ms", "share",
                "source",
            ])?;
            for l in &p.lines {
                let f = frames.get(&l.frame);
                csv.write_record([
                    f.map_or("<unknown>".into(), |f| f.function.clone()),
                    f.map_or(String::new(), |f| f.file.clone()),
                    f.map_or(String::new(), |f| f.line.to_string()),
                    l.hits.to_string(),
                    format!("{:.3}", l.avg_ms),
                    format!("{:.3}", l.std_ms),
                    format!("{:.3}", l.total_ms),
                    format!("{:.4}", l.share),
                    f.and_then(|f| f.source.clone()).unwrap_or_default(),
                ])?;
            }
            csv.flush()
        }
        Format::Table => {
            writeln!(
                out,
                "{}: {} profiled requests, {:.1} ms in all, GC {}{}",
                p.key,
                p.requests,
                p.total_ms,
                p.gc_ms
                    .map_or("unavailable".to_owned(), |ms| format!("{ms:.1} ms")),
                if p.truncated_requests > 0 {
                    format!(", {} with truncated stacks", p.truncated_requests)
                } else {
                    String::new()
                }
            )?;
            writeln!(
                out,
                "\n{:>10} {:>10} {:>7} {:>7}  code",
                "avg ms", "total ms", "share", "hits"
            )?;
            for n in &p.tree {
                let depth = n.depth;
                let (name, _) = label(&frames, n.frame);
                writeln!(
                    out,
                    "{:>10.2} {:>10.1} {:>6.1}% {:>7}  {}{}",
                    n.avg_ms.unwrap_or_default(),
                    n.time_ms,
                    n.share * 100.0,
                    n.hits,
                    "  ".repeat(depth),
                    name
                )?;
            }
            writeln!(
                out,
                "\n{:>7} {:>10} {:>10} {:>10} {:>7}  code",
                "hits", "avg ms", "std ms", "total ms", "share"
            )?;
            for l in &p.lines {
                let (name, source) = label(&frames, l.frame);
                writeln!(
                    out,
                    "{:>7} {:>10.2} {:>10.2} {:>10.1} {:>6.1}%  {}{}{}",
                    l.hits,
                    l.avg_ms,
                    l.std_ms,
                    l.total_ms,
                    l.share * 100.0,
                    name,
                    if source.is_empty() { "" } else { "  | " },
                    source
                )?;
            }
            Ok(())
        }
    }
}
