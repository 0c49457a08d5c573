//! The handlers: `/api/requests` (filtered request rows), `/api/stats` (totals over runs) and
//! `/api/health`, with the query-string parsing that turns user input into a [`RequestFilter`].

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::{AppState, Error};
use crate::store::{
    self,
    time::{format_us, now_us, parse_instant, Micros},
    RequestFilter, Stats,
};

/// Most rows one `/api/requests` answer holds, and how many it holds when `limit` is not given: older rows
/// are read page by page (`before_id`), so no answer is built whole in memory from a large store.
pub const MAX_LIMIT: u64 = 10_000;

/// `/api/requests` query parameters as sent; empty values count as absent (`?since=&limit=10`).
#[derive(Debug, Default, Deserialize)]
pub struct RequestsParams {
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    endpoint: Option<String>,
    before_id: Option<String>,
}

/// `GET /api/requests?since=&until=&limit=&endpoint=&before_id=`: JSON array of rows, oldest first;
/// `since`/`until` take RFC 3339 or a time ago (`15m`); `limit` (at most [`MAX_LIMIT`], the default) keeps
/// the most recent. When older rows match too, a `Link: <...>; rel="next"` header gives the URL of the
/// next (older) page: the same filter with `before_id` = this page's first id.
pub async fn requests(
    State(state): State<AppState>,
    params: Result<Query<RequestsParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params.map_err(Error::BadQuery)?;
    let filter = filter(params, now_us())?;
    let limit = filter.limit.unwrap_or(MAX_LIMIT);
    // One row more than asked tells whether an older page exists.
    let probe = RequestFilter {
        limit: Some(limit + 1),
        ..filter.clone()
    };
    let mut rows = state
        .query(move |conn| store::requests(conn, &probe))
        .await?;
    let more = rows.len() as u64 > limit;
    if more {
        rows.remove(0);
    }
    let next = rows
        .first()
        .filter(|_| more)
        .map(|r| next_link(&filter, limit, r.id));
    let mut response = Json(rows).into_response();
    if let Some(value) = next.and_then(|link| HeaderValue::from_str(&link).ok()) {
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}

/// What a query-string value keeps unescaped: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `Link` header value naming the page before request `first_id`, times resolved (so `15m` does not
/// drift between pages).
fn next_link(filter: &RequestFilter, limit: u64, first_id: i64) -> String {
    let mut pairs = Vec::new();
    pairs.extend(filter.since.map(|t| ("since", format_us(t))));
    pairs.extend(filter.until.map(|t| ("until", format_us(t))));
    pairs.extend(filter.endpoint.clone().map(|e| ("endpoint", e)));
    pairs.push(("limit", limit.to_string()));
    pairs.push(("before_id", first_id.to_string()));
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect();
    format!("</api/requests?{}>; rel=\"next\"", query.join("&"))
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
    if let Some(value) = limit.filter(|&l| l > MAX_LIMIT) {
        return Err(Error::LimitTooLarge {
            param: "limit",
            value,
            max: MAX_LIMIT,
            hint: " (read older rows page by page: each answer's Link header names the next page)",
        });
    }
    let before_id = present(params.before_id)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| Error::BadCursor { value: v })
        })
        .transpose()?;
    Ok(RequestFilter {
        since: time("since", params.since)?,
        until: time("until", params.until)?,
        limit,
        endpoint: present(params.endpoint),
        before_id,
    })
}

#[cfg(test)]
mod tests {
    use axum::{http::StatusCode, Router};

    use super::*;
    use crate::{
        api::{
            router,
            test_support::{get, get_response},
        },
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
                before_id: None,
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
        check(
            "limit=10000&before_id=12",
            Ok(RequestFilter {
                limit: Some(10_000),
                before_id: Some(12),
                ..Default::default()
            }),
        );
        check("limit=10001", Err("maximum of 10000"));
        check("limit=100000000", Err("page by page"));
        check("before_id=x", Err("before_id"));
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
        let rows: Vec<store::RequestRow> = serde_json::from_value(body.clone()).expect("rows");
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

    /// Ids of the rows in a JSON answer.
    fn ids(body: &serde_json::Value) -> Vec<i64> {
        body.as_array()
            .expect("array")
            .iter()
            .map(|r| r["id"].as_i64().expect("id"))
            .collect()
    }

    #[tokio::test]
    async fn pages_follow_the_link_header() {
        let (_dir, app) = app(25);
        let mut uri = "/api/requests?limit=10&since=2026-11-23T15:56:41Z".to_owned();
        let mut pages = Vec::new();
        loop {
            let (status, headers, body) = get_response(&app, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            pages.push(ids(&body));
            let Some(link) = headers.get("link") else {
                break;
            };
            let link = link.to_str().expect("ascii");
            assert!(link.ends_with(r#">; rel="next""#), "{link}");
            uri = link
                .strip_prefix('<')
                .and_then(|l| l.split_once('>'))
                .expect("a URL in <>")
                .0
                .to_owned();
            assert!(uri.contains("since=2026-11-23T15%3A56%3A41"), "{uri}");
        }
        assert_eq!(pages.len(), 3, "{pages:?}");
        assert_eq!(pages[0], (16..=25).collect::<Vec<_>>());
        let joined: Vec<i64> = pages.into_iter().rev().flatten().collect();
        assert_eq!(joined, (1..=25).collect::<Vec<_>>());

        // Without a limit the answer is the newest MAX_LIMIT rows: here all of them, with no next page.
        let (_, headers, body) = get_response(&app, "/api/requests").await;
        assert_eq!(ids(&body).len(), 25);
        assert!(headers.get("link").is_none());
    }

    #[tokio::test]
    async fn every_error_is_json_with_its_status() {
        let (_dir, app) = app(2);
        for (uri, status, says) in [
            (
                "/api/requests?limit=100000000",
                StatusCode::BAD_REQUEST,
                "maximum of 10000",
            ),
            (
                "/api/requests?before_id=x",
                StatusCode::BAD_REQUEST,
                "before_id",
            ),
            ("/api/requests/abc/profile", StatusCode::BAD_REQUEST, "abc"),
            (
                "/api/requests/99999999999999999999/profile",
                StatusCode::BAD_REQUEST,
                "path",
            ),
            ("/api/nope", StatusCode::NOT_FOUND, "no API route"),
            (
                "/api/endpoints/ep/grouped-profile?n=10001",
                StatusCode::BAD_REQUEST,
                "maximum of 10000",
            ),
        ] {
            let (got, headers, body) = get_response(&app, uri).await;
            assert_eq!(got, status, "{uri}: {body}");
            assert_eq!(headers["content-type"], "application/json", "{uri}");
            let message = body["error"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{uri}: {message}");
        }
        // A wrong method and a body over the limit are JSON too.
        let post = axum::http::Request::post("/api/requests")
            .header(
                "authorization",
                format!("Bearer {}", crate::api::test_support::LOCAL_TOKEN),
            )
            .header("content-length", "10")
            .body(axum::body::Body::from("0123456789"))
            .expect("request");
        let response = tower::ServiceExt::oneshot(app.clone(), post)
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["content-type"], "application/json");
        let big = vec![b'x'; crate::api::server::MAX_BODY + 1];
        let post = axum::http::Request::post("/api/requests")
            .header(
                "authorization",
                format!("Bearer {}", crate::api::test_support::LOCAL_TOKEN),
            )
            .header("content-length", big.len().to_string())
            .body(axum::body::Body::from(big))
            .expect("request");
        let response = tower::ServiceExt::oneshot(app.clone(), post)
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()["content-type"], "application/json");
        // Pages outside /api/ are not rewritten (they are the dashboard's).
        let (_, headers, _) = get_response(&app, "/nope").await;
        assert!(headers
            .get("content-type")
            .is_none_or(|t| t != "application/json"));
    }

    /// Every string the API takes from a request (query parameters, path segments) goes to DuckDB as a
    /// bound parameter or is parsed first: SQL in any of them matches nothing, changes nothing and breaks
    /// nothing.
    #[tokio::test]
    async fn sql_in_any_parameter_is_only_data() {
        let (_dir, app) = app(6);
        let payloads = [
            "' OR '1'='1",
            "item' OR 1=1 --",
            "x'; DROP TABLE requests; --",
            "1) OR (1=1",
            "1; DELETE FROM requests",
            "\" OR \"\"=\"",
            "%27%20OR%201%3D1",
        ];
        let enc = |p: &str| utf8_percent_encode(p, NON_ALPHANUMERIC).to_string();
        for payload in payloads {
            let p = enc(payload);
            for (uri, rows_if_ok) in [
                (format!("/api/requests?endpoint={p}"), Some(0)),
                (format!("/api/requests?since={p}"), None),
                (format!("/api/requests?until={p}"), None),
                (format!("/api/requests?limit={p}"), None),
                (format!("/api/requests?before_id={p}"), None),
                (format!("/api/endpoints/{p}/grouped-profile"), None),
                (format!("/api/endpoints/item/grouped-profile?n={p}"), None),
                (
                    format!("/api/endpoints/item/grouped-profile?format={p}"),
                    None,
                ),
                (format!("/api/paths/grouped-profile?path={p}"), None),
                (format!("/api/requests/{p}/profile"), None),
            ] {
                let (status, headers, body) = get_response(&app, &uri).await;
                assert!(
                    matches!(
                        status,
                        StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND
                    ),
                    "{uri}: {status} {body}"
                );
                assert_eq!(headers["content-type"], "application/json", "{uri}");
                if status == StatusCode::OK {
                    if let Some(n) = rows_if_ok {
                        assert_eq!(ids(&body).len(), n, "{uri}: {body}");
                    }
                    if uri.contains("grouped-profile") {
                        assert_eq!(body["requests"], 0, "{uri}: {body}");
                    }
                }
            }
        }
        let (status, body) = get(&app, "/api/requests").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            ids(&body),
            (1..=6).collect::<Vec<_>>(),
            "the store is intact"
        );
        let (_, body) = get(&app, "/api/stats").await;
        assert_eq!(body["requests_stored"], 6);
    }
}
