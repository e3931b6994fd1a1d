//! The tonic service: Subscribe, ReportLoad, Pick, SetPolicy, GetStats.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt};
use switchyard_client::balance::{self, Policy};
use switchyard_proto::balancer::v1::{self as pb, balancer_server};
use switchyard_runtime::{
    auth::{Role, Tokens},
    tls::{Identity, Peer},
};
use tokio_stream::{StreamMap, wrappers::WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    config::ServiceConfig, outlier::OutlierConfig, service::policy_from_pb, state::Balancer,
};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Most services in one Subscribe.
const MAX_SERVICES: usize = 1000;

/// The `switchyard.balancer.v1.Balancer` service.
#[derive(Debug, Clone)]
pub struct BalancerService {
    balancer: Arc<Balancer>,
    tokens: Arc<Tokens>,
    shutdown: CancellationToken,
}

fn invalid(field: &str, reason: &str) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

fn service_name(field: &str, name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter",
        ))
    }
}

/// Counts a subscriber while its stream lives.
struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> Self {
        metrics::gauge!("switchyard_balancer_subscribers").increment(1.0);
        Self
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!("switchyard_balancer_subscribers").decrement(1.0);
    }
}

// === impl BalancerService ===

impl BalancerService {
    /// A service over `balancer`; `shutdown` ends every stream.
    pub fn new(balancer: Arc<Balancer>, tokens: Arc<Tokens>, shutdown: CancellationToken) -> Self {
        Self {
            balancer,
            tokens,
            shutdown,
        }
    }

    /// By the client certificate's identity over mutual TLS, else by token.
    fn require<T>(&self, req: &Request<T>, role: Role) -> Result<(), Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let identity = Peer::identity_of(req.extensions());
        self.tokens.caller(identity, header, role)?;
        Ok(())
    }

    /// Load reports come from gateways: the gateway's identity may send
    /// them, as an operator token or identity may.
    fn require_reporter<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match Peer::identity_of(req.extensions()) {
            Some(Identity::Gateway) => Ok(()),
            _ => self.require(req, Role::Operator),
        }
    }
}

/// Folds zone preference for `zone` into each endpoint's effective weight.
fn for_zone(a: &pb::Assignment, zone: &str) -> pb::Assignment {
    let mut a = a.clone();
    if zone.is_empty() {
        return a;
    }
    let zones: Vec<&str> = a.endpoints.iter().map(|e| e.zone.as_str()).collect();
    let factors = balance::zone_factors(zone, &zones);
    for (e, f) in a.endpoints.iter_mut().zip(factors) {
        e.effective_weight *= f;
    }
    a
}

fn duration(
    field: &str,
    d: Option<prost_types::Duration>,
    current: Duration,
) -> Result<Duration, Status> {
    match d {
        None => Ok(current),
        Some(d) => Duration::try_from(d).map_err(|_| invalid(field, "must not be negative")),
    }
}

fn merge_outlier(o: &pb::OutlierDetection, cur: &OutlierConfig) -> Result<OutlierConfig, Status> {
    let pick = |v: u32, c: u32| if v == 0 { c } else { v };
    let next = OutlierConfig {
        consecutive_failures: pick(o.consecutive_failures, cur.consecutive_failures),
        base_ejection_time: duration(
            "outlier_detection.base_ejection_time",
            o.base_ejection_time,
            cur.base_ejection_time,
        )?,
        max_ejection_time: duration(
            "outlier_detection.max_ejection_time",
            o.max_ejection_time,
            cur.max_ejection_time,
        )?,
        max_ejection_percent: pick(o.max_ejection_percent, cur.max_ejection_percent),
        success_rate_minimum_hosts: pick(
            o.success_rate_minimum_hosts,
            cur.success_rate_minimum_hosts,
        ),
        success_rate_request_volume: if o.success_rate_request_volume == 0 {
            cur.success_rate_request_volume
        } else {
            u64::from(o.success_rate_request_volume)
        },
        success_rate_stdev_factor: if o.success_rate_stdev_factor == 0 {
            cur.success_rate_stdev_factor
        } else {
            f64::from(o.success_rate_stdev_factor) / 1000.0
        },
        interval: duration("outlier_detection.interval", o.interval, cur.interval)?,
        healthy_panic_threshold: pick(o.healthy_panic_threshold, cur.healthy_panic_threshold),
    };
    Ok(next)
}

#[tonic::async_trait]
impl balancer_server::Balancer for BalancerService {
    type SubscribeStream = Boxed<pb::Assignment>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.into_inner();
        if r.services.is_empty() || r.services.len() > MAX_SERVICES {
            return Err(invalid("services", "name 1 to 1000 services"));
        }
        for (i, s) in r.services.iter().enumerate() {
            service_name(&format!("services[{i}]"), s)?;
        }
        let mut streams = StreamMap::new();
        for name in &r.services {
            // A watch keeps only the latest value: a subscriber that falls
            // behind gets the newest assignment, never a backlog.
            streams.insert(name.clone(), WatchStream::new(self.balancer.follow(name)));
        }
        tracing::info!(subscriber = %r.subscriber_id, services = r.services.len(), "subscribed");
        let gauge = SubscriberGauge::new();
        let zone = r.zone;
        let out = streams
            .filter_map(move |(_, latest)| {
                let _alive = &gauge;
                let message = latest.map(|a| Ok(for_zone(&a, &zone)));
                async move { message }
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(out)))
    }

    async fn report_load(
        &self,
        req: Request<Streaming<pb::LoadReport>>,
    ) -> Result<Response<pb::ReportLoadResponse>, Status> {
        self.require_reporter(&req)?;
        let mut stream = req.into_inner();
        let mut accepted = 0;
        loop {
            let next = tokio::select! {
                () = self.shutdown.cancelled() => break,
                next = stream.next() => next,
            };
            let Some(report) = next else { break };
            let report = report?;
            if report.reporter_id.is_empty() || report.reporter_id.len() > 128 {
                return Err(invalid("reporter_id", "must be 1 to 128 bytes"));
            }
            self.balancer.ingest(&report);
            accepted += 1;
        }
        Ok(Response::new(pb::ReportLoadResponse {
            reports_accepted: accepted,
        }))
    }

    async fn pick(
        &self,
        req: Request<pb::PickRequest>,
    ) -> Result<Response<pb::PickResponse>, Status> {
        let r = req.into_inner();
        service_name("service", &r.service)?;
        let key = (!r.hash_key.is_empty()).then_some(r.hash_key.as_bytes());
        let picked = self
            .balancer
            .pick(&r.service, key, &r.exclude_instance_ids)
            .ok_or_else(|| {
                Status::unavailable(format!("service {}: no routable endpoint", r.service))
            })?;
        Ok(Response::new(pb::PickResponse {
            endpoint: Some(picked.endpoint),
            panic: picked.panic,
            policy: crate::service::policy_to_pb(picked.policy) as i32,
        }))
    }

    async fn set_policy(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        self.require(&req, Role::Operator)?;
        let p = req
            .into_inner()
            .policy
            .ok_or_else(|| invalid("policy", "required"))?;
        service_name("policy.service", &p.service)?;
        if pb::Policy::try_from(p.policy).is_err() {
            return Err(invalid("policy.policy", "unknown policy"));
        }
        let mut next: ServiceConfig = self.balancer.config_of(&p.service);
        if let Some(policy) = policy_from_pb(p.policy) {
            next.policy = Some(Policy::name(policy).to_string());
        }
        if let Some(o) = &p.outlier_detection {
            next.outlier = merge_outlier(o, &next.outlier)?;
        }
        if let Some(s) = &p.slow_start {
            next.slow_start.window =
                duration("slow_start.window", s.window, next.slow_start.window)?;
            if s.min_weight_percent != 0 {
                next.slow_start.min_weight_percent = s.min_weight_percent;
            }
        }
        if !p.hash_key.is_empty() {
            next.hash_key = p.hash_key;
        }
        next.validate("policy")
            .map_err(|e| invalid(&e.key, &e.message))?;
        let policy = self.balancer.set_config(&p.service, next);
        tracing::info!(service = %p.service, policy = ?policy.policy(), "policy set");
        Ok(Response::new(pb::SetPolicyResponse {
            policy: Some(policy),
        }))
    }

    async fn get_stats(
        &self,
        req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let r = req.into_inner();
        if !r.service.is_empty() {
            service_name("service", &r.service)?;
        }
        let only = (!r.service.is_empty()).then_some(r.service.as_str());
        let (services, reporters) = self.balancer.stats(only);
        let reporters = reporters
            .into_iter()
            .map(|(id, zone, age)| pb::Reporter {
                reporter_id: id,
                zone,
                last_report_age: Some(switchyard_proto::duration(age)),
            })
            .collect();
        Ok(Response::new(pb::GetStatsResponse {
            services,
            reporters,
            balancer_id: self.balancer.id().to_string(),
        }))
    }
}
