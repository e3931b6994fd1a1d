//! The discovery cache: a view of some services, fed by Watch.
//!
//! It resumes after a reconnect from its last position; the registry answers
//! with the missed deltas, or with a `reset` snapshot (another epoch after a
//! restart, a revision it no longer has). During an outage it keeps the last
//! known good view. It empties a service's view only on authoritative data
//! that stays empty for one TTL (alibaba/nacos#10209: empty lists pushed
//! while a node restarted took whole services offline).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use switchyard_proto::registry::v1::{self as pb, watch_response::Kind};
use switchyard_time::{Backoff, SharedClock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{balance::Status, connect::Target};

/// What the cache shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Instances per watched service, ordered by instance id.
    pub services: BTreeMap<String, Arc<[pb::Instance]>>,
    /// The registry position the view reflects.
    pub position: Option<pb::WatchPosition>,
    /// Whether the last message was authoritative.
    pub authoritative: bool,
    /// Snapshots received (the first, and one per reset).
    pub snapshots: u64,
}

/// A running discovery cache. Dropping it stops the watch.
#[derive(Debug)]
pub struct Discovery {
    view: watch::Receiver<Arc<View>>,
    stop: CancellationToken,
}

/// Where the task keeps the registry's truth and the published view.
struct Cache {
    watched: Option<BTreeSet<String>>,
    truth: BTreeMap<String, BTreeMap<String, pb::Instance>>,
    empty_since: HashMap<String, Instant>,
    ttl: Duration,
    view: watch::Sender<Arc<View>>,
}

// === impl Discovery ===

impl Discovery {
    /// Watches `services` (empty: every service). `ttl` is how long
    /// authoritative emptiness must last before a non-empty view empties.
    pub fn start(target: Target, services: Vec<String>, ttl: Duration, clock: SharedClock) -> Self {
        let (tx, rx) = watch::channel(Arc::new(View::default()));
        let stop = CancellationToken::new();
        let cache = Cache {
            watched: (!services.is_empty()).then(|| services.into_iter().collect()),
            truth: BTreeMap::new(),
            empty_since: HashMap::new(),
            ttl,
            view: tx,
        };
        tokio::spawn(run(target, cache, clock, stop.clone()));
        Self { view: rx, stop }
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Follows the view.
    pub fn changes(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Every known instance of `service`.
    pub fn instances(&self, service: &str) -> Arc<[pb::Instance]> {
        self.view
            .borrow()
            .services
            .get(service)
            .cloned()
            .unwrap_or_else(|| Arc::new([]))
    }

    /// The instances to send traffic to (see [`routable`]).
    pub fn routable(&self, service: &str) -> Vec<pb::Instance> {
        routable(&self.instances(service))
    }

    /// Waits until the first snapshot arrived.
    pub async fn synced(&self, timeout: Duration) -> bool {
        let mut rx = self.view.clone();
        tokio::time::timeout(timeout, rx.wait_for(|v| v.snapshots > 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The share of SERVING instances below which every SERVING one is
/// routable (panic mode), in percent: the gateway's and the balancer's
/// default.
pub const PANIC_THRESHOLD: u32 = 50;

/// The instances to send traffic to, by the rule the balancer and the
/// gateway use ([`crate::balance::eligible`]): SERVING, not failing their
/// active health check, not held by the brake; the held ones only when
/// nothing else is; every SERVING one when fewer than
/// [`PANIC_THRESHOLD`] percent are routable.
pub fn routable(instances: &[pb::Instance]) -> Vec<pb::Instance> {
    let statuses: Vec<Status> = instances.iter().map(Status::of).collect();
    let eligible = crate::balance::eligible(&statuses, PANIC_THRESHOLD);
    instances
        .iter()
        .zip(eligible.members)
        .filter(|(_, ok)| *ok)
        .map(|(i, _)| i.clone())
        .collect()
}

// === impl Cache ===

impl Cache {
    fn apply(&mut self, message: pb::WatchResponse, now: Instant) {
        match message.kind {
            Some(Kind::Snapshot(snapshot)) => {
                let mut fresh: BTreeMap<String, BTreeMap<String, pb::Instance>> = BTreeMap::new();
                for instance in snapshot.instances {
                    let Some(spec) = &instance.spec else { continue };
                    let (svc, id) = (spec.service.clone(), spec.instance_id.clone());
                    fresh.entry(svc).or_default().insert(id, instance);
                }
                // Services we knew and the snapshot lacks are now empty.
                for svc in self.truth.keys() {
                    fresh.entry(svc.clone()).or_default();
                }
                if let Some(watched) = &self.watched {
                    for svc in watched {
                        fresh.entry(svc.clone()).or_default();
                    }
                }
                self.truth = fresh;
                self.view.send_modify(|v| Arc::make_mut(v).snapshots += 1);
            }
            Some(Kind::Delta(delta)) => {
                for event in delta.events {
                    let delete = event.kind() == pb::event::Kind::Delete;
                    let Some(instance) = event.instance else {
                        continue;
                    };
                    let Some(spec) = &instance.spec else { continue };
                    let (svc, id) = (spec.service.clone(), spec.instance_id.clone());
                    let entry = self.truth.entry(svc).or_default();
                    if delete {
                        entry.remove(&id);
                    } else {
                        entry.insert(id, instance);
                    }
                }
            }
            Some(Kind::Progress(_)) | None => {}
        }
        let authoritative = message.authoritative;
        self.view.send_modify(|v| {
            let v = Arc::make_mut(v);
            v.position = message.position;
            v.authoritative = authoritative;
        });
        self.publish(now);
    }

    /// Recomputes the published view; returns when a pending empty is due.
    fn publish(&mut self, now: Instant) -> Option<Instant> {
        let authoritative = self.view.borrow().authoritative;
        let current = self.view.borrow().services.clone();
        let mut next = current.clone();
        let mut due = None;
        for (svc, truth) in &self.truth {
            let shown = current.get(svc).map_or(0, |s| s.len());
            if !truth.is_empty() || shown == 0 {
                self.empty_since.remove(svc);
                next.insert(svc.clone(), truth.values().cloned().collect());
                continue;
            }
            if !authoritative {
                // Non-authoritative emptiness restarts the clock.
                self.empty_since.remove(svc);
                continue;
            }
            let since = *self.empty_since.entry(svc.clone()).or_insert(now);
            if now.saturating_duration_since(since) >= self.ttl {
                tracing::info!(service = %svc, "service stayed empty for one TTL; emptying the view");
                next.insert(svc.clone(), Arc::new([]));
                self.empty_since.remove(svc);
            } else {
                let at = since + self.ttl;
                due = Some(due.map_or(at, |d: Instant| d.min(at)));
            }
        }
        if next != current {
            self.view.send_modify(|v| Arc::make_mut(v).services = next);
        }
        due
    }

    fn since(&self) -> Option<pb::WatchPosition> {
        self.view.borrow().position.clone()
    }
}

async fn run(target: Target, mut cache: Cache, clock: SharedClock, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), target.backoff_cap);
    loop {
        let Some(mut client) = target.connect(&stop).await else {
            return;
        };
        let request = pb::WatchRequest {
            services: cache.watched.iter().flatten().cloned().collect(),
            since: cache.since(),
        };
        match client.watch(request).await {
            Ok(stream) => {
                backoff.reset();
                let mut stream = stream.into_inner();
                let mut due: Option<Instant> = None;
                loop {
                    let wake = due.unwrap_or_else(|| clock.now() + Duration::from_secs(3600));
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = clock.sleep_until(wake) => due = cache.publish(clock.now()),
                        message = stream.message() => match message {
                            Ok(Some(m)) => {
                                cache.apply(m, clock.now());
                                due = cache.publish(clock.now());
                            }
                            Ok(None) => { tracing::debug!("watch stream ended"); break }
                            Err(status) => { tracing::warn!(%status, "watch stream failed"); break }
                        },
                    }
                }
            }
            Err(status) => tracing::warn!(%status, "watch refused"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, state: pb::State, health: pb::Health, held: bool) -> pb::Instance {
        pb::Instance {
            spec: Some(pb::InstanceSpec {
                instance_id: id.into(),
                state: state as i32,
                ..Default::default()
            }),
            state: state as i32,
            health: health as i32,
            expired_held: held,
            ..Default::default()
        }
    }

    fn ids(instances: &[pb::Instance]) -> Vec<String> {
        instances
            .iter()
            .filter_map(|i| i.spec.as_ref().map(|s| s.instance_id.clone()))
            .collect()
    }

    use pb::{Health::*, State::*};

    #[test]
    fn an_instance_failing_its_active_check_is_not_routable() {
        let all = [
            instance("a", Serving, Healthy, false),
            instance("b", Serving, Unhealthy, false),
            instance("c", Serving, Unknown, false),
            instance("d", Draining, Healthy, false),
        ];
        assert_eq!(ids(&routable(&all)), ["a", "c"]);
    }

    #[test]
    fn below_half_routable_every_serving_instance_is_panic_mode() {
        let all = [
            instance("a", Serving, Unhealthy, false),
            instance("b", Serving, Unhealthy, false),
            instance("c", Serving, Healthy, false),
            instance("d", OutOfService, Healthy, false),
        ];
        assert_eq!(ids(&routable(&all)), ["a", "b", "c"]);
    }

    #[test]
    fn held_instances_only_when_nothing_else_is() {
        let some = [
            instance("a", Serving, Healthy, true),
            instance("b", Serving, Healthy, false),
            instance("c", Serving, Healthy, false),
        ];
        assert_eq!(ids(&routable(&some)), ["b", "c"]);
        let held = [
            instance("a", Serving, Healthy, true),
            instance("b", Serving, Healthy, true),
        ];
        assert_eq!(ids(&routable(&held)), ["a", "b"]);
    }
}
