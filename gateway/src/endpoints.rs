//! Each service's endpoints as the gateway uses them: built from the
//! balancer's latest assignment, or from the registry view when there is no
//! balancer, with local breakers, loads and counters that outlive rebuilds.
//!
//! The request path reads an immutable [`Snapshot`] through `ArcSwap` (no
//! lock); rebuilds happen on the control path.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use switchyard_client::balance::{self, Load, Member, Pick, Picker, Policy, Rule, Status};
use switchyard_proto::{balancer::v1 as pb, registry::v1 as reg};
use tower::retry::budget::{Budget, TpsBudget};

use crate::{
    breaker::{Breaker, BreakerConfig, BreakerState},
    upstream::tls::{TlsClient, TlsClients, TlsSettings},
};

/// One endpoint, kept across rebuilds while its instance exists.
#[derive(Debug)]
pub struct Endpoint {
    /// Instance id.
    pub id: Arc<str>,
    /// host:port.
    pub address: String,
    /// The URI authority to connect to, hashed once as the HTTP/1.1 pool's
    /// key (`pool_key.authority()`).
    pub pool_key: crate::pool::PoolKey,
    /// Speaks HTTP/2 (h2c or gRPC) rather than HTTP/1.1.
    pub h2: bool,
    /// Plaintext or TLS, and with which client.
    pub transport: Transport,
    /// In-flight count and latency estimate.
    pub load: Arc<Load>,
    /// Local ejection and circuit breaking.
    pub breaker: Breaker,
    /// Counters for the next load report.
    pub stats: Stats,
    /// Prometheus counters by outcome, made once (no per-request labels).
    attempts: [metrics::Counter; 6],
}

/// How an endpoint is reached.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TCP: the gateway's own HTTP/1.1 pool, or hyper's HTTP/2 client.
    Plain,
    /// TLS, through the service's client for the endpoint's protocol
    /// (boxed: a client is a few hundred bytes, shared inside).
    Tls(Box<TlsClient>),
    /// Registered as TLS, but this gateway has no certificate files to
    /// reach it with: every attempt fails without connecting.
    TlsUnavailable,
}

/// Counters since the last load report.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    connect: AtomicU64,
    timeout: AtomicU64,
    reset: AtomicU64,
    http_5xx: AtomicU64,
    grpc: AtomicU64,
}

/// How an attempt ended, for counters, breakers and loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A usable answer.
    Success,
    /// Could not connect (never reached the endpoint).
    Connect,
    /// No answer within the per-try timeout.
    Timeout,
    /// Connection or stream reset after sending.
    Reset,
    /// 502, 503 or 504.
    Http5xx,
    /// gRPC UNAVAILABLE.
    Grpc,
}

// === impl Outcome ===

impl Outcome {
    const ALL: [Outcome; 6] = [
        Self::Success,
        Self::Connect,
        Self::Timeout,
        Self::Reset,
        Self::Http5xx,
        Self::Grpc,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Connect => "connect_error",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Http5xx => "http_5xx",
            Self::Grpc => "grpc_unavailable",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// What the rule needs per endpoint, besides the local breaker.
#[derive(Debug, Clone, Copy)]
struct Base {
    serving: bool,
    unhealthy: bool,
    held: bool,
    balancer_ejected_until: Option<Instant>,
    times_ejected: u32,
}

/// Where a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Nothing known yet.
    Empty,
    /// The balancer's assignment.
    Balancer,
    /// The registry view (no balancer).
    Registry,
}

/// An immutable view for the request path.
#[derive(Debug)]
pub struct Snapshot {
    /// The pick algorithm.
    pub policy: Policy,
    picker: Picker,
    /// Endpoints, in picker order.
    pub endpoints: Vec<Arc<Endpoint>>,
    base: Vec<Base>,
    panic_threshold: u32,
    max_ejection_percent: u32,
    /// Where it came from.
    pub source: Source,
}

/// One service.
#[derive(Debug)]
pub struct ServiceState {
    /// Its name.
    pub name: Arc<str>,
    snapshot: ArcSwap<Snapshot>,
    inputs: Mutex<Inputs>,
    /// The retry budget of this gateway for this service.
    pub budget: TpsBudget,
    /// Request latency histogram of this service.
    pub duration: metrics::Histogram,
    breaker: BreakerConfig,
    max_per_endpoint: u32,
    workers: usize,
    /// How TLS instances are reached (`None`: without mtls_* files, they
    /// cannot be), and this service's clients, made at its first TLS
    /// instance.
    tls: Option<TlsSettings>,
    tls_clients: OnceLock<TlsClients>,
}

#[derive(Debug, Default)]
struct Inputs {
    assignment: Option<(Arc<pb::Assignment>, Instant)>,
    instances: Arc<[reg::Instance]>,
    use_balancer: bool,
    endpoints: HashMap<String, Arc<Endpoint>>,
}

/// Settings every service shares.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Local breaker thresholds.
    pub breaker: BreakerConfig,
    /// Most requests in flight per endpoint.
    pub max_per_endpoint: u32,
    /// Retry budget share of first attempts, percent.
    pub budget_percent: u32,
    /// Retry budget floor per second.
    pub budget_min_per_second: u32,
    /// This gateway's zone.
    pub zone: String,
    /// The gateway's traffic workers ([`crate::worker`]): each endpoint
    /// keeps idle connections apart for each.
    pub workers: usize,
    /// How instances served over TLS are reached; `None` without mtls_*
    /// files.
    pub tls: Option<TlsSettings>,
}

// === impl Endpoint ===

impl Endpoint {
    /// Served over TLS.
    pub fn tls(&self) -> bool {
        !matches!(self.transport, Transport::Plain)
    }
}

// === impl Stats ===

impl Stats {
    fn count(&self, outcome: Outcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Success => return,
            Outcome::Connect => &self.connect,
            Outcome::Timeout => &self.timeout,
            Outcome::Reset => &self.reset,
            Outcome::Http5xx => &self.http_5xx,
            Outcome::Grpc => &self.grpc,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> (u64, pb::Failures) {
        let t = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let requests = t(&self.requests);
        let failures = pb::Failures {
            connect: t(&self.connect),
            timeout: t(&self.timeout),
            reset: t(&self.reset),
            http_5xx: t(&self.http_5xx),
            grpc: t(&self.grpc),
        };
        (requests, failures)
    }
}

// === impl Snapshot ===

impl Snapshot {
    fn empty() -> Self {
        Self {
            policy: Policy::PeakEwma,
            picker: Picker::new(Policy::PeakEwma, Vec::new()),
            endpoints: Vec::new(),
            base: Vec::new(),
            panic_threshold: 50,
            max_ejection_percent: 50,
            source: Source::Empty,
        }
    }

    /// What the shared rule ([`Rule`]) needs to know of endpoint `i`:
    /// ejected by the balancer, or locally (its breaker not closed).
    fn status(&self, i: usize, now: Instant) -> Status {
        let b = &self.base[i];
        Status {
            serving: b.serving,
            ejected: self.balancer_ejected(i, now)
                || self.endpoints[i].breaker.state(now) != BreakerState::Closed,
            unhealthy: b.unhealthy,
            held: b.held,
        }
    }

    fn balancer_ejected(&self, i: usize, now: Instant) -> bool {
        self.base[i].balancer_ejected_until.is_some_and(|t| t > now)
    }

    /// Endpoints ejected now, by the balancer or locally (the union the
    /// ejection cap counts).
    pub fn ejected(&self, now: Instant) -> usize {
        (0..self.endpoints.len())
            .filter(|i| {
                self.balancer_ejected(*i, now)
                    || self.endpoints[*i].breaker.state(now) != BreakerState::Closed
            })
            .count()
    }

    /// Picks an endpoint not in `tried`. Returns it and whether in panic mode.
    pub fn pick(
        &self,
        key: Option<&[u8]>,
        tried: &[Arc<str>],
        now: Instant,
        max_per_endpoint: u32,
    ) -> Option<(Arc<Endpoint>, bool)> {
        let rule = Rule::over(
            (0..self.endpoints.len()).map(|i| self.status(i, now)),
            self.panic_threshold,
        );
        // The gateway's own filters, per request: not tried yet, under the
        // per-endpoint limit.
        let usable = |i: usize| {
            let e = &self.endpoints[i];
            !tried.iter().any(|t| Arc::ptr_eq(t, &e.id) || **t == *e.id)
                && e.load.in_flight() < max_per_endpoint
        };
        // A locally ejected endpoint whose breaker is half open takes its
        // trial requests beside the routable ones.
        let trial = |i: usize| {
            let breaker = &self.endpoints[i].breaker;
            !rule.panic && breaker.state(now) == BreakerState::HalfOpen && breaker.admits(now)
        };
        let first = |i: usize| usable(i) && (rule.first_choice(&self.status(i, now)) || trial(i));
        let index = self.picker.pick(Pick { key }, first).or_else(|| {
            // Nothing routable left untried: the brake's held endpoints,
            // then any SERVING one we have not tried (better than failing).
            self.picker
                .pick(Pick { key }, |i| {
                    usable(i) && Rule::fallback(&self.status(i, now))
                })
                .or_else(|| {
                    self.picker
                        .pick(Pick { key }, |i| usable(i) && self.base[i].serving)
                })
        })?;
        Some((self.endpoints[index].clone(), rule.panic))
    }
}

// === impl ServiceState ===

impl ServiceState {
    /// A service with nothing known yet.
    pub fn new(name: &str, s: &ServiceSettings) -> Self {
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            s.budget_min_per_second,
            f32::from(u16::try_from(s.budget_percent).unwrap_or(u16::MAX)) / 100.0,
        );
        Self {
            name: Arc::from(name),
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            inputs: Mutex::new(Inputs::default()),
            budget,
            duration: metrics::histogram!("switchyard_gateway_service_duration_seconds", "service" => name.to_string()),
            breaker: s.breaker,
            max_per_endpoint: s.max_per_endpoint,
            workers: s.workers,
            tls: s.tls.clone(),
            tls_clients: OnceLock::new(),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Picks an endpoint not in `tried`.
    pub fn pick(
        &self,
        key: Option<&[u8]>,
        tried: &[Arc<str>],
        now: Instant,
    ) -> Option<(Arc<Endpoint>, bool)> {
        self.snapshot
            .load()
            .pick(key, tried, now, self.max_per_endpoint)
    }

    /// Records how an attempt ended.
    pub fn record(&self, endpoint: &Endpoint, outcome: Outcome, latency: Duration, now: Instant) {
        endpoint.stats.count(outcome);
        endpoint.attempts[outcome.index()].increment(1);
        if outcome == Outcome::Success {
            endpoint.breaker.on_success(now);
            endpoint.load.observe_now(latency, now);
            return;
        }
        // A failure counts as slow for the latency estimate, so peak EWMA
        // does not reward fast errors.
        endpoint
            .load
            .observe_now(latency.max(Duration::from_secs(1)), now);
        let snap = self.snapshot.load();
        let n = snap.endpoints.len();
        let cap = (n * snap.max_ejection_percent as usize / 100).max(1);
        let may_open = snap.ejected(now) < cap;
        if !may_open {
            // The cap keeps this failing endpoint in: give an ejected one a
            // trial now rather than sending everything to the failing one
            // until the ejection ends.
            if let Some(e) = snap
                .endpoints
                .iter()
                .filter(|e| e.breaker.state(now) == BreakerState::Open)
                .min_by_key(|e| e.breaker.remaining(now))
            {
                e.breaker.probe_now(now);
            }
        }
        let local = matches!(outcome, Outcome::Timeout | Outcome::Connect);
        let sent = now.checked_sub(latency).unwrap_or(now);
        if endpoint
            .breaker
            .on_failure(&self.breaker, now, sent, local, may_open)
        {
            tracing::warn!(service = %self.name, instance = %endpoint.id, ?outcome, "ejected locally");
            metrics::counter!("switchyard_gateway_local_ejections_total", "service" => self.name.to_string()).increment(1);
        }
    }

    /// Takes a new assignment from the balancer.
    pub fn set_assignment(&self, a: Arc<pb::Assignment>, now: Instant) {
        let mut inputs = self.lock();
        inputs.assignment = Some((a, now));
        self.rebuild(&mut inputs, now);
    }

    /// Takes the registry's instances of this service.
    pub fn set_instances(&self, instances: Arc<[reg::Instance]>, now: Instant) {
        let mut inputs = self.lock();
        if inputs.instances == instances {
            return;
        }
        inputs.instances = instances;
        self.rebuild(&mut inputs, now);
    }

    /// Switches between the balancer's assignments and the registry view.
    pub fn use_balancer(&self, yes: bool, now: Instant) {
        let mut inputs = self.lock();
        if inputs.use_balancer != yes {
            inputs.use_balancer = yes;
            tracing::info!(service = %self.name, balancer = yes, "endpoint source changed");
            self.rebuild(&mut inputs, now);
        }
    }

    fn rebuild(&self, inputs: &mut Inputs, now: Instant) {
        let from_balancer = inputs.use_balancer && inputs.assignment.is_some();
        let snapshot =
            if from_balancer || (inputs.instances.is_empty() && inputs.assignment.is_some()) {
                self.build_from_assignment(inputs)
            } else if !inputs.instances.is_empty() {
                self.build_from_registry(inputs, now)
            } else {
                return;
            };
        // Forget endpoints that left: state must not pile up under churn,
        // and an instance that comes back (re-registered) starts afresh.
        inputs
            .endpoints
            .retain(|id, _| snapshot.endpoints.iter().any(|e| *e.id == **id));
        self.snapshot.store(Arc::new(snapshot));
    }

    fn endpoint(
        &self,
        inputs: &mut Inputs,
        id: &str,
        address: &str,
        protocol: i32,
        tls: bool,
    ) -> Option<Arc<Endpoint>> {
        let h2 = protocol == reg::Protocol::H2c as i32 || protocol == reg::Protocol::Grpc as i32;
        if let Some(e) = inputs
            .endpoints
            .get(id)
            .filter(|e| e.address == address && e.h2 == h2 && e.tls() == tls)
        {
            return Some(e.clone());
        }
        let e = Arc::new(Endpoint {
            id: Arc::from(id),
            address: address.to_string(),
            pool_key: crate::pool::PoolKey::new(address.parse().ok()?, self.workers),
            h2,
            transport: if tls {
                self.tls_transport(id, h2)
            } else {
                Transport::Plain
            },
            load: Arc::new(Load::new()),
            breaker: Breaker::default(),
            stats: Stats::default(),
            // Labelled by service, not endpoint: endpoints come and go with
            // every deploy, and a series per endpoint grows without bound
            // (Envoy and Linkerd label by cluster/service too); each
            // endpoint's figures are on the admin API (`/api/services`).
            attempts: Outcome::ALL.map(|o| {
                metrics::counter!("switchyard_gateway_upstream_attempts_total", "service" => self.name.to_string(), "outcome" => o.name())
            }),
        });
        inputs.endpoints.insert(id.to_string(), e.clone());
        Some(e)
    }

    /// The client an instance served over TLS is reached with.
    fn tls_transport(&self, id: &str, h2: bool) -> Transport {
        let Some(settings) = &self.tls else {
            tracing::warn!(service = %self.name, instance = id, "instance served over TLS, but this gateway has no mtls_* files to reach it with");
            return Transport::TlsUnavailable;
        };
        let clients = self
            .tls_clients
            .get_or_init(|| settings.clients(&self.name));
        Transport::Tls(Box::new(if h2 {
            clients.h2.clone()
        } else {
            clients.h1.clone()
        }))
    }

    fn build_from_assignment(&self, inputs: &mut Inputs) -> Snapshot {
        let Some((a, received)) = inputs.assignment.clone() else {
            return Snapshot::empty();
        };
        let policy = a
            .policy
            .as_ref()
            .and_then(|p| balance::from_proto(p.policy))
            .unwrap_or_default();
        let outlier = a.policy.as_ref().and_then(|p| p.outlier_detection);
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        let mut base = Vec::new();
        for e in &a.endpoints {
            let Some(ep) = self.endpoint(inputs, &e.instance_id, &e.address, e.protocol, e.tls)
            else {
                continue;
            };
            let ejection = e.ejection.as_ref();
            base.push(Base {
                serving: e.state == reg::State::Serving as i32,
                unhealthy: e.health == reg::Health::Unhealthy as i32,
                held: e.expired_held,
                balancer_ejected_until: ejection
                    .and_then(|x| x.remaining)
                    .and_then(|d| Duration::try_from(d).ok())
                    .map(|d| received + d),
                times_ejected: ejection.map_or(0, |x| x.times_ejected),
            });
            members.push(Member {
                id: ep.id.clone(),
                weight: e.effective_weight,
                load: ep.load.clone(),
            });
            endpoints.push(ep);
        }
        Snapshot {
            policy,
            picker: Picker::new(policy, members),
            endpoints,
            base,
            panic_threshold: outlier.map_or(50, |o| o.healthy_panic_threshold),
            max_ejection_percent: outlier.map_or(50, |o| o.max_ejection_percent),
            source: Source::Balancer,
        }
    }

    /// Without a balancer: the registry's instances, the service's
    /// `lb.policy`, and the last assignment's ejections until they expire.
    fn build_from_registry(&self, inputs: &mut Inputs, now: Instant) -> Snapshot {
        let instances = inputs.instances.clone();
        let carried: HashMap<String, (Option<Instant>, u32)> = inputs
            .assignment
            .as_ref()
            .map(|(a, at)| {
                a.endpoints
                    .iter()
                    .filter_map(|e| {
                        let x = e.ejection.as_ref()?;
                        let until = x
                            .remaining
                            .and_then(|d| Duration::try_from(d).ok())
                            .map(|d| *at + d);
                        Some((e.instance_id.clone(), (until, x.times_ejected)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut policy = None;
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        let mut base = Vec::new();
        for i in instances.iter() {
            let Some(spec) = &i.spec else { continue };
            policy = policy.or_else(|| {
                spec.metadata
                    .get("lb.policy")
                    .and_then(|p| p.parse::<Policy>().ok())
            });
            let Some(ep) = self.endpoint(
                inputs,
                &spec.instance_id,
                &spec.address,
                spec.protocol,
                spec.tls,
            ) else {
                continue;
            };
            let (until, times) = carried.get(&spec.instance_id).copied().unwrap_or((None, 0));
            base.push(Base {
                serving: i.state == reg::State::Serving as i32,
                unhealthy: i.health == reg::Health::Unhealthy as i32,
                held: i.expired_held,
                balancer_ejected_until: until.filter(|t| *t > now),
                times_ejected: times,
            });
            members.push(Member {
                id: ep.id.clone(),
                weight: balance::effective_weight(i.weight, 1.0, 1.0),
                load: ep.load.clone(),
            });
            endpoints.push(ep);
        }
        let policy = policy.unwrap_or_default();
        Snapshot {
            policy,
            picker: Picker::new(policy, members),
            endpoints,
            base,
            panic_threshold: 50,
            max_ejection_percent: 50,
            source: Source::Registry,
        }
    }

    /// This interval's load, for the balancers; resets the counters.
    pub fn report(&self, now: Instant) -> Vec<pb::EndpointLoad> {
        let snap = self.snapshot.load();
        let (mut ejected_now, mut in_flight) = (0u32, 0u32);
        let loads = snap
            .endpoints
            .iter()
            .zip(&snap.base)
            .map(|(e, b)| {
                let (requests, failures) = e.stats.take();
                let ejected = e.breaker.state(now) != BreakerState::Closed
                    || b.balancer_ejected_until.is_some_and(|t| t > now);
                ejected_now += u32::from(ejected);
                in_flight = in_flight.saturating_add(e.load.in_flight());
                let ejection_remaining = b
                    .balancer_ejected_until
                    .filter(|t| *t > now)
                    .map(|t| switchyard_proto::duration(t - now));
                pb::EndpointLoad {
                    service: self.name.to_string(),
                    instance_id: e.id.to_string(),
                    requests,
                    failures: Some(failures),
                    consecutive_failures: e.breaker.consecutive(),
                    in_flight: e.load.in_flight(),
                    latency_ewma: Some(switchyard_proto::duration(Duration::from_nanos(
                        e.load.ewma_ns() as u64,
                    ))),
                    latency_p50: None,
                    latency_p99: None,
                    ejection_remaining,
                    times_ejected: b.times_ejected,
                }
            })
            .collect();
        // Per service (see `attempts` above for why not per endpoint).
        let service = self.name.to_string();
        metrics::gauge!("switchyard_gateway_endpoints", "service" => service.clone())
            .set(snap.endpoints.len() as f64);
        metrics::gauge!("switchyard_gateway_endpoints_ejected", "service" => service.clone())
            .set(f64::from(ejected_now));
        metrics::gauge!("switchyard_gateway_upstream_in_flight", "service" => service)
            .set(f64::from(in_flight));
        loads
    }

    /// For the admin page.
    pub fn describe(&self, now: Instant) -> Value {
        let snap = self.snapshot.load();
        let endpoints: Vec<Value> = snap
            .endpoints
            .iter()
            .zip(&snap.base)
            .map(|(e, b)| {
                let local = e.breaker.state(now);
                json!({
                    "instance_id": &*e.id,
                    "address": e.address,
                    "tls": e.tls(),
                    "serving": b.serving,
                    "unhealthy": b.unhealthy,
                    "expired_held": b.held,
                    "in_flight": e.load.in_flight(),
                    "ewma_ms": e.load.ewma_ns() / 1e6,
                    "consecutive_failures": e.breaker.consecutive(),
                    "breaker": format!("{local:?}").to_ascii_lowercase(),
                    "ejected": local != BreakerState::Closed || b.balancer_ejected_until.is_some_and(|t| t > now),
                    "ejected_by_balancer_seconds": b.balancer_ejected_until.filter(|t| *t > now).map(|t| (t - now).as_secs_f64()),
                    "ejected_locally_seconds": e.breaker.remaining(now).map(|d| d.as_secs_f64()),
                })
            })
            .collect();
        json!({
            "service": &*self.name,
            "policy": snap.policy.name(),
            "source": format!("{:?}", snap.source).to_ascii_lowercase(),
            "endpoints": endpoints,
        })
    }

    /// Deposits a first attempt into the retry budget.
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Withdraws a retry from the budget; false when exhausted.
    pub fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inputs> {
        switchyard_time::sync::lock(&self.inputs)
    }
}
