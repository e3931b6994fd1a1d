//! Mutual TLS on the registry's gRPC port (issue 21): clients without a
//! certificate the CA signed are refused, rights follow the identity a
//! certificate names, and certificate files change under live streams.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use support::*;
use switchyard_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use switchyard_tls::{
    ClientTls, Files, Identity,
    dev::{DevCa, Leaf},
};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-mtls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A CA in `dir` and a certificate per identity; returns the CA.
fn certificates(dir: &Path, leaves: &[(&str, Identity)]) -> DevCa {
    let ca = DevCa::generate("Switchyard test CA").expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca.pem");
    for (name, identity) in leaves {
        let names: &[&str] = if *identity == Identity::Registry {
            &["127.0.0.1", "localhost"]
        } else {
            &[]
        };
        ca.issue(&Leaf::new(identity.clone(), names, 30))
            .expect("issue")
            .write(dir, name)
            .expect("write");
    }
    ca
}

fn files(dir: &Path, name: &str) -> Files {
    Files::in_dir(dir, name)
}

async fn started(dir: &Path) -> Running {
    let mut cfg = config();
    let f = files(dir, "registry");
    cfg.mtls_ca = f.ca.display().to_string();
    cfg.mtls_cert = f.cert.display().to_string();
    cfg.mtls_key = f.key.display().to_string();
    // Tokens set: a certificate's identity must decide, not a token.
    cfg.register_tokens = vec!["register-token-a".into()];
    cfg.operator_tokens = vec!["operator-token-b".into()];
    start(cfg).await
}

async fn tls_client(r: &Running, files: &Files) -> Result<RegistryClient<Channel>, String> {
    let tls = ClientTls::load(files).map_err(|e| e.to_string())?;
    let endpoint = Endpoint::from_shared(format!("http://{}", r.grpc))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2));
    let channel = switchyard_tls::channel(endpoint, Some(&tls), Some(Identity::Registry))
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(RegistryClient::new(channel))
}

async fn refused(r: &Running, files: &Files, what: &str) {
    let outcome = match tls_client(r, files).await {
        Err(e) => Err(e),
        Ok(mut c) => c
            .list_services(pb::ListServicesRequest::default())
            .await
            .map(|_| ())
            .map_err(|s| s.to_string()),
    };
    assert!(outcome.is_err(), "{what} was let in");
}

fn expired(ca: &DevCa, dir: &Path, name: &str) -> Files {
    let day = Duration::from_secs(86_400);
    let leaf = Leaf {
        identity: Identity::Operator,
        names: vec![],
        not_before: SystemTime::now() - 30 * day,
        not_after: SystemTime::now() - day,
    };
    ca.issue(&leaf)
        .expect("issue")
        .write(dir, name)
        .expect("write")
}

#[tokio::test]
async fn clients_without_a_certificate_the_ca_signed_are_refused() {
    let dir = scratch("refused");
    let ca = certificates(
        &dir,
        &[
            ("registry", Identity::Registry),
            ("operator", Identity::Operator),
        ],
    );
    let r = started(&dir).await;

    // The good client first: what is refused below is refused for its
    // certificate, not for something else.
    let mut good = tls_client(&r, &files(&dir, "operator"))
        .await
        .expect("connect");
    good.list_services(pb::ListServicesRequest::default())
        .await
        .expect("an operator certificate reads");

    // Plaintext, with a valid token.
    let mut plain = client_of(&r).await;
    let err = plain
        .list_services(authed(
            pb::ListServicesRequest::default(),
            "operator-token-b",
        ))
        .await
        .expect_err("plaintext refused");
    assert_ne!(err.code(), Code::Ok);

    // A certificate another CA signed, naming the operator.
    let other = scratch("refused-other");
    certificates(&other, &[("operator", Identity::Operator)]);
    let mut wrong_ca = files(&other, "operator");
    wrong_ca.ca = dir.join("ca.pem");
    refused(&r, &wrong_ca, "a certificate of another CA").await;

    // An expired certificate of the right CA.
    refused(&r, &expired(&ca, &dir, "expired"), "an expired certificate").await;

    // The client checks the server too: a client trusting another CA
    // does not talk to this registry.
    let mut distrust = files(&dir, "operator");
    distrust.ca = other.join("ca.pem");
    refused(&r, &distrust, "a registry the client's CA did not sign").await;

    stop(r).await;
}

fn denied(result: Result<impl std::fmt::Debug, tonic::Status>, identity: &str, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
    assert!(
        err.message().contains(identity),
        "{what}: the refusal names the identity: {}",
        err.message()
    );
}

#[tokio::test]
async fn a_service_identity_registers_its_own_service_only() {
    let dir = scratch("rights");
    certificates(
        &dir,
        &[
            ("registry", Identity::Registry),
            ("operator", Identity::Operator),
            ("hello", Identity::Service("hello".into())),
            ("echo", Identity::Service("echo".into())),
            ("gateway", Identity::Gateway),
        ],
    );
    let r = started(&dir).await;
    let mut hello = tls_client(&r, &files(&dir, "hello")).await.expect("hello");
    let mut echo = tls_client(&r, &files(&dir, "echo")).await.expect("echo");
    let mut gateway = tls_client(&r, &files(&dir, "gateway"))
        .await
        .expect("gateway");
    let mut operator = tls_client(&r, &files(&dir, "operator"))
        .await
        .expect("operator");
    let hello_id = "spiffe://switchyard/service/hello";

    let own = register(&mut hello, 0, vec![spec("hello", "h1")]).await;
    let theirs = register(&mut echo, 0, vec![spec("echo", "e1")]).await;

    // Another service's instances, in a new lease or beside its own.
    let req = |lease_id, specs| pb::RegisterRequest {
        lease_id,
        ttl_seconds: 10,
        instances: specs,
    };
    denied(
        hello.register(req(0, vec![spec("echo", "e2")])).await,
        hello_id,
        "hello registering echo",
    );
    denied(
        hello
            .register(req(
                own.lease_id,
                vec![spec("hello", "h2"), spec("echo", "e2")],
            ))
            .await,
        hello_id,
        "hello registering echo beside itself",
    );
    // A token does not widen what a certificate may do.
    denied(
        hello
            .register(authed(req(0, vec![spec("echo", "e2")]), "operator-token-b"))
            .await,
        hello_id,
        "hello with an operator token",
    );
    // Adding its own instance to echo's lease would let it renew echo's.
    denied(
        hello
            .register(req(theirs.lease_id, vec![spec("hello", "h3")]))
            .await,
        hello_id,
        "hello joining echo's lease",
    );
    denied(
        hello
            .deregister(pb::DeregisterRequest {
                service: "echo".into(),
                instance_id: "e1".into(),
                lease_id: theirs.lease_id,
            })
            .await,
        hello_id,
        "hello deregistering echo",
    );
    denied(
        hello
            .revoke_lease(pb::RevokeLeaseRequest {
                lease_id: theirs.lease_id,
            })
            .await,
        hello_id,
        "hello revoking echo's lease",
    );
    let renewals = tokio_stream::iter([pb::KeepAliveRequest {
        lease_id: theirs.lease_id,
    }]);
    let outcome = match hello.keep_alive(renewals).await {
        Err(status) => Err(status),
        Ok(answers) => answers.into_inner().message().await,
    };
    denied(outcome, hello_id, "hello renewing echo's lease");
    // Operator rights stay with operators.
    denied(
        hello
            .set_state(pb::SetStateRequest {
                service: "hello".into(),
                instance_id: "h1".into(),
                state: pb::State::Draining as i32,
                ..Default::default()
            })
            .await,
        hello_id,
        "hello draining itself",
    );

    // The gateway registers itself and reads, nothing else.
    let gw_id = "spiffe://switchyard/gateway";
    register(&mut gateway, 0, vec![spec("switchyard-gateway", "g1")]).await;
    denied(
        gateway.register(req(0, vec![spec("hello", "h9")])).await,
        gw_id,
        "the gateway registering hello",
    );
    let seen = gateway
        .get_service(pb::GetServiceRequest {
            service: "echo".into(),
        })
        .await
        .expect("the gateway reads")
        .into_inner();
    assert_eq!(seen.instances.len(), 1);

    // Nothing of the refused calls happened; the operator may do all.
    assert_eq!(ids_seen_by(&mut operator, "echo").await, ["e1"]);
    assert_eq!(ids_seen_by(&mut operator, "hello").await, ["h1"]);
    operator
        .set_state(pb::SetStateRequest {
            service: "echo".into(),
            instance_id: "e1".into(),
            state: pb::State::Draining as i32,
            ..Default::default()
        })
        .await
        .expect("the operator drains echo");
    operator
        .deregister(pb::DeregisterRequest {
            service: "hello".into(),
            instance_id: "h1".into(),
            lease_id: 0,
        })
        .await
        .expect("the operator deregisters hello");
    assert!(ids_seen_by(&mut operator, "hello").await.is_empty());
    stop(r).await;
}

#[tokio::test]
async fn certificate_files_change_under_live_streams() {
    let dir = scratch("rotation");
    certificates(
        &dir,
        &[
            ("registry", Identity::Registry),
            ("operator", Identity::Operator),
        ],
    );
    let old_ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
    let r = started(&dir).await;

    // A client of the next CA only: not let in while the registry shows
    // the old certificate.
    let next = scratch("rotation-next");
    let next_ca = certificates(&next, &[("operator", Identity::Operator)]);
    refused(
        &r,
        &files(&next, "operator"),
        "a client of the next CA, before",
    )
    .await;

    let mut old = tls_client(&r, &files(&dir, "operator")).await.expect("old");
    let mut watch = old
        .watch(pb::WatchRequest {
            services: vec!["hello".into()],
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    snapshot(&next_change(&mut watch).await);

    // The registry moves to the next CA's certificate and trusts both.
    let both = format!("{old_ca}{}", next_ca.cert_pem());
    std::fs::write(dir.join("ca.pem"), &both).expect("ca bundle");
    next_ca
        .issue(&Leaf::new(
            Identity::Registry,
            &["127.0.0.1", "localhost"],
            30,
        ))
        .expect("issue")
        .write(&dir, "registry")
        .expect("write");
    std::fs::write(next.join("ca.pem"), &both).expect("client bundle");

    // New connections see the new certificate (within the one-second
    // recheck), and the stream opened before keeps delivering.
    let mut fresh = None;
    for _ in 0..50 {
        if let Ok(mut c) = tls_client(&r, &files(&next, "operator")).await
            && c.list_services(pb::ListServicesRequest::default())
                .await
                .is_ok()
        {
            fresh = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut new = fresh.expect("a client of the next CA let in within 5 s of the change");
    register(&mut new, 0, vec![spec("hello", "after")]).await;
    let delta = next_change(&mut watch).await;
    assert_eq!(
        events(&delta)[0]
            .instance
            .as_ref()
            .map(|i| i.spec.as_ref().map_or("", |s| s.instance_id.as_str())),
        Some("after")
    );
    // And the old client's connection still answers.
    old.list_services(pb::ListServicesRequest::default())
        .await
        .expect("the connection made before the change still answers");
    stop(r).await;
}

#[tokio::test]
async fn a_client_reads_its_certificate_files_again() {
    // The registry's own files, and the client's, in two directories.
    let server = scratch("client-reload-server");
    let ca = certificates(&server, &[("registry", Identity::Registry)]);
    let client = scratch("client-reload-client");
    std::fs::write(client.join("ca.pem"), ca.cert_pem()).expect("ca");
    ca.issue(&Leaf::new(Identity::Operator, &[], 30))
        .expect("issue")
        .write(&client, "operator")
        .expect("write");
    let r = started(&server).await;
    // One ClientTls for the whole test, as a process holds one.
    let tls = ClientTls::load(&files(&client, "operator")).expect("client");
    let list = |tls: ClientTls| {
        let grpc = r.grpc;
        async move {
            let endpoint = Endpoint::from_shared(format!("http://{grpc}")).expect("endpoint");
            let channel = switchyard_tls::channel(endpoint, Some(&tls), Some(Identity::Registry))
                .await
                .map_err(|e| format!("{e:?}"))?;
            RegistryClient::new(channel)
                .list_services(pb::ListServicesRequest::default())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    list(tls.clone())
        .await
        .expect("in with the first certificate");

    // The registry now trusts the next CA only, and the client's files
    // become a certificate of that CA: only a client that read its files
    // again gets in.
    let next = DevCa::generate("the next CA").expect("CA");
    std::fs::write(server.join("ca.pem"), next.cert_pem()).expect("server trust");
    next.issue(&Leaf::new(Identity::Operator, &[], 30))
        .expect("issue")
        .write(&client, "operator")
        .expect("write");
    std::fs::write(client.join("ca.pem"), ca.cert_pem()).expect("client trust");
    // First the registry reads its files again: a client of the old CA
    // is refused from then on.
    let old = scratch("client-reload-old");
    std::fs::write(old.join("ca.pem"), ca.cert_pem()).expect("ca");
    ca.issue(&Leaf::new(Identity::Operator, &[], 30))
        .expect("issue")
        .write(&old, "operator")
        .expect("write");
    let old_tls = ClientTls::load(&files(&old, "operator")).expect("old");
    let mut reloaded = false;
    for _ in 0..50 {
        if list(old_tls.clone()).await.is_err() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the registry trusts the next CA only within 5 s");
    // Then the long-lived client, which must present its new certificate.
    let mut outcome = Err(String::new());
    for _ in 0..50 {
        outcome = list(tls.clone()).await;
        if outcome.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outcome.expect("the client presents its new certificate within 5 s");
    stop(r).await;
}
