//! A picker over one service's members, for one policy.

use std::{
    cell::RefCell,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::{
    hash::{Maglev, Ring, hash_key},
    load::Load,
    policy::Policy,
};

/// One endpoint as the picker sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its instance id (stable across rebuilds; the hash policies hash it).
    pub id: Arc<str>,
    /// Effective weight (operator weight × slow start × zone preference).
    pub weight: f64,
    /// Its load, shared across rebuilds.
    pub load: Arc<Load>,
}

/// What a pick may use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pick<'a> {
    /// The request's hash key, for the hash policies.
    pub key: Option<&'a [u8]>,
}

/// Picks members of one service with one policy.
#[derive(Debug)]
pub struct Picker {
    policy: Policy,
    members: Vec<Member>,
    counter: AtomicUsize,
    smooth: Mutex<Vec<f64>>,
    ring: Option<Ring>,
    maglev: Option<Maglev>,
}

// === impl Picker ===

impl Picker {
    /// Builds a picker. Members without a latency estimate are seeded with
    /// the median of the others', so a newcomer is not flooded.
    pub fn new(policy: Policy, members: Vec<Member>) -> Self {
        seed_newcomers(&members);
        let weighted: Vec<(Arc<str>, f64)> =
            members.iter().map(|m| (m.id.clone(), m.weight)).collect();
        let ring = (policy == Policy::RingHash).then(|| Ring::new(&weighted));
        let maglev = (policy == Policy::Maglev).then(|| Maglev::new(&weighted));
        Self {
            policy,
            smooth: Mutex::new(vec![0.0; members.len()]),
            members,
            counter: AtomicUsize::new(0),
            ring,
            maglev,
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The members, in the order indices refer to.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Picks among members for which `eligible(index)` holds.
    pub fn pick(&self, req: Pick<'_>, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        // Random choices here need to be spread, not unpredictable: a
        // per-thread xoshiro (seeded from the OS) rather than the
        // cryptographic `ThreadRng`, on a path taken by every request.
        thread_local! {
            static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
        }
        RNG.with(|rng| self.pick_with(req, eligible, &mut *rng.borrow_mut()))
    }

    /// [`pick`](Self::pick) with a given random source (seeded in tests).
    pub fn pick_with<R: Rng + ?Sized>(
        &self,
        req: Pick<'_>,
        eligible: impl Fn(usize) -> bool,
        rng: &mut R,
    ) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        match self.policy {
            Policy::RoundRobin => {
                let start = self.counter.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|i| (start + i) % n).find(|i| eligible(*i))
            }
            Policy::Random => random_eligible(n, &eligible, rng),
            Policy::WeightedRoundRobin => self.smooth_wrr(&eligible),
            Policy::LeastRequest => self.p2c(&eligible, rng, |b, a| {
                b.load.in_flight() < a.load.in_flight()
            }),
            Policy::PeakEwma => self.p2c(&eligible, rng, |b, a| b.load.wins_over(&a.load)),
            Policy::RingHash | Policy::Maglev => {
                let hash = match req.key {
                    Some(key) => hash_key(key),
                    None => rng.random(),
                };
                self.hashed(hash, &eligible)
            }
        }
    }

    /// nginx's smooth weighted round robin: every eligible member gains its
    /// weight, the richest is picked and pays the total.
    fn smooth_wrr(&self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let mut current = switchyard_time::sync::lock(&self.smooth);
        let mut total = 0.0;
        let mut best: Option<usize> = None;
        for (i, m) in self.members.iter().enumerate() {
            if !eligible(i) || m.weight <= 0.0 {
                continue;
            }
            current[i] += m.weight;
            total += m.weight;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    /// Power of two choices: two distinct eligible members at random, the
    /// cheaper wins (the first on a tie): `cheaper(b, a)` says whether the
    /// second is strictly cheaper than the first.
    fn p2c<R: Rng + ?Sized>(
        &self,
        eligible: &impl Fn(usize) -> bool,
        rng: &mut R,
        cheaper: impl Fn(&Member, &Member) -> bool,
    ) -> Option<usize> {
        let (a, b) = two_eligible(self.members.len(), eligible, rng)?;
        let Some(b) = b else { return Some(a) };
        Some(if cheaper(&self.members[b], &self.members[a]) {
            b
        } else {
            a
        })
    }

    fn hashed(&self, hash: u64, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        if let Some(ring) = &self.ring {
            return ring.walk(hash).find(|i| eligible(*i));
        }
        let maglev = self.maglev.as_ref()?;
        // The owner, then a few rehashes, then anyone: a key whose owner is
        // out goes somewhere stable rather than everywhere.
        let mut h = hash;
        for _ in 0..8 {
            if let Some(i) = maglev.lookup(h).filter(|i| eligible(*i)) {
                return Some(i);
            }
            h = hash_key(&h.to_le_bytes());
        }
        (0..self.members.len()).find(|i| eligible(*i))
    }
}

/// Two distinct eligible indices at random (the second is None when only
/// one is eligible). The first is drawn from all members and the second
/// from the others (two draws when both are eligible; drawing both from
/// all repeated the first a third of the time with three members), each
/// retried a few times, then it falls back to collecting the eligible ones.
pub(crate) fn two_eligible<R: Rng + ?Sized>(
    n: usize,
    eligible: &impl Fn(usize) -> bool,
    rng: &mut R,
) -> Option<(usize, Option<usize>)> {
    if let Some(first) = (0..8)
        .map(|_| rng.random_range(0..n))
        .find(|i| eligible(*i))
    {
        if n == 1 {
            return Some((first, None));
        }
        for _ in 0..8 {
            let mut second = rng.random_range(0..n - 1);
            if second >= first {
                second += 1;
            }
            if eligible(second) {
                return Some((first, Some(second)));
            }
        }
    }
    let all: Vec<usize> = (0..n).filter(|i| eligible(*i)).collect();
    match all.len() {
        0 => None,
        1 => Some((all[0], None)),
        len => {
            let a = rng.random_range(0..len);
            let mut b = rng.random_range(0..len - 1);
            if b >= a {
                b += 1;
            }
            Some((all[a], Some(all[b])))
        }
    }
}

fn random_eligible<R: Rng + ?Sized>(
    n: usize,
    eligible: &impl Fn(usize) -> bool,
    rng: &mut R,
) -> Option<usize> {
    for _ in 0..8 {
        let i = rng.random_range(0..n);
        if eligible(i) {
            return Some(i);
        }
    }
    let all: Vec<usize> = (0..n).filter(|i| eligible(*i)).collect();
    (!all.is_empty()).then(|| all[rng.random_range(0..all.len())])
}

fn seed_newcomers(members: &[Member]) {
    let mut known: Vec<f64> = members
        .iter()
        .filter(|m| m.load.has_estimate())
        .map(|m| m.load.ewma_ns())
        .collect();
    if known.len() == members.len() {
        return;
    }
    known.sort_by(f64::total_cmp);
    // With no history at all, a modest default; any real sample replaces it.
    let median = known.get(known.len() / 2).copied().unwrap_or(10_000_000.0);
    for m in members.iter().filter(|m| !m.load.has_estimate()) {
        m.load.seed(median);
    }
}
