//! WebSocket (and any HTTP/1.1 upgrade) tunnels: once the upstream answers
//! 101, both upgraded connections are spliced together in a task of their
//! own, so route reloads never touch them.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Splices the client's and the upstream's upgraded connections; `held`
/// (what counts the endpoint in flight) is kept until the tunnel closes.
pub fn tunnel(client: OnUpgrade, upstream: OnUpgrade, held: impl Send + 'static) {
    tokio::spawn(async move {
        let _held = held;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        metrics::gauge!("switchyard_gateway_tunnels").increment(1.0);
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%error, "tunnel closed with an error");
        }
        metrics::gauge!("switchyard_gateway_tunnels").decrement(1.0);
    });
}
