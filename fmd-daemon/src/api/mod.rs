//! The daemon's HTTP API: JSON under `/api/` over what `store` holds. Reads `store` only; never calls into
//! `capture`.

pub mod assets;
pub mod auth;
mod endpoints;
mod error;
mod exceptions;
mod json_errors;
mod outliers;
mod profiles;
mod requests;
pub mod server;
mod versions;
mod views;

use std::sync::{Arc, Mutex, PoisonError};

use axum::{routing::get, Router};
use duckdb::Connection;
use tower_http::trace::TraceLayer;

pub use self::{error::Error, requests::MAX_LIMIT};

/// What the handlers share: a connection to the daemon's database, cloned per call so calls run in
/// parallel (DuckDB connections are not `Sync`; `try_clone` is cheap and shares the database).
#[derive(Clone)]
pub struct AppState {
    db: Arc<Mutex<Connection>>,
    /// The running daemon's levels, so a change applies at its next request.
    levels: Option<Arc<crate::levels::Levels>>,
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
            levels: None,
            auth: Arc::new(auth),
        }
    }

    /// Changes of levels through the API also go to `levels` (the running daemon's).
    pub fn with_levels(mut self, levels: Arc<crate::levels::Levels>) -> Self {
        self.levels = Some(levels);
        self
    }

    fn default_level(&self) -> u8 {
        self.levels
            .as_ref()
            .map_or(crate::store::MONITOR_LEVEL, |l| l.default_level())
    }

    /// Whether the running daemon has seen `endpoint`.
    fn has_level(&self, endpoint: &str) -> bool {
        self.levels.as_ref().is_some_and(|l| l.known(endpoint))
    }

    fn apply_level(&self, endpoint: &str, level: u8) {
        if let Some(levels) = &self.levels {
            levels.set(endpoint, level);
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

/// The API routes, with a request span on every call, bounded in time and body size, every `/api/` error
/// as JSON (`server::bounded`); [`assets::mount`] adds the dashboard and the base path.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
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
        // App versions (config or git).
        .route("/api/versions", get(versions::versions))
        .route("/api/exceptions", get(exceptions::exceptions))
        .route("/api/exceptions/{group}", get(exceptions::exception))
        // Levels and outliers.
        .route("/api/outliers", get(outliers::outliers))
        .route(
            "/api/endpoints/{endpoint}/level",
            get(outliers::get_level).put(outliers::set_level),
        )
        // The dashboard's views (api/views.rs).
        .route("/api/views/hourly-load", get(views::hourly_load))
        .route("/api/views/daily", get(views::daily))
        .route("/api/views/versions", get(views::versions))
        .route("/api/views/performance", get(views::performance))
        .route("/api/views/endpoint", get(views::endpoint))
        .route(
            "/api/views/profiled-requests",
            get(views::profiled_requests),
        )
        .route("/api/views/reporting", get(views::reporting))
        .route("/api/views/profile-diff", get(views::profile_diff))
        .route("/api/views/database", get(views::database))
        // Sessions, login and accounts; the guard is the last layer of the routes so it covers every route
        // and the dashboard's pages (the fallback); auth::tests checks every route in this module.
        .merge(auth::routes())
        .fallback(assets::serve)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ));
    server::bounded(routes, server::Limits::default())
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

    /// GETs `uri` with the local credential: the status, the headers and the body as JSON (`Null` when it is not JSON).
    pub async fn get_response(
        app: &Router,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let request = Request::get(uri)
            .header("authorization", format!("Bearer {LOCAL_TOKEN}"))
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, usize::MAX).await.expect("body");
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
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
