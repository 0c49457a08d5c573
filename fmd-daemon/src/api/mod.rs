//! The daemon's HTTP API: JSON under `/api/` over what `store` holds. Reads `store` only; never calls into
//! `capture`.

pub mod assets;
mod endpoints;
mod error;
mod profiles;
mod requests;
mod views;

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
}

impl AppState {
    /// `db` comes from [`crate::store::Store::reader`] (taken before the store moves to the writer).
    pub fn new(db: Connection) -> Self {
        Self {
            db: Arc::new(Mutex::new(db)),
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

/// The API routes, with a request span on every call; [`assets::mount`] adds the dashboard and the base path.
pub fn router(state: AppState) -> Router {
    Router::new()
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

    /// GETs `uri`: the status and the body as text.
    pub async fn get_text(app: &Router, uri: &str) -> (StatusCode, String) {
        let request = Request::get(uri).body(Body::empty()).expect("request");
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
