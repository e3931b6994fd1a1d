//! The dashboard's pages at `/ui/`: plain HTML, CSS and JavaScript compiled
//! into the binary (no npm, no CDN), the same files for the registry and
//! the gateway's admin port. The page reads `data-server` to know which
//! API it is beside: the registry's (services, instances, history,
//! overrides) or the gateway's (its endpoints and their balancing figures).
//!
//! The headers keep it to itself: its scripts and styles only from the
//! same origin, no framing (a drain button under someone else's page),
//! no guessing of content types.

use axum::{
    Router,
    http::{HeaderName, HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// The routes `/ui`, `/ui/`, `/ui/app.js` and `/ui/app.css`; `server` is
/// `"registry"` or `"gateway"`.
pub fn router(server: &'static str) -> Router {
    let index = INDEX.replace("{{SERVER}}", server);
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(move || {
                let index = index.clone();
                async move { asset("text/html; charset=utf-8", index) }
            }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS.to_string()) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS.to_string()) }),
        )
}

fn asset(content_type: &'static str, body: String) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Small, and a new binary must not be served its old page.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}
