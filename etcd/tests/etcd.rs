//! The client against real etcd processes (Debian's etcd-server 3.4): KV and
//! transactions, watches with fragments and compaction, many leases on one
//! keep-alive stream, and a member killed under a client of three.

use std::time::{Duration, Instant};

use switchyard_etcd::{Error, MAX_TXN_OPS, WatchMessage, pb, prefix_end, testing::Cluster};

fn put_op(key: &str, value: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        })),
    }
}

/// A compare-and-swap on a key's mod revision, as the registry's writes do.
fn cas(key: &str, mod_revision: i64, value: &str) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(mod_revision)),
            ..Default::default()
        }],
        success: vec![put_op(key, value.as_bytes().to_vec())],
        failure: Vec::new(),
    }
}

#[tokio::test]
async fn kv_transactions_and_the_operation_limit() {
    let etcd = Cluster::start(1, &[]).await;
    let client = etcd.client();
    let put = client.put(b"/t/a", b"1", 0).await.expect("put");
    let rev = put.header.expect("header").revision;
    client.put(b"/t/b", b"2", 0).await.expect("put");
    client.put(b"/u/c", b"3", 0).await.expect("put");
    let listed = client.get_prefix(b"/t/").await.expect("range");
    let keys: Vec<_> = listed.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"/t/a".to_vec(), b"/t/b".to_vec()]);

    // A compare-and-swap succeeds once, then fails on the stale revision.
    assert!(
        client
            .txn(cas("/t/a", rev, "x"))
            .await
            .expect("txn")
            .succeeded
    );
    assert!(
        !client
            .txn(cas("/t/a", rev, "y"))
            .await
            .expect("txn")
            .succeeded
    );
    let a = client.range(b"/t/a", b"", 0).await.expect("get");
    assert_eq!(a.kvs[0].value, b"x");

    // 128 operations pass; 129 are refused here with the limit named, and
    // nothing of them is written.
    let ops = |n: usize| pb::TxnRequest {
        success: (0..n)
            .map(|i| put_op(&format!("/many/{i}"), vec![1]))
            .collect(),
        ..Default::default()
    };
    client.txn(ops(MAX_TXN_OPS)).await.expect("128 operations");
    client
        .delete(b"/many/", &prefix_end(b"/many/"))
        .await
        .expect("delete");
    let refused = client.txn(ops(MAX_TXN_OPS + 1)).await;
    assert!(
        matches!(refused, Err(Error::TooManyOps(129))),
        "{refused:?}"
    );
    assert!(
        refused
            .expect_err("refused")
            .to_string()
            .contains("at most 128")
    );
    assert_eq!(
        client.get_prefix(b"/many/").await.expect("range").kvs.len(),
        0
    );

    // Historic reads, and the cluster id in every header.
    let old = client.range(b"/t/a", b"", rev).await.expect("old");
    assert_eq!(old.kvs[0].value, b"1");
    let members = client.member_list().await.expect("members");
    assert_eq!(members.members.len(), 1);
    assert_ne!(members.header.expect("header").cluster_id, 0);
}

#[tokio::test]
async fn a_watch_resumes_at_a_revision_joins_fragments_and_reports_compaction() {
    // Requests up to 8 MiB: one transaction's events then pass both etcd's
    // default response size and tonic's 4 MiB decode limit, so etcd splits
    // them into fragments.
    let etcd = Cluster::start(1, &["--max-request-bytes", "8388608"]).await;
    let client = etcd.client();
    let first = client.put(b"/w/0", b"zero", 0).await.expect("put");
    let first = first.header.expect("header").revision;

    // From a past revision: the history since, in order.
    client.put(b"/w/1", b"one", 0).await.expect("put");
    client.delete(b"/w/0", b"").await.expect("delete");
    client.put(b"/elsewhere", b"-", 0).await.expect("put");
    let mut watch = client.watch_prefix(b"/w/", first).await.expect("watch");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match watch.next().await.expect("next").expect("open") {
            WatchMessage::Events { events, .. } => seen.extend(events),
            WatchMessage::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let kinds: Vec<(i32, Vec<u8>)> = seen
        .iter()
        .map(|e| (e.r#type, e.kv.as_ref().expect("kv").key.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (pb::event::EventType::Put as i32, b"/w/0".to_vec()),
            (pb::event::EventType::Put as i32, b"/w/1".to_vec()),
            (pb::event::EventType::Delete as i32, b"/w/0".to_vec()),
        ]
    );

    // One revision of 6 MiB arrives as one message, whole.
    let big = pb::TxnRequest {
        success: (0..12)
            .map(|i| put_op(&format!("/w/big/{i}"), vec![b'x'; 512 * 1024]))
            .collect(),
        ..Default::default()
    };
    let rev = client
        .txn(big)
        .await
        .expect("6 MiB txn")
        .header
        .expect("h")
        .revision;
    let events = loop {
        match watch.next().await.expect("next").expect("open") {
            WatchMessage::Events { events, .. } => break events,
            WatchMessage::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        events.len(),
        12,
        "every event of the revision, fragments joined"
    );
    assert!(events.iter().all(|e| {
        e.kv.as_ref()
            .is_some_and(|kv| kv.mod_revision == rev && kv.value.len() == 512 * 1024)
    }));

    // Progress on request.
    watch.request_progress().await.expect("progress");
    loop {
        if let WatchMessage::Progress { revision } =
            watch.next().await.expect("next").expect("open")
        {
            assert!(revision >= rev);
            break;
        }
    }

    // After compaction, a watch from before it is told to relist.
    client.put(b"/w/2", b"two", 0).await.expect("put");
    client.compact(rev).await.expect("compact");
    let mut late = client.watch_prefix(b"/w/", first).await.expect("watch");
    assert_eq!(
        late.next().await.expect("next"),
        Some(WatchMessage::Compacted {
            compact_revision: rev
        })
    );
    assert_eq!(late.next().await.expect("end"), None);
}

#[tokio::test]
async fn a_thousand_leases_live_on_one_keep_alive_stream_and_a_dropped_one_expires() {
    let etcd = Cluster::start(1, &[]).await;
    let client = etcd.client();
    // etcd raises a TTL to its minimum (1.5 election timeouts: 4 s here).
    let (forgotten, min_ttl) = client.lease_grant(1).await.expect("grant");
    assert_eq!(min_ttl, 4, "the test cluster's minimum TTL");
    let mut leases = Vec::new();
    for _ in 0..1000 {
        let (id, ttl) = client.lease_grant(5).await.expect("grant");
        assert_eq!(ttl, 5);
        leases.push(id);
    }
    client
        .put(b"/l/forgotten", b"-", forgotten)
        .await
        .expect("put");
    client.put(b"/l/kept", b"-", leases[0]).await.expect("put");
    let keeper = client.keeper();
    // Seven rounds, 1 s apart: past the forgotten lease's 4 s and the kept
    // ones' 5 s, every renewal answered with the lease's TTL.
    for _ in 0..7 {
        let renewals = leases.iter().map(|id| {
            let keeper = keeper.clone();
            let id = *id;
            async move { keeper.keep_alive(id).await }
        });
        for answer in futures_join_all(renewals).await {
            assert_eq!(answer.expect("renewal"), Some(5));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(client.lease_ttl(forgotten).await.expect("ttl"), None);
    assert_eq!(keeper.keep_alive(forgotten).await.expect("answer"), None);
    let left = client.get_prefix(b"/l/").await.expect("range");
    let keys: Vec<_> = left.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec![b"/l/kept".to_vec()],
        "the forgotten lease's key expired"
    );
    client.lease_revoke(leases[0]).await.expect("revoke");
    assert!(
        client
            .get_prefix(b"/l/")
            .await
            .expect("range")
            .kvs
            .is_empty()
    );
}

/// Runs the futures at once, answers in order (no `futures` dependency for
/// one test).
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn a_killed_member_is_skipped_by_reads_writes_watches_and_keep_alives() {
    let mut etcd = Cluster::start(3, &[]).await;
    let client = etcd.client();
    let (lease, _) = client.lease_grant(5).await.expect("grant");
    let keeper = client.keeper();
    assert_eq!(keeper.keep_alive(lease).await.expect("renew"), Some(5));
    client.put(b"/f/before", b"-", lease).await.expect("put");
    // Renewed every second all along, as a user of the lease would; errors
    // while the cluster elects a leader are expected and retried.
    let renewing = {
        let keeper = keeper.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = keeper.keep_alive(lease).await;
            }
        })
    };

    // Kill the member the client is pinned to (the leader too, when it is:
    // then a new one must be elected as well).
    let status = client.status().await.expect("status");
    let pinned = client.current_endpoint().to_string();
    let members = client.member_list().await.expect("members").members;
    let was_leader = members
        .iter()
        .any(|m| m.id == status.leader && m.client_ur_ls.contains(&pinned));
    let index = etcd
        .members
        .iter()
        .position(|m| m.client_url == pinned)
        .expect("the pinned member is ours");
    etcd.members[index].kill();
    let killed = Instant::now();

    // Within the election timeout and a few retries, everything works on
    // the other two: writes are retried by the caller (as the registry's
    // store will), reads by the client itself.
    let deadline = killed + Duration::from_secs(15);
    loop {
        let t = Instant::now();
        let r = client.put(b"/f/after", b"-", lease).await;
        eprintln!(
            "put after {:?}: {:?} in {:?}",
            killed.elapsed(),
            r.as_ref().err(),
            t.elapsed()
        );
        if r.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write within 15 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "a write succeeded {:?} after the pinned member (the leader: {was_leader}) was killed; now on {}",
        killed.elapsed(),
        client.current_endpoint()
    );
    let listed = client.get_prefix(b"/f/").await.expect("range");
    assert_eq!(listed.kvs.len(), 2);
    let renewed = loop {
        match keeper.keep_alive(lease).await {
            Ok(ttl) => break ttl,
            Err(_) => {
                assert!(Instant::now() < deadline, "no renewal within 15 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(renewed, Some(5), "the lease survived the leader");
    let mut watch = loop {
        match client.watch_prefix(b"/f/", 0).await {
            Ok(w) => break w,
            Err(_) => {
                assert!(Instant::now() < deadline, "no watch within 15 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    client.put(b"/f/watched", b"-", 0).await.expect("put");
    loop {
        if let WatchMessage::Events { events, .. } =
            watch.next().await.expect("next").expect("open")
        {
            assert_eq!(events[0].kv.as_ref().expect("kv").key, b"/f/watched");
            break;
        }
    }
    assert!(client.lease_ttl(lease).await.expect("ttl").is_some());
    renewing.abort();
}

/// The state a follower's updates build, key -> (value, mod revision).
type Built = std::collections::BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

fn apply(built: &mut Built, update: &switchyard_etcd::Update, last: &mut i64) {
    match update {
        switchyard_etcd::Update::Reset { revision, kvs, .. } => {
            built.clear();
            for kv in kvs {
                built.insert(kv.key.clone(), (kv.value.clone(), kv.mod_revision));
            }
            *last = *revision;
        }
        switchyard_etcd::Update::Events { revision, events } => {
            for e in events {
                let kv = e.kv.as_ref().expect("kv");
                assert!(
                    kv.mod_revision > *last
                        || (kv.mod_revision == *last
                            && built.get(&kv.key).is_none_or(|v| v.1 < *last)),
                    "event at {} after {last}: a duplicate or out of order",
                    kv.mod_revision
                );
                *last = kv.mod_revision;
                if e.r#type == pb::event::EventType::Delete as i32 {
                    built.remove(&kv.key);
                } else {
                    built.insert(kv.key.clone(), (kv.value.clone(), kv.mod_revision));
                }
            }
            assert_eq!(*revision, *last);
        }
    }
}

async fn etcd_state(client: &switchyard_etcd::Client, prefix: &[u8]) -> Built {
    client
        .get_prefix(prefix)
        .await
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
        .collect()
}

#[tokio::test]
async fn a_follower_keeps_the_exact_state_across_a_killed_member_and_compaction() {
    use switchyard_etcd::{Follower, ResetReason, Update};
    let mut etcd = Cluster::start(3, &[]).await;
    let writer = etcd.client();
    for i in 0..20 {
        writer
            .put(format!("/s/{i}").as_bytes(), b"v0", 0)
            .await
            .expect("put");
    }
    // The follower's own client, pinned to the first member.
    let client = switchyard_etcd::Client::new(&etcd.endpoints()).expect("client");
    let mut follower = Follower::new(client.clone(), b"/s/");
    let (mut built, mut last) = (Built::new(), 0);
    let first = follower.next().await.expect("list");
    assert!(matches!(
        first,
        Update::Reset {
            reason: ResetReason::Start,
            ..
        }
    ));
    apply(&mut built, &first, &mut last);
    assert_eq!(built, etcd_state(&writer, b"/s/").await);

    // Writes, deletes and a transaction while the follower reads along.
    for i in 0..10 {
        writer
            .put(format!("/s/{i}").as_bytes(), b"v1", 0)
            .await
            .expect("put");
    }
    writer.delete(b"/s/19", b"").await.expect("delete");
    let txn = pb::TxnRequest {
        success: vec![put_op("/s/a", b"t".to_vec()), put_op("/s/b", b"t".to_vec())],
        ..Default::default()
    };
    let expected_revision = writer
        .txn(txn)
        .await
        .expect("txn")
        .header
        .expect("h")
        .revision;
    while last < expected_revision {
        let update = follower.next().await.expect("update");
        apply(&mut built, &update, &mut last);
    }
    assert_eq!(built, etcd_state(&writer, b"/s/").await);

    // The member the follower watches on is SIGKILLed, and while it is
    // away history it missed is compacted: it must relist.
    let pinned = client.current_endpoint().to_string();
    let index = etcd
        .members
        .iter()
        .position(|m| m.client_url == pinned)
        .expect("ours");
    etcd.members[index].kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rev = loop {
        match writer.put(b"/s/after-kill", b"x", 0).await {
            Ok(r) => break r.header.expect("h").revision,
            Err(_) => {
                assert!(Instant::now() < deadline, "no write within 20 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    writer.put(b"/s/0", b"v2", 0).await.expect("put");
    writer.compact(rev + 1).await.expect("compact");
    let mut reasons = Vec::new();
    let target = etcd_state(&writer, b"/s/").await;
    let target_rev = target.values().map(|v| v.1).max().expect("keys");
    while last < target_rev {
        let update = tokio::time::timeout(Duration::from_secs(30), follower.next())
            .await
            .expect("an update within 30 s")
            .expect("update");
        if let Update::Reset { reason, .. } = &update {
            reasons.push(*reason);
        }
        apply(&mut built, &update, &mut last);
    }
    assert_eq!(built, target, "the follower's state is etcd's");
    assert_eq!(
        reasons,
        vec![ResetReason::Compacted],
        "relisted once, for the compaction"
    );
    assert_ne!(client.current_endpoint(), pinned, "moved to another member");
}

/// Compacting at revision C removes the deletes made at C, and a watch from
/// C is not told about the compaction. A follower at C - 1 whose stream
/// breaks must still find out (relist), not resume without those deletes.
#[tokio::test]
async fn a_follower_behind_a_compaction_of_the_very_next_revision_relists() {
    use switchyard_etcd::{Follower, ResetReason, Update};
    let etcd = Cluster::start(1, &[]).await;
    let writer = etcd.client();
    for i in 0..3 {
        writer
            .put(format!("/s/{i}").as_bytes(), b"v", 0)
            .await
            .expect("put");
    }
    let mut follower = Follower::new(etcd.client(), b"/s/");
    let (mut built, mut last) = (Built::new(), 0);
    let first = follower.next().await.expect("list");
    apply(&mut built, &first, &mut last);

    // The follower is away (its stream dropped) while /s/0 is deleted at
    // C = last + 1 and etcd compacts at C.
    follower.rewatch();
    let deleted = writer.delete(b"/s/0", b"").await.expect("delete");
    let c = deleted.header.expect("h").revision;
    assert_eq!(c, last + 1);
    writer.compact(c).await.expect("compact");
    writer.put(b"/s/after", b"x", 0).await.expect("put");

    let target = etcd_state(&writer, b"/s/").await;
    let target_rev = target.values().map(|v| v.1).max().expect("keys");
    let mut reasons = Vec::new();
    while last < target_rev {
        let update = tokio::time::timeout(Duration::from_secs(10), follower.next())
            .await
            .expect("an update within 10 s")
            .expect("update");
        if let Update::Reset { reason, .. } = &update {
            reasons.push(*reason);
        }
        apply(&mut built, &update, &mut last);
    }
    assert_eq!(built, target, "the follower's state is etcd's: /s/0 gone");
    assert_eq!(reasons, vec![ResetReason::Compacted]);
    assert_eq!(
        follower.dropped(),
        0,
        "replaying its own revision is no duplicate"
    );
}
