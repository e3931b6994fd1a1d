//! A backend that records the exact bytes it receives: the witness for
//! what the gateway sent on. It reads requests strictly (RFC 9112 framing;
//! a request whose body never ends properly never counts as one) and
//! answers each complete one with a fixed answer.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// The recording backend.
#[derive(Debug)]
pub struct Recorder {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    /// Every complete request, exactly as received, in arrival order.
    requests: Vec<Vec<u8>>,
    /// Bytes that never made a complete request, per closed connection.
    leftovers: Vec<Vec<u8>>,
    /// Connections accepted.
    connections: usize,
    /// What each complete request is answered with.
    answer: Vec<u8>,
}

pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

impl Recorder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log {
            answer: OK.to_vec(),
            ..Log::default()
        }));
        let shared = log.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                shared.lock().expect("log").connections += 1;
                tokio::spawn(serve(conn, shared.clone()));
            }
        });
        Self { addr, log }
    }

    /// Every complete request received so far, as text.
    pub fn requests(&self) -> Vec<String> {
        let log = self.log.lock().expect("log");
        log.requests
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    /// Bytes of closed connections that never made a complete request.
    pub fn leftovers(&self) -> Vec<Vec<u8>> {
        self.log.lock().expect("log").leftovers.clone()
    }

    /// How many connections the gateway opened.
    pub fn connections(&self) -> usize {
        self.log.lock().expect("log").connections
    }

    /// Answers later requests with `bytes`, whatever they are.
    pub fn answer_with(&self, bytes: &[u8]) {
        self.log.lock().expect("log").answer = bytes.to_vec();
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        let mut log = self.log.lock().expect("log");
        log.requests.clear();
        log.leftovers.clear();
    }
}

async fn serve(mut conn: tokio::net::TcpStream, log: Arc<Mutex<Log>>) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(len) = complete(&pending) {
            let request: Vec<u8> = pending.drain(..len).collect();
            let answer = {
                let mut log = log.lock().expect("log");
                log.requests.push(request);
                log.answer.clone()
            };
            if conn.write_all(&answer).await.is_err() {
                break;
            }
        }
    }
    if !pending.is_empty() {
        log.lock().expect("log").leftovers.push(pending);
    }
}

/// The length of the complete request at the front of `buf`, read as
/// strictly as RFC 9112 allows.
pub fn complete(buf: &[u8]) -> Option<usize> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut fields);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let mut length = None;
    let mut chunked = false;
    for f in req.headers.iter() {
        if f.name.eq_ignore_ascii_case("content-length") {
            length = Some(std::str::from_utf8(f.value).ok()?.parse::<usize>().ok()?);
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = f.value.eq_ignore_ascii_case(b"chunked");
        }
    }
    if chunked {
        return chunked_end(&buf[head..]).map(|n| head + n);
    }
    let end = head + length.unwrap_or(0);
    (buf.len() >= end).then_some(end)
}

/// Where a chunked body ends (trailers and the last CRLF included).
fn chunked_end(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + body[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = body[at..line_end].split(|b| *b == b';').next()?;
        if size_text.is_empty() || !size_text.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).ok()?, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = at + body[at..].windows(2).position(|w| w == b"\r\n")?;
                if end == at {
                    return Some(at + 2);
                }
                at = end + 2;
            }
        }
        if body.len() < at + size + 2 || &body[at + size..at + size + 2] != b"\r\n" {
            return None;
        }
        at += size + 2;
    }
}
