//! A small etcd v3 client for the registry's etcd store, generated from
//! `proto/etcd.proto` with protox (no system `protoc`; the etcd-client
//! crate's build needs one).
//!
//! # Layout
//!
//! - [`Client`]: one tonic channel over every endpoint (requests go to an
//!   endpoint whose connection is up, so a dead member is skipped), reads
//!   retried across endpoints, transactions checked against etcd's
//!   128-operation limit before they are sent, and a decode limit raised
//!   above tonic's 4 MiB for large ranges.
//! - [`watch`]: one watch per prefix with `fragment` on and fragments put
//!   back together, progress requests, and compaction and cancellation as
//!   values rather than errors.
//! - [`follow`]: a prefix followed as a list and then one watch, resumed
//!   across broken streams and members, relisted after compaction, with
//!   etcd 3.4.23's duplicated and time-travelling events filtered out.
//! - [`lease`]: every lease kept alive over one multiplexed stream.
//! - [`testing`]: real etcd processes on loopback for tests.
//!
//! Every call carries `hasleader` metadata: a member that has lost its
//! leader refuses calls and ends streams at once instead of holding them,
//! so the caller moves on or retries.

pub mod follow;
pub mod lease;
pub mod testing;
pub mod watch;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tonic::{
    Request,
    transport::{Channel, Endpoint},
};

pub use follow::{Follower, ResetReason, Update};
pub use lease::Keeper;
pub use watch::{WatchMessage, WatchStream};

/// The generated messages and clients (package `etcdserverpb`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

/// How long one call may take. A member whose leader just died holds a
/// write until its request timeout (5 s + two election timeouts: 10 s in
/// the tests' cluster) before saying "request timed out"; a shorter
/// deadline hands the caller the unknown outcome sooner, to retry once a
/// new leader is elected.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// etcd's default limit on operations in one transaction
/// (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// The largest message the client decodes: a range over every registry key
/// can pass tonic's default of 4 MiB.
pub const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// etcd (or the transport) answered with a status.
    #[error("etcd: {}", .0.message())]
    Status(#[from] tonic::Status),
    /// An endpoint could not be used.
    #[error("etcd endpoint `{endpoint}`: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A transaction with more operations than etcd takes.
    #[error("a transaction of {0} operations: etcd takes at most {MAX_TXN_OPS} (--max-txn-ops)")]
    TooManyOps(usize),
    /// A watch ended in a way its stream could not express.
    #[error("etcd watch: {0}")]
    Watch(String),
    /// The keep-alive stream is gone (the keeper stopped).
    #[error("etcd lease keep-alive stream closed")]
    KeepAliveClosed,
}

/// An etcd client over one or more endpoints. Cheap to clone: clones share
/// the connections and the choice of endpoint.
///
/// Calls go to one endpoint at a time, as etcd's own client pins one; when
/// it cannot be reached, the call moves to the next. A call that provably
/// never reached etcd (the connection could not be made) is retried there
/// whatever it is; a read is retried on any unavailability; a write whose
/// fate is unknown is returned to the caller.
#[derive(Debug, Clone)]
pub struct Client {
    endpoints: Arc<[(String, Channel)]>,
    /// Index (modulo the count) of the endpoint calls go to.
    preferred: Arc<AtomicUsize>,
}

// === impl Error ===

impl Error {
    /// Whether the call certainly changed nothing in etcd, so that sending
    /// it again is safe whatever it was (the connection was never made, or
    /// a member without a leader refused it). Other failures of a write
    /// leave its outcome unknown: read before writing again.
    pub fn retry_safe(&self) -> bool {
        match self {
            Error::Status(status) => never_sent(status),
            Error::Endpoint { .. } | Error::TooManyOps(_) => false,
            Error::Watch(_) | Error::KeepAliveClosed => true,
        }
    }
}

// === impl Client ===

impl Client {
    /// A client over `endpoints` (`http://host:port`). Connections are made
    /// lazily and kept up with HTTP/2 pings every 10 s (above etcd's 5 s
    /// `grpc-keepalive-min-time`); nothing is dialled here.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Self, Error> {
        Self::with_tls(endpoints, None)
    }

    /// [`Client::new`] over mutual TLS with `tls` (etcd started with
    /// `--client-cert-auth` and the same CA): each member's certificate must
    /// name the host it is dialled at.
    pub fn with_tls<S: AsRef<str>>(
        endpoints: &[S],
        tls: Option<&switchyard_tls::ClientTls>,
    ) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Endpoint {
                endpoint: String::new(),
                reason: "no etcd endpoint given".into(),
            });
        }
        let mut list = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let e = e.as_ref();
            let endpoint = Endpoint::from_shared(e.to_string())
                .map_err(|err| Error::Endpoint {
                    endpoint: e.into(),
                    reason: err.to_string(),
                })?
                .connect_timeout(Duration::from_secs(2))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            let channel = switchyard_tls::channel_lazy(endpoint, tls, None);
            list.push((e.to_string(), channel));
        }
        Ok(Self {
            endpoints: list.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The endpoint calls go to now, as given.
    pub fn current_endpoint(&self) -> &str {
        &self.current().1.0
    }

    /// The preferred endpoint: its index and (name, channel).
    fn current(&self) -> (usize, &(String, Channel)) {
        let i = self.preferred.load(Ordering::Relaxed);
        (i, &self.endpoints[i % self.endpoints.len()])
    }

    /// Moves calls on from endpoint `i` (unless another call already did).
    fn failed(&self, i: usize) {
        let _ = self.preferred.compare_exchange(
            i,
            i.wrapping_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Runs `call` on the preferred endpoint, moving on while it cannot be
    /// reached: at most twice round the endpoints, pausing between rounds.
    /// With `read`, calls that may have reached etcd are retried too.
    async fn call<T, F, Fut>(&self, read: bool, call: F) -> Result<T, Error>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let n = self.endpoints.len();
        let mut attempt = 0;
        loop {
            let (i, (_, channel)) = self.current();
            match call(channel.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(e @ Error::Status(_))
                    if attempt + 1 < 2 * n && (e.retry_safe() || (read && unavailable(&e))) =>
                {
                    tracing::debug!(endpoint = %self.endpoints[i % n].0, error = %e, "etcd endpoint unavailable; trying the next");
                    self.failed(i);
                    attempt += 1;
                    if attempt % n == 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(e) => {
                    // A broken connection (the member died mid-call): the
                    // outcome is unknown, but the next call goes elsewhere.
                    if let Error::Status(status) = &e
                        && broken_connection(status)
                    {
                        self.failed(i);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Keys in `[key, range_end)` (only `key` when `range_end` is empty),
    /// at `revision` (0: the latest). Linearizable.
    pub async fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        revision: i64,
    ) -> Result<pb::RangeResponse, Error> {
        let req = pb::RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            revision,
            ..Default::default()
        };
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(kv(ch).range(unary(req)).await?.into_inner()) }
        })
        .await
    }

    /// Every key under `prefix`, at the latest revision.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<pb::RangeResponse, Error> {
        self.range(prefix, &prefix_end(prefix), 0).await
    }

    /// Puts `value` at `key`, attached to `lease` (0: none).
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<pb::PutResponse, Error> {
        let req = pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        self.call(false, |ch| {
            let req = req.clone();
            async move { Ok(kv(ch).put(unary(req)).await?.into_inner()) }
        })
        .await
    }

    /// Deletes `[key, range_end)` (only `key` when `range_end` is empty).
    pub async fn delete(
        &self,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<pb::DeleteRangeResponse, Error> {
        let req = pb::DeleteRangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        };
        self.call(false, |ch| {
            let req = req.clone();
            async move { Ok(kv(ch).delete_range(unary(req)).await?.into_inner()) }
        })
        .await
    }

    /// Runs a transaction. One with more than [`MAX_TXN_OPS`] operations in
    /// either branch is refused here, before it reaches etcd.
    pub async fn txn(&self, txn: pb::TxnRequest) -> Result<pb::TxnResponse, Error> {
        let ops = txn.success.len().max(txn.failure.len());
        if ops > MAX_TXN_OPS {
            return Err(Error::TooManyOps(ops));
        }
        self.call(false, |ch| {
            let txn = txn.clone();
            async move { Ok(kv(ch).txn(unary(txn)).await?.into_inner()) }
        })
        .await
    }

    /// Compacts history up to `revision` (watches from before it get
    /// [`WatchMessage::Compacted`]).
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        let req = pb::CompactionRequest {
            revision,
            physical: true,
        };
        self.call(false, |ch| async move {
            kv(ch).compact(unary(req)).await?;
            Ok(())
        })
        .await
    }

    /// Grants a lease of `ttl` seconds: its id and the TTL etcd chose (at
    /// least its minimum, 1.5 election timeouts).
    pub async fn lease_grant(&self, ttl: i64) -> Result<(i64, i64), Error> {
        let req = pb::LeaseGrantRequest { ttl, id: 0 };
        let res = self
            .call(false, |ch| async move {
                Ok(lease(ch).lease_grant(unary(req)).await?.into_inner())
            })
            .await?;
        if !res.error.is_empty() {
            return Err(Error::Status(tonic::Status::unknown(res.error)));
        }
        Ok((res.id, res.ttl))
    }

    /// Revokes a lease, deleting the keys attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), Error> {
        self.call(false, |ch| async move {
            lease(ch)
                .lease_revoke(unary(pb::LeaseRevokeRequest { id }))
                .await?;
            Ok(())
        })
        .await
    }

    /// A lease's remaining seconds; `None` once it has expired or was
    /// revoked.
    pub async fn lease_ttl(&self, id: i64) -> Result<Option<i64>, Error> {
        let req = pb::LeaseTimeToLiveRequest { id, keys: false };
        let res = self
            .call(true, |ch| async move {
                Ok(lease(ch).lease_time_to_live(unary(req)).await?.into_inner())
            })
            .await?;
        Ok((res.ttl > 0).then_some(res.ttl))
    }

    /// A keeper that keeps leases alive over one stream (see [`lease`]).
    pub fn keeper(&self) -> Keeper {
        Keeper::start(self.clone())
    }

    /// Opens a keep-alive stream whose first request renews `first` (etcd
    /// sends the stream's headers with its first answer).
    pub(crate) async fn open_keep_alive(
        &self,
        first: i64,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>,
            tonic::Streaming<pb::LeaseKeepAliveResponse>,
        ),
        Error,
    > {
        self.call(true, |ch| async move {
            let (requests, rx) = tokio::sync::mpsc::channel(1024);
            requests
                .send(pb::LeaseKeepAliveRequest { id: first })
                .await
                .map_err(|_| Error::KeepAliveClosed)?;
            let answers = lease(ch)
                .lease_keep_alive(require_leader(tokio_stream::wrappers::ReceiverStream::new(
                    rx,
                )))
                .await?
                .into_inner();
            Ok((requests, answers))
        })
        .await
    }

    /// Watches every key under `prefix` from `start_revision` (0: from
    /// now), with fragments put back together (see [`watch`]).
    pub async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<WatchStream, Error> {
        let end = prefix_end(prefix);
        self.call(true, |ch| {
            WatchStream::open(
                pb::watch_client::WatchClient::new(ch).max_decoding_message_size(MAX_DECODE_BYTES),
                prefix,
                &end,
                start_revision,
            )
        })
        .await
    }

    /// The members of the cluster; the header carries the cluster id.
    pub async fn member_list(&self) -> Result<pb::MemberListResponse, Error> {
        self.call(true, |ch| async move {
            let mut c = pb::cluster_client::ClusterClient::new(ch);
            Ok(c.member_list(unary(pb::MemberListRequest {}))
                .await?
                .into_inner())
        })
        .await
    }

    /// The answering member's status: leader, raft term, database size.
    pub async fn status(&self) -> Result<pb::StatusResponse, Error> {
        self.call(true, |ch| async move {
            let mut m = pb::maintenance_client::MaintenanceClient::new(ch);
            Ok(m.status(unary(pb::StatusRequest {})).await?.into_inner())
        })
        .await
    }
}

/// A KV client on `channel`, decoding large ranges.
fn kv(channel: Channel) -> pb::kv_client::KvClient<Channel> {
    pb::kv_client::KvClient::new(channel).max_decoding_message_size(MAX_DECODE_BYTES)
}

/// A lease client on `channel`.
fn lease(channel: Channel) -> pb::lease_client::LeaseClient<Channel> {
    pb::lease_client::LeaseClient::new(channel)
}

/// Whether the call failed on the transport (the connection broke or could
/// not be made), rather than with an answer from etcd.
fn broken_connection(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut next: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(e) = next {
        if e.is::<tonic::transport::Error>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether etcd or the transport said the member is unavailable.
fn unavailable(e: &Error) -> bool {
    matches!(e, Error::Status(s) if s.code() == tonic::Code::Unavailable)
}

/// etcd's answer when a member has no leader (it has no code of its own;
/// etcd's Go client compares this text too, as `rpctypes.ErrGRPCNoLeader`).
const NO_LEADER: &str = "etcdserver: no leader";

/// Whether the call failed before anything was applied: the connection
/// could not be made (refused or unreachable, or not within the connect
/// timeout), or the member refused it for want of a leader (`hasleader`).
fn never_sent(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() == tonic::Code::Unavailable && status.message() == NO_LEADER {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{
                AddrNotAvailable, ConnectionRefused, HostUnreachable, NetworkUnreachable,
            };
            if matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            ) {
                return true;
            }
        }
        // The endpoint's connect timeout (a call's own deadline is tonic's
        // `TimeoutExpired`, after which the outcome is unknown).
        if e.is::<tower::timeout::error::Elapsed>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The end of the range of every key that starts with `prefix`: the prefix
/// with its last byte below 0xff incremented and what follows dropped;
/// `\0` (every key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `request` with etcd's `hasleader` metadata: a member without a leader
/// refuses the call at once ("etcdserver: no leader", nothing proposed) or
/// ends the stream, instead of holding it until its request timeout
/// (writes took 10 s after the leader was killed without it).
fn require_leader<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// `request` with `hasleader` and a deadline of [`CALL_TIMEOUT`] (sent to
/// etcd as `grpc-timeout`, so it stops waiting too).
fn unary<T>(message: T) -> Request<T> {
    let mut request = require_leader(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

#[cfg(test)]
mod tests {
    use super::{Client, Error, prefix_end};

    #[tokio::test]
    async fn only_calls_that_changed_nothing_are_safe_to_send_again() {
        let no_leader = Error::Status(tonic::Status::unavailable("etcdserver: no leader"));
        assert!(no_leader.retry_safe());
        let timed_out = Error::Status(tonic::Status::unavailable("etcdserver: request timed out"));
        assert!(!timed_out.retry_safe(), "a timed-out write may still apply");
        assert!(!Error::TooManyOps(129).retry_safe());
        // A port nobody listens on: the connection is refused, nothing sent.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let client = Client::new(&[format!("http://{closed}")]).expect("client");
        let refused = client.put(b"k", b"v", 0).await.expect_err("refused");
        assert!(refused.retry_safe(), "{refused:?}");
    }

    #[test]
    fn prefix_ends_follow_etcd_rules() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"/sy/"), b"/sy0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
