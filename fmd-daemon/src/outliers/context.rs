//! What an outlier keeps of its request, built from the bytes the capture kept (the head and the start
//! of the body, at most `capture.keep_head_bytes`): headers, request values (query string, form or JSON
//! body) and a WSGI-style environment, with secrets redacted.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::request::Request;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Headers whose values are always redacted.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];
/// The default names of fields (headers, query, form, JSON keys) whose values are redacted.
pub const DEFAULT_REDACT: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "session",
];
/// Bound on one kept value (a long JSON string, a form field).
const MAX_VALUE: usize = 1024;
const MAX_HEADERS: usize = 100;

/// Decides which names are secret: a case-insensitive substring match against the configured list, with
/// `-` read as `_` (so `X-Api-Key` matches `api_key`).
#[derive(Clone, Debug)]
pub struct Redactor {
    names: Vec<String>,
}

impl Redactor {
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names
                .iter()
                .map(|n| normalise(n))
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    pub fn is_secret(&self, name: &str) -> bool {
        let name = normalise(name);
        self.names.iter().any(|n| name.contains(n.as_str()))
    }

    fn header_value(&self, name: &str, value: &str) -> String {
        if SECRET_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) || self.is_secret(name) {
            REDACTED.to_owned()
        } else {
            bounded(value)
        }
    }

    /// A raw query string with the values of secret fields replaced.
    pub fn query_string(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if self.is_secret(&decode(k)) => format!("{k}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A JSON body with the values of secret keys replaced, at any depth.
    fn json(&self, value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let v = if self.is_secret(&k) {
                            Value::String(REDACTED.to_owned())
                        } else {
                            self.json(v)
                        };
                        (k, v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.json(v)).collect()),
            Value::String(s) => Value::String(bounded(&s)),
            other => other,
        }
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(
            &DEFAULT_REDACT
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
    }
}

fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('-', "_")
}

fn bounded(value: &str) -> String {
    if value.len() <= MAX_VALUE {
        return value.to_owned();
    }
    let mut end = MAX_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The request's context as an outlier keeps it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestContext {
    /// Header name (as sent) -> value; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// `{"query": {...}, "form": {...}}` or `{"query": {...}, "json": ...}`, plus `"body_truncated": true`
    /// when the body did not fit in what the capture kept.
    pub request_values: Value,
    pub environ: BTreeMap<String, String>,
}

/// Builds the context of `req` from its kept bytes.
pub fn request_context(req: &Request, redactor: &Redactor) -> RequestContext {
    let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut parsed);
    let (header_list, body): (Vec<(String, String)>, &[u8]) = match head.parse(&req.head) {
        Ok(httparse::Status::Complete(len)) => (
            head.headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            req.head.get(len..).unwrap_or_default(),
        ),
        _ => (Vec::new(), &[]),
    };
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &header_list {
        let value = redactor.header_value(name, value);
        headers
            .entry(name.clone())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let header = |name: &str| {
        header_list
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let content_type = header("content-type").unwrap_or_default();
    let content_length = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());

    let mut values = Map::new();
    values.insert(
        "query".into(),
        Value::Object(fields(req.query.as_deref().unwrap_or_default(), redactor)),
    );
    let truncated = content_length.is_some_and(|n| body.len() < n);
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !body.is_empty() {
        let text = String::from_utf8_lossy(body);
        if mime == "application/x-www-form-urlencoded" {
            values.insert("form".into(), Value::Object(fields(&text, redactor)));
        } else if mime == "application/json" || mime.ends_with("+json") {
            match serde_json::from_slice::<Value>(body) {
                Ok(json) => {
                    values.insert("json".into(), redactor.json(json));
                }
                // Cut by the capture's bound: keep nothing rather than an unredacted prefix.
                Err(_) => {
                    values.insert("json".into(), Value::Null);
                }
            }
        }
    }
    if truncated {
        values.insert("body_truncated".into(), Value::Bool(true));
    }

    let mut environ = BTreeMap::new();
    environ.insert("REQUEST_METHOD".into(), req.method.clone());
    environ.insert("PATH_INFO".into(), decode_path(&req.path));
    environ.insert(
        "QUERY_STRING".into(),
        redactor.query_string(req.query.as_deref().unwrap_or_default()),
    );
    environ.insert("SERVER_PROTOCOL".into(), req.http_version.clone());
    environ.insert("CONTENT_TYPE".into(), content_type.to_owned());
    environ.insert(
        "CONTENT_LENGTH".into(),
        content_length.map(|n| n.to_string()).unwrap_or_default(),
    );
    if let Some(ip) = &req.remote_ip {
        environ.insert("REMOTE_ADDR".into(), ip.clone());
    }
    let (server_name, server_port) = server(header("host").or(req.host.as_deref()));
    environ.insert("SERVER_NAME".into(), server_name);
    environ.insert("SERVER_PORT".into(), server_port);
    for (name, _) in &header_list {
        let key = name.to_ascii_uppercase().replace('-', "_");
        // WSGI servers put these two under their own names, not HTTP_*.
        if key == "CONTENT_TYPE" || key == "CONTENT_LENGTH" {
            continue;
        }
        if let Some(value) = headers.get(name) {
            environ.insert(format!("HTTP_{key}"), value.clone());
        }
    }
    RequestContext {
        headers,
        request_values: Value::Object(values),
        environ,
    }
}

/// `a=1&b=2&b=3` -> `{"a": "1", "b": ["2", "3"]}`, secret fields redacted.
fn fields(query: &str, redactor: &Redactor) -> Map<String, Value> {
    let mut out = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k);
        let value = if redactor.is_secret(&key) {
            REDACTED.to_owned()
        } else {
            bounded(&decode(v))
        };
        match out.get_mut(&key) {
            Some(Value::Array(items)) => items.push(Value::String(value)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value)]);
            }
            None => {
                out.insert(key, Value::String(value));
            }
        }
    }
    out
}

fn decode_path(path: &str) -> String {
    percent_decode_str(path).decode_utf8_lossy().into_owned()
}

/// `SERVER_NAME` and `SERVER_PORT` from a `Host` header (WSGI servers fall back to their bind address,
/// which fmd does not see: then empty).
fn server(host: Option<&str>) -> (String, String) {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return (String::new(), String::new());
    };
    // `[::1]:8000`, `example.com:8000`, `example.com`.
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => {
            (name, port)
        }
        _ => (host, "80"),
    };
    (
        name.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req(head: &str, query: Option<&str>) -> Request {
        Request {
            method: "POST".into(),
            path: "/a%20b".into(),
            query: query.map(str::to_owned),
            http_version: "HTTP/1.1".into(),
            remote_ip: Some("10.0.0.7".into()),
            head: head.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    #[test]
    fn redaction_names() {
        let r = Redactor::default();
        for secret in [
            "password",
            "User_Password",
            "X-Api-Key",
            "apikey",
            "csrf_token",
            "SESSION",
        ] {
            assert!(r.is_secret(secret), "{secret}");
        }
        for plain in ["user", "q", "Accept", "page"] {
            assert!(!r.is_secret(plain), "{plain}");
        }
        let custom = Redactor::new(&["pin".to_owned()]);
        assert!(custom.is_secret("card_pin") && !custom.is_secret("password"));
        assert_eq!(
            r.query_string("q=1&token=abc&x"),
            format!("q=1&token={REDACTED}&x")
        );
    }

    #[test]
    fn json_body_headers_and_environ() {
        let body = r#"{"name":"ann","password":"hunter2","nested":{"api_key":"k","n":[1,2]}}"#;
        let head = format!(
            "POST /a%20b?q=7&token=t HTTP/1.1\r\nHost: example.com:8000\r\nAuthorization: Bearer xyz\r\n\
             Cookie: session=1\r\nX-Trace: abc\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let c = request_context(&req(&head, Some("q=7&token=t")), &Redactor::default());
        assert_eq!(c.headers["Authorization"], REDACTED);
        assert_eq!(c.headers["Cookie"], REDACTED);
        assert_eq!(c.headers["X-Trace"], "abc");
        assert_eq!(
            c.request_values,
            json!({
                "query": {"q": "7", "token": REDACTED},
                "json": {"name": "ann", "password": REDACTED, "nested": {"api_key": REDACTED, "n": [1, 2]}}
            })
        );
        let e = &c.environ;
        assert_eq!(e["REMOTE_ADDR"], "10.0.0.7");
        assert_eq!(e["SERVER_NAME"], "example.com");
        assert_eq!(e["SERVER_PORT"], "8000");
        assert_eq!(e["PATH_INFO"], "/a b");
        assert_eq!(e["QUERY_STRING"], format!("q=7&token={REDACTED}"));
        assert_eq!(e["CONTENT_TYPE"], "application/json");
        assert_eq!(e["CONTENT_LENGTH"], body.len().to_string());
        assert_eq!(e["HTTP_AUTHORIZATION"], REDACTED);
        assert_eq!(e["HTTP_X_TRACE"], "abc");
        assert!(!e.contains_key("HTTP_CONTENT_TYPE"));
    }

    #[test]
    fn form_body_repeated_fields_and_truncation() {
        let head =
            "POST /f HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                    Content-Length: 100\r\n\r\na=1&a=2&passwd=x&b=hello+world";
        let c = request_context(&req(head, None), &Redactor::default());
        assert_eq!(
            c.request_values,
            json!({
                "query": {},
                "form": {"a": ["1", "2"], "passwd": REDACTED, "b": "hello world"},
                "body_truncated": true
            })
        );
        assert_eq!(c.environ["SERVER_NAME"], "h");
        assert_eq!(c.environ["SERVER_PORT"], "80");
        // A JSON body cut by the capture's bound is not kept (it could hold an unredacted secret).
        let cut = "POST /j HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{\"password\": \"hun";
        let c = request_context(&req(cut, None), &Redactor::default());
        assert_eq!(c.request_values["json"], Value::Null);
        assert_eq!(c.request_values["body_truncated"], true);
    }

    #[test]
    fn hosts() {
        assert_eq!(server(Some("[::1]:8080")), ("::1".into(), "8080".into()));
        assert_eq!(server(Some("a.b")), ("a.b".into(), "80".into()));
        assert_eq!(server(None), (String::new(), String::new()));
    }
}
