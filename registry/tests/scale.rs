//! Many clients at once: 50 clients registering 1,000 instances end in
//! exactly 1,000 listed.

mod support;

use support::*;
use switchyard_proto::registry::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_register_a_thousand_instances() {
    let r = start(config()).await;
    let leases = clients(&r, None).await;
    let mut c = client_of(&r).await;
    let got = c
        .get_service(pb::GetServiceRequest {
            service: "bulk".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.instances.len(), 1000);
    let listed = c
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.leases, 50);
    let registered = listed.position.expect("position").revision;
    if !on_etcd() {
        // On etcd a revision is a transaction, and concurrent writes share
        // one (group commit): the count holds for the file store only.
        assert_eq!(registered, 1000, "one revision per new instance");
    }

    // Registering the same instances again changes nothing.
    clients(&r, Some(leases)).await;
    let listed = c
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed.position.expect("position").revision,
        registered,
        "no revision for repeats"
    );
    stop(r).await;
}

/// 50 clients at once, each registering its 20 instances one by one (on
/// a new lease), or all again at once on the lease it has; their leases.
async fn clients(r: &Running, again: Option<Vec<u64>>) -> Vec<u64> {
    let mut tasks = Vec::new();
    for client in 0..50 {
        let url = r.url();
        let lease = again.as_ref().map(|leases| leases[client]);
        tasks.push(tokio::spawn(async move {
            let mut c = pb::registry_client::RegistryClient::connect(url)
                .await
                .expect("connect");
            let specs = (0..20).map(|i| spec("bulk", &format!("c{client}-i{i}")));
            match lease {
                Some(lease) => register(&mut c, lease, specs.collect()).await.lease_id,
                None => {
                    let mut lease = 0;
                    for spec in specs {
                        lease = register(&mut c, lease, vec![spec]).await.lease_id;
                    }
                    lease
                }
            }
        }));
    }
    let mut leases = Vec::new();
    for t in tasks {
        leases.push(t.await.expect("client task"));
    }
    leases
}
