//! The balancer's settings, and the per-service policy file.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use switchyard_client::balance::{Policy, SlowStart};
use switchyard_runtime::{
    ConfigError, Settings,
    cli::{AdminAddr, LogSettings},
    logging::LogFormat,
    settings::duration,
    tls::{self, Files as TlsFiles},
};

use crate::outlier::OutlierConfig;

switchyard_runtime::settings! {
    /// Process settings of the balancer (flags > `SWITCHYARD_*` > TOML file).
    pub struct Config {
        /// gRPC listen address.
        pub grpc_listen: SocketAddr = ([0, 0, 0, 0], 7010).into(),
        /// HTTP listen address (/healthz, /readyz, /metrics, /api/services); without operator_tokens, 0.0.0.0 listens on loopback only.
        pub http_listen: SocketAddr = ([0, 0, 0, 0], 7011).into(),
        /// Registry addresses, comma-separated.
        pub registry: Vec<String> = vec!["http://127.0.0.1:7000".into()],
        /// Token for registering this balancer in the registry (a register token).
        pub registry_token: String = String::new(),
        /// Tokens that may ReportLoad and SetPolicy; empty turns auth off.
        pub operator_tokens: Vec<String> = Vec::new(),
        /// CA certificate (PEM) that signs every component's certificate; with mtls_cert and mtls_key, gRPC links are mutual TLS.
        pub mtls_ca: String = String::new(),
        /// This balancer's certificate (PEM), URI SAN spiffe://switchyard/balancer.
        pub mtls_cert: String = String::new(),
        /// This balancer's private key (PEM).
        pub mtls_key: String = String::new(),
        /// Serve and dial gRPC between components in plaintext, without mtls_* files (nothing checks who calls).
        pub plaintext: bool = false,
        /// Address to advertise in the registry (host:port).
        pub advertise_addr: String = String::new(),
        /// Advertise the first local address inside this CIDR (with the gRPC port).
        pub advertise_cidr: String = String::new(),
        /// Instance id to register under; empty uses the advertised address.
        pub instance_id: String = String::new(),
        /// Whether to register this balancer in the registry.
        pub register_self: bool = true,
        /// Per-service policies file (TOML, `[services.<name>]` tables).
        pub services_file: String = String::new(),
        /// Lease TTL when registering and the emptiness window of views.
        #[serde(with = "duration")]
        pub lease_ttl: Duration = Duration::from_secs(10),
        /// Load report interval reporters are expected to keep.
        #[serde(with = "duration")]
        pub report_interval: Duration = Duration::from_secs(1),
        /// Log format: text or json.
        pub log_format: LogFormat = LogFormat::Text,
        /// Longest a shutdown may take.
        #[serde(with = "duration")]
        pub shutdown_timeout: Duration = Duration::from_secs(5),
    }
}

/// One service's policy, from the services file or SetPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The pick algorithm; unset uses registry metadata `lb.policy`, then peak_ewma.
    pub policy: Option<String>,
    /// Outlier detection thresholds.
    pub outlier: OutlierConfig,
    /// Slow start.
    pub slow_start: SlowStartConfig,
    /// Where RING_HASH and MAGLEV take the key from, e.g. `header:x-user-id`.
    pub hash_key: String,
}

/// Slow start as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowStartConfig {
    /// Ramp length; 0s disables.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Starting share in percent.
    pub min_weight_percent: u32,
}

/// The services file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesFile {
    /// Per service name.
    pub services: BTreeMap<String, ServiceConfig>,
}

// === impl SlowStartConfig ===

impl Default for SlowStartConfig {
    fn default() -> Self {
        Self {
            window: Duration::ZERO,
            min_weight_percent: 10,
        }
    }
}

impl SlowStartConfig {
    /// As the balance module wants it.
    pub fn to_slow_start(&self) -> SlowStart {
        SlowStart {
            window: self.window,
            min_share: f64::from(self.min_weight_percent.min(100)) / 100.0,
        }
    }
}

// === impl ServiceConfig ===

impl ServiceConfig {
    /// The configured policy, if any and valid.
    pub fn policy(&self) -> Option<Policy> {
        self.policy.as_deref().and_then(|p| p.parse().ok())
    }

    /// Checks names and ranges; `key` prefixes the error.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if let Some(p) = &self.policy {
            p.parse::<Policy>()
                .map_err(|e| ConfigError::new(format!("{key}.policy"), e))?;
        }
        let o = &self.outlier;
        if o.max_ejection_percent > 100 || o.healthy_panic_threshold > 100 {
            return Err(ConfigError::new(
                format!("{key}.outlier"),
                "percentages must be 0 to 100",
            ));
        }
        if o.base_ejection_time.is_zero()
            || o.interval.is_zero()
            || o.max_ejection_time < o.base_ejection_time
        {
            return Err(ConfigError::new(
                format!("{key}.outlier"),
                "times must be above 0 and max_ejection_time at least base_ejection_time",
            ));
        }
        if self.slow_start.min_weight_percent > 100 {
            return Err(ConfigError::new(
                format!("{key}.slow_start.min_weight_percent"),
                "must be 0 to 100",
            ));
        }
        Ok(())
    }
}

// === impl ServicesFile ===

impl ServicesFile {
    /// Reads and checks the file; an empty path is an empty file.
    pub fn load(path: &str) -> Result<Self, ConfigError> {
        if path.is_empty() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(Path::new(path))
            .map_err(|e| ConfigError::new("services_file", format!("cannot read {path}: {e}")))?;
        let file: Self = toml::from_str(&text)
            .map_err(|e| ConfigError::new("services_file", format!("{path}: {e}")))?;
        for (name, s) in &file.services {
            s.validate(&format!("services.{name}"))?;
        }
        Ok(file)
    }
}

// === impl Config ===

impl Settings for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.registry.is_empty() {
            return Err(ConfigError::new(
                "registry",
                "give at least one registry address",
            ));
        }
        if !(2..=300).contains(&self.lease_ttl.as_secs()) {
            return Err(ConfigError::new("lease_ttl", "must be 2 s to 300 s"));
        }
        if self.report_interval < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "report_interval",
                "must be at least 100ms",
            ));
        }
        if !self.advertise_cidr.is_empty() {
            switchyard_runtime::advertise::parse_cidr(&self.advertise_cidr)
                .map_err(|e| ConfigError::new("advertise_cidr", e))?;
        }
        ServicesFile::load(&self.services_file)?;
        let files = tls::required(
            &self.mtls_ca,
            &self.mtls_cert,
            &self.mtls_key,
            self.plaintext,
        )?;
        tls::server(files.as_ref())?;
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
        self.http_listen
    }
}

impl LogSettings for Config {
    fn log_format(&self) -> LogFormat {
        self.log_format
    }
}
