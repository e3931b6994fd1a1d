//! Request bodies on their way upstream: read whole for replay, or
//! streamed with their first frames already read, under the body limit,
//! with a slot where a streamed body notes why it broke.

use std::{
    collections::VecDeque,
    error::Error as StdError,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming};

/// A request body to an upstream through hyper: streamed from the client
/// (with the body limit), or buffered whole so it can be replayed on a retry.
pub type UpstreamBody = Either<Prefixed, Full<Bytes>>;

/// A request body as read from the client: still streaming, or whole.
pub type RequestBody = Either<Prefixed, Bytes>;

/// The body for hyper's client.
pub fn upstream_body(body: RequestBody) -> UpstreamBody {
    match body {
        Either::Left(streamed) => Either::Left(streamed),
        Either::Right(whole) => Either::Right(Full::new(whole)),
    }
}

/// Why a client's request body could not be read to its proper end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// Over the body limit (413).
    TooLarge,
    /// Malformed framing (a bad chunk size, data past a chunk's size), or
    /// cut off by the client (400 to whoever is still listening).
    Malformed,
}

/// Where a streamed body notes its fault, for the request's answer: the
/// body fails the upstream request (hyper then closes the upstream
/// connection mid-body, so the upstream never sees the request whole),
/// and the client is told why (400 or 413) rather than 502.
pub type FaultSlot = Arc<OnceLock<BodyFault>>;

/// A streamed body whose first frames were already read.
#[derive(Debug)]
pub struct Prefixed {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<Limited<Incoming>>,
    fault: FaultSlot,
}

/// Reads what a client body has already delivered, without waiting: a body
/// that is complete by then (a unary gRPC call, a small chunked POST) is
/// buffered and can be replayed; anything still arriving is streamed on
/// (so a bidirectional stream is never held up waiting for its end).
/// A frame that is not there yet gets a few scheduler turns (the
/// connection task may be decoding it right now) before we stop waiting.
///
/// `grace` bounds an extra wait, once per request: a unary gRPC call sends
/// its message and END_STREAM together, so a few milliseconds make it
/// replayable, while a streaming call pays that once at its start.
///
/// A body that fails while read here is refused whole: nothing of it is
/// sent on. One that fails later, while streaming, notes why in `fault`.
pub async fn take_ready(
    body: Incoming,
    replay: usize,
    limit: usize,
    grace: Duration,
    fault: &FaultSlot,
) -> Result<RequestBody, BodyFault> {
    let mut body = Limited::new(body, limit);
    let mut buf = BytesMut::new();
    let mut frames = VecDeque::new();
    let mut turns = 0;
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let mut next = body.frame().now_or_never();
        while next.is_none() && turns < 4 {
            turns += 1;
            tokio::task::yield_now().await;
            next = body.frame().now_or_never();
        }
        if next.is_none() && frames.is_empty() && tokio::time::Instant::now() < deadline {
            next = tokio::time::timeout_at(deadline, body.frame()).await.ok();
        }
        match next {
            Some(None) => {
                return Ok(if frames.is_empty() {
                    Either::Right(buf.freeze())
                } else {
                    frames.push_front(Frame::data(buf.freeze()));
                    Either::Left(Prefixed {
                        frames,
                        rest: None,
                        fault: fault.clone(),
                    })
                });
            }
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if frames.is_empty() && buf.len() + data.len() <= replay => {
                    buf.extend_from_slice(&data)
                }
                Ok(data) => frames.push_back(Frame::data(data)),
                Err(trailers) => frames.push_back(trailers),
            },
            Some(Some(Err(e))) => return Err(BodyFault::of(&*e)),
            None => {
                frames.push_front(Frame::data(buf.freeze()));
                return Ok(Either::Left(Prefixed {
                    frames,
                    rest: Some(body),
                    fault: fault.clone(),
                }));
            }
        }
    }
}

// === impl BodyFault ===

impl BodyFault {
    /// What a body error from `Limited` over hyper's body means.
    pub fn of(e: &(dyn StdError + 'static)) -> Self {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            Self::TooLarge
        } else {
            Self::Malformed
        }
    }
}

// === impl Prefixed ===

impl Body for Prefixed {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        while let Some(frame) = self.frames.pop_front() {
            if frame.data_ref().is_some_and(Bytes::is_empty) {
                continue;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let _ = self.fault.set(BodyFault::of(&**e));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }
}
