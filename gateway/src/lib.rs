//! The Switchyard gateway: the HTTP front door. It matches a route, picks
//! an instance locally from the latest assignment, proxies the request, and
//! keeps failures away from the client.
//!
//! # Layout
//!
//! A request's way through, in order:
//!
//! - [`listener`]: accepting connections (plain and TLS), graceful drain.
//! - [`http1`]: HTTP/1.1 on both sides: its [`codec`](http1::codec), the
//!   [`server`](http1::server) side for client connections, the
//!   [`response`](http1::response) written to them, the
//!   [`client`](http1::client) side for upstream connections, and the
//!   [`framing`](http1::framing) of their bodies. What it does not serve
//!   (HTTP/2, TLS, streamed bodies, upgrades) goes to hyper.
//! - [`proxy`]: the request path in named steps: `admit` (route, method,
//!   credentials, limits), `prepare` (headers, upstream path, service,
//!   deadline, body), `attempts` (pick, send once, retry).
//! - What a request is routed by, checked once: [`authority`] and
//!   [`path`]; [`headers`] (hop-by-hop, forwarding fields, request id),
//!   [`cors`], [`errors`] (the gateway's own answers), [`websocket`].
//! - Upstream: [`endpoints`] (each service's endpoints, picker, loads),
//!   [`breaker`] (local ejection), [`pool`] (the HTTP/1.1 pool),
//!   [`upstream`] (both pools), [`body`] (request bodies on their way).
//!
//! Around it:
//!
//! - [`app`]: the shared state every part reads ([`app::Gateway`]).
//! - [`config`]: process settings; [`routes`]: the routes file
//!   ([`routes::file`]) and the compiled table; [`limits`]: rate and
//!   concurrency limits.
//! - [`control`]: registry view, balancer subscription, load reports;
//!   [`reload`]: the routes file reloaded; [`admin`]: the admin API.
//! - [`worker`]: the data plane's workers, a single-threaded runtime each
//!   with its own listening socket, idle upstream connections and timer.
//! - [`testing`]: a real gateway in-process, for tests.

pub mod admin;
pub mod app;
pub mod authority;
pub mod body;
pub mod breaker;
pub mod config;
pub mod control;
pub mod cors;
pub mod endpoints;
pub mod errors;
pub mod headers;
pub mod http1;
pub mod limits;
pub mod listener;
pub mod path;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod testing;
pub mod timer;
pub mod upstream;
pub mod websocket;
pub mod worker;

use std::{path::PathBuf, sync::Arc};

use switchyard_client::{Session, Target, instance, pb::Protocol};
use switchyard_runtime::{Readiness, admin as runtime_admin, auth::Tokens};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::{
    app::{Gateway, Limits},
    breaker::BreakerConfig,
    control::ControlConfig,
    endpoints::ServiceSettings,
    http1::server::ConnSettings,
    routes::{RouteTable, RoutesFile},
    upstream::{Upstream, tls::TlsSettings},
};

/// The gateway's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// Plain traffic (HTTP/1.1, h2c).
    pub http: TcpListener,
    /// TLS traffic, when configured.
    pub https: Option<TcpListener>,
    /// Admin.
    pub admin: TcpListener,
}

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting turned out unusable at start.
    #[error("{0}")]
    Config(#[from] switchyard_runtime::ConfigError),
    /// A listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

// === impl Listeners ===

impl Listeners {
    /// Binds the addresses of `config` (the traffic ones with
    /// `SO_REUSEPORT`, for the workers: [`listener::bind`]).
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            http: listener::bind("http_listen", config.http_listen)?,
            https: if config.tls() {
                Some(listener::bind("https_listen", config.https_listen)?)
            } else {
                None
            },
            admin: switchyard_runtime::cli::listen(
                "admin_listen",
                switchyard_runtime::cli::guarded_addr(
                    "admin_listen",
                    config.admin_listen,
                    !config.operator_tokens.is_empty(),
                ),
            )
            .await?,
        })
    }
}

fn config_error(key: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Config(switchyard_runtime::ConfigError::new(key, e))
}

/// Runs the gateway until `shutdown`, then drains: DRAINING in the
/// registry, serving on for the drain delay, then no new connections,
/// GOAWAY, in-flight requests finished within the drain timeout, deregister.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    // The recorder first: routes keep their metric handles from compile
    // time, and a handle taken before a recorder exists records nothing
    // (every route's requests_total was missing from /metrics until this).
    let _ = runtime_admin::metrics_handle();
    let routes_path = PathBuf::from(&config.routes);
    let file = RoutesFile::load(&routes_path).map_err(|e| config_error("routes", e))?;
    let tls = if config.tls() {
        Some(listener::tls_acceptor(&config.tls_cert, &config.tls_key)?)
    } else {
        None
    };
    let gw = Arc::new(gateway(&config, file)?);
    // As many workers as the per-worker slots were made for (the core
    // count is read once: two readings could differ, and a worker without
    // a slot of its own would take another runtime's connections).
    let workers = gw.settings.workers;
    for service in gw.routes.load().services() {
        gw.service(&service);
    }

    let http_addr = listeners.http.local_addr()?;
    let advertised = switchyard_runtime::advertise::choose(
        &config.advertise_addr,
        &config.advertise_cidr,
        http_addr.port(),
        http_addr,
    )
    .map_err(|e| config_error("advertise_addr", e))?;
    let id = switchyard_client::instance_id(&config.instance_id, &advertised);
    let readiness = Readiness::waiting_for(["view"]);
    let control = control_config(&config, &id)?;
    let target = control.target.clone();
    control::start(gw.clone(), control, readiness.clone(), shutdown.clone());
    tokio::spawn(reload::watch(
        gw.clone(),
        routes_path.clone(),
        shutdown.clone(),
    ));
    let session = config.register_self.then(|| {
        let s = Session::start(target, config.lease_ttl);
        s.register(instance(
            "switchyard-gateway",
            &id,
            &advertised,
            Protocol::Http1,
        ));
        s
    });

    // The bound addresses, not the configured ones: a port 0 is told.
    let admin_addr = listeners.admin.local_addr()?;
    let https_addr = listeners
        .https
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let tokens = Arc::new(Tokens::new(&[], &config.operator_tokens, true));
    let admin_stop = CancellationToken::new();
    let admin_router = runtime_admin::router(readiness).merge(admin::router(
        gw.clone(),
        routes_path,
        tokens,
        admin_stop.clone(),
    ));
    let admin = tokio::spawn(runtime_admin::serve(
        listeners.admin,
        admin_router,
        admin_stop.clone().cancelled_owned(),
    ));
    let accept_stop = CancellationToken::new();
    let release = CancellationToken::new();
    let traffic = Traffic {
        http: listeners.http,
        https: listeners.https.zip(tls),
        workers,
        stop: accept_stop.clone(),
        release: release.clone(),
    };
    let servers = start_traffic(&gw, &config, traffic)?;
    let https = https_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(http = %http_addr, admin = %admin_addr, %https, %advertised, workers, "gateway serving");

    shutdown.cancelled().await;
    drain(&config, session.map(|s| (s, id)), accept_stop, servers).await;
    release.cancel();
    admin_stop.cancel();
    let _ = admin.await;
    Ok(())
}

/// The drain: DRAINING in the registry (`session` registered this gateway
/// as the id beside it), serving on for the drain delay, then no new
/// connections and the servers' own drain, then deregistered.
async fn drain(
    config: &Config,
    session: Option<(Session, String)>,
    accept_stop: CancellationToken,
    servers: Vec<tokio::task::JoinHandle<()>>,
) {
    tracing::info!(delay = ?config.drain_delay, "draining: DRAINING in the registry, still serving");
    if let Some((s, id)) = &session {
        s.set_state(
            "switchyard-gateway",
            id,
            switchyard_client::pb::State::Draining,
        );
    }
    tokio::time::sleep(config.drain_delay).await;
    accept_stop.cancel();
    for s in servers {
        let _ = s.await;
    }
    if let Some((s, _)) = session {
        s.shutdown(std::time::Duration::ZERO).await;
    }
}

/// The gateway's state for `config` and a checked routes file (nothing
/// started yet: no listener, no control plane).
fn gateway(config: &Config, file: RoutesFile) -> Result<Gateway, ServeError> {
    Ok(Gateway::new(
        RouteTable::compile(file, None),
        Upstream::new(config.connect_timeout, config.upstream_idle_timeout),
        service_settings(config)?,
        Limits {
            max_body: config.max_body_bytes,
            replay: config.replay_buffer_bytes,
        },
        config.access_log,
    ))
}

/// What every service's endpoints share: breaker, per-endpoint limit,
/// retry budget, zone, and how TLS instances are reached (with the
/// gateway's mTLS files).
fn service_settings(config: &Config) -> Result<ServiceSettings, ServeError> {
    let tls = switchyard_runtime::tls::upstream(config.mtls_files()?.as_ref())?.map(|files| {
        TlsSettings {
            files,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.upstream_idle_timeout,
        }
    });
    Ok(ServiceSettings {
        breaker: BreakerConfig {
            failures: config.local_ejection_failures,
            timeouts: config.local_ejection_timeouts,
            base: config.local_ejection_time,
            max: config.local_ejection_max,
        },
        max_per_endpoint: config.max_requests_per_endpoint,
        budget_percent: config.retry_budget_percent,
        budget_min_per_second: config.retry_budget_min_per_second,
        zone: config.zone.clone(),
        workers: config.workers(),
        tls,
    })
}

/// The control plane's settings: the registry, this gateway's id and zone,
/// the report interval and the balancers' token.
fn control_config(config: &Config, id: &str) -> Result<ControlConfig, ServeError> {
    let token = (!config.registry_token.is_empty()).then_some(config.registry_token.as_str());
    let files = config.mtls_files()?;
    let target = Target::new(&config.registry, token)
        .and_then(|t| t.with_tls(files.as_ref()))
        .map_err(|e| config_error("registry", e))?;
    let balancer_token = if config.balancer_token.is_empty() {
        None
    } else {
        Some(
            format!("Bearer {}", config.balancer_token)
                .parse()
                .map_err(|_| config_error("balancer_token", "not a valid header value"))?,
        )
    };
    Ok(ControlConfig {
        target,
        ttl: config.lease_ttl,
        interval: config.report_interval,
        id: id.to_string(),
        zone: config.zone.clone(),
        balancer_token,
    })
}

/// The traffic listeners and how they are served.
struct Traffic {
    http: TcpListener,
    /// The TLS listener with its acceptor.
    https: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// Workers ([`worker`]): each serves both listeners.
    workers: usize,
    /// Stops accepting (then each server drains).
    stop: CancellationToken,
    /// Ends the workers' runtimes, once every server has drained.
    release: CancellationToken,
}

/// Serves the traffic listeners until `traffic.stop`, each then draining
/// within the drain timeout: worker 0 on this runtime, the others each on
/// its own thread with a socket of its own on the same address.
fn start_traffic(
    gw: &Arc<Gateway>,
    config: &Config,
    traffic: Traffic,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServeError> {
    let conn = ConnSettings {
        header_timeout: config.header_timeout,
        max_header_bytes: config.max_header_bytes,
    };
    let drain = config.drain_timeout;
    let tls = traffic
        .https
        .map(|(socket, acceptor)| (socket, Some(acceptor)));
    let mut servers = Vec::new();
    for (socket, acceptor) in [(traffic.http, None)].into_iter().chain(tls) {
        for i in 1..traffic.workers {
            let twin = listener::twin(&socket)?;
            let (gw, acceptor, stop) = (gw.clone(), acceptor.clone(), traffic.stop.clone());
            servers.push(worker::start(
                i,
                traffic.release.clone(),
                move || async move {
                    match TcpListener::from_std(twin) {
                        Ok(socket) => {
                            listener::serve(gw, socket, acceptor, conn, stop, drain).await
                        }
                        Err(error) => tracing::error!(worker = i, %error, "worker cannot listen"),
                    }
                },
            )?);
        }
        let stop = traffic.stop.clone();
        servers.push(tokio::spawn(listener::serve(
            gw.clone(),
            socket,
            acceptor,
            conn,
            stop,
            drain,
        )));
    }
    Ok(servers)
}
