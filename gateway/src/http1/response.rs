//! Writing an answer to an HTTP/1.1 client: the head (status line, the
//! answer's fields or its upstream header lines as they came, the request
//! id, framing, `Date`, `Connection`) and the first body bytes in one
//! `writev`, then the body framed by length, chunks or the connection's end.

use std::{
    future::poll_fn,
    io::{self, IoSlice},
    pin::Pin,
    task::Poll,
    time::SystemTime,
};

use http::{HeaderValue, Response, StatusCode, Version, header};
use http_body_util::Either;
use hyper::body::Body as _;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::codec::{content_length, field};
use crate::{
    headers::REQUEST_ID,
    proxy::{self, ProxyBody},
};

/// How to frame an answer, from its request.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// The request was HEAD: the head only, whatever the body.
    pub head_only: bool,
    /// The request's version (HTTP/1.0 has no chunked encoding).
    pub version: Version,
    /// Whether the connection stays open if the answer allows.
    pub keep_alive: bool,
    /// The client takes trailers.
    pub trailers: bool,
}

/// How the body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// How the head frames the body, decided before it is written.
#[derive(Debug, Clone, Copy)]
struct Plan {
    framing: Framing,
    /// The answer's own fields (or its raw lines) carry the length.
    declared: bool,
    keep_alive: bool,
}

/// Writes `res`; whether the connection may serve another request. The
/// answer stays in its box, read in place.
pub async fn write_response(
    io: &mut TcpStream,
    out: &mut Vec<u8>,
    mut res: proxy::Answer,
    request_id: &HeaderValue,
    answer: Answer,
) -> io::Result<bool> {
    let raw = match res.body() {
        Either::Left(tracked) => tracked.raw_fields(),
        Either::Right(_) => None,
    };
    let plan = plan(&res, raw.is_some_and(|r| r.length), answer);
    encode_head(out, &res, raw, request_id, plan, answer.version);
    if plan.framing == Framing::None {
        // The body is not read: an upstream's is dropped (and its
        // connection with it unless it had already ended).
        drop(res);
        write_all(io, &mut [IoSlice::new(out)]).await?;
        return Ok(plan.keep_alive);
    }
    let whole = send_body(io, out, res.body_mut(), plan.framing, answer.trailers).await?;
    Ok(whole && plan.keep_alive)
}

/// The framing: none for a bodiless answer, the length it declares or
/// its body knows, else chunked (HTTP/1.1) or to the connection's end.
fn plan(res: &Response<ProxyBody>, raw_length: bool, answer: Answer) -> Plan {
    let (status, body) = (res.status(), res.body());
    let bodiless = answer.head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // A length the header lines carry (whose body's size is then exact).
    let declared = if raw_length {
        body.size_hint().exact()
    } else {
        res.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| content_length(v.as_bytes()))
    };
    let framing = if bodiless {
        Framing::None
    } else if let Some(n) = declared.or(body.size_hint().exact()) {
        Framing::Length(n)
    } else if answer.version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::Close
    };
    Plan {
        framing,
        declared: declared.is_some(),
        keep_alive: answer.keep_alive && framing != Framing::Close,
    }
}

/// The answer's head into `out`.
fn encode_head(
    out: &mut Vec<u8>,
    res: &Response<ProxyBody>,
    raw: Option<&super::client::RawFields>,
    request_id: &HeaderValue,
    plan: Plan,
    version: Version,
) {
    out.clear();
    status_line(out, res.status());
    if let Some(raw) = raw {
        out.extend_from_slice(&raw.lines);
    }
    for (name, value) in res.headers() {
        if name != REQUEST_ID && name != header::CONNECTION {
            field(out, name, value);
        }
    }
    field(out, &REQUEST_ID, request_id);
    match plan.framing {
        Framing::Length(n) if !plan.declared => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !raw.is_some_and(|r| r.date) && !res.headers().contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !plan.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends the head in `out` with the body's first bytes if they are there
/// already (if not, at once: a slow stream's client sees the head), then
/// the rest of the body framed as planned. Whether the body went out
/// whole, so that the connection may serve another request.
async fn send_body(
    io: &mut TcpStream,
    out: &[u8],
    body: &mut ProxyBody,
    framing: Framing,
    trailers: bool,
) -> io::Result<bool> {
    let mut body = Pin::new(body);
    let mut head = Some(out);
    let mut sent: u64 = 0;
    loop {
        let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if let Some(h) = head.take() {
                    write_all(io, &mut [IoSlice::new(h)]).await?;
                }
                poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let pending_head = head.take().unwrap_or(&[]);
        let frame = match frame {
            None => return end_body(io, pending_head, framing, sent).await,
            Some(Err(error)) => {
                tracing::debug!(%error, "upstream body failed; closing the client connection");
                write_all(io, &mut [IoSlice::new(pending_head)]).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => frame,
        };
        let step = match frame.into_data() {
            Ok(data) => {
                sent += data.len() as u64;
                send_data(io, pending_head, &data, framing, sent).await?
            }
            Err(frame) => {
                let Ok(fields) = frame.into_trailers() else {
                    continue;
                };
                send_trailers(
                    io,
                    pending_head,
                    &fields,
                    framing == Framing::Chunked && trailers,
                )
                .await?
            }
        };
        if let Some(whole) = step {
            return Ok(whole);
        }
    }
}

/// The body ended after `sent` bytes: the last chunk, or nothing more.
async fn end_body(
    io: &mut TcpStream,
    pending_head: &[u8],
    framing: Framing,
    sent: u64,
) -> io::Result<bool> {
    match framing {
        Framing::Chunked => {
            write_all(
                io,
                &mut [IoSlice::new(pending_head), IoSlice::new(b"0\r\n\r\n")],
            )
            .await?;
        }
        Framing::Length(n) if sent != n => {
            // Shorter than declared: the client must not take it for the
            // whole answer.
            write_all(io, &mut [IoSlice::new(pending_head)]).await?;
            return Ok(false);
        }
        _ => write_all(io, &mut [IoSlice::new(pending_head)]).await?,
    }
    Ok(true)
}

/// One data frame, `sent` bytes so far with it. `Some` ends the body:
/// whether it went out whole.
async fn send_data(
    io: &mut TcpStream,
    pending_head: &[u8],
    data: &[u8],
    framing: Framing,
    sent: u64,
) -> io::Result<Option<bool>> {
    match framing {
        Framing::Chunked if data.is_empty() => {
            write_all(io, &mut [IoSlice::new(pending_head)]).await?;
        }
        Framing::Chunked => {
            let mut size = [0u8; 18];
            let size = chunk_size(&mut size, data.len());
            write_all(
                io,
                &mut [
                    IoSlice::new(pending_head),
                    IoSlice::new(size),
                    IoSlice::new(data),
                    IoSlice::new(b"\r\n"),
                ],
            )
            .await?;
        }
        Framing::Length(n) if sent > n => {
            write_all(io, &mut [IoSlice::new(pending_head)]).await?;
            return Ok(Some(false));
        }
        Framing::Length(n) => {
            write_all(io, &mut [IoSlice::new(pending_head), IoSlice::new(data)]).await?;
            if sent == n {
                // All of it: no need to poll for the end (the body's drop
                // settles its connection).
                return Ok(Some(true));
            }
        }
        _ => {
            write_all(io, &mut [IoSlice::new(pending_head), IoSlice::new(data)]).await?;
        }
    }
    Ok(None)
}

/// Trailers: sent only in a chunked answer to a client that asked for
/// them (`wanted`), as hyper does, and they end it; otherwise left out.
async fn send_trailers(
    io: &mut TcpStream,
    pending_head: &[u8],
    fields: &http::HeaderMap,
    wanted: bool,
) -> io::Result<Option<bool>> {
    if wanted {
        let mut block = Vec::with_capacity(64);
        block.extend_from_slice(b"0\r\n");
        for (name, value) in fields {
            field(&mut block, name, value);
        }
        block.extend_from_slice(b"\r\n");
        write_all(io, &mut [IoSlice::new(pending_head), IoSlice::new(&block)]).await?;
        return Ok(Some(true));
    }
    if !pending_head.is_empty() {
        write_all(io, &mut [IoSlice::new(pending_head)]).await?;
    }
    Ok(None)
}

/// `{size:x}\r\n` without a `format!`.
fn chunk_size(dst: &mut [u8; 18], size: usize) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut at = 16;
    let mut n = size;
    loop {
        at -= 1;
        dst[at] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst[16] = b'\r';
    dst[17] = b'\n';
    &dst[at..]
}

/// Writes every slice in order (skipping empty ones).
async fn write_all(io: &mut TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match io.write_vectored(slices).await {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `HTTP/1.1 <code> <reason>` and its line end.
fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A bodiless answer that closes the connection (a head we cannot serve).
pub async fn refuse(io: &mut TcpStream, status: StatusCode) {
    let mut out = Vec::with_capacity(128);
    status_line(&mut out, status);
    out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\ndate: ");
    date(&mut out);
    out.extend_from_slice(b"\r\n\r\n");
    let _ = io.write_all(&out).await;
    let _ = io.shutdown().await;
}

/// The `Date` value, formatted once a second per thread (as hyper does).
fn date(dst: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            }
        }
        dst.extend_from_slice(&c.1);
    });
}
