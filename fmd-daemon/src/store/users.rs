//! Dashboard accounts: username, Argon2 password hash (never the password), admin flag and creation
//! time. Written by the daemon's API (through its connection, rarely) or by `fmd-daemon user` on a
//! stopped store. No account exists until someone creates one: there is no default password.

use duckdb::{
    params,
    types::{TimeUnit, Value},
    Connection, OptionalExt as _,
};
use serde::{Deserialize, Serialize};

use super::{
    time::{serde_us, Micros},
    transaction, Error,
};

pub const MIGRATION: &str = "
    CREATE TABLE users (
        username       VARCHAR PRIMARY KEY,
        -- A PHC string (argon2id with its salt and parameters).
        password_hash  VARCHAR NOT NULL,
        admin          BOOLEAN NOT NULL,
        created_at     TIMESTAMP NOT NULL
    );
";

/// An account as the API and the CLI show it (no hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    pub username: String,
    pub admin: bool,
    #[serde(with = "serde_us")]
    pub created_at: Micros,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {username:?} already exists")]
    Exists { username: String },
    #[error("no user {username:?}")]
    Missing { username: String },
    #[error("{username:?} is the last admin: make another user admin first")]
    LastAdmin { username: String },
    #[error(transparent)]
    Store(#[from] Error),
}

fn sql(what: &'static str) -> impl FnOnce(duckdb::Error) -> Error {
    move |source| Error::Sql { what, source }
}

/// Every account, by name.
pub fn users(conn: &Connection) -> Result<Vec<UserRow>, Error> {
    let mut stmt = conn
        .prepare("SELECT username, admin, epoch_us(created_at) FROM users ORDER BY username")
        .map_err(sql("list users"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(UserRow {
                username: r.get(0)?,
                admin: r.get(1)?,
                created_at: r.get(2)?,
            })
        })
        .map_err(sql("list users"))?;
    rows.collect::<Result<_, _>>().map_err(sql("list users"))
}

pub fn user_count(conn: &Connection) -> Result<u64, Error> {
    conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .map_err(sql("count users"))
}

/// The account `username` and its password hash.
pub fn credentials(conn: &Connection, username: &str) -> Result<Option<(UserRow, String)>, Error> {
    conn.query_row(
        "SELECT username, admin, epoch_us(created_at), password_hash FROM users WHERE username = ?",
        params![username],
        |r| {
            Ok((
                UserRow {
                    username: r.get(0)?,
                    admin: r.get(1)?,
                    created_at: r.get(2)?,
                },
                r.get(3)?,
            ))
        },
    )
    .optional()
    .map_err(sql("read a user"))
}

/// Adds an account; `only_if_none`: only when no account exists yet (the first-start setup, which must
/// not race with another one).
pub fn add_user(
    conn: &Connection,
    username: &str,
    password_hash: &str,
    admin: bool,
    now: Micros,
    only_if_none: bool,
) -> Result<UserRow, UserError> {
    transaction(conn, || {
        if only_if_none && user_count(conn)? > 0 {
            return Ok(None);
        }
        if credentials(conn, username)?.is_some() {
            return Ok(None);
        }
        conn.execute(
            "INSERT INTO users VALUES (?, ?, ?, ?)",
            params![
                username,
                password_hash,
                admin,
                Value::Timestamp(TimeUnit::Microsecond, now)
            ],
        )
        .map_err(sql("add a user"))?;
        Ok(Some(()))
    })?
    .ok_or_else(|| UserError::Exists {
        username: username.to_owned(),
    })?;
    Ok(UserRow {
        username: username.to_owned(),
        admin,
        created_at: now,
    })
}

/// Changes an account's password hash and/or admin flag; refuses to demote the last admin.
pub fn update_user(
    conn: &Connection,
    username: &str,
    password_hash: Option<&str>,
    admin: Option<bool>,
) -> Result<UserRow, UserError> {
    let outcome = transaction(conn, || {
        let Some((mut row, _)) = credentials(conn, username)? else {
            return Ok(Err(UserError::Missing {
                username: username.to_owned(),
            }));
        };
        if row.admin && admin == Some(false) && admins(conn)? <= 1 {
            return Ok(Err(UserError::LastAdmin {
                username: username.to_owned(),
            }));
        }
        if let Some(hash) = password_hash {
            conn.execute(
                "UPDATE users SET password_hash = ? WHERE username = ?",
                params![hash, username],
            )
            .map_err(sql("change a password"))?;
        }
        if let Some(admin) = admin {
            conn.execute(
                "UPDATE users SET admin = ? WHERE username = ?",
                params![admin, username],
            )
            .map_err(sql("change a role"))?;
            row.admin = admin;
        }
        Ok(Ok(row))
    })?;
    outcome
}

/// Removes an account; refuses to remove the last admin (nobody could manage accounts any more).
pub fn remove_user(conn: &Connection, username: &str) -> Result<(), UserError> {
    let outcome = transaction(conn, || {
        let Some((row, _)) = credentials(conn, username)? else {
            return Ok(Err(UserError::Missing {
                username: username.to_owned(),
            }));
        };
        if row.admin && admins(conn)? <= 1 {
            return Ok(Err(UserError::LastAdmin {
                username: username.to_owned(),
            }));
        }
        conn.execute("DELETE FROM users WHERE username = ?", params![username])
            .map_err(sql("remove a user"))?;
        Ok(Ok(()))
    })?;
    outcome
}

fn admins(conn: &Connection) -> Result<u64, Error> {
    conn.query_row("SELECT count(*) FROM users WHERE admin", [], |r| r.get(0))
        .map_err(sql("count admins"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn accounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let conn = store.connection();
        assert_eq!(user_count(conn).expect("count"), 0);
        let alice = add_user(conn, "alice", "$h1", true, 1_000_000, true).expect("first");
        assert_eq!(
            alice,
            UserRow {
                username: "alice".into(),
                admin: true,
                created_at: 1_000_000
            }
        );
        // The first-start setup happens once.
        assert!(matches!(
            add_user(conn, "bob", "$h2", true, 2, true),
            Err(UserError::Exists { .. })
        ));
        add_user(conn, "bob", "$h2", false, 2_000_000, false).expect("bob");
        assert!(matches!(
            add_user(conn, "bob", "$h3", false, 3, false),
            Err(UserError::Exists { .. })
        ));
        assert_eq!(
            users(conn)
                .expect("list")
                .iter()
                .map(|u| (u.username.as_str(), u.admin))
                .collect::<Vec<_>>(),
            [("alice", true), ("bob", false)]
        );
        assert_eq!(
            credentials(conn, "bob").expect("read").map(|(_, h)| h),
            Some("$h2".to_owned())
        );
        // The last admin stays.
        assert!(matches!(
            update_user(conn, "alice", None, Some(false)),
            Err(UserError::LastAdmin { .. })
        ));
        assert!(matches!(
            remove_user(conn, "alice"),
            Err(UserError::LastAdmin { .. })
        ));
        let bob = update_user(conn, "bob", Some("$h4"), Some(true)).expect("promote");
        assert!(bob.admin);
        assert_eq!(
            credentials(conn, "bob").expect("read").map(|(_, h)| h),
            Some("$h4".to_owned())
        );
        remove_user(conn, "alice").expect("now alice can go");
        assert!(matches!(
            remove_user(conn, "alice"),
            Err(UserError::Missing { .. })
        ));
        assert!(matches!(
            update_user(conn, "carol", None, Some(true)),
            Err(UserError::Missing { .. })
        ));
        assert_eq!(user_count(conn).expect("count"), 1);
    }
}
