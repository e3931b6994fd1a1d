//! The control plane side of the gateway: the registry view, the balancer
//! subscription (one balancer at a time), load reports (to every live
//! balancer), and the fall-back to balancing alone.
//!
//! None of this is on the request path; it only swaps what the request path
//! reads. An outage of the registry or the balancers keeps the last view.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use switchyard_client::{Discovery, Target, discovery::routable};
use switchyard_proto::balancer::v1::{self as pb, balancer_client::BalancerClient};
use switchyard_runtime::{
    Backoff, Readiness,
    tls::{ClientTls, Identity},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, metadata::AsciiMetadataValue, transport::Endpoint};

use crate::app::Gateway;

/// The balancers' service name in the registry.
pub const BALANCER_SERVICE: &str = "switchyard-balancer";

/// What the control plane needs.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where the registry is.
    pub target: Target,
    /// Lease TTL (how long an emptied view waits).
    pub ttl: Duration,
    /// Load report interval.
    pub interval: Duration,
    /// This gateway's id (reporter and subscriber id).
    pub id: String,
    /// Its zone.
    pub zone: String,
    /// Operator token for ReportLoad.
    pub balancer_token: Option<AsciiMetadataValue>,
}

/// Starts every control-plane task.
pub fn start(
    gw: Arc<Gateway>,
    cfg: ControlConfig,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let discovery = Discovery::start(
        cfg.target.clone(),
        Vec::new(),
        cfg.ttl,
        switchyard_runtime::clock::system(),
    );
    tokio::spawn(follow_registry(
        gw.clone(),
        discovery,
        readiness,
        shutdown.clone(),
    ));
    tokio::spawn(subscribe_loop(gw.clone(), cfg.clone(), shutdown.clone()));
    tokio::spawn(report_loop(gw, cfg, shutdown));
}

fn balancers(gw: &Gateway) -> Vec<String> {
    let view = gw.view.load();
    let mut addrs: Vec<String> = view
        .services
        .get(BALANCER_SERVICE)
        .map(|i| {
            routable(i)
                .into_iter()
                .filter_map(|i| i.spec.map(|s| s.address))
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    addrs
}

async fn follow_registry(
    gw: Arc<Gateway>,
    discovery: Discovery,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut changes = discovery.changes();
    loop {
        let view = changes.borrow_and_update().clone();
        gw.view.store(view.clone());
        let now = Instant::now();
        for s in gw.services() {
            if let Some(instances) = view.services.get(&*s.name) {
                s.set_instances(instances.clone(), now);
            }
        }
        let routes = gw.routes.load();
        let some_route_has_view = routes
            .services()
            .iter()
            .any(|s| view.services.get(s).is_some_and(|i| !i.is_empty()));
        if some_route_has_view || (routes.routes.is_empty() && view.snapshots > 0) {
            readiness.done("view");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

fn wanted(gw: &Gateway) -> BTreeSet<String> {
    let mut services = gw.routes.load().services();
    services.extend(gw.services().iter().map(|s| s.name.to_string()));
    services
}

async fn subscribe_loop(gw: Arc<Gateway>, cfg: ControlConfig, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut lost_at = Some(Instant::now());
    let mut alone = false;
    let mut turn = 0usize;
    loop {
        // Without a balancer for three intervals, balance alone.
        if !alone && lost_at.is_some_and(|t| t.elapsed() >= cfg.interval * 3) {
            tracing::warn!(
                "no balancer for 3 report intervals; balancing alone from the registry view"
            );
            set_source(&gw, false);
            alone = true;
        }
        let candidates = balancers(&gw);
        let services = wanted(&gw);
        if candidates.is_empty() || services.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(cfg.interval) => continue,
                () = gw.new_service.notified() => continue,
            }
        }
        let address = &candidates[turn % candidates.len()];
        turn += 1;
        match subscribe_once(&gw, &cfg, address, services, &mut lost_at, &shutdown).await {
            Ok(()) => return,
            Err(Ended::ServicesChanged) => {
                tracing::debug!(balancer = %address, "services changed: subscribing again")
            }
            Err(error) => {
                tracing::warn!(balancer = %address, %error, "balancer subscription ended")
            }
        }
        if lost_at.is_none() {
            // It was connected for a while: start the backoff afresh.
            backoff.reset();
            alone = false;
            lost_at = Some(Instant::now());
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Why a balancer subscription ended (shutdown aside).
#[derive(Debug, thiserror::Error)]
enum Ended {
    /// The services to follow changed: subscribed again, not a failure.
    #[error("the services to follow changed")]
    ServicesChanged,
    /// The balancer's address is not a URI.
    #[error("not a balancer address: {0}")]
    Address(#[source] tonic::transport::Error),
    /// No connection.
    #[error("connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// The balancer closed the stream.
    #[error("the balancer ended the stream")]
    StreamClosed,
    /// The balancer refused or failed the call.
    #[error("{0}")]
    Status(#[source] tonic::Status),
}

/// Follows one balancer until it fails, the set of services changes (to
/// subscribe again), or shutdown (`Ok`).
async fn subscribe_once(
    gw: &Gateway,
    cfg: &ControlConfig,
    address: &str,
    services: BTreeSet<String>,
    lost_at: &mut Option<Instant>,
    shutdown: &CancellationToken,
) -> Result<(), Ended> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(Ended::Address)?
        .connect_timeout(Duration::from_secs(1))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel =
        switchyard_tls::channel(endpoint, cfg.target.tls.as_ref(), Some(Identity::Balancer))
            .await
            .map_err(Ended::Connect)?;
    let request = pb::SubscribeRequest {
        services: services.iter().cloned().collect(),
        subscriber_id: cfg.id.clone(),
        zone: cfg.zone.clone(),
    };
    let mut stream = BalancerClient::new(channel)
        .subscribe(request)
        .await
        .map_err(Ended::Status)?
        .into_inner();
    tracing::info!(balancer = %address, services = services.len(), "subscribed to a balancer");
    *lost_at = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = gw.new_service.notified() => {
                if wanted(gw) != services {
                    return Err(Ended::ServicesChanged);
                }
            }
            message = stream.message() => match message {
                Ok(Some(a)) => {
                    let s = gw.service(&a.service);
                    s.set_assignment(Arc::new(a), Instant::now());
                    s.use_balancer(true, Instant::now());
                }
                Ok(None) => return Err(Ended::StreamClosed),
                Err(status) => return Err(Ended::Status(status)),
            },
        }
    }
}

fn set_source(gw: &Gateway, balancer: bool) {
    for s in gw.services() {
        s.use_balancer(balancer, Instant::now());
    }
}

async fn report_loop(gw: Arc<Gateway>, cfg: ControlConfig, shutdown: CancellationToken) {
    let mut streams: HashMap<String, mpsc::Sender<pb::LoadReport>> = HashMap::new();
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let services = gw.services();
        // Idle upstream connections of endpoints nobody sends to any more
        // would otherwise wait for their next checkout.
        for s in &services {
            for e in &s.snapshot().endpoints {
                gw.upstream.h1.sweep_direct(&e.pool_key);
            }
        }
        let endpoints: Vec<pb::EndpointLoad> =
            services.iter().flat_map(|s| s.report(now)).collect();
        let report = pb::LoadReport {
            reporter_id: cfg.id.clone(),
            interval: Some(switchyard_proto::duration(cfg.interval)),
            endpoints,
            zone: cfg.zone.clone(),
        };
        let live = balancers(&gw);
        streams.retain(|addr, tx| live.contains(addr) && !tx.is_closed());
        for addr in live {
            let tx = streams.entry(addr.clone()).or_insert_with(|| {
                open_report_stream(addr, cfg.balancer_token.clone(), cfg.target.tls.clone())
            });
            let _ = tx.try_send(report.clone());
        }
    }
}

fn open_report_stream(
    address: String,
    token: Option<AsciiMetadataValue>,
    tls: Option<ClientTls>,
) -> mpsc::Sender<pb::LoadReport> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let channel = match Endpoint::from_shared(format!("http://{address}")) {
            Ok(e) => {
                let e = e.connect_timeout(Duration::from_secs(1));
                switchyard_tls::channel(e, tls.as_ref(), Some(Identity::Balancer)).await
            }
            Err(_) => return,
        };
        let Ok(channel) = channel else { return };
        let mut request = Request::new(ReceiverStream::new(rx));
        if let Some(t) = token {
            request.metadata_mut().insert("authorization", t);
        }
        if let Err(status) = BalancerClient::new(channel).report_load(request).await {
            tracing::debug!(balancer = %address, %status, "load report stream ended");
        }
    });
    tx
}
