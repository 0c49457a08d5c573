//! The dashboard's view routes under `/api/views/`: each turns its query string (a time range as RFC 3339
//! or an age, the viewer's UTC offset in minutes, an endpoint) into a `store::views` query.

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    Json,
};
use serde::Deserialize;

use super::{AppState, Error};
use crate::store::{
    time::{now_us, parse_instant, Micros},
    views::{self, Range},
    RequestRow,
};

/// Without `since`, a view covers the last day.
const DEFAULT_SPAN_US: Micros = 24 * 3_600_000_000;
/// UTC offsets range from -12:00 to +14:00.
const MAX_TZ_MINUTES: i32 = 14 * 60;
/// Most profiled requests one list answers.
const MAX_PROFILED: u64 = 1_000;

/// Query parameters of the view routes; empty values count as absent.
#[derive(Debug, Default, Deserialize)]
pub struct ViewParams {
    since: Option<String>,
    until: Option<String>,
    tz: Option<String>,
    endpoint: Option<String>,
    limit: Option<String>,
    a_since: Option<String>,
    a_until: Option<String>,
    b_since: Option<String>,
    b_until: Option<String>,
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn instant(
    param: &'static str,
    value: &Option<String>,
    now: Micros,
) -> Result<Option<Micros>, Error> {
    present(value)
        .map(|v| parse_instant(v, now).map_err(|source| Error::BadTime { param, source }))
        .transpose()
}

fn tz(params: &ViewParams) -> Result<i32, Error> {
    match present(&params.tz) {
        None => Ok(0),
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|m| m.abs() <= MAX_TZ_MINUTES)
            .ok_or_else(|| Error::BadParam {
                param: "tz",
                reason: format!("{v:?} is not an offset from UTC in minutes (-720 to 840)"),
            }),
    }
}

fn range(
    params: &ViewParams,
    (since_name, until_name): (&'static str, &'static str),
    (since, until): (&Option<String>, &Option<String>),
    now: Micros,
) -> Result<Range, Error> {
    let until = instant(until_name, until, now)?.unwrap_or(now);
    let since = instant(since_name, since, now)?.unwrap_or(until - DEFAULT_SPAN_US);
    if since >= until {
        return Err(Error::BadParam {
            param: since_name,
            reason: format!("must be before {until_name}"),
        });
    }
    Ok(Range {
        since,
        until,
        tz_minutes: tz(params)?,
    })
}

fn main_range(params: &ViewParams, now: Micros) -> Result<Range, Error> {
    range(
        params,
        ("since", "until"),
        (&params.since, &params.until),
        now,
    )
}

fn endpoint_param(params: &ViewParams) -> Result<String, Error> {
    present(&params.endpoint)
        .map(str::to_owned)
        .ok_or(Error::MissingParam { param: "endpoint" })
}

type Params = Result<Query<ViewParams>, QueryRejection>;

fn parse(params: Params) -> Result<ViewParams, Error> {
    params.map(|Query(p)| p).map_err(Error::BadQuery)
}

/// `GET /api/views/hourly-load?since=&until=&tz=&endpoint=`: requests per local day and hour.
pub async fn hourly_load(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<views::HourlyLoad>, Error> {
    let params = parse(params)?;
    let range = main_range(&params, now_us())?;
    let endpoint = present(&params.endpoint).map(str::to_owned);
    state
        .query(move |conn| views::hourly_load(conn, &range, endpoint.as_deref()))
        .await
        .map(Json)
}

/// `GET /api/views/daily?since=&until=&tz=`: requests per endpoint per local day.
pub async fn daily(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<views::Daily>, Error> {
    let range = main_range(&parse(params)?, now_us())?;
    state
        .query(move |conn| views::daily(conn, &range))
        .await
        .map(Json)
}

/// `GET /api/views/versions?since=&until=`: requests per endpoint and app version.
pub async fn versions(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<views::VersionUse>, Error> {
    let range = main_range(&parse(params)?, now_us())?;
    state
        .query(move |conn| views::versions(conn, &range))
        .await
        .map(Json)
}

/// `GET /api/views/performance?since=&until=`: duration box plots per endpoint.
pub async fn performance(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<views::Performance>, Error> {
    let range = main_range(&parse(params)?, now_us())?;
    state
        .query(move |conn| views::performance(conn, &range))
        .await
        .map(Json)
}

/// `GET /api/views/endpoint?endpoint=&since=&until=&tz=`: one endpoint's charts.
pub async fn endpoint(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<views::EndpointView>, Error> {
    let params = parse(params)?;
    let range = main_range(&params, now_us())?;
    let name = endpoint_param(&params)?;
    state
        .query(move |conn| views::endpoint_view(conn, &range, &name))
        .await
        .map(Json)
}

/// `GET /api/views/profiled-requests?endpoint=&since=&until=&limit=`: requests with a profile, newest first.
pub async fn profiled_requests(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Vec<RequestRow>>, Error> {
    let params = parse(params)?;
    let range = main_range(&params, now_us())?;
    let name = endpoint_param(&params)?;
    let limit = match present(&params.limit) {
        None => 200,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| Error::BadLimit {
                value: v.to_owned(),
            })?
            .min(MAX_PROFILED),
    };
    state
        .query(move |conn| views::profiled_requests(conn, &range, &name, limit))
        .await
        .map(Json)
}

fn two_ranges(params: &ViewParams, now: Micros) -> Result<(Range, Range), Error> {
    let a = range(
        params,
        ("a_since", "a_until"),
        (&params.a_since, &params.a_until),
        now,
    )?;
    let b = range(
        params,
        ("b_since", "b_until"),
        (&params.b_since, &params.b_until),
        now,
    )?;
    for (name, value) in [
        ("a_since", &params.a_since),
        ("a_until", &params.a_until),
        ("b_since", &params.b_since),
        ("b_until", &params.b_until),
    ] {
        if present(value).is_none() {
            return Err(Error::MissingParam { param: name });
        }
    }
    Ok((a, b))
}

/// `GET /api/views/reporting?a_since=&a_until=&b_since=&b_until=`: every endpoint in both intervals.
pub async fn reporting(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<views::Report>, Error> {
    let (a, b) = two_ranges(&parse(params)?, now_us())?;
    state
        .query(move |conn| views::reporting(conn, &a, &b))
        .await
        .map(Json)
}

/// `GET /api/views/profile-diff?endpoint=&a_since=&a_until=&b_since=&b_until=`: time per code line.
pub async fn profile_diff(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<views::ProfileDiff>, Error> {
    let params = parse(params)?;
    let (a, b) = two_ranges(&params, now_us())?;
    let name = endpoint_param(&params)?;
    state
        .query(move |conn| views::profile_diff(conn, &name, &a, &b))
        .await
        .map(Json)
}

/// `GET /api/views/database`: store size per kind of data.
pub async fn database(State(state): State<AppState>) -> Result<Json<views::DatabaseSize>, Error> {
    state.query(views::database_size).await.map(Json)
}

#[cfg(test)]
mod tests {
    use axum::{http::StatusCode, Router};

    use crate::{
        api::{router, test_support::get, AppState},
        store::{append_requests, test_support::request, Store},
    };

    /// 40 requests a millisecond apart from 2026-11-23T15:56:41.123456Z; the even ones to `item`.
    fn app() -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let batch: Vec<_> = (0..40).map(request).collect();
        append_requests(store.connection(), 1, 1, &batch).expect("append");
        (dir, router(AppState::new(store.reader().expect("reader"))))
    }

    const RANGE: &str = "since=2026-11-23T00:00:00Z&until=2026-11-24T00:00:00Z";

    #[tokio::test]
    async fn every_view_answers_for_its_data() {
        let (_dir, app) = app();
        let (status, body) = get(&app, &format!("/api/views/hourly-load?{RANGE}&tz=120")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["cells"],
            serde_json::json!([{ "day": "2026-11-23", "hour": 17, "hits": 20 }])
        );

        let (_, body) = get(&app, &format!("/api/views/daily?{RANGE}")).await;
        assert_eq!(body["days"], serde_json::json!(["2026-11-23"]));
        assert_eq!(
            body["series"],
            serde_json::json!([{ "endpoint": "item", "hits": [20] }])
        );

        let (_, body) = get(&app, &format!("/api/views/performance?{RANGE}")).await;
        assert_eq!(body["endpoints"][0]["key"], "item");
        assert_eq!(body["endpoints"][0]["hits"], 20);

        let (_, body) = get(&app, &format!("/api/views/versions?{RANGE}")).await;
        assert_eq!(body["column"], "version");

        let (status, body) = get(&app, &format!("/api/views/endpoint?endpoint=item&{RANGE}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let hits: u64 = body["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .sum();
        assert_eq!(hits, 20);

        let (status, body) = get(
            &app,
            &format!("/api/views/profiled-requests?endpoint=item&{RANGE}"),
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, serde_json::json!([])));

        let (status, body) = get(
            &app,
            "/api/views/reporting?a_since=2026-11-22T00:00:00Z&a_until=2026-11-23T00:00:00Z\
             &b_since=2026-11-23T00:00:00Z&b_until=2026-11-24T00:00:00Z",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rows"][0]["b"]["hits"], 20);
        assert_eq!(body["rows"][0]["significant"], false);

        let (status, body) = get(&app, "/api/views/database").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["tables"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["table"] == "requests")));
    }

    #[tokio::test]
    async fn bad_parameters_say_what_is_wrong() {
        let (_dir, app) = app();
        for (uri, says) in [
            ("/api/views/hourly-load?tz=abc", "tz"),
            ("/api/views/hourly-load?tz=100000", "tz"),
            ("/api/views/daily?since=soon", "since"),
            (
                "/api/views/daily?since=2026-11-24T00:00:00Z&until=2026-11-23T00:00:00Z",
                "before",
            ),
            ("/api/views/endpoint", "endpoint"),
            ("/api/views/reporting?a_since=1d", "a_until"),
            ("/api/views/profiled-requests?endpoint=x&limit=-1", "limit"),
        ] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let message = body["error"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{uri}: {message}");
        }
    }
}
