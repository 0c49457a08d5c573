//! The handlers: `/api/requests` (filtered request rows), `/api/stats` (totals over runs) and
//! `/api/health`, with the query-string parsing that turns user input into a [`RequestFilter`].

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    Json,
};
use serde::Deserialize;

use super::{AppState, Error};
use crate::store::{
    self,
    time::{now_us, parse_instant, Micros},
    RequestFilter, RequestRow, Stats,
};

/// `/api/requests` query parameters as sent; empty values count as absent (`?since=&limit=10`).
#[derive(Debug, Default, Deserialize)]
pub struct RequestsParams {
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    endpoint: Option<String>,
}

/// `GET /api/requests?since=&until=&limit=&endpoint=`: JSON array of rows, oldest first; `since`/`until`
/// take RFC 3339 or a time ago (`15m`); `limit` keeps the most recent.
pub async fn requests(
    State(state): State<AppState>,
    params: Result<Query<RequestsParams>, QueryRejection>,
) -> Result<Json<Vec<RequestRow>>, Error> {
    let Query(params) = params.map_err(Error::BadQuery)?;
    let filter = filter(params, now_us())?;
    state
        .query(move |conn| store::requests(conn, &filter))
        .await
        .map(Json)
}

/// `GET /api/stats`: counters summed over every daemon run, and how many requests are stored.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, Error> {
    state.query(store::stats).await.map(Json)
}

/// `GET /api/health`: the daemon answers.
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

fn filter(params: RequestsParams, now: Micros) -> Result<RequestFilter, Error> {
    let present = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    let time = |param, value: Option<String>| {
        present(value)
            .map(|v| parse_instant(&v, now).map_err(|source| Error::BadTime { param, source }))
            .transpose()
    };
    let limit = present(params.limit)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::BadLimit { value: v })
        })
        .transpose()?;
    Ok(RequestFilter {
        since: time("since", params.since)?,
        until: time("until", params.until)?,
        limit,
        endpoint: present(params.endpoint),
    })
}

#[cfg(test)]
mod tests {
    use axum::{http::StatusCode, Router};

    use super::*;
    use crate::{
        api::{router, test_support::get},
        store::{append_requests, begin_run, set_counters, test_support::request, RunInfo, Store},
    };

    const NOW: Micros = 1_795_449_401_123_456;

    /// `expect`: the filter, or a word the error message must contain.
    fn check(query: &str, expect: Result<RequestFilter, &str>) {
        let got = filter(params_from(query), NOW).map_err(|e| e.to_string());
        match (got, expect) {
            (Ok(got), Ok(expect)) => assert_eq!(got, expect, "{query}"),
            (Err(got), Err(says)) => assert!(got.contains(says), "{query}: {got}"),
            (got, expect) => panic!("{query}: got {got:?}, expected {expect:?}"),
        }
    }

    fn params_from(query: &str) -> RequestsParams {
        let uri: axum::http::Uri = format!("/?{query}").parse().expect("uri");
        Query::try_from_uri(&uri).expect("query").0
    }

    #[test]
    fn parameters_become_a_filter() {
        check("", Ok(RequestFilter::default()));
        check(
            "since=&until=&limit=&endpoint=",
            Ok(RequestFilter::default()),
        );
        check(
            "since=2026-11-23T15:56:41Z&until=15m&limit=10&endpoint=item",
            Ok(RequestFilter {
                since: Some(1_795_449_401_000_000),
                until: Some(NOW - 15 * 60 * 1_000_000),
                limit: Some(10),
                endpoint: Some("item".into()),
            }),
        );
        check(
            "since=2026-11-23T16:56:41%2B01:00",
            Ok(RequestFilter {
                since: Some(1_795_449_401_000_000),
                ..Default::default()
            }),
        );
        check(
            "limit=0",
            Ok(RequestFilter {
                limit: Some(0),
                ..Default::default()
            }),
        );
        check("other=1", Ok(RequestFilter::default()));
        check("since=yesterday", Err("since"));
        check("until=12", Err("until"));
        check("limit=-1", Err("limit"));
        check("limit=ten", Err("limit"));
    }

    /// A router over a temp database holding `request(0..n)` and one run's counters.
    fn app(n: u32) -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let run = RunInfo {
            target_pid: 1,
            version: "0.0.0".into(),
            started_at: NOW,
        };
        let run_id = begin_run(store.connection(), &run).expect("run");
        let batch: Vec<_> = (0..n).map(request).collect();
        append_requests(store.connection(), run_id, 1, &batch).expect("append");
        set_counters(store.connection(), run_id, [("events_lost", 4)]).expect("counters");
        (dir, router(AppState::new(store.reader().expect("reader"))))
    }

    #[tokio::test]
    async fn requests_are_listed_and_filtered() {
        let (_dir, app) = app(10);
        let (status, body) = get(&app, "/api/requests").await;
        assert_eq!(status, StatusCode::OK);
        let rows: Vec<RequestRow> = serde_json::from_value(body.clone()).expect("rows");
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(body[0]["ts"], "2026-11-23T15:56:41.123456Z");
        assert_eq!(
            (body[0]["query"].clone(), body[1]["query"].clone()),
            ("q=0".into(), serde_json::Value::Null)
        );

        let (status, body) = get(
            &app,
            "/api/requests?since=2026-11-23T15:56:41.125Z&limit=3&endpoint=item",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let paths: Vec<_> = body
            .as_array()
            .expect("array")
            .iter()
            .map(|r| r["path"].clone())
            .collect();
        assert_eq!(paths, ["/item/4", "/item/6", "/item/8"]);
    }

    #[tokio::test]
    async fn bad_parameters_are_400_with_a_message() {
        let (_dir, app) = app(1);
        for (uri, says) in [
            ("/api/requests?since=yesterday", "since"),
            ("/api/requests?until=soon", "until"),
            ("/api/requests?limit=ten", "limit"),
            ("/api/requests?limit=1&limit=2", "query string"),
        ] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let message = body["error"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{uri}: {message}");
        }
    }

    #[tokio::test]
    async fn stats_and_health() {
        let (_dir, app) = app(3);
        let (status, body) = get(&app, "/api/stats").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (body["requests_stored"].clone(), body["events_lost"].clone()),
            (3.into(), 4.into())
        );
        assert_eq!(body["counters"], serde_json::json!({ "events_lost": 4 }));
        let (status, body) = get(&app, "/api/health").await;
        assert_eq!(
            (status, body["status"].clone()),
            (StatusCode::OK, "ok".into())
        );
        let (status, _) = get(&app, "/api/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
