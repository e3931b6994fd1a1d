//! The gateway's shared state: the route table in force, each service's
//! endpoints, the upstream pools, the latest registry view and the timer.
//! Built once at start ([`crate::serve`]); the request path
//! ([`crate::proxy`]), the control plane, reloads and the admin API read it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Instant,
};

use arc_swap::ArcSwap;
use http::HeaderValue;
use switchyard_client::View;
use tokio::sync::Notify;

use crate::{
    endpoints::{ServiceSettings, ServiceState},
    routes::RouteTable,
    upstream::Upstream,
};

/// Limits of the request path.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body (0: none).
    pub max_body: u64,
    /// Bodies up to this are buffered for replay.
    pub replay: usize,
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    /// The route table in force.
    pub routes: ArcSwap<RouteTable>,
    pub(crate) services: RwLock<HashMap<Arc<str>, Arc<ServiceState>>>,
    /// The upstream pools.
    pub upstream: Upstream,
    pub(crate) settings: ServiceSettings,
    pub(crate) limits: Limits,
    /// The latest registry view (the default rule checks it).
    pub view: ArcSwap<View>,
    /// Woken when a service is first used, so the control plane follows it.
    pub new_service: Notify,
    /// Request-header deadlines and per-try timeouts, a timer per worker
    /// (its ticker runs on the worker's runtime): see [`Gateway::timer`].
    timers: crate::worker::PerWorker<crate::timer::Coarse>,
    pub(crate) access_log: bool,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's IP as a header value, made once per connection
    /// (`X-Forwarded-For` needs it on every request).
    pub ip: HeaderValue,
}

impl Peer {
    /// The peer of a connection from `addr`.
    pub fn new(addr: SocketAddr, tls: bool) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { addr, tls, ip }
    }
}

// === impl Gateway ===

impl Gateway {
    /// A gateway over `routes`.
    pub fn new(
        routes: RouteTable,
        upstream: Upstream,
        settings: ServiceSettings,
        limits: Limits,
        access_log: bool,
    ) -> Self {
        Self {
            timers: crate::worker::PerWorker::new(settings.workers, Default::default),
            routes: ArcSwap::from_pointee(routes),
            services: RwLock::new(HashMap::new()),
            upstream,
            settings,
            limits,
            view: ArcSwap::from_pointee(View::default()),
            new_service: Notify::new(),
            access_log,
        }
    }

    /// This worker's timer, for request-header deadlines and per-try
    /// timeouts.
    pub fn timer(&self) -> &crate::timer::Coarse {
        self.timers.get()
    }

    /// The service's state, created (and announced) on first use.
    pub fn service(&self, name: &str) -> Arc<ServiceState> {
        if let Some(s) = switchyard_time::sync::read(&self.services).get(name) {
            return s.clone();
        }
        let mut map = switchyard_time::sync::write(&self.services);
        let s = map
            .entry(Arc::from(name))
            .or_insert_with(|| {
                let s = Arc::new(ServiceState::new(name, &self.settings));
                let view = self.view.load();
                if let Some(instances) = view.services.get(name) {
                    s.set_instances(instances.clone(), Instant::now());
                }
                s
            })
            .clone();
        drop(map);
        self.new_service.notify_one();
        s
    }

    /// Every service in use.
    pub fn services(&self) -> Vec<Arc<ServiceState>> {
        switchyard_time::sync::read(&self.services)
            .values()
            .cloned()
            .collect()
    }

    /// The limits of the request path.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the default rule may take `service`: known to the registry
    /// or already in use, and under the cap of services it may create.
    pub(crate) fn known_default_service(&self, service: &str, cap: usize) -> bool {
        let known = self
            .view
            .load()
            .services
            .get(service)
            .is_some_and(|i| !i.is_empty());
        if !known {
            return false;
        }
        let map = switchyard_time::sync::read(&self.services);
        map.contains_key(service) || map.len() < cap + self.routes.load().routes.len()
    }
}
