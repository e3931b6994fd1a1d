//! Feeding a discovery view to tower's and tonic's balancers.
//!
//! [`changes`] turns a service's routable set into a stream of
//! `tower::discover::Change`, which is a `tower::discover::Discover`;
//! [`balanced_channel`] feeds tonic's own balanced `Channel` with it.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc};

use futures_util::Stream;
use switchyard_proto::registry::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, channel::Change as ChannelChange};
use tower::discover::Change;

use crate::discovery::{Discovery, View, routable};

/// The routable instances of `service` as a `Discover` stream keyed by
/// instance id. It ends when the discovery cache stops.
pub fn changes(
    discovery: &Discovery,
    service: &str,
) -> impl Stream<Item = Result<Change<String, pb::Instance>, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(discovery.changes(), service.to_string(), tx));
    tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok)
}

/// A tonic `Channel` that balances over `service`'s routable instances,
/// following every change of the view.
pub fn balanced_channel(discovery: &Discovery, service: &str) -> Channel {
    let (channel, sender) = Channel::balance_channel::<String>(64);
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(follow(discovery.changes(), service.to_string(), tx));
    tokio::spawn(async move {
        while let Some(change) = rx.recv().await {
            let change = match change {
                Change::Insert(id, instance) => match endpoint(&instance) {
                    Some(e) => ChannelChange::Insert(id, e),
                    None => continue,
                },
                Change::Remove(id) => ChannelChange::Remove(id),
            };
            if sender.send(change).await.is_err() {
                return;
            }
        }
    });
    channel
}

fn endpoint(instance: &pb::Instance) -> Option<Endpoint> {
    let address = &instance.spec.as_ref()?.address;
    Endpoint::from_shared(format!("http://{address}")).ok()
}

async fn follow(
    mut view: watch::Receiver<Arc<View>>,
    service: String,
    tx: mpsc::Sender<Change<String, pb::Instance>>,
) {
    let mut current: BTreeMap<String, pb::Instance> = BTreeMap::new();
    loop {
        let next: BTreeMap<String, pb::Instance> = {
            let v = view.borrow_and_update();
            let instances = v
                .services
                .get(&service)
                .cloned()
                .unwrap_or_else(|| Arc::new([]));
            routable(&instances)
                .into_iter()
                .filter_map(|i| Some((i.spec.as_ref()?.instance_id.clone(), i)))
                .collect()
        };
        for id in current.keys().filter(|id| !next.contains_key(*id)) {
            if tx.send(Change::Remove(id.clone())).await.is_err() {
                return;
            }
        }
        for (id, instance) in &next {
            let moved = current.get(id).is_none_or(|old| old.spec != instance.spec);
            if moved
                && tx
                    .send(Change::Insert(id.clone(), instance.clone()))
                    .await
                    .is_err()
            {
                return;
            }
        }
        current = next;
        if view.changed().await.is_err() {
            return;
        }
    }
}
