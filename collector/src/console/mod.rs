//! The web console (`GET /`): plain HTML, CSS and JavaScript embedded in the
//! binary, no build step and nothing fetched from elsewhere. It reads the same
//! HTTP API as everyone else (`/v1/query`, `/v1/histogram`, `/v1/context`,
//! `/v1/tail`, `/v1/topics`, `/v1/agents`, `/v1/groups`), with the token the user
//! gives it when `api.auth` is on.
//!
//! Log lines are attacker-controlled: the script only ever puts them into the page
//! as text (`textContent`), and every answer carries a Content-Security-Policy
//! that allows no inline script and nothing from other origins, so a line like
//! `<script>` or `"><img onerror=…>` is shown, never run.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// What the console's pages may load and run: their own files only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/`, `/console.js`, `/console.css`.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

/// The console's own files: open to anyone (they hold no data; the API calls
/// they make carry the user's token).
pub fn is_asset(path: &str) -> bool {
    matches!(path, "/" | "/console.js" | "/console.css")
}
