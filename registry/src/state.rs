//! The registry's state: leases, instances, revisions, history, watchers.
//!
//! One mutex guards it all. Every operation under it is short and never
//! awaits; the expensive parts (encoding, sending) happen in the stream tasks.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;

use switchyard_runtime::SharedClock;

use crate::{
    brake::{Brake, BrakeConfig, Engaged},
    checks::Checks,
    error::Error,
    hub::{Hub, Subscription},
    model::{
        Change, DeleteReason, Event, Health, Instance, InstanceSpec, Key, Override, Position, State,
    },
    store::Store,
};

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
    store: Arc<dyn Store>,
    cfg: CoreConfig,
    epoch: Arc<str>,
    warm_until: Instant,
    authoritative: watch::Sender<bool>,
    checks: Checks,
}

#[derive(Debug)]
struct Inner {
    revision: u64,
    services: BTreeMap<String, BTreeMap<String, Instance>>,
    leases: HashMap<u64, Lease>,
    overrides: BTreeMap<Key, Override>,
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
}

/// Result of a registration.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The lease.
    pub lease_id: u64,
    /// Its TTL in seconds.
    pub ttl_secs: u32,
    /// The registry's position after it.
    pub position: Position,
}

/// Result of a keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed for this many seconds.
    Renewed(u32),
    /// The lease is unknown: register again.
    Unknown,
}

/// One service's instances.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// Ordered by instance id.
    pub instances: Vec<Instance>,
    /// Where the registry was.
    pub position: Position,
    /// False during warm-up and while the brake holds.
    pub authoritative: bool,
}

/// Counts for one service.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The service.
    pub service: String,
    /// Instances by effective state.
    pub by_state: BTreeMap<&'static str, u32>,
    /// Instances in total.
    pub instances: u32,
    /// Instances whose check fails.
    pub unhealthy: u32,
    /// Instances held by the brake.
    pub expired_held: u32,
    /// Revision of the last change.
    pub mod_revision: u64,
}

/// The brake as ListServices shows it.
#[derive(Debug, Clone, Default)]
pub struct BrakeView {
    /// Engaged details.
    pub engaged: Option<(SystemTime, SystemTime, String)>,
    /// Leases held.
    pub held_leases: u32,
}

/// Every service.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Per service.
    pub services: Vec<Summary>,
    /// The brake.
    pub brake: BrakeView,
    /// In warm-up.
    pub warming_up: bool,
    /// Live leases.
    pub leases: u32,
    /// Where the registry was.
    pub position: Position,
    /// False during warm-up and while the brake holds.
    pub authoritative: bool,
}

/// Why a snapshot is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// A new watch.
    Initial,
    /// `since` is from another epoch.
    OtherEpoch,
    /// `since` is ahead of the registry.
    FutureRevision,
    /// `since` is older than the history.
    Compacted,
    /// The watcher's buffer overflowed.
    SlowWatcher,
}

/// What a watch message carries.
#[derive(Debug, Clone)]
pub enum WatchBody {
    /// Full state of the watched services.
    Snapshot {
        /// The instances.
        instances: Vec<Instance>,
        /// Drop what you hold.
        reset: bool,
        /// Why.
        reason: SnapshotReason,
    },
    /// Ordered events.
    Delta(Vec<Arc<Event>>),
    /// Nothing changed.
    Progress,
}

/// One message on a watch stream.
#[derive(Debug, Clone)]
pub struct WatchMessage {
    /// The content.
    pub body: WatchBody,
    /// Position after it.
    pub position: Position,
    /// Whether empty views may be applied.
    pub authoritative: bool,
}

// === impl Registry ===

impl Registry {
    /// A fresh registry with a new random epoch; overrides come from `store`.
    pub fn new(
        cfg: CoreConfig,
        clock: SharedClock,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, Error> {
        let overrides = store.load().map_err(|e| Error::Storage(e.to_string()))?;
        let epoch: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        let warming = !cfg.warm_up.is_zero();
        let warm_until = clock.now() + cfg.warm_up;
        let inner = Inner {
            revision: 0,
            services: BTreeMap::new(),
            leases: HashMap::new(),
            overrides,
            history: VecDeque::new(),
            hub: Hub::default(),
            brake: Brake::new(cfg.brake),
            warming,
        };
        Ok(Arc::new_cyclic(|weak: &Weak<Registry>| Self {
            inner: Mutex::new(inner),
            clock,
            store,
            epoch,
            warm_until,
            authoritative: watch::Sender::new(!warming),
            checks: Checks::new(weak.clone()),
            cfg,
        }))
    }

    /// This run's epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Follows the authoritative flag.
    pub fn authoritative_changes(&self) -> watch::Receiver<bool> {
        self.authoritative.subscribe()
    }

    /// Registers `specs` under `lease_id` (0 opens a new lease with `ttl_secs`).
    /// An instance another live lease holds is taken over only by an
    /// `operator`; otherwise nothing is registered and the error names it.
    pub fn register(
        &self,
        lease_id: u64,
        ttl_secs: u32,
        specs: Vec<InstanceSpec>,
        operator: bool,
    ) -> Result<Registered, Error> {
        let now = self.clock.now();
        let wall = self.clock.wall();
        let mut inner = self.lock();
        if !operator {
            for (n, spec) in specs.iter().enumerate() {
                let key = Key::of(spec);
                if inner.held_by_another(&key, lease_id) {
                    return Err(Error::Held {
                        field: format!("instances[{n}]"),
                        key: key.to_string(),
                    });
                }
            }
        }
        let (lease_id, ttl) = if lease_id == 0 {
            let id = inner.new_lease_id();
            let ttl = Duration::from_secs(u64::from(ttl_secs));
            let lease = Lease {
                ttl,
                expires_at: now + ttl,
                instances: BTreeSet::new(),
                held: false,
            };
            inner.leases.insert(id, lease);
            (id, ttl)
        } else {
            match inner.leases.get(&lease_id) {
                Some(lease) => (lease_id, lease.ttl),
                None => {
                    return Err(Error::NotFound {
                        field: "lease_id",
                        what: format!("lease {lease_id}"),
                    });
                }
            }
        };
        for spec in specs {
            let checked = spec.health_check.is_some().then(|| spec.clone());
            let key = Key::of(&spec);
            inner.put_registration(key.clone(), spec, lease_id, wall, &self.cfg);
            self.checks.sync(&key, checked.map(Arc::new));
        }
        metrics::counter!("switchyard_registry_registrations_total").increment(1);
        Ok(Registered {
            lease_id,
            ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            position: inner.position(&self.epoch),
        })
    }

    /// Renews `lease_id`. A lease held by the brake comes back whole.
    pub fn keep_alive(&self, lease_id: u64) -> Renewal {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(lease) = inner.leases.get_mut(&lease_id) else {
            return Renewal::Unknown;
        };
        lease.expires_at = now + lease.ttl;
        let ttl = u32::try_from(lease.ttl.as_secs()).unwrap_or(u32::MAX);
        if lease.held {
            lease.held = false;
            let keys: Vec<Key> = lease.instances.iter().cloned().collect();
            for key in keys {
                inner.update(&key, &self.cfg, |i| i.expired_held = false);
            }
        }
        Renewal::Renewed(ttl)
    }

    /// Removes one instance. With `owner`, only if that lease owns it.
    pub fn deregister(&self, key: &Key, owner: Option<u64>) -> Result<Position, Error> {
        let mut inner = self.lock();
        let lease_id = inner
            .get(key)
            .map(|i| i.lease_id)
            .ok_or_else(|| not_found(key))?;
        if owner.is_some_and(|o| o != lease_id) {
            return Err(Error::PermissionDenied(
                "lease_id: the instance belongs to another lease".into(),
            ));
        }
        inner.remove(key, DeleteReason::Deregistered, &self.cfg);
        drop(inner);
        self.checks.sync(key, None);
        Ok(self.position())
    }

    /// Removes every instance of `service` (an operator's call); how many.
    pub fn deregister_service(&self, service: &str) -> (u32, Position) {
        let mut inner = self.lock();
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
            inner.remove(key, DeleteReason::Deregistered, &self.cfg);
        }
        let position = inner.position(&self.epoch);
        drop(inner);
        for key in &keys {
            self.checks.sync(key, None);
        }
        (u32::try_from(keys.len()).unwrap_or(u32::MAX), position)
    }

    /// Ends a lease and removes its instances.
    pub fn revoke(&self, lease_id: u64) -> Result<(u32, Position), Error> {
        let mut inner = self.lock();
        let keys = inner
            .drop_lease(lease_id, DeleteReason::Revoked, &self.cfg)
            .ok_or_else(|| Error::NotFound {
                field: "lease_id",
                what: format!("lease {lease_id}"),
            })?;
        let position = inner.position(&self.epoch);
        drop(inner);
        for key in &keys {
            self.checks.sync(key, None);
        }
        Ok((u32::try_from(keys.len()).unwrap_or(u32::MAX), position))
    }

    /// Sets or clears the operator's override. Durable before it is visible.
    pub fn set_state(
        &self,
        key: &Key,
        state: Option<State>,
        weight: Option<u32>,
        clear: bool,
    ) -> Result<(Instance, Position), Error> {
        let wall = self.clock.wall();
        let mut inner = self.lock();
        let current = inner.get(key).ok_or_else(|| not_found(key))?;
        let next = if clear {
            None
        } else {
            let base = current.overrides.clone();
            Some(Override {
                state: state.or(base.as_ref().and_then(|o| o.state)),
                weight: weight.or(base.as_ref().and_then(|o| o.weight)),
                updated_at: wall,
            })
        };
        match &next {
            Some(o) => self.store.put(key, o),
            None => self.store.delete(key),
        }
        .map_err(|e| Error::Storage(e.to_string()))?;
        match &next {
            Some(o) => inner.overrides.insert(key.clone(), o.clone()),
            None => inner.overrides.remove(key),
        };
        inner.update(key, &self.cfg, |i| i.overrides = next.clone());
        let instance = inner.get(key).cloned().ok_or_else(|| not_found(key))?;
        Ok((instance, inner.position(&self.epoch)))
    }

    /// Records an active check's result (from `checks`).
    pub(crate) fn set_health(
        &self,
        key: &Key,
        spec: &Arc<InstanceSpec>,
        health: Health,
        detail: String,
    ) {
        let mut inner = self.lock();
        // Only if the instance still has the spec the check was started for.
        if inner
            .get(key)
            .is_some_and(|i| Arc::ptr_eq(&i.spec, spec) || *i.spec == **spec)
        {
            inner.update(key, &self.cfg, |i| {
                i.health = health;
                i.health_detail = detail;
            });
        }
    }

    /// One service.
    pub fn service(&self, name: &str) -> ServiceView {
        let inner = self.lock();
        let instances = inner
            .services
            .get(name)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        ServiceView {
            instances,
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        }
    }

    /// Every service, with counts.
    pub fn list(&self) -> Listing {
        let inner = self.lock();
        let services = inner
            .services
            .iter()
            .map(|(name, instances)| summarize(name, instances))
            .collect();
        let held = inner.leases.values().filter(|l| l.held).count();
        let brake = BrakeView {
            engaged: inner.brake.engaged().map(
                |Engaged {
                     at_wall, reason, ..
                 }| {
                    (*at_wall, *at_wall + inner.brake.max_hold(), reason.clone())
                },
            ),
            held_leases: u32::try_from(held).unwrap_or(u32::MAX),
        };
        Listing {
            services,
            brake,
            warming_up: inner.warming,
            leases: u32::try_from(inner.leases.len()).unwrap_or(u32::MAX),
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        }
    }

    /// The current position.
    pub fn position(&self) -> Position {
        self.lock().position(&self.epoch)
    }

    /// Opens a watch: the first message and the subscription, atomically.
    pub fn subscribe(
        &self,
        services: Option<BTreeSet<String>>,
        since: Option<Position>,
    ) -> (WatchMessage, Subscription) {
        let mut inner = self.lock();
        let sub = inner.hub.add(services.clone(), self.cfg.watch_buffer);
        let body = match since {
            None => inner.snapshot(&sub, false, SnapshotReason::Initial),
            Some(since) => inner.resume(&sub, &since, &self.epoch),
        };
        let message = WatchMessage {
            body,
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        };
        (message, sub)
    }

    /// A reset snapshot for a watcher whose buffer overflowed.
    pub fn resync(&self, sub: &mut Subscription) -> WatchMessage {
        let inner = self.lock();
        sub.reset();
        WatchMessage {
            body: inner.snapshot(sub, true, SnapshotReason::SlowWatcher),
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        }
    }

    /// A progress message, only when the watcher has nothing buffered: its
    /// position is the registry's, so a resume from it must not skip events.
    pub fn progress(&self, sub: &Subscription) -> Option<WatchMessage> {
        let inner = self.lock();
        if !sub.rx.is_empty() || sub.overflowed() {
            return None;
        }
        Some(WatchMessage {
            body: WatchBody::Progress,
            position: inner.position(&self.epoch),
            authoritative: inner.authoritative(),
        })
    }

    /// A delta message for `events` (taken from a subscription).
    pub fn delta(&self, events: Vec<Arc<Event>>) -> WatchMessage {
        let last = events.last().map_or(0, |e| e.revision);
        let inner = self.lock();
        WatchMessage {
            body: WatchBody::Delta(events),
            position: Position {
                epoch: self.epoch.clone(),
                revision: last,
            },
            authoritative: inner.authoritative(),
        }
    }

    /// Removes a watcher.
    pub fn unsubscribe(&self, id: u64) {
        self.lock().hub.remove(id);
    }

    /// Watchers connected.
    pub fn watchers(&self) -> usize {
        self.lock().hub.len()
    }

    /// The next time `tick` has work, at most `cap` away.
    pub fn next_deadline(&self, cap: Duration) -> Instant {
        let now = self.clock.now();
        let inner = self.lock();
        let mut next = now + cap;
        if inner.warming {
            next = next.min(self.warm_until);
        }
        for lease in inner.leases.values().filter(|l| !l.held) {
            next = next.min(lease.expires_at);
        }
        next
    }

    /// Expires lapsed leases (or holds them behind the brake), ends warm-up,
    /// and lets the brake go when its time is up.
    pub fn tick(&self) {
        let now = self.clock.now();
        let wall = self.clock.wall();
        let mut inner = self.lock();
        let was = inner.authoritative();
        if inner.warming && now >= self.warm_until {
            inner.warming = false;
            tracing::info!("warm-up over; snapshots are authoritative");
        }
        let mut expired = Vec::new();
        let due = inner.due_leases(now);
        if !due.is_empty() {
            let recent = inner.brake.recent(now);
            let late = inner
                .leases
                .values()
                .filter(|l| !l.held && l.expires_at <= now + l.ttl / 3)
                .count();
            let population = inner.leases.values().filter(|l| !l.held).count() + recent;
            if inner.brake.evaluate(now, wall, recent + late, population) {
                let reason = inner
                    .brake
                    .engaged()
                    .map(|e| e.reason.clone())
                    .unwrap_or_default();
                tracing::warn!(%reason, "mass-expiry brake engaged: holding lapsed leases");
                metrics::counter!("switchyard_registry_brake_engagements_total").increment(1);
            }
            inner.brake.record(now, due.len());
            for id in due {
                if inner.brake.engaged().is_some() {
                    inner.hold_lease(id, &self.cfg);
                } else if let Some(keys) = inner.drop_lease(id, DeleteReason::Expired, &self.cfg) {
                    metrics::counter!("switchyard_registry_lease_expirations_total").increment(1);
                    expired.extend(keys);
                }
            }
        }
        let held = inner.leases.values().filter(|l| l.held).count();
        if inner.brake.should_release(now, held) {
            let ids: Vec<u64> = inner
                .leases
                .iter()
                .filter(|(_, l)| l.held)
                .map(|(id, _)| *id)
                .collect();
            tracing::warn!(
                held = ids.len(),
                "mass-expiry brake released; expiring what it held"
            );
            inner.brake.release();
            for id in ids {
                expired.extend(
                    inner
                        .drop_lease(id, DeleteReason::Expired, &self.cfg)
                        .unwrap_or_default(),
                );
            }
        }
        let is = inner.authoritative();
        drop(inner);
        for key in &expired {
            self.checks.sync(key, None);
        }
        if was != is {
            self.authoritative.send_replace(is);
        }
    }

    /// Stops every health check (shutdown).
    pub fn stop_checks(&self) {
        self.checks.stop_all();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation completes before the guard drops; a panic in one
        // would be a bug, and the maps stay consistent enough to serve reads.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn not_found(key: &Key) -> Error {
    Error::NotFound {
        field: "instance_id",
        what: format!("instance {key}"),
    }
}

fn summarize(name: &str, instances: &BTreeMap<String, Instance>) -> Summary {
    let mut s = Summary {
        service: name.to_string(),
        ..Summary::default()
    };
    for i in instances.values() {
        s.instances += 1;
        *s.by_state.entry(i.state().as_str()).or_default() += 1;
        s.unhealthy += u32::from(i.health == Health::Unhealthy);
        s.expired_held += u32::from(i.expired_held);
        s.mod_revision = s.mod_revision.max(i.mod_revision);
    }
    s
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

    fn new_lease_id(&self) -> u64 {
        // Below 2^53 so JSON clients read it exactly; never 0.
        loop {
            let id = rand::random::<u64>() >> 11;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Whether `key` is held by a live lease other than `lease_id` (one
    /// that lapsed, even if the expiry brake keeps it, holds nothing).
    fn held_by_another(&self, key: &Key, lease_id: u64) -> bool {
        self.get(key).is_some_and(|i| {
            i.lease_id != lease_id
                && !i.expired_held
                && self.leases.get(&i.lease_id).is_some_and(|l| !l.held)
        })
    }

    fn get(&self, key: &Key) -> Option<&Instance> {
        self.services.get(&key.service)?.get(&key.instance_id)
    }

    fn emit(&mut self, change: Change, mut instance: Instance, cfg: &CoreConfig) -> Instance {
        self.revision += 1;
        instance.mod_revision = self.revision;
        let event = Arc::new(Event {
            revision: self.revision,
            change,
            instance: instance.clone(),
        });
        self.history.push_back(event.clone());
        while self.history.len() > cfg.history_limit {
            self.history.pop_front();
        }
        self.hub.publish(&event);
        instance
    }

    fn put_registration(
        &mut self,
        key: Key,
        spec: InstanceSpec,
        lease_id: u64,
        wall: SystemTime,
        cfg: &CoreConfig,
    ) {
        let previous = self.get(&key).cloned();
        if let Some(prev) = &previous {
            if prev.lease_id != lease_id {
                if let Some(old) = self.leases.get_mut(&prev.lease_id) {
                    old.instances.remove(&key);
                }
            }
        }
        if let Some(lease) = self.leases.get_mut(&lease_id) {
            lease.instances.insert(key.clone());
        }
        let next = match previous {
            Some(prev) => {
                let same_check = prev.spec.health_check == spec.health_check
                    && prev.spec.address == spec.address;
                if *prev.spec == spec && prev.lease_id == lease_id && !prev.expired_held {
                    return; // idempotent: nothing changed
                }
                Instance {
                    spec: Arc::new(spec),
                    lease_id,
                    health: if same_check {
                        prev.health
                    } else {
                        Health::Unknown
                    },
                    health_detail: if same_check {
                        prev.health_detail
                    } else {
                        String::new()
                    },
                    expired_held: false,
                    overrides: self.overrides.get(&key).cloned(),
                    mod_revision: prev.mod_revision,
                    registered_at: prev.registered_at,
                }
            }
            None => Instance {
                spec: Arc::new(spec),
                lease_id,
                health: Health::Unknown,
                health_detail: String::new(),
                expired_held: false,
                overrides: self.overrides.get(&key).cloned(),
                mod_revision: 0,
                registered_at: wall,
            },
        };
        let stored = self.emit(Change::Put, next, cfg);
        self.services
            .entry(key.service)
            .or_default()
            .insert(key.instance_id, stored);
    }

    /// Applies `f` to an instance and emits a put if it changed.
    fn update(&mut self, key: &Key, cfg: &CoreConfig, f: impl FnOnce(&mut Instance)) {
        let Some(current) = self.get(key) else {
            return;
        };
        let mut next = current.clone();
        f(&mut next);
        if next == *current {
            return;
        }
        let stored = self.emit(Change::Put, next, cfg);
        if let Some(slot) = self
            .services
            .get_mut(&key.service)
            .and_then(|m| m.get_mut(&key.instance_id))
        {
            *slot = stored;
        }
    }

    fn remove(&mut self, key: &Key, reason: DeleteReason, cfg: &CoreConfig) {
        let Some(instances) = self.services.get_mut(&key.service) else {
            return;
        };
        let Some(instance) = instances.remove(&key.instance_id) else {
            return;
        };
        if instances.is_empty() {
            self.services.remove(&key.service);
        }
        if let Some(lease) = self.leases.get_mut(&instance.lease_id) {
            lease.instances.remove(key);
        }
        self.emit(Change::Delete(reason), instance, cfg);
    }

    fn drop_lease(&mut self, id: u64, reason: DeleteReason, cfg: &CoreConfig) -> Option<Vec<Key>> {
        let lease = self.leases.remove(&id)?;
        let keys: Vec<Key> = lease.instances.into_iter().collect();
        for key in &keys {
            self.remove(key, reason, cfg);
        }
        Some(keys)
    }

    fn hold_lease(&mut self, id: u64, cfg: &CoreConfig) {
        let Some(lease) = self.leases.get_mut(&id) else {
            return;
        };
        lease.held = true;
        let keys: Vec<Key> = lease.instances.iter().cloned().collect();
        for key in keys {
            self.update(&key, cfg, |i| i.expired_held = true);
        }
    }

    fn due_leases(&self, now: Instant) -> Vec<u64> {
        let mut due: Vec<(Instant, u64)> = self
            .leases
            .iter()
            .filter(|(_, l)| !l.held && l.expires_at <= now)
            .map(|(id, l)| (l.expires_at, *id))
            .collect();
        due.sort_unstable();
        due.into_iter().map(|(_, id)| id).collect()
    }

    fn snapshot(&self, sub: &Subscription, reset: bool, reason: SnapshotReason) -> WatchBody {
        let instances = match &sub.services {
            Some(names) => names
                .iter()
                .filter_map(|n| self.services.get(n))
                .flat_map(|m| m.values().cloned())
                .collect(),
            None => self
                .services
                .values()
                .flat_map(|m| m.values().cloned())
                .collect(),
        };
        WatchBody::Snapshot {
            instances,
            reset,
            reason,
        }
    }

    fn resume(&self, sub: &Subscription, since: &Position, epoch: &Arc<str>) -> WatchBody {
        let reason = if since.epoch != *epoch {
            Some(SnapshotReason::OtherEpoch)
        } else if since.revision > self.revision {
            Some(SnapshotReason::FutureRevision)
        } else if since.revision < self.revision
            && self
                .history
                .front()
                .is_none_or(|e| e.revision > since.revision + 1)
        {
            Some(SnapshotReason::Compacted)
        } else {
            None
        };
        if let Some(reason) = reason {
            return self.snapshot(sub, true, reason);
        }
        let events: Vec<Arc<Event>> = self
            .history
            .iter()
            .filter(|e| e.revision > since.revision && sub.follows(&e.instance.spec.service))
            .cloned()
            .collect();
        if events.is_empty() {
            WatchBody::Progress
        } else {
            WatchBody::Delta(events)
        }
    }
}
