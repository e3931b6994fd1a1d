//! The mass-expiry brake.
//!
//! When many leases lapse at once, the registry is more likely the one cut
//! off than all its clients dead (etcd-io/etcd#15247). Expiry then pauses,
//! lapsed instances stay listed with `expired_held`, and the brake lets go
//! by itself after `max_hold` (Eureka's self-preservation without a time
//! limit kept dead instances forever: Netflix/eureka#1073).

use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

/// The brake's thresholds.
#[derive(Debug, Clone, Copy)]
pub struct BrakeConfig {
    /// At least this many failing leases...
    pub min_leases: usize,
    /// ... and more than this percent of all leases.
    pub percent: u32,
    /// Lapses count for this long.
    pub window: Duration,
    /// The brake lets go after this long at the latest.
    pub max_hold: Duration,
}

/// The brake's state.
#[derive(Debug)]
pub(crate) struct Brake {
    cfg: BrakeConfig,
    lapses: VecDeque<Instant>,
    engaged: Option<Engaged>,
}

/// Details of an engaged brake.
#[derive(Debug, Clone)]
pub struct Engaged {
    /// When it engaged (monotonic).
    pub at: Instant,
    /// When it engaged (wall clock).
    pub at_wall: SystemTime,
    /// Why, for people.
    pub reason: String,
}

// === impl Brake ===

impl Brake {
    pub(crate) fn new(cfg: BrakeConfig) -> Self {
        Self {
            cfg,
            lapses: VecDeque::new(),
            engaged: None,
        }
    }

    /// Lapses recorded within the window before `now`.
    pub(crate) fn recent(&mut self, now: Instant) -> usize {
        while self
            .lapses
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.cfg.window)
        {
            self.lapses.pop_front();
        }
        self.lapses.len()
    }

    /// Records `n` lapses at `now`.
    pub(crate) fn record(&mut self, now: Instant, n: usize) {
        self.lapses.extend(std::iter::repeat_n(now, n));
    }

    /// Engages when `failing` (lapsed in the window, due now, or missing
    /// their renewals) reaches the thresholds among `population` leases.
    /// Returns true when it engaged just now.
    pub(crate) fn evaluate(
        &mut self,
        now: Instant,
        wall: SystemTime,
        failing: usize,
        population: usize,
    ) -> bool {
        if self.engaged.is_some() {
            return false;
        }
        let over_share =
            (failing as u128) * 100 > (population as u128) * u128::from(self.cfg.percent);
        if failing >= self.cfg.min_leases && over_share {
            let reason = format!(
                "{failing} of {population} leases lapsed or stopped renewing within {:?}",
                self.cfg.window
            );
            self.engaged = Some(Engaged {
                at: now,
                at_wall: wall,
                reason,
            });
            return true;
        }
        false
    }

    /// True when an engaged brake must let go: its time is up, or nothing is held.
    pub(crate) fn should_release(&self, now: Instant, held: usize) -> bool {
        self.engaged
            .as_ref()
            .is_some_and(|e| held == 0 || now.saturating_duration_since(e.at) >= self.cfg.max_hold)
    }

    /// Lets go and forgets the lapses it saw, so it does not re-engage on them.
    pub(crate) fn release(&mut self) {
        self.engaged = None;
        self.lapses.clear();
    }

    /// The engaged state, if any.
    pub(crate) fn engaged(&self) -> Option<&Engaged> {
        self.engaged.as_ref()
    }

    /// Its longest hold.
    pub(crate) fn max_hold(&self) -> Duration {
        self.cfg.max_hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brake() -> Brake {
        Brake::new(BrakeConfig {
            min_leases: 10,
            percent: 50,
            window: Duration::from_secs(10),
            max_hold: Duration::from_secs(120),
        })
    }

    #[test]
    fn thresholds_need_both_count_and_share() {
        let now = Instant::now();
        let wall = SystemTime::now();
        assert!(!brake().evaluate(now, wall, 2, 8), "2 of 8");
        assert!(!brake().evaluate(now, wall, 9, 10), "9 is below the count");
        assert!(
            !brake().evaluate(now, wall, 10, 20),
            "exactly half is not more than half"
        );
        let mut b = brake();
        assert!(b.evaluate(now, wall, 10, 12));
        assert!(!b.evaluate(now, wall, 12, 12), "already engaged");
        assert!(!b.should_release(now, 3));
        assert!(b.should_release(now + Duration::from_secs(120), 3));
        assert!(b.should_release(now, 0));
    }

    #[test]
    fn window_forgets_old_lapses() {
        let mut b = brake();
        let t0 = Instant::now();
        b.record(t0, 5);
        assert_eq!(b.recent(t0 + Duration::from_secs(5)), 5);
        assert_eq!(b.recent(t0 + Duration::from_secs(11)), 0);
    }
}
