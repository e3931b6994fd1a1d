//! `hello`: a small HTTP JSON service that registers itself with the SDK and
//! drains on SIGTERM.
//!
//! Run with: cargo run -p switchyard-examples --bin hello -- --listen 127.0.0.1:9000 --registry http://127.0.0.1:7000
//!
//! `GET /hello/anything` answers `{"service":"hello","instance":"<id>","path":"/hello/anything"}`,
//! and so does every other path but the admin ones (`/healthz`, `/readyz`,
//! `/metrics`): `/hello`, `/hello/`, or `/x` when a gateway strips a prefix;
//! bodies are accepted (their size is echoed). Faults for trying failures:
//! `--latency 20ms --latency-jitter 10ms --fail-rate 0.1 --exit-after 1000`.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, Uri},
    response::IntoResponse,
};
use serde_json::json;
use switchyard_client::pb::Protocol;
use switchyard_examples::Faults;
use switchyard_runtime::{
    ConfigError, Readiness, Settings, admin,
    cli::{self, About, AdminAddr, LogSettings},
    logging::LogFormat,
    settings::duration,
    tls::Files as TlsFiles,
};

switchyard_runtime::settings! {
    /// Settings of the hello example.
    struct Config {
        /// Where to listen (traffic, /healthz, /readyz).
        listen: SocketAddr = ([0, 0, 0, 0], 9000).into(),
        /// Registry addresses; empty runs unregistered.
        registry: Vec<String> = Vec::new(),
        /// Register token.
        registry_token: String = String::new(),
        /// CA certificate (PEM) for mutual TLS to the registry; with mtls_cert and mtls_key.
        mtls_ca: String = String::new(),
        /// This service's certificate (PEM), URI SAN spiffe://switchyard/service/hello.
        mtls_cert: String = String::new(),
        /// This service's private key (PEM).
        mtls_key: String = String::new(),
        /// Dial the registry in plaintext, without mtls_* files.
        plaintext: bool = false,
        /// Address to advertise (host:port).
        advertise_addr: String = String::new(),
        /// Advertise the local address inside this CIDR.
        advertise_cidr: String = String::new(),
        /// Instance id; empty uses the advertised address.
        instance_id: String = String::new(),
        /// Added latency per request.
        #[serde(with = "duration")]
        latency: Duration = Duration::ZERO,
        /// Extra random latency, up to this much.
        #[serde(with = "duration")]
        latency_jitter: Duration = Duration::ZERO,
        /// Share of requests answered 503, 0 to 1.
        fail_rate: f64 = 0.0,
        /// Exit (like a crash) after this many requests; 0 never.
        exit_after: u64 = 0,
        /// Keep serving this long after SIGTERM while DRAINING spreads.
        #[serde(with = "duration")]
        drain_delay: Duration = Duration::from_secs(3),
        /// Log format: text or json.
        log_format: LogFormat = LogFormat::Text,
    }
}

impl Settings for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(ConfigError::new("fail_rate", "must be 0 to 1"));
        }
        let files = (&*self.mtls_ca, &*self.mtls_cert, &*self.mtls_key);
        switchyard_examples::check_registry_tls(&self.registry, files, self.plaintext)
    }
}

impl Config {
    fn mtls_files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        switchyard_runtime::tls::files(&self.mtls_ca, &self.mtls_cert, &self.mtls_key)
    }
}

impl AdminAddr for Config {
    fn admin_listen(&self) -> SocketAddr {
        self.listen
    }
}

impl LogSettings for Config {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

struct App {
    instance: String,
    faults: Faults,
}

async fn hello(
    State(app): State<Arc<App>>,
    uri: Uri,
    method: axum::http::Method,
    body: Bytes,
) -> impl IntoResponse {
    if !app.faults.apply().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "injected failure", "instance": app.instance })),
        );
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    (
        StatusCode::OK,
        Json(
            json!({ "service": "hello", "instance": app.instance, "path": path, "method": method.as_str(), "bytes": body.len() }),
        ),
    )
}

fn main() -> ExitCode {
    const ABOUT: About = About {
        name: "hello",
        version: env!("CARGO_PKG_VERSION"),
        summary: "example HTTP service",
    };
    cli::main::<Config, _, _, _>(ABOUT, |c, shutdown| async move {
        let listener = switchyard_runtime::cli::listen("listen", c.listen).await?;
        let local = listener.local_addr()?;
        let advertised = switchyard_runtime::advertise::choose(
            &c.advertise_addr,
            &c.advertise_cidr,
            local.port(),
            local,
        )?;
        let instance = switchyard_client::instance_id(&c.instance_id, &advertised);
        let app = Arc::new(App {
            instance: instance.clone(),
            faults: Faults::new(c.latency, c.latency_jitter, c.fail_rate, c.exit_after),
        });
        let router = Router::new()
            .fallback(hello)
            .with_state(app)
            .merge(admin::router(Readiness::default()));
        let session = switchyard_examples::register(
            &c.registry,
            &c.registry_token,
            c.mtls_files()?.as_ref(),
            "hello",
            &instance,
            &advertised,
            Protocol::Http1,
        )?;
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(admin::serve(
            listener,
            router,
            stop.clone().cancelled_owned(),
        ));
        tracing::info!(%local, %instance, "hello serving");
        shutdown.cancelled().await;
        // Drain: DRAINING, keep serving for the drain delay, deregister, stop.
        if let Some(s) = session {
            s.shutdown(c.drain_delay).await;
        }
        stop.cancel();
        server.await??;
        Ok::<_, anyhow::Error>(())
    })
}
