//! `/api/outliers` (outliers and live snapshots with their context) and `/api/endpoints/{endpoint}/level`
//! (read and change an endpoint's monitoring level while the daemon runs).

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        Path, Query, State,
    },
    Json,
};
use serde::Deserialize;

use super::{AppState, Error};
use crate::{
    levels::MAX,
    store::{
        levels::{self, EndpointLevel},
        outliers::{outliers as read_outliers, Outlier, OutlierFilter},
        time::{now_us, parse_instant},
    },
};

/// `/api/outliers` query parameters; empty values count as absent.
#[derive(Debug, Default, Deserialize)]
pub struct OutliersParams {
    endpoint: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

/// `GET /api/outliers?endpoint=&since=&limit=`: JSON array of outliers, oldest first; `limit` keeps the
/// most recent.
pub async fn outliers(
    State(state): State<AppState>,
    params: Result<Query<OutliersParams>, QueryRejection>,
) -> Result<Json<Vec<Outlier>>, Error> {
    let Query(params) = params.map_err(Error::BadQuery)?;
    let filter = outlier_filter(params)?;
    state
        .query(move |conn| read_outliers(conn, &filter))
        .await
        .map(Json)
}

pub(crate) fn outlier_filter(params: OutliersParams) -> Result<OutlierFilter, Error> {
    let present = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let since = present(params.since)
        .map(|v| {
            parse_instant(&v, now_us()).map_err(|source| Error::BadTime {
                param: "since",
                source,
            })
        })
        .transpose()?;
    let limit = present(params.limit)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::BadLimit { value: v })
        })
        .transpose()?;
    Ok(OutlierFilter {
        endpoint: present(params.endpoint),
        since,
        limit,
    })
}

#[derive(Debug, Deserialize)]
pub struct LevelBody {
    level: i64,
}

/// `GET /api/endpoints/{endpoint}/level`: its level and level-0 request count.
pub async fn get_level(
    State(state): State<AppState>,
    Path(endpoint): Path<String>,
) -> Result<Json<EndpointLevel>, Error> {
    let default = state.default_level();
    state
        .query(move |conn| levels::endpoint_level(conn, &endpoint, default))
        .await
        .map(Json)
}

/// `PUT /api/endpoints/{endpoint}/level` with `{"level": N}`: stored, and applied from the next request.
pub async fn set_level(
    State(state): State<AppState>,
    Path(endpoint): Path<String>,
    body: Result<Json<LevelBody>, JsonRejection>,
) -> Result<Json<EndpointLevel>, Error> {
    let Json(body) = body.map_err(|e| Error::BadLevel {
        reason: e.body_text(),
    })?;
    let level = u8::try_from(body.level)
        .ok()
        .filter(|l| *l <= MAX)
        .ok_or_else(|| Error::BadLevel {
            reason: format!("{} is not a level", body.level),
        })?;
    let default = state.default_level();
    let name = endpoint.clone();
    let known = state
        .query(move |conn| levels::known_endpoint(conn, &name))
        .await?;
    if !known && !state.has_level(&endpoint) {
        return Err(Error::NotFound {
            what: format!("endpoint {endpoint:?} (see /api/endpoints)"),
        });
    }
    let name = endpoint.clone();
    let answer = state
        .query(move |conn| {
            levels::set_level(conn, &name, level, now_us())?;
            levels::endpoint_level(conn, &name, default)
        })
        .await?;
    state.apply_level(&endpoint, level);
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use axum::{
        body::{to_bytes, Body},
        http::{Request, StatusCode},
    };
    use tower::ServiceExt as _;

    use super::*;
    use crate::{
        api::{router, test_support::get},
        levels::Levels,
        store::Store,
    };

    async fn put(app: &axum::Router, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::put(uri)
            .header("content-type", "application/json")
            .header(
                "authorization",
                format!("Bearer {}", crate::api::test_support::LOCAL_TOKEN),
            )
            .body(Body::from(body.to_owned()))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn levels_are_set_stored_and_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        levels::insert_levels(store.connection(), &[("index".into(), 3)], 1).expect("level");
        let levels = Arc::new(Levels::new(3, HashMap::new()));
        let app =
            router(AppState::new(store.reader().expect("reader")).with_levels(levels.clone()));
        let (status, body) = put(&app, "/api/endpoints/index/level", r#"{"level":0}"#).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["level"], 0);
        assert_eq!(levels.peek("index"), 0, "applied to the running daemon");
        let (_, body) = get(&app, "/api/endpoints/index/level").await;
        assert_eq!(body["level"], 0, "stored");
        for bad in [r#"{"level":4}"#, r#"{"level":-1}"#, r#"{"lvl":1}"#, "nope"] {
            let (status, body) = put(&app, "/api/endpoints/index/level", bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains("level")),
                "{body}"
            );
        }
        let (status, _) = put(&app, "/api/endpoints/nope/level", r#"{"level":1}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = get(&app, "/api/outliers?limit=x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = get(&app, "/api/outliers?endpoint=index&since=1h").await;
        assert_eq!((status, body), (StatusCode::OK, serde_json::json!([])));
    }
}
