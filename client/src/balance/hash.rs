//! Consistent hashing: a ring (only a removed member's keys move) and a
//! Maglev table (even spread, small moves).
//!
//! The hash is FNV-1a followed by the SplitMix64 finalizer, written here
//! rather than taken from `std` because `DefaultHasher` may change between
//! Rust releases, and every balancer, gateway and SDK must place a key in
//! the same spot whatever it was built with.

use std::sync::Arc;

/// Slots of a Maglev table (a prime, as the paper requires).
pub const MAGLEV_TABLE_SIZE: usize = 65_537;
/// Ring points per 100 units of effective weight.
const POINTS_PER_100: f64 = 160.0;

/// A stable 64-bit hash of `bytes`.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash ring of (point, member index), sorted by point.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

/// A Maglev lookup table of member indices.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Vec<u32>,
}

// === impl Ring ===

impl Ring {
    /// Builds a ring; a member's points depend only on its id and weight,
    /// so adding or removing one never moves another's keys.
    pub fn new(members: &[(Arc<str>, f64)]) -> Self {
        let mut points = Vec::new();
        for (index, (id, weight)) in members.iter().enumerate() {
            let n = ((weight / 100.0) * POINTS_PER_100)
                .round()
                .clamp(1.0, 16_384.0) as u32;
            for replica in 0..n {
                let point = hash_key(format!("{id}#{replica}").as_bytes());
                points.push((point, index as u32));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Members in ring order from `hash`, each once: the first is the owner,
    /// the rest are fallbacks when it cannot be used.
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(p, _)| *p < hash);
        let n = self.points.len();
        let mut seen = Vec::new();
        (0..n).filter_map(move |i| {
            let index = self.points[(start + i) % n].1 as usize;
            if seen.contains(&index) {
                return None;
            }
            seen.push(index);
            Some(index)
        })
    }
}

// === impl Maglev ===

impl Maglev {
    /// Builds the table; members take slots in proportion to their weight
    /// (Envoy's weighted Maglev: a member of half the top weight takes a
    /// turn every other round).
    pub fn new(members: &[(Arc<str>, f64)]) -> Self {
        let m = MAGLEV_TABLE_SIZE as u64;
        let mut table = vec![u32::MAX; MAGLEV_TABLE_SIZE];
        if members.is_empty() {
            return Self { table: Vec::new() };
        }
        let max_weight = members
            .iter()
            .map(|(_, w)| *w)
            .fold(f64::MIN_POSITIVE, f64::max);
        struct Entry {
            offset: u64,
            skip: u64,
            next: u64,
            weight: f64,
            target: f64,
        }
        let mut entries: Vec<Entry> = members
            .iter()
            .map(|(id, weight)| Entry {
                offset: hash_key(format!("{id}/offset").as_bytes()) % m,
                skip: hash_key(format!("{id}/skip").as_bytes()) % (m - 1) + 1,
                next: 0,
                weight: weight.max(f64::MIN_POSITIVE),
                target: 0.0,
            })
            .collect();
        let mut filled = 0;
        let mut round = 1.0f64;
        while filled < MAGLEV_TABLE_SIZE {
            for (index, e) in entries.iter_mut().enumerate() {
                if filled == MAGLEV_TABLE_SIZE {
                    break;
                }
                if round * e.weight < e.target {
                    continue;
                }
                e.target += max_weight;
                let mut slot = ((e.offset + e.next * e.skip) % m) as usize;
                while table[slot] != u32::MAX {
                    e.next += 1;
                    slot = ((e.offset + e.next * e.skip) % m) as usize;
                }
                table[slot] = index as u32;
                e.next += 1;
                filled += 1;
            }
            round += 1.0;
        }
        Self { table }
    }

    /// The member owning `hash`.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        let slot = (hash % MAGLEV_TABLE_SIZE as u64) as usize;
        self.table.get(slot).map(|i| *i as usize)
    }

    /// Slots owned by each of `n` members.
    pub fn slot_counts(&self, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for i in &self.table {
            if let Some(c) = counts.get_mut(*i as usize) {
                *c += 1;
            }
        }
        counts
    }
}
