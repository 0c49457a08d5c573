//! The accounts API, for admins only (guests get 403 even for the list): list, create, change the
//! password or the role, remove. Changes reach live sessions at once: a removed account's sessions end,
//! a new role applies to the next request, a new password ends the account's other sessions.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Extension, Json,
};
use serde::Deserialize;

use super::{blocking, lock, with_db, Error, Identity};
use crate::{
    api::AppState,
    security::{self, password},
    store::{
        time::now_us,
        users::{self, UserRow},
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    password: Option<String>,
    admin: Option<bool>,
}

fn admin_only(identity: &Identity) -> Result<(), Error> {
    if identity.admin {
        Ok(())
    } else {
        Err(Error::AdminOnly)
    }
}

/// The JSON body, with this API's error shape when it is not what we expect.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], expected: &'static str) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::BadBody { expected, source })
}

async fn hash(password: String) -> Result<String, Error> {
    security::check_password(&password)?;
    Ok(blocking(move || password::hash(&password)).await??)
}

/// `GET /api/users` -> `[{"username", "admin", "created_at"}]`.
pub async fn list(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Json<Vec<UserRow>>, Error> {
    admin_only(&identity)?;
    Ok(Json(with_db(&state, |conn| Ok(users::users(conn)?)).await?))
}

/// `POST /api/users` `{"username", "password", "admin"}` -> 201 and the account.
pub async fn add(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    body: axum::body::Bytes,
) -> Result<Response, Error> {
    admin_only(&identity)?;
    let new: NewUser = parse(
        &body,
        r#"{"username": "...", "password": "...", "admin": false}"#,
    )?;
    security::check_username(&new.username)?;
    let hash = hash(new.password).await?;
    let row = with_db(&state, move |conn| {
        Ok(users::add_user(
            conn,
            &new.username,
            &hash,
            new.admin,
            now_us(),
            false,
        )?)
    })
    .await?;
    // An account exists now: the first-start link has served its purpose.
    *lock(&state.auth.setup_token) = None;
    tracing::info!(by = ?identity.username, username = %row.username, admin = row.admin, "dashboard account created");
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

/// `PUT /api/users/{name}` `{"password"?, "admin"?}` -> the account.
pub async fn update(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<UserRow>, Error> {
    admin_only(&identity)?;
    let change: UserChange = parse(&body, r#"{"password": "...", "admin": true}"#)?;
    let hash = match change.password {
        Some(p) => Some(hash(p).await?),
        None => None,
    };
    let changed_password = hash.is_some();
    let username = name.clone();
    let row = with_db(&state, move |conn| {
        Ok(users::update_user(
            conn,
            &username,
            hash.as_deref(),
            change.admin,
        )?)
    })
    .await?;
    {
        let mut sessions = state.auth.sessions();
        sessions.set_admin(&row.username, row.admin);
        if changed_password {
            sessions.remove_user(&row.username, identity.session.as_deref());
        }
    }
    tracing::info!(by = ?identity.username, username = %row.username, admin = row.admin, changed_password, "dashboard account changed");
    Ok(Json(row))
}

/// `DELETE /api/users/{name}` -> 204; the account's sessions end.
pub async fn remove(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    admin_only(&identity)?;
    let username = name.clone();
    with_db(&state, move |conn| Ok(users::remove_user(conn, &username)?)).await?;
    state.auth.sessions().remove_user(&name, None);
    tracing::info!(by = ?identity.username, username = %name, "dashboard account removed");
    Ok(StatusCode::NO_CONTENT)
}
