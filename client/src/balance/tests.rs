//! Deterministic tests of the pick algorithms: seeded randomness, simulated
//! latencies on virtual time, no wall clock.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

fn members(weights: &[f64]) -> Vec<Member> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| Member {
            id: Arc::from(format!("m{i}")),
            weight: *w,
            load: Arc::new(Load::new()),
        })
        .collect()
}

fn named(ids: &[&str]) -> Vec<Member> {
    ids.iter()
        .map(|id| Member {
            id: Arc::from(*id),
            weight: 100.0,
            load: Arc::new(Load::new()),
        })
        .collect()
}

fn all(_: usize) -> bool {
    true
}

#[test]
fn smooth_wrr_matches_nginx_for_5_1_1() {
    let p = Picker::new(Policy::WeightedRoundRobin, members(&[5.0, 1.0, 1.0]));
    let names = ["a", "b", "c"];
    let seq: Vec<&str> = (0..7)
        .map(|_| names[p.pick(Pick::default(), all).expect("pick")])
        .collect();
    assert_eq!(seq, ["a", "a", "b", "a", "c", "a", "a"]);
    // And it repeats with the period of the weights.
    let again: Vec<&str> = (0..7)
        .map(|_| names[p.pick(Pick::default(), all).expect("pick")])
        .collect();
    assert_eq!(again, seq);
}

#[test]
fn round_robin_and_random_skip_ineligible_members() {
    let p = Picker::new(Policy::RoundRobin, members(&[1.0; 4]));
    let seq: Vec<usize> = (0..6)
        .map(|_| p.pick(Pick::default(), |i| i != 1).expect("pick"))
        .collect();
    assert!(!seq.contains(&1));
    let p = Picker::new(Policy::Random, members(&[1.0; 4]));
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..200 {
        assert_eq!(p.pick_with(Pick::default(), |i| i == 2, &mut rng), Some(2));
    }
    assert_eq!(p.pick(Pick::default(), |_| false), None);
}

fn keys() -> Vec<String> {
    (0..20_000).map(|i| format!("user-{i}")).collect()
}

fn owners(p: &Picker, keys: &[String]) -> Vec<Arc<str>> {
    keys.iter()
        .map(|k| {
            let i = p
                .pick(
                    Pick {
                        key: Some(k.as_bytes()),
                    },
                    all,
                )
                .expect("pick");
            p.members()[i].id.clone()
        })
        .collect()
}

#[test]
fn ring_hash_moves_only_the_removed_members_keys() {
    let ids = ["a", "b", "c", "d", "e"];
    let before = owners(&Picker::new(Policy::RingHash, named(&ids)), &keys());
    let after = owners(
        &Picker::new(Policy::RingHash, named(&["a", "b", "d", "e"])),
        &keys(),
    );
    let mut moved_from_c = 0;
    for (b, a) in before.iter().zip(&after) {
        if &**b == "c" {
            moved_from_c += 1;
        } else {
            assert_eq!(b, a, "a key of a member that stayed moved");
        }
    }
    assert!(moved_from_c > 0);
    // Excluding a member sends its keys to the next on the ring, no one else's.
    let p = Picker::new(Policy::RingHash, named(&ids));
    for (k, b) in keys().iter().zip(&before).take(2000) {
        let i = p
            .pick(
                Pick {
                    key: Some(k.as_bytes()),
                },
                |i| p.members()[i].id.as_ref() != "c",
            )
            .expect("pick");
        if &**b != "c" {
            assert_eq!(&p.members()[i].id, b);
        }
    }
}

#[test]
fn maglev_spreads_slots_evenly_and_moves_few_keys() {
    let m = hash::MAGLEV_TABLE_SIZE;
    for n in [3usize, 7, 10, 33] {
        let ids: Vec<String> = (0..n).map(|i| format!("ep-{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let weighted: Vec<(Arc<str>, f64)> =
            refs.iter().map(|id| (Arc::from(*id), 100.0)).collect();
        let counts = Maglev::new(&weighted).slot_counts(n);
        for c in &counts {
            assert!(*c == m / n || *c == m.div_ceil(n), "n={n}: {counts:?}");
        }
        let before = owners(&Picker::new(Policy::Maglev, named(&refs)), &keys());
        let after = owners(&Picker::new(Policy::Maglev, named(&refs[1..])), &keys());
        let moved =
            before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64 / before.len() as f64;
        assert!(
            moved <= 1.0 / n as f64 + 0.01,
            "n={n}: {moved:.4} of keys moved"
        );
    }
}

#[test]
fn maglev_follows_weights() {
    let weighted: Vec<(Arc<str>, f64)> =
        vec![(Arc::from("heavy"), 200.0), (Arc::from("light"), 100.0)];
    let counts = Maglev::new(&weighted).slot_counts(2);
    let share = counts[0] as f64 / hash::MAGLEV_TABLE_SIZE as f64;
    assert!((share - 2.0 / 3.0).abs() < 0.01, "{counts:?}");
}

#[test]
fn least_request_never_picks_the_busier_of_its_two_choices() {
    let p = Picker::new(Policy::LeastRequest, members(&[1.0; 6]));
    let mut load_rng = StdRng::seed_from_u64(1);
    let mut guards = Vec::new();
    for m in p.members() {
        for _ in 0..load_rng.random_range(0..20) {
            guards.push(m.load.start());
        }
    }
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..5000 {
        // Replay the random source to learn the two choices.
        let mut replay = rng.clone();
        let (a, b) = picker::two_eligible(6, &all, &mut replay).expect("two");
        let b = b.expect("six members give two choices");
        let picked = p.pick_with(Pick::default(), all, &mut rng).expect("pick");
        let (ia, ib) = (
            p.members()[a].load.in_flight(),
            p.members()[b].load.in_flight(),
        );
        assert!(picked == a || picked == b);
        let other = if picked == a { ib } else { ia };
        assert!(
            p.members()[picked].load.in_flight() <= other,
            "picked the busier one"
        );
    }
}

/// Simulates `requests` arriving every `gap` on virtual time at three
/// members whose service times are `latencies`; returns each one's share.
fn simulate(policy: Policy, latencies: [Duration; 3], requests: usize, gap: Duration) -> [f64; 3] {
    let p = Picker::new(policy, members(&[100.0; 3]));
    let mut rng = StdRng::seed_from_u64(42);
    let mut in_flight: Vec<(Duration, usize, InFlight)> = Vec::new();
    let mut counts = [0usize; 3];
    for r in 0..requests {
        let now = gap * r as u32;
        // Finish everything due by now, observing its latency.
        in_flight.sort_by_key(|(done, _, _)| *done);
        while in_flight.first().is_some_and(|(done, _, _)| *done <= now) {
            let (done, member, guard) = in_flight.remove(0);
            let jitter = latencies[member] / 10;
            let rtt = latencies[member] + jitter;
            guard.load().observe_at(rtt, done, load::DEFAULT_TAU);
        }
        let i = p.pick_with(Pick::default(), all, &mut rng).expect("pick");
        counts[i] += 1;
        let jitter = Duration::from_micros(rng.random_range(0..1000));
        in_flight.push((now + latencies[i] + jitter, i, p.members()[i].load.start()));
    }
    counts.map(|c| c as f64 / requests as f64)
}

#[test]
fn peak_ewma_keeps_a_ten_times_slower_member_under_five_percent() {
    let fast = Duration::from_millis(10);
    let latencies = [fast, fast * 10, fast];
    let ewma = simulate(
        Policy::PeakEwma,
        latencies,
        20_000,
        Duration::from_millis(2),
    );
    let rr = simulate(
        Policy::RoundRobin,
        latencies,
        20_000,
        Duration::from_millis(2),
    );
    eprintln!(
        "slow member's share: peak_ewma {:.2}%, round_robin {:.2}%",
        ewma[1] * 100.0,
        rr[1] * 100.0
    );
    assert!(
        ewma[1] <= 0.05,
        "peak_ewma sent the slow member {:.1}%",
        ewma[1] * 100.0
    );
    assert!(
        (rr[1] - 1.0 / 3.0).abs() < 0.01,
        "round_robin sent the slow member {:.1}%",
        rr[1] * 100.0
    );
}

/// The compose stack's case: a load phase left two equal replicas with
/// peaks of 65 and 23 ms; then sequential requests (1 ms apart, 0.5 ms
/// each) arrive. Both estimates decay at the same rate, so without probes
/// the 23 ms one kept every request for about 30 s.
#[test]
fn sequential_requests_after_a_load_phase_are_shared_again_at_once() {
    let p = Picker::new(Policy::PeakEwma, members(&[100.0; 2]));
    let end_of_load = Duration::from_secs(5);
    for (m, peak) in p.members().iter().zip([65, 23]) {
        m.load
            .observe_at(Duration::from_millis(peak), end_of_load, load::DEFAULT_TAU);
    }
    let mut rng = StdRng::seed_from_u64(5);
    // Per hundred requests, for the first 3 s.
    let mut counts = vec![[0u32; 2]; 30];
    for r in 0..3000u32 {
        let now = end_of_load + Duration::from_millis(u64::from(r));
        let i = p.pick_with(Pick::default(), all, &mut rng).expect("pick");
        let guard = p.members()[i].load.start();
        guard
            .load()
            .observe_at(Duration::from_micros(500), now, load::DEFAULT_TAU);
        counts[r as usize / 100][i] += 1;
    }
    eprintln!("each hundred requests per member after the load: {counts:?}");
    // The 65 ms replica is probed 25 ms in and its answer replaces its
    // peak; the 23 ms one, now behind, is probed 25 ms later.
    for hundred in &counts[1..] {
        assert!(
            hundred.iter().all(|n| (35..=65).contains(n)),
            "from the second hundred requests after the load each replica has 35-65: {counts:?}"
        );
    }
}

/// Equal replicas whose answers are now and then ten times slower (one in
/// 30: a scheduler hiccup on a shared host): each such peak puts that
/// replica behind for one probe wait, not for seconds, so sequential
/// requests stay shared over every few hundred.
#[test]
fn occasional_slow_answers_from_equal_replicas_do_not_skew_sequential_traffic() {
    let p = Picker::new(Policy::PeakEwma, members(&[100.0; 2]));
    let mut rng = StdRng::seed_from_u64(8);
    let mut counts = vec![[0u32; 2]; 20];
    for r in 0..6000u32 {
        let now = Duration::from_millis(u64::from(r));
        let i = p.pick_with(Pick::default(), all, &mut rng).expect("pick");
        let rtt = if rng.random_range(0..30) == 0 {
            5_000
        } else {
            500
        };
        let guard = p.members()[i].load.start();
        guard
            .load()
            .observe_at(Duration::from_micros(rtt), now, load::DEFAULT_TAU);
        counts[r as usize / 300][i] += 1;
    }
    eprintln!("each 300 requests per member: {counts:?}");
    for span in &counts {
        assert!(
            span.iter().all(|n| (105..=195).contains(n)),
            "each replica has 35-65 % of every 300: {counts:?}"
        );
    }
}

/// Sub-millisecond estimates of equal replicas differ by noise (0.6 and
/// 0.3 ms after their first answers on the compose stack): a tie, not a
/// reason to send one replica everything.
#[test]
fn estimates_a_fraction_of_a_millisecond_apart_are_a_tie() {
    // Observed before the picker is made, so no seed damps them.
    let ms = members(&[100.0; 2]);
    for (m, micros) in ms.iter().zip([600, 300]) {
        m.load.observe_at(
            Duration::from_micros(micros),
            Duration::ZERO,
            load::DEFAULT_TAU,
        );
    }
    let p = Picker::new(Policy::PeakEwma, ms);
    let mut rng = StdRng::seed_from_u64(7);
    let mut counts = [0u32; 2];
    for r in 0..100u64 {
        let now = Duration::from_micros(500 * r);
        let i = p.pick_with(Pick::default(), all, &mut rng).expect("pick");
        let rtt = Duration::from_micros(if i == 0 { 600 } else { 300 });
        p.members()[i]
            .load
            .start()
            .load()
            .observe_at(rtt, now, load::DEFAULT_TAU);
        counts[i] += 1;
    }
    assert!(
        counts.iter().all(|c| (35..=65).contains(c)),
        "100 sequential requests: {counts:?}"
    );
}

/// A member ten times slower, stale, is probed once and then avoided
/// again until its estimate is stale once more. (The first seconds are left
/// out: every member starts at the seeded 10 ms and the fast ones' estimates
/// decay from it over τ.)
#[test]
fn a_stale_slow_member_is_probed_about_once_per_stale_period() {
    let p = Picker::new(Policy::PeakEwma, members(&[100.0; 3]));
    let mut rng = StdRng::seed_from_u64(6);
    let mut slow = 0;
    let (settle, total) = (20_000u32, 10_000u32);
    for r in 0..settle + total {
        let now = Duration::from_millis(u64::from(r));
        let i = p.pick_with(Pick::default(), all, &mut rng).expect("pick");
        let rtt = if i == 1 { 10_000 } else { 1_000 };
        let guard = p.members()[i].load.start();
        guard
            .load()
            .observe_at(Duration::from_micros(rtt), now, load::DEFAULT_TAU);
        slow += usize::from(i == 1 && r >= settle);
    }
    // 10 s of virtual time at 1,000 requests/s: about one probe per second.
    eprintln!("the slow member got {slow} of {total}");
    assert!(
        (5..=15).contains(&slow),
        "the slow member got {slow} of {total}"
    );
}

#[test]
fn a_new_member_under_peak_ewma_is_not_flooded() {
    let mut ms = members(&[100.0; 3]);
    for (i, m) in ms.iter().enumerate() {
        m.load.observe_at(
            Duration::from_millis(20 + i as u64),
            Duration::ZERO,
            load::DEFAULT_TAU,
        );
    }
    ms.push(Member {
        id: Arc::from("new"),
        weight: 100.0,
        load: Arc::new(Load::new()),
    });
    let p = Picker::new(Policy::PeakEwma, ms);
    assert!(
        p.members()[3].load.ewma_ns() > 0.0,
        "the newcomer is seeded with the median"
    );
    let mut rng = StdRng::seed_from_u64(9);
    let mut guards = Vec::new();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for _ in 0..400 {
        let i = p.pick_with(Pick::default(), all, &mut rng).expect("pick");
        *counts.entry(i).or_default() += 1;
        guards.push(p.members()[i].load.start()); // nothing finishes: load builds up
    }
    let share = counts.get(&3).copied().unwrap_or(0) as f64 / 400.0;
    assert!(
        share < 0.4,
        "the newcomer took {:.0}% of picks",
        share * 100.0
    );
}

#[test]
fn policy_names_round_trip() {
    for p in Policy::ALL {
        assert_eq!(p.name().parse::<Policy>(), Ok(p));
    }
    assert!("fastest".parse::<Policy>().is_err());
    assert_eq!(Policy::default(), Policy::PeakEwma);
}

#[test]
fn slow_start_and_zones_shape_weights() {
    let s = SlowStart {
        window: Duration::from_secs(60),
        min_share: 0.1,
    };
    assert_eq!(slow_start_factor(&s, Duration::ZERO), 0.1);
    assert!((slow_start_factor(&s, Duration::from_secs(30)) - 0.5).abs() < 1e-9);
    assert_eq!(slow_start_factor(&s, Duration::from_secs(61)), 1.0);
    let f = zone_factors("a", &["a", "b", "a", "b"]);
    assert_eq!(f, [1.0, 0.05, 1.0, 0.05]);
    assert_eq!(
        zone_factors("c", &["a", "b"]),
        [1.0, 1.0],
        "no local members: all count"
    );
    assert_eq!(effective_weight(100, 0.5, 0.05), 2.5);
}
