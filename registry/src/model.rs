//! The registry's domain types. Prost types stay at the edges (`grpc`, `http`).

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration, time::SystemTime};

use serde::{Deserialize, Serialize};

/// How an instance speaks on its address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2 cleartext by prior knowledge.
    H2c,
    /// gRPC.
    Grpc,
}

/// Lifecycle state; only `Serving` is routable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Registered, not ready yet.
    Starting,
    /// Ready for traffic.
    Serving,
    /// Finishing in-flight work; never picked.
    Draining,
    /// Taken out by an operator; never picked.
    OutOfService,
}

/// Result of the active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    /// No check, or none finished yet.
    Unknown,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    /// `grpc.health.v1.Health/Check` for this service name.
    Grpc {
        /// The `service` of the request; empty checks the server.
        service: String,
    },
    /// HTTP GET of this path; 2xx passes.
    Http {
        /// Path starting with '/'.
        path: String,
    },
    /// TCP connect.
    Tcp,
}

/// An active health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What to do.
    pub kind: CheckKind,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Failures in a row that make the instance unhealthy.
    pub unhealthy_threshold: u32,
    /// Passes in a row that make it healthy.
    pub healthy_threshold: u32,
}

/// What a client registered; validated before it gets here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The service's name.
    pub service: String,
    /// The instance's id, unique within the service.
    pub instance_id: String,
    /// host:port.
    pub address: String,
    /// How it speaks.
    pub protocol: Protocol,
    /// Free-form metadata (`lb.policy`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Relative weight, 1 to 10000.
    pub weight: u32,
    /// Locality.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Software version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The state the client asks for.
    pub state: State,
    /// Optional active check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// It serves TLS on its address (the gateway dials it over TLS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

/// Identifies an instance: (service, instance id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The service.
    pub service: String,
    /// The instance id.
    pub instance_id: String,
}

/// An operator's durable override of state and weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Forced state.
    pub state: Option<State>,
    /// Forced weight.
    pub weight: Option<u32>,
    /// When it was last changed.
    pub updated_at: SystemTime,
    /// Why, as the operator said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it is dropped by itself; `None`: kept until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<SystemTime>,
}

/// What an operator asks of an instance's override (validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverrideRequest {
    /// The state to force; `None` keeps the override's.
    pub state: Option<State>,
    /// The weight to force; `None` keeps the override's.
    pub weight: Option<u32>,
    /// Drop the override instead.
    pub clear: bool,
    /// Why; replaces the override's reason.
    pub reason: String,
    /// Dropped after this long; `None`: kept until cleared. Replaces the
    /// override's expiry.
    pub expires_in: Option<std::time::Duration>,
}

/// An instance as the registry holds it. Cheap to clone: the spec is shared.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// What the client registered.
    pub spec: Arc<InstanceSpec>,
    /// The lease it hangs off.
    pub lease_id: u64,
    /// Active check result.
    pub health: Health,
    /// Why the last check failed.
    pub health_detail: String,
    /// When the check's result last changed; `None` before it first did.
    pub health_changed_at: Option<SystemTime>,
    /// Held by the mass-expiry brake after its lease lapsed.
    pub expired_held: bool,
    /// The operator's override, if any.
    pub overrides: Option<Override>,
    /// Revision of the last change.
    pub mod_revision: u64,
    /// First registration in this epoch.
    pub registered_at: SystemTime,
}

/// A point in the registry's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Random id of this registry run.
    pub epoch: Arc<str>,
    /// Revision within the epoch.
    pub revision: u64,
}

/// Why an instance went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// Its owner or an operator deregistered it.
    Deregistered,
    /// Its lease lapsed.
    Expired,
    /// Its lease was revoked.
    Revoked,
}

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Added or changed.
    Put,
    /// Removed, and why.
    Delete(DeleteReason),
}

/// One change of one instance, at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The revision of the change.
    pub revision: u64,
    /// What happened.
    pub change: Change,
    /// The instance after a put, before a delete.
    pub instance: Instance,
    /// When this replica applied it (wall clock): the dashboard's history.
    pub at: std::time::SystemTime,
}

// === impl State ===

impl State {
    /// The wire and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "STARTING",
            Self::Serving => "SERVING",
            Self::Draining => "DRAINING",
            Self::OutOfService => "OUT_OF_SERVICE",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Key ===

impl Key {
    /// The key of `spec`.
    pub fn of(spec: &InstanceSpec) -> Self {
        Self {
            service: spec.service.clone(),
            instance_id: spec.instance_id.clone(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.instance_id)
    }
}

// === impl Instance ===

impl Instance {
    /// The effective state: the operator's if set, else the client's.
    pub fn state(&self) -> State {
        self.overrides
            .as_ref()
            .and_then(|o| o.state)
            .unwrap_or(self.spec.state)
    }

    /// The effective weight: the operator's if set, else the client's.
    pub fn weight(&self) -> u32 {
        self.overrides
            .as_ref()
            .and_then(|o| o.weight)
            .unwrap_or(self.spec.weight)
    }

    /// The instance's key.
    pub fn key(&self) -> Key {
        Key::of(&self.spec)
    }
}
