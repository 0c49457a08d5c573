//! What can go wrong serving an API call, and how each case reaches the client: a status code and a JSON
//! body `{"error": "..."}` that says what to fix.

use axum::{
    extract::rejection::QueryRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
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
    #[error("bad query parameter format: {value:?} (use json or folded)")]
    BadFormat { value: String },
    #[error("bad query parameter {param}: {reason}")]
    BadParam { param: &'static str, reason: String },
    #[error("missing query parameter {param}")]
    MissingParam { param: &'static str },
    #[error("no {what}")]
    NotFound { what: String },
    #[error("bad query string")]
    BadQuery(#[source] QueryRejection),
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
            | Self::BadQuery(_)
            | Self::BadFormat { .. }
            | Self::MissingParam { .. }
            | Self::BadParam { .. } => StatusCode::BAD_REQUEST,
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
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
