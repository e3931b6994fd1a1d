//! Effective weights: operator weight × slow start × zone preference.
//!
//! The balancer folds these into each assignment; the gateway applies them
//! itself only when it has no balancer.

use std::time::Duration;

/// Slow start: a new member's weight ramps up linearly over `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// Length of the ramp; zero disables it.
    pub window: Duration,
    /// Share of the weight at the start, 0.0 to 1.0.
    pub min_share: f64,
}

/// Share of a cross-zone member's weight while the local zone can serve.
const CROSS_ZONE_SHARE: f64 = 0.05;

/// The slow-start factor of a member that joined `age` ago.
pub fn slow_start_factor(s: &SlowStart, age: Duration) -> f64 {
    if s.window.is_zero() || age >= s.window {
        return 1.0;
    }
    let ramp = age.as_secs_f64() / s.window.as_secs_f64();
    ramp.max(s.min_share).clamp(0.0, 1.0)
}

/// Zone factors for `zones` (one per member) as seen from `local`: when the
/// local zone has at least one member and at least half its fair share of
/// them, members elsewhere keep only a small share (so they still take
/// traffic if the local ones fail); otherwise every member counts fully.
pub fn zone_factors(local: &str, zones: &[&str]) -> Vec<f64> {
    let n = zones.len();
    let distinct = {
        let mut z: Vec<&str> = zones.to_vec();
        z.sort_unstable();
        z.dedup();
        z.len()
    };
    let here = zones.iter().filter(|z| **z == local).count();
    let enough = !local.is_empty() && here > 0 && (here * distinct * 2) >= n;
    zones
        .iter()
        .map(|z| {
            if !enough || *z == local {
                1.0
            } else {
                CROSS_ZONE_SHARE
            }
        })
        .collect()
}

/// Operator weight × slow start × zone factor.
pub fn effective_weight(weight: u32, slow_start: f64, zone: f64) -> f64 {
    f64::from(weight) * slow_start * zone
}
