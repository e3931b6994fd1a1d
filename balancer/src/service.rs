//! One service as the balancer holds it: endpoints from the registry, its
//! policy, outlier state, and the latest assignment for subscribers.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use switchyard_client::balance::{self, Load, Member, Pick, Picker, Policy, Status};
use switchyard_proto::{balancer::v1 as pb, registry::v1 as reg};
use tokio::sync::watch;

use crate::{
    config::ServiceConfig,
    outlier::{Detector, Observation, Reason},
};

/// The latest assignment, or none yet.
pub type Latest = Option<Arc<pb::Assignment>>;

/// One service.
#[derive(Debug)]
pub struct Service {
    name: String,
    file: ServiceConfig,
    set: Option<ServiceConfig>,
    instances: Vec<reg::Instance>,
    source: Option<reg::WatchPosition>,
    authoritative: bool,
    detector: Detector,
    loads: HashMap<String, Arc<Load>>,
    picker: Option<Picker>,
    version: u64,
    latest: watch::Sender<Latest>,
    /// Requests and failures reported over the last interval (for stats).
    pub requests: u64,
    /// Failures reported over the last interval.
    pub failures: u64,
}

/// What a pick found.
#[derive(Debug, Clone)]
pub struct Picked {
    /// The endpoint.
    pub endpoint: pb::Endpoint,
    /// Picked in panic mode.
    pub panic: bool,
    /// By which policy.
    pub policy: Policy,
}

// === impl Service ===

impl Service {
    /// A service with its file config (default when absent).
    pub fn new(name: &str, file: ServiceConfig) -> Self {
        Self {
            name: name.to_string(),
            file,
            set: None,
            instances: Vec::new(),
            source: None,
            authoritative: false,
            detector: Detector::default(),
            loads: HashMap::new(),
            picker: None,
            version: 0,
            latest: watch::Sender::new(None),
            requests: 0,
            failures: 0,
        }
    }

    /// Follows the assignment.
    pub fn subscribe(&self) -> watch::Receiver<Latest> {
        self.latest.subscribe()
    }

    /// The latest assignment.
    pub fn latest(&self) -> Latest {
        self.latest.borrow().clone()
    }

    /// Subscribers following it.
    pub fn subscribers(&self) -> usize {
        self.latest.receiver_count()
    }

    /// True once it had an authoritative registry view.
    pub fn authoritative(&self) -> bool {
        self.authoritative
    }

    /// The config in force: SetPolicy's, else the file's.
    pub fn config(&self) -> &ServiceConfig {
        self.set.as_ref().unwrap_or(&self.file)
    }

    /// Replaces the SetPolicy override.
    pub fn set_config(&mut self, config: ServiceConfig) {
        self.set = Some(config);
        self.picker = None;
    }

    /// The policy: configured, else the instances' `lb.policy` (the most
    /// common valid value), else peak_ewma.
    pub fn policy(&self) -> Policy {
        if let Some(p) = self.config().policy() {
            return p;
        }
        let mut votes: HashMap<Policy, usize> = HashMap::new();
        for i in &self.instances {
            let named = i.spec.as_ref().and_then(|s| s.metadata.get("lb.policy"));
            if let Some(p) = named.and_then(|n| n.parse::<Policy>().ok()) {
                *votes.entry(p).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(p, n)| (*n, p.name()))
            .map_or(Policy::PeakEwma, |(p, _)| p)
    }

    /// Takes the registry's current instances of this service.
    pub fn set_instances(
        &mut self,
        instances: &[reg::Instance],
        source: Option<reg::WatchPosition>,
        authoritative: bool,
    ) {
        self.authoritative |= authoritative;
        self.source = source;
        if instances == self.instances.as_slice() {
            return;
        }
        self.instances = instances.to_vec();
        let ids: Vec<&str> = self
            .instances
            .iter()
            .filter_map(|i| i.spec.as_ref())
            .map(|s| s.instance_id.as_str())
            .collect();
        self.detector.retain(&ids);
        self.loads.retain(|id, _| ids.contains(&id.as_str()));
        self.picker = None;
    }

    /// Takes one reporter's observation of one endpoint.
    pub fn observe(
        &mut self,
        reporter: &str,
        id: &str,
        o: &Observation,
        now: Instant,
        decide: bool,
    ) -> bool {
        self.requests += o.requests;
        self.failures += o.failures;
        let cfg = self.config().outlier.clone();
        self.detector.observe(&cfg, reporter, id, o, now, decide)
    }

    /// Runs the periodic outlier checks.
    pub fn tick(&mut self, now: Instant, decide: bool) {
        let cfg = self.config().outlier.clone();
        let ejected = self.detector.tick(&cfg, now, decide);
        for id in ejected {
            tracing::warn!(service = %self.name, instance = %id, "ejected: success rate far below its peers'");
        }
    }

    /// Clears the per-interval request counters.
    pub fn reset_counters(&mut self) {
        self.requests = 0;
        self.failures = 0;
    }

    /// Builds the assignment; None before an authoritative view or when
    /// there are no endpoints (an empty assignment is never sent).
    pub fn build(
        &self,
        now: Instant,
        wall: SystemTime,
        balancer_id: &str,
    ) -> Option<pb::Assignment> {
        if !self.authoritative || self.instances.is_empty() {
            return None;
        }
        let config = self.config();
        let slow_start = config.slow_start.to_slow_start();
        let mut endpoints: Vec<pb::Endpoint> = Vec::with_capacity(self.instances.len());
        for i in &self.instances {
            let Some(spec) = &i.spec else { continue };
            let age = i
                .registered_at
                .as_ref()
                .and_then(|t| SystemTime::try_from(*t).ok())
                .and_then(|t| wall.duration_since(t).ok())
                .unwrap_or(Duration::MAX);
            let factor = balance::slow_start_factor(&slow_start, age);
            let ejection = self
                .detector
                .ejection(&spec.instance_id, now)
                .map(|e| pb::Ejection {
                    reason: match e.reason {
                        Reason::ConsecutiveFailures | Reason::Reported => {
                            pb::EjectionReason::ConsecutiveFailures
                        }
                        Reason::SuccessRate => pb::EjectionReason::SuccessRate,
                    } as i32,
                    remaining: Some(switchyard_proto::duration(
                        e.until.saturating_duration_since(now),
                    )),
                    times_ejected: self.detector.times_ejected(&spec.instance_id),
                });
            endpoints.push(pb::Endpoint {
                instance_id: spec.instance_id.clone(),
                address: spec.address.clone(),
                protocol: spec.protocol,
                zone: spec.zone.clone(),
                state: i.state,
                health: i.health,
                expired_held: i.expired_held,
                weight: i.weight,
                effective_weight: balance::effective_weight(i.weight, factor, 1.0),
                ejection,
                metadata: spec.metadata.clone(),
                tls: spec.tls,
            });
        }
        endpoints.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let panic = balance::eligible(
            &statuses(&endpoints),
            config.outlier.healthy_panic_threshold,
        )
        .panic;
        Some(pb::Assignment {
            service: self.name.clone(),
            policy: Some(self.policy_pb()),
            endpoints,
            source: self.source.clone(),
            version: self.version,
            balancer_id: balancer_id.to_string(),
            panic,
        })
    }

    /// Publishes a new assignment if it differs from the last in anything
    /// but the ejections' time left. Returns true when it published.
    pub fn publish(&mut self, now: Instant, wall: SystemTime, balancer_id: &str) -> bool {
        let Some(mut next) = self.build(now, wall, balancer_id) else {
            return false;
        };
        let same = self
            .latest
            .borrow()
            .as_ref()
            .is_some_and(|current| comparable(current) == comparable(&next));
        if same {
            return false;
        }
        self.version += 1;
        next.version = self.version;
        self.picker = None;
        self.latest.send_replace(Some(Arc::new(next)));
        metrics::counter!("switchyard_balancer_assignments_total").increment(1);
        true
    }

    /// The policy as the contract carries it.
    pub fn policy_pb(&self) -> pb::ServicePolicy {
        let c = self.config();
        let o = &c.outlier;
        pb::ServicePolicy {
            service: self.name.clone(),
            policy: policy_to_pb(self.policy()) as i32,
            outlier_detection: Some(pb::OutlierDetection {
                consecutive_failures: o.consecutive_failures,
                base_ejection_time: Some(switchyard_proto::duration(o.base_ejection_time)),
                max_ejection_time: Some(switchyard_proto::duration(o.max_ejection_time)),
                max_ejection_percent: o.max_ejection_percent,
                success_rate_minimum_hosts: o.success_rate_minimum_hosts,
                success_rate_request_volume: u32::try_from(o.success_rate_request_volume)
                    .unwrap_or(u32::MAX),
                success_rate_stdev_factor: (o.success_rate_stdev_factor * 1000.0) as u32,
                interval: Some(switchyard_proto::duration(o.interval)),
                healthy_panic_threshold: o.healthy_panic_threshold,
            }),
            slow_start: Some(pb::SlowStart {
                window: Some(switchyard_proto::duration(c.slow_start.window)),
                min_weight_percent: c.slow_start.min_weight_percent,
            }),
            hash_key: c.hash_key.clone(),
        }
    }

    /// Picks for a client that does not balance itself.
    pub fn pick(&mut self, key: Option<&[u8]>, exclude: &[String]) -> Option<Picked> {
        let latest = self.latest()?;
        let policy = self.policy();
        if self.picker.is_none() {
            let members = latest
                .endpoints
                .iter()
                .map(|e| Member {
                    id: Arc::from(e.instance_id.as_str()),
                    weight: e.effective_weight,
                    load: self.loads.entry(e.instance_id.clone()).or_default().clone(),
                })
                .collect();
            self.picker = Some(Picker::new(policy, members));
        }
        let picker = self.picker.as_ref()?;
        let threshold = self.config().outlier.healthy_panic_threshold;
        let eligible = balance::eligible(&statuses(&latest.endpoints), threshold);
        let index = picker.pick(Pick { key }, |i| {
            eligible.members[i] && !exclude.contains(&latest.endpoints[i].instance_id)
        })?;
        Some(Picked {
            endpoint: latest.endpoints[index].clone(),
            panic: eligible.panic,
            policy,
        })
    }
}

/// The routability inputs of each endpoint.
pub fn statuses(endpoints: &[pb::Endpoint]) -> Vec<Status> {
    endpoints
        .iter()
        .map(|e| Status {
            serving: e.state == reg::State::Serving as i32,
            ejected: e.ejection.is_some(),
            unhealthy: e.health == reg::Health::Unhealthy as i32,
            held: e.expired_held,
        })
        .collect()
}

/// An assignment with what changes on its own (version, time left) blanked.
fn comparable(a: &pb::Assignment) -> pb::Assignment {
    let mut a = a.clone();
    a.version = 0;
    for e in &mut a.endpoints {
        if let Some(ej) = &mut e.ejection {
            ej.remaining = None;
        }
    }
    a
}

/// A policy on the wire.
pub fn policy_to_pb(p: Policy) -> pb::Policy {
    balance::to_proto(p)
}

/// A policy from the wire (UNSPECIFIED is None).
pub fn policy_from_pb(p: i32) -> Option<Policy> {
    balance::from_proto(p)
}
