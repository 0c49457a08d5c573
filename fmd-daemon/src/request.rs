//! The record one served HTTP request becomes: produced by `capture`, attributed by `flask`, kept by
//! `store`, shown by `api` and `cli`. Field names are the contract of `query requests` and `/api/requests`.

use serde::{Deserialize, Serialize};

/// A finished HTTP/1.x request as fmd saw it on the worker's socket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Wall-clock start (first request byte read), microseconds since the Unix epoch, UTC.
    pub ts_us: i64,
    /// First request byte read to last response byte written, in nanoseconds.
    pub duration_ns: u64,
    pub method: String,
    /// The request target's path, undecoded, without the query string.
    pub path: String,
    /// The query string without `?`; `None` when the target had none.
    pub query: Option<String>,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub http_version: String,
    /// Response status; 0 when the connection ended before any response.
    pub status: u16,
    /// Request bytes read (head and body).
    pub bytes_in: u64,
    /// Response bytes written (head and body).
    pub bytes_out: u64,
    /// Client address: the TCP peer, or, when the peer is a trusted proxy (config `[proxies] trusted`),
    /// the client it forwarded (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`); `None` for a unix-socket
    /// peer that forwarded nothing.
    pub remote_ip: Option<String>,
    pub worker_pid: u32,
    /// Kernel thread id that read the request (and, in gunicorn, serves it).
    pub tid: u32,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// The first bytes of the request as read (head and start of body), bounded, for outlier details.
    pub head: Vec<u8>,
    /// Flask endpoint name, when the route table is known.
    pub endpoint: Option<String>,
    /// The matched rule template, e.g. `/user/<int:id>`.
    pub rule: Option<String>,
    /// The app's version serving it: config `app_version`, else the git commit of the worker's code.
    pub version: Option<String>,
    /// Who made it, from the configured extractors (`[users]`: header, cookie, JWT, session...).
    pub user: Option<String>,
    /// Python tracebacks the serving thread logged while serving it, in order; the last is the exception
    /// the request raised (`exceptions::collector`). Stored in `exception_occurrences`, not on the row.
    #[serde(skip)]
    pub exceptions: Vec<crate::exceptions::Logged>,
}
