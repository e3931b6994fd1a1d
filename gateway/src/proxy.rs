//! The request path: match a route, check limits, pick an endpoint locally,
//! forward, retry what is safe to retry, and answer.

use std::{
    borrow::Cow,
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header, request::Parts,
    uri::PathAndQuery,
};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use rand::Rng;
use switchyard_client::{View, balance::InFlight};
use tokio::sync::Notify;

use crate::{
    authority::Authority,
    body::{BodyFault, FaultSlot, RequestBody, UpstreamBody, upstream_body},
    endpoints::{Endpoint, Outcome, ServiceSettings, ServiceState},
    errors::GatewayError,
    headers,
    http1::client,
    pool::Reach,
    pool::{GiveBack, ParkDirect},
    routes::{HashKey, Matched, RouteTable, upstream_path},
    timer::Sleep,
    upstream::{Upstream, reach},
};

/// A response body: an upstream's (counted in flight until it ends) or ours.
pub type ProxyBody = Either<Tracked, Full<Bytes>>;

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
    /// Read by this task from a direct HTTP/1.1 connection ([`crate::h1`]),
    /// which parks the connection itself.
    Direct(client::ResponseBody<ParkDirect>),
}

/// A request body as the client connection delivers it.
#[derive(Debug)]
pub enum Inbound {
    /// Still arriving, through hyper's server.
    Streamed(Incoming),
    /// Read whole ([`crate::front`]).
    Whole(Bytes),
}

/// Limits of the request path.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body (0: none).
    pub max_body: u64,
    /// Bodies up to this are buffered for replay.
    pub replay: usize,
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    /// The route table in force.
    pub routes: ArcSwap<RouteTable>,
    services: RwLock<HashMap<Arc<str>, Arc<ServiceState>>>,
    /// The upstream pools.
    pub upstream: Upstream,
    settings: ServiceSettings,
    limits: Limits,
    /// The latest registry view (the default rule checks it).
    pub view: ArcSwap<View>,
    /// Woken when a service is first used, so the control plane follows it.
    pub new_service: Notify,
    /// Request-header deadlines and per-try timeouts.
    pub timer: crate::timer::Coarse,
    access_log: bool,
}

/// What a request ended up using, for metrics and the access log.
#[derive(Debug, Default)]
struct Served {
    route: Option<Arc<crate::routes::Route>>,
    service: Option<Arc<ServiceState>>,
    endpoint: Option<Arc<str>>,
    attempts: u32,
    /// When the last attempt ended (a clock reading the request's duration
    /// can use instead of its own).
    done: Option<Instant>,
}

/// Metric handles for requests no route matched.
fn unmatched() -> &'static crate::routes::RouteMetrics {
    static UNMATCHED: std::sync::OnceLock<crate::routes::RouteMetrics> = std::sync::OnceLock::new();
    UNMATCHED.get_or_init(|| crate::routes::RouteMetrics::new(crate::routes::UNMATCHED))
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's IP as a header value, made once per connection
    /// (`X-Forwarded-For` needs it on every request).
    pub ip: HeaderValue,
}

impl Peer {
    /// The peer of a connection from `addr`.
    pub fn new(addr: SocketAddr, tls: bool) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { addr, tls, ip }
    }
}

struct Attempt<'a> {
    parts: &'a Parts,
    path: &'a PathAndQuery,
    added: &'a headers::Added,
    body: Option<RequestBody>,
    /// The answer goes to the gateway's own HTTP/1.1 writer and nothing on
    /// the way reads its headers (no gRPC status, no CORS): a direct
    /// answer's header lines may pass as they came ([`client::RawFields`]).
    raw_answer: bool,
}

/// One attempt's request: whole bodies to HTTP/1.1 endpoints go over a
/// direct connection, the rest through hyper's client.
// hyper's request is boxed: the enum is moved into the attempt's future
// several times, and unboxed it would carry the size of a whole request on
// the direct path too (an allocation on hyper's path costs less than those
// copies on the direct one).
enum Outgoing {
    Direct(Bytes),
    Hyper(Box<Request<UpstreamBody>>, bool),
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
    /// The header lines of a direct answer, if they pass as they came.
    pub fn raw_fields(&self) -> Option<&client::RawFields> {
        match &self.inner {
            Upstreamed::Direct(body) => body.raw_fields(),
            Upstreamed::Hyper(..) => None,
        }
    }

    fn response(res: Response<Upstreamed>, in_flight: InFlight) -> Response<ProxyBody> {
        res.map(|inner| {
            Either::Left(Tracked {
                inner,
                _in_flight: in_flight,
            })
        })
    }
}

// === impl Gateway ===

impl Gateway {
    /// A gateway over `routes`.
    pub fn new(
        routes: RouteTable,
        upstream: Upstream,
        settings: ServiceSettings,
        limits: Limits,
        access_log: bool,
    ) -> Self {
        Self {
            routes: ArcSwap::from_pointee(routes),
            services: RwLock::new(HashMap::new()),
            upstream,
            settings,
            limits,
            view: ArcSwap::from_pointee(View::default()),
            new_service: Notify::new(),
            timer: crate::timer::Coarse::new(),
            access_log,
        }
    }

    /// The service's state, created (and announced) on first use.
    pub fn service(&self, name: &str) -> Arc<ServiceState> {
        if let Some(s) = switchyard_time::sync::read(&self.services).get(name) {
            return s.clone();
        }
        let mut map = switchyard_time::sync::write(&self.services);
        let s = map
            .entry(Arc::from(name))
            .or_insert_with(|| {
                let s = Arc::new(ServiceState::new(name, &self.settings));
                let view = self.view.load();
                if let Some(instances) = view.services.get(name) {
                    s.set_instances(instances.clone(), Instant::now());
                }
                s
            })
            .clone();
        drop(map);
        self.new_service.notify_one();
        s
    }

    /// Every service in use.
    pub fn services(&self) -> Vec<Arc<ServiceState>> {
        switchyard_time::sync::read(&self.services)
            .values()
            .cloned()
            .collect()
    }

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
        Ok(res)
    }

    /// The limits of the request path.
    pub fn limits(&self) -> &Limits {
        &self.limits
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
    ) -> (Response<ProxyBody>, HeaderValue) {
        let start = Instant::now();
        let scan = headers::Scan::of(&parts.headers);
        let id = headers::request_id(&scan);
        let grpc = scan.grpc;
        // Kept for the access log only (the request moves on).
        let logged = self
            .access_log
            .then(|| (parts.method.clone(), parts.uri.clone()));
        let mut served = Served::default();
        let result = self
            .forward(parts, &scan, body, peer, &id, (start, sleep), &mut served)
            .await;
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                let mut res = e.response(&id, grpc).map(Either::Right);
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
        match &served.route {
            Some(route) => route.state.metrics.record(res.status(), elapsed),
            None => unmatched().record(res.status(), elapsed),
        }
        if let Some(service) = &served.service {
            service.duration.record(elapsed.as_secs_f64());
        }
        if let Some((method, uri)) = logged {
            tracing::info!(
                target: "access",
                request_id = id.to_str().unwrap_or(""),
                method = %method,
                path = uri.path(),
                status = res.status().as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                route = served.route.as_ref().map_or("", |r| &*r.name),
                service = served.service.as_ref().map_or("", |s| &*s.name),
                endpoint = served.endpoint.as_deref().unwrap_or(""),
                attempts = served.attempts,
                client = %peer.addr.ip(),
            );
        }
        (res, id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        parts: &mut Parts,
        scan: &headers::Scan,
        body: Inbound,
        peer: &Peer,
        id: &HeaderValue,
        (start, sleep): (Instant, Option<&mut Sleep>),
        served: &mut Served,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let grpc = scan.grpc;
        // One authority, decided once: routed by, and forwarded as `Host`.
        // The checked value is a shared handle (a reference count, not a
        // copy), so it outlives the header edits below.
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
        let fail = Err;
        if parts.method == Method::TRACE && !m.route.spec.allow_trace {
            return fail(GatewayError::MethodNotAllowed);
        }
        let default_rule = m.default_rule;
        if default_rule && !self.known_default_service(&m.service, table.default_rule_max_services)
        {
            return fail(GatewayError::UnknownService);
        }
        if !authorized(&m, parts) {
            return fail(GatewayError::Unauthorized);
        }
        if let Some(preflight) = crate::cors::preflight(&m, parts) {
            return Ok(preflight.map(Either::Right));
        }
        if let Some(limiter) = &m.route.state.limiter {
            let key = client_key(limiter.header.as_ref(), parts, peer);
            if let Err(wait) = limiter.acquire(&key, Instant::now()) {
                return fail(GatewayError::RateLimited(wait));
            }
        }
        let _permit = match &m.route.state.shedder {
            Some(s) => match s.try_acquire() {
                Some(p) => Some(p),
                None => return fail(GatewayError::Overloaded),
            },
            None => None,
        };
        let declared = scan.content_length;
        if self.limits.max_body > 0 && declared.is_some_and(|n| n > self.limits.max_body) {
            return fail(GatewayError::BodyTooLarge);
        }
        // Upgrades come only through hyper's server (the gateway's own
        // HTTP/1.1 path hands them over).
        let upgrade = matches!(body, Inbound::Streamed(_)) && headers::is_upgrade(&parts.headers);
        let raw_answer = matches!(body, Inbound::Whole(_)) && !grpc && m.route.spec.cors.is_none();
        let client_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let added = prepare_headers(parts, scan, &m, peer, id, authority.as_ref(), upgrade);
        let original = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let path = match upstream_path(&m, original) {
            Cow::Borrowed(_) => parts.uri.path_and_query().cloned(),
            Cow::Owned(p) => PathAndQuery::try_from(p).ok(),
        }
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // The default rule's service comes from the path; a route's own is
        // fixed, so it is looked up by name once.
        let service = if default_rule {
            self.service(&m.service)
        } else {
            m.route
                .state
                .service
                .get_or_init(|| self.service(&m.service))
                .clone()
        };
        served.service = Some(service.clone());
        let mut deadline = start + m.route.spec.timeout;
        if grpc {
            if let Some(t) = parts.headers.get("grpc-timeout").and_then(grpc_timeout) {
                // 99999999H is past any deadline a route can have.
                if let Some(d) = start.checked_add(t) {
                    deadline = deadline.min(d);
                }
            }
        }
        // Bodies that fit the replay buffer are read first, so that any
        // retry can send them again; others stream once.
        let limit = if self.limits.max_body > 0 {
            self.limits.max_body as usize
        } else {
            usize::MAX
        };
        // When the body was at hand already, the request's start stands in
        // for the first pick's clock reading (one reading fewer).
        let mut ready = Some(start);
        // Only a body that streams on can break after this point: the slot
        // (an allocation) is made for those alone.
        let mut fault = None;
        let body: RequestBody = match body {
            // Read whole by the client connection (its length was declared).
            Inbound::Whole(whole) => Either::Right(whole),
            // Most requests (GET): nothing to read or collect.
            Inbound::Streamed(body) if body.is_end_stream() => Either::Right(Bytes::new()),
            Inbound::Streamed(body) if declared.is_some_and(|n| n <= self.limits.replay as u64) => {
                ready = None;
                match Limited::new(body, self.limits.replay.max(1))
                    .collect()
                    .await
                {
                    Ok(collected) => Either::Right(collected.to_bytes()),
                    Err(e) => return fail(BodyFault::of(&*e).into()),
                }
            }
            Inbound::Streamed(body) => {
                ready = None;
                let slot = fault.insert(FaultSlot::default());
                match crate::body::take_ready(
                    body,
                    self.limits.replay,
                    limit,
                    if grpc {
                        Duration::from_millis(5)
                    } else {
                        Duration::ZERO
                    },
                    slot,
                )
                .await
                {
                    Ok(body) => body,
                    Err(e) => return fail(e.into()),
                }
            }
        };
        let attempt = Attempt {
            parts,
            path: &path,
            added: &added,
            body: Some(body),
            raw_answer,
        };
        let (result, endpoint, attempts) = self
            .attempts(
                &m,
                &service,
                attempt,
                (deadline, ready, &mut served.done, sleep),
                grpc,
                client_upgrade,
            )
            .await;
        served.endpoint = endpoint;
        served.attempts = attempts;
        // A body that broke while it streamed failed the upstream request
        // (which never saw it whole): the client hears why.
        match fault.as_ref().and_then(|f| f.get()) {
            Some(&e) => Err(e.into()),
            None => result,
        }
    }

    fn known_default_service(&self, service: &str, cap: usize) -> bool {
        let known = self
            .view
            .load()
            .services
            .get(service)
            .is_some_and(|i| !i.is_empty());
        if !known {
            return false;
        }
        let map = switchyard_time::sync::read(&self.services);
        map.contains_key(service) || map.len() < cap + self.routes.load().routes.len()
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        m: &Matched,
        service: &ServiceState,
        mut attempt: Attempt<'_>,
        (deadline, ready, done, mut sleep): (
            Instant,
            Option<Instant>,
            &mut Option<Instant>,
            Option<&mut Sleep>,
        ),
        grpc: bool,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> (
        Result<Response<ProxyBody>, GatewayError>,
        Option<Arc<str>>,
        u32,
    ) {
        let spec = &m.route.spec;
        let idempotent = matches!(
            attempt.parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let may_retry_reached = idempotent || spec.retry.retryable;
        let key = hash_key(m, attempt.parts, attempt.added);
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut last = GatewayError::NoEndpoint;
        let mut last_endpoint: Option<Arc<str>> = None;
        let mut last_response: Option<Response<ProxyBody>> = None;
        service.deposit();
        for n in 0..spec.retry.attempts {
            if n > 0 {
                // Time passes here (a backoff): the request's end is read
                // afresh unless another attempt ends it.
                *done = None;
                if let Err(e) = self.before_retry(service, spec, n, deadline, last).await {
                    last = e;
                    break;
                }
            }
            // Another endpoint if there is one, else one already tried
            // (Envoy's "previous hosts" predicate falls back the same way).
            // One clock reading serves the pick, the timeout and the send
            // (the first attempt's is the request's start, if it had its
            // body at hand).
            let now = match ready {
                Some(start) if n == 0 => start,
                _ => Instant::now(),
            };
            let picked = service.pick(key.as_deref(), &tried, now).or_else(|| {
                service
                    .pick(key.as_deref(), &[], now)
                    .filter(|_| !tried.is_empty())
            });
            let Some((endpoint, _panic)) = picked else {
                break;
            };
            let Some(body) = attempt.next_body() else {
                break;
            };
            last_endpoint = Some(endpoint.id.clone());
            let outgoing = match body {
                Either::Right(whole) if client_upgrade.is_none() && !endpoint.h2 => {
                    Outgoing::Direct(whole)
                }
                body => Outgoing::Hyper(
                    Box::new(upstream_request(&attempt, &endpoint, upstream_body(body))),
                    client_upgrade.is_some() || !endpoint.h2,
                ),
            };
            // The try's deadline: one addition and a comparison (the
            // time left to the request's deadline would be a subtraction).
            let try_deadline = (now + spec.per_try_timeout).min(deadline);
            let (outcome, in_flight, ended) = self
                .send_once(
                    service,
                    &endpoint,
                    &attempt,
                    outgoing,
                    (now, try_deadline, sleep.as_deref_mut()),
                    grpc,
                )
                .await;
            *done = Some(ended);
            let replayable = attempt.replayable();
            let attempts_left = n + 1 < spec.retry.attempts;
            match outcome {
                Sent::Answer(mut res, grpc_unavailable) => {
                    let retry_status =
                        grpc_unavailable || spec.retry.statuses.contains(&res.status().as_u16());
                    if retry_status && may_retry_reached && replayable && attempts_left {
                        tried.push(endpoint.id.clone());
                        last = GatewayError::Upstream;
                        // Kept: if no retry happens after all (budget,
                        // deadline), the client gets this answer as it was.
                        last_response = Some(clean_response(Tracked::response(res, in_flight)));
                        continue;
                    }
                    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client) = client_upgrade {
                            crate::websocket::tunnel(
                                client,
                                hyper::upgrade::on(&mut res),
                                in_flight,
                            );
                            let res = res.map(|_| Either::Right(Full::new(Bytes::new())));
                            return (Ok(clean_response(res)), last_endpoint, n + 1);
                        }
                    }
                    let mut res = Tracked::response(res, in_flight);
                    crate::cors::decorate(m, attempt.parts, res.headers_mut());
                    return (Ok(clean_response(res)), last_endpoint, n + 1);
                }
                Sent::Failed(never, unsent) => {
                    tried.push(endpoint.id.clone());
                    last = GatewayError::Upstream;
                    // A streamed body that was never written (connect
                    // refused, say) goes to the next endpoint after all.
                    let replayable = match unsent {
                        Some(Either::Left(streamed)) if never && !replayable => {
                            attempt.body = Some(Either::Left(streamed));
                            true
                        }
                        _ => replayable,
                    };
                    if !(replayable && (never || may_retry_reached)) {
                        break;
                    }
                }
                Sent::TimedOut => {
                    tried.push(endpoint.id.clone());
                    last = GatewayError::Timeout;
                    if !(replayable && may_retry_reached) {
                        break;
                    }
                }
            }
        }
        let attempts = u32::try_from(tried.len()).unwrap_or(u32::MAX);
        match last_response {
            Some(res) if matches!(last, GatewayError::Upstream | GatewayError::BudgetExhausted) => {
                (Ok(res), last_endpoint, attempts)
            }
            _ => (Err(last), last_endpoint, attempts),
        }
    }

    /// The budget and backoff before retry `n`; Err says why not to retry.
    async fn before_retry(
        &self,
        service: &ServiceState,
        spec: &crate::routes::RouteSpec,
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

    /// One attempt on one endpoint, recorded in its counters and breaker.
    async fn send_once(
        &self,
        service: &ServiceState,
        endpoint: &Endpoint,
        attempt: &Attempt<'_>,
        outgoing: Outgoing,
        (sent, try_deadline, sleep): (Instant, Instant, Option<&mut Sleep>),
        grpc: bool,
    ) -> (Sent, InFlight, Instant) {
        let in_flight = endpoint.load.start();
        endpoint.breaker.on_send(sent);
        let key = &endpoint.pool_key;
        // Pinned where it stands: the timeouts below take it by reference,
        // not by a copy of the whole exchange.
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
                        Ok(res) => Ok(res.map(Upstreamed::Direct)),
                        Err(e) => Err((AttemptError::H1(e), None)),
                    }
                }
                // hyper's futures are boxed: held inline, they made
                // every attempt's future (and the request's, which
                // holds it) several times the direct exchange's size.
                Outgoing::Hyper(request, true) => {
                    match Box::pin(self.upstream.h1.send(key, *request)).await {
                        Ok((res, conn)) => Ok(res.map(|body| Upstreamed::Hyper(body, Some(conn)))),
                        Err((e, unsent)) => {
                            Err((AttemptError::H1(e), unsent.map(Request::into_body)))
                        }
                    }
                }
                Outgoing::Hyper(request, false) => {
                    match Box::pin(self.upstream.h2.request(*request)).await {
                        Ok(res) => Ok(res.map(|body| Upstreamed::Hyper(body, None))),
                        Err(e) => Err((AttemptError::H2(e), None)),
                    }
                }
            }
        });
        let outcome = match sleep {
            Some(sleep) => sleep.timeout_at(try_deadline, exchange).await,
            None => self.timer.timeout_at(try_deadline, exchange).await,
        };
        let done = Instant::now();
        let latency = done.saturating_duration_since(sent);
        let (kind, sent_result) = match outcome {
            Ok(Ok(res)) => {
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
                (kind, Sent::Answer(res, grpc_unavailable))
            }
            Ok(Err((e, unsent))) => {
                let never = e.reach() == Reach::Never;
                tracing::debug!(service = %service.name, instance = %endpoint.id, error = %e, never_reached = never, "attempt failed");
                (
                    if never {
                        Outcome::Connect
                    } else {
                        Outcome::Reset
                    },
                    Sent::Failed(never, unsent),
                )
            }
            Err(_) => (Outcome::Timeout, Sent::TimedOut),
        };
        service.record(endpoint, kind, latency, done);
        (sent_result, in_flight, done)
    }
}

/// Why an attempt got no answer, from either pool; formatted only if logged.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    H1(crate::pool::SendError),
    #[error("{0}: {source:?}", source = std::error::Error::source(.0))]
    H2(hyper_util::client::legacy::Error),
}

impl AttemptError {
    fn reach(&self) -> Reach {
        match self {
            Self::H1(e) => e.reach(),
            Self::H2(e) => reach(e),
        }
    }
}

/// How one attempt ended.
// A value that lives for one match on the stack; boxing the answer would
// cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Sent {
    /// An answer, and whether it is a gRPC UNAVAILABLE.
    Answer(Response<Upstreamed>, bool),
    /// A transport failure; true when it provably never reached the
    /// endpoint, and the body when the request was never written.
    Failed(bool, Option<UpstreamBody>),
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

fn prepare_headers(
    parts: &mut Parts,
    scan: &headers::Scan,
    m: &Matched,
    peer: &Peer,
    id: &HeaderValue,
    authority: Option<&Authority>,
    upgrade: bool,
) -> headers::Added {
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

fn upstream_request(
    attempt: &Attempt<'_>,
    endpoint: &Endpoint,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let (parts, path) = (attempt.parts, attempt.path);
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
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

fn clean_response(mut res: Response<ProxyBody>) -> Response<ProxyBody> {
    let upgrade = res.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(res.headers_mut(), upgrade);
    res
}

/// `grpc-timeout`: at most eight digits and a unit (H, M, S, m, u, n), as
/// gRPC's HTTP/2 protocol spells it; anything else is ignored (the route's
/// timeout holds), so no client value can overflow a deadline.
fn grpc_timeout(v: &HeaderValue) -> Option<Duration> {
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

fn backoff(base: Duration, max: Duration, n: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << (n - 1).min(16)).min(max);
    let half = ceiling / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

#[cfg(test)]
mod admission;

#[cfg(test)]
mod tests {
    use super::*;

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
