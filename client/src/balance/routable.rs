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

/// The rule over one set of members, decided from their counts: whether
/// it is panic mode, and which tier picks come from. A picker that filters
/// per request (the gateway: endpoints already tried, or at their limit)
/// asks [`Rule::first_choice`], then [`Rule::fallback`], member by member,
/// with its filter beside them; [`eligible`] applies it to a whole set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The routable share of SERVING members is below the threshold.
    pub panic: bool,
    /// Some member is routable.
    pub any_routable: bool,
}

// === impl Status ===

impl Status {
    /// Routable: SERVING, not ejected, passing its checks, not held.
    pub fn routable(&self) -> bool {
        self.serving && !self.ejected && !self.unhealthy && !self.held
    }
}

// === impl Rule ===

impl Rule {
    /// The rule for members with these statuses, `panic_threshold` in
    /// percent.
    pub fn over(statuses: impl IntoIterator<Item = Status>, panic_threshold: u32) -> Self {
        let (mut serving, mut routable) = (0usize, 0usize);
        for s in statuses {
            serving += usize::from(s.serving);
            routable += usize::from(s.routable());
        }
        Self {
            panic: serving > 0 && routable * 100 < serving * panic_threshold as usize,
            any_routable: routable > 0,
        }
    }

    /// Whether a member is a first choice: in panic mode any SERVING one,
    /// else a routable one.
    pub fn first_choice(&self, s: &Status) -> bool {
        if self.panic { s.serving } else { s.routable() }
    }

    /// Whether a member may be picked when no first choice is left: one
    /// the brake holds, SERVING and not ejected.
    pub fn fallback(s: &Status) -> bool {
        s.serving && s.held && !s.ejected
    }
}

/// Applies the rule with `panic_threshold` in percent.
pub fn eligible(statuses: &[Status], panic_threshold: u32) -> Eligible {
    let rule = Rule::over(statuses.iter().copied(), panic_threshold);
    let members = if rule.panic || rule.any_routable {
        statuses.iter().map(|s| rule.first_choice(s)).collect()
    } else {
        statuses.iter().map(Rule::fallback).collect()
    };
    Eligible {
        members,
        panic: rule.panic,
    }
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

    #[test]
    fn the_rule_member_by_member_is_the_rule_over_the_set() {
        // A picker with its own filter asks first_choice, then fallback:
        // without a filter it must see what `eligible` sees.
        let sets: [&[Status]; 5] = [
            &[OK, OK, EJECTED, DRAINING],
            &[OK, EJECTED, EJECTED, EJECTED],
            &[HELD, HELD, DRAINING],
            &[HELD, EJECTED],
            &[DRAINING, DRAINING],
        ];
        for set in sets {
            let rule = Rule::over(set.iter().copied(), 50);
            let whole = eligible(set, 50);
            let first: Vec<bool> = set.iter().map(|s| rule.first_choice(s)).collect();
            let by_member = if first.contains(&true) {
                first
            } else {
                set.iter().map(Rule::fallback).collect()
            };
            assert_eq!(by_member, whole.members, "{set:?}");
            assert_eq!(rule.panic, whole.panic, "{set:?}");
        }
    }
}
