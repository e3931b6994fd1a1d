//! Writes as data: every change the registry makes is a list of [`Op`]s with
//! the [`Expect`]ations they were computed from, committed by the backend.
//!
//! With the file store the ops are applied at once under the lock; with
//! etcd they become one transaction, and every replica applies them (and
//! everyone else's) from its etcd watch. [`Inner::apply`] is the one place
//! the state changes, so both backends have the same semantics.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{CoreConfig, Inner, Lease};
use crate::model::{
    Change, DeleteReason, Event, Health, Instance, InstanceSpec, Key, Override, OverrideRequest,
};

/// One change.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Adds or replaces an instance (its `overrides` and `mod_revision` are
    /// the registry's business and ignored here).
    PutInstance(Instance),
    /// Removes an instance.
    DeleteInstance(Key, DeleteReason),
    /// Adds or replaces a lease's record.
    PutLease(u64, LeaseRecord),
    /// Removes a lease's record (its instances go with their own ops).
    DeleteLease(u64),
    /// Sets an operator's override.
    PutOverride(Key, Override),
    /// Clears an operator's override.
    DeleteOverride(Key),
}

/// What the store keeps of a lease; its deadline stays in its owner's
/// memory (renewals write nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    /// The TTL in seconds.
    pub ttl_secs: u64,
    /// The replica that keeps it.
    pub owner: String,
    /// Lapsed, and held by the mass-expiry brake.
    pub held: bool,
}

/// What the state looked like when the ops were computed; the commit fails
/// (and the caller computes again) when it no longer does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Expect {
    /// The instance's record is at this store revision (0: absent).
    Instance(Key, u64),
    /// The lease's record is at this store revision (0: absent).
    Lease(u64, u64),
}

/// A computed write.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    pub expects: Vec<Expect>,
    /// Where each record's op is in `ops`.
    index: std::collections::HashMap<Target, usize>,
    expected: std::collections::HashSet<Expect>,
}

/// A health check to start, restart or stop once the lock is released.
pub(crate) type CheckSync = (Key, Option<Arc<InstanceSpec>>);

/// What an apply needs besides the op.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub cfg: &'a CoreConfig,
    /// This replica.
    pub me: &'a str,
    pub now: Instant,
    /// The wall clock at the same moment: when events happened.
    pub wall: std::time::SystemTime,
}

/// The record an op writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Instance(Key),
    Lease(u64),
    Override(Key),
}

// === impl Op ===

impl Op {
    /// The record it writes.
    pub(crate) fn target(&self) -> Target {
        match self {
            Op::PutInstance(i) => Target::Instance(i.key()),
            Op::DeleteInstance(key, _) => Target::Instance(key.clone()),
            Op::PutLease(id, _) | Op::DeleteLease(id) => Target::Lease(*id),
            Op::PutOverride(key, _) | Op::DeleteOverride(key) => Target::Override(key.clone()),
        }
    }
}

// === impl Plan ===

impl Plan {
    /// Adds `op`; one already there for the same record is replaced (etcd
    /// refuses a transaction that writes one key twice).
    pub(crate) fn push(&mut self, op: Op) {
        match self.index.entry(op.target()) {
            std::collections::hash_map::Entry::Occupied(at) => self.ops[*at.get()] = op,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.ops.len());
                self.ops.push(op);
            }
        }
    }

    pub(crate) fn expect(&mut self, e: Expect) {
        if self.expected.insert(e.clone()) {
            self.expects.push(e);
        }
    }

    /// The records it writes.
    pub(crate) fn targets(&self) -> impl Iterator<Item = &Target> {
        self.index.keys()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

// === impl Inner ===

impl Inner {
    /// Whether every expectation still holds.
    pub(super) fn holds(&self, expects: &[Expect]) -> bool {
        expects.iter().all(|e| match e {
            Expect::Instance(key, rev) => self.stored.get(key).copied().unwrap_or(0) == *rev,
            Expect::Lease(id, rev) => self.leases.get(id).map_or(0, |l| l.stored) == *rev,
        })
    }

    /// The store revision of an instance's record (0: absent).
    pub(super) fn instance_stamp(&self, key: &Key) -> u64 {
        self.stored.get(key).copied().unwrap_or(0)
    }

    /// Applies one op committed at `revision` (the registry's revision of
    /// any event it makes) whose record is at store revision `stored`.
    pub(super) fn apply(
        &mut self,
        op: Op,
        revision: u64,
        stored: u64,
        ctx: Ctx<'_>,
        checks: &mut Vec<CheckSync>,
    ) {
        match op {
            Op::PutInstance(instance) => self.put_instance(instance, revision, stored, ctx, checks),
            Op::DeleteInstance(key, reason) => {
                self.stored.remove(&key);
                self.remove(&key, reason, revision, ctx);
                checks.push((key, None));
            }
            Op::PutLease(id, record) => self.put_lease(id, &record, stored, ctx),
            Op::DeleteLease(id) => {
                self.leases.remove(&id);
            }
            Op::PutOverride(key, value) => {
                self.overrides.insert(key.clone(), value.clone());
                self.update(&key, revision, ctx, |i| i.overrides = Some(value));
            }
            Op::DeleteOverride(key) => {
                self.overrides.remove(&key);
                self.update(&key, revision, ctx, |i| i.overrides = None);
            }
        }
    }

    fn put_instance(
        &mut self,
        mut next: Instance,
        revision: u64,
        stored: u64,
        ctx: Ctx<'_>,
        checks: &mut Vec<CheckSync>,
    ) {
        let key = next.key();
        self.stored.insert(key.clone(), stored);
        next.overrides = self.overrides.get(&key).cloned();
        let owned = self.leases.get(&next.lease_id).is_some_and(|l| l.owned);
        // Checks run on the replica that keeps the lease, and only there.
        checks.push((key.clone(), owned.then(|| next.spec.clone())));
        if let Some(prev) = self.get(&key) {
            next.mod_revision = prev.mod_revision;
            if *prev == next {
                // Unchanged (an adoption re-puts records as they were).
                return;
            }
            let old = prev.lease_id;
            if old != next.lease_id {
                if let Some(lease) = self.leases.get_mut(&old) {
                    lease.instances.remove(&key);
                }
            }
        }
        if let Some(lease) = self.leases.get_mut(&next.lease_id) {
            lease.instances.insert(key.clone());
        }
        let stored = self.emit(Change::Put, next, revision, ctx);
        self.services
            .entry(key.service)
            .or_default()
            .insert(key.instance_id, stored);
    }

    fn put_lease(&mut self, id: u64, record: &LeaseRecord, stored: u64, ctx: Ctx<'_>) {
        let ttl = Duration::from_secs(record.ttl_secs);
        let owned = record.owner == ctx.me;
        let lease = self.leases.entry(id).or_insert_with(|| Lease {
            ttl,
            expires_at: ctx.now + ttl,
            instances: BTreeSet::new(),
            held: record.held,
            owned,
            stored,
        });
        if owned && (!lease.owned || (lease.held && !record.held)) {
            // Taken over or let go by the brake: a whole TTL from now.
            lease.expires_at = ctx.now + ttl;
        }
        lease.ttl = ttl;
        lease.held = record.held;
        lease.owned = owned;
        lease.stored = stored;
    }

    /// Emits a put when `f` changes the instance at `key`.
    fn update(&mut self, key: &Key, revision: u64, ctx: Ctx<'_>, f: impl FnOnce(&mut Instance)) {
        let Some(current) = self.get(key) else {
            return;
        };
        let mut next = current.clone();
        f(&mut next);
        if next == *current {
            return;
        }
        let stored = self.emit(Change::Put, next, revision, ctx);
        if let Some(slot) = self
            .services
            .get_mut(&key.service)
            .and_then(|m| m.get_mut(&key.instance_id))
        {
            *slot = stored;
        }
    }

    fn remove(&mut self, key: &Key, reason: DeleteReason, revision: u64, ctx: Ctx<'_>) {
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
        self.emit(Change::Delete(reason), instance, revision, ctx);
    }

    fn emit(
        &mut self,
        change: Change,
        mut instance: Instance,
        revision: u64,
        ctx: Ctx<'_>,
    ) -> Instance {
        self.revision = self.revision.max(revision);
        instance.mod_revision = revision;
        let event = Arc::new(Event {
            revision,
            change,
            instance: instance.clone(),
            at: ctx.wall,
        });
        self.history.push_back(event.clone());
        while self.history.len() > ctx.cfg.history_limit {
            if let Some(gone) = self.history.pop_front() {
                // Events after this revision are all still held.
                self.floor = self.floor.max(gone.revision);
            }
        }
        self.hub.publish(&event);
        instance
    }

    // --- computing ops (nothing changes here) ---

    /// The instance `spec` registered under `lease_id` becomes, or `None`
    /// when that changes nothing.
    pub(super) fn registration(
        &self,
        key: &Key,
        spec: InstanceSpec,
        lease_id: u64,
        wall: std::time::SystemTime,
    ) -> Option<Instance> {
        match self.get(key) {
            Some(prev) => {
                if *prev.spec == spec && prev.lease_id == lease_id && !prev.expired_held {
                    return None;
                }
                let same_check = prev.spec.health_check == spec.health_check
                    && prev.spec.address == spec.address;
                Some(Instance {
                    spec: Arc::new(spec),
                    lease_id,
                    health: if same_check {
                        prev.health
                    } else {
                        Health::Unknown
                    },
                    health_detail: if same_check {
                        prev.health_detail.clone()
                    } else {
                        String::new()
                    },
                    health_changed_at: prev.health_changed_at.filter(|_| same_check),
                    expired_held: false,
                    overrides: None,
                    mod_revision: prev.mod_revision,
                    registered_at: prev.registered_at,
                })
            }
            None => Some(Instance {
                spec: Arc::new(spec),
                lease_id,
                health: Health::Unknown,
                health_detail: String::new(),
                health_changed_at: None,
                expired_held: false,
                overrides: None,
                mod_revision: 0,
                registered_at: wall,
            }),
        }
    }

    /// The instance at `key` after `f`, or `None` when absent or unchanged.
    pub(super) fn updated(&self, key: &Key, f: impl FnOnce(&mut Instance)) -> Option<Instance> {
        let current = self.get(key)?;
        let mut next = current.clone();
        f(&mut next);
        (next != *current).then_some(next)
    }

    /// Removing `key`, expecting it as it is.
    pub(super) fn plan_remove(&self, plan: &mut Plan, key: &Key, reason: DeleteReason) {
        plan.expect(Expect::Instance(key.clone(), self.instance_stamp(key)));
        plan.push(Op::DeleteInstance(key.clone(), reason));
    }

    /// Ending lease `id` and removing its instances; false when unknown.
    pub(super) fn plan_drop_lease(&self, plan: &mut Plan, id: u64, reason: DeleteReason) -> bool {
        let Some(lease) = self.leases.get(&id) else {
            return false;
        };
        plan.expect(Expect::Lease(id, lease.stored));
        for key in &lease.instances {
            self.plan_remove(plan, key, reason);
        }
        plan.push(Op::DeleteLease(id));
        true
    }

    /// Re-puts lease `id` with `held` and this replica as its owner (an
    /// adoption when another replica kept it), and its instances with
    /// `expired_held` to match.
    pub(super) fn plan_own_lease(&self, plan: &mut Plan, id: u64, held: bool, me: &str) {
        let Some(lease) = self.leases.get(&id) else {
            return;
        };
        plan.expect(Expect::Lease(id, lease.stored));
        plan.push(Op::PutLease(
            id,
            LeaseRecord {
                ttl_secs: lease.ttl.as_secs(),
                owner: me.to_string(),
                held,
            },
        ));
        for key in &lease.instances {
            if let Some(instance) = self.get(key) {
                let mut next = instance.clone();
                next.expired_held = held;
                plan.expect(Expect::Instance(key.clone(), self.instance_stamp(key)));
                plan.push(Op::PutInstance(next));
            }
        }
    }

    /// The override `key` gets from an operator's call.
    pub(super) fn next_override(
        &self,
        key: &Key,
        request: &OverrideRequest,
        wall: std::time::SystemTime,
    ) -> Override {
        let base = self.get(key).and_then(|i| i.overrides.clone());
        Override {
            state: request.state.or(base.as_ref().and_then(|o| o.state)),
            weight: request.weight.or(base.as_ref().and_then(|o| o.weight)),
            updated_at: wall,
            reason: request.reason.clone(),
            expires_at: request.expires_in.map(|d| wall + d),
        }
    }

    /// Overrides whose expiry is at or before `wall`.
    pub(super) fn due_overrides(&self, wall: std::time::SystemTime) -> Vec<Key> {
        self.overrides
            .iter()
            .filter(|(_, o)| o.expires_at.is_some_and(|t| t <= wall))
            .map(|(k, _)| k.clone())
            .collect()
    }
}
