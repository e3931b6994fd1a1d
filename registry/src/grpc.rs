//! The tonic service: auth, validation, and the calls into the state.

use std::{collections::BTreeSet, pin::Pin, sync::Arc, time::Instant};

use futures_util::StreamExt;
use switchyard_proto::registry::v1::{self as pb, registry_server};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming, metadata::MetadataMap};

use switchyard_runtime::{
    auth::{Caller, Role, Tokens},
    tls::Peer,
};

use crate::{
    config::Limits,
    convert,
    error::Error,
    state::{Registry, Renewal},
    validate, watch,
};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `switchyard.registry.v1.Registry` service.
#[derive(Debug, Clone)]
pub struct RegistryService {
    registry: Arc<Registry>,
    tokens: Arc<Tokens>,
    limits: Limits,
    progress_interval: std::time::Duration,
    shutdown: CancellationToken,
}

/// Records an RPC's latency when dropped.
struct Timer(&'static str, Instant);

impl Drop for Timer {
    fn drop(&mut self) {
        metrics::histogram!("switchyard_registry_rpc_seconds", "method" => self.0)
            .record(self.1.elapsed().as_secs_f64());
    }
}

fn timer(method: &'static str) -> Timer {
    Timer(method, Instant::now())
}

fn bearer(md: &MetadataMap) -> Option<&str> {
    md.get("authorization").and_then(|v| v.to_str().ok())
}

// === impl RegistryService ===

impl RegistryService {
    /// A service over `registry`; `shutdown` ends every watch stream.
    pub fn new(
        registry: Arc<Registry>,
        tokens: Arc<Tokens>,
        limits: Limits,
        progress_interval: std::time::Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            registry,
            tokens,
            limits,
            progress_interval,
            shutdown,
        }
    }

    fn require<T>(&self, req: &Request<T>, role: Role) -> Result<Role, Status> {
        Ok(self.caller(req, role)?.role)
    }

    /// By the client certificate's identity over mutual TLS, else by token.
    fn caller<T>(&self, req: &Request<T>, role: Role) -> Result<Caller, Status> {
        let identity = Peer::identity_of(req.extensions());
        Ok(self.tokens.caller(identity, bearer(req.metadata()), role)?)
    }
}

/// A caller limited to one service may use a lease only if every instance
/// under it is of that service (it could otherwise renew or end another
/// service's instances by guessing a lease id).
fn may_use_lease(registry: &Registry, caller: &Caller, lease_id: u64) -> Result<(), Status> {
    if caller.role == Role::Operator || caller.identity.is_none() {
        return Ok(());
    }
    // The check again for the service found: its error names it.
    match registry.lease_service_where(lease_id, |s| caller.may_register(s).is_err()) {
        Some(service) => Ok(caller.may_register(&service)?),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl registry_server::Registry for RegistryService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let _t = timer("Register");
        let caller = self.caller(&req, Role::Register)?;
        let (lease_id, ttl, specs) = convert::register_from_pb(req.into_inner(), &self.limits)?;
        for spec in &specs {
            caller.may_register(&spec.service)?;
        }
        may_use_lease(&self.registry, &caller, lease_id)?;
        let done = self
            .registry
            .register(lease_id, ttl, specs, caller.role == Role::Operator)
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            lease_id: done.lease_id,
            ttl_seconds: done.ttl_secs,
            position: Some(convert::position_to_pb(&done.position)),
        }))
    }

    type KeepAliveStream = Boxed<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        req: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let caller = Arc::new(self.caller(&req, Role::Register)?);
        let registry = self.registry.clone();
        let epoch = registry.epoch().to_string();
        let shutdown = self.shutdown.clone();
        let answers = req
            .into_inner()
            .then(move |r| {
                let (registry, epoch, caller) = (registry.clone(), epoch.clone(), caller.clone());
                async move {
                    let r = r?;
                    may_use_lease(&registry, &caller, r.lease_id)?;
                    // A fenced replica (or one that cannot reach etcd to
                    // adopt the lease) ends the stream: the client moves on.
                    let (result, ttl) = match registry.keep_alive(r.lease_id).await? {
                        Renewal::Renewed(ttl) => (pb::keep_alive_response::Result::Renewed, ttl),
                        Renewal::Unknown => (pb::keep_alive_response::Result::UnknownLease, 0),
                    };
                    Ok(pb::KeepAliveResponse {
                        lease_id: r.lease_id,
                        result: result as i32,
                        ttl_seconds: ttl,
                        epoch,
                    })
                }
            })
            // Ends the stream cleanly at shutdown so the server can stop.
            .take_until(shutdown.cancelled_owned());
        Ok(Response::new(Box::pin(answers)))
    }

    async fn deregister(
        &self,
        req: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let _t = timer("Deregister");
        let caller = self.caller(&req, Role::Register)?;
        let r = req.into_inner();
        let key = convert::key(&r.service, &r.instance_id)?;
        caller.may_register(&key.service)?;
        let owner = match (caller.role, r.lease_id) {
            (Role::Operator, 0) => None,
            (Role::Operator, id) => Some(id),
            (_, 0) => {
                return Err(Error::Invalid {
                    field: "lease_id".into(),
                    reason: "a register token must name the lease that owns the instance".into(),
                }
                .into());
            }
            (_, id) => Some(id),
        };
        let position = self.registry.deregister(&key, owner).await?;
        Ok(Response::new(pb::DeregisterResponse {
            position: Some(convert::position_to_pb(&position)),
        }))
    }

    async fn revoke_lease(
        &self,
        req: Request<pb::RevokeLeaseRequest>,
    ) -> Result<Response<pb::RevokeLeaseResponse>, Status> {
        let _t = timer("RevokeLease");
        let caller = self.caller(&req, Role::Register)?;
        let lease_id = req.into_inner().lease_id;
        may_use_lease(&self.registry, &caller, lease_id)?;
        if lease_id == 0 {
            return Err(Error::Invalid {
                field: "lease_id".into(),
                reason: "must not be 0".into(),
            }
            .into());
        }
        let (removed, position) = self.registry.revoke(lease_id).await?;
        Ok(Response::new(pb::RevokeLeaseResponse {
            instances_removed: removed,
            position: Some(convert::position_to_pb(&position)),
        }))
    }

    async fn set_state(
        &self,
        req: Request<pb::SetStateRequest>,
    ) -> Result<Response<pb::SetStateResponse>, Status> {
        let _t = timer("SetState");
        self.require(&req, Role::Operator)?;
        let r = req.into_inner();
        let key = convert::key(&r.service, &r.instance_id)?;
        let request = convert::override_request(r)?;
        let (instance, position) = self.registry.set_state(&key, &request).await?;
        tracing::info!(instance = %key, state = ?request.state, weight = ?request.weight, clear = request.clear, reason = %request.reason, expires_in = ?request.expires_in, "operator override");
        Ok(Response::new(pb::SetStateResponse {
            instance: Some(convert::instance_to_pb(&instance)),
            position: Some(convert::position_to_pb(&position)),
        }))
    }

    async fn get_service(
        &self,
        req: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        let _t = timer("GetService");
        let role = self.require(&req, Role::Reader)?;
        let service = req.into_inner().service;
        validate::service("service", &service)?;
        let view = self.registry.service(&service);
        let leases: Vec<u64> = view.instances.iter().map(|i| i.lease_id).collect();
        let left = self.registry.leases_remaining(&leases);
        let mut instances: Vec<_> = view
            .instances
            .iter()
            .zip(left)
            .map(|(i, left)| pb::Instance {
                lease_remaining: left.map(switchyard_proto::duration),
                ..convert::instance_to_pb(i)
            })
            .collect();
        if role != Role::Operator {
            convert::hide_lease_ids(&mut instances);
        }
        Ok(Response::new(pb::GetServiceResponse {
            service,
            instances,
            position: Some(convert::position_to_pb(&view.position)),
            authoritative: view.authoritative,
        }))
    }

    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let _t = timer("ListServices");
        self.require(&req, Role::Reader)?;
        let l = self.registry.list();
        let count = |s: &crate::state::Summary, k: &str| s.by_state.get(k).copied().unwrap_or(0);
        let services = l
            .services
            .iter()
            .map(|s| pb::ServiceSummary {
                service: s.service.clone(),
                instances: s.instances,
                starting: count(s, "STARTING"),
                serving: count(s, "SERVING"),
                draining: count(s, "DRAINING"),
                out_of_service: count(s, "OUT_OF_SERVICE"),
                unhealthy: s.unhealthy,
                expired_held: s.expired_held,
                mod_revision: s.mod_revision,
            })
            .collect();
        let brake = brake_pb(&l.brake);
        Ok(Response::new(pb::ListServicesResponse {
            services,
            brake: Some(brake),
            warming_up: l.warming_up,
            leases: l.leases,
            position: Some(convert::position_to_pb(&l.position)),
            authoritative: l.authoritative,
        }))
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let _t = timer("GetStatus");
        self.require(&req, Role::Reader)?;
        let l = self.registry.list();
        let brake = brake_pb(&l.brake);
        let etcd = self.registry.etcd_status().await.map(|r| match r {
            Ok((members, status)) => pb::EtcdStatus {
                members: members
                    .members
                    .into_iter()
                    .map(|m| pb::EtcdMember {
                        id: m.id,
                        name: m.name,
                        client_urls: m.client_ur_ls,
                    })
                    .collect(),
                leader: status.leader,
                revision: status.header.as_ref().map_or(0, |h| h.revision),
                db_size: status.db_size,
                db_size_in_use: status.db_size_in_use,
                version: status.version,
                member_id: status.header.as_ref().map_or(0, |h| h.member_id),
                error: String::new(),
            },
            Err(e) => pb::EtcdStatus {
                error: e.to_string(),
                ..Default::default()
            },
        });
        Ok(Response::new(pb::GetStatusResponse {
            replica: self.registry.replica().to_string(),
            position: Some(convert::position_to_pb(&l.position)),
            authoritative: l.authoritative,
            warming_up: l.warming_up,
            brake: Some(brake),
            leases: l.leases,
            watchers: u32::try_from(self.registry.watchers()).unwrap_or(u32::MAX),
            store: if etcd.is_some() { "etcd" } else { "file" }.into(),
            etcd,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    type WatchStream = Boxed<pb::WatchResponse>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let role = self.require(&req, Role::Reader)?;
        let r = req.into_inner();
        validate::watched_services("services", &r.services)?;
        let services =
            (!r.services.is_empty()).then(|| r.services.into_iter().collect::<BTreeSet<_>>());
        let rx = watch::spawn(
            self.registry.clone(),
            services,
            convert::position_from_pb(r.since),
            self.progress_interval,
            self.shutdown.clone(),
        );
        let operator = role == Role::Operator;
        let out = ReceiverStream::new(rx).map(move |m| {
            let mut m = convert::watch_to_pb(&m);
            if !operator {
                convert::hide_watch_lease_ids(&mut m);
            }
            Ok(m)
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// The brake as ListServices and GetStatus show it.
fn brake_pb(b: &crate::state::BrakeView) -> pb::BrakeStatus {
    pb::BrakeStatus {
        engaged: b.engaged.is_some(),
        engaged_at: b.engaged.as_ref().map(|e| convert::timestamp(e.0)),
        releases_at: b.engaged.as_ref().map(|e| convert::timestamp(e.1)),
        held_leases: b.held_leases,
        reason: b.engaged.as_ref().map(|e| e.2.clone()).unwrap_or_default(),
    }
}
