//! The gateway's process settings. Routes live in their own file (`routes`).

use std::{net::SocketAddr, time::Duration};

use switchyard_runtime::{
    ConfigError, Settings,
    cli::{AdminAddr, LogSettings},
    logging::LogFormat,
    settings::duration,
    tls::{self, Files as TlsFiles},
};

switchyard_runtime::settings! {
    /// Process settings of the gateway (flags > `SWITCHYARD_*` > TOML file).
    pub struct Config {
        /// Traffic listen address (HTTP/1.1 and HTTP/2 cleartext by prior knowledge).
        pub http_listen: SocketAddr = ([0, 0, 0, 0], 8080).into(),
        /// TLS listen address, used when tls_cert and tls_key are set.
        pub https_listen: SocketAddr = ([0, 0, 0, 0], 8443).into(),
        /// PEM certificate chain for TLS.
        pub tls_cert: String = String::new(),
        /// PEM private key for TLS.
        pub tls_key: String = String::new(),
        /// Admin listen address (/healthz, /readyz, /metrics, /api/*); without operator_tokens, 0.0.0.0 listens on loopback only.
        pub admin_listen: SocketAddr = ([0, 0, 0, 0], 8081).into(),
        /// The routes file (TOML); its directory is watched for changes.
        pub routes: String = "routes.toml".into(),
        /// Registry addresses, comma-separated.
        pub registry: Vec<String> = vec!["http://127.0.0.1:7000".into()],
        /// A register token, for registering this gateway.
        pub registry_token: String = String::new(),
        /// An operator token, for reporting load to balancers.
        pub balancer_token: String = String::new(),
        /// Tokens that may call POST /api/reload; empty allows loopback callers only.
        pub operator_tokens: Vec<String> = Vec::new(),
        /// CA certificate (PEM) that signs every component's certificate; with mtls_cert and mtls_key, gRPC links are mutual TLS.
        pub mtls_ca: String = String::new(),
        /// This gateway's certificate (PEM), URI SAN spiffe://switchyard/gateway.
        pub mtls_cert: String = String::new(),
        /// This gateway's private key (PEM).
        pub mtls_key: String = String::new(),
        /// Serve and dial gRPC between components in plaintext, without mtls_* files (nothing checks who calls).
        pub plaintext: bool = false,
        /// Whether to register this gateway in the registry.
        pub register_self: bool = true,
        /// Address to advertise (host:port of the traffic listener).
        pub advertise_addr: String = String::new(),
        /// Advertise the first local address inside this CIDR.
        pub advertise_cidr: String = String::new(),
        /// Instance id to register under; empty uses the advertised address.
        pub instance_id: String = String::new(),
        /// This gateway's zone, for zone-aware weights.
        pub zone: String = String::new(),
        /// Lease TTL, and how long a view must stay empty before it empties.
        #[serde(with = "duration")]
        pub lease_ttl: Duration = Duration::from_secs(10),
        /// Load report interval; without a balancer for 3 of them, the gateway balances alone.
        #[serde(with = "duration")]
        pub report_interval: Duration = Duration::from_secs(1),
        /// Upstream connect timeout.
        #[serde(with = "duration")]
        pub connect_timeout: Duration = Duration::from_secs(1),
        /// Upstream idle connection timeout (keep it below the services' keep-alive).
        #[serde(with = "duration")]
        pub upstream_idle_timeout: Duration = Duration::from_secs(30),
        /// Deadline for a client to send its request headers; also the longest
        /// pause allowed while the gateway reads a body of declared length that
        /// fits the replay buffer (408 past either).
        #[serde(with = "duration")]
        pub header_timeout: Duration = Duration::from_secs(10),
        /// Largest request header block, in bytes (431 above).
        pub max_header_bytes: usize = 64 * 1024,
        /// Largest request body, in bytes (413 above); 0 is unlimited.
        pub max_body_bytes: u64 = 0,
        /// Bodies up to this size are buffered so a retry can replay them.
        pub replay_buffer_bytes: usize = 64 * 1024,
        /// Consecutive failures that eject an endpoint locally.
        pub local_ejection_failures: u32 = 5,
        /// Consecutive per-try timeouts that eject an endpoint locally.
        pub local_ejection_timeouts: u32 = 2,
        /// First local ejection time; doubles per ejection.
        #[serde(with = "duration")]
        pub local_ejection_time: Duration = Duration::from_secs(30),
        /// Cap of the local ejection time.
        #[serde(with = "duration")]
        pub local_ejection_max: Duration = Duration::from_secs(300),
        /// Most requests in flight to one endpoint (the circuit breaker's threshold).
        pub max_requests_per_endpoint: u32 = 1024,
        /// Retry budget: retries may add this share of first attempts...
        pub retry_budget_percent: u32 = 20,
        /// ... plus this many per second.
        pub retry_budget_min_per_second: u32 = 10,
        /// Keep serving this long after SIGTERM while DRAINING propagates.
        #[serde(with = "duration")]
        pub drain_delay: Duration = Duration::from_secs(3),
        /// Then give in-flight requests this long to finish.
        #[serde(with = "duration")]
        pub drain_timeout: Duration = Duration::from_secs(10),
        /// Log format: text or json.
        pub log_format: LogFormat = LogFormat::Text,
        /// Write a JSON access log line per request (target `access`).
        pub access_log: bool = true,
        /// Workers for traffic, each a single-threaded runtime with its
        /// own listening socket (0: one per core). The first also runs the
        /// control plane and the admin API.
        pub worker_threads: usize = 0,
    }
}

// === impl Config ===

impl Config {
    /// Workers for traffic: `worker_threads`, or one per core the process
    /// may run on.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
    }

    /// Each setting's bounds: whether it is out of them, its key, and why.
    fn limits(&self) -> [(bool, &'static str, &'static str); 9] {
        [
            (
                self.worker_threads > 1024,
                "worker_threads",
                "must be at most 1024 (0: one per core)",
            ),
            (
                self.registry.is_empty(),
                "registry",
                "give at least one registry address",
            ),
            (
                self.tls_cert.is_empty() != self.tls_key.is_empty(),
                "tls_key",
                "set both tls_cert and tls_key, or neither",
            ),
            (
                !(2..=300).contains(&self.lease_ttl.as_secs()),
                "lease_ttl",
                "must be 2 s to 300 s",
            ),
            (
                self.report_interval < Duration::from_millis(100),
                "report_interval",
                "must be at least 100ms",
            ),
            (
                self.connect_timeout.is_zero(),
                "connect_timeout",
                "must be above 0",
            ),
            (
                self.max_header_bytes < 1024,
                "max_header_bytes",
                "must be at least 1024",
            ),
            (
                self.retry_budget_percent > 1000,
                "retry_budget_percent",
                "must be 0 to 1000",
            ),
            (
                self.local_ejection_max < self.local_ejection_time,
                "local_ejection_max",
                "must be at least local_ejection_time",
            ),
        ]
    }

    /// Whether TLS is configured.
    pub fn tls(&self) -> bool {
        !self.tls_cert.is_empty() && !self.tls_key.is_empty()
    }
}

impl Settings for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        // In order: the first that fails is the one reported.
        if let Some((_, key, why)) = self.limits().into_iter().find(|(bad, ..)| *bad) {
            return Err(ConfigError::new(key, why));
        }
        if !self.advertise_cidr.is_empty() {
            switchyard_runtime::advertise::parse_cidr(&self.advertise_cidr)
                .map_err(|e| ConfigError::new("advertise_cidr", e))?;
        }
        crate::routes::RoutesFile::load(std::path::Path::new(&self.routes))
            .map_err(|e| ConfigError::new("routes", e))?;
        let files = tls::required(
            &self.mtls_ca,
            &self.mtls_cert,
            &self.mtls_key,
            self.plaintext,
        )?;
        tls::client(files.as_ref())?;
        Ok(())
    }
}

impl Config {
    /// The component links' certificate files (`None` without them).
    pub fn mtls_files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        tls::files(&self.mtls_ca, &self.mtls_cert, &self.mtls_key)
    }
}

impl AdminAddr for Config {
    fn admin_listen(&self) -> SocketAddr {
        self.admin_listen
    }
}

impl LogSettings for Config {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// The process's own runtime is single-threaded whatever
    /// `worker_threads` says: it is worker 0 ([`crate::worker`]), and the
    /// other workers start runtimes of their own.
    fn runtime_threads(&self) -> usize {
        1
    }
}
