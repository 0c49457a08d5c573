//! The page at `/`: an interim overview (endpoints and latest requests) that reads the JSON API from the
//! browser. It is embedded in the binary, so the daemon serves it with nothing installed beside it.

use axum::response::Html;

static PAGE: &str = include_str!("../../../web/index.html");

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
