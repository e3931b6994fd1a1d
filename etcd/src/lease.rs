//! Every lease kept alive over one stream.
//!
//! etcd answers keep-alives on a bidirectional stream, each answer naming
//! its lease; a client that opened one stream per lease (as etcd-client
//! does) would hold as many HTTP/2 streams as leases. Here one task owns
//! one stream, sends each request as it is asked for, and hands each answer
//! to the oldest caller waiting on that lease. When the stream breaks, the
//! callers waiting get an error and the next request opens a new stream
//! (on whichever endpoint is up).

use std::collections::{HashMap, VecDeque};

use tokio::sync::{mpsc, oneshot};
use tonic::Streaming;

use crate::{Client, Error, pb};

type Reply = oneshot::Sender<Result<Option<i64>, Error>>;

/// Keeps leases alive; cheap to clone, one stream for all clones.
#[derive(Debug, Clone)]
pub struct Keeper {
    asks: mpsc::Sender<(i64, Reply)>,
}

// === impl Keeper ===

impl Keeper {
    /// Starts the task that owns the stream.
    pub(crate) fn start(client: Client) -> Self {
        let (asks, rx) = mpsc::channel(1024);
        tokio::spawn(run(client, rx));
        Self { asks }
    }

    /// Renews `lease`: its new TTL in seconds, or `None` when etcd no longer
    /// has it (expired or revoked).
    pub async fn keep_alive(&self, lease: i64) -> Result<Option<i64>, Error> {
        let (reply, answer) = oneshot::channel();
        self.asks
            .send((lease, reply))
            .await
            .map_err(|_| Error::KeepAliveClosed)?;
        answer.await.map_err(|_| Error::KeepAliveClosed)?
    }
}

/// The stream and who waits on it.
struct Stream {
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    answers: Streaming<pb::LeaseKeepAliveResponse>,
}

/// Owns the stream until every [`Keeper`] is dropped.
async fn run(client: Client, mut asks: mpsc::Receiver<(i64, Reply)>) {
    let mut waiting: HashMap<i64, VecDeque<Reply>> = HashMap::new();
    let mut stream: Option<Stream> = None;
    loop {
        tokio::select! {
            ask = asks.recv() => {
                let Some((lease, reply)) = ask else { return };
                let Some(s) = stream.as_ref() else {
                    // The request goes in with the stream: etcd sends the
                    // stream's headers with its first answer.
                    match client.open_keep_alive(lease).await {
                        Ok((requests, answers)) => stream = Some(Stream { requests, answers }),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                    }
                    waiting.entry(lease).or_default().push_back(reply);
                    continue;
                };
                if s.requests.send(pb::LeaseKeepAliveRequest { id: lease }).await.is_err() {
                    let _ = reply.send(Err(Error::KeepAliveClosed));
                    fail_all(&mut waiting);
                    stream = None;
                    continue;
                }
                waiting.entry(lease).or_default().push_back(reply);
            }
            answer = next(&mut stream) => match answer {
                Ok(Some(res)) => {
                    let Some(queue) = waiting.get_mut(&res.id) else { continue };
                    if let Some(reply) = queue.pop_front() {
                        let _ = reply.send(Ok((res.ttl > 0).then_some(res.ttl)));
                    }
                    if queue.is_empty() {
                        waiting.remove(&res.id);
                    }
                }
                Ok(None) | Err(_) => {
                    if let Err(e) = &answer {
                        tracing::debug!(error = %e, "etcd keep-alive stream broke");
                    }
                    fail_all(&mut waiting);
                    stream = None;
                }
            },
        }
    }
}

/// The next answer of the stream, or never when there is none.
async fn next(
    stream: &mut Option<Stream>,
) -> Result<Option<pb::LeaseKeepAliveResponse>, tonic::Status> {
    match stream {
        Some(s) => s.answers.message().await,
        None => std::future::pending().await,
    }
}

/// Tells every waiting caller that the stream broke.
fn fail_all(waiting: &mut HashMap<i64, VecDeque<Reply>>) {
    for (_, queue) in waiting.drain() {
        for reply in queue {
            let _ = reply.send(Err(Error::KeepAliveClosed));
        }
    }
}
