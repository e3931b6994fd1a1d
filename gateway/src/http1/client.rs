//! A keep-alive HTTP/1.1 upstream connection driven by the request's own
//! task: the request head and a buffered body are written with one
//! `writev`, the response head is parsed with `httparse` (as hyper does)
//! into a header map, or its header lines kept as they came when nothing on
//! the way reads them ([`RawFields`]), and the response body is read from
//! the socket in the body's
//! `poll_frame`, so the bytes go from the upstream socket to the client's
//! without a second task in between.
//!
//! Why not hyper's client connection here: it runs as a task of its own that
//! the request reaches over a channel, and its answer comes back over a
//! oneshot and its body over another channel. In the profile in
//! `bench/PROFILE.md` that task, the channels and the wake-ups between the
//! two tasks were about a third of the gateway's user CPU per proxied
//! request, the largest cost left after hyper-util's pool was replaced.
//! hyper's client still serves what needs a connection that runs on its
//! own: request bodies streamed from the client (an upstream may answer
//! while they still arrive) and upgrades (WebSocket).

use std::{
    future::Future as _,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header,
    uri::{Authority, PathAndQuery},
};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    codec::{Fields, MAX_HEAD, MAX_HEADERS, connection_keep_alive, content_length, field, invalid},
    framing::Framing,
};

/// First read size; it doubles while reads fill it, up to `MAX_READ`.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// One upstream connection. Its state lives in one allocation made when
/// it connects, so the response body that owns it while reading stays small
/// (responses are moved a dozen times on their way to the client).
#[derive(Debug)]
pub struct Conn(Box<ConnState>);

#[derive(Debug)]
struct ConnState {
    io: TcpStream,
    /// What was read and not yet handed on.
    buf: BytesMut,
    /// The request head being written (kept to reuse its allocation).
    head: Vec<u8>,
    /// Where the last response head's fields were.
    fields: Box<Fields>,
    read_size: usize,
}

/// The request to write: everything but the body comes from the client's
/// request after the gateway's header edits.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The upstream path and query.
    pub path: &'a PathAndQuery,
    /// The headers to send (hop-by-hop ones already removed).
    pub headers: &'a HeaderMap,
    /// Sent after them, each instead of any of the same name in `headers`
    /// (the gateway's X-Forwarded-*, request id, trace context).
    pub extra: &'a [(&'static HeaderName, HeaderValue)],
    /// Sent as `Host` when `headers` has none.
    pub authority: &'a Authority,
    /// The answer's header lines may be kept as they came ([`RawFields`])
    /// instead of parsed into its header map: only the gateway's own
    /// HTTP/1.1 client path writes them, and only when nothing on the way
    /// reads the answer's headers.
    pub raw_answer: bool,
}

/// An answer's header lines as the upstream sent them (each ending in
/// CRLF), passed on to the client without a header map in between. Kept
/// only when there is nothing to take out: no hop-by-hop field, no
/// `x-request-id` (the gateway sets its own).
#[derive(Debug, Clone)]
pub struct RawFields {
    /// The lines, from the first field to the blank line (not included).
    pub lines: Bytes,
    /// They carry a `Date`.
    pub date: bool,
    /// They carry a `Content-Length`.
    pub length: bool,
}

/// Why a request on a connection got no (complete) response head.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RequestError {
    /// What went wrong.
    pub error: io::Error,
    /// Whether any byte of the request was written.
    pub written: bool,
}

/// A response body read from its connection as it is polled. Once read to
/// its end, a connection that may be reused goes to `on_end`.
#[derive(Debug)]
pub struct ResponseBody<R: Reuse> {
    conn: Option<Conn>,
    raw: Option<RawFields>,
    framing: Framing,
    keep_alive: bool,
    on_end: Option<R>,
}

/// Where a connection goes when its response body has been read.
pub trait Reuse {
    /// Takes the connection for the next request.
    fn reuse(self, conn: Conn);
}

// === impl Conn ===

impl Conn {
    /// A connection over `io` (connected by the pool).
    pub fn new(io: TcpStream) -> Self {
        Self(Box::new(ConnState {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            fields: Fields::new(),
            read_size: MIN_READ,
        }))
    }

    /// Whether an idle connection can take a request: nothing arrived on it
    /// while it was parked (a close, or bytes nobody asked for).
    pub fn is_reusable(&mut self) -> bool {
        if !self.0.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.0.io.poll_read_ready(&mut cx) {
            // The runtime learns of readiness only when it next polls the
            // kernel: bytes (or the close) may be there already. One peek
            // tells; a request written behind stray bytes would be
            // answered by them.
            Poll::Pending => {
                let mut one = [std::mem::MaybeUninit::<u8>::uninit()];
                matches!(socket2::SockRef::from(&self.0.io).peek(&mut one), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Poll::Ready(Err(_)) => false,
            // Readable: the close (or data) is there, or the readiness is
            // left from the last read; a read tells which.
            Poll::Ready(Ok(())) => {
                matches!(self.0.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes `head` and `body` and reads the response head. The connection
    /// then belongs to the response body, which hands it to `on_end` when
    /// it has been read to the end and the connection may serve another
    /// request.
    pub async fn request<R: Reuse>(
        mut self,
        head: RequestHead<'_>,
        body: &Bytes,
        on_end: R,
    ) -> Result<Response<ResponseBody<R>>, RequestError> {
        encode_head(&mut self.0.head, head, body.len());
        let head_len = self.0.head.len();
        let total = head_len + body.len();
        let mut written = 0;
        while written < total {
            let slices = if written < head_len {
                [IoSlice::new(&self.0.head[written..]), IoSlice::new(body)]
            } else {
                [IoSlice::new(&body[written - head_len..]), IoSlice::new(&[])]
            };
            match self.0.io.write_vectored(&slices).await {
                Ok(0) => {
                    return Err(RequestError {
                        error: io::ErrorKind::WriteZero.into(),
                        written: written > 0,
                    });
                }
                Ok(n) => written += n,
                Err(error) => {
                    return Err(RequestError {
                        error,
                        written: written > 0,
                    });
                }
            }
        }
        let failed = |error| RequestError {
            error,
            written: true,
        };
        loop {
            if let Some(parsed) =
                parse_head(&mut self.0.buf, &mut self.0.fields, head.raw_answer).map_err(failed)?
            {
                let ParsedHead {
                    head: mut res,
                    keep_alive,
                    framing,
                    raw,
                } = parsed;
                if res.status().is_informational() {
                    // 100 Continue and the like; the final answer follows.
                    // (A 101 never comes here: upgrades go through hyper.)
                    continue;
                }
                let framing = if *head.method == Method::HEAD
                    || res.status() == StatusCode::NO_CONTENT
                    || res.status() == StatusCode::NOT_MODIFIED
                {
                    Framing::Done
                } else {
                    framing
                };
                // Only the close ends such a body.
                let keep_alive = keep_alive && framing != Framing::Close;
                if matches!(framing, Framing::Chunked(_)) {
                    // Framing is per hop: the client's side frames it anew.
                    res.headers_mut().remove(header::CONTENT_LENGTH);
                }
                let mut body = ResponseBody {
                    conn: Some(self),
                    raw,
                    framing,
                    keep_alive,
                    on_end: Some(on_end),
                };
                body.finish_if_done();
                return Ok(res.map(|()| body));
            }
            if self.0.buf.len() > MAX_HEAD {
                return Err(failed(invalid("response head too large")));
            }
            if self.fill().await.map_err(failed)? == 0 {
                return Err(failed(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Reads more into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        self.reserve();
        let before = self.0.buf.capacity() - self.0.buf.len();
        let n = self.0.io.read_buf(&mut self.0.buf).await?;
        self.adapt(n, before);
        Ok(n)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.reserve();
        let before = self.0.buf.capacity() - self.0.buf.len();
        // `read_buf` keeps no state between polls (the waker is left with
        // the socket's registration), so a fresh one per poll is fine.
        let n = std::task::ready!(std::pin::pin!(self.0.io.read_buf(&mut self.0.buf)).poll(cx))?;
        self.adapt(n, before);
        Poll::Ready(Ok(n))
    }

    fn reserve(&mut self) {
        if self.0.buf.capacity() - self.0.buf.len() < self.0.read_size / 2 {
            self.0.buf.reserve(self.0.read_size);
        }
    }

    /// Larger reads while they come back full (large bodies), as hyper does.
    fn adapt(&mut self, n: usize, room: usize) {
        if n == room {
            self.0.read_size = (self.0.read_size * 2).min(MAX_READ);
        }
    }
}

/// `METHOD path HTTP/1.1`, the headers, `Host` if they have none, and the
/// body's length when there is a body (`Transfer-Encoding` was removed as
/// hop-by-hop; the body is whole, so its length is known).
fn encode_head(dst: &mut Vec<u8>, head: RequestHead<'_>, body_len: usize) {
    dst.clear();
    dst.extend_from_slice(head.method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(head.path.as_str().as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    let mut declared_body = false;
    for (name, value) in head.headers {
        if name == header::CONTENT_LENGTH {
            declared_body = true;
            continue;
        }
        if head.extra.iter().any(|(n, _)| *n == name) {
            continue;
        }
        has_host |= name == header::HOST;
        field(dst, name, value);
    }
    for (name, value) in head.extra {
        field(dst, name, value);
    }
    if !has_host {
        dst.extend_from_slice(b"host: ");
        dst.extend_from_slice(head.authority.as_str().as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let carries_body = matches!(*head.method, Method::POST | Method::PUT | Method::PATCH);
    if body_len > 0 || declared_body || carries_body {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// A response head as read from an upstream.
struct ParsedHead {
    /// The status, version and (unless kept raw) header map.
    head: Response<()>,
    /// The connection may take another request after this answer.
    keep_alive: bool,
    framing: Framing,
    /// The header lines as they came, when they pass that way.
    raw: Option<RawFields>,
}

/// Parses a response head from the front of `buf` and removes it, or says
/// more bytes are needed (`None`).
fn parse_head(
    buf: &mut BytesMut,
    fields: &mut Fields,
    raw_answer: bool,
) -> io::Result<Option<ParsedHead>> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut raw = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut raw)
    {
        // The same bound as on request heads, however the bytes arrived.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(invalid("response head too large"));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(invalid("malformed response head")),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| invalid("bad status"))?;
    let version = match res.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    if raw_answer && !status.is_informational() {
        if let Some(plan) = raw_plan(buf, len, res.headers)? {
            return Ok(Some(keep_raw(buf, len, status, version, plan)));
        }
    }
    fields.fill(buf, res.headers);
    let head = buf.split_to(len).freeze();
    // Room for the `x-request-id` the gateway adds to every answer: a map
    // full to its capacity grows (a new table, every name rehashed) on that
    // insertion, about 500 instructions per answer served by hyper.
    let mut headers = HeaderMap::with_capacity(fields.len() + 1);
    let mut keep_alive = version == Version::HTTP_11;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for field in fields.iter(&head) {
        let (name, value) = field.map_err(invalid)?;
        if name == header::CONTENT_LENGTH {
            let n =
                content_length(value.as_bytes()).ok_or_else(|| invalid("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting content-length"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            // Chunked only if it is the final coding (RFC 9112 §6.3).
            chunked = Some(
                value
                    .as_bytes()
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked")),
            );
        } else if name == header::CONNECTION {
            connection_keep_alive(
                value.as_bytes(),
                version == Version::HTTP_10,
                &mut keep_alive,
            );
        }
        headers.append(name, value);
    }
    let framing = Framing::of(chunked, length);
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = version;
    *res.headers_mut() = headers;
    Ok(Some(ParsedHead {
        head: res,
        keep_alive,
        framing,
        raw: None,
    }))
}

/// How a head's header lines pass as they came (see [`RawFields`]).
#[derive(Debug, Clone, Copy)]
struct RawPlan {
    /// Where the header lines start.
    start: usize,
    /// They carry a `Date`.
    date: bool,
    /// The `Content-Length` they declare.
    length: Option<u64>,
}

/// Whether a head's header lines may pass as they came (nothing to take
/// out, CRLF line ends, one length), and how; `None` if not, for the
/// header-map path.
fn raw_plan(
    buf: &[u8],
    len: usize,
    fields: &[httparse::Header<'_>],
) -> io::Result<Option<RawPlan>> {
    let base = buf.as_ptr() as usize;
    if !buf[..len].ends_with(b"\r\n\r\n") {
        return Ok(None);
    }
    let (mut date, mut length) = (false, None::<u64>);
    for h in fields {
        let name = h.name.as_bytes();
        if taken_out(name) {
            return Ok(None);
        }
        // Lines end in CRLF right after the value (no bare LF, no
        // trailing blanks to carry along).
        let end = h.value.as_ptr() as usize - base + h.value.len();
        if buf[end..].first() != Some(&b'\r') {
            return Ok(None);
        }
        if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(h.value).ok_or_else(|| invalid("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting content-length"));
            }
            length = Some(n);
        } else if name.len() == 4 && name.eq_ignore_ascii_case(b"date") {
            date = true;
        }
    }
    let start = fields
        .first()
        .map_or(len - 2, |h| h.name.as_ptr() as usize - base);
    Ok(Some(RawPlan {
        start,
        date,
        length,
    }))
}

/// Whether an answer's field is one the gateway takes out or replaces
/// (hop-by-hop fields, and `x-request-id`), so that its head cannot pass as
/// it came.
fn taken_out(name: &[u8]) -> bool {
    crate::headers::is_hop_by_hop_name(name)
        || (name.len() == 12 && name.eq_ignore_ascii_case(b"x-request-id"))
}

/// The answer with its header lines kept as they came; its head is split
/// off `buf`.
fn keep_raw(
    buf: &mut BytesMut,
    len: usize,
    status: StatusCode,
    version: Version,
    plan: RawPlan,
) -> ParsedHead {
    let RawPlan {
        start,
        date,
        length,
    } = plan;
    let head = buf.split_to(len).freeze();
    let raw = RawFields {
        lines: head.slice(start..len - 2),
        date,
        length: length.is_some(),
    };
    let framing = Framing::of(None, length);
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = version;
    // HTTP/1.0 keeps a connection only when asked to, with a `Connection`
    // field (which would not have come this way).
    ParsedHead {
        head: res,
        keep_alive: version == Version::HTTP_11,
        framing,
        raw: Some(raw),
    }
}

// === impl ResponseBody ===

impl<R: Reuse> ResponseBody<R> {
    /// The header lines as the upstream sent them, if they were kept so.
    pub fn raw_fields(&self) -> Option<&RawFields> {
        self.raw.as_ref()
    }

    /// At the end: the connection is reused if nothing more came on it.
    fn finish_if_done(&mut self) {
        if self.framing != Framing::Done {
            return;
        }
        if let (Some(conn), Some(on_end)) = (self.conn.take(), self.on_end.take()) {
            if self.keep_alive && conn.0.buf.is_empty() {
                on_end.reuse(conn);
            }
        }
    }

    fn conn(&mut self) -> io::Result<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::other("response body polled after its end"))
    }

    /// The next frame, or `None` when more must be read first; at the
    /// end, the connection goes back if it may.
    fn decode(&mut self) -> io::Result<Option<Frame<Bytes>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::other("response body polled after its end"));
        };
        let frame = self.framing.decode(&mut conn.0.buf)?;
        if self.framing == Framing::Done {
            self.finish_if_done();
        }
        Ok(frame)
    }
}

impl<R: Reuse + Unpin> HttpBody for ResponseBody<R> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if this.framing == Framing::Done {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if this.framing == Framing::Done => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let read = match this.conn() {
                Ok(conn) => std::task::ready!(conn.poll_fill(cx)),
                Err(e) => Err(e),
            };
            match read {
                Ok(0) if this.framing == Framing::Close => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;
    use tokio::{io::AsyncWriteExt as _, net::TcpListener};

    use super::*;

    /// Keeps the connection a finished body gives back.

    #[test]
    fn taken_out_is_the_hop_by_hop_fields_and_the_request_id() {
        for name in [
            "connection",
            "Keep-Alive",
            "PROXY-CONNECTION",
            "te",
            "Trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "X-Request-Id",
        ] {
            assert!(taken_out(name.as_bytes()), "{name}");
        }
        for name in [
            "content-length",
            "date",
            "tee",
            "t",
            "content-type",
            "x-request-ids",
            "connectio",
            "keep-alivf",
            "server",
            "",
        ] {
            assert!(!taken_out(name.as_bytes()), "{name}");
        }
    }
    #[derive(Debug, Clone, Default)]
    struct Slot(Arc<Mutex<Option<Conn>>>);

    impl Reuse for Slot {
        fn reuse(self, conn: Conn) {
            *self.0.lock().expect("slot") = Some(conn);
        }
    }

    impl Slot {
        fn take(&self) -> Option<Conn> {
            self.0.lock().expect("slot").take()
        }
    }

    /// A server that, for each request it reads on a connection, writes the
    /// next answer of `answers` in pieces of `piece` bytes (closing the
    /// connection after it when its flag says so) and sends what it read
    /// down the channel. With no answer left it closes the connection.
    async fn server(
        answers: Vec<(&'static [u8], bool)>,
        piece: usize,
    ) -> (Authority, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut seen = Vec::new();
                loop {
                    let mut buf = [0u8; 4096];
                    let Ok(n) = s.read(&mut buf).await else { break };
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&seen).to_string();
                    let body_len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() < end + 4 + body_len {
                        continue;
                    }
                    let _ = tx.send(text);
                    seen.clear();
                    let Some((answer, close)) = answers.next() else {
                        break;
                    };
                    for part in answer.chunks(piece) {
                        let _ = s.write_all(part).await;
                        let _ = s.flush().await;
                        if piece < answer.len() {
                            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        }
                    }
                    if close {
                        break;
                    }
                }
            }
        });
        (address.parse().expect("authority"), rx)
    }

    async fn connect(authority: &Authority) -> Conn {
        Conn::new(
            TcpStream::connect(authority.as_str())
                .await
                .expect("connect"),
        )
    }

    fn head<'a>(
        method: &'a Method,
        headers: &'a HeaderMap,
        authority: &'a Authority,
    ) -> RequestHead<'a> {
        static PATH: PathAndQuery = PathAndQuery::from_static("/p?q=1");
        static EXTRA: std::sync::LazyLock<[(&'static HeaderName, HeaderValue); 1]> =
            std::sync::LazyLock::new(|| [(&header::USER_AGENT, HeaderValue::from_static("gw"))]);
        RequestHead {
            method,
            path: &PATH,
            headers,
            extra: &*EXTRA,
            authority,
            raw_answer: false,
        }
    }

    /// One request; the body read to its end with its trailers.
    async fn exchange(
        conn: Conn,
        method: Method,
        body: &'static [u8],
        slot: &Slot,
        authority: &Authority,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>, Option<HeaderMap>), io::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static("client"));
        let res = conn
            .request(
                head(&method, &headers, authority),
                &Bytes::from_static(body),
                slot.clone(),
            )
            .await
            .map_err(|e| e.error)?;
        let (parts, body) = res.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((
            parts.status,
            parts.headers,
            collected.to_bytes().to_vec(),
            trailers,
        ))
    }

    #[tokio::test]
    async fn length_delimited_answers_reuse_the_connection_and_requests_are_well_formed() {
        let (authority, mut seen) = server(
            vec![
                (
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
                    false,
                ),
                (
                    b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
                    false,
                ),
            ],
            1024,
        )
        .await;
        let slot = Slot::default();
        let conn = connect(&authority).await;
        let (status, headers, body, _) = exchange(conn, Method::GET, b"", &slot, &authority)
            .await
            .expect("first");
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"hello"[..]));
        assert_eq!(headers.get_all("x-a").iter().count(), 2);
        let request = seen.recv().await.expect("request");
        assert!(request.starts_with("GET /p?q=1 HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains(&format!("host: {authority}\r\n")),
            "{request}"
        );
        assert!(!request.contains("content-length"), "{request}");
        assert!(
            request.contains("\r\nuser-agent: gw\r\n"),
            "extra fields are sent: {request}"
        );
        assert!(
            !request.contains("client"),
            "and replace the client's: {request}"
        );

        let conn = slot.take().expect("the connection came back");
        let (status, _, body, _) = exchange(conn, Method::POST, b"abc", &slot, &authority)
            .await
            .expect("second");
        assert_eq!((status, body.as_slice()), (StatusCode::CREATED, &b"ok"[..]));
        let request = seen.recv().await.expect("request");
        assert!(request.starts_with("POST /p?q=1 HTTP/1.1\r\n"), "{request}");
        assert!(
            request.ends_with("content-length: 3\r\n\r\nabc"),
            "{request}"
        );
        assert!(slot.take().is_some(), "reused again");
    }

    #[tokio::test]
    async fn chunked_answers_arriving_byte_by_byte_keep_their_trailers() {
        let (authority, _seen) = server(
            vec![
                (
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
                    false,
                ),
                (
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                    false,
                ),
            ],
            1,
        )
        .await;
        let slot = Slot::default();
        let conn = connect(&authority).await;
        let (status, headers, body, trailers) = exchange(conn, Method::GET, b"", &slot, &authority)
            .await
            .expect("chunked");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"hello world");
        assert!(
            headers.get(header::CONTENT_LENGTH).is_none(),
            "chunked wins over a length"
        );
        assert_eq!(trailers.expect("trailers")["x-sum"], "11");
        let conn = slot.take().expect("reused after the last chunk");
        let (_, _, body, trailers) = exchange(conn, Method::GET, b"", &slot, &authority)
            .await
            .expect("no trailers");
        assert_eq!(body, b"abc");
        assert!(trailers.is_none());
        assert!(slot.take().is_some());
    }

    #[tokio::test]
    async fn an_answer_without_a_length_ends_with_the_connection() {
        let (authority, _seen) =
            server(vec![(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true)], 4).await;
        let slot = Slot::default();
        let conn = connect(&authority).await;
        let (status, _, body, _) = exchange(conn, Method::GET, b"", &slot, &authority)
            .await
            .expect("answer");
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, &b"until the end"[..])
        );
        assert!(slot.take().is_none(), "never reused");
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body_and_reuse_the_connection() {
        let (authority, _seen) = server(
            vec![
                (b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", false),
                (b"HTTP/1.1 204 No Content\r\n\r\n", false),
                (
                    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n",
                    false,
                ),
            ],
            1024,
        )
        .await;
        let slot = Slot::default();
        let mut conn = connect(&authority).await;
        for method in [Method::HEAD, Method::GET, Method::GET] {
            let (_, _, body, _) = exchange(conn, method.clone(), b"", &slot, &authority)
                .await
                .expect("answer");
            assert!(body.is_empty(), "{method}");
            conn = slot.take().expect("reused");
        }
    }

    #[tokio::test]
    async fn a_short_body_and_a_bad_head_are_errors_and_connection_close_is_honoured() {
        let (authority, _seen) = server(
            vec![(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", true)],
            1024,
        )
        .await;
        let slot = Slot::default();
        let conn = connect(&authority).await;
        let e = exchange(conn, Method::GET, b"", &slot, &authority)
            .await
            .expect_err("a short body must not end cleanly");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(slot.take().is_none());

        let (authority, _seen) = server(vec![(b"HTTP/1.1 2x0 Nope\r\n\r\n", false)], 1024).await;
        let conn = connect(&authority).await;
        let headers = HeaderMap::new();
        let e = conn
            .request(
                head(&Method::GET, &headers, &authority),
                &Bytes::new(),
                Slot::default(),
            )
            .await
            .expect_err("malformed");
        assert!(e.written, "the request went out: it may have been seen");
        assert_eq!(e.error.kind(), io::ErrorKind::InvalidData);

        let (authority, _seen) = server(
            vec![(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                false,
            )],
            1024,
        )
        .await;
        let slot = Slot::default();
        let conn = connect(&authority).await;
        let (_, _, body, _) = exchange(conn, Method::GET, b"", &slot, &authority)
            .await
            .expect("answer");
        assert_eq!(body, b"ok");
        assert!(slot.take().is_none(), "Connection: close is honoured");
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_not_reusable() {
        let (authority, _seen) = server(
            vec![(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true)],
            1024,
        )
        .await;
        let slot = Slot::default();
        let conn = connect(&authority).await;
        // The answer says keep-alive, but the server closes right after it.
        exchange(conn, Method::GET, b"", &slot, &authority)
            .await
            .expect("answer");
        let mut conn = slot.take().expect("parked");
        let closed = async {
            while conn.is_reusable() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), closed)
            .await
            .expect("the close is seen while the connection is idle");
    }
}
