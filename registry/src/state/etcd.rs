//! The registry on etcd (issue 18): every replica keeps the whole state in
//! memory, fed by one watch on the prefix (the pattern of Kubernetes' watch
//! cache and APISIX); writes are transactions that compare the revisions
//! they were computed from; a write returns once this replica has applied
//! it, so a client reads its own writes wherever it reads.
//!
//! Keys under the prefix (values are JSON):
//!
//! | key | value | etcd lease |
//! |---|---|---|
//! | `replicas/<name>` | the replica's name | its session |
//! | `leases/<id>` | [`LeaseRecord`] | the owner's session |
//! | `instances/<service>/<id>` | [`InstanceRecord`] | the owner's session |
//! | `overrides/<service>/<id>` | [`Override`] | none: durable |
//! | `why` | why the deletes of its revision happened | none |
//!
//! Client leases are not etcd leases (etcd struggles at tens of thousands:
//! etcd-io/etcd#11886, #9496): their deadlines live in the owning replica's
//! memory, renewals write nothing, and the owner alone expires them (so the
//! brake works as on one node). A replica's records hang on its session
//! lease: when it dies, they go after the session TTL, unless their
//! clients renewed on another replica first, which adopts them (re-puts
//! them under its own session; nothing is deleted). A replica that cannot
//! renew its session for half its TTL is fenced: it refuses writes and
//! renewals, and ends its watch streams, so clients move on.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use switchyard_etcd::{Client, Follower, MAX_TXN_OPS, ResetReason, Update, pb};
use switchyard_runtime::SharedClock;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    Backend, CoreConfig, Ctx, Failed, Inner, Registry,
    ops::{Op, Plan, Target},
};
use crate::{
    error::Error,
    model::{DeleteReason, Health, Instance, InstanceSpec, Key},
};

/// How a registry finds and uses etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// `http://host:port` of the members.
    pub endpoints: Vec<String>,
    /// Key prefix, ending in '/'.
    pub prefix: String,
    /// This replica's name (unique among the replicas).
    pub replica: String,
    /// TTL of this replica's session lease.
    pub session_ttl: Duration,
    /// Mutual TLS to the members (`https://` endpoints), with this
    /// replica's certificate; `None` dials in plaintext.
    pub tls: Option<switchyard_tls::ClientTls>,
}

/// What etcd keeps of an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstanceRecord {
    spec: InstanceSpec,
    lease_id: u64,
    health: Health,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    health_detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health_changed_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    expired_held: bool,
    registered_at: SystemTime,
}

/// The etcd backend.
#[derive(Debug)]
pub(super) struct Etcd {
    client: Client,
    prefix: Vec<u8>,
    replica: String,
    session_ttl: Duration,
    /// This replica's session lease.
    session: AtomicI64,
    /// Set while the session could not be renewed for half its TTL.
    fenced: AtomicBool,
    /// Writes waiting for the group commit.
    queue: mpsc::Sender<Job>,
    /// Told when the replica is fenced: the follower's watch may be a dead
    /// connection, so it watches again from its revision (and relists, if
    /// etcd compacted past it meanwhile).
    rewatch: Notify,
}

/// A write waiting for the group commit.
#[derive(Debug)]
struct Job {
    plan: Plan,
    reply: oneshot::Sender<Result<(u64, bool), Failed>>,
}

/// Plans gathered into one transaction: at most etcd's 128 operations and
/// comparisons, no record twice, one reason for its deletes.
#[derive(Debug, Default)]
struct Batch {
    jobs: Vec<Job>,
    ops: usize,
    compares: usize,
    targets: HashSet<Target>,
    reason: Option<DeleteReason>,
}

// === impl Registry ===

impl Registry {
    /// A registry replica on etcd: joins the cluster (its epoch is etcd's
    /// cluster id), opens its session, lists the prefix and follows it.
    /// Returns once the first list is applied.
    pub async fn on_etcd(
        cfg: CoreConfig,
        clock: SharedClock,
        settings: EtcdSettings,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, Error> {
        let client =
            Client::with_tls(&settings.endpoints, settings.tls.as_ref()).map_err(unavailable)?;
        let status = client.status().await.map_err(unavailable)?;
        let cluster = status.header.map_or(0, |h| h.cluster_id);
        let epoch: Arc<str> = format!("etcd-{cluster:016x}").into();
        let (queue, jobs) = mpsc::channel(4096);
        let etcd = Etcd {
            client: client.clone(),
            prefix: settings.prefix.clone().into_bytes(),
            replica: settings.replica.clone(),
            session_ttl: settings.session_ttl,
            session: AtomicI64::new(0),
            fenced: AtomicBool::new(true),
            queue,
            rewatch: Notify::new(),
        };
        etcd.open_session().await?;
        let registry = Self::with_backend(
            cfg,
            clock,
            Backend::Etcd(etcd),
            epoch,
            settings.replica.into(),
            BTreeMap::new(),
        );
        let mut follower = Follower::new(client, settings.prefix.as_bytes());
        let first = follower.next().await.map_err(unavailable)?;
        registry.apply_update(first);
        tokio::spawn(follow(registry.clone(), follower, shutdown.clone()));
        tokio::spawn(group_commit(registry.clone(), jobs, shutdown.clone()));
        tokio::spawn(keep_session(registry.clone(), shutdown));
        Ok(registry)
    }

    /// etcd's members and the status of the member this replica talks to;
    /// `None` on the file store.
    pub async fn etcd_status(
        &self,
    ) -> Option<Result<(pb::MemberListResponse, pb::StatusResponse), switchyard_etcd::Error>> {
        let Backend::Etcd(etcd) = &self.backend else {
            return None;
        };
        let status = async {
            let members = etcd.client.member_list().await?;
            let status = etcd.client.status().await?;
            Ok((members, status))
        };
        Some(status.await)
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.me
    }

    /// Whether this replica is fenced (lost its etcd session).
    pub fn fenced(&self) -> bool {
        match &self.backend {
            Backend::Local(_) => false,
            Backend::Etcd(etcd) => etcd.fenced.load(Ordering::Acquire),
        }
    }

    /// Applies what the follower reports.
    fn apply_update(&self, update: Update) {
        let ctx_now = self.clock.now();
        let ctx = Ctx {
            cfg: &self.cfg,
            me: &self.me,
            now: ctx_now,
            wall: self.clock.wall(),
        };
        let Backend::Etcd(etcd) = &self.backend else {
            return;
        };
        let mut checks = Vec::new();
        let relisted =
            matches!(&update, Update::Reset { reason, .. } if *reason != ResetReason::Start);
        let revision = {
            let mut inner = self.lock();
            match update {
                Update::Reset {
                    revision,
                    kvs,
                    reason,
                } => {
                    let revision = as_revision(revision);
                    if reason != ResetReason::Start {
                        tracing::warn!(
                            ?reason,
                            revision,
                            "etcd listed again: every watch gets a reset"
                        );
                    }
                    inner.reset(etcd, &kvs, revision, ctx, &mut checks);
                    revision
                }
                Update::Events { revision, events } => {
                    let mut why: Option<(u64, DeleteReason)> = None;
                    for event in events {
                        let Some(kv) = event.kv else { continue };
                        let at = as_revision(kv.mod_revision);
                        let deleted = event.r#type == pb::event::EventType::Delete as i32;
                        match etcd.parse(&kv, deleted, at, why) {
                            Ok(Parsed::Op(op)) => inner.apply(op, at, at, ctx, &mut checks),
                            Ok(Parsed::Why(reason)) => why = Some((at, reason)),
                            Ok(Parsed::Other) => {}
                            Err(e) => {
                                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "ignoring a record this registry cannot read")
                            }
                        }
                    }
                    let revision = as_revision(revision);
                    inner.revision = inner.revision.max(revision);
                    revision
                }
            }
        };
        self.sync_checks(checks);
        self.applied.send_replace(revision);
        if relisted {
            self.resets.send_modify(|n| *n += 1);
        }
    }
}

// === impl Inner ===

impl Inner {
    /// Replaces the whole state with the list at `revision`; every watcher
    /// resynchronises with a reset snapshot (reason: compacted).
    fn reset(
        &mut self,
        etcd: &Etcd,
        kvs: &[pb::KeyValue],
        revision: u64,
        ctx: Ctx<'_>,
        checks: &mut Vec<super::CheckSync>,
    ) {
        // Deadlines of the leases this replica keeps survive a relist.
        let deadlines: BTreeMap<u64, Instant> = self
            .leases
            .iter()
            .filter(|(_, l)| l.owned)
            .map(|(id, l)| (*id, l.expires_at))
            .collect();
        for key in self.stored.keys() {
            checks.push((key.clone(), None));
        }
        let hub = std::mem::take(&mut self.hub);
        self.services.clear();
        self.leases.clear();
        self.overrides.clear();
        self.stored.clear();
        let mut ops: Vec<(u64, Op)> = kvs
            .iter()
            .filter_map(|kv| match etcd.parse(kv, false, 0, None) {
                Ok(Parsed::Op(op)) => Some((as_revision(kv.mod_revision), op)),
                _ => None,
            })
            .collect();
        // Leases before the instances that name them, overrides before the
        // instances they apply to.
        ops.sort_by_key(|(_, op)| match op {
            Op::PutLease(..) => 0,
            Op::PutOverride(..) => 1,
            _ => 2,
        });
        for (stored, op) in ops {
            self.apply(op, stored, stored, ctx, checks);
        }
        for (id, at) in deadlines {
            if let Some(lease) = self.leases.get_mut(&id).filter(|l| l.owned) {
                lease.expires_at = at;
            }
        }
        self.hub = hub;
        self.hub.relisted();
        self.history.clear();
        self.revision = revision;
        self.floor = revision;
    }
}

/// What one key means.
enum Parsed {
    Op(Op),
    Why(DeleteReason),
    Other,
}

// === impl Etcd ===

impl Etcd {
    fn key(&self, parts: &[&str]) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(parts.join("/").as_bytes());
        key
    }

    fn instance_key(&self, key: &Key) -> Vec<u8> {
        self.key(&["instances", &key.service, &key.instance_id])
    }

    fn lease_key(&self, id: u64) -> Vec<u8> {
        self.key(&["leases", &id.to_string()])
    }

    fn override_key(&self, key: &Key) -> Vec<u8> {
        self.key(&["overrides", &key.service, &key.instance_id])
    }

    /// Reads one key of the prefix.
    fn parse(
        &self,
        kv: &pb::KeyValue,
        deleted: bool,
        at: u64,
        why: Option<(u64, DeleteReason)>,
    ) -> Result<Parsed, String> {
        let Some(rest) = kv.key.strip_prefix(self.prefix.as_slice()) else {
            return Ok(Parsed::Other);
        };
        let rest = std::str::from_utf8(rest).map_err(|e| e.to_string())?;
        let parts: Vec<&str> = rest.split('/').collect();
        let instance_key = |service: &str, id: &str| Key {
            service: service.to_string(),
            instance_id: id.to_string(),
        };
        Ok(Parsed::Op(match parts.as_slice() {
            ["instances", service, id] if deleted => {
                let reason = why
                    .filter(|(r, _)| *r == at)
                    .map_or(DeleteReason::Expired, |(_, reason)| reason);
                Op::DeleteInstance(instance_key(service, id), reason)
            }
            ["instances", ..] => {
                let r: InstanceRecord = decode(&kv.value, "instance")?;
                Op::PutInstance(Instance {
                    spec: Arc::new(r.spec),
                    lease_id: r.lease_id,
                    health: r.health,
                    health_detail: r.health_detail,
                    health_changed_at: r.health_changed_at,
                    expired_held: r.expired_held,
                    overrides: None,
                    mod_revision: 0,
                    registered_at: r.registered_at,
                })
            }
            ["leases", id] => {
                let id: u64 = id.parse().map_err(|_| format!("lease id {id:?}"))?;
                if deleted {
                    Op::DeleteLease(id)
                } else {
                    Op::PutLease(id, decode(&kv.value, "lease")?)
                }
            }
            ["overrides", service, id] if deleted => Op::DeleteOverride(instance_key(service, id)),
            ["overrides", service, id] => {
                Op::PutOverride(instance_key(service, id), decode(&kv.value, "override")?)
            }
            ["why"] if !deleted => return Ok(Parsed::Why(reason_from(&kv.value))),
            _ => return Ok(Parsed::Other),
        }))
    }

    /// Grants a new session lease and announces this replica on it.
    async fn open_session(&self) -> Result<(), Error> {
        let ttl = i64::try_from(self.session_ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let (session, _) = self.client.lease_grant(ttl).await.map_err(unavailable)?;
        self.client
            .put(
                &self.key(&["replicas", &self.replica]),
                self.replica.as_bytes(),
                session,
            )
            .await
            .map_err(unavailable)?;
        self.session.store(session, Ordering::Release);
        self.fenced.store(false, Ordering::Release);
        tracing::info!(replica = %self.replica, session = format!("{session:x}"), "etcd session open");
        Ok(())
    }

    /// Refuses when fenced.
    fn usable(&self) -> Result<(), Error> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(Error::Unavailable(
                "this replica lost its etcd session; another replica can take the call".into(),
            ));
        }
        Ok(())
    }

    /// Commits `plan`: the revision to wait for, and whether its
    /// comparisons held. Plans that fit one transaction go through the
    /// group commit (concurrent writes share a transaction: one Raft entry
    /// and one revision for many registrations); larger ones alone.
    pub(super) async fn commit(&self, plan: Plan) -> Result<(u64, bool), Failed> {
        self.usable()?;
        if !Batch::fits_alone(&plan) {
            return self.send(plan).await;
        }
        let (reply, answer) = oneshot::channel();
        let shut = || Failed::Error(Error::ShuttingDown);
        self.queue
            .send(Job { plan, reply })
            .await
            .map_err(|_| shut())?;
        answer.await.map_err(|_| shut())?
    }

    /// Sends `plan` as transactions (one unless it has more than etcd's
    /// 128 operations; then only the first carries the comparisons): the
    /// revision to wait for, and whether the comparisons held.
    async fn send(&self, plan: Plan) -> Result<(u64, bool), Failed> {
        let session = self.session.load(Ordering::Acquire);
        let mut compare: Vec<pb::Compare> = plan
            .expects
            .iter()
            .map(|e| {
                let (key, revision) = match e {
                    super::Expect::Instance(key, r) => (self.instance_key(key), *r),
                    super::Expect::Lease(id, r) => (self.lease_key(*id), *r),
                };
                pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Mod as i32,
                    key,
                    target_union: Some(pb::compare::TargetUnion::ModRevision(
                        i64::try_from(revision).unwrap_or(i64::MAX),
                    )),
                    range_end: Vec::new(),
                }
            })
            .collect();
        if compare.len() > MAX_TXN_OPS {
            // More than etcd takes: the first ones guard the write.
            compare.truncate(MAX_TXN_OPS);
        }
        let reason = plan.ops.iter().find_map(|op| match op {
            Op::DeleteInstance(_, reason) => Some(*reason),
            _ => None,
        });
        let mut requests = Vec::with_capacity(plan.ops.len() + 1);
        for op in plan.ops {
            requests.push(self.request(op, session)?);
        }
        let mut chunks: Vec<Vec<pb::RequestOp>> = Vec::new();
        let per_chunk = MAX_TXN_OPS - 1;
        while !requests.is_empty() {
            let rest = requests.split_off(per_chunk.min(requests.len()));
            let mut chunk = Vec::with_capacity(requests.len() + 1);
            if let Some(reason) = reason {
                // The reason rides in the same revision as the deletes.
                chunk.push(put(self.key(&["why"]), reason_name(reason).into(), 0));
            }
            chunk.append(&mut requests);
            chunks.push(chunk);
            requests = rest;
        }
        let mut revision = 0;
        for (n, success) in chunks.into_iter().enumerate() {
            let txn = pb::TxnRequest {
                compare: if n == 0 {
                    std::mem::take(&mut compare)
                } else {
                    Vec::new()
                },
                success,
                failure: Vec::new(),
            };
            let res = self.client.txn(txn).await.map_err(|e| {
                Failed::Error(Error::Unavailable(if e.retry_safe() {
                    format!("etcd: {e}; nothing was changed")
                } else {
                    format!("etcd: {e}; the write may or may not have been made")
                }))
            })?;
            revision = res.header.map_or(0, |h| as_revision(h.revision));
            if !res.succeeded {
                return Ok((revision, false));
            }
        }
        Ok((revision, true))
    }

    /// etcd's revision now, read linearizably (one key, `lease_id`'s).
    pub(super) async fn head(&self, lease_id: u64) -> Result<u64, Error> {
        let res = self
            .client
            .range(&self.lease_key(lease_id), &[], 0)
            .await
            .map_err(unavailable)?;
        Ok(res.header.map_or(0, |h| as_revision(h.revision)))
    }

    fn request(&self, op: Op, session: i64) -> Result<pb::RequestOp, Failed> {
        Ok(match op {
            Op::PutInstance(i) => {
                let key = self.instance_key(&i.key());
                let record = InstanceRecord {
                    spec: (*i.spec).clone(),
                    lease_id: i.lease_id,
                    health: i.health,
                    health_detail: i.health_detail,
                    health_changed_at: i.health_changed_at,
                    expired_held: i.expired_held,
                    registered_at: i.registered_at,
                };
                put(key, json(&record)?, session)
            }
            Op::DeleteInstance(key, _) => delete(self.instance_key(&key)),
            Op::PutLease(id, record) => put(self.lease_key(id), json(&record)?, session),
            Op::DeleteLease(id) => delete(self.lease_key(id)),
            Op::PutOverride(key, value) => put(self.override_key(&key), json(&value)?, 0),
            Op::DeleteOverride(key) => delete(self.override_key(&key)),
        })
    }
}

/// Transactions in flight at once per replica; while one is, writes queue
/// up and go together in the next. One made bigger batches and more
/// registrations per second than two (1.86-1.94x etcd's against 1.70x).
const IN_FLIGHT: usize = 1;

/// The group commit: takes every queued write that fits one transaction
/// once a slot is free, and sends them as one. Measured (bench/run.sh
/// registry-ha): 64 concurrent registrations, one transaction each, ran at
/// etcd's own rate (1.04x its LeaseGrant + Put); together, 1.94x
/// (bench/RESULTS.md).
async fn group_commit(
    registry: Arc<Registry>,
    mut jobs: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => tokio::select! {
                () = shutdown.cancelled() => return,
                job = jobs.recv() => match job { Some(job) => job, None => return },
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Batch::default();
        batch.add(first);
        while let Ok(job) = jobs.try_recv() {
            if let Some(job) = batch.try_add(job) {
                held = Some(job);
                break;
            }
        }
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Backend::Etcd(etcd) = &registry.backend {
                etcd.send_batch(batch).await;
            }
            drop(slot);
        });
    }
}

// === impl Batch ===

impl Batch {
    /// Whether `plan` fits one transaction (with the reason key).
    fn fits_alone(plan: &Plan) -> bool {
        plan.ops.len() < MAX_TXN_OPS && plan.expects.len() <= MAX_TXN_OPS
    }

    fn reason(plan: &Plan) -> Option<DeleteReason> {
        plan.ops.iter().find_map(|op| match op {
            Op::DeleteInstance(_, reason) => Some(*reason),
            _ => None,
        })
    }

    fn add(&mut self, job: Job) {
        self.ops += job.plan.ops.len();
        self.compares += job.plan.expects.len();
        self.targets.extend(job.plan.targets().cloned());
        self.reason = self.reason.or(Self::reason(&job.plan));
        self.jobs.push(job);
    }

    /// Adds `job` if it fits; gives it back otherwise.
    fn try_add(&mut self, job: Job) -> Option<Job> {
        let plan = &job.plan;
        let reason = Self::reason(plan);
        let fits = self.ops + plan.ops.len() < MAX_TXN_OPS
            && self.compares + plan.expects.len() <= MAX_TXN_OPS
            && (reason.is_none() || self.reason.is_none() || reason == self.reason)
            && plan.targets().all(|t| !self.targets.contains(t));
        if fits {
            self.add(job);
            None
        } else {
            Some(job)
        }
    }
}

// === impl Etcd (group commit) ===

impl Etcd {
    /// Sends a batch as one transaction. When its comparisons fail and it
    /// held several writes, each is sent again alone, so one stale write
    /// does not fail the others.
    async fn send_batch(&self, mut batch: Batch) {
        if batch.jobs.len() == 1 {
            if let Some(job) = batch.jobs.pop() {
                let _ = job.reply.send(self.send(job.plan).await);
            }
            return;
        }
        let mut merged = Plan::default();
        let mut replies = Vec::with_capacity(batch.jobs.len());
        let mut plans = Vec::with_capacity(batch.jobs.len());
        for job in batch.jobs {
            plans.push(job.plan);
            replies.push(job.reply);
        }
        for plan in &plans {
            for e in &plan.expects {
                merged.expect(e.clone());
            }
            for op in &plan.ops {
                merged.push(op.clone());
            }
        }
        match self.send(merged).await {
            Ok((revision, true)) => {
                for reply in replies {
                    let _ = reply.send(Ok((revision, true)));
                }
            }
            Ok((_, false)) => {
                for (plan, reply) in plans.into_iter().zip(replies) {
                    let _ = reply.send(self.send(plan).await);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("{what}: {e}"))
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, Failed> {
    serde_json::to_vec(value).map_err(|e| Failed::Error(Error::Storage(e.to_string())))
}

fn put(key: Vec<u8>, value: Vec<u8>, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        })),
    }
}

fn delete(key: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key,
                ..Default::default()
            },
        )),
    }
}

fn reason_name(reason: DeleteReason) -> &'static str {
    match reason {
        DeleteReason::Deregistered => "deregistered",
        DeleteReason::Expired => "expired",
        DeleteReason::Revoked => "revoked",
    }
}

fn reason_from(value: &[u8]) -> DeleteReason {
    match value {
        b"deregistered" => DeleteReason::Deregistered,
        b"revoked" => DeleteReason::Revoked,
        _ => DeleteReason::Expired,
    }
}

fn as_revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn unavailable(e: switchyard_etcd::Error) -> Error {
    Error::Unavailable(format!("etcd: {e}"))
}

/// Applies the follower's updates until shutdown.
async fn follow(registry: Arc<Registry>, mut follower: Follower, shutdown: CancellationToken) {
    let Backend::Etcd(etcd) = &registry.backend else {
        return;
    };
    loop {
        let update = tokio::select! {
            () = shutdown.cancelled() => return,
            () = etcd.rewatch.notified() => {
                follower.rewatch();
                continue;
            }
            u = follower.next() => u,
        };
        match update {
            Ok(update) => registry.apply_update(update),
            Err(e) => {
                tracing::warn!(error = %e, "etcd: listing the registry failed; trying again");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// Renews the session every third of its TTL; fences the replica when it
/// could not for half the TTL, and opens a new one when etcd let it lapse
/// (its records are gone then: their clients register again).
async fn keep_session(registry: Arc<Registry>, shutdown: CancellationToken) {
    let Backend::Etcd(etcd) = &registry.backend else {
        return;
    };
    let keeper = etcd.client.keeper();
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            // The session is not revoked at shutdown: that would delete its
            // clients' instances, which move to another replica instead (a
            // rolling restart loses nothing).
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(etcd.session_ttl / 3) => {}
        }
        let session = etcd.session.load(Ordering::Acquire);
        let outcome = tokio::time::timeout(etcd.session_ttl / 3, keeper.keep_alive(session)).await;
        match outcome {
            Ok(Ok(Some(_))) => {
                renewed = Instant::now();
                if etcd.fenced.swap(false, Ordering::AcqRel) {
                    tracing::info!("etcd session renewed: taking calls again");
                }
            }
            Ok(Ok(None)) => {
                fence(&registry, etcd, "etcd let the session lapse");
                if etcd.open_session().await.is_ok() {
                    renewed = Instant::now();
                }
            }
            Ok(Err(_)) | Err(_) => {
                if renewed.elapsed() >= etcd.session_ttl / 2 {
                    fence(&registry, etcd, "the etcd session could not be renewed");
                }
            }
        }
    }
}

fn fence(registry: &Registry, etcd: &Etcd, why: &str) {
    if !etcd.fenced.swap(true, Ordering::AcqRel) {
        tracing::warn!(
            reason = why,
            "fenced: refusing writes and renewals, ending watch streams"
        );
        registry.resets.send_modify(|n| *n += 1);
        etcd.rewatch.notify_one();
    }
}

// === impl Backend ===

impl Backend {
    /// Refuses when this replica may not take writes or renewals.
    pub(super) fn usable(&self) -> Result<(), Error> {
        match self {
            Backend::Local(_) => Ok(()),
            Backend::Etcd(etcd) => etcd.usable(),
        }
    }
}

impl From<Failed> for Error {
    fn from(f: Failed) -> Self {
        match f {
            Failed::Conflict => Error::Unavailable("a concurrent write won; send it again".into()),
            Failed::Error(e) => e,
        }
    }
}
