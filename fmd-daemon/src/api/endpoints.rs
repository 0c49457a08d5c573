//! `/api/endpoints`: every endpoint of the app with its traffic and latency, and how endpoints are found
//! (Flask's route table or path templates), for the dashboard's overview.

use axum::{extract::State, Json};

use super::{AppState, Error};
use crate::store::{self, time::now_us, EndpointList};

/// `GET /api/endpoints`: `{"mode", "rules", "unmatched", "endpoints": [...]}`, most requested first;
/// `hits_today` counts from 00:00 UTC.
pub async fn endpoints(State(state): State<AppState>) -> Result<Json<EndpointList>, Error> {
    let now = now_us();
    state
        .query(move |conn| store::endpoint_list(conn, now))
        .await
        .map(Json)
}

#[cfg(test)]
mod tests {
    use axum::{http::StatusCode, Router};

    use crate::{
        api::{router, test_support::get, AppState},
        flask::{test_support::route, RouteInfo},
        store::{
            append_requests, modes, set_attribution,
            test_support::{close, request},
            time::now_us,
            upsert_routes, Store,
        },
    };

    /// A router over a database with `routes`, the attribution `mode` and `(endpoint, ms)` requests made
    /// just now.
    fn fixture(
        routes: &[RouteInfo],
        mode: Option<(&str, u64)>,
        hits: &[(Option<&str>, f64)],
    ) -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let conn = store.connection();
        let now = now_us();
        upsert_routes(conn, 1, now, routes).expect("routes");
        if let Some((mode, rules)) = mode {
            set_attribution(conn, 1, mode, rules, now).expect("mode");
        }
        let batch: Vec<_> = hits
            .iter()
            .zip(0..)
            .map(|(&(endpoint, ms), i)| crate::request::Request {
                ts_us: now - 1_000_000 + i,
                duration_ns: (ms * 1e6) as u64,
                endpoint: endpoint.map(str::to_owned),
                rule: endpoint.map(|e| format!("/{e}")),
                ..request(0)
            })
            .collect();
        append_requests(conn, 1, 1, &batch).expect("append");
        (dir, router(AppState::new(store.reader().expect("reader"))))
    }

    /// Checks the answer's mode, rules and unmatched, and each endpoint's `(endpoint, methods, hits,
    /// median_ms)`.
    async fn check(
        app: &Router,
        expect: (&str, u64, u64),
        endpoints: &[(&str, &[&str], u64, Option<f64>)],
    ) {
        let (status, body) = get(app, "/api/endpoints").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let keys: Vec<&str> = body
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["endpoints", "mode", "rules", "unmatched"]);
        assert_eq!(
            (
                body["mode"].clone(),
                body["rules"].clone(),
                body["unmatched"].clone()
            ),
            (expect.0.into(), expect.1.into(), expect.2.into())
        );
        let rows = body["endpoints"].as_array().expect("endpoints");
        let got: Vec<serde_json::Value> = rows
            .iter()
            .map(|e| serde_json::json!([e["endpoint"], e["methods"], e["hits"]]))
            .collect();
        let expect: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|(e, m, h, _)| serde_json::json!([e, m, h]))
            .collect();
        assert_eq!(got, expect);
        // Medians come from the store's duration histograms: within 1% (store/rollup.rs).
        for (row, (endpoint, _, _, ms)) in rows.iter().zip(endpoints) {
            close(row["median_ms"].as_f64(), *ms, 0.01, endpoint);
        }
    }

    #[tokio::test]
    async fn endpoints_with_mode_and_unmatched() {
        let (_dir, app) = fixture(
            &[
                route("index", "/index", &["GET", "HEAD"]),
                route("never", "/never", &["POST"]),
            ],
            Some((modes::FLASK_ROUTES, 2)),
            &[
                (Some("index"), 1.0),
                (Some("index"), 3.0),
                (Some("index"), 8.0),
                (Some("old"), 2.0),
                (None, 1.0),
            ],
        );
        check(
            &app,
            (modes::FLASK_ROUTES, 2, 1),
            &[
                ("index", &["GET", "HEAD"], 3, Some(3.0)),
                ("old", &["GET"], 1, Some(2.0)),
                ("never", &["POST"], 0, None),
            ],
        )
        .await;
        let (_, body) = get(&app, "/api/endpoints").await;
        let never = &body["endpoints"][2];
        assert_eq!(
            (
                never["hits_today"].clone(),
                never["hits_7d"].clone(),
                never["last_requested"].clone(),
                never["monitor_level"].clone()
            ),
            (0.into(), 0.into(), serde_json::Value::Null, 1.into())
        );
        let today = body["endpoints"][0]["hits_today"].as_u64().expect("today");
        // Unless the test ran across midnight UTC, the requests of a second ago are today's.
        assert!(today == 3 || today == 0, "{today}");
    }

    #[tokio::test]
    async fn an_empty_database_is_pending() {
        let (_dir, app) = fixture(&[], None, &[]);
        check(&app, (modes::PENDING, 0, 0), &[]).await;
        let (_dir, app) = fixture(
            &[],
            Some((modes::PATH_TEMPLATES, 0)),
            &[(Some("GET /a/<int>"), 5.0)],
        );
        check(
            &app,
            (modes::PATH_TEMPLATES, 0, 0),
            &[("GET /a/<int>", &["GET"], 1, Some(5.0))],
        )
        .await;
    }
}
