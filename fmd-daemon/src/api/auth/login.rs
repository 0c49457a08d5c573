//! Logging in and out, the session the browser holds, and the first-start setup that creates the first
//! admin with the one-time token the daemon printed.

use std::{net::SocketAddr, time::Instant};

use axum::{
    body::to_bytes,
    extract::{ConnectInfo, Request, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{de::DeserializeOwned, Deserialize};

use super::{
    base_path, blocking, identify, lock, over_tls, session_body, session_cookie_header, with_db,
    Error,
};
use crate::{
    api::AppState,
    security::{self, password, secret},
    store::{time::now_us, users},
};

/// Bodies of login and setup are small; anything bigger is not ours.
const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct Setup {
    token: String,
    username: String,
    password: String,
}

/// Reads the request's JSON body as `T`.
async fn json_body<T: DeserializeOwned>(
    request: Request,
    expected: &'static str,
) -> Result<T, Error> {
    let bytes = to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(Error::Body)?;
    serde_json::from_slice(&bytes).map_err(|source| Error::BadBody { expected, source })
}

/// The client's address for rate limiting (the proxy's, behind one).
fn client_ip(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// Refuses `keys` that failed too often lately.
fn check_rate(state: &AppState, keys: &[&str]) -> Result<(), Error> {
    let now = Instant::now();
    let mut limiter = state.auth.limiter();
    let wait = keys
        .iter()
        .filter_map(|key| limiter.retry_after(key, now))
        .max();
    match wait {
        Some(wait) => Err(Error::TooManyAttempts {
            retry_after_secs: wait.as_secs_f64().ceil() as u64,
        }),
        None => Ok(()),
    }
}

fn record_failure(state: &AppState, keys: &[&str]) {
    let now = Instant::now();
    let mut limiter = state.auth.limiter();
    for key in keys {
        limiter.fail(key, now);
    }
}

/// Starts a session for `username` and answers with its body and cookie.
fn start_session(
    state: &AppState,
    username: &str,
    admin: bool,
    base: &str,
    secure: bool,
) -> Result<Response, Error> {
    let (id, session) = state
        .auth
        .sessions()
        .create(username, admin, Instant::now())?;
    let cookie = session_cookie_header(Some(&id), base, secure);
    let mut response = session_body(username, admin, &session.csrf_token).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `POST /api/login` `{"username", "password"}`.
pub async fn login(State(state): State<AppState>, request: Request) -> Result<Response, Error> {
    let ip = client_ip(&request);
    let base = base_path(&request);
    let secure = over_tls(request.headers());
    let login: Login = json_body(request, r#"{"username": "...", "password": "..."}"#).await?;
    let ip_key = format!("ip:{ip}");
    let user_key = format!("user:{}", login.username);
    let keys = [ip_key.as_str(), user_key.as_str()];
    check_rate(&state, &keys)?;
    let username = login.username.clone();
    let account = with_db(&state, move |conn| Ok(users::credentials(conn, &username)?)).await?;
    let password = login.password;
    let verified = blocking(move || match account {
        // Long inputs are refused before hashing, so a login cannot buy a long computation.
        Some(_) if password.len() > password::MAX_PASSWORD_BYTES => None,
        Some((row, hash)) => password::verify(&password, &hash).then_some(row),
        None => {
            password::verify_nobody(&password);
            None
        }
    })
    .await?;
    let Some(row) = verified else {
        record_failure(&state, &keys);
        tracing::warn!(%ip, username = %login.username, "failed dashboard login");
        return Err(Error::BadCredentials);
    };
    tracing::info!(%ip, username = %row.username, admin = row.admin, "dashboard login");
    start_session(&state, &row.username, row.admin, &base, secure)
}

/// `POST /api/logout`: ends the caller's session and clears its cookie.
pub async fn logout(State(state): State<AppState>, request: Request) -> Response {
    let base = base_path(&request);
    let secure = over_tls(request.headers());
    if let Some(session) = request
        .extensions()
        .get::<super::Identity>()
        .and_then(|i| i.session.clone())
    {
        state.auth.sessions().remove(&session);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie_header(None, &base, secure),
    );
    response
}

/// `GET /api/session`: who the browser is logged in as, with the CSRF token to send; 401 otherwise (with
/// `setup_required` when no account exists yet, so the page can offer the setup).
pub async fn session(State(state): State<AppState>, request: Request) -> Result<Response, Error> {
    match identify(&state.auth, request.headers()) {
        Ok(Some((identity, csrf))) => {
            let username = identity.username.unwrap_or_default();
            Ok(session_body(
                &username,
                identity.admin,
                csrf.as_deref().unwrap_or_default(),
            )
            .into_response())
        }
        Ok(None) | Err(_) => {
            let count = with_db(&state, |conn| Ok(users::user_count(conn)?)).await?;
            Ok((
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({
                    "error": Error::NotLoggedIn.to_string(),
                    "setup_required": count == 0,
                })),
            )
                .into_response())
        }
    }
}

/// `POST /api/setup` `{"token", "username", "password"}`: creates the first admin with the one-time
/// token, and logs them in.
pub async fn setup(State(state): State<AppState>, request: Request) -> Result<Response, Error> {
    let ip = client_ip(&request);
    let base = base_path(&request);
    let secure = over_tls(request.headers());
    let setup: Setup = json_body(
        request,
        r#"{"token": "...", "username": "...", "password": "..."}"#,
    )
    .await?;
    let ip_key = format!("ip:{ip}");
    check_rate(&state, &[&ip_key])?;
    let refused = match lock(&state.auth.setup_token).as_deref() {
        None => Some(Error::SetupDone),
        Some(expected) if !secret::same(&setup.token, expected) => Some(Error::BadSetupToken),
        Some(_) => None,
    };
    if let Some(e) = refused {
        if matches!(e, Error::BadSetupToken) {
            record_failure(&state, &[&ip_key]);
        }
        return Err(e);
    }
    security::check_username(&setup.username)?;
    security::check_password(&setup.password)?;
    let password = setup.password;
    let hash = blocking(move || password::hash(&password)).await??;
    let username = setup.username.clone();
    let created = with_db(&state, move |conn| {
        Ok(users::add_user(
            conn,
            &username,
            &hash,
            true,
            now_us(),
            true,
        )?)
    })
    .await;
    let row = match created {
        Ok(row) => row,
        // Someone created an account meanwhile (another setup, `fmd-daemon user add`).
        Err(Error::User(users::UserError::Exists { .. })) => {
            *lock(&state.auth.setup_token) = None;
            return Err(Error::SetupDone);
        }
        Err(e) => return Err(e),
    };
    // Used: the link works once.
    *lock(&state.auth.setup_token) = None;
    tracing::info!(%ip, username = %row.username, "first admin created with the setup link");
    start_session(&state, &row.username, true, &base, secure)
}
