//! The balancer's state: the services someone asked about, the reporters it
//! hears from, and the registry view they are built from. One mutex; no
//! await under it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use switchyard_client::View;
use switchyard_proto::balancer::v1 as pb;
use switchyard_runtime::SharedClock;
use tokio::sync::watch;

use crate::{
    config::{ServiceConfig, ServicesFile},
    outlier::Observation,
    service::{Latest, Picked, Service},
};

/// The balancer.
#[derive(Debug)]
pub struct Balancer {
    inner: Mutex<Inner>,
    clock: SharedClock,
    id: String,
    file: ServicesFile,
    interval: Duration,
    started: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    services: BTreeMap<String, Service>,
    reporters: HashMap<String, Reporter>,
    view: Arc<View>,
    first_report: Option<Instant>,
}

/// A reporter the balancer hears from.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// Its zone.
    pub zone: String,
    /// When it last reported.
    pub last: Instant,
    /// Reports received.
    pub reports: u64,
}

// === impl Balancer ===

impl Balancer {
    /// A balancer named `id`, expecting reports every `interval`.
    pub fn new(
        id: String,
        file: ServicesFile,
        interval: Duration,
        clock: SharedClock,
    ) -> Arc<Self> {
        let started = clock.now();
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            clock,
            id,
            file,
            interval,
            started,
        })
    }

    /// This balancer's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Follows a service's assignment, materialising the service if needed.
    pub fn follow(&self, name: &str) -> watch::Receiver<Latest> {
        let mut inner = self.lock();
        let rx = self.ensure(&mut inner, name).subscribe();
        self.publish(&mut inner, name);
        rx
    }

    /// Takes a new registry view.
    pub fn apply_view(&self, view: Arc<View>) {
        let mut inner = self.lock();
        inner.view = view;
        let names: Vec<String> = inner.services.keys().cloned().collect();
        for name in names {
            self.refresh(&mut inner, &name);
            self.publish(&mut inner, &name);
        }
    }

    /// Takes one load report.
    pub fn ingest(&self, report: &pb::LoadReport) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let reporter = inner
            .reporters
            .entry(report.reporter_id.clone())
            .or_insert(Reporter {
                zone: report.zone.clone(),
                last: now,
                reports: 0,
            });
        reporter.last = now;
        reporter.reports += 1;
        reporter.zone.clone_from(&report.zone);
        let first = *inner.first_report.get_or_insert(now);
        let decide = now.saturating_duration_since(first) >= self.interval * 2;
        let mut touched = Vec::new();
        for load in &report.endpoints {
            let Some(service) = inner.services.get_mut(&load.service) else {
                continue;
            };
            let o = observation(load);
            if service.observe(&report.reporter_id, &load.instance_id, &o, now, decide) {
                tracing::warn!(service = %load.service, instance = %load.instance_id, reporter = %report.reporter_id, "ejected");
            }
            touched.push(load.service.clone());
        }
        touched.dedup();
        for name in touched {
            self.publish(&mut inner, &name);
        }
    }

    /// Periodic work: drop silent reporters, success-rate checks, expiring
    /// ejections and slow start (republished when they change).
    pub fn tick(&self) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let silent = self.interval * 3;
        inner.reporters.retain(|id, r| {
            let keep = now.saturating_duration_since(r.last) < silent;
            if !keep {
                tracing::info!(reporter = %id, "reporter silent for 3 intervals; dropped");
            }
            keep
        });
        let decide = inner
            .first_report
            .is_some_and(|t| now.saturating_duration_since(t) >= self.interval * 2);
        let names: Vec<String> = inner.services.keys().cloned().collect();
        for name in names {
            if let Some(s) = inner.services.get_mut(&name) {
                s.tick(now, decide);
            }
            self.publish(&mut inner, &name);
        }
        metrics::gauge!("switchyard_balancer_reporters").set(inner.reporters.len() as f64);
        metrics::gauge!("switchyard_balancer_services").set(inner.services.len() as f64);
    }

    /// Clears per-interval counters (once per report interval).
    pub fn roll_counters(&self) {
        for s in self.lock().services.values_mut() {
            s.reset_counters();
        }
    }

    /// Picks an endpoint of `name`.
    pub fn pick(&self, name: &str, key: Option<&[u8]>, exclude: &[String]) -> Option<Picked> {
        let mut inner = self.lock();
        self.ensure(&mut inner, name);
        self.publish(&mut inner, name);
        inner.services.get_mut(name)?.pick(key, exclude)
    }

    /// Replaces a service's policy (SetPolicy); returns the policy in force.
    pub fn set_config(&self, name: &str, config: ServiceConfig) -> pb::ServicePolicy {
        let mut inner = self.lock();
        self.ensure(&mut inner, name).set_config(config);
        self.publish(&mut inner, name);
        inner
            .services
            .get(name)
            .map(Service::policy_pb)
            .unwrap_or_default()
    }

    /// The config a SetPolicy starts from.
    pub fn config_of(&self, name: &str) -> ServiceConfig {
        let mut inner = self.lock();
        self.ensure(&mut inner, name).config().clone()
    }

    /// Stats of one service or all.
    pub fn stats(
        &self,
        only: Option<&str>,
    ) -> (Vec<pb::ServiceStats>, Vec<(String, String, Duration)>) {
        let now = self.clock.now();
        let wall = self.clock.wall();
        let inner = self.lock();
        let services = inner
            .services
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
            .map(|(_, s)| pb::ServiceStats {
                assignment: s
                    .latest()
                    .map(|a| refresh_remaining(&a, now, wall, s, &self.id)),
                authoritative: s.authoritative(),
                subscribers: u32::try_from(s.subscribers()).unwrap_or(u32::MAX),
                requests: s.requests,
                failures: s.failures,
            })
            .collect();
        let reporters = inner
            .reporters
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    r.zone.clone(),
                    now.saturating_duration_since(r.last),
                )
            })
            .collect();
        (services, reporters)
    }

    /// Whether the registry view was ever authoritative.
    pub fn view_authoritative(&self) -> bool {
        self.lock().view.authoritative
    }

    fn ensure<'a>(&self, inner: &'a mut Inner, name: &str) -> &'a mut Service {
        if !inner.services.contains_key(name) {
            let file = self.file.services.get(name).cloned().unwrap_or_default();
            inner
                .services
                .insert(name.to_string(), Service::new(name, file));
            self.refresh(inner, name);
        }
        inner.services.get_mut(name).expect("inserted above")
    }

    fn refresh(&self, inner: &mut Inner, name: &str) {
        let view = inner.view.clone();
        let instances = view
            .services
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new([]));
        if let Some(s) = inner.services.get_mut(name) {
            s.set_instances(&instances, view.position.clone(), view.authoritative);
        }
    }

    fn publish(&self, inner: &mut Inner, name: &str) {
        let now = self.clock.now();
        // Right after a start, wait two report intervals so reporters can
        // hand back the ejections a previous balancer made.
        if now.saturating_duration_since(self.started) < self.interval * 2 {
            return;
        }
        let wall = self.clock.wall();
        if let Some(s) = inner.services.get_mut(name) {
            s.publish(now, wall, &self.id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        switchyard_time::sync::lock(&self.inner)
    }
}

/// The assignment with ejection times left as of `now`.
fn refresh_remaining(
    a: &pb::Assignment,
    now: Instant,
    wall: std::time::SystemTime,
    s: &Service,
    id: &str,
) -> pb::Assignment {
    s.build(now, wall, id).map_or_else(
        || a.clone(),
        |mut b| {
            b.version = a.version;
            b
        },
    )
}

fn observation(load: &pb::EndpointLoad) -> Observation {
    let f = load.failures.unwrap_or_default();
    Observation {
        requests: load.requests,
        failures: f.connect + f.timeout + f.reset + f.http_5xx + f.grpc,
        consecutive: load.consecutive_failures,
        ejected_for: load
            .ejection_remaining
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| !d.is_zero()),
        times_ejected: load.times_ejected,
    }
}
