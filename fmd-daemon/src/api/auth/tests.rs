//! The guard, login, CSRF, roles, the local credential, setup and the accounts API, through the router
//! as a browser or the CLI would call them.

use std::{net::SocketAddr, path::PathBuf};

use axum::{
    body::{to_bytes, Body},
    extract::ConnectInfo,
    http::{header, HeaderMap, Method, Request, StatusCode},
    Router,
};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::{is_public, COOKIE};
use crate::{
    api::{router, test_support::LOCAL_TOKEN, AppState},
    security::{password, rate_limit::MAX_FAILURES},
    store::{users, Store},
};

struct App {
    _dir: tempfile::TempDir,
    router: Router,
    state: AppState,
    store: Store,
}

fn app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("fmd.duckdb")).expect("open");
    let state = AppState::new(store.reader().expect("reader"));
    App {
        _dir: dir,
        router: router(state.clone()),
        state,
        store,
    }
}

impl App {
    fn with_user(self, name: &str, password: &str, admin: bool) -> Self {
        let hash = password::hash(password).expect("hash");
        users::add_user(self.store.connection(), name, &hash, admin, 1, false).expect("add");
        self
    }
}

/// What came back: status, headers and the body as JSON (`Null` when it is not JSON).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// A request as a client sends it.
#[derive(Clone)]
struct Call {
    method: Method,
    uri: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    from: Option<SocketAddr>,
}

fn call(method: Method, uri: &str) -> Call {
    Call {
        method,
        uri: uri.to_owned(),
        headers: vec![],
        body: None,
        from: None,
    }
}

impl Call {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn from(mut self, ip: &str) -> Self {
        self.from = Some(format!("{ip}:40000").parse().expect("addr"));
        self
    }

    /// With the session's cookie and CSRF token.
    fn session(self, session: &Session) -> Self {
        self.header("cookie", &format!("other=1; {COOKIE}={}", session.id))
            .header("x-csrf-token", &session.csrf)
    }

    fn bearer(self) -> Self {
        self.header("authorization", &format!("Bearer {LOCAL_TOKEN}"))
    }

    async fn send(self, app: &App) -> Answer {
        let mut request = Request::builder().method(self.method).uri(&self.uri);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let body = match &self.body {
            Some(v) => {
                request = request.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).expect("request");
        if let Some(from) = self.from {
            request.extensions_mut().insert(ConnectInfo(from));
        }
        let response = app.router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

struct Session {
    id: String,
    csrf: String,
}

async fn login(app: &App, username: &str, password: &str) -> Session {
    let answer = call(Method::POST, "/api/login")
        .json(json!({"username": username, "password": password}))
        .send(app)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let cookie = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
    let id = cookie
        .strip_prefix(&format!("{COOKIE}="))
        .and_then(|rest| rest.split(';').next())
        .expect("session cookie")
        .to_owned();
    Session {
        id,
        csrf: answer.body["csrf_token"].as_str().expect("csrf").to_owned(),
    }
}

/// Every `.route("...")` path in the API's source files: a route added anywhere in `api` is checked
/// below without anyone listing it.
fn routes() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let pattern = regex::Regex::new(r#"\.route\(\s*"([^"]+)""#).expect("regex");
    let mut files = vec![dir];
    let mut paths = vec![];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read");
            paths.extend(pattern.captures_iter(&text).map(|c| c[1].to_owned()));
        }
    }
    paths.sort();
    paths.dedup();
    // Parameters get sample values.
    let param = regex::Regex::new(r"\{\*[^}]+\}|\{[^}]+\}").expect("regex");
    paths
        .iter()
        .map(|p| {
            param
                .replace_all(
                    p,
                    |c: &regex::Captures<'_>| {
                        if c[0].starts_with("{*") {
                            "a/b"
                        } else {
                            "x"
                        }
                    },
                )
                .into_owned()
        })
        .collect()
}

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

#[tokio::test]
async fn every_route_needs_a_session() {
    let app = app().with_user("alice", "alice password", true);
    let routes = routes();
    for known in ["/api/requests", "/api/users", "/api/users/x", "/api/logout"] {
        assert!(
            routes.iter().any(|r| r == known),
            "{known} not found in {routes:?}"
        );
    }
    // Also paths no route serves (the fallback).
    let paths = routes
        .iter()
        .map(String::as_str)
        .chain(["/some/page", "/api/nothing", "/api"]);
    let mut checked = 0;
    for path in paths {
        if is_public(path) {
            continue;
        }
        for method in METHODS {
            for attempt in [
                call(method.clone(), path),
                // A cookie the daemon never issued.
                call(method.clone(), path).header("cookie", &format!("{COOKIE}=forged")),
            ] {
                let answer = attempt.send(&app).await;
                if path.starts_with("/api") {
                    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
                    assert!(answer.body["error"].is_string(), "{method} {path}");
                } else {
                    assert_eq!(answer.status, StatusCode::FOUND, "{method} {path}");
                    assert_eq!(
                        answer.headers[header::LOCATION],
                        "/login",
                        "{method} {path}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 100, "only {checked} calls");
}

#[tokio::test]
async fn public_paths() {
    let app = app();
    for path in [
        "/api/health",
        "/assets/index-1234.js",
        "/favicon.svg",
        "/login",
        "/setup",
    ] {
        assert!(is_public(path), "{path}");
    }
    for path in [
        "/",
        "/api/users",
        "/api/health/x",
        "/loginx",
        "/assetsx",
        "/api/logout",
    ] {
        assert!(!is_public(path), "{path}");
    }
    let answer = call(Method::GET, "/api/health").send(&app).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = call(Method::GET, "/api/session").send(&app).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["setup_required"], true);
}

#[tokio::test]
async fn login_then_read() {
    let app = app().with_user("alice", "alice password", true);
    let answer = call(Method::POST, "/api/login")
        .json(json!({"username": "alice", "password": "alice password"}))
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["username"], "alice");
    assert_eq!(answer.body["admin"], true);
    let csrf = answer.body["csrf_token"].as_str().expect("csrf");
    assert_eq!(csrf.len(), 64);
    let cookie = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        ["HttpOnly", "SameSite=Strict", "Path=/"],
        "{cookie}"
    );
    let session = login(&app, "alice", "alice password").await;
    let answer = call(Method::GET, "/api/requests")
        .session(&session)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = call(Method::GET, "/api/session")
        .session(&session)
        .send(&app)
        .await;
    assert_eq!(
        answer.body,
        json!({"username": "alice", "admin": true, "csrf_token": session.csrf})
    );
    // Logging out ends the session.
    let answer = call(Method::POST, "/api/logout")
        .session(&session)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .contains("Max-Age=0"));
    let answer = call(Method::GET, "/api/requests")
        .session(&session)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cookie_is_secure_behind_tls() {
    let app = app().with_user("alice", "alice password", false);
    for (header, value) in [
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=1.2.3.4;proto=https"),
    ] {
        let answer = call(Method::POST, "/api/login")
            .header(header, value)
            .json(json!({"username": "alice", "password": "alice password"}))
            .send(&app)
            .await;
        let cookie = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
        assert!(cookie.ends_with("; Path=/; Secure"), "{cookie}");
    }
}

#[tokio::test]
async fn cookie_path_and_redirect_follow_the_base_path() {
    let app = app().with_user("alice", "alice password", false);
    let nested = Router::new().nest("/fmd", app.router.clone());
    let send = |request: Request<Body>| nested.clone().oneshot(request);
    for uri in ["/fmd", "/fmd/api/requests"] {
        let response = send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        if uri == "/fmd" {
            assert_eq!(response.status(), StatusCode::FOUND);
            assert_eq!(response.headers()[header::LOCATION], "/fmd/login");
        } else {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
    }
    let response = send(
        Request::post("/fmd/api/login")
            .body(Body::from(
                json!({"username": "alice", "password": "alice password"}).to_string(),
            ))
            .expect("request"),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii");
    assert!(cookie.ends_with("; Path=/fmd/"), "{cookie}");
}

#[tokio::test]
async fn bad_logins() {
    let app = app().with_user("alice", "alice password", true);
    for (i, body) in [
        json!({"username": "alice", "password": "wrong password"}),
        json!({"username": "nobody", "password": "alice password"}),
        json!({"username": "alice", "password": ""}),
        json!({"username": "alice", "password": "x".repeat(5000)}),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = call(Method::POST, "/api/login")
            .from(&format!("10.0.0.{i}"))
            .json(body.clone())
            .send(&app)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(answer.body, json!({"error": "wrong username or password"}));
        assert!(!answer.headers.contains_key(header::SET_COOKIE));
    }
    let answer = call(Method::POST, "/api/login")
        .json(json!({"user": "alice"}))
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body["error"]
        .as_str()
        .expect("error")
        .starts_with("bad request body"));
}

#[tokio::test]
async fn logins_are_rate_limited_per_address_and_per_username() {
    let app =
        app()
            .with_user("alice", "alice password", true)
            .with_user("bob", "bob password", false);
    let attempt = |user: &str, password: &str, ip: &str| {
        call(Method::POST, "/api/login")
            .from(ip)
            .json(json!({"username": user, "password": password}))
    };
    // One address guessing alice's password.
    for _ in 0..MAX_FAILURES {
        let answer = attempt("alice", "guess guess", "10.0.0.1").send(&app).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    // The address is blocked, even with the right password and for another account.
    for (user, password) in [("alice", "alice password"), ("bob", "bob password")] {
        let answer = attempt(user, password, "10.0.0.1").send(&app).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{user}");
        let wait: u64 = answer.headers[header::RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&wait), "{wait}");
    }
    // So is alice's name from anywhere (a distributed guess), but not bob from elsewhere.
    let answer = attempt("alice", "alice password", "10.0.0.2")
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let answer = attempt("bob", "bob password", "10.0.0.2").send(&app).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn state_changes_need_the_csrf_token() {
    let app = app().with_user("alice", "alice password", true);
    let session = login(&app, "alice", "alice password").await;
    let cookie = format!("{COOKIE}={}", session.id);
    let change = || {
        call(Method::POST, "/api/users")
            .json(json!({"username": "carol", "password": "carol password"}))
            .header("cookie", &cookie)
    };
    for attempt in [
        change(),
        change().header("x-csrf-token", ""),
        change().header("x-csrf-token", &session.csrf[1..]),
        change().header("x-csrf-token", &session.csrf.to_uppercase()),
    ] {
        let answer = attempt.send(&app).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert!(answer.body["error"]
            .as_str()
            .expect("error")
            .contains("X-CSRF-Token"));
    }
    let answer = change()
        .header("x-csrf-token", &session.csrf)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    // Every state-changing route but login and setup asks for it, before anything else.
    for path in routes() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            if ["/api/login", "/api/setup"].contains(&path.as_str()) || is_public(&path) {
                continue;
            }
            let answer = call(method.clone(), &path)
                .header("cookie", &cookie)
                .send(&app)
                .await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
        }
    }
    // Logout too: a page elsewhere cannot log the user out.
    let answer = call(Method::POST, "/api/logout")
        .header("cookie", &cookie)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn guests_read_but_change_nothing() {
    let app = app().with_user("alice", "alice password", true).with_user(
        "guest",
        "guest password",
        false,
    );
    let guest = login(&app, "guest", "guest password").await;
    let answer = call(Method::GET, "/api/endpoints")
        .session(&guest)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        call(Method::GET, "/api/session")
            .session(&guest)
            .send(&app)
            .await
            .body["admin"],
        false
    );
    // Accounts are for admins, even to look.
    let answer = call(Method::GET, "/api/users")
        .session(&guest)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    for path in routes() {
        if ["/api/login", "/api/setup", "/api/logout"].contains(&path.as_str()) || is_public(&path)
        {
            continue;
        }
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let answer = call(method.clone(), &path)
                .session(&guest)
                .json(json!({"level": 3}))
                .send(&app)
                .await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
            assert!(answer.body["error"]
                .as_str()
                .expect("error")
                .contains("guests"));
        }
    }
    let answer = call(Method::POST, "/api/logout")
        .session(&guest)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_local_credential_is_an_admin_without_csrf() {
    let app = app();
    let answer = call(Method::GET, "/api/stats").bearer().send(&app).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = call(Method::POST, "/api/users")
        .bearer()
        .json(json!({"username": "dave", "password": "dave password", "admin": true}))
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["username"], "dave");
    assert_eq!(answer.body["admin"], true);
    for wrong in ["Bearer nope", "Bearer ", "Basic abc", LOCAL_TOKEN] {
        let answer = call(Method::GET, "/api/stats")
            .header("authorization", wrong)
            .send(&app)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    // Without a local credential (before the daemon wrote one) no bearer token works.
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, "Bearer ".parse().expect("value"));
    assert!(super::identify(&super::Auth::default(), &headers).is_err());
}

#[tokio::test]
async fn accounts_api() {
    let app = app().with_user("alice", "alice password", true);
    let admin = login(&app, "alice", "alice password").await;
    let add = |body: Value| call(Method::POST, "/api/users").session(&admin).json(body);
    let answer = add(json!({"username": "bob", "password": "bob password"}))
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body["admin"], false);
    for (body, status) in [
        (
            json!({"username": "bob", "password": "bob password"}),
            StatusCode::CONFLICT,
        ),
        (
            json!({"username": "b b", "password": "bob password"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"username": "carl", "password": "short"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"username": "carl"}), StatusCode::BAD_REQUEST),
    ] {
        let answer = add(body.clone()).send(&app).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(answer.body["error"].is_string());
    }
    let answer = call(Method::GET, "/api/users")
        .session(&admin)
        .send(&app)
        .await;
    let listed: Vec<(String, bool)> = answer
        .body
        .as_array()
        .expect("list")
        .iter()
        .map(|u| {
            assert!(u["created_at"].is_string());
            assert!(u.get("password_hash").is_none());
            (
                u["username"].as_str().expect("name").to_owned(),
                u["admin"] == true,
            )
        })
        .collect();
    assert_eq!(listed, [("alice".into(), true), ("bob".into(), false)]);

    // Bob logs in; promoting him applies to his live session.
    let bob = login(&app, "bob", "bob password").await;
    let answer = call(Method::PUT, "/api/users/bob")
        .session(&admin)
        .json(json!({"admin": true}))
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        call(Method::GET, "/api/users")
            .session(&bob)
            .send(&app)
            .await
            .status,
        StatusCode::OK
    );
    // A new password ends his sessions; the old password stops working.
    let answer = call(Method::PUT, "/api/users/bob")
        .session(&admin)
        .json(json!({"password": "bob's new password"}))
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        call(Method::GET, "/api/requests")
            .session(&bob)
            .send(&app)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let answer = call(Method::POST, "/api/login")
        .from("10.1.1.1")
        .json(json!({"username": "bob", "password": "bob password"}))
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let bob = login(&app, "bob", "bob's new password").await;
    // Removing him ends his session; the last admin cannot go.
    let answer = call(Method::DELETE, "/api/users/bob")
        .session(&admin)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(Method::GET, "/api/requests")
            .session(&bob)
            .send(&app)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for (method, body, status) in [
        (Method::DELETE, None, StatusCode::CONFLICT),
        (
            Method::PUT,
            Some(json!({"admin": false})),
            StatusCode::CONFLICT,
        ),
    ] {
        let mut attempt = call(method, "/api/users/alice").session(&admin);
        if let Some(body) = body {
            attempt = attempt.json(body);
        }
        let answer = attempt.send(&app).await;
        assert_eq!(answer.status, status);
        assert!(answer.body["error"]
            .as_str()
            .expect("error")
            .contains("last admin"));
    }
    let answer = call(Method::DELETE, "/api/users/bob")
        .session(&admin)
        .send(&app)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn setup_token_works_once() {
    let app = app();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fmd.duckdb");
    // `prepare` writes a new local credential; the router's stays (set once).
    super::prepare(&app.state, &db, "http://127.0.0.1:9876", "")
        .await
        .expect("prepare");
    let token = super::lock(&app.state.auth.setup_token)
        .clone()
        .expect("setup open");
    assert!(crate::security::LocalToken::read(&db).is_some());
    let setup = |token: &str, user: &str| {
        call(Method::POST, "/api/setup")
            .json(json!({"token": token, "username": user, "password": "first password"}))
    };
    let answer = setup("wrong", "eve").send(&app).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = setup(&token, "b a d").send(&app).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let answer = setup(&token, "root").send(&app).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["username"], "root");
    assert_eq!(answer.body["admin"], true);
    assert!(answer.headers.contains_key(header::SET_COOKIE));
    let answer = setup(&token, "mallory").send(&app).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    let users = users::users(app.store.connection()).expect("users");
    assert_eq!(users.len(), 1);
    assert!(users[0].admin);
    login(&app, "root", "first password").await;
    // With an account, a daemon start opens no setup.
    super::prepare(&app.state, &db, "http://127.0.0.1:9876", "")
        .await
        .expect("prepare");
    assert!(super::lock(&app.state.auth.setup_token).is_none());
    let answer = call(Method::GET, "/api/session").send(&app).await;
    assert_eq!(answer.body["setup_required"], false);
}
