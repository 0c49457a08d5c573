//! The exception views: `/api/exceptions` (groups per endpoint, most recently seen first) and
//! `/api/exceptions/{group}` (one group over all endpoints, with its latest requests).

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use serde::Deserialize;

use super::{AppState, Error};
use crate::store::{
    self,
    time::{now_us, parse_instant},
    ExceptionFilter, ExceptionGroupDetail, ExceptionGroupRow,
};

#[derive(Debug, Default, Deserialize)]
pub struct ExceptionsParams {
    endpoint: Option<String>,
    since: Option<String>,
}

/// `GET /api/exceptions?endpoint=&since=`: one object per group and endpoint.
pub async fn exceptions(
    State(state): State<AppState>,
    params: Result<Query<ExceptionsParams>, QueryRejection>,
) -> Result<Json<Vec<ExceptionGroupRow>>, Error> {
    let Query(params) = params.map_err(Error::BadQuery)?;
    let present = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let since = present(params.since)
        .map(|v| {
            parse_instant(&v, now_us()).map_err(|source| Error::BadTime {
                param: "since",
                source,
            })
        })
        .transpose()?;
    let filter = ExceptionFilter {
        endpoint: present(params.endpoint),
        group: None,
        since,
    };
    state
        .query(move |conn| store::exception_groups(conn, &filter))
        .await
        .map(Json)
}

/// `GET /api/exceptions/{group}`.
pub async fn exception(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<ExceptionGroupDetail>, Error> {
    let id = group.clone();
    match state
        .query(move |conn| store::exception_group(conn, &id))
        .await?
    {
        Some(detail) => Ok(Json(detail)),
        None => Err(Error::NotFound {
            what: format!("exception group {group:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;

    use crate::{
        api::{router, test_support::get},
        exceptions::Logged,
        store::{append_requests, test_support::request, Store},
    };

    #[tokio::test]
    async fn groups_and_one_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        let mut batch: Vec<_> = (0..3).map(request).collect();
        for r in &mut batch {
            r.endpoint = Some("boom".into());
            r.exceptions = vec![Logged {
                group: "0123456789abcdef".into(),
                type_name: "KeyError".into(),
                message: "'missing'".into(),
                detail: Arc::from(
                    r#"{"frames":[{"file":"/app/app.py","line":7,"function":"helper","code":"return d['missing']","context":[{"line":7,"code":"    return d['missing']"}]}],"chain":[]}"#,
                ),
                raised: true,
            }];
        }
        append_requests(store.connection(), 1, 1, &batch).expect("append");
        let app = router(crate::api::AppState::new(store.reader().expect("reader")));

        let (status, body) = get(&app, "/api/exceptions").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let group = &body[0];
        assert_eq!(group["group"], "0123456789abcdef");
        assert_eq!(group["type"], "KeyError");
        assert_eq!(group["message"], "'missing'");
        assert_eq!(group["endpoint"], "boom");
        assert_eq!(group["count"], 3);
        assert_eq!(group["frames"][0]["file"], "/app/app.py");
        assert_eq!(group["frames"][0]["line"], 7);
        assert_eq!(group["frames"][0]["function"], "helper");
        assert_eq!(group["frames"][0]["code"], "return d['missing']");
        assert_eq!(group["frames"][0]["context"][0]["line"], 7);
        assert!(group["first_seen"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));

        let (status, body) = get(&app, "/api/exceptions?endpoint=other").await;
        assert_eq!((status, body), (StatusCode::OK, serde_json::json!([])));
        let (status, body) = get(&app, "/api/exceptions/0123456789abcdef").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (
                body["count"].as_u64(),
                body["requests"].as_array().map(Vec::len)
            ),
            (Some(3), Some(3))
        );
        let (status, body) = get(&app, "/api/exceptions/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) = get(&app, "/api/exceptions?since=yesterday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (_, body) = get(&app, "/api/requests").await;
        assert_eq!(body[0]["exception"], "0123456789abcdef");
    }
}
