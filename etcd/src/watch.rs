//! One etcd watch on one stream, as a sequence of [`WatchMessage`]s.
//!
//! etcd splits a revision whose events pass its request limit into
//! fragments when the watch asks for it (`fragment`); the stream here asks,
//! and hands the caller each revision's events whole. Compaction and
//! cancellation are messages, not errors: a caller that was behind a
//! compaction relists, as Kubernetes' watch cache does on a 410.

use tokio::sync::mpsc;
use tonic::{Streaming, transport::Channel};

use crate::{Error, pb, require_leader};

/// What a watch reports.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMessage {
    /// The events of one or more revisions, whole, in order; `revision` is
    /// the header's (the store's revision when they were sent).
    Events {
        /// The header revision.
        revision: i64,
        /// The events, fragments joined.
        events: Vec<pb::Event>,
    },
    /// No events, but everything up to `revision` has been sent (a
    /// progress notification or an answer to [`WatchStream::request_progress`]).
    Progress {
        /// Everything up to here has been seen.
        revision: i64,
    },
    /// The start revision was compacted away: the caller must relist.
    Compacted {
        /// The oldest revision still kept.
        compact_revision: i64,
    },
    /// etcd cancelled the watch (for example, its member lost the leader).
    Canceled {
        /// etcd's reason.
        reason: String,
    },
}

/// A created watch. Dropping it ends the stream.
#[derive(Debug)]
pub struct WatchStream {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
    /// Events of a revision whose fragments are still coming.
    partial: Vec<pb::Event>,
    /// An end etcd reported with its create answer, for the first `next`.
    early: Option<pb::WatchResponse>,
    /// Reported once; the stream then ends.
    done: bool,
}

// === impl WatchStream ===

impl WatchStream {
    /// Opens a stream and creates the watch on `[key, range_end)` from
    /// `start_revision`; returns once etcd confirmed it (or said that the
    /// revision is compacted: the first message then says so).
    pub(crate) async fn open(
        mut client: pb::watch_client::WatchClient<Channel>,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
    ) -> Result<Self, Error> {
        let (requests, rx) = mpsc::channel(4);
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: key.to_vec(),
                    range_end: range_end.to_vec(),
                    start_revision,
                    progress_notify: true,
                    fragment: true,
                    ..Default::default()
                },
            )),
        };
        requests
            .send(create)
            .await
            .map_err(|_| Error::Watch("request channel closed".into()))?;
        let responses = client
            .watch(require_leader(tokio_stream::wrappers::ReceiverStream::new(
                rx,
            )))
            .await?
            .into_inner();
        let mut stream = Self {
            requests,
            responses,
            partial: Vec::new(),
            early: None,
            done: false,
        };
        stream.created().await?;
        Ok(stream)
    }

    /// Waits for etcd's answer to the create request.
    async fn created(&mut self) -> Result<(), Error> {
        match self.responses.message().await? {
            Some(res) if res.created => {
                // A create at a compacted revision answers created and
                // canceled at once; keep it for the first `next`.
                if res.canceled || res.compact_revision > 0 {
                    self.early = Some(res);
                }
                Ok(())
            }
            Some(res) => Err(Error::Watch(format!(
                "expected the watch to be created, got {res:?}"
            ))),
            None => Err(Error::Watch(
                "the stream ended before the watch was created".into(),
            )),
        }
    }

    /// Asks etcd to report progress now (answered as
    /// [`WatchMessage::Progress`]).
    pub async fn request_progress(&self) -> Result<(), Error> {
        let req = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                pb::WatchProgressRequest {},
            )),
        };
        self.requests
            .send(req)
            .await
            .map_err(|_| Error::Watch("the stream is closed".into()))
    }

    /// The next message; `Ok(None)` once the watch has ended (after a
    /// [`WatchMessage::Compacted`] or [`WatchMessage::Canceled`], or when
    /// the stream closed), an error when the stream broke: the caller
    /// watches again from the revision after the last it saw.
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, Error> {
        if self.done {
            return Ok(None);
        }
        if let Some(res) = self.early.take() {
            return Ok(Some(self.end(&res)));
        }
        loop {
            let Some(res) = self.responses.message().await? else {
                self.done = true;
                return Ok(None);
            };
            if res.canceled || res.compact_revision > 0 {
                return Ok(Some(self.end(&res)));
            }
            let revision = res.header.as_ref().map_or(0, |h| h.revision);
            if res.fragment {
                self.partial.extend(res.events);
                continue;
            }
            if res.events.is_empty() && self.partial.is_empty() {
                return Ok(Some(WatchMessage::Progress { revision }));
            }
            let mut events = std::mem::take(&mut self.partial);
            events.extend(res.events);
            return Ok(Some(WatchMessage::Events { revision, events }));
        }
    }

    /// The message for a response that ends the watch.
    fn end(&mut self, res: &pb::WatchResponse) -> WatchMessage {
        self.done = true;
        if res.compact_revision > 0 {
            WatchMessage::Compacted {
                compact_revision: res.compact_revision,
            }
        } else {
            WatchMessage::Canceled {
                reason: res.cancel_reason.clone(),
            }
        }
    }
}
