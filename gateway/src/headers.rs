//! Header plumbing: hop-by-hop removal, X-Forwarded-*, request ids and
//! W3C trace context.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use rand::Rng;

/// `x-request-id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What the request path reads from a request's headers, found in one pass
/// over them. Each of these was a hashed lookup of its own (the request id,
/// the content type, the host twice, the length) or a walk of its own (the
/// forwarding headers, the hop-by-hop check); the one walk costs about 600
/// instructions per request less than they did (`bench/PROFILE.md` §7).
#[derive(Debug, Default)]
pub struct Scan {
    /// The first `Host`.
    pub host: Option<HeaderValue>,
    /// How many `Host` fields there were (more than one is refused).
    pub hosts: usize,
    /// The first `Content-Type` starts with `application/grpc`.
    pub grpc: bool,
    /// The first `Content-Length`, if it is digits only.
    pub content_length: Option<u64>,
    /// Some hop-by-hop field is present (see [`strip_hop_by_hop`]).
    pub hop_by_hop: bool,
    request_id: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    forwarded_host: Option<HeaderValue>,
    /// The first valid `traceparent`.
    traceparent: Option<HeaderValue>,
}

// === impl Scan ===

impl Scan {
    /// Scans `h`; for each name the first value counts, as with
    /// [`HeaderMap::get`].
    pub fn of(h: &HeaderMap) -> Self {
        let mut s = Self::default();
        let (mut content_type, mut content_length) = (None, None);
        for (name, value) in h {
            // One match on the name's text (each arm compares the length
            // before the bytes), not a hashed lookup per name.
            match name.as_str() {
                "host" => {
                    s.hosts += 1;
                    s.host.get_or_insert_with(|| value.clone());
                }
                "content-type" => {
                    content_type.get_or_insert(value);
                }
                "content-length" => {
                    content_length.get_or_insert(value);
                }
                "x-request-id" => {
                    s.request_id.get_or_insert_with(|| value.clone());
                }
                "x-forwarded-for" => {
                    s.forwarded_for.get_or_insert_with(|| value.clone());
                }
                "x-forwarded-host" => {
                    s.forwarded_host.get_or_insert_with(|| value.clone());
                }
                "traceparent" if s.traceparent.is_none() && valid_traceparent(value) => {
                    s.traceparent = Some(value.clone());
                }
                _ if is_hop_by_hop(name) => s.hop_by_hop = true,
                _ => {}
            }
        }
        s.grpc = content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        s.content_length =
            content_length.and_then(|v| crate::http1::codec::content_length(v.as_bytes()));
        s
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), and those the
/// `Connection` header names. `keep_upgrade` keeps `Connection: upgrade`
/// and `Upgrade` for WebSockets; `TE: trailers` always stays (gRPC needs it).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them: one pass over a handful of names
    // is cheaper than ten hashed removals.
    if !keep_upgrade && !h.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| n.trim().parse::<HeaderName>().ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE) && n != header::TE)
        .collect();
    for n in named {
        h.remove(n);
    }
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHORIZATION,
    ] {
        h.remove(n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
}

/// The hop-by-hop fields (RFC 9110 §7.6.1, with `Proxy-Authorization`,
/// `Keep-Alive` and `Proxy-Connection`), as header-map names;
/// [`is_hop_by_hop_name`] is the same list for raw header lines (a test
/// below holds the two to each other).
static HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &header::UPGRADE,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::PROXY_AUTHORIZATION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
];

/// Compared as names, not bytes: a standard name compares in one
/// instruction, and this runs for every field of every request.
fn is_hop_by_hop(n: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&n)
}

/// Whether a field name (any case) is hop-by-hop: `Connection`, `Upgrade`,
/// `TE`, `Trailer`, `Transfer-Encoding`, `Proxy-Authorization`, `Keep-Alive`
/// and `Proxy-Connection` (the header-map list, `HOP_BY_HOP`, for the raw header lines of
/// [`crate::http1::client`]). By length first: most names are ruled out
/// with no byte compared (nine case-blind comparisons per field were ~130
/// instructions per answer).
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// The headers the gateway sets on every request it forwards:
/// `X-Forwarded-For` (the client appended), `-Proto`, `-Host` (the client's
/// if it sent one), the request id and `traceparent` (kept if valid, else a
/// new trace). Worked out in one pass over the client's headers and kept
/// apart from them: the direct HTTP/1.1 path writes them straight into the
/// request head ([`crate::http1::client`]), and only hyper's path inserts them into a
/// header map ([`Added::apply`]). Hashed map lookups and inserts of these
/// five custom names were a tenth of the gateway's CPU per request.
#[derive(Debug, Clone)]
pub struct Added {
    fields: [(&'static HeaderName, HeaderValue); 5],
    len: usize,
}

// === impl Added ===

impl Added {
    /// What to add to a request with headers scanned as `scan` from
    /// `client` (its IP as a header value) for `authority` (see
    /// [`crate::authority`]), with request id `id`.
    pub fn new(
        scan: &Scan,
        client: &HeaderValue,
        tls: bool,
        authority: Option<&HeaderValue>,
        id: &HeaderValue,
    ) -> Self {
        let xfh = scan.forwarded_host.as_ref();
        let xff = match &scan.forwarded_for {
            Some(prev) => {
                HeaderValue::from_bytes(&[prev.as_bytes(), b", ", client.as_bytes()].concat())
                    .unwrap_or_else(|_| client.clone())
            }
            None => client.clone(),
        };
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        let trace = scan.traceparent.clone().unwrap_or_else(new_traceparent);
        let filler = HeaderValue::from_static("");
        let mut added = Self {
            fields: [
                (&X_FORWARDED_FOR, xff),
                (&X_FORWARDED_PROTO, proto),
                (&REQUEST_ID, id.clone()),
                (&TRACEPARENT, trace),
                (&X_FORWARDED_HOST, filler),
            ],
            len: 4,
        };
        let xfh = xfh.or(authority).cloned();
        if let Some(v) = xfh {
            added.fields[4].1 = v;
            added.len = 5;
        }
        added
    }

    /// The fields, each replacing any of the same name.
    pub fn fields(&self) -> &[(&'static HeaderName, HeaderValue)] {
        &self.fields[..self.len]
    }

    /// `X-Forwarded-For` as sent on.
    pub fn forwarded_for(&self) -> &HeaderValue {
        &self.fields[0].1
    }

    /// Sets the fields in `h`.
    pub fn apply(&self, h: &mut HeaderMap) {
        h.reserve(self.len);
        for (name, value) in self.fields() {
            h.insert(*name, value.clone());
        }
    }
}

/// The request's id: the client's if it is sane, else a new one. Marked
/// sensitive, so that HPACK never indexes it, wherever it goes over HTTP/2
/// (the answer, an upstream gRPC request): a value new with every request
/// would only push a connection table's useful entries out, and cost the
/// encoder an insertion and an eviction each time (bench/PROFILE.md §12).
pub fn request_id(scan: &Scan) -> HeaderValue {
    let mut id = match &scan.request_id {
        Some(v)
            if !v.is_empty()
                && v.len() <= 128
                && v.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
        {
            v.clone()
        }
        _ => {
            let mut id = [0u8; 32];
            hex(&mut id, random());
            generated(&id).unwrap_or_else(|| HeaderValue::from_static("0"))
        }
    };
    id.set_sensitive(true);
    id
}

/// A header value of generated bytes, split off a per-thread buffer: it
/// costs no allocation of its own (one buffer serves about a hundred), and
/// its clones count references. A value of its own (`from_bytes`) took an
/// allocation, and another at its first clone (the request id is cloned
/// for the upstream request), on every request.
fn generated(bytes: &[u8]) -> Option<HeaderValue> {
    use std::cell::RefCell;

    use bytes::BytesMut;
    /// Room taken at a time. A buffer lives as long as any value cut from
    /// it; these go with their request.
    const CHUNK: usize = 4096;
    thread_local! {
        static ROOM: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    let value = ROOM.with(|room| {
        let mut room = room.borrow_mut();
        if room.capacity() < bytes.len() {
            // The values cut from the old buffer keep it; a new one here.
            *room = BytesMut::with_capacity(CHUNK.max(bytes.len()));
        }
        room.extend_from_slice(bytes);
        room.split().freeze()
    });
    HeaderValue::from_maybe_shared(value).ok()
}

/// 128 random bits for ids. Request and trace ids need to be unique, not
/// unpredictable, so a per-thread xoshiro seeded from the OS (rand's
/// `SmallRng`) serves; the cryptographic `ThreadRng` cost several hundred
/// instructions per id.
fn random() -> u128 {
    use std::cell::RefCell;

    use rand::{SeedableRng, rngs::SmallRng};
    thread_local! {
        static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
    }
    RNG.with(|r| r.borrow_mut().random())
}

/// Writes the low `out.len()` hex digits of `v` into `out` (lower case,
/// most significant first; a multiple of 8 digits): ids and trace context
/// without a `format!` (and its allocations) on every request.
fn hex(out: &mut [u8], v: u128) {
    debug_assert!(out.len() % 8 == 0 && out.len() <= 32, "whole words only");
    let words = out.len() / 8;
    for (i, digits) in out.chunks_exact_mut(8).enumerate() {
        // The most significant word first; the cast keeps its 32 bits.
        digits.copy_from_slice(&hex8((v >> (32 * (words - 1 - i))) as u32));
    }
}

/// Eight hex digits of `x`, worked out in one 64-bit word (a table
/// lookup per nibble was 180 instructions for a request's 80 digits).
fn hex8(x: u32) -> [u8; 8] {
    // Each nibble into a byte of its own, the most significant first.
    let mut x = u64::from(x);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // '0' + n, and 39 more ('a' - '0' - 10) where n > 9: n + 6 carries into
    // the byte's high nibble exactly then. No byte overflows into the next.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_be_bytes()
}

/// A `traceparent` worth keeping: version, a non-zero 32-hex trace id, a
/// 16-character span id and flags.
fn valid_traceparent(v: &HeaderValue) -> bool {
    v.to_str().is_ok_and(|v| {
        let mut parts = v.split('-');
        let (version, trace, span, flags) =
            (parts.next(), parts.next(), parts.next(), parts.next());
        version.is_some_and(|p| p.len() == 2)
            && trace.is_some_and(|p| {
                p.len() == 32
                    && p.bytes().all(|b| b.is_ascii_hexdigit())
                    && p.bytes().any(|b| b != b'0')
            })
            && span.is_some_and(|p| p.len() == 16)
            && flags.is_some()
    })
}

/// A new trace: `00-<32 hex trace id>-<16 hex span id>-01`.
fn new_traceparent() -> HeaderValue {
    let mut v = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex(&mut v[3..35], random().max(1));
    hex(&mut v[36..52], (random() as u64).max(1).into());
    generated(&v).unwrap_or_else(|| {
        HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01")
    })
}

/// Whether a request asks for a WebSocket upgrade.
pub fn is_upgrade(h: &HeaderMap) -> bool {
    let connection = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    connection
        && h.get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_by_hop_list_reads_the_same_as_names_and_as_bytes() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(name));
            assert!(is_hop_by_hop_name(name.as_str().as_bytes()), "{name}");
            assert!(is_hop_by_hop_name(name.as_str().to_uppercase().as_bytes()));
        }
        for other in [
            "content-length",
            "host",
            "te2",
            "trailers",
            "x-upgrade",
            "date",
        ] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(other)), "{other}");
            assert!(!is_hop_by_hop_name(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(&KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-private").is_none()
                && h.get(&KEEP_ALIVE).is_none()
                && h.get(header::CONNECTION).is_none()
        );
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
        assert!(h.get("x-kept").is_some());
    }

    #[test]
    fn one_scan_finds_what_the_request_path_reads() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("a.example"));
        h.append(header::HOST, HeaderValue::from_static("b.example"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        let s = Scan::of(&h);
        assert_eq!(
            s.host.as_ref().map(HeaderValue::as_bytes),
            Some(&b"a.example"[..])
        );
        assert!(s.grpc && !s.hop_by_hop);
        assert_eq!(s.content_length, Some(12));

        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("+12"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(&KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        let s = Scan::of(&h);
        assert_eq!(s.content_length, None, "digits only");
        assert!(!s.grpc && s.hop_by_hop);
        h.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        let s = Scan::of(&h);
        assert!(
            !s.grpc && s.content_length.is_none(),
            "the first of each counts, as with HeaderMap::get"
        );
        assert!(Scan::of(&HeaderMap::new()).host.is_none());
    }

    #[test]
    fn hex_writes_the_low_digits() {
        let mut out = [0u8; 16];
        hex(&mut out, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(&out, b"fedcba9876543210");
        let mut out = [0u8; 32];
        hex(&mut out, 0xa);
        assert_eq!(&out, b"0000000000000000000000000000000a");
        let mut out = [0u8; 32];
        hex(&mut out, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(&out, b"0123456789abcdeffedcba9876543210");
        // Every digit value, against the formatter.
        for x in [0u32, 9, 10, 15, 0x9a9a_f0f0, u32::MAX, 0x1234_5678] {
            assert_eq!(hex8(x), *format!("{x:08x}").as_bytes(), "{x:#x}");
        }
    }

    fn added(h: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        Added::new(
            &Scan::of(h),
            &HeaderValue::from_static("10.0.0.2"),
            true,
            Some(&HeaderValue::from_static("api.example.com")),
            &HeaderValue::from_static("id-1"),
        )
        .apply(&mut out);
        out
    }

    #[test]
    fn forwarded_appends_and_ids_are_kept_or_made() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        let a = added(&h);
        assert_eq!(a[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2");
        assert_eq!(a[&X_FORWARDED_PROTO], "https");
        assert_eq!(a[&X_FORWARDED_HOST], "api.example.com");
        assert_eq!(a[&REQUEST_ID], "id-1");
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("first.example"));
        assert_eq!(
            added(&h)[&X_FORWARDED_HOST],
            "first.example",
            "the client's is kept"
        );
        assert_eq!(added(&HeaderMap::new())[&X_FORWARDED_FOR], "10.0.0.2");

        h.insert(&REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(request_id(&Scan::of(&h)), "abc");
        h.insert(&REQUEST_ID, HeaderValue::from_static(""));
        let made = request_id(&Scan::of(&h));
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(made, request_id(&Scan::of(&h)), "a new id per request");
        assert!(made.is_sensitive(), "never indexed by HPACK");
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000001-01"),
        );
        let a = added(&h);
        let tp = a[&TRACEPARENT].to_str().expect("ascii");
        assert!(
            tp.len() == 55
                && tp.starts_with("00-")
                && tp.ends_with("-01")
                && !tp.contains("-00000000000000000000000000000000-"),
            "an all-zero trace id is replaced by a fresh one: {tp}"
        );
        assert_ne!(
            added(&h)[&TRACEPARENT],
            a[&TRACEPARENT],
            "a new trace each time"
        );
        h.insert(&TRACEPARENT, a[&TRACEPARENT].clone());
        assert_eq!(
            added(&h)[&TRACEPARENT],
            a[&TRACEPARENT],
            "a valid one is kept"
        );
    }
}
