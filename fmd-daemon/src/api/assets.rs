//! The dashboard: web/dist embedded in the binary (rust-embed), served with the smallest encoding the
//! browser accepts (the build precompresses every text asset with brotli and gzip), ETags, immutable
//! caching of the content-hashed files under `assets/`, the SPA fallback to index.html, and a
//! `--base-path` prefix for running behind a reverse proxy.

use axum::{
    body::Body,
    extract::Extension,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
    Json, Router,
};
use rust_embed::Embed;

/// web/dist as the last `cargo xtask build` left it. `allow_missing`: the daemon compiles (and the API
/// works) before the UI was ever built; [`serve`] then says how to build it.
#[derive(Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../web/dist/"]
#[allow_missing = true]
#[exclude = "*.gz"]
#[exclude = "*.br"]
struct Dist;

/// The precompressed twins of [`Dist`]'s files (`x.js.br`, `x.js.gz`).
#[derive(Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../web/dist/"]
#[allow_missing = true]
#[include = "*.gz"]
#[include = "*.br"]
struct Compressed;

/// The prefix the dashboard and API are served under ("" or "/fmd"), for the pages' `<base href>`.
#[derive(Clone, Debug)]
pub struct BasePath(pub String);

/// The router under `base` ("" serves at the root); the dashboard answers every path the API does not.
pub fn mount(api: Router, base: &str) -> Router {
    // The fallback that serves the dashboard is part of `api` (behind its session guard).
    let app = api;
    if base.is_empty() {
        return app.layer(Extension(BasePath(String::new())));
    }
    let slash = format!("{base}/");
    let to = slash.clone();
    Router::new()
        // The bare prefix and the root redirect into the app, as a user typing the host expects.
        .route(
            base,
            axum::routing::get(move || async move { Redirect::permanent(&to) }),
        )
        // `nest` leaves the prefix with a trailing slash out: it is the app's home page.
        .route(&slash, axum::routing::get(serve))
        .nest(base, app)
        .fallback({
            let to = format!("{base}/");
            move || async move { Redirect::temporary(&to) }
        })
        .layer(Extension(BasePath(base.to_owned())))
}

/// GET of a dashboard file, or of any page of the single-page app (index.html).
pub async fn serve(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    base: Option<Extension<BasePath>>,
) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no API route {}", uri.path()) })),
        )
            .into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let base = base.map(|Extension(b)| b.0).unwrap_or_default();
    if let Some(file) = Dist::get(path).filter(|_| !path.is_empty() && path != "index.html") {
        return file_response(path, &file, &headers);
    }
    // A missing asset is a 404 (a stale page asking for an old bundle must not get HTML as script);
    // anything else is a page the app routes itself, endpoint names with dots included.
    if path.starts_with("assets/") || STATIC_EXTENSIONS.iter().any(|e| path.ends_with(e)) {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    index(&base)
}

const STATIC_EXTENSIONS: &[&str] = &[
    ".js", ".css", ".map", ".png", ".svg", ".ico", ".woff2", ".json",
];

fn file_response(path: &str, file: &rust_embed::EmbeddedFile, headers: &HeaderMap) -> Response {
    let etag = etag(&file.metadata.sha256_hash());
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let accepts = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (body, encoding) = ["br", "gzip"]
        .into_iter()
        .filter(|e| accepts_encoding(accepts, e))
        .find_map(|e| {
            let suffix = if e == "gzip" { "gz" } else { e };
            Compressed::get(&format!("{path}.{suffix}")).map(|c| (c.data, Some(e)))
        })
        .unwrap_or((file.data.clone(), None));
    // Vite puts a content hash in every file name under assets/: such a URL never changes content.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = Response::new(Body::from(body.into_owned()));
    let h = response.headers_mut();
    if let Ok(mime) = HeaderValue::from_str(file.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, mime);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(tag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, tag);
    }
    if let Some(encoding) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

/// True when `accept` (an Accept-Encoding value) allows `encoding` (not refused with `q=0`).
fn accepts_encoding(accept: &str, encoding: &str) -> bool {
    accept.split(',').any(|part| {
        let mut fields = part.split(';').map(str::trim);
        let name = fields.next().unwrap_or_default();
        let refused = fields.any(|f| {
            f.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        name.eq_ignore_ascii_case(encoding) && !refused
    })
}

fn etag(hash: &[u8; 32]) -> String {
    let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// index.html with its `<base href>` pointing at the base path, so the app's relative URLs (assets,
/// API calls, its own pages) resolve under the prefix; a page saying how to build the UI when the
/// binary was built without it.
fn index(base: &str) -> Response {
    let Some(file) = Dist::get("index.html") else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            NOT_BUILT,
        )
            .into_response();
    };
    let html = String::from_utf8_lossy(&file.data).replacen(
        "<base href=\"/\"",
        &format!("<base href=\"{}/\"", html_escape(base)),
        1,
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page names the hashed assets of this build: always revalidate it.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

const NOT_BUILT: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>fmd</title></head>\
<body style=\"font:15px system-ui;margin:3rem;max-width:40rem\"><h1>fmd: the dashboard was not built into this binary</h1>\
<p>The JSON API works (try <a href=\"api/health\">api/health</a>). To get the dashboard, build the daemon with \
<code>cargo xtask build</code>, which builds <code>web/</code> (needs Node.js and npm) before compiling \
fmd-daemon.</p></body></html>";

#[cfg(test)]
mod tests {
    use axum::{
        body::{to_bytes, Body},
        http::Request,
    };
    use tower::ServiceExt as _;

    use super::*;

    async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        app.clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response")
    }

    async fn text(response: Response) -> String {
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8_lossy(&body).into_owned()
    }

    fn app(base: &str) -> Router {
        // As api::router: the dashboard is the fallback of the API's routes.
        let api = Router::new()
            .route("/api/health", axum::routing::get(|| async { "ok" }))
            .fallback(serve);
        mount(api, base)
    }

    #[test]
    fn encodings_are_negotiated() {
        assert!(accepts_encoding("gzip, deflate, br", "br"));
        assert!(accepts_encoding("gzip;q=0.5", "gzip"));
        assert!(!accepts_encoding("gzip;q=0, br", "gzip"));
        assert!(!accepts_encoding("", "gzip"));
        assert!(!accepts_encoding("brotli", "br"));
    }

    #[tokio::test]
    async fn pages_fall_back_to_the_app_with_its_base() {
        for (base, page) in [
            ("", "/endpoint/api.x"),
            ("", "/"),
            ("/fmd", "/fmd/endpoint/api.x"),
            ("/fmd", "/fmd/"),
        ] {
            let app = app(base);
            let response = get(&app, page, &[]).await;
            assert!(!response.status().is_redirection(), "{page}");
            let built = Dist::get("index.html").is_some();
            let body = text(response).await;
            if built {
                assert!(
                    body.contains(&format!("<base href=\"{base}/\"")),
                    "{base}: {body}"
                );
            } else {
                assert!(body.contains("cargo xtask build"), "{body}");
            }
            // The API keeps answering under the base; unknown API paths are JSON 404s, not the app.
            let health = get(&app, &format!("{base}/api/health"), &[]).await;
            assert_eq!(health.status(), StatusCode::OK);
            let missing = get(&app, &format!("{base}/api/nope"), &[]).await;
            assert_eq!(missing.status(), StatusCode::NOT_FOUND);
            assert!(text(missing).await.contains("no API route"));
        }
    }

    #[tokio::test]
    async fn the_base_path_redirects_into_the_app() {
        let app = app("/fmd");
        for uri in ["/", "/fmd", "/elsewhere"] {
            let response = get(&app, uri, &[]).await;
            assert!(
                response.status().is_redirection(),
                "{uri}: {}",
                response.status()
            );
            assert_eq!(response.headers()[header::LOCATION], "/fmd/", "{uri}");
        }
    }

    #[tokio::test]
    async fn hashed_assets_are_precompressed_cached_and_revalidated() {
        // Only meaningful with the UI built in (cargo xtask build does it before compiling).
        let Some(asset) = Dist::iter().find(|p| p.starts_with("assets/") && p.ends_with(".js"))
        else {
            eprintln!("skipping: web/dist was not built into this test binary");
            return;
        };
        let app = app("");
        let uri = format!("/{asset}");
        let plain = get(&app, &uri, &[]).await;
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript"));
        assert!(plain.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable"));
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let etag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
        let plain_len = text(plain).await.len();

        let br = get(&app, &uri, &[("accept-encoding", "gzip, br")]).await;
        assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
        let gz = get(&app, &uri, &[("accept-encoding", "gzip")]).await;
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        let gz_len = to_bytes(gz.into_body(), usize::MAX).await.unwrap().len();
        assert!(gz_len * 2 < plain_len, "gzip {gz_len} of {plain_len}");

        let again = get(&app, &uri, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let missing = get(&app, "/assets/none-such.js", &[]).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
