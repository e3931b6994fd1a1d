//! Local ejection and circuit breaking per endpoint, lock-free.
//!
//! Closed → (N failures in a row) → Open for the ejection time, doubling with
//! each ejection → Half-open: one trial request → Closed on success, Open
//! again (for longer) on failure. The gateway does this on its own
//! observations whatever the balancer says, so a balancer outage never
//! stops it from keeping failures away.

use std::{
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Breaker state of one endpoint.
#[derive(Debug)]
pub struct Breaker {
    base: Instant,
    consecutive: AtomicU32,
    timeouts: AtomicU32,
    last_success_ns: AtomicU64,
    open_until_ns: AtomicU64,
    times: AtomicU32,
    probing: AtomicBool,
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// Ejected until the given time.
    Open,
    /// One trial request may go.
    HalfOpen,
}

/// Breaker thresholds.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Failures in a row that open it.
    pub failures: u32,
    /// Per-try timeouts in a row that open it: a stalled endpoint (paused,
    /// partitioned) times out the few requests sent to it before the picker
    /// shies away, so waiting for `failures` of them would never eject it.
    pub timeouts: u32,
    /// First open time.
    pub base: Duration,
    /// Cap of the open time.
    pub max: Duration,
}

// === impl Breaker ===

impl Default for Breaker {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            consecutive: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
            last_success_ns: AtomicU64::new(0),
            open_until_ns: AtomicU64::new(0),
            times: AtomicU32::new(0),
            probing: AtomicBool::new(false),
        }
    }
}

impl Breaker {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until_ns.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if self.ns(now) < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may be sent at `now` (a half-open breaker lets one
    /// trial through at a time).
    pub fn admits(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.probing.load(Ordering::Acquire),
        }
    }

    /// Marks a request as sent (claims the half-open trial).
    pub fn on_send(&self, now: Instant) {
        if self.state(now) == BreakerState::HalfOpen {
            self.probing.store(true, Ordering::Release);
        }
    }

    /// A success at `now` closes a half-open breaker and resets the count.
    pub fn on_success(&self, now: Instant) {
        self.last_success_ns.store(self.ns(now), Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.timeouts.store(0, Ordering::Relaxed);
        // Read before the swap: a closed breaker (nearly every success)
        // takes no locked read-modify-write.
        if self.open_until_ns.load(Ordering::Acquire) != 0
            && self.open_until_ns.swap(0, Ordering::AcqRel) != 0
        {
            self.probing.store(false, Ordering::Release);
            let _ = self
                .times
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t.saturating_sub(1))
                });
        }
    }

    /// A failure of an attempt sent at `sent`. `local` is a connect error or
    /// a per-try timeout (the endpoint made no progress); `may_open` is
    /// false when the ejection cap is reached. Returns true when it opened.
    ///
    /// Besides N failures (or M local ones) in a row, a local failure while
    /// the endpoint completed nothing for the second half of the attempt
    /// opens it at once: it is stalled (paused, partitioned, gone). Peak EWMA steers traffic away
    /// after one such failure, so counting to N would never finish.
    pub fn on_failure(
        &self,
        cfg: &BreakerConfig,
        now: Instant,
        sent: Instant,
        local: bool,
        may_open: bool,
    ) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let t = if local {
            self.timeouts.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        // Stalled: nothing completed during the second half of this attempt.
        let halfway = sent + now.saturating_duration_since(sent) / 2;
        let stalled = local
            && cfg.timeouts > 0
            && self.last_success_ns.load(Ordering::Relaxed) < self.ns(halfway);
        let state = self.state(now);
        let enough = stalled
            || (cfg.failures > 0 && n >= cfg.failures)
            || (cfg.timeouts > 0 && t >= cfg.timeouts);
        let trip = match state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => enough && may_open,
            BreakerState::Open => false,
        };
        if !trip {
            return false;
        }
        let times = self.times.fetch_add(1, Ordering::Relaxed).min(16);
        let open_for = cfg.base.saturating_mul(1 << times).min(cfg.max);
        self.open_until_ns
            .store(self.ns(now + open_for).max(1), Ordering::Release);
        self.probing.store(false, Ordering::Release);
        true
    }

    /// Failures in a row.
    pub fn consecutive(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// Time left open at `now`, if open.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let until = self.open_until_ns.load(Ordering::Acquire);
        let at = self.ns(now);
        (until != 0 && at < until).then(|| Duration::from_nanos(until - at))
    }

    /// Ends the open period now, so one trial request may go (used when the
    /// ejection cap keeps a failing endpoint in while this one is out).
    pub fn probe_now(&self, now: Instant) {
        if self.state(now) == BreakerState::Open {
            self.open_until_ns
                .store(self.ns(now).max(1), Ordering::Release);
        }
    }

    /// Times it opened (decays as it closes).
    pub fn times(&self) -> u32 {
        self.times.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: BreakerConfig = BreakerConfig {
        failures: 3,
        timeouts: 2,
        base: Duration::from_secs(10),
        max: Duration::from_secs(300),
    };

    #[test]
    fn opens_half_opens_and_closes() {
        let b = Breaker::default();
        let t0 = Instant::now();
        assert!(!b.on_failure(&CFG, t0, t0, false, true));
        assert!(!b.on_failure(&CFG, t0, t0, false, true));
        assert!(
            b.on_failure(&CFG, t0, t0, false, true),
            "third failure opens"
        );
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.admits(t0 + Duration::from_secs(9)));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.admits(t1));
        b.on_send(t1);
        assert!(!b.admits(t1), "one trial at a time");
        assert!(
            b.on_failure(&CFG, t1, t1, false, true),
            "a failed trial reopens"
        );
        assert_eq!(
            b.remaining(t1),
            Some(Duration::from_secs(20)),
            "for twice as long"
        );
        let t2 = t1 + Duration::from_secs(20);
        b.on_send(t2);
        b.on_success(Instant::now());
        assert_eq!(b.state(t2), BreakerState::Closed);
    }

    #[test]
    fn a_stalled_endpoint_opens_at_once_a_busy_one_does_not() {
        let b = Breaker::default();
        let sent = Instant::now();
        // Nothing completed since the attempt was sent: stalled.
        assert!(b.on_failure(&CFG, sent + Duration::from_secs(1), sent, true, true));
        let b = Breaker::default();
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        b.on_success(Instant::now()); // another request completed meanwhile
        assert!(
            !b.on_failure(&CFG, Instant::now(), sent, true, true),
            "one timeout on a busy endpoint"
        );
        assert!(
            b.on_failure(&CFG, Instant::now(), sent, true, true),
            "two in a row"
        );
    }

    #[test]
    fn the_cap_keeps_it_closed() {
        let b = Breaker::default();
        let t = Instant::now();
        for _ in 0..5 {
            assert!(!b.on_failure(&CFG, t, t, false, false));
        }
        assert_eq!(b.state(t), BreakerState::Closed);
    }
}
