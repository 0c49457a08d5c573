//! What can go wrong serving an API call, and how each case reaches the client: a status code and a JSON
//! body `{"error": "..."}` that says what to fix.

use axum::{
    extract::rejection::{PathRejection, QueryRejection},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad query parameter {param}")]
    BadTime {
        param: &'static str,
        #[source]
        source: store::Error,
    },
    #[error("bad query parameter limit: {value:?} is not a non-negative integer")]
    BadLimit { value: String },
    #[error("query parameter {param}={value} is above the maximum of {max}{hint}")]
    LimitTooLarge {
        param: &'static str,
        value: u64,
        max: u64,
        /// What to do instead, starting with a separator, or empty.
        hint: &'static str,
    },
    #[error("bad query parameter before_id: {value:?} is not a request id")]
    BadCursor { value: String },
    #[error("bad query parameter format: {value:?} (use json or folded)")]
    BadFormat { value: String },
    #[error("bad query parameter {param}: {value:?} (use 1 or 0)")]
    BadFlag { param: &'static str, value: String },
    #[error("bad level: {reason} (send JSON {{\"level\": 0, 1, 2 or 3}})")]
    BadLevel { reason: String },
    #[error("bad query parameter {param}: {reason}")]
    BadParam { param: &'static str, reason: String },
    #[error("missing query parameter {param}")]
    MissingParam { param: &'static str },
    #[error("no {what}")]
    NotFound { what: String },
    #[error("bad query string")]
    BadQuery(#[source] QueryRejection),
    #[error("bad path")]
    BadPath(#[source] PathRejection),
    #[error("cannot read the fmd database")]
    Store(#[source] store::Error),
    #[error("the query task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadTime { .. }
            | Self::BadLimit { .. }
            | Self::LimitTooLarge { .. }
            | Self::BadCursor { .. }
            | Self::BadQuery(_)
            | Self::BadFormat { .. }
            | Self::BadFlag { .. }
            | Self::BadLevel { .. }
            | Self::MissingParam { .. }
            | Self::BadParam { .. } => StatusCode::BAD_REQUEST,
            // A path segment that does not parse (`/api/requests/abc/profile`) names nothing.
            Self::BadPath(rejection) => rejection.status(),
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Store(_) | Self::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut message = self.to_string();
        let mut source = std::error::Error::source(&self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if status.is_server_error() {
            tracing::error!(error = %message, "API call failed");
        }
        // One line ending in a newline, so `curl` leaves the shell prompt on a line of its own.
        let mut body = serde_json::json!({ "error": message }).to_string();
        body.push('\n');
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_is_one_json_line() {
        let response = Error::NotFound {
            what: "profile for request 7".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(body, "{\"error\":\"no profile for request 7\"}\n");
    }
}
