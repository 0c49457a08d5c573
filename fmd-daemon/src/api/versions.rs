//! `GET /api/versions`: every app version seen, when it was first and last seen and how many requests it
//! served (Flask-MonitoringDashboard's versions, from config or git without code in the app).

use axum::{extract::State, Json};

use super::{AppState, Error};
use crate::store::{self, VersionRow};

/// `GET /api/versions`: oldest first.
pub async fn versions(State(state): State<AppState>) -> Result<Json<Vec<VersionRow>>, Error> {
    state.query(store::versions).await.map(Json)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::{
        api::{router, test_support::get, AppState},
        request::Request,
        store::{append_requests, test_support::request, Store},
    };

    #[tokio::test]
    async fn lists_versions_with_their_hits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let batch: Vec<Request> = (0..5)
            .map(|i| Request {
                version: Some(if i < 3 { "v1" } else { "v2" }.to_owned()),
                ..request(i)
            })
            .collect();
        append_requests(store.connection(), 1, 1, &batch).expect("append");
        let app = router(AppState::new(store.reader().expect("reader")));
        let (status, body) = get(&app, "/api/versions").await;
        assert_eq!(status, StatusCode::OK);
        let got: Vec<(String, u64, String)> = body
            .as_array()
            .expect("array")
            .iter()
            .map(|v| {
                (
                    v["version"].as_str().expect("version").to_owned(),
                    v["hits"].as_u64().expect("hits"),
                    v["first_seen"].as_str().expect("first_seen").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("v1".into(), 3, "2026-11-23T15:56:41.123456Z".into()),
                ("v2".into(), 2, "2026-11-23T15:56:41.126456Z".into())
            ]
        );
        let (_, rows) = get(&app, "/api/requests").await;
        assert_eq!(rows[4]["version"], "v2");
        assert!(rows[4]["user"].is_null());
    }
}
