//! Every in-process registry suite once more, each registry on its own
//! real etcd (`--store etcd`, one member) instead of the file store (issue
//! 18, item 1: the same semantics on both stores). `support::start` sees
//! this binary's name and picks the store; `SWITCHYARD_TEST_STORE=etcd`
//! does the same for any one suite.
//!
//! Left out: `process.rs` (the binary on its data directory: a restart
//! draws a new epoch there, by design not on etcd) and `ha.rs` (etcd
//! already, several replicas).

// Each suite keeps its own `mod support;` so that it also builds alone.
#![allow(clippy::duplicate_mod)]

#[path = "auth.rs"]
mod auth;
#[path = "brake.rs"]
mod brake;
#[path = "checks.rs"]
mod checks;
#[path = "contract.rs"]
mod contract;
#[path = "dashboard.rs"]
mod dashboard;
#[path = "leases.rs"]
mod leases;
#[path = "mtls.rs"]
mod mtls;
#[path = "ownership.rs"]
mod ownership;
#[path = "protocol.rs"]
mod protocol;
#[path = "scale.rs"]
mod scale;
#[path = "seed.rs"]
mod seed;
#[path = "validation.rs"]
mod validation;
#[path = "watch.rs"]
mod watch;

mod support;

/// The suites above really ran on etcd: its epoch is etcd's cluster id.
#[tokio::test]
async fn the_registries_here_store_in_etcd() {
    let r = support::start(support::config()).await;
    let mut c = support::client_of(&r).await;
    let listed = c
        .list_services(switchyard_proto::registry::v1::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    let epoch = listed.position.expect("position").epoch;
    assert!(epoch.starts_with("etcd-"), "epoch {epoch}");
    support::stop(r).await;
}
