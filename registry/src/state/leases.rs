//! Leases: registering under one, keeping it alive, revoking it, and the
//! tick that expires lapsed leases (or holds them behind the brake).

use std::time::{Duration, Instant};

use super::{
    Failed, Inner, Registry,
    ops::{Expect, LeaseRecord, Op, Plan},
};
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
    /// A lease another replica keeps is adopted by this one.
    pub async fn register(
        &self,
        lease_id: u64,
        ttl_secs: u32,
        specs: Vec<InstanceSpec>,
        operator: bool,
    ) -> Result<Registered, Error> {
        if lease_id != 0 {
            self.settle_unknown_lease(lease_id).await?;
        }
        let wall = self.clock.wall();
        let new_id = (lease_id == 0).then(|| self.lock().new_lease_id());
        let ((lease_id, ttl), position) = self
            .write(|inner, plan| {
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
                let (id, ttl) = match new_id {
                    Some(id) => {
                        plan.expect(Expect::Lease(id, 0));
                        plan.push(Op::PutLease(
                            id,
                            LeaseRecord {
                                ttl_secs: u64::from(ttl_secs),
                                owner: self.me.to_string(),
                                held: false,
                            },
                        ));
                        (id, Duration::from_secs(u64::from(ttl_secs)))
                    }
                    None => match inner.leases.get(&lease_id) {
                        Some(lease) => {
                            if !lease.owned {
                                inner.plan_own_lease(plan, lease_id, false, &self.me);
                            } else {
                                plan.expect(Expect::Lease(lease_id, lease.stored));
                            }
                            (lease_id, lease.ttl)
                        }
                        None => {
                            return Err(Error::NotFound {
                                field: "lease_id",
                                what: format!("lease {lease_id}"),
                            });
                        }
                    },
                };
                for spec in &specs {
                    let key = Key::of(spec);
                    plan.expect(Expect::Instance(key.clone(), inner.instance_stamp(&key)));
                    if let Some(next) = inner.registration(&key, spec.clone(), id, wall) {
                        plan.push(Op::PutInstance(next));
                    }
                }
                Ok((id, ttl))
            })
            .await?;
        metrics::counter!("switchyard_registry_registrations_total").increment(1);
        Ok(Registered {
            lease_id,
            ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            position,
        })
    }

    /// Renews `lease_id`. A lease held by the brake comes back whole; a
    /// lease another replica kept is adopted (its instances stay, with no
    /// delete). Renewing a lease this replica keeps writes nothing.
    pub async fn keep_alive(&self, lease_id: u64) -> Result<Renewal, Error> {
        self.settle_unknown_lease(lease_id).await?;
        let now = self.clock.now();
        {
            let mut inner = self.lock();
            let Some(lease) = inner.leases.get_mut(&lease_id) else {
                return Ok(Renewal::Unknown);
            };
            if lease.owned && !lease.held {
                self.backend.usable()?;
                lease.expires_at = now + lease.ttl;
                return Ok(Renewal::Renewed(secs(lease.ttl)));
            }
        }
        let written = self
            .write(|inner, plan| {
                if !inner.leases.contains_key(&lease_id) {
                    return Ok(false);
                }
                inner.plan_own_lease(plan, lease_id, false, &self.me);
                Ok(true)
            })
            .await?;
        if !written.0 {
            return Ok(Renewal::Unknown);
        }
        let mut inner = self.lock();
        match inner.leases.get_mut(&lease_id) {
            Some(lease) if lease.owned => {
                lease.expires_at = now + lease.ttl;
                Ok(Renewal::Renewed(secs(lease.ttl)))
            }
            _ => Ok(Renewal::Unknown),
        }
    }

    /// A service with instances under `lease_id` that `refused` holds for;
    /// none when there is no such service, or the lease has no instances
    /// or is not known here. Runs on every renewal of a caller with a
    /// service identity: it allocates only for the service it returns.
    pub fn lease_service_where(
        &self,
        lease_id: u64,
        refused: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let inner = self.lock();
        let lease = inner.leases.get(&lease_id)?;
        lease
            .instances
            .iter()
            .find(|k| refused(&k.service))
            .map(|k| k.service.clone())
    }

    /// Time left on each of `lease_ids` before it lapses, where this
    /// replica keeps it and the brake does not hold it; one look under the
    /// lock for all of them.
    pub fn leases_remaining(&self, lease_ids: &[u64]) -> Vec<Option<Duration>> {
        let now = self.clock.now();
        let inner = self.lock();
        lease_ids
            .iter()
            .map(|id| {
                let lease = inner.leases.get(id).filter(|l| l.owned && !l.held)?;
                Some(lease.expires_at.saturating_duration_since(now))
            })
            .collect()
    }

    /// Ends a lease and removes its instances.
    pub async fn revoke(&self, lease_id: u64) -> Result<(u32, Position), Error> {
        self.write(|inner, plan| {
            let n = inner.leases.get(&lease_id).map(|l| l.instances.len());
            if !inner.plan_drop_lease(plan, lease_id, DeleteReason::Revoked) {
                return Err(Error::NotFound {
                    field: "lease_id",
                    what: format!("lease {lease_id}"),
                });
            }
            Ok(u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
        })
        .await
    }

    /// The next time `tick` has work, at most `cap` away.
    pub fn next_deadline(&self, cap: Duration) -> Instant {
        let now = self.clock.now();
        let inner = self.lock();
        let mut next = now + cap;
        if inner.warming {
            next = next.min(self.warm_until);
        }
        for lease in inner.leases.values().filter(|l| l.owned && !l.held) {
            next = next.min(lease.expires_at);
        }
        next
    }

    /// Expires lapsed leases this replica keeps (or holds them behind the
    /// brake), ends warm-up, and lets the brake go when its time is up.
    pub async fn tick(&self) {
        let now = self.clock.now();
        let wall = self.clock.wall();
        let (plan, was, is) = {
            let mut inner = self.lock();
            let was = inner.authoritative();
            if inner.warming && now >= self.warm_until {
                inner.warming = false;
                tracing::info!("warm-up over; snapshots are authoritative");
            }
            let mut plan = Plan::default();
            // Leases this tick holds (the plan is not applied yet).
            let mut newly_held = 0;
            let due = inner.due_leases(now);
            if !due.is_empty() {
                let recent = inner.brake.recent(now);
                let late = inner
                    .leases
                    .values()
                    .filter(|l| l.owned && !l.held && l.expires_at <= now + l.ttl / 3)
                    .count();
                let population =
                    inner.leases.values().filter(|l| l.owned && !l.held).count() + recent;
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
                        newly_held += 1;
                        inner.plan_own_lease(&mut plan, id, true, &self.me);
                    } else if inner.plan_drop_lease(&mut plan, id, DeleteReason::Expired) {
                        metrics::counter!("switchyard_registry_lease_expirations_total")
                            .increment(1);
                    }
                }
            }
            let held = inner.leases.values().filter(|l| l.owned && l.held).count();
            if inner.brake.should_release(now, held + newly_held) {
                let ids: Vec<u64> = inner
                    .leases
                    .iter()
                    .filter(|(_, l)| l.owned && l.held)
                    .map(|(id, _)| *id)
                    .collect();
                tracing::warn!(
                    held = ids.len(),
                    "mass-expiry brake released; expiring what it held"
                );
                inner.brake.release();
                for id in ids {
                    inner.plan_drop_lease(&mut plan, id, DeleteReason::Expired);
                }
            }
            (plan, was, inner.authoritative())
        };
        match self.commit(plan).await {
            Ok(()) => {}
            // A lease renewed meanwhile: the next tick sees it as it is.
            Err(Failed::Conflict) => {}
            Err(Failed::Error(e)) => tracing::warn!(error = %e, "expiring lapsed leases failed"),
        }
        if was != is {
            self.authoritative.send_replace(is);
        }
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
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

    fn due_leases(&self, now: Instant) -> Vec<u64> {
        let mut due: Vec<(Instant, u64)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.owned && !l.held && l.expires_at <= now)
            .map(|(id, l)| (l.expires_at, *id))
            .collect();
        due.sort_unstable();
        due.into_iter().map(|(_, id)| id).collect()
    }
}
