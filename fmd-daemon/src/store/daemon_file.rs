//! `<db>.daemon`: how other processes learn that a running daemon holds the database (DuckDB lets only
//! one process open it read-write) and where its HTTP API listens, so the CLI asks the daemon instead.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::Error;

/// The content of `<db>.daemon`, e.g. `{"pid": 1234, "listen": "127.0.0.1:9876"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonFile {
    pub pid: u32,
    pub listen: SocketAddr,
}

impl DaemonFile {
    /// `<db>.daemon`, beside the database.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".daemon");
        PathBuf::from(name)
    }

    /// Writes the file for `db` atomically (readers never see half of it).
    pub fn write(&self, db: &Path) -> Result<(), Error> {
        let path = Self::path_for(db);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let json = serde_json::to_vec(self).map_err(|source| Error::DaemonFileFormat {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, json).map_err(|source| Error::DaemonFile {
            what: "write",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::DaemonFile {
            what: "write",
            path,
            source,
        })
    }

    /// Removes the file for `db`; a missing file is fine.
    pub fn remove(db: &Path) -> Result<(), Error> {
        let path = Self::path_for(db);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::DaemonFile {
                what: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Reads the file for `db`; `None` when there is none.
    pub fn read(db: &Path) -> Result<Option<Self>, Error> {
        let path = Self::path_for(db);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::DaemonFile {
                    what: "read",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::DaemonFileFormat { path, source })
    }

    /// Whether the process that wrote the file still exists (a daemon killed with SIGKILL leaves it behind).
    pub fn is_alive(&self) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the pid exists and may be signalled; nothing is sent.
        let rc = unsafe { libc::kill(pid, 0) };
        // EPERM: it exists but belongs to another user (a root daemon, a user's CLI).
        rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fmd.duckdb");
        assert_eq!(
            DaemonFile::path_for(&db),
            dir.path().join("fmd.duckdb.daemon")
        );
        assert_eq!(DaemonFile::read(&db).expect("read"), None);
        let file = DaemonFile {
            pid: std::process::id(),
            listen: "127.0.0.1:9876".parse().expect("addr"),
        };
        file.write(&db).expect("write");
        let text = std::fs::read_to_string(DaemonFile::path_for(&db)).expect("text");
        assert_eq!(
            text,
            format!(
                r#"{{"pid":{},"listen":"127.0.0.1:9876"}}"#,
                std::process::id()
            )
        );
        assert_eq!(DaemonFile::read(&db).expect("read"), Some(file));
        assert!(file.is_alive());
        DaemonFile::remove(&db).expect("remove");
        DaemonFile::remove(&db).expect("remove again");
        assert_eq!(DaemonFile::read(&db).expect("read"), None);
    }

    #[test]
    fn liveness() {
        let listen: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        for (pid, alive) in [
            (std::process::id(), true),
            (1, true),
            (0, false),
            (u32::MAX, false),
            (4_194_304, false),
        ] {
            assert_eq!(DaemonFile { pid, listen }.is_alive(), alive, "pid {pid}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fmd.duckdb");
        std::fs::write(DaemonFile::path_for(&db), "pid=3").expect("write");
        assert!(matches!(
            DaemonFile::read(&db),
            Err(Error::DaemonFileFormat { .. })
        ));
    }
}
