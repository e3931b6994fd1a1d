//! The attempts: pick an endpoint locally, send once within the try's
//! deadline, and retry what is safe to retry (a request that provably
//! never reached its endpoint, or an idempotent or retryable one whose
//! body can be sent again) within the retry budget and the request's
//! deadline.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    HeaderValue, Method, Request, StatusCode, Uri, header, request::Parts, uri::PathAndQuery,
};
use http_body_util::{Either, Full};
use rand::Rng;

use super::{Answer, Served, Tracked, Upstreamed, clean_response};
use crate::{
    app::Gateway,
    body::{RequestBody, UpstreamBody, upstream_body},
    endpoints::{Endpoint, Outcome, ServiceState, Transport},
    errors::GatewayError,
    headers,
    http1::client,
    pool::Reach,
    routes::{HashKey, Matched, RouteSpec},
    timer::Sleep,
    upstream::reach,
};

/// The request as each attempt sends it.
pub(super) struct Attempt<'a> {
    pub parts: &'a Parts,
    /// The upstream path and query.
    pub path: &'a PathAndQuery,
    /// The gateway's forwarding fields.
    pub added: &'a headers::Added,
    /// The body: whole (sent again on a retry) or streamed (sent once).
    pub body: Option<RequestBody>,
    /// The answer goes to the gateway's own HTTP/1.1 writer and nothing on
    /// the way reads its headers (no gRPC status, no CORS): a direct
    /// answer's header lines may pass as they came ([`client::RawFields`]).
    pub raw_answer: bool,
    /// A gRPC request (its UNAVAILABLE is retried like a 503).
    pub grpc: bool,
    /// The client's side of an upgrade (WebSocket), taken by the answer.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// The clock of a request's attempts.
pub(super) struct Timing<'a> {
    /// The request's deadline (its route's timeout, or a shorter
    /// `grpc-timeout`).
    pub deadline: Instant,
    /// When the body was at hand from the start: the request's start,
    /// which stands in for the first pick's clock reading.
    pub ready: Option<Instant>,
    /// A sleep of the gateway's timer, lent for the tries' timeouts.
    pub sleep: Option<&'a mut Sleep>,
}

/// One try's clock.
struct Try<'a> {
    /// When it is sent (the pick's clock reading).
    sent: Instant,
    /// When it times out.
    deadline: Instant,
    sleep: Option<&'a mut Sleep>,
}

/// One attempt's request: whole bodies to HTTP/1.1 endpoints go over a
/// direct connection, the rest through hyper's client.
// hyper's requests are boxed: the enum is moved into the attempt's future
// several times, and unboxed it would carry the size of a whole request on
// the direct path too (an allocation on hyper's path costs less than those
// copies on the direct one).
enum Outgoing {
    /// Over a direct HTTP/1.1 connection ([`client`]).
    Direct(Bytes),
    /// Through hyper's client, on the HTTP/1.1 pool (streamed bodies,
    /// upgrades).
    H1(Box<Request<UpstreamBody>>),
    /// Through hyper's client over HTTP/2.
    H2(Box<Request<UpstreamBody>>),
    /// Through the service's client for the endpoint's TLS protocol.
    Tls(Box<Request<UpstreamBody>>),
}

// === impl Gateway ===

impl Gateway {
    /// Tries endpoints until one answers or retrying is no longer safe or
    /// allowed; records the endpoint, the attempts and when the last one
    /// ended in `served`.
    pub(super) async fn attempts(
        &self,
        m: &Matched,
        service: &ServiceState,
        attempt: &mut Attempt<'_>,
        mut timing: Timing<'_>,
        served: &mut Served,
    ) -> Result<Answer, GatewayError> {
        let spec = &m.route.spec;
        let key = hash_key(m, attempt.parts, attempt.added);
        let mut tries = Tries {
            may_retry_reached: idempotent(&attempt.parts.method) || spec.retry.retryable,
            tried: Vec::new(),
            last: GatewayError::NoEndpoint,
            last_response: None,
        };
        service.deposit();
        for n in 0..spec.retry.attempts {
            if n > 0 {
                // Time passes here (a backoff): the request's end is read
                // afresh unless another attempt ends it.
                served.done = None;
                let last = tries.last;
                if let Err(e) = self
                    .before_retry(service, spec, n, timing.deadline, last)
                    .await
                {
                    tries.last = e;
                    break;
                }
            }
            // One clock reading serves the pick, the timeout and the send
            // (the first attempt's is the request's start, if it had its
            // body at hand).
            let now = match timing.ready {
                Some(start) if n == 0 => start,
                _ => Instant::now(),
            };
            let Some(endpoint) = pick(service, key.as_deref(), &tries.tried, now) else {
                break;
            };
            let Some(body) = attempt.next_body() else {
                break;
            };
            served.endpoint = Some(endpoint.id.clone());
            served.note("endpoint", &&*endpoint.id);
            served.note("attempt", &(n + 1));
            let outgoing = Outgoing::of(body, attempt, &endpoint);
            // The try's deadline: one addition and a comparison (the
            // time left to the request's deadline would be a subtraction).
            let try_ = Try {
                sent: now,
                deadline: (now + spec.per_try_timeout).min(timing.deadline),
                sleep: timing.sleep.as_deref_mut(),
            };
            let (outcome, ended) = self
                .send_once(service, &endpoint, attempt, outgoing, try_)
                .await;
            served.done = Some(ended);
            let attempts_left = n + 1 < spec.retry.attempts;
            match tries.settle(m, attempt, &endpoint.id, outcome, attempts_left) {
                Then::Answer(res) => {
                    served.attempts = n + 1;
                    return Ok(res);
                }
                Then::Retry => {}
                Then::Stop => break,
            }
        }
        served.attempts = u32::try_from(tries.tried.len()).unwrap_or(u32::MAX);
        tries.end()
    }

    /// The budget and backoff before retry `n`; Err says why not to retry.
    async fn before_retry(
        &self,
        service: &ServiceState,
        spec: &RouteSpec,
        n: u32,
        deadline: Instant,
        last: GatewayError,
    ) -> Result<(), GatewayError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(GatewayError::Timeout);
        }
        if !service.withdraw() {
            metrics::counter!("switchyard_gateway_retry_budget_exhausted_total").increment(1);
            return Err(if last == GatewayError::Upstream {
                GatewayError::BudgetExhausted
            } else {
                last
            });
        }
        metrics::counter!("switchyard_gateway_retries_total").increment(1);
        let wait = backoff(spec.retry.backoff, spec.retry.backoff_max, n)
            .min(deadline.saturating_duration_since(now));
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// One attempt on one endpoint, recorded in its counters and breaker;
    /// how it went and when it ended. An answer holds the endpoint's
    /// in-flight count in its body.
    async fn send_once(
        &self,
        service: &ServiceState,
        endpoint: &Endpoint,
        attempt: &Attempt<'_>,
        outgoing: Outgoing,
        try_: Try<'_>,
    ) -> (Sent, Instant) {
        let Try {
            sent,
            deadline: try_deadline,
            sleep,
        } = try_;
        let grpc = attempt.grpc;
        let in_flight = endpoint.load.start();
        endpoint.breaker.on_send(sent);
        let key = &endpoint.pool_key;
        // Pinned where it stands: the timeouts below take it by reference,
        // not by a copy of the whole exchange. The answer is boxed as soon
        // as it comes (see [`Answer`]).
        let exchange = std::pin::pin!(async {
            match outgoing {
                Outgoing::Direct(body) => {
                    let head = client::RequestHead {
                        method: &attempt.parts.method,
                        path: attempt.path,
                        headers: &attempt.parts.headers,
                        extra: attempt.added.fields(),
                        authority: key.authority(),
                        raw_answer: attempt.raw_answer,
                    };
                    match self.upstream.h1.send_direct(key, head, &body, sent).await {
                        Ok(res) => Ok(Tracked::answer(res.map(Upstreamed::Direct), in_flight)),
                        Err(e) => Err((AttemptError::H1(e), None)),
                    }
                }
                // hyper's futures are boxed: held inline, they made
                // every attempt's future (and the request's, which
                // holds it) several times the direct exchange's size.
                Outgoing::H1(request) => {
                    match Box::pin(self.upstream.h1.send(key, *request)).await {
                        Ok((res, conn)) => Ok(Tracked::answer(
                            res.map(|body| Upstreamed::Hyper(body, Some(conn))),
                            in_flight,
                        )),
                        Err((e, unsent)) => {
                            Err((AttemptError::H1(e), unsent.map(Request::into_body)))
                        }
                    }
                }
                Outgoing::H2(request) => match Box::pin(self.upstream.h2.request(*request)).await {
                    Ok(res) => Ok(Tracked::answer(
                        res.map(|body| Upstreamed::Hyper(body, None)),
                        in_flight,
                    )),
                    Err(e) => Err((AttemptError::H2(e), None)),
                },
                Outgoing::Tls(request) => {
                    let Transport::Tls(client) = &endpoint.transport else {
                        return Err((AttemptError::NoTls, Some(request.into_body())));
                    };
                    match Box::pin(client.request(*request)).await {
                        Ok(res) => Ok(Tracked::answer(
                            res.map(|body| Upstreamed::Hyper(body, None)),
                            in_flight,
                        )),
                        Err(e) => Err((AttemptError::H2(e), None)),
                    }
                }
            }
        });
        let outcome = match sleep {
            Some(sleep) => sleep.timeout_at(try_deadline, exchange).await,
            None => self.timer().timeout_at(try_deadline, exchange).await,
        };
        let done = Instant::now();
        let latency = done.saturating_duration_since(sent);
        let (kind, sent_result) = classify(outcome.ok(), grpc, service, endpoint);
        service.record(endpoint, kind, latency, done);
        (sent_result, done)
    }
}

/// What the attempts so far leave behind.
struct Tries {
    /// The method is idempotent or the route retries anything: an attempt
    /// that may have reached its endpoint may be sent again.
    may_retry_reached: bool,
    /// The endpoints tried, in order.
    tried: Vec<Arc<str>>,
    /// Why the last attempt failed.
    last: GatewayError,
    /// The last answer with a retryable status, given to the client if no
    /// retry happens after all (budget, deadline).
    last_response: Option<Answer>,
}

/// What follows an attempt.
enum Then {
    Answer(Answer),
    Retry,
    Stop,
}

// === impl Tries ===

impl Tries {
    /// After an attempt on `endpoint`: its answer, or whether another
    /// attempt may follow.
    fn settle(
        &mut self,
        m: &Matched,
        attempt: &mut Attempt<'_>,
        endpoint: &Arc<str>,
        outcome: Sent,
        attempts_left: bool,
    ) -> Then {
        let replayable = attempt.replayable();
        let retries = match outcome {
            Sent::Answer {
                res,
                grpc_unavailable,
            } => {
                let retry_status = grpc_unavailable
                    || m.route.spec.retry.statuses.contains(&res.status().as_u16());
                if !(retry_status && self.may_retry_reached && replayable && attempts_left) {
                    return Then::Answer(answer(m, attempt, res));
                }
                self.last = GatewayError::Upstream;
                let mut res = res;
                clean_response(&mut res);
                self.last_response = Some(res);
                true
            }
            Sent::Failed { reach, unsent } => {
                self.last = GatewayError::Upstream;
                let never = reach == Reach::Never;
                // A streamed body that was never written (connect refused,
                // say) goes to the next endpoint after all.
                let replayable = match unsent {
                    Some(Either::Left(streamed)) if never && !replayable => {
                        attempt.body = Some(Either::Left(streamed));
                        true
                    }
                    _ => replayable,
                };
                replayable && (never || self.may_retry_reached)
            }
            Sent::TimedOut => {
                self.last = GatewayError::Timeout;
                replayable && self.may_retry_reached
            }
        };
        self.tried.push(endpoint.clone());
        if retries { Then::Retry } else { Then::Stop }
    }

    /// The client's answer once no attempt answered: the last retryable
    /// answer if the last failure was the upstream's, else the failure.
    fn end(self) -> Result<Answer, GatewayError> {
        match self.last_response {
            Some(res)
                if matches!(
                    self.last,
                    GatewayError::Upstream | GatewayError::BudgetExhausted
                ) =>
            {
                Ok(res)
            }
            _ => Err(self.last),
        }
    }
}

/// Another endpoint if there is one, else one already tried (Envoy's
/// "previous hosts" predicate falls back the same way).
fn pick(
    service: &ServiceState,
    key: Option<&[u8]>,
    tried: &[Arc<str>],
    now: Instant,
) -> Option<Arc<Endpoint>> {
    let picked = service
        .pick(key, tried, now)
        .or_else(|| service.pick(key, &[], now).filter(|_| !tried.is_empty()));
    picked.map(|(endpoint, _panic)| endpoint)
}

/// Methods a retry may send again after they may have reached the
/// endpoint (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The client's answer from an upstream's: a WebSocket upgrade tunnelled,
/// or the answer with its CORS fields, hop-by-hop fields taken out.
fn answer(m: &Matched, attempt: &mut Attempt<'_>, mut res: Answer) -> Answer {
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = attempt.upgrade.take() {
            let upstream = hyper::upgrade::on(&mut *res);
            // The tunnel counts as the endpoint's load while it lasts; the
            // upgraded connection is its own, never given back to a pool.
            let body = std::mem::replace(res.body_mut(), Either::Right(Full::new(Bytes::new())));
            if let Either::Left(tracked) = body {
                crate::websocket::tunnel(client, upstream, tracked.into_tunnel());
            }
            clean_response(&mut res);
            return res;
        }
    }
    crate::cors::decorate(m, attempt.parts, res.headers_mut());
    clean_response(&mut res);
    res
}

// === impl Outgoing ===

impl Outgoing {
    fn of(body: RequestBody, attempt: &Attempt<'_>, endpoint: &Endpoint) -> Self {
        let upgrade = attempt.upgrade.is_some();
        match body {
            Either::Right(whole) if !upgrade && !endpoint.h2 && !endpoint.tls() => {
                Self::Direct(whole)
            }
            body => {
                let request = Box::new(upstream_request(attempt, endpoint, upstream_body(body)));
                if endpoint.tls() {
                    Self::Tls(request)
                } else if upgrade || !endpoint.h2 {
                    Self::H1(request)
                } else {
                    Self::H2(request)
                }
            }
        }
    }
}

/// How an attempt ended (`None`: timed out), for the endpoint's counters
/// and breaker, and for the retry decision.
fn classify(
    result: Option<Exchanged>,
    grpc: bool,
    service: &ServiceState,
    endpoint: &Endpoint,
) -> (Outcome, Sent) {
    match result {
        Some(Ok(res)) => {
            let status = res.status();
            let grpc_unavailable =
                grpc && res.headers().get("grpc-status").is_some_and(|v| v == "14");
            let kind = match status {
                StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Outcome::Http5xx,
                _ if grpc_unavailable => Outcome::Grpc,
                _ => Outcome::Success,
            };
            (
                kind,
                Sent::Answer {
                    res,
                    grpc_unavailable,
                },
            )
        }
        Some(Err((e, unsent))) => {
            let reach = e.reach();
            let never = reach == Reach::Never;
            tracing::debug!(service = %service.name, instance = %endpoint.id, error = %e, never_reached = never, "attempt failed");
            (
                if never {
                    Outcome::Connect
                } else {
                    Outcome::Reset
                },
                Sent::Failed { reach, unsent },
            )
        }
        None => (Outcome::Timeout, Sent::TimedOut),
    }
}

/// An exchange's end before its timeout: the answer, or why there was
/// none and the body if it was never written.
type Exchanged = Result<Answer, (AttemptError, Option<UpstreamBody>)>;

/// Why an attempt got no answer, from either pool; formatted only if logged.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    H1(crate::pool::SendError),
    /// From hyper-util's client: HTTP/2, or TLS.
    #[error("{0}: {source:?}", source = std::error::Error::source(.0))]
    H2(hyper_util::client::legacy::Error),
    #[error(
        "the instance is served over TLS, but this gateway has no mtls_* files to reach it with"
    )]
    NoTls,
}

impl AttemptError {
    fn reach(&self) -> Reach {
        match self {
            Self::H1(e) => e.reach(),
            Self::H2(e) => reach(e),
            Self::NoTls => Reach::Never,
        }
    }
}

/// How one attempt ended.
enum Sent {
    /// An answer.
    Answer {
        res: Answer,
        /// It is a gRPC UNAVAILABLE.
        grpc_unavailable: bool,
    },
    /// A transport failure.
    Failed {
        /// Whether it provably never reached the endpoint.
        reach: Reach,
        /// The body, when the request was never written.
        unsent: Option<UpstreamBody>,
    },
    /// No answer within the per-try timeout.
    TimedOut,
}

// === impl Attempt ===

impl Attempt<'_> {
    /// The body for the next attempt: a copy of a buffered one, or the
    /// streamed one the first time only.
    fn next_body(&mut self) -> Option<RequestBody> {
        match &self.body {
            Some(Either::Right(whole)) => Some(Either::Right(whole.clone())),
            Some(Either::Left(_)) => self.body.take(),
            None => None,
        }
    }

    /// Whether another attempt could send the body again.
    fn replayable(&self) -> bool {
        matches!(self.body, Some(Either::Right(_)))
    }
}

fn hash_key(m: &Matched, parts: &Parts, added: &headers::Added) -> Option<Vec<u8>> {
    match m.route.hash_key.as_ref()? {
        HashKey::Header(h) => parts.headers.get(h).map(|v| v.as_bytes().to_vec()),
        HashKey::Path => Some(parts.uri.path().as_bytes().to_vec()),
        HashKey::Query(q) => parts.uri.query().and_then(|query| {
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == q).then(|| v.as_bytes().to_vec())
            })
        }),
        HashKey::Ip => Some(added.forwarded_for().as_bytes().to_vec()),
    }
}

fn upstream_request(
    attempt: &Attempt<'_>,
    endpoint: &Endpoint,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let (parts, path) = (attempt.parts, attempt.path);
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if endpoint.tls() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = Some(endpoint.pool_key.authority().clone());
    uri.path_and_query = Some(path.clone());
    let uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = parts.headers.clone();
    attempt.added.apply(req.headers_mut());
    if endpoint.h2 {
        // HTTP/2 carries the authority as :authority; a Host header would
        // contradict it.
        req.headers_mut().remove(header::HOST);
        *req.version_mut() = http::Version::HTTP_2;
    } else {
        *req.version_mut() = http::Version::HTTP_11;
        // HTTP/1.1 requires a Host (hyper's connection adds none); the
        // "upstream" policy removed the client's.
        if !req.headers().contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(endpoint.pool_key.authority().as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
    }
    req
}

pub(super) fn backoff(base: Duration, max: Duration, n: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << (n - 1).min(16)).min(max);
    let half = ceiling / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}
