//! Watch: snapshot, ordered deltas, resume, and every kind of reset.

mod support;

use std::time::Duration;

use support::*;
use switchyard_proto::registry::v1::{self as pb, snapshot::Reason};

fn since(epoch: &str, revision: u64) -> Option<pb::WatchPosition> {
    Some(pb::WatchPosition {
        epoch: epoch.into(),
        revision,
    })
}

#[tokio::test]
async fn deltas_arrive_in_revision_order_and_only_for_watched_services() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let mut watch = c
        .watch(pb::WatchRequest {
            services: vec!["hello".into()],
            since: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let first = next(&mut watch).await;
    assert_eq!(snapshot(&first).reason(), Reason::Initial);
    let lease = register(&mut c, 0, vec![spec("hello", "a")]).await.lease_id;
    register(&mut c, lease, vec![spec("other", "x")]).await;
    for id in ["b", "c", "d"] {
        register(&mut c, lease, vec![spec("hello", id)]).await;
    }
    let mut seen = Vec::new();
    let mut last = 0;
    while seen.len() < 4 {
        for e in events(&next_change(&mut watch).await) {
            assert!(e.revision > last, "revisions must increase");
            last = e.revision;
            let spec = e.instance.and_then(|i| i.spec).expect("spec");
            assert_eq!(
                spec.service, "hello",
                "a watcher of hello woke for another service"
            );
            seen.push(spec.instance_id);
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d"]);
    stop(r).await;
}

#[tokio::test]
async fn resume_replays_missed_deltas_without_a_snapshot() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let lease = register(&mut c, 0, vec![spec("hello", "a")]).await.lease_id;
    let mut watch = c
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let pos = next(&mut watch).await.position.expect("position");
    drop(watch);
    register(&mut c, lease, vec![spec("hello", "b")]).await;
    c.deregister(pb::DeregisterRequest {
        service: "hello".into(),
        instance_id: "a".into(),
        lease_id: lease,
    })
    .await
    .expect("deregister");
    let mut watch = c
        .watch(pb::WatchRequest {
            services: vec![],
            since: Some(pos.clone()),
        })
        .await
        .expect("resume")
        .into_inner();
    let evs = events(&next(&mut watch).await);
    let kinds: Vec<_> = evs
        .iter()
        .map(|e| {
            (
                e.kind(),
                e.instance
                    .as_ref()
                    .and_then(|i| i.spec.as_ref())
                    .map(|s| s.instance_id.clone()),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (pb::event::Kind::Put, Some("b".into())),
            (pb::event::Kind::Delete, Some("a".into()))
        ]
    );
    assert_eq!(evs[0].revision, pos.revision + 1);
    stop(r).await;
}

#[tokio::test]
async fn resets_for_future_revision_other_epoch_and_compacted_history() {
    let mut cfg = config();
    cfg.history_limit = 5;
    let r = start(cfg).await;
    let mut c = client_of(&r).await;
    let lease = register(&mut c, 0, vec![spec("hello", "a")]).await.lease_id;
    let epoch = next(
        &mut c
            .watch(pb::WatchRequest::default())
            .await
            .expect("w")
            .into_inner(),
    )
    .await
    .position
    .expect("position")
    .epoch;

    let cases = [
        (since(&epoch, 1_000_000), Reason::FutureRevision),
        (since("not-our-epoch", 1), Reason::OtherEpoch),
    ];
    for (pos, reason) in cases {
        let mut w = c
            .watch(pb::WatchRequest {
                services: vec![],
                since: pos,
            })
            .await
            .expect("w")
            .into_inner();
        let s = snapshot(&next(&mut w).await);
        assert!(s.reset);
        assert_eq!(s.reason(), reason);
        assert_eq!(s.instances.len(), 1);
    }
    for i in 0..10 {
        register(&mut c, lease, vec![spec("hello", &format!("n{i}"))]).await;
    }
    let mut w = c
        .watch(pb::WatchRequest {
            services: vec![],
            since: since(&epoch, 1),
        })
        .await
        .expect("w")
        .into_inner();
    let s = snapshot(&next(&mut w).await);
    assert!(s.reset);
    assert_eq!(s.reason(), Reason::Compacted);
    assert_eq!(s.instances.len(), 11);
    stop(r).await;
}

#[tokio::test]
async fn a_slow_watcher_gets_a_reset_not_a_backlog_or_a_gap() {
    let mut cfg = config();
    cfg.watch_buffer = 8;
    let r = start(cfg).await;
    let mut c = client_of(&r).await.max_decoding_message_size(64 << 20);
    let mut slow = c
        .watch(pb::WatchRequest::default())
        .await
        .expect("w")
        .into_inner();
    let first = next(&mut slow).await;
    // Large metadata fills the HTTP/2 windows quickly while we do not read.
    let big: std::collections::HashMap<String, String> = (0..4)
        .map(|i| (format!("k{i}"), "v".repeat(1000)))
        .collect();
    let lease = register(&mut c, 0, vec![spec("hello", "seed")])
        .await
        .lease_id;
    for chunk in 0..20 {
        let specs = (0..100)
            .map(|i| pb::InstanceSpec {
                metadata: big.clone(),
                ..spec("hello", &format!("i{chunk}-{i}"))
            })
            .collect();
        register(&mut c, lease, specs).await;
    }
    let listed = c
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    let total = listed.services[0].instances as usize;
    assert_eq!(total, 2001);
    let final_revision = listed.position.expect("position").revision;
    // Now read: buffered deltas, a reset snapshot where the buffer overflowed,
    // and deltas after it, with no gap anywhere, up to the final revision.
    let mut last = first.position.expect("position").revision;
    let mut state = std::collections::BTreeSet::new();
    let mut resets = 0;
    while last < final_revision {
        let m = next(&mut slow).await;
        let position = m.position.expect("position").revision;
        match m.kind {
            Some(pb::watch_response::Kind::Delta(d)) => {
                for e in d.events {
                    assert_eq!(e.revision, last + 1, "a gap in the deltas");
                    last = e.revision;
                    let id = e.instance.and_then(|i| i.spec).expect("spec").instance_id;
                    if e.kind == pb::event::Kind::Delete as i32 {
                        state.remove(&id);
                    } else {
                        state.insert(id);
                    }
                }
            }
            Some(pb::watch_response::Kind::Snapshot(s)) => {
                assert!(s.reset);
                assert_eq!(s.reason(), Reason::SlowWatcher);
                resets += 1;
                state = s
                    .instances
                    .into_iter()
                    .map(|i| i.spec.expect("spec").instance_id)
                    .collect();
                last = position;
            }
            _ => {}
        }
    }
    assert!(
        resets >= 1,
        "a watcher that never read must have been reset"
    );
    assert_eq!(
        state.len(),
        total,
        "snapshot plus deltas rebuild the whole state"
    );
    stop(r).await;
}

#[tokio::test]
async fn idle_streams_get_progress_and_end_cleanly_at_shutdown() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let mut w = c
        .watch(pb::WatchRequest::default())
        .await
        .expect("w")
        .into_inner();
    next(&mut w).await;
    let p = next(&mut w).await;
    assert!(
        matches!(p.kind, Some(pb::watch_response::Kind::Progress(_))),
        "{p:?}"
    );
    r.stop.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match w.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("stream ends within 5 s");
    assert!(
        matches!(end, Ok(None)),
        "the stream ends without an error: {end:?}"
    );
}
