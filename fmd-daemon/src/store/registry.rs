//! Running daemons announce themselves in a well-known runtime directory (`/run/fmd/<pid>.json`: pid, API
//! address and database), besides the `<db>.daemon` file, so that `fmd-daemon query` without `--db` finds
//! a daemon that runs on another store (as `cargo xtask demo` starts one) instead of failing on the
//! default path.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{DaemonFile, Error};

/// Where daemons register; `FMD_RUNTIME_DIR` overrides it (tests, unprivileged setups).
pub const RUNTIME_DIR: &str = "/run/fmd";

pub fn runtime_dir() -> PathBuf {
    std::env::var_os("FMD_RUNTIME_DIR").map_or_else(|| PathBuf::from(RUNTIME_DIR), PathBuf::from)
}

/// One running daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub pid: u32,
    pub listen: SocketAddr,
    /// The database it holds, absolute.
    pub db: PathBuf,
}

impl Registration {
    fn path(dir: &Path, pid: u32) -> PathBuf {
        dir.join(format!("{pid}.json"))
    }

    /// Writes `dir/<pid>.json` atomically (mode 0644: it names no secret, and the CLI may run as anyone).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let fail = |path: &Path, source| Error::DaemonFile {
            what: "register the daemon in",
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
        let path = Self::path(dir, self.pid);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec(self).map_err(|source| Error::DaemonFileFormat {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, json).map_err(|e| fail(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| fail(&path, e))
    }

    /// Removes this daemon's entry; a missing one is fine.
    pub fn remove(dir: &Path, pid: u32) -> Result<(), Error> {
        let path = Self::path(dir, pid);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::DaemonFile {
                what: "unregister the daemon from",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// The daemons registered in `dir` that still run and still hold their database (a daemon killed
    /// with SIGKILL leaves its entry behind; its pid may be reused), ordered by database.
    pub fn running(dir: &Path) -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<Self> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let bytes = std::fs::read(e.path()).ok()?;
                serde_json::from_slice::<Self>(&bytes).ok()
            })
            .filter(|r| {
                matches!(DaemonFile::read(&r.db), Ok(Some(d)) if d.pid == r.pid && d.is_alive())
            })
            .collect();
        out.sort_by(|a, b| a.db.cmp(&b.db).then(a.pid.cmp(&b.pid)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_daemons_holding_their_store_are_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        assert_eq!(Registration::running(&run), []);
        let listen: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
        let me = std::process::id();
        let db = dir.path().join("a.duckdb");
        let live = Registration {
            pid: me,
            listen,
            db: db.clone(),
        };
        live.write(&run).expect("register");
        // Registered, but its `<db>.daemon` says nothing runs there.
        assert_eq!(Registration::running(&run), []);
        DaemonFile { pid: me, listen }
            .write(&db)
            .expect("daemon file");
        assert_eq!(Registration::running(&run), std::slice::from_ref(&live));
        // A dead daemon's entry, and one whose database names another pid, are ignored.
        let other = dir.path().join("b.duckdb");
        Registration {
            pid: 4_194_304,
            listen,
            db: other.clone(),
        }
        .write(&run)
        .expect("dead");
        DaemonFile {
            pid: 4_194_304,
            listen,
        }
        .write(&other)
        .expect("daemon file");
        std::fs::write(run.join("junk.json"), "{").expect("junk");
        assert_eq!(Registration::running(&run), [live]);
        Registration::remove(&run, me).expect("remove");
        Registration::remove(&run, me).expect("remove again");
        assert_eq!(Registration::running(&run), []);
    }
}
