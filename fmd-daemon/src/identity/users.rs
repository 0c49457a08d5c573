//! Who made a request (Flask-MonitoringDashboard's `group_by`, without code in the app): an ordered list
//! of extractors over the request head, the first that finds a value wins. A header, a cookie, a query
//! parameter, a claim of a bearer JWT (decoded, not verified: fmd only groups by it), the basic-auth user
//! name (never the password), or a field of Flask's session cookie, which is signed but not encrypted, so
//! it is readable without the app's secret key (itsdangerous: `payload.timestamp.signature`, the payload
//! zlib-compressed when the cookie starts with `.`).

use std::io::Read as _;

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use serde::Deserialize;

/// Longest user value kept; longer ones are cut (at a character boundary).
pub const MAX_USER_LEN: usize = 256;
/// Most bytes a compressed session cookie may inflate to (Flask's cookies are < 4 KiB; this bounds a
/// zip bomb).
const MAX_SESSION_JSON: u64 = 64 * 1024;

/// One extractor, as written in `[users] extract = [...]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum Extractor {
    /// `{ from = "header", name = "X-User" }`
    Header { name: String },
    /// `{ from = "cookie", name = "user_id" }`
    Cookie { name: String },
    /// `{ from = "query", name = "user" }`
    Query { name: String },
    /// `{ from = "jwt", claim = "sub" }`: a claim of the `Authorization: Bearer` token.
    Jwt { claim: String },
    /// `{ from = "basic_auth" }`: the user name of `Authorization: Basic`.
    BasicAuth,
    /// `{ from = "flask_session", key = "_user_id" }` (Flask-Login); `cookie` is Flask's
    /// `SESSION_COOKIE_NAME`, `session` unless set.
    FlaskSession {
        key: String,
        #[serde(default = "default_session_cookie")]
        cookie: String,
    },
}

fn default_session_cookie() -> String {
    "session".to_owned()
}

/// `[users]`: the extractors, in order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsersConfig {
    pub extract: Vec<Extractor>,
}

impl Default for UsersConfig {
    fn default() -> Self {
        Self {
            // What identifies a user in most Flask apps with no configuration: Flask-Login's session
            // field, HTTP basic auth, a bearer JWT's subject. `extract = []` turns users off.
            extract: vec![
                Extractor::FlaskSession {
                    key: "_user_id".into(),
                    cookie: default_session_cookie(),
                },
                Extractor::BasicAuth,
                Extractor::Jwt {
                    claim: "sub".into(),
                },
            ],
        }
    }
}

/// What the extractors look at: the request's header fields and query string.
pub struct RequestParts<'a> {
    pub headers: &'a [httparse::Header<'a>],
    pub query: Option<&'a str>,
}

impl RequestParts<'_> {
    /// The values of every `name` field, in order.
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
            .collect()
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")
            .into_iter()
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('"'))
    }

    fn authorization(&self, scheme: &str) -> Option<&str> {
        self.header("authorization").into_iter().find_map(|v| {
            let (s, rest) = v.split_once(' ')?;
            s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
        })
    }
}

impl UsersConfig {
    /// The user of a request, from the first extractor that finds one.
    pub fn user(&self, parts: &RequestParts<'_>) -> Option<String> {
        self.extract
            .iter()
            .find_map(|e| e.extract(parts))
            .map(|v| bounded(&v))
    }
}

impl Extractor {
    pub fn extract(&self, parts: &RequestParts<'_>) -> Option<String> {
        let value = match self {
            Self::Header { name } => parts.header(name).first().map(|v| (*v).to_owned()),
            Self::Cookie { name } => parts.cookie(name).map(str::to_owned),
            Self::Query { name } => query_param(parts.query?, name),
            Self::Jwt { claim } => jwt_claim(parts.authorization("bearer")?, claim),
            Self::BasicAuth => basic_user(parts.authorization("basic")?),
            Self::FlaskSession { key, cookie } => session_field(parts.cookie(cookie)?, key),
        };
        value.filter(|v| !v.is_empty())
    }
}

fn bounded(v: &str) -> String {
    match v.char_indices().nth(MAX_USER_LEN) {
        Some((cut, _)) => v[..cut].to_owned(),
        None => v.to_owned(),
    }
}

/// `name`'s first value in a form-encoded query string (`+` is a space, `%xx` decoded).
fn query_param(query: &str, name: &str) -> Option<String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// A JSON value as a user name: strings as they are, numbers and booleans printed.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// base64url without padding, as JWTs and itsdangerous write it (padding tolerated).
fn base64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn jwt_claim(token: &str, claim: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    let json: serde_json::Value = serde_json::from_slice(&base64url(payload)?).ok()?;
    scalar(json.get(claim)?)
}

fn basic_user(credentials: &str) -> Option<String> {
    let decoded = STANDARD.decode(credentials).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(user, _password)| user.to_owned())
}

/// A field of Flask's session cookie (`SecureCookieSessionInterface`: itsdangerous `URLSafeTimedSerializer`
/// over Flask's tagged JSON).
fn session_field(cookie: &str, key: &str) -> Option<String> {
    let (compressed, rest) = match cookie.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, cookie),
    };
    let payload = base64url(rest.split('.').next()?)?;
    let json = if compressed {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(payload.as_slice())
            .take(MAX_SESSION_JSON)
            .read_to_end(&mut out)
            .ok()?;
        out
    } else {
        payload
    };
    let session: serde_json::Value = serde_json::from_slice(&json).ok()?;
    untag(session.get(key)?)
}

/// Flask's tagged JSON wraps non-JSON types in a one-key object (`{" u": "<uuid>"}`, `{" m": "<markup>"}`).
fn untag(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(map) if map.len() == 1 => {
            let (tag, inner) = map.iter().next()?;
            tag.starts_with(' ').then(|| scalar(inner)).flatten()
        }
        other => scalar(other),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn b64url(data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(data)
    }

    /// Extracts with `extract` from a request with `headers` and `query`.
    fn check(
        extract: Vec<Extractor>,
        headers: &[(&str, &str)],
        query: Option<&str>,
        expect: Option<&str>,
    ) {
        let fields: Vec<httparse::Header<'_>> = headers
            .iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect();
        let parts = RequestParts {
            headers: &fields,
            query,
        };
        assert_eq!(
            UsersConfig { extract }.user(&parts).as_deref(),
            expect,
            "{headers:?} {query:?}"
        );
    }

    fn header(name: &str) -> Extractor {
        Extractor::Header { name: name.into() }
    }

    #[test]
    fn headers_cookies_and_query_parameters() {
        check(
            vec![header("X-User")],
            &[("x-user", " alice ")],
            None,
            Some("alice"),
        );
        check(vec![header("X-User")], &[("x-user", "")], None, None);
        let cookie = vec![Extractor::Cookie { name: "uid".into() }];
        check(
            cookie.clone(),
            &[("Cookie", "a=1; uid=\"42\"; b=2")],
            None,
            Some("42"),
        );
        check(
            cookie.clone(),
            &[("Cookie", "a=1"), ("Cookie", "uid=7")],
            None,
            Some("7"),
        );
        check(cookie, &[("Cookie", "xuid=1")], None, None);
        let query = vec![Extractor::Query {
            name: "user".into(),
        }];
        check(
            query.clone(),
            &[],
            Some("a=1&user=b%C3%B6b+x&user=2"),
            Some("böb x"),
        );
        check(query.clone(), &[], Some("users=1"), None);
        check(query, &[], None, None);
    }

    #[test]
    fn authorization_schemes() {
        let token = format!(
            "{}.{}.sig",
            b64url(br#"{"alg":"HS256"}"#),
            b64url(br#"{"sub":"user-9","uid":12,"admin":true}"#)
        );
        let bearer = format!("Bearer {token}");
        let jwt = |claim: &str| {
            vec![Extractor::Jwt {
                claim: claim.into(),
            }]
        };
        check(
            jwt("sub"),
            &[("Authorization", &bearer)],
            None,
            Some("user-9"),
        );
        check(jwt("uid"), &[("Authorization", &bearer)], None, Some("12"));
        check(jwt("nope"), &[("Authorization", &bearer)], None, None);
        check(
            jwt("sub"),
            &[("Authorization", "Bearer not.a-jwt")],
            None,
            None,
        );
        check(jwt("sub"), &[("Authorization", "Basic eDp5")], None, None);
        let basic = vec![Extractor::BasicAuth];
        let creds = format!("basic {}", STANDARD.encode("carol:s3cret:with:colons"));
        check(
            basic.clone(),
            &[("authorization", &creds)],
            None,
            Some("carol"),
        );
        check(basic.clone(), &[("authorization", "Basic !!!")], None, None);
        check(basic, &[("authorization", &bearer)], None, None);
    }

    fn session_cookie(json: &str, compress: bool) -> String {
        // itsdangerous: base64url(payload) "." base64url(timestamp) "." base64url(signature).
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(json.as_bytes()).expect("zlib");
            format!(
                ".{}.Z1x2aA.c2lnbmF0dXJl",
                b64url(&z.finish().expect("zlib"))
            )
        } else {
            format!("{}.Z1x2aA.c2lnbmF0dXJl", b64url(json.as_bytes()))
        }
    }

    #[test]
    fn flask_session_fields() {
        let session = |key: &str| {
            vec![Extractor::FlaskSession {
                key: key.into(),
                cookie: "session".into(),
            }]
        };
        let plain = session_cookie(r#"{"_user_id":"17","_fresh":true}"#, false);
        check(
            session("_user_id"),
            &[("Cookie", &format!("session={plain}"))],
            None,
            Some("17"),
        );
        let long = format!(
            r#"{{"_user_id":"{}","pad":"{}"}}"#,
            "u".repeat(300),
            "x".repeat(500)
        );
        let zipped = session_cookie(&long, true);
        assert!(zipped.starts_with('.'));
        check(
            session("_user_id"),
            &[("Cookie", &format!("theme=dark; session={zipped}"))],
            None,
            Some(&"u".repeat(MAX_USER_LEN)),
        );
        let tagged = session_cookie(
            r#"{"uid":{" u":"5f1e0f5c-0c5e-4c3a-9d42-3c7b1f0e6a11"},"n":3}"#,
            false,
        );
        check(
            session("uid"),
            &[("Cookie", &format!("session={tagged}"))],
            None,
            Some("5f1e0f5c-0c5e-4c3a-9d42-3c7b1f0e6a11"),
        );
        check(
            session("n"),
            &[("Cookie", &format!("session={tagged}"))],
            None,
            Some("3"),
        );
        check(
            session("_user_id"),
            &[("Cookie", "session=garbage")],
            None,
            None,
        );
        check(
            session("_user_id"),
            &[("Cookie", "session=.eJxLTA.x.y")],
            None,
            None,
        );
        // Another cookie name (SESSION_COOKIE_NAME).
        let custom = vec![Extractor::FlaskSession {
            key: "_user_id".into(),
            cookie: "app_session".into(),
        }];
        check(
            custom,
            &[("Cookie", &format!("app_session={plain}"))],
            None,
            Some("17"),
        );
    }

    #[test]
    fn first_match_wins_and_config_parses() {
        let config: UsersConfig = toml::from_str(
            r#"extract = [
                { from = "header", name = "X-User" },
                { from = "basic_auth" },
                { from = "flask_session", key = "_user_id" },
            ]"#,
        )
        .expect("toml");
        let creds = format!("Basic {}", STANDARD.encode("dave:pw"));
        check(
            config.extract.clone(),
            &[("Authorization", &creds), ("X-User", "eve")],
            None,
            Some("eve"),
        );
        check(
            config.extract.clone(),
            &[("Authorization", &creds)],
            None,
            Some("dave"),
        );
        check(config.extract, &[], None, None);
        assert!(toml::from_str::<UsersConfig>(r#"extract = [{ from = "header" }]"#).is_err());
        assert!(toml::from_str::<UsersConfig>(r#"extract = [{ from = "magic" }]"#).is_err());
        assert_eq!(
            toml::from_str::<UsersConfig>("").expect("default"),
            UsersConfig::default()
        );
        assert_eq!(
            toml::from_str::<UsersConfig>("extract = []")
                .expect("off")
                .extract,
            vec![]
        );
    }
}
