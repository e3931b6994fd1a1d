//! Preparing a request for its upstream once admitted: the headers it
//! goes with, its upstream path, its service and its deadline; then its
//! body, read whole for replay when it fits, or streamed.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, header, request::Parts, uri::PathAndQuery};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::{Body as _, Incoming};

use super::admit::Admitted;
use crate::{
    app::{Gateway, Peer},
    body::{BodyFault, FaultSlot, RequestBody},
    endpoints::ServiceState,
    errors::GatewayError,
    headers,
    routes::{Matched, upstream_path},
};

/// What an admitted request is sent with.
pub(super) struct Prepared {
    /// The gateway's forwarding fields.
    pub added: headers::Added,
    /// The upstream path and query.
    pub path: PathAndQuery,
    pub service: Arc<ServiceState>,
    /// The request's deadline.
    pub deadline: Instant,
    /// The client's side of an upgrade.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The answer may keep its upstream header lines (see
    /// [`super::attempts::Attempt`]).
    pub raw_answer: bool,
}

/// The body as the attempts send it.
pub(super) struct ReadBody {
    pub body: RequestBody,
    /// The request's start, when the body was at hand from it.
    pub ready: Option<Instant>,
    /// Where a streamed body notes why it broke.
    pub fault: Option<FaultSlot>,
}

// === impl ReadBody ===

impl ReadBody {
    /// A body read whole by the client connection (its length was
    /// declared): at hand from the request's `start`, which stands in for
    /// the first pick's clock reading.
    pub(super) fn whole(body: Bytes, start: Instant) -> Self {
        Self {
            body: Either::Right(body),
            ready: Some(start),
            fault: None,
        }
    }
}

// === impl Gateway ===

impl Gateway {
    /// Headers, upstream path, service and deadline of an admitted request
    /// that started at `start`; `whole` when its body was read whole by
    /// the client connection.
    #[inline]
    pub(super) fn prepare(
        &self,
        parts: &mut Parts,
        scan: &headers::Scan,
        admitted: &Admitted,
        peer: &Peer,
        id: &HeaderValue,
        (start, whole): (Instant, bool),
    ) -> Prepared {
        let m = &admitted.m;
        // Upgrades come only through hyper's server (the gateway's own
        // HTTP/1.1 path hands them over).
        let upgrade = !whole && headers::is_upgrade(&parts.headers);
        let raw_answer = whole && !scan.grpc && m.route.spec.cors.is_none();
        let client_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let added = prepare_headers(parts, scan, admitted, peer, id, upgrade);
        let original = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let path = match upstream_path(m, original) {
            Cow::Borrowed(_) => parts.uri.path_and_query().cloned(),
            Cow::Owned(p) => PathAndQuery::try_from(p).ok(),
        }
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut deadline = start + m.route.spec.timeout;
        if scan.grpc {
            if let Some(t) = parts.headers.get("grpc-timeout").and_then(grpc_timeout) {
                // 99999999H is past any deadline a route can have.
                if let Some(d) = start.checked_add(t) {
                    deadline = deadline.min(d);
                }
            }
        }
        Prepared {
            added,
            path,
            service: self.matched_service(m),
            deadline,
            upgrade: client_upgrade,
            raw_answer,
        }
    }

    /// The matched service's state. The default rule's service comes from
    /// the path; a route's own is fixed, so it is looked up by name once.
    #[inline]
    fn matched_service(&self, m: &Matched) -> Arc<ServiceState> {
        if m.default_rule {
            return self.service(&m.service);
        }
        m.route
            .state
            .service
            .get_or_init(|| self.service(&m.service))
            .clone()
    }

    /// A body hyper's server delivers: bodies that fit the replay buffer
    /// are read first, so that any retry can send them again; others
    /// stream once.
    pub(super) async fn read_body(
        &self,
        body: Incoming,
        declared: Option<u64>,
        grpc: bool,
        start: Instant,
    ) -> Result<ReadBody, GatewayError> {
        let replay = self.limits.replay;
        let limit = if self.limits.max_body > 0 {
            self.limits.max_body as usize
        } else {
            usize::MAX
        };
        // A body at hand from the start: the request's start stands in for
        // the first pick's clock reading (one reading fewer).
        let (body, ready, fault) = match body {
            // Most requests (GET): nothing to read or collect.
            body if body.is_end_stream() => (Either::Right(Bytes::new()), Some(start), None),
            body if declared.is_some_and(|n| n <= replay as u64) => {
                let collected = Limited::new(body, replay.max(1))
                    .collect()
                    .await
                    .map_err(|e| GatewayError::from(BodyFault::of(&*e)))?;
                (Either::Right(collected.to_bytes()), None, None)
            }
            body => {
                // Only a body that streams on can break after this point:
                // the slot (an allocation) is made for those alone.
                let slot = FaultSlot::default();
                let grace = if grpc {
                    Duration::from_millis(5)
                } else {
                    Duration::ZERO
                };
                let body = crate::body::take_ready(body, replay, limit, grace, &slot).await?;
                (body, None, Some(slot))
            }
        };
        Ok(ReadBody { body, ready, fault })
    }
}

/// Hop-by-hop fields out (unless an upgrade keeps its own), the route's
/// `Host` policy applied, and the gateway's forwarding fields worked out.
fn prepare_headers(
    parts: &mut Parts,
    scan: &headers::Scan,
    admitted: &Admitted,
    peer: &Peer,
    id: &HeaderValue,
    upgrade: bool,
) -> headers::Added {
    let (m, authority) = (&admitted.m, admitted.authority.as_ref());
    let h = &mut parts.headers;
    if upgrade || scan.hop_by_hop {
        headers::strip_hop_by_hop(h, upgrade);
    }
    let added = headers::Added::new(scan, &peer.ip, peer.tls, authority.map(|a| &a.value), id);
    match m.route.spec.host_header.as_str() {
        "preserve" => {
            // Stripping hop-by-hop fields leaves `Host` as it was: it is
            // the authority unless that came from the target (absolute
            // form, `:authority`), which then replaces it.
            if let Some(a) = authority.filter(|a| a.from_target || scan.host.is_none()) {
                h.insert(header::HOST, a.value.clone());
            }
        }
        "upstream" => {
            h.remove(header::HOST);
        }
        literal => {
            if let Ok(v) = HeaderValue::from_str(literal) {
                h.insert(header::HOST, v);
            }
        }
    }
    added
}

/// `grpc-timeout`: at most eight digits and a unit (H, M, S, m, u, n), as
/// gRPC's HTTP/2 protocol spells it; anything else is ignored (the route's
/// timeout holds), so no client value can overflow a deadline.
pub(super) fn grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}
