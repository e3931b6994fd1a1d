//! Leases: registering under one, keeping it alive, revoking it, and the
//! tick that expires lapsed leases (or holds them behind the brake).

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{CoreConfig, Inner, Lease, Registry};
use crate::{
    error::Error,
    model::{DeleteReason, InstanceSpec, Key, Position},
};

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

// === impl Registry ===

impl Registry {
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
        let mut checks = Vec::with_capacity(specs.len());
        for spec in specs {
            let checked = spec.health_check.is_some().then(|| Arc::new(spec.clone()));
            let key = Key::of(&spec);
            inner.put_registration(key.clone(), spec, lease_id, wall, &self.cfg);
            checks.push((key, checked));
        }
        let position = inner.position(&self.epoch);
        // Checks start and stop outside the lock: their results come back
        // through it.
        drop(inner);
        for (key, checked) in checks {
            self.checks.sync(&key, checked);
        }
        metrics::counter!("switchyard_registry_registrations_total").increment(1);
        Ok(Registered {
            lease_id,
            ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            position,
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
}

// === impl Inner ===

impl Inner {
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
}
