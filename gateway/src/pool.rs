//! The HTTP/1.1 upstream pool: idle keep-alive connections per endpoint
//! address, each checked out for one request and given back when its
//! response body has been read to the end.
//!
//! hyper-util's pooled `Client` served here first. In the profile recorded
//! in `bench/RESULTS.md` its per-request machinery (hashing the pool key,
//! racing a checkout against a lazy connect, boxing and moving its large
//! futures) was about a fifth of the gateway's user CPU per proxied request.
//! The gateway has already picked the endpoint, so a stack of idle
//! `SendRequest`s per address does the same job. HTTP/2 (one multiplexed
//! connection per endpoint) stays on hyper-util.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, Uri, uri::Authority};
use hyper::{
    body::Incoming,
    client::conn::{TrySendError, http1},
};
use hyper_util::rt::TokioIo;

use crate::{
    body::UpstreamBody,
    http1::client,
    worker::{self, PerWorker},
};
use switchyard_time::sync::lock;

/// Whether a failed attempt provably never reached the upstream, so that
/// retrying it is safe whatever the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Connect error or timeout, refused stream, or a pooled connection that
    /// closed before the request was written.
    Never,
    /// It may have reached the upstream.
    Maybe,
}

/// Idle connections kept per address; more are closed when given back.
const MAX_IDLE_PER_ADDRESS: usize = 1024;

type Sender = http1::SendRequest<UpstreamBody>;

/// The pool (cheap to clone).
#[derive(Debug, Clone)]
pub struct H1Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// hyper connections: streamed request bodies and upgrades. (Direct
    /// ones are kept with each endpoint's key: [`DirectIdle`].)
    hyper: Mutex<Idle>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    by_address: HashMap<PoolKey, Vec<Parked<Sender>>, BuildHasherDefault<Prehashed>>,
    last_sweep: Instant,
}

/// An endpoint's address as the pool's key, hashed once when the endpoint
/// is made: `Authority` hashes case-insensitively byte by byte through
/// SipHash, which was most of a checkout's cost.
#[derive(Debug, Clone)]
pub struct PoolKey {
    hash: u64,
    authority: Authority,
    direct: Arc<DirectIdle>,
}

/// An endpoint's idle direct connections, the newest last, apart for each
/// worker ([`crate::worker`]): a connection is driven by the runtime it was
/// made on, and is only ever taken again by the worker that made it. They
/// live with the endpoint's key rather than in a map of the pool's, so a
/// checkout and a park are a lock and a pop or a push: looking the address up in a map
/// on both was 1,100 instructions per request. They close when their
/// endpoint leaves the view, or when found closed or expired at a checkout,
/// a park or a sweep ([`H1Pool::sweep_direct`]).
#[derive(Debug)]
struct DirectIdle(PerWorker<Mutex<Vec<Parked<client::Conn>>>>);

/// Passes a [`PoolKey`]'s stored hash through.
#[derive(Debug, Default)]
struct Prehashed(u64);

#[derive(Debug)]
struct Parked<C> {
    conn: C,
    /// When it has been idle too long: an instant compared on checkout,
    /// where the time since parking would be a subtraction each.
    until: Instant,
}

/// Parks a direct connection again once its response body has been read
/// (see [`client::Reuse`]).
#[derive(Debug)]
pub struct ParkDirect {
    idle: Arc<DirectIdle>,
    /// The worker whose connection it is.
    worker: usize,
    idle_timeout: Duration,
    /// When the request was sent: the connection counts as idle from then
    /// (a little early, so it is closed a little sooner, never later; and
    /// no clock is read when it is parked).
    sent: Instant,
}

/// A response read over a direct connection.
pub type DirectResponse = Response<client::ResponseBody<ParkDirect>>;

/// A connection lent for one request: [`GiveBack::complete`] parks it for
/// the next one; dropping it instead closes the connection (a response
/// abandoned half-way leaves it in an unknown state).
#[derive(Debug)]
pub struct GiveBack {
    sender: Option<Sender>,
    address: PoolKey,
    pool: Arc<Inner>,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out).
    #[error("connect to {address}: {reason}")]
    Connect {
        /// The endpoint.
        address: Authority,
        /// What went wrong.
        reason: String,
    },
    /// The connection failed; `written` says whether hyper had started to
    /// send the request.
    #[error("{error}")]
    Request {
        /// hyper's error.
        error: hyper::Error,
        /// Whether any of the request may have reached the endpoint.
        written: bool,
    },
    /// A direct connection failed, or its answer was not HTTP/1.1.
    #[error("{0}")]
    Direct(client::RequestError),
}

// === impl PoolKey ===

impl PoolKey {
    /// The key of `authority`, with idle direct connections kept apart
    /// for each of `workers` workers.
    pub fn new(authority: Authority, workers: usize) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        authority.as_str().to_ascii_lowercase().hash(&mut h);
        Self {
            hash: h.finish(),
            authority,
            direct: Arc::new(DirectIdle(PerWorker::new(workers, Default::default))),
        }
    }

    /// The address.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

impl Hash for PoolKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.authority == other.authority
    }
}

impl Eq for PoolKey {}

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (by `PoolKey`); this keeps any other
        // input well spread all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(5) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

// === impl SendError ===

impl SendError {
    /// Whether the request provably never reached the endpoint.
    pub fn reach(&self) -> Reach {
        match self {
            Self::Connect { .. } => Reach::Never,
            Self::Request { written: false, .. } => Reach::Never,
            Self::Request { error, .. } if error.is_canceled() => Reach::Never,
            Self::Request { .. } => Reach::Maybe,
            Self::Direct(e) if !e.written => Reach::Never,
            Self::Direct(_) => Reach::Maybe,
        }
    }
}

// === impl H1Pool ===

impl H1Pool {
    /// A pool whose connects give up after `connect_timeout` and whose idle
    /// connections are closed after `idle_timeout` (keep it below the
    /// services' own keep-alive so we never reuse one they are closing).
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                hyper: Mutex::new(Idle::new()),
                connect_timeout,
                // At most a year, so that parked-at plus the timeout never
                // overflows an `Instant` (a longer one means "never").
                idle_timeout: idle_timeout.min(Duration::from_secs(365 * 24 * 3600)),
            }),
        }
    }

    /// Sends `req` to `address` on an idle connection, or a new one. A
    /// pooled connection that turns out closed before the request was
    /// written is replaced by a new one once (as hyper-util's
    /// `retry_canceled_requests` does). A request that was never written
    /// comes back with the error, so that even a streamed body can be sent
    /// to another endpoint.
    pub async fn send(
        &self,
        key: &PoolKey,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, GiveBack), (SendError, Option<Request<UpstreamBody>>)> {
        let address = &key.authority;
        // HTTP/1.1 to an origin server takes the origin form (RFC 9112
        // §3.2.1); hyper's connection writes the target as it is given, and
        // the request's carries the endpoint (for HTTP/2's `:authority`).
        if let Some(target) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = Uri::from(target);
        }
        let mut reused = true;
        loop {
            let mut sender = match self.inner.checkout(key) {
                Some(s) => s,
                None => {
                    reused = false;
                    match self.inner.connect_hyper(address).await {
                        Ok(s) => s,
                        Err(e) => return Err((e, Some(req))),
                    }
                }
            };
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let back = GiveBack {
                        sender: Some(sender),
                        address: key.clone(),
                        pool: self.inner.clone(),
                    };
                    return Ok((res, back));
                }
                Err(e) => {
                    let mut e: TrySendError<Request<UpstreamBody>> = e;
                    match e.take_message() {
                        Some(unsent) if reused => {
                            tracing::debug!(%address, error = %e.error(), "pooled connection closed; trying a new one");
                            req = unsent;
                            reused = false;
                        }
                        unsent => {
                            let e = SendError::Request {
                                written: unsent.is_none(),
                                error: e.into_error(),
                            };
                            return Err((e, unsent));
                        }
                    }
                }
            }
        }
    }

    /// Sends a request whose body is whole on a connection this task
    /// drives itself ([`client`]): an idle one, or a new one. A pooled
    /// connection that turns out closed before anything was written is
    /// replaced by a new one once.
    pub async fn send_direct(
        &self,
        key: &PoolKey,
        head: client::RequestHead<'_>,
        body: &Bytes,
        now: Instant,
    ) -> Result<DirectResponse, SendError> {
        let mut reused = true;
        loop {
            let conn = match self.inner.checkout_direct(key, now) {
                Some(c) => c,
                None => {
                    reused = false;
                    client::Conn::new(self.inner.tcp(&key.authority).await?)
                }
            };
            let park = ParkDirect {
                idle: key.direct.clone(),
                worker: worker::index(),
                idle_timeout: self.inner.idle_timeout,
                sent: now,
            };
            match conn.request(head, body, park).await {
                Ok(res) => return Ok(res),
                Err(e) if reused && !e.written => {
                    tracing::debug!(address = %key.authority, error = %e, "pooled connection closed; trying a new one");
                    reused = false;
                }
                Err(e) => return Err(SendError::Direct(e)),
            }
        }
    }

    /// Closes the idle direct connections of `key` that expired or that the
    /// endpoint closed. Checkouts and parks do this too; this is for
    /// endpoints that get no more requests (the gateway calls it for every
    /// endpoint once per report interval).
    pub fn sweep_direct(&self, key: &PoolKey) {
        let now = Instant::now();
        for idle in key.direct.0.all() {
            lock(idle).retain_mut(|p| !p.expired(now) && p.conn.is_reusable());
        }
    }

    /// Idle hyper connections per address.
    #[cfg(test)]
    fn idle(&self, key: &PoolKey) -> usize {
        lock(&self.inner.hyper)
            .by_address
            .get(key)
            .map_or(0, Vec::len)
    }

    /// Idle direct connections per address.
    #[cfg(test)]
    fn idle_direct(&self, key: &PoolKey) -> usize {
        key.direct.0.all().map(|idle| lock(idle).len()).sum()
    }
}

// === impl Idle ===

impl Idle {
    fn new() -> Self {
        Self {
            by_address: HashMap::default(),
            last_sweep: Instant::now(),
        }
    }
}

impl<C> Parked<C> {
    fn new(conn: C, now: Instant, idle_timeout: Duration) -> Self {
        Self {
            conn,
            until: now + idle_timeout,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now > self.until
    }
}

impl client::Reuse for ParkDirect {
    fn reuse(self, conn: client::Conn) {
        let now = self.sent;
        let mut idle = lock(self.idle.0.at(self.worker));
        // The oldest are at the bottom: those past the idle timeout go.
        let expired = idle.iter().take_while(|p| p.expired(now)).count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE_PER_ADDRESS {
            idle.push(Parked::new(conn, now, self.idle_timeout));
        }
    }
}

// === impl Inner ===

impl Inner {
    /// The most recently parked connection that is ready (warm caches, and
    /// the older ones age out). Closed and expired ones are dropped; one
    /// still finishing its previous response stays for later.
    fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = lock(&self.hyper);
        let parked = idle.by_address.get_mut(key)?;
        let mut i = parked.len();
        while i > 0 {
            i -= 1;
            let p = &parked[i];
            if p.expired(now) || p.conn.is_closed() {
                parked.swap_remove(i);
            } else if p.conn.is_ready() {
                return Some(parked.swap_remove(i).conn);
            }
        }
        None
    }

    /// The newest idle direct connection that is still open and fresh.
    fn checkout_direct(&self, key: &PoolKey, now: Instant) -> Option<client::Conn> {
        let mut idle = lock(key.direct.0.get());
        while let Some(mut p) = idle.pop() {
            if p.expired(now) {
                // The rest are older still.
                idle.clear();
                return None;
            }
            if p.conn.is_reusable() {
                return Some(p.conn);
            }
        }
        None
    }

    /// A TCP connection for either kind: no delay, keep-alive probes after
    /// 30 s idle, given up after the connect timeout.
    async fn tcp(&self, address: &Authority) -> Result<tokio::net::TcpStream, SendError> {
        let failed = |reason: String| SendError::Connect {
            address: address.clone(),
            reason,
        };
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(address.as_str()),
        )
        .await
        .map_err(|_| failed(format!("timed out after {:?}", self.connect_timeout)))?
        .map_err(|e| failed(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(stream)
    }

    async fn connect_hyper(&self, address: &Authority) -> Result<Sender, SendError> {
        let stream = self.tcp(address).await?;
        // Answer heads are bounded as on the direct path: hyper refuses a
        // head that does not fit its read buffer.
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(crate::http1::codec::MAX_HEAD)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            // with_upgrades: a 101 hands the connection to the WebSocket tunnel.
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    fn park(&self, address: PoolKey, conn: Sender) {
        let now = Instant::now();
        let mut idle = lock(&self.hyper);
        // Now and then, drop what expired or closed everywhere, so that
        // endpoints that went away do not keep connections open.
        if now.duration_since(idle.last_sweep) > self.idle_timeout {
            idle.last_sweep = now;
            idle.by_address.retain(|_, parked| {
                parked.retain(|p| !p.expired(now) && !p.conn.is_closed());
                !parked.is_empty()
            });
        }
        let parked = idle.by_address.entry(address).or_default();
        if parked.len() < MAX_IDLE_PER_ADDRESS {
            parked.push(Parked::new(conn, now, self.idle_timeout));
        }
    }
}

// === impl GiveBack ===

impl GiveBack {
    /// The response body was read to its end: the connection may serve
    /// another request.
    pub fn complete(mut self) {
        if let Some(sender) = self.sender.take() {
            if !sender.is_closed() {
                self.pool.park(self.address.clone(), sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Either, Full};
    use hyper::{server::conn::http1 as server, service::service_fn};

    use super::*;

    /// A backend that counts its connections; `close` answers with
    /// `Connection: close`; a body of `size` bytes.
    async fn backend(close: bool, size: usize) -> (PoolKey, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| async move {
                        let mut res = Response::new(Full::new(Bytes::from(vec![b'x'; size])));
                        if close {
                            res.headers_mut()
                                .insert(http::header::CONNECTION, "close".parse().expect("v"));
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (
            PoolKey::new(addr.to_string().parse().expect("authority"), 1),
            accepted,
        )
    }

    /// A raw server that answers once per connection, keep-alive, and then
    /// closes it without saying so (an idle timeout on the other side); it
    /// counts its connections.
    async fn answers_once_then_closes() -> (PoolKey, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = PoolKey::new(
            listener
                .local_addr()
                .expect("addr")
                .to_string()
                .parse()
                .expect("a"),
            1,
        );
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                });
            }
        });
        (address, accepted)
    }

    /// The key of a port nothing listens on.
    fn refused() -> PoolKey {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        PoolKey::new(format!("127.0.0.1:{port}").parse().expect("a"), 1)
    }

    fn get(key: &PoolKey) -> Request<UpstreamBody> {
        Request::get(format!("http://{}/", key.authority()))
            .body(Either::Right(Full::new(Bytes::new())))
            .expect("request")
    }

    fn pool() -> H1Pool {
        H1Pool::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Reads the body to its end, then gives the connection back, as the
    /// proxy's response body does.
    async fn read_and_give_back(res: Response<Incoming>, back: GiveBack) -> usize {
        let n = res
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len();
        back.complete();
        n
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (address, accepted) = backend(false, 1024).await;
        let pool = pool();
        for _ in 0..20 {
            let (res, back) = pool.send(&address, get(&address)).await.expect("send");
            assert_eq!(read_and_give_back(res, back).await, 1024);
            // The connection task marks the connection ready on its next turn.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
        assert_eq!(pool.idle(&address), 1);
    }

    #[tokio::test]
    async fn a_closing_server_and_an_abandoned_body_get_new_connections() {
        let (address, accepted) = backend(true, 16).await;
        let pool = pool();
        for _ in 0..3 {
            let (res, back) = pool.send(&address, get(&address)).await.expect("send");
            assert_eq!(read_and_give_back(res, back).await, 16);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "Connection: close is honoured"
        );

        let (address, accepted) = backend(false, 1 << 20).await;
        let (res, back) = pool.send(&address, get(&address)).await.expect("send");
        drop((res, back)); // abandoned before its end: the connection is not reused
        let (res, back) = pool.send(&address, get(&address)).await.expect("send");
        assert_eq!(read_and_give_back(res, back).await, 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced_unseen() {
        let (address, accepted) = answers_once_then_closes().await;
        let pool = pool();
        for _ in 0..3 {
            let (res, back) = pool.send(&address, get(&address)).await.expect("send");
            assert_eq!(res.status(), 200);
            assert_eq!(read_and_give_back(res, back).await, 2);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connect_never_reached_the_endpoint() {
        let address = refused();
        let e = pool()
            .send(&address, get(&address))
            .await
            .expect_err("refused");
        let (e, unsent) = e;
        assert!(matches!(e, SendError::Connect { .. }), "{e}");
        assert_eq!(e.reach(), Reach::Never);
        assert!(
            unsent.is_some(),
            "the request comes back to be sent elsewhere"
        );
    }

    /// Reads a direct response's body to its end (which parks the connection).
    async fn read_direct(res: DirectResponse) -> usize {
        res.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len()
    }

    impl H1Pool {
        /// `GET /` over a direct connection, sent now.
        async fn get_direct(&self, key: &PoolKey) -> Result<DirectResponse, SendError> {
            self.send_direct(key, direct_head(key), &Bytes::new(), Instant::now())
                .await
        }
    }

    fn direct_head(key: &PoolKey) -> client::RequestHead<'_> {
        static HEADERS: std::sync::LazyLock<http::HeaderMap> =
            std::sync::LazyLock::new(http::HeaderMap::new);
        static PATH: http::uri::PathAndQuery = http::uri::PathAndQuery::from_static("/");
        client::RequestHead {
            method: &http::Method::GET,
            path: &PATH,
            headers: &HEADERS,
            extra: &[],
            authority: key.authority(),
            raw_answer: false,
        }
    }

    #[tokio::test]
    async fn direct_requests_reuse_one_connection_and_a_closing_server_gets_new_ones() {
        let (address, accepted) = backend(false, 1024).await;
        let pool = pool();
        for _ in 0..20 {
            let res = pool.get_direct(&address).await.expect("send");
            assert_eq!(read_direct(res).await, 1024);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
        assert_eq!(pool.idle_direct(&address), 1);
        assert_eq!(pool.idle(&address), 0, "the hyper side was not used");

        let (address, accepted) = backend(true, 16).await;
        for _ in 0..3 {
            let res = pool.get_direct(&address).await.expect("send");
            assert_eq!(read_direct(res).await, 16);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "Connection: close is honoured"
        );
        assert_eq!(pool.idle_direct(&address), 0);
    }

    #[tokio::test]
    async fn a_direct_connection_the_server_closed_while_parked_is_replaced_unseen() {
        let (address, accepted) = answers_once_then_closes().await;
        let pool = pool();
        for _ in 0..3 {
            let res = pool
                .get_direct(&address)
                .await
                .expect("a closed idle connection never fails a request");
            assert_eq!(res.status(), 200);
            assert_eq!(read_direct(res).await, 2);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_sweep_closes_idle_direct_connections_the_server_closed_or_that_expired() {
        let (address, _accepted) = backend(false, 16).await;
        let pool = H1Pool::new(Duration::from_secs(1), Duration::from_millis(200));
        let res = pool.get_direct(&address).await.expect("send");
        assert_eq!(read_direct(res).await, 16);
        pool.sweep_direct(&address);
        assert_eq!(pool.idle_direct(&address), 1, "fresh and open: kept");
        tokio::time::sleep(Duration::from_millis(300)).await;
        pool.sweep_direct(&address);
        assert_eq!(
            pool.idle_direct(&address),
            0,
            "past the idle timeout: closed"
        );
    }

    #[tokio::test]
    async fn a_refused_direct_connect_never_reached_the_endpoint() {
        let address = refused();
        let e = pool().get_direct(&address).await.expect_err("refused");
        assert!(matches!(e, SendError::Connect { .. }), "{e}");
        assert_eq!(e.reach(), Reach::Never);
    }
}
