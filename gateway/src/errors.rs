//! The gateway's own answers: a small JSON body with the request id, or a
//! trailers-only gRPC status for gRPC requests. No internal detail leaks.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Why the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    /// The request is malformed: its framing, authority or path (400;
    /// the text says which, in a client's terms).
    BadRequest(&'static str),
    /// The route does not take this method (405): TRACE, unless allowed.
    MethodNotAllowed,
    /// No route matches (404).
    NoRoute,
    /// The default rule's service is not in the registry (404).
    UnknownService,
    /// Missing or wrong API key or token (401).
    Unauthorized,
    /// The rate limit is reached (429 + Retry-After).
    RateLimited(Duration),
    /// The concurrency limit is reached (503 + Retry-After).
    Overloaded,
    /// The body is too large (413).
    BodyTooLarge,
    /// No endpoint can take the request (503).
    NoEndpoint,
    /// The upstream failed (502).
    Upstream,
    /// No answer in time (504).
    Timeout,
    /// Retries were needed but the budget is spent (503).
    BudgetExhausted,
}

// === impl GatewayError ===

impl From<crate::body::BodyFault> for GatewayError {
    fn from(fault: crate::body::BodyFault) -> Self {
        match fault {
            crate::body::BodyFault::TooLarge => Self::BodyTooLarge,
            crate::body::BodyFault::Malformed => {
                Self::BadRequest("malformed or incomplete request body")
            }
        }
    }
}

impl GatewayError {
    fn status(self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoRoute | Self::UnknownService => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded | Self::NoEndpoint | Self::BudgetExhausted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Upstream => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::BadRequest(why) => why,
            Self::MethodNotAllowed => "method not allowed on this route",
            Self::NoRoute => "no route matches this request",
            Self::UnknownService => "no such service",
            Self::Unauthorized => "missing or invalid credentials",
            Self::RateLimited(_) => "rate limit exceeded",
            Self::Overloaded => "too many requests in flight",
            Self::BodyTooLarge => "request body too large",
            Self::NoEndpoint => "no healthy endpoint",
            Self::Upstream => "upstream failed",
            Self::Timeout => "upstream timed out",
            Self::BudgetExhausted => "upstream failing and retry budget exhausted",
        }
    }

    /// gRPC status code for gRPC callers.
    fn grpc_code(self) -> u16 {
        match self {
            Self::BadRequest(_) => 3,                   // INVALID_ARGUMENT
            Self::MethodNotAllowed => 12,               // UNIMPLEMENTED
            Self::NoRoute | Self::UnknownService => 12, // UNIMPLEMENTED
            Self::Unauthorized => 16,                   // UNAUTHENTICATED
            Self::RateLimited(_) | Self::Overloaded | Self::BodyTooLarge => 8, // RESOURCE_EXHAUSTED
            Self::Timeout => 4,                         // DEADLINE_EXCEEDED
            Self::NoEndpoint | Self::Upstream | Self::BudgetExhausted => 14, // UNAVAILABLE
        }
    }

    fn retry_after(self) -> Option<u64> {
        match self {
            Self::RateLimited(d) => Some(d.as_secs_f64().ceil().max(1.0) as u64),
            Self::Overloaded | Self::BudgetExhausted => Some(1),
            _ => None,
        }
    }

    /// The response, JSON or gRPC.
    pub fn response(self, request_id: &HeaderValue, grpc: bool) -> Response<Full<Bytes>> {
        let id = request_id.to_str().unwrap_or("");
        let mut res = if grpc {
            let mut r = Response::new(Full::new(Bytes::new()));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(self.grpc_code()));
            let msg = format!("{} (request id {id})", self.message()).replace(' ', "%20");
            if let Ok(v) = HeaderValue::from_str(&msg) {
                h.insert("grpc-message", v);
            }
            r
        } else {
            let body = serde_json::json!({ "error": self.message(), "request_id": id }).to_string();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = self.status();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        if let Some(secs) = self.retry_after() {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res.headers_mut()
            .insert(crate::headers::REQUEST_ID.clone(), request_id.clone());
        res
    }
}
