//! Admission: which route takes the request, and whether it may go on.
//! The checks run in a fixed order and the first that fails answers: no
//! route (404), a method the route refuses (405), a default-rule service
//! the registry does not know (404), credentials (401), then a CORS
//! preflight is answered, then the rate limit (429), the concurrency limit
//! (503) and the declared body size (413). A check never reached spends
//! nothing: no rate-limit token, no concurrency permit.

use std::{borrow::Cow, time::Instant};

use http::{Method, Uri, header, request::Parts, uri::PathAndQuery};
use http_body_util::Either;
use tokio::sync::OwnedSemaphorePermit;

use super::{Answer, Served};
use crate::{
    app::{Gateway, Peer},
    authority::Authority,
    errors::GatewayError,
    headers,
    routes::Matched,
};

/// A request the route takes.
pub(super) struct Admitted {
    /// The route (or default rule) and its service.
    pub m: Matched,
    /// The request's authority, checked once: routed by, and forwarded as
    /// `Host` (a shared handle, so it outlives the header edits).
    pub authority: Option<Authority>,
    /// The route's concurrency permit, held until the request ends.
    pub _permit: Option<OwnedSemaphorePermit>,
}

/// What admission decided.
pub(super) enum Admission {
    /// On to the service.
    Admitted(Admitted),
    /// A CORS preflight, answered here.
    Preflight(Answer),
}

// === impl Gateway ===

impl Gateway {
    /// Runs the admission checks in order (see the module doc); the
    /// matched route goes into `served` as soon as there is one, so that
    /// refusals count against it.
    #[inline]
    pub(super) fn admit(
        &self,
        parts: &mut Parts,
        scan: &headers::Scan,
        peer: &Peer,
        served: &mut Served,
    ) -> Result<Admission, GatewayError> {
        let authority = Authority::of(parts, scan.host.as_ref(), scan.hosts)
            .map_err(|e| GatewayError::BadRequest(e.message()))?;
        let host = authority.as_ref().map_or("", |a| a.host());
        // The path as routes match it, and as the upstream receives it.
        if let Cow::Owned(normal) = crate::path::normalize(parts.uri.path())
            .map_err(|e| GatewayError::BadRequest(e.message()))?
        {
            parts.uri = with_path(&parts.uri, normal)?;
        }
        let table = self.routes.load();
        let Some(m) = table.find(&parts.method, host, parts.uri.path(), &parts.headers) else {
            return Err(GatewayError::NoRoute);
        };
        served.route = Some(m.route.clone());
        if parts.method == Method::TRACE && !m.route.spec.allow_trace {
            return Err(GatewayError::MethodNotAllowed);
        }
        if m.default_rule
            && !self.known_default_service(&m.service, table.default_rule_max_services)
        {
            return Err(GatewayError::UnknownService);
        }
        if !authorized(&m, parts) {
            return Err(GatewayError::Unauthorized);
        }
        if let Some(preflight) = crate::cors::preflight(&m, parts) {
            return Ok(Admission::Preflight(Box::new(preflight.map(Either::Right))));
        }
        let permit = self.limit(&m, parts, peer, scan.content_length)?;
        Ok(Admission::Admitted(Admitted {
            m,
            authority,
            _permit: permit,
        }))
    }

    /// The route's rate and concurrency limits, then the body limit on the
    /// declared length; the concurrency permit, if the route has a limit.
    #[inline]
    fn limit(
        &self,
        m: &Matched,
        parts: &Parts,
        peer: &Peer,
        declared: Option<u64>,
    ) -> Result<Option<OwnedSemaphorePermit>, GatewayError> {
        if let Some(limiter) = &m.route.state.limiter {
            let key = client_key(limiter.header.as_ref(), parts, peer);
            if let Err(wait) = limiter.acquire(&key, Instant::now()) {
                return Err(GatewayError::RateLimited(wait));
            }
        }
        let permit = match &m.route.state.shedder {
            Some(s) => Some(s.try_acquire().ok_or(GatewayError::Overloaded)?),
            None => None,
        };
        let max = self.limits.max_body;
        if max > 0 && declared.is_some_and(|n| n > max) {
            return Err(GatewayError::BodyTooLarge);
        }
        Ok(permit)
    }
}

fn authorized(m: &Matched, parts: &Parts) -> bool {
    let spec = &m.route.spec;
    if spec.api_keys.is_empty() && spec.bearer_tokens.is_empty() {
        return true;
    }
    let key_ok = !spec.api_keys.is_empty()
        && parts
            .headers
            .get(spec.api_key_header.as_str())
            .is_some_and(|v| {
                spec.api_keys
                    .iter()
                    .any(|k| constant_eq(k.as_bytes(), v.as_bytes()))
            });
    let bearer_ok = !spec.bearer_tokens.is_empty()
        && parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| {
                spec.bearer_tokens
                    .iter()
                    .any(|k| constant_eq(k.as_bytes(), t.as_bytes()))
            });
    key_ok || bearer_ok
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

fn client_key(header: Option<&http::HeaderName>, parts: &Parts, peer: &Peer) -> String {
    match header {
        Some(h) => parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        None => peer.addr.ip().to_string(),
    }
}

/// `uri` with its path replaced by `path` (its normal form) and its query
/// kept.
fn with_path(uri: &Uri, path: String) -> Result<Uri, GatewayError> {
    let mut target = path;
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).map_err(|_| GatewayError::BadRequest("invalid path"))?);
    Uri::from_parts(parts).map_err(|_| GatewayError::BadRequest("invalid path"))
}
