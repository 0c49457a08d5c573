//! Who may read what fmd stores: request paths, query strings and client IPs (soon headers and user ids)
//! are the monitored app's users' data. The store, its WAL, `<db>.daemon` and anything else the daemon
//! writes beside them are created 0600 in a state directory created 0700, whatever the umask it was
//! started with; an existing store that others can read is reported at start.

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// Permission bits that let anyone but the owner in.
const OTHERS: u32 = 0o077;

/// Sets the process umask to 077, so every file the daemon creates is private to its owner. DuckDB creates
/// the WAL and its spill directory itself, so a mode per `open` cannot reach them: the umask does. The
/// daemon starts no other program and creates nothing meant for others (it logs to stderr), so nothing
/// else is affected. Returns the previous umask.
pub fn private_umask() -> u32 {
    // SAFETY: umask(2) cannot fail and only changes this process's file-creation mask.
    let previous = unsafe { libc::umask(0o077) };
    u32::from(previous)
}

/// Creates `dir` and any missing parent with mode 0700 (directories that already exist are left as
/// they are: `--db /tmp/x.duckdb` must not change `/tmp`).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The files of the store at `db` that exist and that others can read or write, with their modes.
pub fn exposed_files(db: &Path) -> Vec<(PathBuf, u32)> {
    let with_suffix = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_owned(), with_suffix(".wal"), with_suffix(".daemon")]
        .into_iter()
        .filter_map(|path| {
            let mode = std::fs::metadata(&path).ok()?.permissions().mode() & 0o777;
            (mode & OTHERS != 0).then_some((path, mode))
        })
        .collect()
}

/// Warns about each file of the store at `db` that others can read, saying how to fix it.
pub fn warn_if_exposed(db: &Path) {
    for (path, mode) in exposed_files(db) {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:04o}"),
            "the store is readable by other users (it holds request paths, query strings and client IPs): \
             `chmod 600 {}`",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn state_directories_are_created_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let state = dir.path().join("var/lib/fmd");
        create_private_dir(&state).expect("create");
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&dir.path().join("var")), 0o700);
        // An existing directory is left alone.
        create_private_dir(dir.path()).expect("exists");
        assert_eq!(mode(dir.path()), 0o755);
    }

    #[test]
    fn exposed_store_files_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fmd.duckdb");
        assert!(exposed_files(&db).is_empty(), "no files, nothing exposed");
        for (name, mode) in [
            ("fmd.duckdb", 0o644),
            ("fmd.duckdb.wal", 0o600),
            ("fmd.duckdb.daemon", 0o640),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, b"").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        assert_eq!(
            exposed_files(&db),
            [
                (db.clone(), 0o644),
                (dir.path().join("fmd.duckdb.daemon"), 0o640)
            ]
        );
    }
}
