//! The HTTP/1.1 codec both sides share: limits, `Content-Length` and
//! `Connection` values read by one rule (the request-smuggling boundary is
//! where two parsers disagree), header lines written, and where the fields
//! of a head parsed by `httparse` sit in its buffer.

use std::io;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Header fields accepted in a head (hyper's default limit too).
pub const MAX_HEADERS: usize = 100;
/// Largest response head (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;

/// An error for bytes that are not HTTP/1.1.
pub fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A `Content-Length` value: decimal digits only (RFC 9110 §8.6). A sign,
/// blanks or a list would be read differently by different parsers, which
/// is how requests get smuggled; they are refused.
pub fn content_length(value: &[u8]) -> Option<u64> {
    // Up to 19 digits cannot overflow a u64; one pass checks and adds
    // (`str::parse` took a UTF-8 check and an overflow check per digit on
    // top of the digit check, 180 instructions for a 4-digit length).
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Writes `name: value` and its line end.
pub fn field(dst: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
    // Room once, so the four copies below never grow the buffer.
    dst.reserve(name.len() + value.len() + 4);
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// Where each header field of a head parsed by `httparse` sits in its
/// buffer, so that once the head is split off and frozen the values can
/// share its bytes (no copy per value). Shared by the server side ([`super::server`])
/// and the client side ([`super::client`]).
#[derive(Debug)]
pub struct Fields {
    at: [(u32, u32, u32, u32); MAX_HEADERS],
    count: usize,
}

impl Fields {
    /// Room for a head's places, kept by a connection for all its heads
    /// (the array is 1.6 KB: made once, not per request).
    pub fn new() -> Box<Self> {
        Box::new(Self {
            at: [(0, 0, 0, 0); MAX_HEADERS],
            count: 0,
        })
    }

    /// Records the places of `fields`, parsed from the front of `buf`.
    pub fn fill(&mut self, buf: &[u8], fields: &[httparse::Header<'_>]) {
        let base = buf.as_ptr() as usize;
        for (slot, h) in self.at.iter_mut().zip(fields) {
            // Offsets within a head; heads are far below 4 GiB.
            *slot = (
                (h.name.as_ptr() as usize - base) as u32,
                h.name.len() as u32,
                (h.value.as_ptr() as usize - base) as u32,
                h.value.len() as u32,
            );
        }
        self.count = fields.len().min(MAX_HEADERS);
    }

    /// The fields as names and values over `head` (the buffer's front,
    /// split off and frozen).
    pub fn iter<'a>(
        &'a self,
        head: &'a Bytes,
    ) -> impl Iterator<Item = Result<(HeaderName, HeaderValue), &'static str>> + 'a {
        self.at[..self.count].iter().map(|&(n, nl, v, vl)| {
            let name = HeaderName::from_bytes(&head[n as usize..(n + nl) as usize])
                .map_err(|_| "bad header name")?;
            let value = HeaderValue::from_maybe_shared(head.slice(v as usize..(v + vl) as usize))
                .map_err(|_| "bad header value")?;
            Ok((name, value))
        })
    }

    /// How many fields the last head had.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last head had none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Puts the fields over `head` into `headers` in place of what it held;
    /// the map keeps its room, so a connection that refills one map for
    /// each request allocates it once.
    pub fn refill(&self, head: &Bytes, headers: &mut HeaderMap) -> Result<(), &'static str> {
        headers.clear();
        headers.reserve(self.count);
        for field in self.iter(head) {
            let (name, value) = field?;
            headers.append(name, value);
        }
        Ok(())
    }
}

/// Reads a `Connection` value's tokens into whether the connection stays
/// open after this message: `close` ends it, `keep-alive` keeps an
/// HTTP/1.0 one (HTTP/1.1 stays open unless told). Client and upstream
/// heads are read by the same rule.
pub fn connection_keep_alive(value: &[u8], http10: bool, keep_alive: &mut bool) {
    for token in value.split(|b| *b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            *keep_alive = false;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            *keep_alive |= http10;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_decimal_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"1024"), Some(1024));
        assert_eq!(content_length(b"0018"), Some(18));
        assert_eq!(
            content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b" 5",
            b"5 ",
            b"+5",
            b"-5",
            b"5,5",
            b"0x5",
            b"5.0",
            b"99999999999999999999",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn connection_tokens_decide_keep_alive_by_version() {
        let read = |value: &[u8], http10: bool| {
            let mut keep = !http10;
            connection_keep_alive(value, http10, &mut keep);
            keep
        };
        assert!(read(b"", false));
        assert!(!read(b"close", false));
        assert!(!read(b"Upgrade, CLOSE", false));
        assert!(!read(b"", true));
        assert!(read(b"keep-alive", true));
        assert!(read(b" Keep-Alive ,x", true));
        assert!(!read(b"keep-alive, close", true));
        // "closed" is not "close".
        assert!(read(b"closed", false));
    }

    #[test]
    fn fields_share_the_heads_bytes_and_refuse_bad_values() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n";
        let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut parsed);
        assert!(req.parse(raw).expect("head").is_complete());
        let mut fields = Fields::new();
        fields.fill(raw, req.headers);
        let head = Bytes::from_static(raw);
        let mut map = HeaderMap::new();
        map.insert("stale", HeaderValue::from_static("from before"));
        fields.refill(&head, &mut map).expect("fields");
        assert_eq!(map.len(), 3);
        assert_eq!(map["host"], "a");
        let twos: Vec<_> = map.get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        let mut out = Vec::new();
        field(&mut out, &http::header::HOST, &map["host"]);
        assert_eq!(out, b"host: a\r\n");
    }
}
