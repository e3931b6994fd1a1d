//! The registration session: register, keep alive, re-register after a
//! lost lease or a registry restart, and drain on shutdown.
//!
//! One lease and one KeepAlive stream per session, however many instances
//! it owns (etcd-io/etcd#11886: a lease per instance does not scale). What
//! it re-registers is always its *current* state (apache/curator#702).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use switchyard_proto::registry::v1::{self as pb, keep_alive_response::Result as Renewal};
use switchyard_time::Backoff;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::connect::{Client, Target};

/// A running registration session. Dropping it stops the session without
/// deregistering: the lease then lapses after its TTL. Call
/// [`shutdown`](Self::shutdown) to drain and deregister.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What the session has achieved so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStatus {
    /// The lease, once registered.
    pub lease_id: Option<u64>,
    /// The registry epoch last seen.
    pub epoch: String,
    /// Every change up to this version is registered.
    pub registered_version: u64,
    /// Full registrations done (the first, and one per lost lease).
    pub registrations: u64,
}

#[derive(Debug)]
struct Shared {
    owned: Mutex<Owned>,
    changed: Notify,
    status: watch::Sender<SessionStatus>,
}

#[derive(Debug, Default)]
struct Owned {
    specs: BTreeMap<(String, String), pb::InstanceSpec>,
    removed: Vec<(String, String)>,
    version: u64,
}

/// Why the session could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The registry did not confirm in time.
    #[error("the registry did not confirm within {0:?}")]
    Timeout(Duration),
    /// The session task is gone.
    #[error("the session has stopped")]
    Stopped,
}

// === impl Session ===

impl Session {
    /// Starts a session against `target` with leases of `ttl` (2 to 300 s).
    /// It connects in the background, with backoff capped at `ttl / 3`.
    pub fn start(mut target: Target, ttl: Duration) -> Self {
        target.backoff_cap = target.backoff_cap.min(ttl / 3);
        let shared = Arc::new(Shared {
            owned: Mutex::new(Owned::default()),
            changed: Notify::new(),
            status: watch::Sender::new(SessionStatus::default()),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(target, ttl, shared.clone(), stop.clone()));
        Self {
            shared,
            stop,
            task: Some(task),
        }
    }

    /// Adds (or replaces) an instance this session owns.
    pub fn register(&self, spec: pb::InstanceSpec) {
        self.change(|o| {
            let key = (spec.service.clone(), spec.instance_id.clone());
            o.removed.retain(|k| *k != key);
            o.specs.insert(key, spec);
        });
    }

    /// Changes the state the session registers for one instance.
    pub fn set_state(&self, service: &str, instance_id: &str, state: pb::State) {
        self.change(|o| {
            if let Some(spec) = o
                .specs
                .get_mut(&(service.to_string(), instance_id.to_string()))
            {
                spec.state = state as i32;
            }
        });
    }

    /// Stops owning an instance and deregisters it.
    pub fn deregister(&self, service: &str, instance_id: &str) {
        self.change(|o| {
            let key = (service.to_string(), instance_id.to_string());
            if o.specs.remove(&key).is_some() {
                o.removed.push(key);
            }
        });
    }

    /// Follows the session's progress.
    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.shared.status.subscribe()
    }

    /// Waits until every change made so far is registered; returns the lease.
    pub async fn registered(&self, timeout: Duration) -> Result<u64, SessionError> {
        let version = self.lock().version;
        let mut status = self.status();
        let wait = status.wait_for(|s| s.registered_version >= version && s.lease_id.is_some());
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => s.lease_id.ok_or(SessionError::Stopped),
            Ok(Err(_)) => Err(SessionError::Stopped),
            Err(_) => Err(SessionError::Timeout(timeout)),
        }
    }

    /// Drains: registers every instance as DRAINING, keeps serving for
    /// `drain_delay` (so balancers and gateways stop sending first), then
    /// revokes the lease and stops.
    pub async fn shutdown(mut self, drain_delay: Duration) {
        self.change(|o| {
            for spec in o.specs.values_mut() {
                spec.state = pb::State::Draining as i32;
            }
        });
        if let Err(error) = self.registered(Duration::from_secs(2)).await {
            tracing::warn!(%error, "could not announce DRAINING; stopping anyway");
        }
        tracing::info!(?drain_delay, "draining");
        tokio::time::sleep(drain_delay).await;
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn change(&self, f: impl FnOnce(&mut Owned)) {
        {
            let mut owned = self.lock();
            f(&mut owned);
            owned.version += 1;
        }
        self.shared.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Owned> {
        switchyard_time::sync::lock(&self.shared.owned)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// === the session task ===

async fn run(target: Target, ttl: Duration, shared: Arc<Shared>, stop: CancellationToken) {
    let mut lease_id = 0u64;
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        (ttl / 3).max(Duration::from_millis(200)),
    );
    loop {
        let Some(mut client) = target.connect(&stop).await else {
            return;
        };
        match session_on(&mut client, ttl, &shared, &mut lease_id, &stop).await {
            Ok(()) => {
                revoke(&mut client, lease_id).await;
                return;
            }
            Err(error) => tracing::warn!(%error, "registry session interrupted; reconnecting"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => {
                // One bounded try to deregister; otherwise the lease lapses.
                let never = CancellationToken::new();
                let reconnect = target.connect(&never);
                if let Ok(Some(mut client)) = tokio::time::timeout(Duration::from_secs(2), reconnect).await {
                    revoke(&mut client, lease_id).await;
                }
                return;
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connected stretch: register, then keep alive until an error (Err)
/// or until stopped (Ok).
async fn session_on(
    client: &mut Client,
    ttl: Duration,
    shared: &Shared,
    lease_id: &mut u64,
    stop: &CancellationToken,
) -> Result<(), tonic::Status> {
    sync(client, ttl, shared, lease_id).await?;
    let (tx, rx) = mpsc::channel(4);
    let mut answers = client
        .keep_alive(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut ticker = tokio::time::interval(ttl / 3);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                if *lease_id != 0 && tx.send(pb::KeepAliveRequest { lease_id: *lease_id }).await.is_err() {
                    return Err(tonic::Status::unavailable("keep-alive stream closed"));
                }
            }
            answer = answers.message() => {
                let Some(answer) = answer? else {
                    return Err(tonic::Status::unavailable("keep-alive stream ended"));
                };
                shared.status.send_modify(|s| s.epoch.clone_from(&answer.epoch));
                if answer.result() == Renewal::UnknownLease && answer.lease_id == *lease_id {
                    tracing::warn!(lease_id = *lease_id, "registry lost our lease; registering again");
                    *lease_id = 0;
                    sync(client, ttl, shared, lease_id).await?;
                }
            }
            () = shared.changed.notified() => sync(client, ttl, shared, lease_id).await?,
        }
    }
}

/// Brings the registry in line with what the session owns now.
async fn sync(
    client: &mut Client,
    ttl: Duration,
    shared: &Shared,
    lease_id: &mut u64,
) -> Result<(), tonic::Status> {
    let (specs, removed, version) = {
        let mut owned = switchyard_time::sync::lock(&shared.owned);
        let removed = std::mem::take(&mut owned.removed);
        (
            owned.specs.values().cloned().collect::<Vec<_>>(),
            removed,
            owned.version,
        )
    };
    for (service, instance_id) in removed {
        if *lease_id == 0 {
            break;
        }
        let req = pb::DeregisterRequest {
            service,
            instance_id,
            lease_id: *lease_id,
        };
        match client.deregister(req).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(s),
        }
    }
    let fresh = *lease_id == 0;
    for chunk in specs.chunks(1000) {
        let req = pb::RegisterRequest {
            lease_id: *lease_id,
            ttl_seconds: u32::try_from(ttl.as_secs()).unwrap_or(10),
            instances: chunk.to_vec(),
        };
        let answer = match client.register(req.clone()).await {
            Err(s) if s.code() == Code::NotFound && *lease_id != 0 => {
                tracing::warn!(
                    lease_id = *lease_id,
                    "lease unknown to the registry; opening a new one"
                );
                *lease_id = 0;
                return Box::pin(sync(client, ttl, shared, lease_id)).await;
            }
            other => other?.into_inner(),
        };
        *lease_id = answer.lease_id;
    }
    shared.status.send_modify(|s| {
        s.lease_id = (*lease_id != 0).then_some(*lease_id);
        s.registered_version = s.registered_version.max(version);
        if fresh && !specs.is_empty() {
            s.registrations += 1;
        }
    });
    Ok(())
}

async fn revoke(client: &mut Client, lease_id: u64) {
    if lease_id == 0 {
        return;
    }
    let req = pb::RevokeLeaseRequest { lease_id };
    match tokio::time::timeout(Duration::from_secs(1), client.revoke_lease(req)).await {
        Ok(Ok(_)) => tracing::info!(lease_id, "deregistered"),
        Ok(Err(error)) => tracing::warn!(%error, "could not revoke the lease; it will lapse"),
        Err(_) => tracing::warn!("revoking the lease timed out; it will lapse"),
    }
}
