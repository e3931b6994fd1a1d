//! The registry's state: leases, instances, revisions, history, watchers.
//!
//! One mutex guards it all. Every operation under it is short and never
//! awaits; the expensive parts (encoding, sending) happen in the stream tasks.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use switchyard_runtime::SharedClock;

use crate::{
    brake::{Brake, BrakeConfig},
    checks::{self, Checks},
    error::Error,
    hub::Hub,
    model::{
        DeleteReason, Event, Health, Instance, InstanceSpec, Key, Override, OverrideRequest,
        Position,
    },
    store::Store,
};

mod etcd;
mod leases;
mod listing;
mod ops;
mod watching;

pub use etcd::EtcdSettings;
pub use leases::{Registered, Renewal};
pub use listing::{Banner, BrakeView, Listing, ServiceView, Summary};
pub use watching::{SnapshotReason, WatchBody, WatchMessage};

use ops::{CheckSync, Ctx, Expect, Op, Plan};

/// Times a write is computed again when the state changed under it.
const WRITE_ATTEMPTS: usize = 5;

/// Longest a write waits for this replica to see its own commit.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Core settings (the subset of `Config` the state needs).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Warm-up after start.
    pub warm_up: Duration,
    /// Events kept for resumes.
    pub history_limit: usize,
    /// Events buffered per watcher.
    pub watch_buffer: usize,
    /// Brake thresholds.
    pub brake: BrakeConfig,
}

/// The registry.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    clock: SharedClock,
    backend: Backend,
    /// This replica's name (the owner in lease records).
    me: Arc<str>,
    cfg: CoreConfig,
    epoch: Arc<str>,
    warm_until: Instant,
    authoritative: watch::Sender<bool>,
    /// Counts resets of the whole state.
    resets: watch::Sender<u64>,
    /// The last store revision applied (etcd).
    applied: watch::Sender<u64>,
    checks: Checks,
}

/// Where writes go.
#[derive(Debug)]
enum Backend {
    /// Applied here; overrides kept by the store.
    Local(Arc<dyn Store>),
    /// Committed to etcd; applied from its watch.
    Etcd(etcd::Etcd),
}

/// Why a commit did not happen.
#[derive(Debug, Clone)]
enum Failed {
    /// The state changed since the plan was computed.
    Conflict,
    /// Anything else; the caller sees it.
    Error(Error),
}

#[derive(Debug)]
struct Inner {
    /// The last revision: of the last event (file store), or the last store
    /// revision applied (etcd).
    revision: u64,
    /// Every event after this revision is in `history`.
    floor: u64,
    services: BTreeMap<String, BTreeMap<String, Instance>>,
    leases: HashMap<u64, Lease>,
    overrides: BTreeMap<Key, Override>,
    /// Store revision of each instance's record, for compare-and-set.
    stored: HashMap<Key, u64>,
    /// Record stamps handed out by the file store.
    stamps: u64,
    history: VecDeque<Arc<Event>>,
    hub: Hub,
    brake: Brake,
    warming: bool,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    expires_at: Instant,
    instances: BTreeSet<Key>,
    held: bool,
    /// Kept by this replica: only the owner renews and expires it.
    owned: bool,
    /// Store revision of its record.
    stored: u64,
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Self::Error(e)
    }
}

// === impl Registry ===

impl Registry {
    /// A registry on the file store: a fresh random epoch, overrides from
    /// `store`, every write applied here at once.
    pub fn new(
        cfg: CoreConfig,
        clock: SharedClock,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, Error> {
        let overrides = store.load().map_err(|e| Error::Storage(e.to_string()))?;
        let epoch: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        Ok(Self::with_backend(
            cfg,
            clock,
            Backend::Local(store),
            epoch,
            "local".into(),
            overrides,
        ))
    }

    fn with_backend(
        cfg: CoreConfig,
        clock: SharedClock,
        backend: Backend,
        epoch: Arc<str>,
        me: Arc<str>,
        overrides: BTreeMap<Key, Override>,
    ) -> Arc<Self> {
        let warming = !cfg.warm_up.is_zero();
        let warm_until = clock.now() + cfg.warm_up;
        let inner = Inner {
            revision: 0,
            floor: 0,
            services: BTreeMap::new(),
            leases: HashMap::new(),
            overrides,
            stored: HashMap::new(),
            stamps: 0,
            history: VecDeque::new(),
            hub: Hub::default(),
            brake: Brake::new(cfg.brake),
            warming,
        };
        Arc::new_cyclic(|weak: &Weak<Registry>| Self {
            inner: Mutex::new(inner),
            clock,
            backend,
            me,
            epoch,
            warm_until,
            authoritative: watch::Sender::new(!warming),
            resets: watch::Sender::new(0),
            applied: watch::Sender::new(0),
            checks: Checks::new(Arc::new(HealthSink(weak.clone()))),
            cfg,
        })
    }

    /// This run's epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Follows the authoritative flag.
    pub fn authoritative_changes(&self) -> watch::Receiver<bool> {
        self.authoritative.subscribe()
    }

    /// Ticks once per reset of the whole state (etcd relisted it): every
    /// watch must resynchronise.
    pub fn resets(&self) -> watch::Receiver<u64> {
        self.resets.subscribe()
    }

    /// Removes one instance. With `owner`, only if that lease owns it.
    pub async fn deregister(&self, key: &Key, owner: Option<u64>) -> Result<Position, Error> {
        self.write(|inner, plan| {
            let lease_id = inner
                .get(key)
                .map(|i| i.lease_id)
                .ok_or_else(|| not_found(key))?;
            if owner.is_some_and(|o| o != lease_id) {
                return Err(Error::PermissionDenied(
                    "lease_id: the instance belongs to another lease".into(),
                ));
            }
            inner.plan_remove(plan, key, DeleteReason::Deregistered);
            Ok(())
        })
        .await
        .map(|((), position)| position)
    }

    /// Removes every instance of `service` (an operator's call); how many.
    pub async fn deregister_service(&self, service: &str) -> Result<(u32, Position), Error> {
        self.write(|inner, plan| {
            let keys: Vec<Key> = inner
                .services
                .get(service)
                .map(|m| {
                    m.keys()
                        .map(|id| Key {
                            service: service.into(),
                            instance_id: id.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            for key in &keys {
                inner.plan_remove(plan, key, DeleteReason::Deregistered);
            }
            Ok(u32::try_from(keys.len()).unwrap_or(u32::MAX))
        })
        .await
    }

    /// Sets or clears the operator's override. Durable before it is visible.
    pub async fn set_state(
        &self,
        key: &Key,
        request: &OverrideRequest,
    ) -> Result<(Instance, Position), Error> {
        let wall = self.clock.wall();
        self.write(|inner, plan| {
            inner.get(key).ok_or_else(|| not_found(key))?;
            plan.expect(Expect::Instance(key.clone(), inner.instance_stamp(key)));
            plan.push(if request.clear {
                Op::DeleteOverride(key.clone())
            } else {
                Op::PutOverride(key.clone(), inner.next_override(key, request, wall))
            });
            Ok(())
        })
        .await?;
        let inner = self.lock();
        let instance = inner.get(key).cloned().ok_or_else(|| not_found(key))?;
        Ok((instance, inner.position(&self.epoch)))
    }

    /// Drops the overrides whose expiry has passed; how many. Each is a
    /// write of its own, made again from what the registry then holds: an
    /// override an operator has just set again is left alone. On etcd
    /// every replica may try; a replica that lost the race finds nothing
    /// due.
    pub async fn expire_overrides(&self) -> usize {
        let wall = self.clock.wall();
        let due = self.lock().due_overrides(wall);
        let mut dropped = 0;
        for key in due {
            let done = self
                .write(|inner, plan| {
                    let still_due = inner
                        .overrides
                        .get(&key)
                        .and_then(|o| o.expires_at)
                        .is_some_and(|t| t <= wall);
                    if !still_due {
                        return Ok(false);
                    }
                    plan.expect(Expect::Instance(key.clone(), inner.instance_stamp(&key)));
                    plan.push(Op::DeleteOverride(key.clone()));
                    Ok(true)
                })
                .await;
            match done {
                Ok((true, _)) => {
                    tracing::info!(instance = %key, "operator override expired");
                    dropped += 1;
                }
                Ok((false, _)) => {}
                Err(error) => {
                    tracing::warn!(instance = %key, %error, "an expired operator override could not be dropped yet")
                }
            }
        }
        dropped
    }

    /// Records an active check's result (from `checks`), if the instance
    /// still has the spec the check was started for; whether it had.
    fn set_health(
        self: &Arc<Self>,
        key: &Key,
        spec: &Arc<InstanceSpec>,
        health: Health,
        detail: String,
    ) -> bool {
        let mut inner = self.lock();
        if !inner.has_spec(key, spec) {
            return false;
        }
        let wall = self.clock.wall();
        let Some(next) = inner.updated(key, |i| {
            if i.health != health {
                i.health_changed_at = Some(wall);
            }
            i.health = health;
            i.health_detail = detail;
        }) else {
            return true;
        };
        let mut plan = Plan::default();
        plan.expect(Expect::Instance(key.clone(), inner.instance_stamp(key)));
        plan.push(Op::PutInstance(next));
        match &self.backend {
            Backend::Local(store) => {
                let checks = self.apply_local(&mut inner, store, plan);
                drop(inner);
                if let Err(e) = checks {
                    tracing::warn!(instance = %key, error = ?e, "health result not recorded");
                }
                true
            }
            Backend::Etcd(_) => {
                drop(inner);
                // Results arrive every interval: one lost to a conflict or
                // an unreachable etcd is followed by the next.
                let registry = self.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    if let Err(e) = registry.commit(plan).await {
                        tracing::debug!(instance = %key, error = ?e, "health result not recorded");
                    }
                });
                true
            }
        }
    }

    /// Stops every health check (shutdown).
    pub fn stop_checks(&self) {
        self.checks.stop_all();
    }

    /// Computes a write with `f` under the lock and commits it, computing
    /// again (a few times) when the state changed in between: what `f`
    /// returns and the position after the write.
    async fn write<T>(
        &self,
        mut f: impl FnMut(&Inner, &mut Plan) -> Result<T, Error>,
    ) -> Result<(T, Position), Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let mut plan = Plan::default();
            let out = f(&self.lock(), &mut plan)?;
            match self.commit(plan).await {
                Ok(()) => return Ok((out, self.position())),
                Err(Failed::Conflict) => continue,
                Err(Failed::Error(e)) => return Err(e),
            }
        }
        Err(Error::Unavailable(
            "the instances kept changing while this write was made; send it again".into(),
        ))
    }

    /// Commits `plan`: applied here at once on the file store; on etcd,
    /// one transaction, returned once this replica has applied it.
    async fn commit(&self, plan: Plan) -> Result<(), Failed> {
        if plan.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Local(store) => {
                let checks = {
                    let mut inner = self.lock();
                    if !inner.holds(&plan.expects) {
                        return Err(Failed::Conflict);
                    }
                    self.apply_local(&mut inner, store, plan)?
                };
                self.sync_checks(checks);
                Ok(())
            }
            Backend::Etcd(etcd) => {
                let (revision, succeeded) = etcd.commit(plan).await?;
                // Even a refused write waits: it is computed again from
                // the state that refused it.
                self.caught_up(revision).await?;
                if succeeded {
                    Ok(())
                } else {
                    Err(Failed::Conflict)
                }
            }
        }
    }

    /// Applies `plan` on the file store: overrides are written to disk
    /// first (nothing changes when that fails), each op then takes the next
    /// revision.
    fn apply_local(
        &self,
        inner: &mut Inner,
        store: &Arc<dyn Store>,
        plan: Plan,
    ) -> Result<Vec<CheckSync>, Failed> {
        for op in &plan.ops {
            match op {
                Op::PutOverride(key, value) => store.put(key, value),
                Op::DeleteOverride(key) => store.delete(key),
                _ => Ok(()),
            }
            .map_err(|e| Failed::Error(Error::Storage(e.to_string())))?;
        }
        let ctx = Ctx {
            cfg: &self.cfg,
            me: &self.me,
            now: self.clock.now(),
            wall: self.clock.wall(),
        };
        let mut checks = Vec::new();
        for op in plan.ops {
            inner.stamps += 1;
            let (revision, stamp) = (inner.revision + 1, inner.stamps);
            inner.apply(op, revision, stamp, ctx, &mut checks);
        }
        Ok(checks)
    }

    /// Starts and stops checks (outside the lock: results come back
    /// through it).
    fn sync_checks(&self, checks: Vec<CheckSync>) {
        for (key, spec) in checks {
            self.checks.sync(&key, spec);
        }
    }

    /// Waits until this replica has applied `revision` (etcd).
    /// Before answering that `lease_id` is unknown: waits until this
    /// replica has applied everything etcd had when asked, so the answer
    /// is not a lagging follower's (a client that moves here right after
    /// registering elsewhere would otherwise lose its lease). The file
    /// store has nothing to wait for.
    async fn settle_unknown_lease(&self, lease_id: u64) -> Result<(), Error> {
        let Backend::Etcd(etcd) = &self.backend else {
            return Ok(());
        };
        if self.lock().leases.contains_key(&lease_id) {
            return Ok(());
        }
        let revision = etcd.head(lease_id).await?;
        self.caught_up(revision).await
    }

    async fn caught_up(&self, revision: u64) -> Result<(), Error> {
        let mut applied = self.applied.subscribe();
        let wait = applied.wait_for(|r| *r >= revision);
        match tokio::time::timeout(CATCH_UP, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Unavailable(format!(
                "the write was committed at revision {revision} but this replica has not seen it yet"
            ))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation completes before the guard drops; a panic in one
        // would be a bug, and the maps stay consistent enough to serve reads.
        switchyard_time::sync::lock(&self.inner)
    }
}

/// The checks' sink: results go into the registry while it lives.
#[derive(Debug)]
struct HealthSink(Weak<Registry>);

impl checks::Sink for HealthSink {
    fn health(&self, key: &Key, spec: &Arc<InstanceSpec>, health: Health, detail: String) -> bool {
        self.0
            .upgrade()
            .is_some_and(|r| r.set_health(key, spec, health, detail))
    }

    fn wanted(&self, key: &Key, spec: &Arc<InstanceSpec>) -> bool {
        self.0
            .upgrade()
            .is_some_and(|r| r.lock().has_spec(key, spec))
    }
}

fn not_found(key: &Key) -> Error {
    Error::NotFound {
        field: "instance_id",
        what: format!("instance {key}"),
    }
}

// === impl Inner ===

impl Inner {
    fn authoritative(&self) -> bool {
        !self.warming && self.brake.engaged().is_none()
    }

    fn position(&self, epoch: &Arc<str>) -> Position {
        Position {
            epoch: epoch.clone(),
            revision: self.revision,
        }
    }

    /// Whether the instance at `key` has `spec` (the same one or an equal).
    fn has_spec(&self, key: &Key, spec: &Arc<InstanceSpec>) -> bool {
        self.get(key)
            .is_some_and(|i| Arc::ptr_eq(&i.spec, spec) || *i.spec == **spec)
    }

    fn get(&self, key: &Key) -> Option<&Instance> {
        self.services.get(&key.service)?.get(&key.instance_id)
    }
}
