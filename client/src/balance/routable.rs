//! Which members may be picked: the same rule in the balancer, the gateway
//! and the SDK.
//!
//! Routable = SERVING − ejected (by the balancer or locally) − failing active
//! checks − held by the registry's brake. When the routable share of SERVING
//! members falls below the panic threshold, every SERVING member is eligible
//! (Envoy's panic mode: better some errors than a few members crushed).
//! Members held by the brake are used only when nothing else is routable.

/// What the rule needs to know of one member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Its state is SERVING.
    pub serving: bool,
    /// Ejected by a balancer or locally.
    pub ejected: bool,
    /// Its active health check fails.
    pub unhealthy: bool,
    /// Held by the registry's mass-expiry brake.
    pub held: bool,
}

impl Status {
    /// What the registry says of an instance (nothing here ejects it).
    pub fn of(instance: &switchyard_proto::registry::v1::Instance) -> Self {
        use switchyard_proto::registry::v1::{Health, State};
        Self {
            serving: instance.state() == State::Serving,
            ejected: false,
            unhealthy: instance.health() == Health::Unhealthy,
            held: instance.expired_held,
        }
    }
}

/// The members that may be picked, and whether that is panic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligible {
    /// One flag per member.
    pub members: Vec<bool>,
    /// True when the healthy share is below the threshold.
    pub panic: bool,
}

/// Applies the rule with `panic_threshold` in percent.
pub fn eligible(statuses: &[Status], panic_threshold: u32) -> Eligible {
    let serving = statuses.iter().filter(|s| s.serving).count();
    let healthy = |s: &Status| s.serving && !s.ejected && !s.unhealthy && !s.held;
    let healthy_count = statuses.iter().filter(|s| healthy(s)).count();
    let panic = serving > 0 && healthy_count * 100 < serving * panic_threshold as usize;
    let members = if panic {
        statuses.iter().map(|s| s.serving).collect()
    } else if healthy_count > 0 {
        statuses.iter().map(healthy).collect()
    } else {
        statuses
            .iter()
            .map(|s| s.serving && s.held && !s.ejected)
            .collect()
    };
    Eligible { members, panic }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Status = Status {
        serving: true,
        ejected: false,
        unhealthy: false,
        held: false,
    };
    const EJECTED: Status = Status {
        serving: true,
        ejected: true,
        unhealthy: false,
        held: false,
    };
    const DRAINING: Status = Status {
        serving: false,
        ejected: false,
        unhealthy: false,
        held: false,
    };
    const HELD: Status = Status {
        serving: true,
        ejected: false,
        unhealthy: false,
        held: true,
    };

    #[test]
    fn ejected_and_draining_are_left_out() {
        let e = eligible(&[OK, EJECTED, DRAINING, OK], 50);
        assert_eq!(e.members, [true, false, false, true]);
        assert!(!e.panic);
    }

    #[test]
    fn below_the_threshold_every_serving_member_is_eligible() {
        let e = eligible(&[OK, EJECTED, EJECTED, DRAINING], 50);
        assert!(e.panic);
        assert_eq!(e.members, [true, true, true, false], "never a draining one");
    }

    #[test]
    fn held_members_only_when_nothing_else() {
        assert_eq!(eligible(&[OK, HELD, OK], 50).members, [true, false, true]);
        let e = eligible(&[HELD, HELD], 0);
        assert_eq!(e.members, [true, true]);
    }
}
