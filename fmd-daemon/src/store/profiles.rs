//! Per-request Python stack samples: deduplicated frames (code line + its source text) and stacks, the
//! samples of each profiled request, a writer thread of their own (on a connection cloned from the
//! daemon's database, so the request writer is untouched), bounded retention, and the reads behind the
//! profile views.

use std::{
    collections::HashMap,
    sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
    thread::JoinHandle,
};

use duckdb::{
    params,
    types::{TimeUnit, Value},
    Connection,
};
use serde::{Deserialize, Serialize};

use super::{transaction, Error};
use crate::profile::{
    tree::{self, GroupedLine, StackWeight, TreeNode},
    trim,
};

/// Schema of the profile tables (migration 2). Stacks are frame ids joined by commas, outermost first.
pub const MIGRATION: &str = "
    CREATE TABLE profile_frames (
        id          BIGINT PRIMARY KEY,
        file        VARCHAR NOT NULL,
        line        INTEGER NOT NULL,
        function    VARCHAR NOT NULL,
        first_line  INTEGER NOT NULL,
        source      VARCHAR
    );
    CREATE TABLE profile_stacks (
        id      BIGINT PRIMARY KEY,
        frames  VARCHAR NOT NULL
    );
    -- One row per profiled request, keyed like its requests row (worker, thread, start).
    CREATE TABLE profiled_requests (
        id           BIGINT PRIMARY KEY,
        worker_pid   UINTEGER NOT NULL,
        tid          UINTEGER NOT NULL,
        ts           TIMESTAMP NOT NULL,
        duration_ns  UBIGINT NOT NULL,
        path         VARCHAR NOT NULL,
        endpoint     VARCHAR,
        samples      UINTEGER NOT NULL,
        truncated    BOOLEAN NOT NULL,
        -- Garbage collection inside the request; NULL where the interpreter has no GC probes.
        gc_ns        UBIGINT
    );
    CREATE INDEX profiled_requests_key ON profiled_requests (worker_pid, tid, ts);
    CREATE TABLE profile_samples (
        profile_id  BIGINT NOT NULL,
        stack_id    BIGINT NOT NULL,
        off_cpu     BOOLEAN NOT NULL,
        samples     UINTEGER NOT NULL,
        weight_ns   UBIGINT NOT NULL
    );
";

/// Profiled requests kept; older ones are deleted with their samples (frames and stacks stay: small).
pub const MAX_PROFILED_REQUESTS: i64 = 100_000;

/// A code line as the daemon resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProfileFrame {
    pub file: String,
    pub line: i32,
    pub function: String,
    pub first_line: i32,
    /// The line's text, read from the app's file (through /proc/PID/root) when it was first seen.
    pub source: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileStack {
    /// Outermost frame first.
    pub frames: Vec<ProfileFrame>,
    pub off_cpu: bool,
    pub truncated: bool,
    pub samples: u32,
    pub weight_ns: u64,
}

/// The samples of one finished request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRecord {
    pub worker_pid: u32,
    pub tid: u32,
    pub ts_us: i64,
    pub duration_ns: u64,
    pub path: String,
    pub endpoint: Option<String>,
    pub stacks: Vec<ProfileStack>,
    /// `None` where the interpreter has no GC probes.
    pub gc_ns: Option<u64>,
}

/// Ids already given to frames and stacks, so each is stored once.
#[derive(Debug, Default)]
pub struct Dedup {
    frames: HashMap<(String, i32, String), i64>,
    stacks: HashMap<String, i64>,
    next_frame: i64,
    next_stack: i64,
    next_profile: i64,
}

fn sql(what: &'static str) -> impl Fn(duckdb::Error) -> Error {
    move |source| Error::Sql { what, source }
}

impl Dedup {
    pub fn load(conn: &Connection) -> Result<Self, Error> {
        let mut d = Self::default();
        let mut stmt = conn
            .prepare("SELECT id, file, line, function FROM profile_frames")
            .map_err(sql("read profile frames"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(sql("read profile frames"))?;
        for row in rows {
            let (id, file, line, function) = row.map_err(sql("read profile frames"))?;
            d.next_frame = d.next_frame.max(id);
            d.frames.insert((file, line, function), id);
        }
        let mut stmt = conn
            .prepare("SELECT id, frames FROM profile_stacks")
            .map_err(sql("read profile stacks"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql("read profile stacks"))?;
        for row in rows {
            let (id, frames) = row.map_err(sql("read profile stacks"))?;
            d.next_stack = d.next_stack.max(id);
            d.stacks.insert(frames, id);
        }
        d.next_profile = conn
            .query_row(
                "SELECT coalesce(max(id), 0) FROM profiled_requests",
                [],
                |r| r.get(0),
            )
            .map_err(sql("read the largest profile id"))?;
        Ok(d)
    }
}

/// Appends `batch` in one transaction (new frames and stacks included).
pub fn append_profiles(
    conn: &Connection,
    dedup: &mut Dedup,
    batch: &[ProfileRecord],
) -> Result<(), Error> {
    let err = sql("append profiles");
    // Ids handed out in a failed transaction are taken back with it.
    let saved = (dedup.next_frame, dedup.next_stack, dedup.next_profile);
    let mut new_frames = Vec::new();
    let mut new_stacks = Vec::new();
    let mut write = || -> duckdb::Result<()> {
        let mut frames = conn.appender("profile_frames")?;
        let mut stacks = conn.appender("profile_stacks")?;
        let mut profiles = conn.appender("profiled_requests")?;
        let mut samples = conn.appender("profile_samples")?;
        for p in batch {
            dedup.next_profile += 1;
            let profile_id = dedup.next_profile;
            let total: u64 = p.stacks.iter().map(|s| u64::from(s.samples)).sum();
            profiles.append_row(params![
                profile_id,
                p.worker_pid,
                p.tid,
                Value::Timestamp(TimeUnit::Microsecond, p.ts_us),
                p.duration_ns,
                p.path,
                p.endpoint,
                u32::try_from(total).unwrap_or(u32::MAX),
                p.stacks.iter().any(|s| s.truncated),
                p.gc_ns,
            ])?;
            for s in &p.stacks {
                let mut ids = Vec::with_capacity(s.frames.len());
                for f in &s.frames {
                    let key = (f.file.clone(), f.line, f.function.clone());
                    let id = match dedup.frames.get(&key) {
                        Some(&id) => id,
                        None => {
                            dedup.next_frame += 1;
                            let id = dedup.next_frame;
                            frames.append_row(params![
                                id,
                                f.file,
                                f.line,
                                f.function,
                                f.first_line,
                                f.source
                            ])?;
                            dedup.frames.insert(key.clone(), id);
                            new_frames.push(key);
                            id
                        }
                    };
                    ids.push(id.to_string());
                }
                let key = ids.join(",");
                let stack_id = match dedup.stacks.get(&key) {
                    Some(&id) => id,
                    None => {
                        dedup.next_stack += 1;
                        let id = dedup.next_stack;
                        stacks.append_row(params![id, key])?;
                        dedup.stacks.insert(key.clone(), id);
                        new_stacks.push(key);
                        id
                    }
                };
                samples.append_row(params![
                    profile_id,
                    stack_id,
                    s.off_cpu,
                    s.samples,
                    s.weight_ns
                ])?;
            }
        }
        frames.flush()?;
        stacks.flush()?;
        profiles.flush()?;
        samples.flush()
    };
    let result = transaction(conn, || write().map_err(&err));
    if result.is_err() {
        (dedup.next_frame, dedup.next_stack, dedup.next_profile) = saved;
        for k in new_frames {
            dedup.frames.remove(&k);
        }
        for k in new_stacks {
            dedup.stacks.remove(&k);
        }
    }
    result
}

/// Deletes the oldest profiled requests beyond `keep`, with their samples.
pub fn prune_profiles(conn: &Connection, keep: i64) -> Result<(), Error> {
    conn.execute(
        "DELETE FROM profile_samples WHERE profile_id <= (SELECT coalesce(max(id), 0) FROM profiled_requests) - ?",
        params![keep],
    )
    .map_err(sql("prune profile samples"))?;
    conn.execute("DELETE FROM profiled_requests WHERE id <= (SELECT coalesce(max(id), 0) FROM profiled_requests) - ?", params![keep])
        .map_err(sql("prune profiled requests"))?;
    Ok(())
}

/// The sending side of the profile writer; batches that do not fit the queue are counted, not waited for.
#[derive(Clone, Debug)]
pub struct ProfileSink {
    tx: SyncSender<Vec<ProfileRecord>>,
}

impl ProfileSink {
    pub fn send(&self, batch: Vec<ProfileRecord>) -> Result<(), Error> {
        self.tx.try_send(batch).map_err(|e| match e {
            TrySendError::Full(_) => Error::WriterFull,
            TrySendError::Disconnected(_) => Error::WriterGone,
        })
    }
}

/// Starts the profile writer on `conn` (from [`super::Store::reader`]); it stops when every sink is dropped.
pub fn spawn_profile_writer(conn: Connection) -> Result<(ProfileSink, JoinHandle<()>), Error> {
    let dedup = Dedup::load(&conn)?;
    let (tx, rx) = sync_channel(256);
    let handle = std::thread::Builder::new()
        .name("fmd-profile-writer".into())
        .spawn(move || {
            super::lower_writer_priority();
            write_loop(&conn, dedup, &rx);
        })
        .map_err(Error::WriterSpawn)?;
    Ok((ProfileSink { tx }, handle))
}

fn write_loop(conn: &Connection, mut dedup: Dedup, rx: &Receiver<Vec<ProfileRecord>>) {
    let mut since_prune = 0usize;
    while let Ok(batch) = rx.recv() {
        match append_profiles(conn, &mut dedup, &batch) {
            Ok(()) => since_prune += batch.len(),
            Err(e) => {
                tracing::warn!(error = %e, profiles = batch.len(), "cannot store request profiles");
            }
        }
        if since_prune >= 1000 {
            since_prune = 0;
            if let Err(e) = prune_profiles(conn, MAX_PROFILED_REQUESTS) {
                tracing::warn!(error = %e, "cannot prune old profiles");
            }
        }
    }
}

/// A frame as the views show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameInfo {
    pub id: i64,
    pub file: String,
    pub line: i32,
    pub function: String,
    pub first_line: i32,
    pub source: Option<String>,
}

/// `GET /api/requests/{id}/profile`: the execution tree of one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestProfile {
    pub request_id: i64,
    pub duration_ms: f64,
    pub samples: u64,
    /// Some stack was deeper than the sampler reads (its outermost frames are missing).
    pub truncated: bool,
    /// Garbage collection inside the request; `None`: unavailable (the interpreter has no GC probes).
    pub gc_ms: Option<f64>,
    pub frames: Vec<FrameInfo>,
    /// In pre-order, with depth and parent index.
    pub tree: Vec<TreeNode>,
}

/// Which requests a grouped profile merges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileKey {
    Endpoint(String),
    /// The raw path, until every request has an endpoint.
    Path(String),
}

/// `GET /api/endpoints/{endpoint}/grouped-profile`: the merged profile of the last N profiled requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupedProfile {
    pub key: String,
    pub requests: usize,
    pub request_ids: Vec<Option<i64>>,
    pub truncated_requests: usize,
    pub total_ms: f64,
    /// Garbage collection in these requests; `None`: unavailable (no GC probes in the interpreter).
    pub gc_ms: Option<f64>,
    pub frames: Vec<FrameInfo>,
    /// In pre-order, with depth and parent index.
    pub tree: Vec<TreeNode>,
    pub lines: Vec<GroupedLine>,
    /// Folded stacks (`a;b;c µs` lines) for flame-graph tools.
    pub folded: String,
}

/// The profile of request `request_id` from the app's WSGI entry down (the server's frames folded);
/// `None` when it has none (unknown request, or no samples).
pub fn request_profile(
    conn: &Connection,
    request_id: i64,
) -> Result<Option<RequestProfile>, Error> {
    request_profile_view(conn, request_id, false)
}

/// [`request_profile`], with every frame from the thread's start when `full_stack`.
pub fn request_profile_view(
    conn: &Connection,
    request_id: i64,
    full_stack: bool,
) -> Result<Option<RequestProfile>, Error> {
    let found = conn.query_row(
        "SELECT p.id, p.duration_ns, p.truncated, p.gc_ns FROM requests r JOIN profiled_requests p
           ON p.worker_pid = r.worker_pid AND p.tid = r.tid AND p.ts = r.ts WHERE r.id = ?",
        params![request_id],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<u64>>(3)?,
            ))
        },
    );
    let (profile_id, duration_ns, truncated, gc_ns) = match found {
        Ok(v) => v,
        Err(duckdb::Error::QueryReturnedNoRows) => return Ok(None),
        Err(source) => {
            return Err(Error::Sql {
                what: "find a request's profile",
                source,
            })
        }
    };
    let mut stacks = stacks_of(conn, &[profile_id])?;
    let mut frames = frames_of(conn, &stacks)?;
    if !full_stack {
        frames = fold_server(&mut stacks, frames);
    }
    Ok(Some(RequestProfile {
        request_id,
        duration_ms: duration_ns as f64 / 1e6,
        samples: stacks.iter().map(|s| s.samples).sum(),
        truncated,
        gc_ms: gc_ns.map(|ns| ns as f64 / 1e6),
        frames,
        tree: tree::request_tree(&stacks, duration_ns),
    }))
}

/// The merged profile of the last `n` profiled requests of `key`, from the app's WSGI entry down.
pub fn grouped_profile(
    conn: &Connection,
    key: &ProfileKey,
    n: usize,
) -> Result<GroupedProfile, Error> {
    grouped_profile_view(conn, key, n, false)
}

/// [`grouped_profile`], with every frame from the thread's start when `full_stack`.
pub fn grouped_profile_view(
    conn: &Connection,
    key: &ProfileKey,
    n: usize,
    full_stack: bool,
) -> Result<GroupedProfile, Error> {
    let (filter, value) = match key {
        ProfileKey::Endpoint(e) => ("coalesce(p.endpoint, r.endpoint) = ?", e),
        ProfileKey::Path(p) => ("p.path = ?", p),
    };
    let query = format!(
        "SELECT p.id, p.duration_ns, p.truncated, r.id, p.gc_ns FROM profiled_requests p LEFT JOIN requests r
           ON p.worker_pid = r.worker_pid AND p.tid = r.tid AND p.ts = r.ts
         WHERE {filter} ORDER BY p.ts DESC LIMIT ?"
    );
    let mut stmt = conn
        .prepare(&query)
        .map_err(sql("select profiled requests"))?;
    let rows = stmt
        .query_map(params![value, n as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<u64>>(4)?,
            ))
        })
        .map_err(sql("select profiled requests"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("select profiled requests"))?;
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let durations: Vec<u64> = rows.iter().map(|r| r.1).collect();
    let mut stacks = stacks_of(conn, &ids)?;
    // `request` is the position in `ids`.
    let position: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for s in &mut stacks {
        s.request = position.get(&(s.request as i64)).copied().unwrap_or(0);
    }
    let mut frames = frames_of(conn, &stacks)?;
    if !full_stack {
        frames = fold_server(&mut stacks, frames);
    }
    let labels: HashMap<i64, String> = frames
        .iter()
        .map(|f| (f.id, format!("{} ({}:{})", f.function, f.file, f.line)))
        .collect();
    let merged = tree::grouped(&stacks, &durations);
    Ok(GroupedProfile {
        key: value.clone(),
        requests: rows.len(),
        request_ids: rows.iter().map(|r| r.3).collect(),
        truncated_requests: rows.iter().filter(|r| r.2).count(),
        total_ms: merged.total_ms,
        gc_ms: rows
            .iter()
            .filter_map(|r| r.4)
            .reduce(|a, b| a + b)
            .map(|ns| ns as f64 / 1e6),
        frames,
        tree: merged.tree,
        lines: merged.lines,
        folded: tree::folded(&stacks, |f| {
            labels
                .get(&f)
                .cloned()
                .unwrap_or_else(|| "<unknown>".to_owned())
        }),
    })
}

/// Folds each stack's server frames into [`trim::SERVER_FRAME`] ([`trim::fold_server`]); the frames
/// still used, plus the folded node's when some stack has it.
fn fold_server(stacks: &mut [StackWeight], frames: Vec<FrameInfo>) -> Vec<FrameInfo> {
    let roles: HashMap<i64, trim::Role> = frames
        .iter()
        .map(|f| (f.id, trim::role(&f.file, &f.function)))
        .collect();
    trim::fold_server(stacks, |id| {
        roles.get(&id).copied().unwrap_or(trim::Role::Other)
    });
    let used: std::collections::HashSet<i64> = stacks
        .iter()
        .flat_map(|s| s.frames.iter().copied())
        .collect();
    let mut frames: Vec<FrameInfo> = frames
        .into_iter()
        .filter(|f| used.contains(&f.id))
        .collect();
    if used.contains(&trim::SERVER_FRAME) {
        frames.insert(
            0,
            FrameInfo {
                id: trim::SERVER_FRAME,
                file: trim::SERVER_FILE.to_owned(),
                line: 0,
                function: trim::SERVER_FUNCTION.to_owned(),
                first_line: 0,
                source: None,
            },
        );
    }
    frames
}

/// The stacks of the given profiles; `request` holds the profile id.
pub(super) fn stacks_of(conn: &Connection, profile_ids: &[i64]) -> Result<Vec<StackWeight>, Error> {
    if profile_ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = profile_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let query = format!(
        "SELECT s.profile_id, st.frames, sum(s.samples)::UBIGINT, sum(s.weight_ns)::UBIGINT FROM profile_samples s
           JOIN profile_stacks st ON st.id = s.stack_id
         WHERE s.profile_id IN ({list}) GROUP BY s.profile_id, st.frames ORDER BY s.profile_id, st.frames"
    );
    let mut stmt = conn.prepare(&query).map_err(sql("read profile samples"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, u64>(3)?,
            ))
        })
        .map_err(sql("read profile samples"))?;
    let mut out = Vec::new();
    for row in rows {
        let (profile, frames, samples, weight_ns) = row.map_err(sql("read profile samples"))?;
        let frames = frames.split(',').filter_map(|f| f.parse().ok()).collect();
        out.push(StackWeight {
            request: profile as usize,
            frames,
            weight_ns,
            samples,
        });
    }
    Ok(out)
}

pub(super) fn frames_of(
    conn: &Connection,
    stacks: &[StackWeight],
) -> Result<Vec<FrameInfo>, Error> {
    let mut ids: Vec<i64> = stacks
        .iter()
        .flat_map(|s| s.frames.iter().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let query =
        format!("SELECT id, file, line, function, first_line, source FROM profile_frames WHERE id IN ({list}) ORDER BY id");
    let mut stmt = conn.prepare(&query).map_err(sql("read profile frames"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(FrameInfo {
                id: r.get(0)?,
                file: r.get(1)?,
                line: r.get(2)?,
                function: r.get(3)?,
                first_line: r.get(4)?,
                source: r.get(5)?,
            })
        })
        .map_err(sql("read profile frames"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql("read profile frames"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{append_requests, test_support::request, Store};

    fn frame(function: &str, line: i32) -> ProfileFrame {
        ProfileFrame {
            file: "/app/app.py".into(),
            line,
            function: function.into(),
            first_line: 1,
            source: Some(format!("line {line}")),
        }
    }

    fn record(i: u32, stacks: &[(&[(&str, i32)], u64)]) -> ProfileRecord {
        let r = request(i);
        ProfileRecord {
            worker_pid: r.worker_pid,
            tid: r.tid,
            ts_us: r.ts_us,
            duration_ns: r.duration_ns,
            path: r.path.clone(),
            endpoint: None,
            gc_ns: None,
            stacks: stacks
                .iter()
                .map(|(frames, ms)| ProfileStack {
                    frames: frames.iter().map(|(f, l)| frame(f, *l)).collect(),
                    off_cpu: false,
                    truncated: false,
                    samples: 1,
                    weight_ns: ms * 1_000_000,
                })
                .collect(),
        }
    }

    /// Stores `records` (twice through separate batches, to exercise dedup), reads back request `id`'s tree
    /// as (depth, function, line, ms) rows.
    fn check(records: Vec<ProfileRecord>, id: i64, expect: Option<&[(usize, &str, i32, u64)]>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let conn = store.connection();
        append_requests(conn, 1, 1, &(0..4).map(request).collect::<Vec<_>>()).expect("requests");
        let mut dedup = Dedup::load(conn).expect("dedup");
        let (a, b) = records.split_at(records.len() / 2);
        append_profiles(conn, &mut dedup, a).expect("append");
        let mut dedup = Dedup::load(conn).expect("dedup reload");
        append_profiles(conn, &mut dedup, b).expect("append");
        let got = request_profile(conn, id).expect("read");
        let Some(expect) = expect else {
            assert_eq!(got, None);
            return;
        };
        let got = got.expect("a profile");
        let names: HashMap<i64, (String, i32)> = got
            .frames
            .iter()
            .map(|f| (f.id, (f.function.clone(), f.line)))
            .collect();
        let rows: Vec<_> = got
            .tree
            .iter()
            .map(|n| {
                let (f, l) = names[&n.frame].clone();
                (n.depth, f, l, n.time_ms.round() as u64)
            })
            .collect();
        let want: Vec<_> = expect
            .iter()
            .map(|(d, f, l, ms)| (*d, f.to_string(), *l, *ms))
            .collect();
        assert_eq!(rows, want);
        let frames: i64 = conn
            .query_row("SELECT count(*) FROM profile_frames", [], |r| r.get(0))
            .expect("count");
        let distinct: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT DISTINCT file, line, function FROM profile_frames)",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(frames, distinct, "frames are stored once");
    }

    #[test]
    fn request_profiles_round_trip() {
        let view: &[(&str, i32)] = &[("view", 10), ("cpu_a", 20)];
        let other: &[(&str, i32)] = &[("view", 11), ("wait_b", 30)];
        let records = vec![
            record(0, &[(view, 6), (other, 3)]),
            record(1, &[(view, 2)]),
            record(2, &[(other, 5)]),
        ];
        check(
            records.clone(),
            1,
            Some(&[
                (0, "view", 10, 6),
                (1, "cpu_a", 20, 6),
                (0, "view", 11, 3),
                (1, "wait_b", 30, 3),
            ]),
        );
        check(
            records.clone(),
            3,
            Some(&[(0, "view", 11, 5), (1, "wait_b", 30, 5)]),
        );
        check(records, 4, None);
    }

    #[test]
    fn grouped_by_path_and_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let conn = store.connection();
        let mut dedup = Dedup::load(conn).expect("dedup");
        let mut records: Vec<_> = (0..5)
            .map(|i| record(i, &[(&[("view", 10), ("cpu_a", 20)], 1 + u64::from(i))]))
            .collect();
        for r in &mut records {
            r.path = "/p".into();
        }
        append_profiles(conn, &mut dedup, &records).expect("append");
        let g = grouped_profile(conn, &ProfileKey::Path("/p".into()), 3).expect("grouped");
        assert_eq!(g.requests, 3);
        // The last three (i = 4, 3, 2): durations from `request(i)`, cpu_a 5 + 4 + 3 ms.
        assert!(
            (g.total_ms - (1_500_004 + 1_500_003 + 1_500_002) as f64 / 1e6).abs() < 1e-9,
            "{}",
            g.total_ms
        );
        let line = g
            .lines
            .iter()
            .find(|l| {
                g.frames
                    .iter()
                    .any(|f| f.id == l.frame && f.function == "cpu_a")
            })
            .expect("cpu_a");
        assert_eq!((line.hits, line.total_ms.round() as u64), (3, 12));
        assert!(
            g.folded
                .contains("view (/app/app.py:10);cpu_a (/app/app.py:20) 12000"),
            "{}",
            g.folded
        );
        prune_profiles(conn, 2).expect("prune");
        let g = grouped_profile(conn, &ProfileKey::Path("/p".into()), 10).expect("grouped");
        assert_eq!(g.requests, 2);
    }
}
