//! Exponential backoff with full jitter, for reconnect loops.
//!
//! DESIGN: every binary connects with exponential backoff and jitter, capped
//! (for lease holders) at TTL/3, so that start order does not matter and a
//! restarted registry is not stampeded.

use std::time::Duration;

use rand::Rng;

/// Delays for successive attempts: a random delay in `[base·2ⁿ/2, base·2ⁿ]`,
/// never above `cap` (the "equal jitter" variant, so a delay is never ~0).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

// === impl Backoff ===

impl Backoff {
    /// Starts at `base`, never waits longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Call after a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_stays_under_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(
            delays
                .iter()
                .skip(5)
                .all(|d| *d >= Duration::from_millis(500))
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
