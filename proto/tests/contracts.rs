//! Compile-time and wire check of the contracts: a client and a server of
//! each service, built against the generated code, talk over a real socket.
//! The servers here are fakes on purpose: they check the contract, not the
//! registry or balancer (those have their own suites).

use std::{net::SocketAddr, pin::Pin};

use switchyard_proto::{
    balancer::v1::{self as bal, balancer_client::BalancerClient, balancer_server},
    registry::v1::{self as reg, registry_client::RegistryClient, registry_server},
};
use tokio_stream::{Stream, StreamExt, wrappers::TcpListenerStream};
use tonic::{Request, Response, Status, Streaming, transport::Server};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct FakeRegistry;
struct FakeBalancer;

fn position(revision: u64) -> Option<reg::WatchPosition> {
    Some(reg::WatchPosition {
        epoch: "e1".into(),
        revision,
    })
}

#[tonic::async_trait]
impl registry_server::Registry for FakeRegistry {
    async fn register(
        &self,
        req: Request<reg::RegisterRequest>,
    ) -> Result<Response<reg::RegisterResponse>, Status> {
        let n = req.into_inner().instances.len() as u64;
        Ok(Response::new(reg::RegisterResponse {
            lease_id: 42,
            ttl_seconds: 10,
            position: position(n),
        }))
    }

    type KeepAliveStream = Boxed<reg::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        req: Request<Streaming<reg::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let out = req.into_inner().map(|r| {
            let r = r?;
            let result = if r.lease_id == 42 {
                reg::keep_alive_response::Result::Renewed
            } else {
                reg::keep_alive_response::Result::UnknownLease
            };
            Ok(reg::KeepAliveResponse {
                lease_id: r.lease_id,
                result: result as i32,
                ttl_seconds: 10,
                epoch: "e1".into(),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn deregister(
        &self,
        _: Request<reg::DeregisterRequest>,
    ) -> Result<Response<reg::DeregisterResponse>, Status> {
        Ok(Response::new(reg::DeregisterResponse {
            position: position(2),
        }))
    }

    async fn revoke_lease(
        &self,
        _: Request<reg::RevokeLeaseRequest>,
    ) -> Result<Response<reg::RevokeLeaseResponse>, Status> {
        Ok(Response::new(reg::RevokeLeaseResponse {
            instances_removed: 1,
            position: position(3),
        }))
    }

    async fn set_state(
        &self,
        req: Request<reg::SetStateRequest>,
    ) -> Result<Response<reg::SetStateResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(reg::SetStateResponse {
            instance: Some(reg::Instance {
                state: r.state,
                weight: r.weight.unwrap_or(100),
                ..Default::default()
            }),
            position: position(4),
        }))
    }

    async fn get_service(
        &self,
        req: Request<reg::GetServiceRequest>,
    ) -> Result<Response<reg::GetServiceResponse>, Status> {
        Ok(Response::new(reg::GetServiceResponse {
            service: req.into_inner().service,
            authoritative: true,
            ..Default::default()
        }))
    }

    async fn list_services(
        &self,
        _: Request<reg::ListServicesRequest>,
    ) -> Result<Response<reg::ListServicesResponse>, Status> {
        Ok(Response::new(reg::ListServicesResponse {
            brake: Some(reg::BrakeStatus::default()),
            ..Default::default()
        }))
    }

    async fn get_status(
        &self,
        _: Request<reg::GetStatusRequest>,
    ) -> Result<Response<reg::GetStatusResponse>, Status> {
        Ok(Response::new(reg::GetStatusResponse {
            replica: "r1".into(),
            store: "etcd".into(),
            etcd: Some(reg::EtcdStatus {
                members: vec![reg::EtcdMember {
                    id: 7,
                    name: "etcd1".into(),
                    client_urls: vec!["https://etcd1:2379".into()],
                }],
                leader: 7,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    type WatchStream = Boxed<reg::WatchResponse>;

    async fn watch(
        &self,
        _: Request<reg::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let snapshot = reg::WatchResponse {
            kind: Some(reg::watch_response::Kind::Snapshot(reg::Snapshot {
                reset: true,
                reason: reg::snapshot::Reason::Initial as i32,
                ..Default::default()
            })),
            position: position(5),
            authoritative: false,
        };
        let delta = reg::WatchResponse {
            kind: Some(reg::watch_response::Kind::Delta(reg::Delta {
                events: vec![reg::Event {
                    revision: 6,
                    kind: reg::event::Kind::Delete as i32,
                    delete_reason: reg::event::DeleteReason::Expired as i32,
                    ..Default::default()
                }],
            })),
            position: position(6),
            authoritative: true,
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([
            Ok(snapshot),
            Ok(delta),
        ]))))
    }
}

#[tonic::async_trait]
impl balancer_server::Balancer for FakeBalancer {
    type SubscribeStream = Boxed<bal::Assignment>;

    async fn subscribe(
        &self,
        req: Request<bal::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let services = req.into_inner().services;
        let out = services.into_iter().map(|service| {
            Ok(bal::Assignment {
                service,
                endpoints: vec![bal::Endpoint {
                    instance_id: "a".into(),
                    effective_weight: 1.0,
                    ..Default::default()
                }],
                source: position(1),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }

    async fn report_load(
        &self,
        req: Request<Streaming<bal::LoadReport>>,
    ) -> Result<Response<bal::ReportLoadResponse>, Status> {
        let mut stream = req.into_inner();
        let mut n = 0;
        while let Some(report) = stream.next().await {
            report?;
            n += 1;
        }
        Ok(Response::new(bal::ReportLoadResponse {
            reports_accepted: n,
        }))
    }

    async fn pick(
        &self,
        req: Request<bal::PickRequest>,
    ) -> Result<Response<bal::PickResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(bal::PickResponse {
            endpoint: Some(bal::Endpoint {
                instance_id: r.hash_key,
                ..Default::default()
            }),
            panic: true,
            policy: bal::Policy::Maglev as i32,
        }))
    }

    async fn set_policy(
        &self,
        req: Request<bal::SetPolicyRequest>,
    ) -> Result<Response<bal::SetPolicyResponse>, Status> {
        Ok(Response::new(bal::SetPolicyResponse {
            policy: req.into_inner().policy,
        }))
    }

    async fn get_stats(
        &self,
        _: Request<bal::GetStatsRequest>,
    ) -> Result<Response<bal::GetStatsResponse>, Status> {
        Ok(Response::new(bal::GetStatsResponse {
            balancer_id: "b1".into(),
            ..Default::default()
        }))
    }
}

async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        Server::builder()
            .add_service(registry_server::RegistryServer::new(FakeRegistry))
            .add_service(balancer_server::BalancerServer::new(FakeBalancer))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test]
async fn registry_contract_round_trips() {
    let addr = serve().await;
    let mut client = RegistryClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let reg = client
        .register(reg::RegisterRequest {
            lease_id: 0,
            ttl_seconds: 10,
            instances: vec![reg::InstanceSpec {
                service: "hello".into(),
                instance_id: "h1".into(),
                address: "10.0.0.1:8080".into(),
                protocol: reg::Protocol::Http1 as i32,
                ..Default::default()
            }],
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(reg.lease_id, 42);
    assert_eq!(reg.position.expect("position").revision, 1);

    let keepalives = tokio_stream::iter([
        reg::KeepAliveRequest { lease_id: 42 },
        reg::KeepAliveRequest { lease_id: 7 },
    ]);
    let answers: Vec<_> = client
        .keep_alive(keepalives)
        .await
        .expect("keepalive")
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .expect("answers");
    assert_eq!(
        answers[0].result(),
        reg::keep_alive_response::Result::Renewed
    );
    assert_eq!(
        answers[1].result(),
        reg::keep_alive_response::Result::UnknownLease
    );

    let set = client
        .set_state(reg::SetStateRequest {
            service: "hello".into(),
            instance_id: "h1".into(),
            state: reg::State::Draining as i32,
            weight: Some(5),
            ..Default::default()
        })
        .await
        .expect("set_state")
        .into_inner();
    let instance = set.instance.expect("instance");
    assert_eq!(instance.state(), reg::State::Draining);
    assert_eq!(instance.weight, 5);

    let watch: Vec<_> = client
        .watch(reg::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .expect("watch messages");
    assert!(matches!(
        watch[0].kind,
        Some(reg::watch_response::Kind::Snapshot(ref s)) if s.reset
    ));
    assert!(matches!(
        watch[1].kind,
        Some(reg::watch_response::Kind::Delta(ref d))
            if d.events[0].delete_reason() == reg::event::DeleteReason::Expired
    ));
    client
        .deregister(reg::DeregisterRequest::default())
        .await
        .expect("deregister");
    client
        .revoke_lease(reg::RevokeLeaseRequest { lease_id: 42 })
        .await
        .expect("revoke");
    let list = client
        .list_services(reg::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert!(!list.brake.expect("brake").engaged);
    let status = client
        .get_status(reg::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let etcd = status.etcd.expect("etcd");
    assert_eq!((etcd.leader, etcd.members[0].name.as_str()), (7, "etcd1"));
    let svc = client
        .get_service(reg::GetServiceRequest {
            service: "hello".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(svc.service, "hello");
}

#[tokio::test]
async fn balancer_contract_round_trips() {
    let addr = serve().await;
    let mut client = BalancerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let assignments: Vec<_> = client
        .subscribe(bal::SubscribeRequest {
            services: vec!["hello".into(), "echo".into()],
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .expect("assignments");
    assert_eq!(assignments.len(), 2);
    assert_eq!(assignments[1].service, "echo");

    let reports = tokio_stream::iter((0..3).map(|_| bal::LoadReport {
        reporter_id: "gw".into(),
        endpoints: vec![bal::EndpointLoad {
            service: "hello".into(),
            requests: 10,
            failures: Some(bal::Failures {
                connect: 1,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }));
    let accepted = client
        .report_load(reports)
        .await
        .expect("report")
        .into_inner();
    assert_eq!(accepted.reports_accepted, 3);

    let pick = client
        .pick(bal::PickRequest {
            service: "hello".into(),
            hash_key: "user-7".into(),
            exclude_instance_ids: vec!["a".into()],
        })
        .await
        .expect("pick")
        .into_inner();
    assert!(pick.panic);
    assert_eq!(pick.policy(), bal::Policy::Maglev);
    assert_eq!(pick.endpoint.expect("endpoint").instance_id, "user-7");

    let policy = client
        .set_policy(bal::SetPolicyRequest {
            policy: Some(bal::ServicePolicy {
                service: "hello".into(),
                policy: bal::Policy::RingHash as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("set_policy")
        .into_inner();
    assert_eq!(
        policy.policy.expect("policy").policy(),
        bal::Policy::RingHash
    );
    let stats = client
        .get_stats(bal::GetStatsRequest::default())
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.balancer_id, "b1");
}

#[test]
fn descriptor_set_lists_both_packages() {
    use prost::Message;
    let fds = switchyard_proto::prost_types::FileDescriptorSet::decode(
        switchyard_proto::FILE_DESCRIPTOR_SET,
    )
    .expect("descriptor set decodes");
    let packages: Vec<_> = fds.file.iter().map(|f| f.package().to_string()).collect();
    assert!(packages.contains(&"switchyard.registry.v1".to_string()));
    assert!(packages.contains(&"switchyard.balancer.v1".to_string()));
}
