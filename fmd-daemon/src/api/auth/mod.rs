//! Who may call the API: the guard every route passes through (sessions, the local credential, CSRF,
//! roles), login, logout, the first-start setup and the accounts API. The guard denies by default: a
//! route added to `api::router` is protected unless its path is in [`is_public`].
//!
//! - Sessions: cookie `fmd_session` (HttpOnly, SameSite=Strict, Path=<base>/, Secure behind TLS), kept in
//!   memory (a restart logs everyone out); each has a CSRF token that every state-changing request
//!   (POST/PUT/PATCH/DELETE) must send as `X-CSRF-Token`, except login and setup.
//! - Roles: admins change things, guests only look (403 on every state-changing route but logout).
//! - Local credential: `Authorization: Bearer <the token in <db>.token>` acts as an admin, without
//!   CSRF (no browser sends it by itself); the CLI and the tests use it.
//! - Without a session: `/api/*` answers 401 JSON, pages redirect (302) to `<base>/login`.

mod error;
mod login;
#[cfg(test)]
mod tests;
mod users;

use std::{
    path::Path,
    sync::{Mutex, MutexGuard, OnceLock, PoisonError},
    time::Instant,
};

use axum::{
    extract::{OriginalUri, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use duckdb::Connection;

pub use self::error::Error;
use super::AppState;
use crate::security::{secret, FailureLimiter, LocalToken, Sessions};

/// The session cookie's name.
pub const COOKIE: &str = "fmd_session";
/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authentication state of one daemon, shared by the guard and the handlers.
#[derive(Debug, Default)]
pub struct Auth {
    sessions: Mutex<Sessions>,
    limiter: Mutex<FailureLimiter>,
    /// The one-time first-start token while no account exists.
    setup_token: Mutex<Option<String>>,
    /// The token of `<db>.token`, once the daemon wrote it.
    local_token: OnceLock<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tables stay consistent whatever panicked while holding them: every change is one map call.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Auth {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        lock(&self.sessions)
    }

    fn limiter(&self) -> MutexGuard<'_, FailureLimiter> {
        lock(&self.limiter)
    }

    /// Accepts `token` as the local credential.
    pub fn set_local_token(&self, token: String) {
        if self.local_token.set(token).is_err() {
            tracing::warn!("the local credential was already set: keeping the first one");
        }
    }
}

/// Who a request comes from, as the guard found it (an extension of every guarded request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The account; `None` for the local credential.
    pub username: Option<String>,
    pub admin: bool,
    /// The session id, when the request came with the cookie.
    pub session: Option<String>,
}

/// At daemon start: writes the local credential beside `db`, and when no account exists opens the
/// one-time setup and prints its link on stderr (`origin` like `http://127.0.0.1:9876`, plus `base`).
pub async fn prepare(state: &AppState, db: &Path, origin: &str, base: &str) -> Result<(), Error> {
    let token = LocalToken::create(db)?;
    state.auth.set_local_token(token);
    let count = with_db(state, |conn| Ok(crate::store::users::user_count(conn)?)).await?;
    if count > 0 {
        tracing::info!(
            accounts = count,
            "dashboard accounts exist: log in at {origin}{base}/login"
        );
        return Ok(());
    }
    let setup = secret::random_token()?;
    let link = format!("{origin}{base}/setup?token={setup}");
    *lock(&state.auth.setup_token) = Some(setup);
    // Outside the log format: the operator must see this once, however logs are formatted or filtered.
    eprintln!(
        "\nfmd: no dashboard account exists yet. Create the first admin at\n\n    {link}\n\n\
         (the link works once), or run: fmd-daemon user add NAME --admin --db {}\n",
        db.display()
    );
    tracing::warn!(%link, "no dashboard account exists: open the setup link to create the first admin");
    Ok(())
}

/// The authentication routes; [`guard`] must wrap them like every other route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/login", post(login::login))
        .route("/api/logout", post(login::logout))
        .route("/api/session", get(login::session))
        .route("/api/setup", post(login::setup))
        .route("/api/users", get(users::list).post(users::add))
        .route(
            "/api/users/{name}",
            put(users::update).delete(users::remove),
        )
}

/// What needs no session: what the login and setup pages need before anyone is logged in, and the
/// health check. Paths are the router's (below the base path).
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/api/health" | "/api/login" | "/api/setup" | "/api/session" | "/login" | "/setup"
    ) || path.starts_with("/assets/")
        || path.starts_with("/favicon")
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The middleware in front of every route (see the module's documentation for the rules).
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if is_public(path) {
        return next.run(request).await;
    }
    let (identity, csrf) = match identify(&state.auth, request.headers()) {
        Ok(Some(found)) => found,
        Ok(None) if path.starts_with("/api/") || path == "/api" => {
            return Error::NotLoggedIn.into_response()
        }
        Ok(None) => return redirect_to_login(&base_path(&request)),
        Err(e) => return e.into_response(),
    };
    if is_state_changing(request.method()) {
        if identity.session.is_some() {
            let sent = request
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok());
            let ok = matches!((sent, csrf), (Some(sent), Some(csrf)) if secret::same(sent, &csrf));
            if !ok {
                return Error::Csrf.into_response();
            }
        }
        if !identity.admin && request.uri().path() != "/api/logout" {
            return Error::ReadOnly.into_response();
        }
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The caller (and its session's CSRF token), from the bearer token or the session cookie; `None` when it
/// has neither; an error for a bearer token that is wrong (a misconfigured client should hear so, not be
/// sent to a login page).
fn identify(auth: &Auth, headers: &HeaderMap) -> Result<Option<(Identity, Option<String>)>, Error> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        return match (given, auth.local_token.get()) {
            (Some(given), Some(token)) if secret::same(given, token) => Ok(Some((
                Identity {
                    username: None,
                    admin: true,
                    session: None,
                },
                None,
            ))),
            _ => Err(Error::BadBearer),
        };
    }
    let Some(id) = session_cookie(headers) else {
        return Ok(None);
    };
    Ok(auth.sessions().touch(&id, Instant::now()).map(|s| {
        (
            Identity {
                username: Some(s.username),
                admin: s.admin,
                session: Some(id),
            },
            Some(s.csrf_token),
        )
    }))
}

/// The value of the `fmd_session` cookie.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The path prefix the router is mounted under (`/fmd` behind a proxy's `/fmd/`, else empty): what the
/// full request path has before the path the router sees.
fn base_path(request: &Request) -> String {
    let inner = request.uri().path();
    request
        .extensions()
        .get::<OriginalUri>()
        .and_then(|full| {
            let full = full.path();
            // Mounted at `/fmd`, the request `/fmd` reaches the router as `/`.
            full.strip_suffix(inner)
                .or_else(|| (inner == "/").then_some(full))
                .map(str::to_owned)
        })
        .map(|base| base.trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

fn redirect_to_login(base: &str) -> Response {
    let location = format!("{base}/login");
    match HeaderValue::from_str(&location) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => Error::NotLoggedIn.into_response(),
    }
}

/// Whether the client reached us over TLS (through a TLS-terminating proxy: the daemon itself serves plain
/// HTTP on loopback). The header only ever adds `Secure`, so a client lying about it harms only itself.
fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        });
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// `Set-Cookie` for session `id` (`None`: clears the cookie).
fn session_cookie_header(id: Option<&str>, base: &str, secure: bool) -> HeaderValue {
    let mut cookie = match id {
        Some(id) => format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path={base}/"),
        None => format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path={base}/; Max-Age=0"),
    };
    if secure {
        cookie.push_str("; Secure");
    }
    // Ids are hex and bases come from a request path, which holds no control characters.
    HeaderValue::from_str(&cookie)
        .unwrap_or_else(|_| HeaderValue::from_static("fmd_session=; Max-Age=0"))
}

/// The JSON that login, setup and `/api/session` return.
fn session_body(username: &str, admin: bool, csrf_token: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "username": username,
        "admin": admin,
        "csrf_token": csrf_token,
    }))
}

/// Runs `f` on a connection to the daemon's database, on the blocking pool.
async fn with_db<T, F>(state: &AppState, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
{
    let db = std::sync::Arc::clone(&state.db);
    tokio::task::spawn_blocking(move || {
        let conn = lock(db.as_ref()).try_clone().map_err(|source| {
            Error::Api(super::Error::Store(crate::store::Error::Sql {
                what: "open a reader connection",
                source,
            }))
        })?;
        f(&conn)
    })
    .await
    .map_err(|e| Error::Api(super::Error::Task(e)))?
}

/// Runs CPU-heavy `f` (password hashing) on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Api(super::Error::Task(e)))
}
