//! Who may use the dashboard, as pure logic the API and the CLI share: password hashing, random secrets
//! compared in constant time, the in-memory session table, the login rate limiter and the local
//! credential file beside the store. HTTP lives in `api::auth`, accounts in `store::users`.

pub mod local_token;
pub mod password;
pub mod rate_limit;
pub mod secret;
pub mod sessions;

pub use self::{
    local_token::LocalToken,
    password::{check_password, check_username},
    rate_limit::FailureLimiter,
    sessions::{Session, Sessions},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot hash the password")]
    Hash(#[source] argon2::password_hash::Error),
    #[error("the operating system gave no random bytes")]
    Random(#[source] getrandom::Error),
    #[error("invalid username {username:?}: use 1 to 64 letters, digits and . _ @ -")]
    BadUsername { username: String },
    #[error("the password is too short: use at least {min} characters")]
    ShortPassword { min: usize },
    #[error("the password is too long: use at most {max} bytes")]
    LongPassword { max: usize },
    #[error("cannot {what} {}", path.display())]
    TokenFile {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
