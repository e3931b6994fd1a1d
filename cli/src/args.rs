//! What the commands take beyond names: filters on instances and
//! services, the states an operator may force, why and for how long, and
//! a position in the registry's history.

use std::time::Duration;

use clap::{Args, ValueEnum};
use switchyard_client::pb;

/// Filters on instances: every one given must hold.
#[derive(Args, Debug, Default)]
pub(crate) struct InstanceFilters {
    /// Only instances with this tag (repeat for several).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only instances with this metadata, KEY=VALUE (repeat for several).
    #[arg(long = "meta", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Only instances in this zone.
    #[arg(long)]
    zone: Option<String>,
    /// Only instances in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// Only instances with this health.
    #[arg(long, value_enum)]
    health: Option<HealthArg>,
}

/// Filters on services, and on the instances counted.
#[derive(Args, Debug)]
pub(crate) struct ServiceFilters {
    /// Only services whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub instances: InstanceFilters,
}

/// An instance's state, as filters take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    /// Registered, not ready yet.
    Starting,
    /// Takes traffic.
    Serving,
    /// Finishing in-flight work.
    Draining,
    /// Kept out by an operator.
    OutOfService,
}

/// A state an operator may force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ForcedState {
    /// Takes traffic.
    Serving,
    /// Finishing in-flight work, then out.
    Draining,
    /// Out of traffic.
    OutOfService,
}

/// Health, as filters take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum HealthArg {
    /// No check, or none finished.
    Unknown,
    /// The check passes.
    Healthy,
    /// The check fails.
    Unhealthy,
}

/// Why an override is set, and for how long.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct Why {
    /// Why, kept with the override for whoever reads it later.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Drop the override by itself after this long: 90s, 30m, 2h, 1d (1 s to 30 days).
    #[arg(long = "for", value_parser = parse_span)]
    pub expires_in: Option<Duration>,
}

/// `90`, `90s`, `30m`, `2h`, `1d`.
fn parse_span(s: &str) -> Result<Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 30m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("`{s}` is not a duration like 90s, 30m, 2h or 1d")),
    };
    Ok(Duration::from_secs(secs))
}

/// A point in the registry's history: `EPOCH:REVISION`.
#[derive(Clone, Debug)]
pub(crate) struct Position(pub pb::WatchPosition);

/// `--since EPOCH:REVISION`.
pub(crate) fn parse_position(s: &str) -> Result<Position, String> {
    let (epoch, revision) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not EPOCH:REVISION"))?;
    let revision = revision
        .parse()
        .map_err(|_| format!("`{revision}` is not a revision"))?;
    if epoch.is_empty() {
        return Err(format!("`{s}` has no epoch"));
    }
    Ok(Position(pb::WatchPosition {
        epoch: epoch.to_string(),
        revision,
    }))
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

impl From<ForcedState> for Option<pb::State> {
    fn from(s: ForcedState) -> Self {
        Some(match s {
            ForcedState::Serving => pb::State::Serving,
            ForcedState::Draining => pb::State::Draining,
            ForcedState::OutOfService => pb::State::OutOfService,
        })
    }
}

impl StateArg {
    fn pb(self) -> pb::State {
        match self {
            Self::Starting => pb::State::Starting,
            Self::Serving => pb::State::Serving,
            Self::Draining => pb::State::Draining,
            Self::OutOfService => pb::State::OutOfService,
        }
    }
}

impl HealthArg {
    fn pb(self) -> pb::Health {
        match self {
            Self::Unknown => pb::Health::Unknown,
            Self::Healthy => pb::Health::Healthy,
            Self::Unhealthy => pb::Health::Unhealthy,
        }
    }
}

impl InstanceFilters {
    /// Whether any filter is given.
    pub(crate) fn any(&self) -> bool {
        !self.tags.is_empty()
            || !self.meta.is_empty()
            || self.zone.is_some()
            || self.state.is_some()
            || self.health.is_some()
    }

    /// Whether `i` passes every filter given.
    pub(crate) fn admit(&self, i: &pb::Instance) -> bool {
        let Some(spec) = &i.spec else { return false };
        self.tags.iter().all(|t| spec.tags.contains(t))
            && self
                .meta
                .iter()
                .all(|(k, v)| spec.metadata.get(k) == Some(v))
            && self.zone.as_ref().is_none_or(|z| &spec.zone == z)
            && self.state.is_none_or(|s| i.state == s.pb() as i32)
            && self.health.is_none_or(|h| i.health == h.pb() as i32)
    }
}
