//! The daemon's HTTP API: JSON under `/api/` over what `store` holds. Reads `store` only; never calls into
//! `capture`.

pub mod auth;
mod endpoints;
mod error;
mod overview;
mod profiles;
mod requests;

use std::sync::{Arc, Mutex, PoisonError};

use axum::{routing::get, Router};
use duckdb::Connection;
use tower_http::trace::TraceLayer;

pub use self::error::Error;

/// What the handlers share: a connection to the daemon's database, cloned per call so calls run in
/// parallel (DuckDB connections are not `Sync`; `try_clone` is cheap and shares the database).
#[derive(Clone)]
pub struct AppState {
    db: Arc<Mutex<Connection>>,
    auth: Arc<auth::Auth>,
}

impl AppState {
    /// `db` comes from [`crate::store::Store::reader`] (taken before the store moves to the writer).
    pub fn new(db: Connection) -> Self {
        let auth = auth::Auth::default();
        // In tests every router accepts one known local credential (test_support::LOCAL_TOKEN); the
        // daemon sets a random one from `<db>.token` (auth::prepare).
        #[cfg(test)]
        auth.set_local_token(test_support::LOCAL_TOKEN.to_owned());
        Self {
            db: Arc::new(Mutex::new(db)),
            auth: Arc::new(auth),
        }
    }

    /// Runs `query` on a fresh connection on the blocking pool.
    async fn query<T, F>(&self, query: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, crate::store::Error> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere cannot leave a connection half-changed: cloning only reads it.
            let conn = db
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_clone();
            let conn = conn.map_err(|source| crate::store::Error::Sql {
                what: "open a reader connection",
                source,
            })?;
            query(&conn)
        })
        .await
        .map_err(Error::Task)?
        .map_err(Error::Store)
    }
}

/// The API routes, with a request span on every call. The lead merges the web UI's routes onto it.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/api/requests", get(requests::requests))
        .route("/api/endpoints", get(endpoints::endpoints))
        .route("/api/stats", get(requests::stats))
        .route("/api/health", get(requests::health))
        .route("/api/requests/{id}/profile", get(profiles::request_profile))
        .route(
            "/api/endpoints/{endpoint}/grouped-profile",
            get(profiles::endpoint_grouped),
        )
        .route("/api/paths/grouped-profile", get(profiles::path_grouped))
        // Sessions, login and accounts; the guard stays the last layer before tracing so it covers
        // every route and the fallback above it (auth::tests checks every route in this module).
        .merge(auth::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! How the API tests call a route: in process, through the router, as a client would.

    use axum::{
        body::{to_bytes, Body},
        http::{Request, StatusCode},
        Router,
    };
    use tower::ServiceExt as _;

    /// The local credential of every test router (`AppState::new` under `cfg(test)`).
    pub const LOCAL_TOKEN: &str = "local-token-of-the-tests";

    /// GETs `uri` with the local credential: the status and the body as text.
    pub async fn get_text(app: &Router, uri: &str) -> (StatusCode, String) {
        let request = Request::get(uri)
            .header("authorization", format!("Bearer {LOCAL_TOKEN}"))
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// GETs `uri`: the status and the body as JSON (`Null` when it is not JSON).
    pub async fn get(app: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let (status, body) = get_text(app, uri).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }
}
