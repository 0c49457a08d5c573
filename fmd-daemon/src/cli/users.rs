//! `fmd-daemon user add|list|remove`: dashboard accounts, through the running daemon's API (with the local
//! credential `<db>.token`, so root needs no password) when `<db>.daemon` names a live daemon, else in the
//! stopped store directly. Passwords come from a prompt without echo, or one line of stdin when it is not
//! a terminal (scripts: `echo "$PASSWORD" | fmd-daemon user add NAME`).

use std::{
    io::{self, BufRead as _, IsTerminal as _, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};

use super::query::{json_line, write_table, Format, DEFAULT_DB};
use crate::{
    security::{self, password, LocalToken},
    store::{
        time::{format_us, now_us},
        users::{self, UserRow},
        DaemonFile, Store,
    },
};

/// `user`: manage dashboard accounts.
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    /// The fmd database file.
    #[arg(long, env = "FMD_DB", default_value = DEFAULT_DB, global = true)]
    pub db: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create an account; asks for its password (or reads one line of stdin).
    Add {
        name: String,
        /// May change things (levels, accounts, retention); without it the account only looks.
        #[arg(long)]
        admin: bool,
    },
    /// List the accounts.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove an account (its sessions end).
    Remove { name: String },
}

/// Where accounts are changed.
enum Target {
    Daemon { listen: SocketAddr, token: String },
    Store,
}

fn target(db: &Path) -> anyhow::Result<Target> {
    match DaemonFile::read(db) {
        Ok(Some(daemon)) if daemon.is_alive() => {
            let Some(token) = LocalToken::read(db) else {
                bail!(
                    "fmd-daemon (pid {}) holds {}, and its local credential {} cannot be read: run this \
                     as the daemon's user (root)",
                    daemon.pid,
                    db.display(),
                    LocalToken::path_for(db).display()
                );
            };
            Ok(Target::Daemon {
                listen: daemon.listen,
                token,
            })
        }
        _ => Ok(Target::Store),
    }
}

pub fn run_user(args: UserArgs) -> anyhow::Result<()> {
    let db = &args.db;
    let target = target(db)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match args.command {
        UserCommand::Add { name, admin } => {
            security::check_username(&name)?;
            let password = read_password(&name)?;
            security::check_password(&password)?;
            let row: UserRow = match target {
                Target::Daemon { listen, token } => serde_json::from_value(call(
                    listen,
                    &token,
                    "POST",
                    "/api/users",
                    Some(
                        serde_json::json!({"username": name, "password": password, "admin": admin}),
                    ),
                )?)
                .context("bad answer from the daemon")?,
                Target::Store => {
                    let hash = password::hash(&password)?;
                    let store = open(db)?;
                    users::add_user(store.connection(), &name, &hash, admin, now_us(), false)?
                }
            };
            let role = if row.admin { "admin" } else { "guest" };
            writeln!(out, "created {role} {}", row.username)?;
        }
        UserCommand::List { format } => {
            let rows: Vec<UserRow> = match target {
                Target::Daemon { listen, token } => {
                    serde_json::from_value(call(listen, &token, "GET", "/api/users", None)?)
                        .context("bad answer from the daemon")?
                }
                Target::Store => users::users(Store::open_read_only(db)?.connection())?,
            };
            write_users(&rows, format, &mut out)?;
        }
        UserCommand::Remove { name } => {
            match target {
                Target::Daemon { listen, token } => {
                    let path = format!(
                        "/api/users/{}",
                        percent_encoding::utf8_percent_encode(
                            &name,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    );
                    call(listen, &token, "DELETE", &path, None)?;
                }
                Target::Store => users::remove_user(open(db)?.connection(), &name)?,
            }
            writeln!(out, "removed {name}")?;
        }
    }
    Ok(())
}

/// The store read-write (the daemon is not running), created when missing so accounts can be made
/// before the first start.
fn open(db: &Path) -> anyhow::Result<Store> {
    Store::open(db).with_context(|| format!("cannot change accounts in {}", db.display()))
}

/// The new password: from a prompt without echo (twice) on a terminal, else the first line of stdin.
fn read_password(name: &str) -> anyhow::Result<String> {
    if io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: "))
            .context("cannot read the password")?;
        let again =
            rpassword::prompt_password("Password again: ").context("cannot read the password")?;
        if first != again {
            bail!("the passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!(
            "no password on stdin: pipe one line (echo \"$PASSWORD\" | fmd-daemon user add {name})"
        );
    }
    Ok(password)
}

/// Calls the daemon's API with the local credential; an API error becomes its message.
fn call(
    listen: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let url = format!("http://{listen}{path}");
    let auth = format!("Bearer {token}");
    let result = match (method, body) {
        ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
        ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
        ("POST", body) => agent
            .post(&url)
            .header("authorization", &auth)
            .content_type("application/json")
            .send(body.unwrap_or_default().to_string()),
        (other, _) => bail!("unsupported method {other}"),
    };
    let mut response =
        result.with_context(|| format!("the fmd daemon at {listen} does not answer its API"))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .context("cannot read the daemon's answer")?;
    let value: serde_json::Value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).context("bad answer from the daemon")?
    };
    if !status.is_success() {
        let message = value["error"].as_str().unwrap_or("no error message");
        bail!("the fmd daemon at {listen} answered {status}: {message}");
    }
    Ok(value)
}

pub fn write_users(rows: &[UserRow], format: Format, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Json => rows.iter().try_for_each(|row| json_line(row, out)),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record(["username", "admin", "created_at"])?;
            for row in rows {
                csv.write_record([
                    row.username.clone(),
                    row.admin.to_string(),
                    format_us(row.created_at),
                ])?;
            }
            csv.flush()
        }
        Format::Table | Format::Folded => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.username.clone(),
                        if r.admin { "admin" } else { "guest" }.to_owned(),
                        format_us(r.created_at),
                    ]
                })
                .collect();
            write_table(
                &["username", "role", "created_at"],
                &[false; 3],
                &cells,
                out,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_formats() {
        let rows = [
            UserRow {
                username: "alice".into(),
                admin: true,
                created_at: 1_795_449_401_000_000,
            },
            UserRow {
                username: "bob".into(),
                admin: false,
                created_at: 1_795_449_402_000_000,
            },
        ];
        let check = |format, expect: &str| {
            let mut out = Vec::new();
            write_users(&rows, format, &mut out).expect("write");
            assert_eq!(String::from_utf8(out).expect("utf8"), expect);
        };
        check(
            Format::Table,
            "username  role   created_at\n\
             alice     admin  2026-11-23T15:56:41.000000Z\n\
             bob       guest  2026-11-23T15:56:42.000000Z\n",
        );
        check(
            Format::Json,
            "{\"username\":\"alice\",\"admin\":true,\"created_at\":\"2026-11-23T15:56:41.000000Z\"}\n\
             {\"username\":\"bob\",\"admin\":false,\"created_at\":\"2026-11-23T15:56:42.000000Z\"}\n",
        );
    }

    #[test]
    fn stopped_store_without_a_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fmd.duckdb");
        assert!(matches!(target(&db).expect("target"), Target::Store));
        // A daemon that is alive but whose credential cannot be read: say what to do.
        DaemonFile {
            pid: std::process::id(),
            listen: "127.0.0.1:1".parse().expect("addr"),
        }
        .write(&db)
        .expect("daemon file");
        let err = target(&db).err().expect("must fail").to_string();
        assert!(err.contains("local credential"), "{err}");
    }
}
