//! How an authentication or account failure reaches the client: a status code (401, 403, 404, 409, 429)
//! and the API's usual JSON body `{"error": "..."}`.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use crate::{security, store::users::UserError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log in first (POST /api/login)")]
    NotLoggedIn,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("the bearer token is not this daemon's local credential")]
    BadBearer,
    #[error("missing or wrong X-CSRF-Token header: send the csrf_token that /api/login and /api/session return")]
    Csrf,
    #[error("guests can only look: log in as an admin to change anything")]
    ReadOnly,
    #[error("only admins can manage accounts")]
    AdminOnly,
    #[error("setup is over: an account exists, log in instead")]
    SetupDone,
    #[error("wrong or used setup token: use the link the daemon printed when it started")]
    BadSetupToken,
    #[error("too many failed attempts: try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("bad request body: expected JSON like {expected}")]
    BadBody {
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read the request body")]
    Body(#[source] axum::Error),
    #[error(transparent)]
    Security(#[from] security::Error),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Api(#[from] super::super::Error),
}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        Self::Api(super::super::Error::Store(e))
    }
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotLoggedIn | Self::BadCredentials | Self::BadBearer => StatusCode::UNAUTHORIZED,
            Self::Csrf | Self::ReadOnly | Self::AdminOnly | Self::BadSetupToken => {
                StatusCode::FORBIDDEN
            }
            Self::SetupDone => StatusCode::CONFLICT,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadBody { .. } | Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::Security(e) => match e {
                security::Error::BadUsername { .. }
                | security::Error::ShortPassword { .. }
                | security::Error::LongPassword { .. } => StatusCode::BAD_REQUEST,
                security::Error::Hash(_)
                | security::Error::Random(_)
                | security::Error::TokenFile { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::User(e) => match e {
                UserError::Exists { .. } | UserError::LastAdmin { .. } => StatusCode::CONFLICT,
                UserError::Missing { .. } => StatusCode::NOT_FOUND,
                UserError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Api(e) => e.status(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Self::Api(e) = self {
            return e.into_response();
        }
        let status = self.status();
        let mut message = self.to_string();
        let mut source = std::error::Error::source(&self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if status.is_server_error() {
            tracing::error!(error = %message, "authentication failed");
        }
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if let Self::TooManyAttempts { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}
