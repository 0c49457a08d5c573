//! The DuckDB schema and its versioned migrations, so a file written by an older fmd opens in a newer one
//! and a file written by a newer fmd is refused instead of misread.

use duckdb::{params, Connection};

use super::Error;

/// Migration `i` (0-based) takes the schema from version `i` to `i + 1`. Append new migrations at the end;
/// never edit one that has shipped, since files in the field already ran it.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE daemon_runs (
        id          BIGINT PRIMARY KEY,
        started_at  TIMESTAMP NOT NULL,
        stopped_at  TIMESTAMP,
        target_pid  UINTEGER NOT NULL,
        version     VARCHAR NOT NULL
    );
    -- Generic (name, value) pairs so a new counter needs no migration. Values are the run's running
    -- totals, overwritten as the daemon reports them.
    CREATE TABLE counters (
        run_id  BIGINT NOT NULL,
        name    VARCHAR NOT NULL,
        value   BIGINT NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE requests (
        id           BIGINT PRIMARY KEY,
        run_id       BIGINT NOT NULL,
        ts           TIMESTAMP NOT NULL,
        duration_ns  UBIGINT NOT NULL,
        duration_ms  DOUBLE NOT NULL,
        method       VARCHAR NOT NULL,
        path         VARCHAR NOT NULL,
        query        VARCHAR,
        http_version VARCHAR NOT NULL,
        status       USMALLINT NOT NULL,
        bytes_in     UBIGINT NOT NULL,
        bytes_out    UBIGINT NOT NULL,
        remote_ip    VARCHAR,
        worker_pid   UINTEGER NOT NULL,
        tid          UINTEGER NOT NULL,
        host         VARCHAR,
        user_agent   VARCHAR,
        head         BLOB NOT NULL,
        endpoint     VARCHAR,
        rule         VARCHAR
    );
    -- Rows arrive roughly in ts order, so DuckDB's per-row-group min/max already prunes most of a time
    -- range scan; these ART indexes serve the selective cases (a narrow window, one endpoint).
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_endpoint_ts ON requests (endpoint, ts);
    ",
    // 2: the app's endpoints as read from its route table (so never-requested ones are listed too), and
    // how each run attributes requests to endpoints.
    "
    -- One row per (endpoint, rule, methods) ever seen in a route table; a rule gone from a newer deploy
    -- keeps its row and its last_seen. The writer keeps the triple unique (DuckDB indexes no lists).
    CREATE TABLE endpoints (
        endpoint      VARCHAR NOT NULL,
        rule          VARCHAR NOT NULL,
        -- Sorted, without duplicates; empty means any method (a Werkzeug rule with methods=None).
        methods       VARCHAR[] NOT NULL,
        first_seen    TIMESTAMP NOT NULL,
        last_seen     TIMESTAMP NOT NULL,
        first_run_id  BIGINT NOT NULL,
        last_run_id   BIGINT NOT NULL
    );
    -- Per run: flask-routes, path-templates or pending, and the rules in the last route table read.
    CREATE TABLE attribution (
        run_id      BIGINT PRIMARY KEY,
        mode        VARCHAR NOT NULL,
        rules       UBIGINT NOT NULL,
        updated_at  TIMESTAMP NOT NULL
    );
    ",
    // 3: per-request Python stack samples (store/profiles.rs).
    super::profiles::MIGRATION,
    // 4: per-endpoint rollups of the requests (store/rollup.rs).
    super::rollup::MIGRATION,
    // 5: request versions and users, and when each version was first seen (store/versions.rs).
    super::versions::MIGRATION,
    // 6: exceptions logged while serving requests, grouped (store/exceptions.rs).
    super::exceptions::MIGRATION,
    // 7: monitoring levels, level-0 counts, running averages and outliers (store/levels.rs).
    super::levels::MIGRATION,
    // 8: no ART index on requests (store/memory.rs).
    super::memory::MIGRATION,
    // 9: dashboard accounts (store/users.rs).
    super::users::MIGRATION,
];

/// The schema version this build writes and understands.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the schema up to [`VERSION`], one transaction per migration.
pub fn migrate(conn: &Connection) -> Result<(), Error> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version UINTEGER NOT NULL)")
        .map_err(|source| Error::Sql {
            what: "create schema_version",
            source,
        })?;
    let found = version(conn)?;
    if found > VERSION {
        return Err(Error::TooNew {
            found,
            known: VERSION,
        });
    }
    for (from, sql) in (found..).zip(MIGRATIONS.iter().skip(found as usize)) {
        let to = from + 1;
        tracing::info!(from, to, "migrating the fmd database");
        let run = || -> duckdb::Result<()> {
            conn.execute_batch("BEGIN TRANSACTION")?;
            conn.execute_batch(sql)?;
            conn.execute("DELETE FROM schema_version", [])?;
            conn.execute("INSERT INTO schema_version VALUES (?)", params![to])?;
            conn.execute_batch("COMMIT")
        };
        if let Err(source) = run() {
            // Best effort: the migration's own error is what matters.
            let _ = conn.execute_batch("ROLLBACK");
            return Err(Error::Migration { to, source });
        }
    }
    Ok(())
}

/// The file's schema version; 0 for a file fmd never migrated.
pub fn version(conn: &Connection) -> Result<u32, Error> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM information_schema.tables WHERE table_name = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map_err(|source| Error::Sql { what: "look for schema_version", source })?;
    if !exists {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )
    .map_err(|source| Error::Sql {
        what: "read schema_version",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT table_name FROM information_schema.tables ORDER BY table_name")
            .expect("prepare");
        let names = stmt.query_map([], |row| row.get(0)).expect("query");
        names.collect::<Result<_, _>>().expect("rows")
    }

    #[test]
    fn fresh_file_gets_every_table_and_the_current_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("a/b/fmd.duckdb")).expect("open");
        assert_eq!(version(store.connection()).expect("version"), VERSION);
        assert_eq!(
            tables(store.connection()),
            [
                "attribution",
                "counters",
                "daemon_runs",
                "endpoint_averages",
                "endpoint_duration_totals",
                "endpoint_durations",
                "endpoint_hours",
                "endpoint_levels",
                "endpoint_totals",
                "endpoint_unrecorded",
                "endpoints",
                "exception_groups",
                "exception_occurrences",
                "outliers",
                "profile_frames",
                "profile_samples",
                "profile_stacks",
                "profiled_requests",
                "requests",
                "rollup_state",
                "schema_version",
                "users",
                "versions"
            ]
        );
    }

    #[test]
    fn existing_file_reopens_without_migrating_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        drop(Store::open(&path).expect("first open"));
        let store = Store::open(&path).expect("second open");
        let rows: u32 = store
            .connection()
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .expect("count");
        assert_eq!(
            (version(store.connection()).expect("version"), rows),
            (VERSION, 1)
        );
        drop(store);
        Store::open_read_only(&path).expect("read-only open");
    }

    #[test]
    fn newer_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fmd.duckdb");
        let store = Store::open(&path).expect("open");
        store
            .connection()
            .execute(
                "UPDATE schema_version SET version = ?",
                params![VERSION + 1],
            )
            .expect("bump");
        drop(store);
        for result in [
            Store::open(&path).map(drop),
            Store::open_read_only(&path).map(drop),
        ] {
            let err = result.expect_err("a newer schema must be refused");
            assert!(
                matches!(err, Error::TooNew { found, known } if found == VERSION + 1 && known == VERSION),
                "{err}"
            );
            assert!(err.to_string().contains("newer fmd"), "{err}");
        }
    }

    #[test]
    fn failed_migration_leaves_the_file_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("fmd.duckdb")).expect("open");
        // A table in the way makes migration 1 fail half way.
        conn.execute_batch("CREATE TABLE requests (x INTEGER)")
            .expect("create");
        let err = migrate(&conn).expect_err("must fail");
        assert!(matches!(err, Error::Migration { to: 1, .. }), "{err}");
        assert_eq!(version(&conn).expect("version"), 0);
        assert!(!tables(&conn).contains(&"daemon_runs".to_owned()));
    }
}
