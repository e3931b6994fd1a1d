//! CORS per route: preflight answers and response headers.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request::Parts};
use http_body_util::Full;

use crate::routes::{CorsSpec, Matched};

fn allowed_origin<'a>(cors: &CorsSpec, origin: &'a HeaderValue) -> Option<&'a HeaderValue> {
    let o = origin.to_str().ok()?;
    cors.allow_origins
        .iter()
        .any(|a| a == "*" || a == o)
        .then_some(origin)
}

/// Answers a CORS preflight (OPTIONS with Access-Control-Request-Method)
/// on a route with CORS; None for everything else.
pub fn preflight(m: &Matched, parts: &Parts) -> Option<Response<Full<Bytes>>> {
    let cors = m.route.spec.cors.as_ref()?;
    if parts.method != Method::OPTIONS
        || !parts
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| allowed_origin(cors, o))
    else {
        *res.status_mut() = StatusCode::FORBIDDEN;
        return Some(res);
    };
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    let join = |v: &[String]| HeaderValue::from_str(&v.join(", ")).ok();
    let methods = if cors.allow_methods.is_empty() {
        Some(HeaderValue::from_static(
            "GET, POST, PUT, DELETE, PATCH, OPTIONS",
        ))
    } else {
        join(&cors.allow_methods)
    };
    if let Some(v) = methods {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = join(&cors.allow_headers).filter(|_| !cors.allow_headers.is_empty()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if !cors.max_age.is_zero() {
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(cors.max_age.as_secs()),
        );
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    Some(res)
}

/// Adds CORS headers to an upstream response for an allowed origin.
pub fn decorate(m: &Matched, parts: &Parts, h: &mut HeaderMap) {
    let Some(cors) = m.route.spec.cors.as_ref() else {
        return;
    };
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| allowed_origin(cors, o))
    else {
        return;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}
