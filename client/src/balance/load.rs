//! Per-member load: requests in flight and a peak-sensitive EWMA of latency.
//!
//! Lock-free (atomics), because every request touches it. The EWMA is
//! "peak" in linkerd's and tower's sense: a latency above the estimate
//! replaces it at once, one below decays into it with time constant `tau`,
//! so a member that turns slow is avoided immediately and trusted again
//! only gradually.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Decay time constant of the EWMA (linkerd's default).
pub const DEFAULT_TAU: Duration = Duration::from_secs(10);

/// How much cheaper one member must look to win a peak EWMA comparison;
/// closer costs are a tie, which the pick breaks at random. Between equal
/// instances the estimates are each one's recent peaks (a peak replaces the
/// estimate at once and decays over seconds), which differ by chance: a
/// strict comparison sent 39 of 40 sequential requests to one of two equal
/// replicas. A member ten times slower is far outside it.
pub const TIE: f64 = 1.5;

/// Costs closer than this are a tie too, whatever their ratio: below a
/// millisecond the estimates of equal replicas differ by scheduling noise
/// (0.6 against 0.3 ms after their first answers on the compose stack, which
/// sent 99 of 100 sequential requests to one), and sending a request to the
/// one that looked a fraction of a millisecond slower costs no one anything.
/// Under load, in-flight requests multiply the costs far apart.
pub const TIE_WITHIN: Duration = Duration::from_millis(1);

/// How long a member that fell behind (a peak put its cost above the
/// other's) goes without requests before it is probed: one request, whose
/// latency replaces the estimate instead of decaying into it. Each probe
/// that does not bring it back doubles the wait, up to [`PROBE_MAX`]; being
/// picked on cost again resets it. A peak of noise (one slow answer from an
/// equal replica) costs it this long, not the seconds its estimate takes to
/// decay; a member that is really slow gets a few probes, then one per
/// `PROBE_MAX`.
pub const PROBE_FIRST: Duration = Duration::from_millis(25);

/// The longest wait between probes of a member that stays behind. Without
/// probes, the peaks of a load phase kept every sequential request on one of
/// two equal replicas for about 30 s after the load stopped (65 ms against
/// 23 ms on the compose stack, decaying at the same rate). A member ten times
/// slower is probed about once per `PROBE_MAX` while the others take the
/// traffic: one request in 400 at `bench/run.sh balancing`'s rate.
pub const PROBE_MAX: Duration = Duration::from_secs(1);

/// A member's load, shared by every picker that includes it.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicU32,
    ewma_ns: AtomicU64,
    /// When the estimate was last set, in nanoseconds since [`epoch`]: one
    /// epoch for all loads, so that two members' stamps compare directly.
    stamp_ns: AtomicU64,
    seeded: AtomicBool,
    /// A request to it has completed (a seeded estimate is a guess).
    observed: AtomicBool,
    /// How much older than the other choice's its estimate must be for it
    /// to be probed, in nanoseconds ([`PROBE_FIRST`] to [`PROBE_MAX`]).
    probe_after_ns: AtomicU64,
    /// A probe was granted: the next observation replaces the estimate.
    probing: AtomicBool,
    /// [`epoch`], the same for every load; the copy spares each observation
    /// the `OnceLock` check.
    base: Instant,
}

/// The instant the loads' stamps count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    load: Arc<Load>,
}

// === impl Load ===

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Load {
    /// No requests, no latency seen.
    pub fn new() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(0),
            stamp_ns: AtomicU64::new(0),
            seeded: AtomicBool::new(false),
            observed: AtomicBool::new(false),
            probe_after_ns: AtomicU64::new(PROBE_FIRST.as_nanos() as u64),
            probing: AtomicBool::new(false),
            base: epoch(),
        }
    }

    /// Starts a request; it counts until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { load: self.clone() }
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The latency estimate, in nanoseconds (0 before any).
    pub fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed))
    }

    /// True once it has an estimate (observed or seeded).
    pub fn has_estimate(&self) -> bool {
        self.seeded.load(Ordering::Relaxed)
    }

    /// Gives a new member a starting estimate (the service's median), so it
    /// is neither flooded (0 would look fastest) nor starved.
    pub fn seed(&self, ewma_ns: f64) {
        if !self.seeded.swap(true, Ordering::Relaxed) {
            self.ewma_ns.store(ewma_ns.to_bits(), Ordering::Relaxed);
            self.stamp_ns
                .store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Records a finished request's latency, now.
    pub fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, self.base.elapsed(), DEFAULT_TAU);
    }

    /// [`observe`](Self::observe) at `now` (a clock reading the caller
    /// already has).
    pub fn observe_now(&self, rtt: Duration, now: Instant) {
        self.observe_at(rtt, now.saturating_duration_since(self.base), DEFAULT_TAU);
    }

    /// Records a latency at `now` (time since the loads' epoch, the first
    /// load's creation), for simulations that run on virtual time.
    pub fn observe_at(&self, rtt: Duration, now: Duration, tau: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let now_ns = now.as_nanos() as u64;
        let prev = self.ewma_ns();
        let age = now_ns.saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        // A probe's latency replaces the estimate, which was a past peak. A
        // seed is decayed into like any estimate: it damps a member's first
        // answers, which are often slow (a new connection, cold code).
        let probed = self.probing.swap(false, Ordering::Relaxed);
        let next = if !self.has_estimate() || rtt > prev || probed {
            rtt
        } else {
            let decay = (-(age as f64) / tau.as_nanos() as f64).exp();
            prev * decay + rtt * (1.0 - decay)
        };
        self.seeded.store(true, Ordering::Relaxed);
        self.observed.store(true, Ordering::Relaxed);
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
        self.stamp_ns.store(now_ns, Ordering::Relaxed);
    }

    /// Whether a pick should take this member over `other` under peak
    /// EWMA: a member never tried, with nothing in flight, is tried once
    /// (its seeded estimate is a guess, and a guess above the others'
    /// observed latency would starve it); one whose estimate is older than
    /// the other's by its probe wait is probed (see [`PROBE_FIRST`]);
    /// otherwise it must cost less by more than [`TIE`] and [`TIE_WITHIN`].
    /// Age is measured against the other member's stamp, not a clock: a
    /// member falls behind while another one is being used, which is when
    /// its old peak would keep traffic away.
    pub fn wins_over(&self, other: &Load) -> bool {
        if self.probe_due(other) {
            return true;
        }
        if other.probe_due(self) {
            return false;
        }
        let wins = self.costs_less_than(other, TIE, TIE_WITHIN);
        // Picked on cost (a tie goes to `other`, P2C's first choice): it is
        // in the rotation, and a later fall behind is probed soon again.
        let picked = if wins { self } else { other };
        let first = PROBE_FIRST.as_nanos() as u64;
        if picked.probe_after_ns.load(Ordering::Relaxed) != first {
            picked.probe_after_ns.store(first, Ordering::Relaxed);
        }
        wins
    }

    /// Whether this member, compared with `than`, is due a probe; grants it
    /// (the next observation replaces the estimate, and the wait doubles).
    fn probe_due(&self, than: &Load) -> bool {
        if self.in_flight() != 0 {
            return false;
        }
        if !self.observed.load(Ordering::Relaxed) {
            return true;
        }
        let wait = self.probe_after_ns.load(Ordering::Relaxed);
        if than.stamp_ns.load(Ordering::Relaxed) <= self.stamp_ns.load(Ordering::Relaxed) + wait {
            return false;
        }
        self.probing.store(true, Ordering::Relaxed);
        self.probe_after_ns.store(
            (wait * 2).min(PROBE_MAX.as_nanos() as u64),
            Ordering::Relaxed,
        );
        true
    }

    /// Whether this member costs less than `other` under peak EWMA, by more
    /// than a factor `margin` (1: strictly less) and by more than `within`
    /// (zero: any amount). A
    /// cost is estimate × e^(−idle/τ) × (in flight + 1): the estimate decays
    /// towards zero while nothing completes (tower's `PeakEwma` does the
    /// same), so an endpoint that was slow once is tried again in time
    /// instead of being starved forever. Both idle times run to the same
    /// instant, which cancels out of the comparison: it needs no clock
    /// reading and one `exp`, where computing both costs took two of each.
    pub fn costs_less_than(&self, other: &Load, margin: f64, within: Duration) -> bool {
        let own = self.ewma_ns() * f64::from(self.in_flight() + 1);
        let theirs = other.ewma_ns() * f64::from(other.in_flight() + 1);
        // How much fresher this estimate is, in time constants (bounded so
        // that e^x stays finite and 0 × e^x is 0, not NaN).
        let fresher = (self.stamp_ns.load(Ordering::Relaxed) as f64
            - other.stamp_ns.load(Ordering::Relaxed) as f64)
            / DEFAULT_TAU.as_nanos() as f64;
        let own = own * fresher.clamp(-700.0, 700.0).exp();
        own * margin < theirs && theirs - own > within.as_nanos() as f64
    }
}

// === impl InFlight ===

impl InFlight {
    /// The load it counts against.
    pub fn load(&self) -> &Arc<Load> {
        &self.load
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
