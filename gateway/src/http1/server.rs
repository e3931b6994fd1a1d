//! Plain HTTP/1.1 client connections, served by the connection's own task:
//! the request head is parsed with `httparse` straight into the request's
//! parts, a body of known length is read whole, and the answer's head and
//! first bytes go out in one `writev`.
//!
//! Why not hyper's server for these: in the profile in `bench/PROFILE.md`
//! its HTTP/1 dispatcher, buffered I/O and encoder were about 7,800 of the
//! gateway's 25,300 instructions per proxied request, more than the whole
//! gap to nginx. What this path does not serve it hands to hyper, with the
//! bytes read so far put back in front of the socket, and hyper serves the
//! connection from then on: HTTP/2 with prior knowledge, request bodies
//! that are chunked or larger than the replay buffer (they stream),
//! upgrades (WebSocket), `Expect`, and `CONNECT`.

use std::{
    cell::RefCell,
    io::{self, IoSlice},
    mem::MaybeUninit,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode, Uri, Version, header, request::Parts};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::{
    codec::{Fields, MAX_HEADERS, connection_keep_alive, content_length},
    response::{Answer, refuse, write_response},
};
use crate::{
    app::{Gateway, Peer},
    proxy::Inbound,
    timer::Sleep,
};

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// Deadline for request headers.
    pub header_timeout: Duration,
    /// Largest header block.
    pub max_header_bytes: usize,
}

/// Room kept free for a read.
const READ_SIZE: usize = 8 * 1024;
/// Where hyper's HTTP/2 connection preface starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// How a connection's time with this path ended.
#[derive(Debug)]
pub enum Ended {
    /// Closed (by either side, a deadline, or the drain).
    Closed,
    /// To be served by hyper from here on.
    Handoff(Rewound),
}

/// A socket with bytes already read from it put back in front.
#[derive(Debug)]
pub struct Rewound {
    read: Bytes,
    io: TcpStream,
}

/// A parsed request head (its method, target, version and fields are put
/// into the connection's [`Parts`]).
struct Head {
    /// The body's declared length (0 without one).
    body: usize,
    keep_alive: bool,
    /// The client takes trailers (`TE: trailers`).
    trailers: bool,
}

/// What the front of the buffer holds.
enum Parsed {
    /// A request this path serves.
    Request(Head),
    /// Not all of the head yet.
    Partial,
    /// One for hyper.
    Handoff,
    /// A head to refuse with this status, closing the connection.
    Refuse(StatusCode),
}

/// Serves `io` until it closes, or until a request this path leaves to
/// hyper (see the module doc).
pub async fn serve(
    gw: &Arc<Gateway>,
    io: TcpStream,
    peer: &Peer,
    settings: ConnSettings,
    draining: &CancellationToken,
) -> Ended {
    let mut conn = Connection {
        gw,
        io,
        peer,
        settings,
        scratch: None,
    };
    // Registered with the token once, not per request.
    let mut drained = pin!(draining.cancelled());
    // One header deadline for the connection, moved for each head.
    let mut deadline = gw
        .timer()
        .sleep_until(Instant::now() + settings.header_timeout);
    loop {
        // The head, within the header deadline (which also bounds how long
        // a kept-alive connection may sit idle, as with hyper's setting).
        deadline.reset(Instant::now() + settings.header_timeout);
        let head = match conn
            .next_head(&mut deadline, drained.as_mut(), draining)
            .await
        {
            Next::Request(head) => head,
            Next::Handoff => {
                return Ended::Handoff(Rewound {
                    read: conn.scratch.map_or_else(Bytes::new, |s| s.buf.freeze()),
                    io: conn.io,
                });
            }
            Next::Close => return Ended::Closed,
        };
        // (The rest of the body is waited for only when it is not all in.)
        let body_in = conn.scratch().buf.len() >= head.body;
        // The answer is boxed: the request's whole path (routing, the
        // attempts, the upstream exchange, the writer) is most of this
        // future's size, which an idle connection would carry inline.
        if !(body_in || conn.read_body(head.body, &mut deadline).await)
            || !Box::pin(conn.answer(head, &mut deadline, draining)).await
        {
            return Ended::Closed;
        }
    }
}

/// A client connection on this path.
struct Connection<'a> {
    gw: &'a Arc<Gateway>,
    io: TcpStream,
    peer: &'a Peer,
    settings: ConnSettings,
    /// Its buffers while it has bytes to serve; lent back to the worker
    /// while it is idle.
    scratch: Option<Box<Scratch>>,
}

/// What a connection needs while it serves a request: the read buffer,
/// the request's parts and the answer's head. An idle connection gives it
/// back to its worker's spares, so that thousands of idle keep-alive
/// connections hold a socket and little else (with a scratch each, 10,000
/// of them held 16 KB apiece; `bench/run.sh idle`); the allocations are
/// reused from one request to the next all the same.
struct Scratch {
    /// What was read and not yet served.
    buf: BytesMut,
    /// One request's parts, refilled for each head: its header map keeps
    /// its room, and the request is lent to the proxy, not moved through
    /// each layer of it.
    parts: Parts,
    /// The answer's head being written.
    out: Vec<u8>,
}

/// Spare scratches a worker keeps (the rest are freed).
const MAX_SPARE: usize = 256;

thread_local! {
    /// This thread's (worker's) spare scratches, boxed: a connection
    /// holds one as a pointer, where a scratch (about 260 bytes) would be
    /// copied in and out of the list on every request.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Scratch>>> = const { RefCell::new(Vec::new()) };
    /// Where a head's fields sit while it is parsed (1.6 KB; parsing never
    /// waits, so one per thread serves every connection).
    static FIELDS: RefCell<Box<Fields>> = RefCell::new(Fields::new());
}

/// What comes next on a connection.
enum Next {
    /// A request this path serves.
    Request(Head),
    /// One for hyper, with the bytes read so far.
    Handoff,
    /// The end (the client's, a refused head, the drain, the deadline).
    Close,
}

// === impl Scratch ===

impl Scratch {
    /// A spare one of this worker's, or a new one.
    fn take() -> Box<Self> {
        SPARE.with_borrow_mut(Vec::pop).unwrap_or_else(|| {
            Box::new(Self {
                buf: BytesMut::with_capacity(READ_SIZE),
                parts: Request::new(()).into_parts().0,
                out: Vec::with_capacity(1024),
            })
        })
    }

    /// Back to this worker's spares, unless it grew large (a body read
    /// whole) or there are spares enough.
    fn give_back(self: Box<Self>) {
        if self.buf.capacity() > 2 * READ_SIZE || self.out.capacity() > 2 * READ_SIZE {
            return;
        }
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < MAX_SPARE {
                spare.push(self);
            }
        });
    }
}

// === impl Connection ===

impl Connection<'_> {
    /// The connection's scratch, taken from the worker's spares if it has
    /// none.
    fn scratch(&mut self) -> &mut Scratch {
        self.scratch.get_or_insert_with(Scratch::take)
    }

    /// The next request head, within `deadline`; a head that cannot be
    /// served is answered before the connection closes.
    async fn next_head(
        &mut self,
        deadline: &mut Sleep,
        drained: Pin<&mut WaitForCancellationFuture<'_>>,
        draining: &CancellationToken,
    ) -> Next {
        let read = tokio::select! {
            biased;
            read = self.read_head(drained, draining) => Ok(read),
            () = deadline => Err(()),
        };
        match read {
            Ok(Some(Parsed::Request(head))) => Next::Request(head),
            Ok(Some(Parsed::Handoff)) => Next::Handoff,
            Ok(Some(Parsed::Refuse(status))) => {
                refuse(&mut self.io, status).await;
                Next::Close
            }
            Ok(Some(Parsed::Partial) | None) => Next::Close,
            Err(()) => {
                // Answered only if a head had begun (hyper closes an idle
                // connection without a word, and so do we).
                if self.scratch.as_ref().is_some_and(|s| !s.buf.is_empty()) {
                    refuse(&mut self.io, StatusCode::REQUEST_TIMEOUT).await;
                }
                Next::Close
            }
        }
    }

    /// Reads until a whole head is parsed (`None`: the connection ended,
    /// or the drain came while it was idle).
    async fn read_head(
        &mut self,
        mut drained: Pin<&mut WaitForCancellationFuture<'_>>,
        draining: &CancellationToken,
    ) -> Option<Parsed> {
        let (max_head, replay) = (self.settings.max_header_bytes, self.gw.limits().replay);
        loop {
            let pending = match self.scratch.as_deref_mut() {
                Some(s) if !s.buf.is_empty() => {
                    let parsed = FIELDS.with_borrow_mut(|fields| {
                        parse(&mut s.buf, fields, &mut s.parts, max_head, replay)
                    });
                    match parsed {
                        Parsed::Partial => true,
                        parsed => return Some(parsed),
                    }
                }
                _ => false,
            };
            let read = if pending {
                let buf = &mut self.scratch.get_or_insert_with(Scratch::take).buf;
                buf.reserve(READ_SIZE);
                self.io.read_buf(buf).await
            } else {
                // Idle: what is there is read with the scratch at hand; if
                // nothing is, the scratch goes back to the worker until
                // bytes come, and the drain closes the connection.
                if draining.is_cancelled() {
                    return None;
                }
                if let Some(scratch) = self.scratch.as_deref_mut() {
                    match read_now(&mut self.io, &mut scratch.buf) {
                        Poll::Ready(Ok(0) | Err(_)) => return None,
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Pending => {}
                    }
                }
                if let Some(scratch) = self.scratch.take() {
                    scratch.give_back();
                }
                tokio::select! {
                    biased;
                    ready = self.io.readable() => ready.ok()?,
                    () = drained.as_mut() => return None,
                }
                let buf = &mut self.scratch.get_or_insert_with(Scratch::take).buf;
                match read_now(&mut self.io, buf) {
                    Poll::Ready(read) => read,
                    Poll::Pending => continue,
                }
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The rest of a declared body of `len` bytes, with no pause longer
    /// than the header timeout (nginx's `client_body_timeout` works so): a
    /// client that declares more than it sends is answered 408 and closed,
    /// not held. Whether the connection goes on.
    async fn read_body(&mut self, len: usize, deadline: &mut Sleep) -> bool {
        let Self {
            io,
            scratch,
            settings,
            ..
        } = self;
        let buf = &mut scratch.get_or_insert_with(Scratch::take).buf;
        while buf.len() < len {
            deadline.reset(Instant::now() + settings.header_timeout);
            buf.reserve(len - buf.len());
            let read = tokio::select! {
                biased;
                read = io.read_buf(buf) => read,
                () = &mut *deadline => {
                    refuse(io, StatusCode::REQUEST_TIMEOUT).await;
                    return false;
                }
            };
            match read {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    }

    /// Serves the request in `parts` and writes its answer; whether the
    /// connection may serve another.
    async fn answer(
        &mut self,
        head: Head,
        deadline: &mut Sleep,
        draining: &CancellationToken,
    ) -> bool {
        // The header deadline is left where it is while the request is
        // served (a proxied one moves it to each try's deadline): unpolled,
        // it costs a long answer one needless wake-up at most, where moving
        // it out of the way cost every request a second reset.
        let Head {
            body,
            keep_alive,
            trailers,
        } = head;
        let Self {
            gw,
            io,
            peer,
            scratch,
            ..
        } = self;
        let Scratch { buf, parts, out } = &mut **scratch.get_or_insert_with(Scratch::take);
        let body = buf.split_to(body).freeze();
        let head_only = parts.method == Method::HEAD;
        let version = parts.version;
        // The header deadline is idle until the next head: the request's
        // timeouts borrow it.
        let (res, id) = gw
            .respond(parts, Inbound::Whole(body), peer, Some(deadline))
            .await;
        // The gateway's own answers say `connection: close` after a
        // malformed request (upstream answers lose theirs as hop-by-hop).
        let closing = res.headers().contains_key(header::CONNECTION);
        let keep_alive = keep_alive && !closing && !draining.is_cancelled();
        let answer = Answer {
            head_only,
            version,
            keep_alive,
            trailers,
        };
        match write_response(io, out, res, &id, answer).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let _ = io.shutdown().await;
                return false;
            }
        }
        // The request's target and field values are slices of the read
        // buffer: let go of them, so that the next read reuses the buffer
        // (held, it cannot: each request then cost a new one, two
        // allocations and a cold 8 KiB).
        parts.headers.clear();
        parts.uri = Uri::default();
        true
    }
}

/// Reads what `io` has into `buf` without waiting, through tokio's
/// `AsyncRead`, which knows a short read drained the socket and marks it
/// not readable (`try_read_buf` leaves it readable): so the next idle
/// check costs no system call, where it cost a read that found nothing
/// after every request (4 receives per proxied request against nginx's 2,
/// counted with `perf stat -e 'syscalls:sys_enter_recvfrom'`). Pending
/// when the socket is not readable (the wake-up registered is a no-op's:
/// the caller waits with `readable()`, which registers its own).
fn read_now(io: &mut TcpStream, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
    buf.reserve(READ_SIZE);
    pin!(io.read_buf(buf)).poll(&mut Context::from_waker(Waker::noop()))
}

/// Parses the head at the front of `buf`; a request's head is split off
/// it into `parts`, its header values slices of the head's bytes (no copy
/// each). `parts` holds the request when one is returned.
fn parse(
    buf: &mut BytesMut,
    fields: &mut Fields,
    parts: &mut Parts,
    max_head: usize,
    replay: usize,
) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    if buf.starts_with(&H2_PREFACE[..buf.len().min(H2_PREFACE.len())]) {
        // HTTP/2 with prior knowledge, or not enough bytes to tell yet.
        return if buf.len() >= H2_PREFACE.len() {
            Parsed::Handoff
        } else {
            Parsed::Partial
        };
    }
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Parsed::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Parsed::Refuse(StatusCode::BAD_REQUEST),
    };
    if len > max_head {
        return Parsed::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Refuse(StatusCode::BAD_REQUEST);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Refuse(StatusCode::BAD_REQUEST);
    };
    if method == Method::CONNECT {
        return Parsed::Handoff;
    }
    // The target shares the head's bytes too, once it is split off.
    let target = (path.as_ptr() as usize - buf.as_ptr() as usize, path.len());
    let version = if req.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let Framing {
        length,
        keep_alive,
        trailers,
    } = match framing(req.headers, version) {
        Ok(framing) => framing,
        Err(parsed) => return parsed,
    };
    let body = length.unwrap_or(0);
    if body > replay {
        // Too large to hold for replay: it streams, through hyper.
        return Parsed::Handoff;
    }
    fields.fill(buf, req.headers);
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1)) else {
        return Parsed::Refuse(StatusCode::BAD_REQUEST);
    };
    if fields.refill(&head, &mut parts.headers).is_err() {
        return Parsed::Refuse(StatusCode::BAD_REQUEST);
    }
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    // Nothing a previous request left (this path takes no upgrades, the
    // only extension the proxy reads).
    parts.extensions.clear();
    Parsed::Request(Head {
        body,
        keep_alive,
        trailers,
    })
}

/// What a request's fields say about its framing and its connection.
struct Framing {
    /// The declared body length.
    length: Option<usize>,
    keep_alive: bool,
    /// The client takes trailers (`TE: trailers`).
    trailers: bool,
}

/// Reads the fields that frame a request: one `Content-Length` (the same
/// value twice is one), `Connection` and `TE`. `Err` says what to do with
/// the request instead: a body that streams, an upgrade or a wait for
/// 100 Continue goes to hyper, a length parsers would read differently is
/// refused.
fn framing(headers: &[httparse::Header<'_>], version: Version) -> Result<Framing, Parsed> {
    let mut keep_alive = version == Version::HTTP_11;
    let mut length: Option<usize> = None;
    let mut trailers = false;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = content_length(h.value).and_then(|n| usize::try_from(n).ok()) else {
                return Err(Parsed::Refuse(StatusCode::BAD_REQUEST));
            };
            if length.is_some_and(|l| l != n) {
                return Err(Parsed::Refuse(StatusCode::BAD_REQUEST));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            // A streamed body, an upgrade or a wait for 100 Continue.
            return Err(Parsed::Handoff);
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_keep_alive(h.value, version == Version::HTTP_10, &mut keep_alive);
        } else if name.eq_ignore_ascii_case(b"te") {
            trailers |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
    }
    Ok(Framing {
        length,
        keep_alive,
        trailers,
    })
}

/// What this path makes of the request head at the front of `bytes`: the
/// request-smuggling boundary, opened for the fuzz targets in `fuzz/` and
/// the tests below. The connection's own loop calls [`parse`] directly.
#[doc(hidden)]
#[derive(Debug)]
pub enum HeadRead {
    /// A request this path serves.
    Request {
        /// Bytes of the head (the body starts there).
        head: usize,
        /// Bytes of the body (declared by `Content-Length`).
        body: usize,
        /// Whether the connection may serve another request after it.
        keep_alive: bool,
        /// The method, target, version and fields.
        parts: Box<Parts>,
    },
    /// Not all of the head yet.
    Partial,
    /// One for hyper's server (with every byte).
    Handoff,
    /// Refused with this status, and the connection closed.
    Refuse(StatusCode),
}

#[doc(hidden)]
pub fn read_head(bytes: &[u8], max_head: usize, replay: usize) -> HeadRead {
    let mut buf = BytesMut::from(bytes);
    let mut fields = Fields::new();
    let (mut parts, ()) = Request::new(()).into_parts();
    match parse(&mut buf, &mut fields, &mut parts, max_head, replay) {
        Parsed::Request(h) => HeadRead::Request {
            head: bytes.len() - buf.len(),
            body: h.body,
            keep_alive: h.keep_alive,
            parts: Box::new(parts),
        },
        Parsed::Partial => HeadRead::Partial,
        Parsed::Handoff => HeadRead::Handoff,
        Parsed::Refuse(status) => HeadRead::Refuse(status),
    }
}

// === impl Rewound ===

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    /// What every open connection of this path holds while idle: its
    /// future (the answer boxed apart: 664 bytes here) and no scratch.
    /// With the request's path inline it was 3,240 bytes.
    #[tokio::test]
    async fn an_idle_connection_holds_a_small_future() {
        let file = crate::routes::RoutesFile::parse("").expect("routes");
        let gw = Arc::new(crate::gateway(&crate::Config::default(), file).expect("gateway"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (io, from) = listener.accept().await.expect("accept");
        let peer = Peer::new(from, false);
        let settings = ConnSettings {
            header_timeout: Duration::from_secs(10),
            max_header_bytes: LIMIT,
        };
        let draining = CancellationToken::new();
        let conn = serve(&gw, io, &peer, settings, &draining);
        let size = std::mem::size_of_val(&conn);
        assert!(size <= 1024, "a connection's future is {size} bytes");
    }

    fn read(bytes: &[u8]) -> HeadRead {
        read_head(bytes, LIMIT, LIMIT)
    }

    #[test]
    fn a_head_and_its_declared_body_are_one_request() {
        let raw = b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next";
        let HeadRead::Request {
            head,
            body,
            keep_alive,
            parts,
        } = read(raw)
        else {
            panic!("a request");
        };
        assert_eq!((head, body, keep_alive), (raw.len() - 14, 5, true));
        assert_eq!(
            (parts.method.as_str(), parts.uri.to_string()),
            ("POST", "/x?y=1".into())
        );
        assert_eq!(parts.headers["host"], "a");
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            HeadRead::Partial
        ));
        assert!(matches!(
            read(b"GET / HTTP/1.0\r\n\r\n"),
            HeadRead::Request {
                keep_alive: false,
                ..
            }
        ));
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\nConnection: x, close\r\n\r\n"),
            HeadRead::Request {
                keep_alive: false,
                ..
            }
        ));
    }

    #[test]
    fn lengths_that_parsers_read_differently_are_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"GARBAGE\r\n\r\n",
        ] {
            assert!(
                matches!(read(raw), HeadRead::Refuse(StatusCode::BAD_REQUEST)),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // The same length twice is one length.
        assert!(matches!(
            read(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
            HeadRead::Request { body: 3, .. }
        ));
    }

    #[test]
    fn streamed_bodies_upgrades_and_http2_go_to_hyper() {
        for raw in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            // Beside a length too: hyper's server takes the chunked framing
            // and closes the connection after the answer (RFC 9112 §6.1).
            b"POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
        ] {
            assert!(
                matches!(read(raw), HeadRead::Handoff),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn heads_past_the_limit_are_431() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', LIMIT));
        assert!(matches!(
            read(&raw),
            HeadRead::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        ));
        raw.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            read(&raw),
            HeadRead::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        ));
    }

    #[test]
    fn more_fields_than_the_limit_are_431_and_the_limit_itself_is_served() {
        let head = |n: usize| {
            let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                raw.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\n");
            raw
        };
        assert!(matches!(read(&head(MAX_HEADERS)), HeadRead::Request { .. }));
        assert!(matches!(
            read(&head(MAX_HEADERS + 1)),
            HeadRead::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        ));
    }

    #[test]
    fn bare_lf_line_ends_read_as_the_same_request_as_crlf() {
        // RFC 9112 §2.2 lets a recipient take a bare LF for a line end, as
        // hyper's server does (the differential fuzz target holds the two
        // to the same reading); the request goes upstream with CRLF, since
        // the gateway writes its head anew.
        let lf = b"POST /a HTTP/1.1\nHost: h\nContent-Length: 2\nX: 1\n\nokGET";
        let crlf = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX: 1\r\n\r\nokGET";
        let (
            HeadRead::Request {
                head: a,
                body: 2,
                parts: pa,
                ..
            },
            HeadRead::Request {
                head: b,
                body: 2,
                parts: pb,
                ..
            },
        ) = (read(lf), read(crlf))
        else {
            panic!("both are requests with a 2-byte body");
        };
        assert_eq!(
            (a, b),
            (lf.len() - 5, crlf.len() - 5),
            "the body starts after the blank line"
        );
        assert_eq!(
            (pa.uri.path(), pa.headers.len()),
            (pb.uri.path(), pb.headers.len())
        );
        assert_eq!(
            (&pa.headers["host"], &pa.headers["x"]),
            (&pb.headers["host"], &pb.headers["x"])
        );
    }
}
