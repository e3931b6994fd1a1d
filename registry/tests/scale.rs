//! Many clients at once: 50 clients registering 1,000 instances end in
//! exactly 1,000 listed.

mod support;

use support::*;
use switchyard_proto::registry::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_register_a_thousand_instances() {
    let r = start(config()).await;
    let mut tasks = Vec::new();
    for client in 0..50 {
        let url = r.url();
        tasks.push(tokio::spawn(async move {
            let mut c = pb::registry_client::RegistryClient::connect(url)
                .await
                .expect("connect");
            let mut lease = 0;
            for i in 0..20 {
                let id = format!("c{client}-i{i}");
                lease = register(&mut c, lease, vec![spec("bulk", &id)])
                    .await
                    .lease_id;
            }
            // Registering the same instances again changes nothing.
            let again: Vec<_> = (0..20)
                .map(|i| spec("bulk", &format!("c{client}-i{i}")))
                .collect();
            register(&mut c, lease, again).await;
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
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
    assert_eq!(
        listed.position.expect("position").revision,
        1000,
        "one revision per new instance, none for repeats"
    );
    stop(r).await;
}
