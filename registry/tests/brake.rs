//! The mass-expiry brake: engages at its thresholds, not below, holds lapsed
//! instances visibly, and lets go on its own.

mod support;

use std::time::Duration;

use support::*;
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};

struct Renewer {
    tx: mpsc::Sender<pb::KeepAliveRequest>,
    answers: Streaming<pb::KeepAliveResponse>,
}

impl Renewer {
    async fn new(c: &mut RegistryClient<Channel>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let answers = c
            .keep_alive(ReceiverStream::new(rx))
            .await
            .expect("keepalive")
            .into_inner();
        Self { tx, answers }
    }

    async fn renew(&mut self, leases: &[u64]) {
        for lease_id in leases {
            self.tx
                .send(pb::KeepAliveRequest {
                    lease_id: *lease_id,
                })
                .await
                .expect("send");
            let a = self.answers.message().await.expect("answer").expect("open");
            assert_eq!(
                a.result(),
                pb::keep_alive_response::Result::Renewed,
                "lease {lease_id}"
            );
        }
    }
}

/// Registers `n` leases of one instance each; returns their ids.
async fn leases(c: &mut RegistryClient<Channel>, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            register(c, 0, vec![spec("hello", &format!("i{i}"))])
                .await
                .lease_id,
        );
    }
    ids
}

/// Advances 11 s in steps, renewing `kept` along the way, so everything else lapses.
async fn lapse_all_but(r: &Running, renewer: &mut Renewer, kept: &[u64]) {
    for step in [4, 4, 3] {
        r.advance(Duration::from_secs(step)).await;
        renewer.renew(kept).await;
    }
    r.advance(Duration::from_millis(10)).await;
}

async fn listing(c: &mut RegistryClient<Channel>) -> pb::ListServicesResponse {
    c.list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner()
}

#[tokio::test]
async fn two_of_eight_lapsing_does_not_engage() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let ids = leases(&mut c, 8).await;
    let mut renewer = Renewer::new(&mut c).await;
    lapse_all_but(&r, &mut renewer, &ids[2..]).await;
    eventually("two instances expire", || async {
        ids_of(&r, "hello").await.len() == 6
    })
    .await;
    let l = listing(&mut c).await;
    assert!(!l.brake.expect("brake").engaged);
    assert!(l.authoritative);
    stop(r).await;
}

#[tokio::test]
async fn nine_of_twelve_is_below_the_count_and_ten_of_twenty_below_the_share() {
    for (total, lapsing) in [(12, 9), (20, 10)] {
        let r = start(config()).await;
        let mut c = client_of(&r).await;
        let ids = leases(&mut c, total).await;
        let mut renewer = Renewer::new(&mut c).await;
        lapse_all_but(&r, &mut renewer, &ids[lapsing..]).await;
        eventually("lapsed instances expire", || async {
            ids_of(&r, "hello").await.len() == total - lapsing
        })
        .await;
        assert!(
            !listing(&mut c).await.brake.expect("brake").engaged,
            "{lapsing} of {total}"
        );
        stop(r).await;
    }
}

#[tokio::test]
async fn ten_of_twelve_engages_holds_and_lets_go() {
    let r = start(config()).await;
    let mut c = client_of(&r).await;
    let ids = leases(&mut c, 12).await;
    let mut watch = c
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    next(&mut watch).await;
    let mut renewer = Renewer::new(&mut c).await;
    lapse_all_but(&r, &mut renewer, &ids[10..]).await;

    eventually("brake engages", || async {
        let mut c = client_of(&r).await;
        listing(&mut c).await.brake.is_some_and(|b| b.engaged)
    })
    .await;
    let l = listing(&mut c).await;
    let brake = l.brake.expect("brake");
    assert_eq!(brake.held_leases, 10);
    assert!(!brake.reason.is_empty());
    assert!(!l.authoritative, "held data is not authoritative");
    assert_eq!(l.services[0].instances, 12, "nothing was dropped");
    assert_eq!(l.services[0].expired_held, 10);
    // Watchers see the held instances, marked, in non-authoritative messages.
    let held = events(&next_change(&mut watch).await);
    assert!(
        held.iter()
            .all(|e| e.instance.as_ref().is_some_and(|i| i.expired_held))
    );

    // A held lease that renews comes back whole.
    renewer.renew(&ids[..1]).await;
    eventually("renewed lease is no longer held", || async {
        let mut c = client_of(&r).await;
        listing(&mut c).await.services[0].expired_held == 9
    })
    .await;

    // After at most two minutes the brake lets go and expires what it held.
    for _ in 0..41 {
        r.advance(Duration::from_secs(3)).await;
        renewer.renew(&[ids[0], ids[10], ids[11]]).await;
    }
    eventually("brake lets go", || async {
        let mut c = client_of(&r).await;
        let l = listing(&mut c).await;
        !l.brake.is_some_and(|b| b.engaged) && l.authoritative
    })
    .await;
    let mut kept = ids_of(&r, "hello").await;
    kept.sort();
    assert_eq!(kept, ["i0", "i10", "i11"]);
    stop(r).await;
}
