//! Policy names, as written in config, registry metadata `lb.policy` and the
//! balancer's contract.

use std::{fmt, str::FromStr};

/// A pick algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Each member in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// nginx's smooth weighted round robin.
    WeightedRoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Power of two choices on peak EWMA latency × in-flight (the default).
    #[default]
    PeakEwma,
    /// Consistent hashing on a ring.
    RingHash,
    /// Maglev consistent hashing.
    Maglev,
}

/// A policy name nobody knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown policy `{0}`: use round_robin, random, weighted_round_robin, least_request, peak_ewma, ring_hash or maglev"
)]
pub struct UnknownPolicy(pub String);

// === impl Policy ===

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 7] = [
        Self::RoundRobin,
        Self::Random,
        Self::WeightedRoundRobin,
        Self::LeastRequest,
        Self::PeakEwma,
        Self::RingHash,
        Self::Maglev,
    ];

    /// The name used in config and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::LeastRequest => "least_request",
            Self::PeakEwma => "peak_ewma",
            Self::RingHash => "ring_hash",
            Self::Maglev => "maglev",
        }
    }

    /// True for the policies that pick by a request's hash key.
    pub fn is_hash(self) -> bool {
        matches!(self, Self::RingHash | Self::Maglev)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// The policy named by the balancer contract's enum (UNSPECIFIED is None).
pub fn from_proto(p: i32) -> Option<Policy> {
    use switchyard_proto::balancer::v1::Policy as P;
    Some(match P::try_from(p).ok()? {
        P::Unspecified => return None,
        P::RoundRobin => Policy::RoundRobin,
        P::Random => Policy::Random,
        P::WeightedRoundRobin => Policy::WeightedRoundRobin,
        P::LeastRequest => Policy::LeastRequest,
        P::PeakEwma => Policy::PeakEwma,
        P::RingHash => Policy::RingHash,
        P::Maglev => Policy::Maglev,
    })
}

/// The balancer contract's enum for a policy.
pub fn to_proto(p: Policy) -> switchyard_proto::balancer::v1::Policy {
    use switchyard_proto::balancer::v1::Policy as P;
    match p {
        Policy::RoundRobin => P::RoundRobin,
        Policy::Random => P::Random,
        Policy::WeightedRoundRobin => P::WeightedRoundRobin,
        Policy::LeastRequest => P::LeastRequest,
        Policy::PeakEwma => P::PeakEwma,
        Policy::RingHash => P::RingHash,
        Policy::Maglev => P::Maglev,
    }
}
