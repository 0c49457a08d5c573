//! The profile views: `/api/requests/{id}/profile` (one request's execution tree) and the merged profile of
//! an endpoint's (or, until endpoints are known everywhere, a path's) last N profiled requests.

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::header,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

use super::{AppState, Error};
use crate::store::profiles::{self, ProfileKey};

/// Requests merged into a grouped profile unless `n` says otherwise (FMD's default).
pub const DEFAULT_GROUPED: usize = 100;
/// Most requests one grouped profile merges; more is a 400.
const MAX_GROUPED: usize = 10_000;

/// `?full_stack=1`: every frame from the thread's start, instead of the app's part under one server node.
#[derive(Debug, Default, Deserialize)]
pub struct ProfileParams {
    full_stack: Option<String>,
}

/// `full_stack`'s value: `1`/`true`/`yes` or `0`/`false`/`no`/empty.
fn full_stack(value: Option<&str>) -> Result<bool, Error> {
    match value.map(str::trim) {
        None | Some("" | "0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(other) => Err(Error::BadFlag {
            param: "full_stack",
            value: other.to_owned(),
        }),
    }
}

/// `GET /api/requests/{id}/profile?full_stack=1`.
pub async fn request_profile(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    params: Result<Query<ProfileParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path(id) = id.map_err(Error::BadPath)?;
    let Query(params) = params.map_err(Error::BadQuery)?;
    let full = full_stack(params.full_stack.as_deref())?;
    match state
        .query(move |conn| profiles::request_profile_view(conn, id, full))
        .await?
    {
        Some(p) => Ok(Json(p).into_response()),
        None => Err(Error::NotFound {
            what: format!(
                "profile for request {id} (unknown request, or no samples: shorter than the sampling period or the \
                 profiler was off)"
            ),
        }),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupedParams {
    n: Option<String>,
    /// `folded`: plain-text folded stacks instead of JSON.
    format: Option<String>,
    /// `/api/paths/grouped-profile?path=`: the raw path to merge by.
    path: Option<String>,
    full_stack: Option<String>,
}

/// `GET /api/endpoints/{endpoint}/grouped-profile?n=100&format=folded`.
pub async fn endpoint_grouped(
    State(state): State<AppState>,
    endpoint: Result<Path<String>, PathRejection>,
    params: Result<Query<GroupedParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path(endpoint) = endpoint.map_err(Error::BadPath)?;
    let Query(params) = params.map_err(Error::BadQuery)?;
    grouped(state, ProfileKey::Endpoint(endpoint), params).await
}

/// `GET /api/paths/grouped-profile?path=/x&n=100&format=folded`.
pub async fn path_grouped(
    State(state): State<AppState>,
    params: Result<Query<GroupedParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params.map_err(Error::BadQuery)?;
    let path = params
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or(Error::MissingParam { param: "path" })?;
    grouped(state, ProfileKey::Path(path), params).await
}

async fn grouped(
    state: AppState,
    key: ProfileKey,
    params: GroupedParams,
) -> Result<Response, Error> {
    let n = match params.n.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => DEFAULT_GROUPED,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_GROUPED => n,
            Ok(n) => {
                return Err(Error::LimitTooLarge {
                    param: "n",
                    value: n as u64,
                    max: MAX_GROUPED as u64,
                    hint: "",
                })
            }
            Err(_) => {
                return Err(Error::BadLimit {
                    value: v.to_owned(),
                })
            }
        },
    };
    let folded = match params.format.as_deref() {
        None | Some("" | "json") => false,
        Some("folded") => true,
        Some(other) => {
            return Err(Error::BadFormat {
                value: other.to_owned(),
            })
        }
    };
    let full = full_stack(params.full_stack.as_deref())?;
    let profile = state
        .query(move |conn| profiles::grouped_profile_view(conn, &key, n, full))
        .await?;
    if folded {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            profile.folded,
        )
            .into_response());
    }
    Ok(Json(profile).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::{
        api::{router, test_support::get_text, AppState},
        store::{
            append_requests,
            profiles::{append_profiles, Dedup, ProfileFrame, ProfileRecord, ProfileStack},
            test_support::request,
            Store,
        },
    };

    fn record(i: u32) -> ProfileRecord {
        let r = request(i);
        let frame = |function: &str, line| ProfileFrame {
            file: "/app/app.py".into(),
            line,
            function: function.into(),
            first_line: 1,
            source: None,
        };
        ProfileRecord {
            worker_pid: r.worker_pid,
            tid: r.tid,
            ts_us: r.ts_us,
            duration_ns: r.duration_ns,
            path: "/p".into(),
            endpoint: Some("ep".into()),
            gc_ns: Some(3_000_000),
            stacks: vec![ProfileStack {
                frames: vec![frame("view", 3), frame("cpu_a", 9)],
                off_cpu: false,
                truncated: false,
                samples: 2,
                weight_ns: 1_000_000,
            }],
        }
    }

    /// GETs `uri` on a database with requests 1..=3, the first two profiled; expects a status and a body
    /// fragment.
    async fn check(uri: &str, status: StatusCode, fragment: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
        append_requests(
            store.connection(),
            1,
            1,
            &(0..3).map(request).collect::<Vec<_>>(),
        )
        .expect("requests");
        let mut dedup = Dedup::load(store.connection()).expect("dedup");
        append_profiles(store.connection(), &mut dedup, &[record(0), record(1)]).expect("profiles");
        let app = router(AppState::new(store.reader().expect("reader")));
        let (got, body) = get_text(&app, uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(body.contains(fragment), "{uri}: {body}");
    }

    #[tokio::test]
    async fn profile_routes() {
        check(
            "/api/requests/1/profile",
            StatusCode::OK,
            r#""function":"cpu_a""#,
        )
        .await;
        check(
            "/api/requests/3/profile",
            StatusCode::NOT_FOUND,
            "no samples",
        )
        .await;
        check(
            "/api/endpoints/ep/grouped-profile?n=1",
            StatusCode::OK,
            r#""requests":1,"#,
        )
        .await;
        check(
            "/api/endpoints/ep/grouped-profile",
            StatusCode::OK,
            r#""requests":2,"#,
        )
        .await;
        check(
            "/api/endpoints/none/grouped-profile",
            StatusCode::OK,
            r#""requests":0,"#,
        )
        .await;
        check(
            "/api/paths/grouped-profile?path=/p&format=folded",
            StatusCode::OK,
            "view (/app/app.py:3);cpu_a (/app/app.py:9) 2000",
        )
        .await;
        check(
            "/api/paths/grouped-profile",
            StatusCode::BAD_REQUEST,
            "path",
        )
        .await;
        check(
            "/api/endpoints/ep/grouped-profile?format=svg",
            StatusCode::BAD_REQUEST,
            "svg",
        )
        .await;
        check(
            "/api/endpoints/ep/grouped-profile?n=x",
            StatusCode::BAD_REQUEST,
            "x",
        )
        .await;
    }
}
