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
    brake::{Brake, BrakeConfig},
    checks::{self, Checks},
    error::Error,
    hub::Hub,
    model::{
        Change, DeleteReason, Event, Health, Instance, InstanceSpec, Key, Override, Position, State,
    },
    store::Store,
};

mod leases;
mod listing;
mod watching;

pub use leases::{Registered, Renewal};
pub use listing::{BrakeView, Listing, ServiceView, Summary};
pub use watching::{SnapshotReason, WatchBody, WatchMessage};

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
            checks: Checks::new(Arc::new(HealthSink(weak.clone()))),
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

    /// Records an active check's result (from `checks`), if the instance
    /// still has the spec the check was started for; whether it had.
    fn set_health(
        &self,
        key: &Key,
        spec: &Arc<InstanceSpec>,
        health: Health,
        detail: String,
    ) -> bool {
        let mut inner = self.lock();
        if !inner.has_spec(key, spec) {
            return false;
        }
        inner.update(key, &self.cfg, |i| {
            i.health = health;
            i.health_detail = detail;
        });
        true
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
}
