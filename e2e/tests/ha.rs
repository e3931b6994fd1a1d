//! The watch checker (issue 18, item 7), Jepsen-style, on the highly
//! available stack (`docker-compose.ha.yml`, project `switchyarde2eha`):
//!
//! - writers register unique instances (and deregister some) through random
//!   replicas, recording each acknowledged write's revision;
//! - eight watchers resume at random across the three replicas, recording
//!   every message;
//! - a recorder follows the instance keys straight on etcd: the ground truth;
//! - GETs go through the gateway all the while;
//! - faults every ~15 s: the etcd leader killed, a registry replica SIGKILLed,
//!   a replica paused past its session TTL, an etcd member cut off its
//!   network, a replica cut off etcd while etcd compacts past it (and
//!   watchers are away): it must list etcd again (its log says so).
//!
//! Then, offline: per watcher, one epoch; revisions never going back; no
//! event twice; between resets, the deltas are exactly etcd's changes in that
//! range, and the view at every position is etcd's state there; each reset
//! equals etcd's state at its revision; the final views equal etcd's final
//! state; every acknowledged write is in etcd's history; no GET failed. The
//! recorder's own log is checked for etcd's duplicate events (dropped by
//! the follower, counted). `SWITCHYARD_HA_CHECK_SECS` sets the length (90
//! in `.ci/run`; 180 for the longer run).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};
use switchyard_time::sync::lock;

use rand::{Rng, seq::IndexedRandom};
use switchyard_e2e::{
    compose::{Compose, run},
    load::{self, Call},
};
use switchyard_etcd::{Client, Follower, Update, pb as etcdpb};
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use switchyard_tls::{ClientTls, Identity};
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::{Channel, Endpoint};

const SERVICE: &str = "ha-check";
const PREFIX: &str = "/switchyard/v1/instances/ha-check/";
const TOKEN: &str = "dev-register-token";
const REPLICAS: [(&str, u16); 3] = [
    ("registry1", 17100),
    ("registry2", 17200),
    ("registry3", 17300),
];
const ETCD: [(&str, u16); 3] = [("etcd1", 17379), ("etcd2", 17380), ("etcd3", 17381)];
const SESSION_TTL: u32 = 6;
/// Events each replica keeps for resumes: small, so that a watcher away for
/// long resumes with a reset snapshot, which is checked too.
const HISTORY: usize = 100;
const WATCHERS: usize = 8;
/// The checker talks to the replicas as the operator: gRPC is mutual TLS
/// in the stack, and the writers register services of every name.
static OPERATOR_TLS: std::sync::OnceLock<ClientTls> = std::sync::OnceLock::new();
const WRITERS: usize = 3;

fn main() {
    let secs: u64 = std::env::var("SWITCHYARD_HA_CHECK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let compose = Compose::ha(SESSION_TTL, HISTORY);
    let tls = ClientTls::load(&compose.cert_files("operator")).expect("the operator's certificate");
    OPERATOR_TLS.set(tls).expect("set once");
    switchyard_e2e::compose::require_images(&[
        "registry", "balancer", "gateway", "hello", "echo", "etcd",
    ]);
    println!("bringing the HA stack up (project {})", compose.project);
    compose.dc(&["down", "--remove-orphans", "-v"]);
    compose.dc(&["up", "-d"]);
    compose.wait_healthy(Duration::from_secs(240));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(check(&compose, Duration::from_secs(secs)))
    }));
    let _ = std::panic::catch_unwind(|| compose.dc(&["down", "--remove-orphans", "-v"]));
    match outcome {
        Ok(violations) if violations.is_empty() => println!("test the watch checker ... ok"),
        Ok(violations) => {
            for v in &violations {
                println!("VIOLATION: {v}");
            }
            println!(
                "test the watch checker ... FAILED ({} violations)",
                violations.len()
            );
            std::process::exit(1);
        }
        Err(_) => {
            println!("test the watch checker ... FAILED (panicked)");
            std::process::exit(1);
        }
    }
}

// --- what is recorded ---

/// One change of one instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    revision: u64,
    id: String,
    put: bool,
}

#[derive(Debug, Clone)]
enum Body {
    Snapshot { reset: bool, ids: BTreeSet<String> },
    Delta(Vec<Change>),
    Progress,
}

#[derive(Debug, Clone)]
struct Message {
    body: Body,
    epoch: String,
    revision: u64,
}

/// One connection of a watcher.
#[derive(Debug, Clone)]
struct Session {
    replica: &'static str,
    since: Option<(String, u64)>,
    messages: Vec<Message>,
}

/// The recorder's log: a list at a revision, then changes.
#[derive(Debug, Default)]
struct Truth {
    /// (revision, state) of each list the recorder made.
    resets: Vec<(u64, BTreeSet<String>)>,
    /// Changes that changed something (a put of an unchanged value, as an
    /// adoption makes, is not one: the registry emits nothing for it).
    changes: Vec<Change>,
    /// Everything up to here is recorded.
    revision: u64,
    /// Every put seen, for acknowledged writes: id -> first revision.
    first_put: HashMap<String, u64>,
    /// Duplicate (key, mod_revision) pairs the recorder saw (none pass the
    /// follower: it drops them and counts).
    duplicates: u64,
}

// === impl Truth ===

impl Truth {
    fn apply(&mut self, update: Update, values: &mut HashMap<String, Vec<u8>>) {
        match update {
            Update::Reset { revision, kvs, .. } => {
                values.clear();
                for kv in kvs {
                    values.insert(id_of(&kv.key), kv.value);
                }
                let rev = as_u64(revision);
                self.resets.push((rev, values.keys().cloned().collect()));
                self.revision = self.revision.max(rev);
            }
            Update::Events { revision, events } => {
                for e in events {
                    let Some(kv) = e.kv else { continue };
                    let id = id_of(&kv.key);
                    let rev = as_u64(kv.mod_revision);
                    let deleted = e.r#type == etcdpb::event::EventType::Delete as i32;
                    let changed = if deleted {
                        values.remove(&id).is_some()
                    } else {
                        self.first_put.entry(id.clone()).or_insert(rev);
                        values.insert(id.clone(), kv.value.clone()).as_ref() != Some(&kv.value)
                    };
                    if changed {
                        self.changes.push(Change {
                            revision: rev,
                            id,
                            put: !deleted,
                        });
                    }
                }
                self.revision = self.revision.max(as_u64(revision));
            }
        }
    }

    /// etcd's state at `revision` (from the last list at or before it).
    fn state_at(&self, revision: u64) -> Option<BTreeSet<String>> {
        let (from, base) = self.resets.iter().rev().find(|(r, _)| *r <= revision)?;
        let mut state = base.clone();
        for c in self
            .changes
            .iter()
            .filter(|c| c.revision > *from && c.revision <= revision)
        {
            if c.put {
                state.insert(c.id.clone());
            } else {
                state.remove(&c.id);
            }
        }
        Some(state)
    }

    /// Changes in (after, upto], sorted.
    fn between(&self, after: u64, upto: u64) -> Vec<Change> {
        let mut v: Vec<Change> = self
            .changes
            .iter()
            .filter(|c| c.revision > after && c.revision <= upto)
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Whether the recorder itself listed again inside (after, upto]: its
    /// changes there are not all known.
    fn gap_in(&self, after: u64, upto: u64) -> bool {
        self.resets
            .iter()
            .skip(1)
            .any(|(r, _)| *r > after && *r <= upto)
    }
}

fn id_of(key: &[u8]) -> String {
    String::from_utf8_lossy(key.strip_prefix(PREFIX.as_bytes()).unwrap_or(key)).into_owned()
}

fn as_u64(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

// --- the run ---

async fn check(compose: &Compose, length: Duration) -> Vec<String> {
    let endpoints: Vec<String> = ETCD
        .iter()
        .map(|(_, p)| format!("https://127.0.0.1:{p}"))
        .collect();
    // etcd takes mutual TLS from the stack's CA: the checker is the operator.
    let etcd = Client::with_tls(&endpoints, OPERATOR_TLS.get()).expect("etcd client");

    // The recorder.
    let truth = Arc::new(Mutex::new(Truth::default()));
    let recorder_stop = Arc::new(tokio::sync::Notify::new());
    let recorder = {
        let (truth, stop) = (truth.clone(), recorder_stop.clone());
        let mut follower = Follower::new(etcd.clone(), PREFIX.as_bytes());
        tokio::spawn(async move {
            let mut values = HashMap::new();
            loop {
                // A second without an update: ask etcd how far the watch
                // is, so the recorder passes revisions that changed
                // nothing under its prefix (etcd's own progress messages
                // come every 10 minutes).
                let update = tokio::select! {
                    () = stop.notified() => break,
                    u = follower.next() => Some(u),
                    () = sleep(Duration::from_secs(1)) => None,
                };
                match update {
                    Some(Ok(u)) => lock(&truth).apply(u, &mut values),
                    Some(Err(_)) => sleep(Duration::from_millis(200)).await,
                    None => {
                        let _ = timeout(Duration::from_secs(2), follower.request_progress()).await;
                    }
                }
                let mut truth = lock(&truth);
                let seen = u64::try_from(follower.revision()).unwrap_or(0);
                truth.revision = truth.revision.max(seen);
            }
            lock(&truth).duplicates = follower.dropped();
        })
    };
    let started = Instant::now();
    while lock(&truth).resets.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the recorder listed etcd"
        );
        sleep(Duration::from_millis(100)).await;
    }

    // Item 6: an operator's override made before the faults must hold after.
    set_durable_override().await;

    let deadline = Instant::now() + length;
    let gets = tokio::spawn(load::run(
        Call::Get(format!("{}/hello/ha", compose.gateway())),
        50,
        length,
    ));
    let acks = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, deadline, acks.clone())))
        .collect();
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|n| tokio::spawn(watcher(deadline, n < 3)))
        .collect();
    let (faults, relisting) = faults(compose, &etcd, length).await;

    let mut histories = Vec::new();
    for w in watchers {
        histories.push(w.await.expect("watcher"));
    }
    let mut write_errors = 0;
    for w in writers {
        write_errors += w.await.expect("writer");
    }
    let gets = gets.await.expect("gets");

    // Every fault healed: each watcher resumes once more and reads until
    // it has reached what etcd holds now.
    heal(compose);
    compose.wait_healthy(Duration::from_secs(120));
    let head = timeout(Duration::from_secs(10), etcd.status())
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|s| s.header)
        .map_or(0, |h| as_u64(h.revision));
    // Bounded: a recorder that never gets there is said as a violation
    // below (its revision short of the head), not a run that hangs.
    let waited = Instant::now();
    while lock(&truth).revision < head && waited.elapsed() < Duration::from_secs(60) {
        sleep(Duration::from_millis(100)).await;
    }
    for history in &mut histories {
        let since = last_position(history);
        let session = finish(since, head).await;
        history.push(session);
    }
    recorder_stop.notify_one();
    let _ = recorder.await;
    let durable = durable_override_holds().await;

    let (mut relisted, mut not_relisted) = (Vec::new(), Vec::new());
    for name in relisting {
        // The follower's relist after compaction (and the reset of every
        // watch it implies) really ran, on the replica that was away, at
        // the latest 30 s after the run. (Its new watch may wait on the old
        // connection's TCP retransmissions, seconds apart after a cut of
        // six; a run whose watchers all read from other replicas ended
        // before that once, with its log not yet saying so.)
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = compose.dc(&["logs", "--no-color", name]);
        while !log.contains("etcd listed again") && Instant::now() < deadline {
            sleep(Duration::from_millis(500)).await;
            log = compose.dc(&["logs", "--no-color", name]);
        }
        if log.contains("etcd listed again") {
            relisted.push(name);
        } else {
            not_relisted.push(format!(
                "{name} was cut off while etcd compacted past it but never listed etcd again"
            ));
        }
    }

    let truth = lock(&truth);
    let acks = lock(&acks).clone();
    let mut violations = Vec::new();
    if truth.revision < head {
        violations.push(format!(
            "the recorder followed etcd up to revision {} only, not to its head {head}, within 60 s",
            truth.revision
        ));
    }
    let (mut messages, mut resets, mut sessions) = (0, 0, 0);
    for (n, history) in histories.iter().enumerate() {
        sessions += history.len();
        messages += history.iter().map(|s| s.messages.len()).sum::<usize>();
        resets += history
            .iter()
            .flat_map(|s| &s.messages)
            .filter(|m| matches!(m.body, Body::Snapshot { reset: true, .. }))
            .count();
        check_watcher(n, history, &truth, head, &mut violations);
    }
    for (id, revision) in &acks {
        match truth.first_put.get(id) {
            Some(r) if r <= revision => {}
            Some(r) => violations.push(format!(
                "write of {id} acknowledged at revision {revision} but etcd has it at {r}"
            )),
            None => violations.push(format!(
                "write of {id} acknowledged at revision {revision} is not in etcd's history"
            )),
        }
    }
    if let Err(e) = durable {
        violations.push(e);
    }
    violations.append(&mut not_relisted);
    if let Some(fault) = faults.iter().find(|f| f.contains(NOT_COMPACTED)) {
        violations.push(format!("a fault was not injected: {fault}"));
    }
    if gets.failed > 0 {
        violations.push(format!(
            "{} of {} GETs through the gateway failed: {:?}",
            gets.failed, gets.sent, gets.by_status
        ));
    }
    println!(
        "{:.0} s: {} writes acknowledged ({write_errors} refused or unanswered, retried elsewhere), \
         {} changes in etcd up to revision {}, {WATCHERS} watchers: {sessions} sessions, {messages} messages, \
         {resets} reset snapshots; faults: {}; listed etcd again after compaction: {}; recorder: {} lists, \
         {} duplicate events from etcd dropped; GETs {} sent, {} failed",
        length.as_secs_f64(),
        acks.len(),
        truth.changes.len(),
        truth.revision,
        faults.join(", "),
        relisted.join(", "),
        truth.resets.len(),
        truth.duplicates,
        gets.sent,
        gets.failed,
    );
    violations
}

/// Checks one watcher's sessions against etcd's history (`truth`); its last
/// session was sent to read until `head`, etcd's revision once every fault
/// had healed (the registry may write after that: a lease adopted or expired
/// once its replica is back, so etcd's final revision is not the bar).
fn check_watcher(n: usize, history: &[Session], truth: &Truth, head: u64, out: &mut Vec<String>) {
    let mut say = |what: String| out.push(format!("watcher {n}: {what}"));
    let mut epoch: Option<&str> = None;
    let mut view: Option<BTreeSet<String>> = None;
    let (mut last, mut start) = (0u64, 0u64);
    let mut got: Vec<Change> = Vec::new();
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    for session in history {
        for (i, m) in session.messages.iter().enumerate() {
            match epoch {
                None => epoch = Some(&m.epoch),
                Some(e) if e != m.epoch => {
                    say(format!(
                        "epoch changed from {e} to {} on {}",
                        m.epoch, session.replica
                    ));
                }
                _ => {}
            }
            match &m.body {
                Body::Snapshot { reset, ids } => {
                    if i == 0 && session.since.is_some() && !reset {
                        say(format!(
                            "a resume on {} began with a snapshot not marked reset",
                            session.replica
                        ));
                    }
                    if i > 0 && !reset {
                        say("a snapshot inside a stream not marked reset".into());
                    }
                    if m.revision < last && view.is_some() && !*reset {
                        say(format!("snapshot at {} before position {last}", m.revision));
                    }
                    match truth.state_at(m.revision) {
                        Some(state) if state == *ids => {}
                        Some(state) => say(format!(
                            "snapshot at {} on {}: missing {:?}, extra {:?}",
                            m.revision,
                            session.replica,
                            state.difference(ids).collect::<Vec<_>>(),
                            ids.difference(&state).collect::<Vec<_>>()
                        )),
                        None => {}
                    }
                    view = Some(ids.clone());
                    (last, start) = (m.revision, m.revision);
                    got.clear();
                    seen.clear();
                }
                Body::Delta(events) => {
                    let Some(v) = view.as_mut() else {
                        say("a delta before any snapshot".into());
                        continue;
                    };
                    let mut previous = 0;
                    for (k, e) in events.iter().enumerate() {
                        if e.revision <= last || (k > 0 && e.revision < previous) {
                            say(format!(
                                "event {} of {} at revision {} after position {last} on {}",
                                if e.put { "put" } else { "delete" },
                                e.id,
                                e.revision,
                                session.replica
                            ));
                        }
                        if !seen.insert((e.id.clone(), e.revision)) {
                            say(format!("event of {} at {} twice", e.id, e.revision));
                        }
                        previous = e.revision;
                        if e.put {
                            v.insert(e.id.clone());
                        } else {
                            v.remove(&e.id);
                        }
                        got.push(e.clone());
                    }
                    last = last.max(m.revision).max(previous);
                    compare(&mut say, truth, start, last, &got, v, session.replica);
                }
                Body::Progress => {
                    if m.revision < last {
                        say(format!("progress at {} after position {last}", m.revision));
                    }
                    last = last.max(m.revision);
                    if let Some(v) = view.as_ref() {
                        compare(&mut say, truth, start, last, &got, v, session.replica);
                    }
                }
            }
        }
    }
    if let Some(v) = view {
        if let Some(state) = truth.state_at(last) {
            if v != state && last >= head {
                say(format!(
                    "final view differs from etcd's: missing {:?}, extra {:?}",
                    state.difference(&v).collect::<Vec<_>>(),
                    v.difference(&state).collect::<Vec<_>>()
                ));
            }
        }
        if last < head {
            say(format!(
                "never caught up: at {last}, etcd at {head} when every fault had healed"
            ));
        }
    }
}

/// The changes a watcher got since its last snapshot must be exactly etcd's
/// in that range, and its view etcd's state at its position.
fn compare(
    say: &mut impl FnMut(String),
    truth: &Truth,
    start: u64,
    last: u64,
    got: &[Change],
    view: &BTreeSet<String>,
    replica: &str,
) {
    if truth.gap_in(start, last) {
        return;
    }
    let mut mine = got.to_vec();
    mine.sort();
    let want = truth.between(start, last);
    if mine != want {
        let missing: Vec<_> = want.iter().filter(|c| !mine.contains(c)).take(5).collect();
        let extra: Vec<_> = mine.iter().filter(|c| !want.contains(c)).take(5).collect();
        say(format!(
            "deltas in ({start}, {last}] on {replica} differ from etcd's changes: missing {missing:?}, extra {extra:?}"
        ));
    }
    if let Some(state) = truth.state_at(last) {
        if *view != state {
            say(format!(
                "view at {last} on {replica}: missing {:?}, extra {:?}",
                state.difference(view).take(5).collect::<Vec<_>>(),
                view.difference(&state).take(5).collect::<Vec<_>>()
            ));
        }
    }
}

fn last_position(history: &[Session]) -> Option<(String, u64)> {
    history
        .iter()
        .rev()
        .flat_map(|s| s.messages.iter().rev())
        .next()
        .map(|m| (m.epoch.clone(), m.revision))
}

// --- durability of an operator's override ---

const DURABLE: &str = "durable";
/// Its own service: an override's change is a registry event with no etcd
/// instance record behind it, which the watchers' checks would count.
const DURABLE_SERVICE: &str = "ha-durable";

fn operator<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = "Bearer dev-operator-token".parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

fn durable_spec() -> pb::InstanceSpec {
    pb::InstanceSpec {
        service: DURABLE_SERVICE.into(),
        instance_id: DURABLE.into(),
        address: "10.9.9.9:80".into(),
        protocol: pb::Protocol::Http1 as i32,
        ..Default::default()
    }
}

/// Registers the instance `durable` and takes it out of service.
async fn set_durable_override() {
    let mut c = connect(REPLICAS[0].1).await.expect("registry1 answers");
    c.register(authed(pb::RegisterRequest {
        lease_id: 0,
        ttl_seconds: 300,
        instances: vec![durable_spec()],
    }))
    .await
    .expect("register durable");
    c.set_state(operator(pb::SetStateRequest {
        service: DURABLE_SERVICE.into(),
        instance_id: DURABLE.into(),
        state: pb::State::OutOfService as i32,
        ..Default::default()
    }))
    .await
    .expect("set_state durable");
}

/// After every fault: `durable` (registered again if its lease went with
/// a replica) is still out of service, on every replica.
async fn durable_override_holds() -> Result<(), String> {
    let mut c = connect(REPLICAS[1].1)
        .await
        .ok_or("registry2 does not answer after the run")?;
    if durable_state(&mut c).await?.is_none() {
        c.register(authed(pb::RegisterRequest {
            lease_id: 0,
            ttl_seconds: 300,
            instances: vec![durable_spec()],
        }))
        .await
        .map_err(|e| format!("registering durable again: {e}"))?;
    }
    // Each replica within 10 s: a registration made again just above
    // reaches the others through etcd's watch, and a replica that was cut
    // off may still be listing etcd again.
    for (name, port) in REPLICAS {
        let mut c = connect(port)
            .await
            .ok_or(format!("{name} does not answer"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = durable_state(&mut c)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            if state == Some(pb::State::OutOfService) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the operator's override did not survive the faults: durable is {state:?} on {name}"
                ));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The durable instance's state as a replica lists it (`None`: not
/// listed).
async fn durable_state(c: &mut RegistryClient<Channel>) -> Result<Option<pb::State>, String> {
    let listed = c
        .get_service(pb::GetServiceRequest {
            service: DURABLE_SERVICE.into(),
        })
        .await
        .map_err(|e| format!("get_service: {e}"))?
        .into_inner();
    Ok(listed
        .instances
        .iter()
        .find(|i| i.spec.as_ref().is_some_and(|s| s.instance_id == DURABLE))
        .map(|i| i.state()))
}

// --- the actors ---

async fn connect(port: u16) -> Option<RegistryClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3));
    let tls = OPERATOR_TLS.get();
    let connect = switchyard_tls::channel(endpoint, tls, Some(Identity::Registry));
    let channel = timeout(Duration::from_secs(2), connect).await.ok()?.ok()?;
    Some(RegistryClient::new(channel))
}

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {TOKEN}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// Registers unique instances through random replicas, deregistering one in
/// three again; returns how many calls failed (and went elsewhere).
async fn writer(w: usize, deadline: Instant, acks: Arc<Mutex<Vec<(String, u64)>>>) -> u64 {
    let mut errors = 0;
    let mut mine: Vec<(String, u64)> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        sleep(Duration::from_millis(300)).await;
        let port = REPLICAS.choose(&mut rand::rng()).map_or(17100, |r| r.1);
        let Some(mut c) = connect(port).await else {
            errors += 1;
            continue;
        };
        let deregister = n % 3 == 2 && !mine.is_empty();
        if deregister {
            let (id, lease_id) = mine.remove(0);
            let req = pb::DeregisterRequest {
                service: SERVICE.into(),
                instance_id: id,
                lease_id,
            };
            match c.deregister(authed(req)).await {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(_) => errors += 1,
            }
        } else {
            let id = format!("w{w}-{n}");
            let req = pb::RegisterRequest {
                lease_id: 0,
                ttl_seconds: 120,
                instances: vec![pb::InstanceSpec {
                    service: SERVICE.into(),
                    instance_id: id.clone(),
                    address: format!("10.9.{w}.{}:80", n % 250 + 1),
                    protocol: pb::Protocol::Http1 as i32,
                    ..Default::default()
                }],
            };
            match c.register(authed(req)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    let revision = r.position.map_or(0, |p| p.revision);
                    lock(&acks).push((id.clone(), revision));
                    mine.push((id, r.lease_id));
                }
                Err(_) => errors += 1,
            }
        }
        n += 1;
    }
    errors
}

/// Watches through random replicas for 1-4 s at a time, resuming from its
/// last position, away up to 1 s in between (a `long_away` watcher 3 to
/// 15 s: past the replicas' history, so it gets resets).
async fn watcher(deadline: Instant, long_away: bool) -> Vec<Session> {
    let mut history = Vec::new();
    while Instant::now() < deadline {
        let (replica, port) = *REPLICAS.choose(&mut rand::rng()).unwrap_or(&REPLICAS[0]);
        let since = last_position(&history);
        let stay = Duration::from_millis(rand::rng().random_range(1000..4000));
        let session = watch_once(replica, port, since, Instant::now() + stay, None).await;
        if let Some(s) = session {
            history.push(s);
        }
        let away = if long_away {
            rand::rng().random_range(3000..15000)
        } else {
            rand::rng().random_range(0..1000)
        };
        let away = Duration::from_millis(away);
        sleep(away).await;
    }
    history
}

/// One watch session until `until`, or until its position reaches `upto`.
async fn watch_once(
    replica: &'static str,
    port: u16,
    since: Option<(String, u64)>,
    until: Instant,
    upto: Option<u64>,
) -> Option<Session> {
    let mut c = connect(port).await?;
    let req = pb::WatchRequest {
        services: vec![SERVICE.into()],
        since: since
            .clone()
            .map(|(epoch, revision)| pb::WatchPosition { epoch, revision }),
    };
    let mut stream = timeout(Duration::from_secs(2), c.watch(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    let mut session = Session {
        replica,
        since,
        messages: Vec::new(),
    };
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(Ok(Some(m))) = timeout(left.min(Duration::from_secs(3)), stream.message()).await
        else {
            break;
        };
        let position = m.position.clone().unwrap_or_default();
        let body = match m.kind {
            Some(pb::watch_response::Kind::Snapshot(s)) => Body::Snapshot {
                reset: s.reset,
                ids: s
                    .instances
                    .iter()
                    .filter_map(|i| i.spec.as_ref().map(|s| s.instance_id.clone()))
                    .collect(),
            },
            Some(pb::watch_response::Kind::Delta(d)) => Body::Delta(
                d.events
                    .iter()
                    .map(|e| Change {
                        revision: e.revision,
                        id: e
                            .instance
                            .as_ref()
                            .and_then(|i| i.spec.as_ref())
                            .map(|s| s.instance_id.clone())
                            .unwrap_or_default(),
                        put: e.kind == pb::event::Kind::Put as i32,
                    })
                    .collect(),
            ),
            _ => Body::Progress,
        };
        session.messages.push(Message {
            body,
            epoch: position.epoch,
            revision: position.revision,
        });
        if upto.is_some_and(|u| position.revision >= u) {
            break;
        }
    }
    Some(session)
}

/// The last session of a watcher: resume, read until etcd's head.
async fn finish(since: Option<(String, u64)>, head: u64) -> Session {
    for _ in 0..10 {
        let (replica, port) = *REPLICAS.choose(&mut rand::rng()).unwrap_or(&REPLICAS[0]);
        let until = Instant::now() + Duration::from_secs(20);
        if let Some(s) = watch_once(replica, port, since.clone(), until, Some(head)).await {
            if s.messages.last().is_some_and(|m| m.revision >= head) {
                return s;
            }
        }
    }
    Session {
        replica: "none",
        since,
        messages: Vec::new(),
    }
}

// --- faults ---

/// Runs the faults in turn, one every `length / 6`, each healed before the
/// next; what was done.
/// Injects the faults; returns what was done and the replicas that must
/// have listed etcd again (cut off while etcd compacted past them).
async fn faults(
    compose: &Compose,
    etcd: &Client,
    length: Duration,
) -> (Vec<String>, Vec<&'static str>) {
    let step = length / 6;
    let mut done = Vec::new();
    let mut relisting = Vec::new();
    let kinds = [
        "kill the etcd leader",
        "SIGKILL a registry replica",
        "pause a registry replica past its session TTL",
        "cut an etcd member off the network",
        "cut a registry replica off etcd and compact while it and watchers are away",
    ];
    for (i, kind) in kinds.iter().enumerate() {
        sleep(step / 2).await;
        let what = match i {
            0 | 1 => {
                let name = if i == 0 {
                    leader().await.unwrap_or("etcd1")
                } else {
                    REPLICAS.choose(&mut rand::rng()).unwrap_or(&REPLICAS[0]).0
                };
                let (kill, start): (&[&str], &[&str]) = (&["kill", "-s", "KILL"], &["start"]);
                blocking_fault(compose, name, kill, start, Duration::from_secs(5)).await;
                format!("{kind} ({name})")
            }
            2 => {
                let (name, _) = *REPLICAS.choose(&mut rand::rng()).unwrap_or(&REPLICAS[0]);
                let hold = Duration::from_secs(u64::from(SESSION_TTL) + 2);
                blocking_fault(compose, name, &["pause"], &["unpause"], hold).await;
                format!("{kind} ({name}, {} s)", hold.as_secs())
            }
            3 => {
                let (name, _) = *ETCD.choose(&mut rand::rng()).unwrap_or(&ETCD[0]);
                let cut = Cut::start(compose, name).await;
                sleep(Duration::from_secs(5)).await;
                cut.heal().await;
                format!("{kind} ({name})")
            }
            _ => {
                // Away long enough to be fenced (half its session TTL), so
                // it watches again from its last revision after etcd
                // compacted past it: it must list again and reset its
                // watchers (checked in its log after the run).
                let (name, _) = *REPLICAS.choose(&mut rand::rng()).unwrap_or(&REPLICAS[0]);
                let cut = Cut::start(compose, name).await;
                sleep(Duration::from_secs(u64::from(SESSION_TTL) / 2 + 2)).await;
                let head = compact_now(etcd).await;
                sleep(Duration::from_secs(1)).await;
                cut.heal().await;
                // A replica has to list again only if etcd did compact
                // while it was away; a compaction etcd never took is a
                // fault not injected, said as a violation after the run.
                match head {
                    Some(head) => {
                        relisting.push(name);
                        format!("{kind} ({name}, at {head})")
                    }
                    None => format!("{kind} ({name}, {NOT_COMPACTED})"),
                }
            }
        };
        println!("fault: {what}");
        done.push(what);
        sleep(step / 2).await;
    }
    (done, relisting)
}

/// What a compaction fault says when etcd never took the compaction.
const NOT_COMPACTED: &str = "etcd refused every compaction";

/// Moves etcd's history on (a key outside the registry's prefix will do:
/// the revision is etcd's) and compacts at its head; the revision, or
/// `None` when etcd refused for 10 s. A member cut off a moment before may
/// leave this client's first calls unanswered (a clean-clone CI run saw
/// its one status call fail, and the replica was then expected to list
/// again after a compaction that never happened), so it is tried again.
async fn compact_now(etcd: &Client) -> Option<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = etcd.put(b"/ha-check/while-away", b"x", 0).await;
        let head = etcd.status().await.ok().and_then(|s| s.header);
        if let Some(head) = head
            && etcd.compact(head.revision).await.is_ok()
        {
            return Some(head.revision);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// A container cut off the control network (where etcd and the replicas
/// talk) until [`heal`](Cut::heal) connects it again under its name.
struct Cut {
    network: String,
    id: String,
    alias: String,
}

impl Cut {
    async fn start(compose: &Compose, service: &str) -> Self {
        let cut = Self {
            network: compose.network("control"),
            id: container(compose, service),
            alias: service.to_string(),
        };
        let (n, id) = (cut.network.clone(), cut.id.clone());
        let _ =
            tokio::task::spawn_blocking(move || run("docker", &["network", "disconnect", &n, &id]))
                .await;
        cut
    }

    async fn heal(self) {
        let _ = tokio::task::spawn_blocking(move || {
            run(
                "docker",
                &[
                    "network",
                    "connect",
                    "--alias",
                    &self.alias,
                    &self.network,
                    &self.id,
                ],
            )
        })
        .await;
    }
}

/// The member that is the leader now.
async fn leader() -> Option<&'static str> {
    for (name, port) in ETCD {
        let Ok(c) = Client::with_tls(&[format!("https://127.0.0.1:{port}")], OPERATOR_TLS.get())
        else {
            continue;
        };
        if let Ok(Ok(s)) = timeout(Duration::from_secs(2), c.status()).await {
            if s.header.is_some_and(|h| h.member_id == s.leader) {
                return Some(name);
            }
        }
    }
    None
}

fn container(compose: &Compose, service: &str) -> String {
    compose
        .containers(service)
        .first()
        .cloned()
        .unwrap_or_default()
}

/// `docker <break> <id>`, then after `hold`, `docker <heal> <id>`.
async fn blocking_fault(
    compose: &Compose,
    service: &str,
    brk: &[&str],
    heal: &[&str],
    hold: Duration,
) {
    let id = container(compose, service);
    let args: Vec<String> = brk
        .iter()
        .map(|s| s.to_string())
        .chain([id.clone()])
        .collect();
    let _ = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("docker", &args)
    })
    .await;
    sleep(hold).await;
    let args: Vec<String> = heal.iter().map(|s| s.to_string()).chain([id]).collect();
    let _ = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("docker", &args)
    })
    .await;
}

/// Whatever a fault left behind: every container running, none paused.
fn heal(compose: &Compose) {
    for (service, _) in REPLICAS.iter().chain(ETCD.iter()) {
        let id = container(compose, service);
        let (_, state) = run("docker", &["inspect", "-f", "{{.State.Status}}", &id]);
        match state.trim() {
            "paused" => {
                let _ = run("docker", &["unpause", &id]);
            }
            "running" => {}
            _ => {
                let _ = run("docker", &["start", &id]);
            }
        }
    }
}

// --- small things ---
