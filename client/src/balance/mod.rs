//! The pick algorithms, shared by the balancer, the gateway and SDK clients,
//! so that a policy name means the same thing everywhere.
//!
//! A [`Picker`] is built from a service's members (id, effective weight and
//! a shared [`Load`]) and a [`Policy`]; it is rebuilt when membership or
//! weights change, while each member's `Load` (in-flight count, peak EWMA)
//! lives on across rebuilds.
//!
//! | policy | pick | state |
//! |---|---|---|
//! | `round_robin` | each member in turn | a counter |
//! | `random` | uniform | none |
//! | `weighted_round_robin` | nginx's smooth WRR over effective weights | current weights |
//! | `least_request` | power of two choices on in-flight | loads |
//! | `peak_ewma` (default) | power of two choices on peak EWMA × (in-flight + 1) | loads |
//! | `ring_hash` | consistent hash ring, 160 points per 100 weight | the ring |
//! | `maglev` | Maglev table of 65,537 slots | the table |

mod hash;
mod load;
mod picker;
mod policy;
mod routable;
mod weights;

pub use hash::{MAGLEV_TABLE_SIZE, Maglev, Ring, hash_key};
pub use load::{DEFAULT_TAU, InFlight, Load, PROBE_FIRST, PROBE_MAX, TIE, TIE_WITHIN};
pub use picker::{Member, Pick, Picker};
pub use policy::{Policy, UnknownPolicy, from_proto, to_proto};
pub use routable::{Eligible, Rule, Status, eligible};
pub use weights::{SlowStart, effective_weight, slow_start_factor, zone_factors};

#[cfg(test)]
mod tests;
