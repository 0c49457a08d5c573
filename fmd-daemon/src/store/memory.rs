//! What holds the daemon's memory, as DuckDB and the C heap account for it, logged now and then by the writer
//! (at debug level, target `fmd_daemon::store::memory`): a daemon whose RSS grows can be diagnosed from its
//! log, and `cargo xtask bench --soak` quotes the last line when the RSS goes beyond its limit.

use std::fmt;

use duckdb::Connection;

use super::Error;

/// Drops every ART index on `requests` (its primary key included, which DuckDB can only drop by rebuilding
/// the table). ART indexes are not buffer-managed: they ignore `memory_limit`, DuckDB never evicts them, and
/// they grow with every stored request, so they were the daemon's unbounded growth under steady load (the soak
/// in BENCHMARKS.md: 13.8 MB/min with them, 4.7 without, before the settings below). No query uses them: DuckDB
/// scans an ART only for equality on a single column, and the one such query (a request by id) is served as
/// well by the row groups' min/max of the ascending ids. `SELECT *` keeps every column, whatever migrations
/// added before this one; insertion order is kept (DuckDB preserves it by default), so ids and times stay
/// sorted for the min/max. `IF EXISTS`: a file downgraded by hand (tests do) may lack them.
pub const MIGRATION: &str = "
    DROP INDEX IF EXISTS requests_ts;
    DROP INDEX IF EXISTS requests_endpoint_ts;
    CREATE TABLE requests_unindexed AS SELECT * FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_unindexed RENAME TO requests;
    ALTER TABLE requests ALTER COLUMN id SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN run_id SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN ts SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN duration_ns SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN duration_ms SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN method SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN path SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN http_version SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN status SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN bytes_in SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN bytes_out SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN worker_pid SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN tid SET NOT NULL;
    ALTER TABLE requests ALTER COLUMN head SET NOT NULL;
";

/// DuckDB settings of the daemon's database (the read-write instance the writers and the API share), each
/// bounding memory that otherwise grows with the store or the load. Measured with `cargo xtask bench --soak`
/// (BENCHMARKS.md section 4); see ARCHITECTURE.md.
const SETTINGS: &str = "
    -- The buffer pool keeps every block it has read or written until it reaches this (default: 80% of RAM), so
    -- with the default the daemon's RSS grows with the file. Beyond it DuckDB evicts clean blocks and spills
    -- large query intermediates to <db>.tmp, so this bounds memory, not what a query can do.
    SET memory_limit = '64MB';
    -- jemalloc inside DuckDB keeps freed memory in thread caches until this much is outstanding (default 128
    -- MB, nearly the daemon's whole budget); background threads return dirty pages to the kernel over time.
    SET allocator_flush_threshold = '8MB';
    SET allocator_background_threads = true;
";

/// Applies [`SETTINGS`] to the daemon's read-write database.
pub fn bound(conn: &Connection) -> Result<(), Error> {
    conn.execute_batch(SETTINGS).map_err(|source| Error::Sql {
        what: "bound DuckDB's memory",
        source,
    })
}

/// Gives the C heap's free memory back to the kernel. Rust's allocations go through glibc malloc, and request
/// batches are allocated on the capture thread and freed on the writers': glibc keeps what they free in
/// per-thread arenas (measured: 25 MB free but resident against 7 MB in use after two minutes of load), and only
/// `malloc_trim` returns the free pages inside an arena. It walks the arenas once: cheap every half minute.
pub fn trim_c_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// DuckDB's memory by tag (`duckdb_memory()`), its temporary files, and the C heap outside DuckDB's own
/// allocator (Rust's allocations go through glibc malloc; DuckDB's through its bundled jemalloc).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Breakdown {
    /// (tag, bytes in memory), the tags holding memory only, largest first.
    pub tags: Vec<(String, i64)>,
    pub temporary_bytes: i64,
    /// glibc malloc: bytes in use and bytes free but kept (`mallinfo2`).
    pub heap_in_use: Option<u64>,
    pub heap_free: Option<u64>,
}

impl Breakdown {
    pub fn read(conn: &Connection) -> Result<Self, Error> {
        let sql = |source| Error::Sql {
            what: "read duckdb_memory()",
            source,
        };
        let mut stmt = conn
            .prepare(
                "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0 \
                 ORDER BY memory_usage_bytes DESC",
            )
            .map_err(sql)?;
        let tags = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        let temporary_bytes = conn
            .query_row(
                "SELECT coalesce(sum(size), 0)::BIGINT FROM duckdb_temporary_files()",
                [],
                |r| r.get(0),
            )
            .map_err(|source| Error::Sql {
                what: "read duckdb_temporary_files()",
                source,
            })?;
        let (heap_in_use, heap_free) = c_heap();
        Ok(Self {
            tags,
            temporary_bytes,
            heap_in_use,
            heap_free,
        })
    }

    pub fn duckdb_bytes(&self) -> i64 {
        self.tags.iter().map(|(_, b)| b).sum()
    }

    /// Logs the breakdown (debug level).
    pub fn log(&self) {
        tracing::debug!(
            duckdb_mb = mb(self.duckdb_bytes()),
            tags = %Tags(&self.tags),
            temporary_mb = mb(self.temporary_bytes),
            heap_in_use_mb = self.heap_in_use.map(|b| mb(b as i64)),
            heap_free_mb = self.heap_free.map(|b| mb(b as i64)),
            "duckdb memory"
        );
    }
}

/// `TAG=1.2MB TAG=...`, for the log line.
struct Tags<'a>(&'a [(String, i64)]);

impl fmt::Display for Tags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (tag, bytes)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{tag}={:.1}MB", mb(*bytes))?;
        }
        Ok(())
    }
}

fn mb(bytes: i64) -> f64 {
    (bytes as f64 / 1e5).round() / 10.0
}

/// glibc's heap: (in use, free but kept) bytes; `None` elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn c_heap() -> (Option<u64>, Option<u64>) {
    // SAFETY: mallinfo2 has no preconditions and returns a plain struct.
    let info = unsafe { libc::mallinfo2() };
    (
        Some((info.uordblks + info.hblkhd) as u64),
        Some(info.fordblks as u64),
    )
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn c_heap() -> (Option<u64>, Option<u64>) {
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn breakdown_of_a_store_with_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        store
            .connection()
            .execute_batch("CREATE TABLE t AS SELECT range AS x FROM range(200000)")
            .expect("fill");
        let b = Breakdown::read(store.connection()).expect("read");
        assert!(b.duckdb_bytes() > 0, "{b:?}");
        assert!(
            b.tags.windows(2).all(|w| w[0].1 >= w[1].1),
            "largest first: {b:?}"
        );
        assert_eq!(b.temporary_bytes, 0);
        assert!(b.heap_in_use.is_some_and(|n| n > 0), "{b:?}");
    }

    #[test]
    fn tags_print_in_megabytes() {
        let tags = [
            ("BASE_TABLE".to_owned(), 12_345_678),
            ("ART_INDEX".to_owned(), 50_000),
        ];
        assert_eq!(Tags(&tags).to_string(), "BASE_TABLE=12.3MB ART_INDEX=0.1MB");
        assert_eq!(Tags(&[]).to_string(), "");
    }
}
