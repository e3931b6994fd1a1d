//! Active health checks mark an instance unhealthy when its port closes,
//! and healthy again when it comes back.

mod support;

use std::time::Duration;

use support::*;
use switchyard_proto::registry::v1 as pb;

async fn health(r: &Running) -> (pb::Health, String) {
    let i = checked(r).await;
    (i.health(), i.health_detail.clone())
}

async fn checked(r: &Running) -> pb::Instance {
    let mut c = client_of(r).await;
    let got = c
        .get_service(pb::GetServiceRequest {
            service: "checked".into(),
        })
        .await
        .expect("get")
        .into_inner();
    got.instances[0].clone()
}

#[tokio::test]
async fn a_closed_port_turns_an_instance_unhealthy() {
    let r = start(config()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let mut c = client_of(&r).await;
    let s = pb::InstanceSpec {
        address: addr.to_string(),
        health_check: tcp_check(),
        ..spec("checked", "c1")
    };
    register(&mut c, 0, vec![s]).await;
    for _ in 0..100 {
        if health(&r).await.0 == pb::Health::Healthy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health(&r).await.0, pb::Health::Healthy);
    let healthy_at = checked(&r)
        .await
        .health_changed_at
        .expect("when it turned healthy");

    // Five seconds later on the registry's clock, the port closes.
    r.advance(Duration::from_secs(5)).await;
    accept.abort();
    let _ = accept.await; // the listener is dropped: the port closes
    for _ in 0..100 {
        if health(&r).await.0 == pb::Health::Unhealthy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (h, detail) = health(&r).await;
    assert_eq!(h, pb::Health::Unhealthy);
    assert!(detail.contains("connect"), "{detail}");
    let unhealthy_at = checked(&r)
        .await
        .health_changed_at
        .expect("when it turned unhealthy");
    assert_eq!(unhealthy_at.seconds - healthy_at.seconds, 5);
    // The lifecycle state is untouched: health sits beside it.
    let mut c = client_of(&r).await;
    let got = c
        .get_service(pb::GetServiceRequest {
            service: "checked".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.instances[0].state(), pb::State::Serving);
    stop(r).await;
}
