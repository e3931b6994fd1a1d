//! The request path, in named steps: `admit` (route, method, credentials,
//! limits: the first failing check answers), `prepare` (headers, upstream
//! path, service, deadline, then the body, read whole for replay or
//! streamed) and `attempts` (pick an endpoint locally, send once, retry
//! what is safe to retry). [`Gateway::respond`] runs them and
//! records what the request used: metrics, the access log, its span.

mod admit;
mod attempts;
mod prepare;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header, request::Parts};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use switchyard_client::balance::InFlight;
use tracing::Instrument;

use self::{
    admit::Admission,
    attempts::{Attempt, Timing},
    prepare::ReadBody,
};
use crate::{
    app::{Gateway, Peer},
    endpoints::ServiceState,
    errors::GatewayError,
    headers,
    http1::client,
    pool::{GiveBack, ParkDirect},
    timer::Sleep,
};

/// A response body: an upstream's (counted in flight until it ends) or ours.
pub type ProxyBody = Either<Tracked, Full<Bytes>>;

/// An answer on its way to the client, boxed from where it is made: it
/// passes through every step of the request (attempt, attempts, forward,
/// respond, the connection's writer), and a response with its body is
/// over 300 bytes, copied by `memcpy` at each of some fifteen moves,
/// about 430 instructions per request by callgrind, where the box costs
/// one allocation and its free (about 60).
pub type Answer = Box<Response<ProxyBody>>;

/// An upstream response body that holds its endpoint's in-flight count
/// until the last frame, so streams count as load for as long as they run,
/// and gives its HTTP/1.1 connection back to the pool once read to the end.
#[derive(Debug)]
pub struct Tracked {
    inner: Upstreamed,
    _in_flight: InFlight,
}

/// A response body from either kind of upstream connection.
#[derive(Debug)]
enum Upstreamed {
    /// From hyper's client (HTTP/2, streamed request bodies, upgrades),
    /// with the HTTP/1.1 connection to give back at its end.
    Hyper(Incoming, Option<GiveBack>),
    /// Read by this task from a direct HTTP/1.1 connection ([`crate::http1::client`]),
    /// which parks the connection itself.
    Direct(client::ResponseBody<ParkDirect>),
}

/// A request body as the client connection delivers it.
#[derive(Debug)]
pub enum Inbound {
    /// Still arriving, through hyper's server.
    Streamed(Incoming),
    /// Read whole ([`crate::http1::server`]).
    Whole(Bytes),
}

/// What a request ended up using, for metrics and the access log.
#[derive(Debug)]
struct Served {
    route: Option<Arc<crate::routes::Route>>,
    service: Option<Arc<ServiceState>>,
    endpoint: Option<Arc<str>>,
    attempts: u32,
    /// When the last attempt ended (a clock reading the request's duration
    /// can use instead of its own).
    done: Option<Instant>,
    /// The request's span.
    span: tracing::Span,
}

// === impl Served ===

impl Served {
    /// Records a field of the request's span, if a subscriber wants it
    /// (a disabled span still looks the field up by name).
    fn note(&self, field: &str, value: &dyn tracing::Value) {
        if !self.span.is_disabled() {
            self.span.record(field, value);
        }
    }

    /// The answer in the route's and the service's metrics.
    fn record(&self, status: StatusCode, elapsed: Duration) {
        match &self.route {
            Some(route) => route.state.metrics.record(status, elapsed),
            None => unmatched().record(status, elapsed),
        }
        if let Some(service) = &self.service {
            service.duration.record(elapsed.as_secs_f64());
        }
    }

    /// The access log line.
    fn log(
        &self,
        id: &HeaderValue,
        method: &http::Method,
        uri: &http::Uri,
        status: StatusCode,
        elapsed: Duration,
        peer: &Peer,
    ) {
        tracing::info!(
            target: "access",
            request_id = id.to_str().unwrap_or(""),
            method = %method,
            path = uri.path(),
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            route = self.route.as_ref().map_or("", |r| &*r.name),
            service = self.service.as_ref().map_or("", |s| &*s.name),
            endpoint = self.endpoint.as_deref().unwrap_or(""),
            attempts = self.attempts,
            client = %peer.addr.ip(),
        );
    }
}

/// Who asked and when, for the request's steps.
struct Caller<'a> {
    peer: &'a Peer,
    /// The request id.
    id: &'a HeaderValue,
    start: Instant,
    /// A sleep of the gateway's timer, lent for the tries' timeouts.
    sleep: Option<&'a mut Sleep>,
}

/// Metric handles for requests no route matched.
fn unmatched() -> &'static crate::routes::RouteMetrics {
    static UNMATCHED: std::sync::OnceLock<crate::routes::RouteMetrics> = std::sync::OnceLock::new();
    UNMATCHED.get_or_init(|| crate::routes::RouteMetrics::new(crate::routes::UNMATCHED))
}

// === impl Tracked ===

impl Body for Tracked {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.inner {
            Upstreamed::Hyper(body, conn) => {
                let frame = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None) = frame {
                    if let Some(conn) = conn.take() {
                        conn.complete();
                    }
                }
                frame.map_err(Into::into)
            }
            Upstreamed::Direct(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Upstreamed::Hyper(body, _) => body.is_end_stream(),
            Upstreamed::Direct(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Upstreamed::Hyper(body, _) => body.size_hint(),
            Upstreamed::Direct(body) => body.size_hint(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A length-delimited body whose last byte was sent: the server may
        // stop polling before the final `None`. (A direct body parks its
        // connection as soon as its last byte is read.)
        if let Upstreamed::Hyper(body, conn) = &mut self.inner {
            if let Some(conn) = conn.take() {
                if body.is_end_stream() {
                    conn.complete();
                }
            }
        }
    }
}

impl Tracked {
    /// An upgraded answer's body, for its tunnel to hold: it keeps the
    /// endpoint counted in flight, and its connection is never given back
    /// to a pool (upgraded, it is the tunnel's).
    fn into_tunnel(mut self) -> Self {
        if let Upstreamed::Hyper(_, conn) = &mut self.inner {
            drop(conn.take());
        }
        self
    }

    /// The header lines of a direct answer, if they pass as they came.
    pub fn raw_fields(&self) -> Option<&client::RawFields> {
        match &self.inner {
            Upstreamed::Direct(body) => body.raw_fields(),
            Upstreamed::Hyper(..) => None,
        }
    }

    /// An upstream's answer for the client (see [`Answer`]), its body
    /// holding the endpoint's in-flight count.
    fn answer(res: Response<Upstreamed>, in_flight: InFlight) -> Answer {
        Box::new(res.map(|inner| {
            Either::Left(Tracked {
                inner,
                _in_flight: in_flight,
            })
        }))
    }
}

// === impl Gateway ===

impl Gateway {
    /// Handles one request from hyper's server; never fails (errors become
    /// responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let (mut parts, body) = req.into_parts();
        let (mut res, id) = self
            .respond(&mut parts, Inbound::Streamed(body), &peer, None)
            .await;
        res.headers_mut().insert(headers::REQUEST_ID.clone(), id);
        Ok(*res)
    }

    /// Answers one request (errors become responses). The answer goes out
    /// with the request id returned beside it as its `x-request-id`, in
    /// place of any it has (the caller writes it: on the gateway's own
    /// HTTP/1.1 path straight into the head, sparing a header map). A
    /// caller with an idle sleep of this gateway's timer lends it (`sleep`)
    /// for the attempts' timeouts.
    pub async fn respond(
        &self,
        parts: &mut Parts,
        body: Inbound,
        peer: &Peer,
        sleep: Option<&mut Sleep>,
    ) -> (Answer, HeaderValue) {
        let start = Instant::now();
        let scan = headers::Scan::of(&parts.headers);
        let id = headers::request_id(&scan);
        let grpc = scan.grpc;
        // Kept for the access log only (the request moves on).
        let logged = self
            .access_log
            .then(|| (parts.method.clone(), parts.uri.clone()));
        // Fields recorded as the request goes; a span costs nothing when
        // no subscriber wants it (the level is off by default).
        let span = tracing::debug_span!(
            "request",
            route = tracing::field::Empty,
            service = tracing::field::Empty,
            endpoint = tracing::field::Empty,
            attempt = tracing::field::Empty,
        );
        let mut served = Served {
            route: None,
            service: None,
            endpoint: None,
            attempts: 0,
            done: None,
            span: span.clone(),
        };
        // Pinned where it is made: the span wraps a reference to it, not a
        // copy (moved into `Instrumented`, the request's whole future was
        // copied once per request, ~800 instructions).
        let caller = Caller {
            peer,
            id: &id,
            start,
            sleep,
        };
        // The span wraps the request only when a subscriber wants it:
        // wrapping moves the request's whole future into `Instrumented`, a
        // copy per request that a disabled span must not cost.
        let result = if span.is_disabled() {
            self.forward(parts, &scan, body, caller, &mut served).await
        } else {
            self.forward(parts, &scan, body, caller, &mut served)
                .instrument(span)
                .await
        };
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                let mut res = Box::new(e.response(&id, grpc).map(Either::Right));
                // What follows a malformed request on its connection is not
                // to be trusted either (nginx closes too). HTTP/2 has no
                // such field: its streams are framed apart.
                if matches!(e, GatewayError::BadRequest(_)) && parts.version < Version::HTTP_2 {
                    res.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                res
            }
        };
        let elapsed = served
            .done
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(start);
        served.record(res.status(), elapsed);
        if let Some((method, uri)) = logged {
            served.log(&id, &method, &uri, res.status(), elapsed, peer);
        }
        (res, id)
    }

    /// The request's steps: admit, prepare, read the body, the attempts.
    async fn forward(
        &self,
        parts: &mut Parts,
        scan: &headers::Scan,
        body: Inbound,
        caller: Caller<'_>,
        served: &mut Served,
    ) -> Result<Answer, GatewayError> {
        let Caller {
            peer,
            id,
            start,
            sleep,
        } = caller;
        let admitted = match self.admit(parts, scan, peer, served)? {
            Admission::Admitted(admitted) => admitted,
            Admission::Preflight(res) => return Ok(res),
        };
        served.note("route", &&*admitted.m.route.name);
        let whole = matches!(body, Inbound::Whole(_));
        let prepared = self.prepare(parts, scan, &admitted, peer, id, (start, whole));
        served.note("service", &&*prepared.service.name);
        served.service = Some(prepared.service.clone());
        let read = match body {
            Inbound::Whole(whole) => ReadBody::whole(whole, start),
            Inbound::Streamed(body) => {
                self.read_body(body, scan.content_length, scan.grpc, start)
                    .await?
            }
        };
        let mut attempt = Attempt {
            parts,
            path: &prepared.path,
            added: &prepared.added,
            body: Some(read.body),
            raw_answer: prepared.raw_answer,
            grpc: scan.grpc,
            upgrade: prepared.upgrade,
        };
        let timing = Timing {
            deadline: prepared.deadline,
            ready: read.ready,
            sleep,
        };
        let result = self
            .attempts(&admitted.m, &prepared.service, &mut attempt, timing, served)
            .await;
        // A body that broke while it streamed failed the upstream request
        // (which never saw it whole): the client hears why.
        match read.fault.as_ref().and_then(|f| f.get()) {
            Some(&e) => Err(e.into()),
            None => result,
        }
    }
}

/// Takes the hop-by-hop fields out of an answer (an upgrade keeps its
/// own).
fn clean_response(res: &mut Response<ProxyBody>) {
    let upgrade = res.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(res.headers_mut(), upgrade);
}

#[cfg(test)]
mod admission;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::{attempts::backoff, prepare::grpc_timeout};

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(
            grpc_timeout(&HeaderValue::from_static("250m")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            grpc_timeout(&HeaderValue::from_static("2S")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(grpc_timeout(&HeaderValue::from_static("x")), None);
        // The spec's largest value is taken; more digits, a sign or none
        // are not (a client's value must not overflow the deadline).
        assert_eq!(
            grpc_timeout(&HeaderValue::from_static("99999999H")),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in ["9223372036854775807S", "123456789m", "+5S", "S", ""] {
            assert_eq!(grpc_timeout(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_under_the_cap() {
        let b = backoff(Duration::from_millis(10), Duration::from_millis(100), 1);
        assert!(b >= Duration::from_millis(5) && b <= Duration::from_millis(10));
        assert!(
            backoff(Duration::from_millis(10), Duration::from_millis(100), 9)
                <= Duration::from_millis(100)
        );
    }
}
