//! The registry's settings.

use std::{net::SocketAddr, time::Duration};

use switchyard_runtime::{
    ConfigError, Settings,
    cli::{AdminAddr, LogSettings},
    logging::LogFormat,
    settings::duration,
    tls::{self, ServerTls},
};

switchyard_runtime::settings! {
    /// Process settings of the registry (flags > `SWITCHYARD_*` > TOML file).
    pub struct Config {
        /// gRPC listen address.
        pub grpc_listen: SocketAddr = ([0, 0, 0, 0], 7000).into(),
        /// HTTP listen address (JSON API, /healthz, /readyz, /metrics); without tokens, 0.0.0.0 listens on loopback only.
        pub http_listen: SocketAddr = ([0, 0, 0, 0], 7001).into(),
        /// Directory for durable operator state; empty keeps it in memory only (store file).
        pub data_dir: String = String::new(),
        /// Where the registry keeps its state: file (one node, the default) or etcd (replicas).
        pub store: StoreKind = StoreKind::File,
        /// etcd members for store etcd, as http://host:port, comma-separated (https:// with the mtls_* files: mutual TLS to etcd too).
        pub etcd_endpoints: Vec<String> = Vec::new(),
        /// Key prefix in etcd; replicas with the same prefix serve one registry.
        pub etcd_prefix: String = "/switchyard/v1/".to_string(),
        /// TTL of each replica's etcd session, in seconds: a dead replica's clients must renew elsewhere within it.
        pub etcd_session_ttl_secs: u32 = 15,
        /// This replica's name in etcd; empty picks the host name plus a random suffix.
        pub replica_name: String = String::new(),
        /// Log format: text or json.
        pub log_format: LogFormat = LogFormat::Text,
        /// Lease TTL in seconds when a client asks for none.
        pub default_ttl_secs: u32 = 10,
        /// Shortest lease TTL a client may ask for, in seconds.
        pub min_ttl_secs: u32 = 2,
        /// Longest lease TTL a client may ask for, in seconds.
        pub max_ttl_secs: u32 = 300,
        /// Warm-up after start: snapshots are not authoritative until it ends.
        #[serde(with = "duration")]
        pub warm_up: Duration = Duration::from_secs(20),
        /// Progress message interval on an idle Watch stream.
        #[serde(with = "duration")]
        pub progress_interval: Duration = Duration::from_secs(5),
        /// Events kept for Watch resumes; older `since` values get a reset.
        pub history_limit: usize = 10_000,
        /// Events buffered per watcher; a watcher that overflows gets a reset.
        pub watch_buffer: usize = 1024,
        /// The brake needs at least this many lapsed leases in the window.
        pub brake_min_leases: usize = 10,
        /// ... and more than this share (percent) of all leases.
        pub brake_percent: u32 = 50,
        /// The window over which lapses are counted.
        #[serde(with = "duration")]
        pub brake_window: Duration = Duration::from_secs(10),
        /// The brake lets go after this long at the latest.
        #[serde(with = "duration")]
        pub brake_max_hold: Duration = Duration::from_secs(120),
        /// Tokens that may Register, KeepAlive and Deregister their own lease's instances.
        pub register_tokens: Vec<String> = Vec::new(),
        /// Tokens that may also change state and weight, and take over or deregister any instance.
        pub operator_tokens: Vec<String> = Vec::new(),
        /// Whether reads (GetService, ListServices, Watch, GET /api) need no token.
        pub open_reads: bool = true,
        /// CA certificate (PEM) that signs every component's certificate; with mtls_cert and mtls_key, gRPC is mutual TLS.
        pub mtls_ca: String = String::new(),
        /// This registry's certificate (PEM): URI SAN spiffe://switchyard/registry, and the names clients dial.
        pub mtls_cert: String = String::new(),
        /// This registry's private key (PEM).
        pub mtls_key: String = String::new(),
        /// Serve and dial gRPC between components in plaintext, without mtls_* files (nothing checks who calls).
        pub plaintext: bool = false,
        /// Largest gRPC message accepted, in bytes.
        pub max_message_bytes: usize = 4 * 1024 * 1024,
        /// HTTP/2 ping interval that detects dead control streams.
        #[serde(with = "duration")]
        pub http2_keepalive_interval: Duration = Duration::from_secs(10),
        /// Time an HTTP/2 ping may go unanswered.
        #[serde(with = "duration")]
        pub http2_keepalive_timeout: Duration = Duration::from_secs(5),
        /// Longest a shutdown may take before in-flight work is dropped.
        #[serde(with = "duration")]
        pub shutdown_timeout: Duration = Duration::from_secs(4),
    }
}

/// Where the registry keeps its state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In memory, operator overrides in `data_dir`: one node.
    #[default]
    File,
    /// In etcd: any number of replicas serve one registry.
    Etcd,
}

/// TTL bounds, as the validation needs them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TTL when none is asked for.
    pub default_ttl_secs: u32,
    /// Lowest allowed TTL.
    pub min_ttl_secs: u32,
    /// Highest allowed TTL.
    pub max_ttl_secs: u32,
}

// === impl Config ===

impl Config {
    /// The TTL bounds.
    pub fn limits(&self) -> Limits {
        Limits {
            default_ttl_secs: self.default_ttl_secs,
            min_ttl_secs: self.min_ttl_secs,
            max_ttl_secs: self.max_ttl_secs,
        }
    }
}

impl Settings for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=3600).contains(&self.min_ttl_secs) {
            return Err(ConfigError::new("min_ttl_secs", "must be 1 to 3600"));
        }
        if self.max_ttl_secs < self.min_ttl_secs || self.max_ttl_secs > 3600 {
            return Err(ConfigError::new(
                "max_ttl_secs",
                "must be at least min_ttl_secs and at most 3600",
            ));
        }
        if !(self.min_ttl_secs..=self.max_ttl_secs).contains(&self.default_ttl_secs) {
            return Err(ConfigError::new(
                "default_ttl_secs",
                "must lie between min_ttl_secs and max_ttl_secs",
            ));
        }
        if self.history_limit == 0 {
            return Err(ConfigError::new("history_limit", "must be at least 1"));
        }
        if self.watch_buffer < 2 {
            return Err(ConfigError::new("watch_buffer", "must be at least 2"));
        }
        if self.brake_percent > 100 {
            return Err(ConfigError::new("brake_percent", "must be 0 to 100"));
        }
        if self.progress_interval.is_zero() {
            return Err(ConfigError::new("progress_interval", "must be above 0"));
        }
        for (key, tokens) in [
            ("register_tokens", &self.register_tokens),
            ("operator_tokens", &self.operator_tokens),
        ] {
            if tokens.iter().any(|t| t.len() < 8) {
                return Err(ConfigError::new(key, "each token must be at least 8 bytes"));
            }
        }
        if self.store == StoreKind::Etcd {
            if self.etcd_endpoints.is_empty() {
                return Err(ConfigError::new(
                    "etcd_endpoints",
                    "store etcd needs at least one endpoint (http://host:2379)",
                ));
            }
            let scheme = if self.mtls_cert.is_empty() {
                "http://"
            } else {
                "https://"
            };
            if let Some(bad) = self
                .etcd_endpoints
                .iter()
                .find(|e| !e.starts_with(scheme) || e.len() <= scheme.len())
            {
                let why = if scheme == "https://" {
                    "with the mtls_* files, etcd is dialled with mutual TLS: https://host:port"
                } else {
                    "without the mtls_* files, etcd is dialled in plaintext: http://host:port"
                };
                return Err(ConfigError::new(
                    "etcd_endpoints",
                    format!("{bad:?}: {why}"),
                ));
            }
            if !self.etcd_prefix.starts_with('/') || !self.etcd_prefix.ends_with('/') {
                return Err(ConfigError::new(
                    "etcd_prefix",
                    "must start and end with '/'",
                ));
            }
            if !(2..=300).contains(&self.etcd_session_ttl_secs) {
                return Err(ConfigError::new(
                    "etcd_session_ttl_secs",
                    "must be 2 to 300",
                ));
            }
        }
        if self.replica_name.contains('/') {
            return Err(ConfigError::new("replica_name", "must not contain '/'"));
        }
        if self.register_tokens.is_empty() != self.operator_tokens.is_empty() {
            return Err(ConfigError::new(
                "operator_tokens",
                "set both register_tokens and operator_tokens, or neither (auth off)",
            ));
        }
        tls::required(
            &self.mtls_ca,
            &self.mtls_cert,
            &self.mtls_key,
            self.plaintext,
        )?;
        self.tls()?;
        Ok(())
    }
}

impl Config {
    /// The client side of the same files, for etcd at `https://`
    /// endpoints (`None` for `http://` ones, without the files, or when they
    /// cannot be read: a binary's validation refused those mixes already;
    /// the in-process tests run a TLS registry on a plaintext etcd).
    pub fn etcd_tls(&self) -> Option<tls::ClientTls> {
        if !self
            .etcd_endpoints
            .iter()
            .all(|e| e.starts_with("https://"))
        {
            return None;
        }
        let files = tls::files(&self.mtls_ca, &self.mtls_cert, &self.mtls_key).ok()??;
        tls::client(Some(&files)).ok()?
    }

    /// The gRPC port's TLS, loaded from the files (`None` without them).
    pub fn tls(&self) -> Result<Option<ServerTls>, ConfigError> {
        tls::server(tls::files(&self.mtls_ca, &self.mtls_cert, &self.mtls_key)?.as_ref())
    }
}

impl AdminAddr for Config {
    fn admin_listen(&self) -> SocketAddr {
        self.http_listen
    }
}

impl LogSettings for Config {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}
