//! `<db>.token`: the local credential. The daemon writes a new random token there at every start, readable
//! by its owner only (root); a process that can read it (the CLI run as root, the tests) sends it as
//! `Authorization: Bearer <token>` and acts as an admin without a password or a CSRF token. Reading the
//! file already needs the privileges that could read the store itself.

use std::{
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use super::{secret, Error};

pub struct LocalToken;

impl LocalToken {
    /// `<db>.token`, beside the database.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".token");
        PathBuf::from(name)
    }

    /// Creates a new token and writes it for `db` with mode 0600, atomically (a reader sees the old
    /// token or the new one, and never a file readable by others).
    pub fn create(db: &Path) -> Result<String, Error> {
        let token = secret::random_token()?;
        let path = Self::path_for(db);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let err = |what, path: &Path| {
            let path = path.to_owned();
            move |source| Error::TokenFile { what, path, source }
        };
        // A leftover from a crash may have other modes: start afresh.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err("remove", &tmp)(e)),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        file.write_all(token.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(err("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(err("write", &path))?;
        Ok(token)
    }

    /// The token for `db`; `None` when there is none or this process may not read it.
    pub fn read(db: &Path) -> Option<String> {
        let path = Self::path_for(db);
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), error = %e, "cannot read the local credential");
                }
                None
            }
        }
    }

    /// Removes the token for `db` (the daemon stops); a missing file is fine.
    pub fn remove(db: &Path) -> Result<(), Error> {
        let path = Self::path_for(db);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::TokenFile {
                what: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn create_read_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fmd.duckdb");
        assert_eq!(LocalToken::read(&db), None);
        let first = LocalToken::create(&db).expect("create");
        let path = LocalToken::path_for(&db);
        assert_eq!(path, dir.path().join("fmd.duckdb.token"));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(LocalToken::read(&db).as_deref(), Some(first.as_str()));
        // A new start, a new token.
        let second = LocalToken::create(&db).expect("create again");
        assert_ne!(first, second);
        assert_eq!(LocalToken::read(&db), Some(second));
        LocalToken::remove(&db).expect("remove");
        LocalToken::remove(&db).expect("remove again");
        assert_eq!(LocalToken::read(&db), None);
    }
}
