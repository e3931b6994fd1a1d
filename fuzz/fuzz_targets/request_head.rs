//! The gateway's HTTP/1.1 request head parser and body framing
//! (`http1::server::read_head`), then the authority and path every request is
//! routed by. Checks: no panic; a request's framing is the one RFC 9112
//! gives its fields (a streamed body, upgrade or HTTP/2 is never taken as
//! a request of this path); the authority is `host [":" port]`; the path's
//! normal form is normal (idempotent, no empty or dot segments, no escaped
//! slash) and the query is not part of it.
#![no_main]

use http::header;
use libfuzzer_sys::fuzz_target;
use switchyard_gateway::{authority::Authority, http1::server, path};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|bytes: &[u8]| {
    let server::HeadRead::Request {
        head,
        body,
        keep_alive: _,
        parts,
    } = server::read_head(bytes, LIMIT, LIMIT)
    else {
        return;
    };
    assert!(head <= bytes.len() && head <= LIMIT && body <= LIMIT);
    // The same head as httparse reads it, its fields as the parts hold them.
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut fields);
    assert_eq!(req.parse(bytes), Ok(httparse::Status::Complete(head)));
    let lengths: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    for l in &lengths {
        assert!(!l.is_empty() && l.iter().all(u8::is_ascii_digit), "{l:?}");
        assert_eq!(
            std::str::from_utf8(l).ok().and_then(|l| l.parse().ok()),
            Some(body)
        );
    }
    if lengths.is_empty() {
        assert_eq!(body, 0);
    }
    for name in [header::TRANSFER_ENCODING, header::UPGRADE, header::EXPECT] {
        assert!(
            !parts.headers.contains_key(&name),
            "{name} served by this path"
        );
    }
    assert_eq!(parts.headers.len(), req.headers.len());

    let hosts = parts.headers.get_all(header::HOST).iter().count();
    if let Ok(Some(a)) = Authority::of(&parts, parts.headers.get(header::HOST), hosts) {
        let host = a.host();
        assert!(!host.is_empty() && !host.ends_with('.'));
        assert!(a.value.as_bytes().starts_with(host.as_bytes()));
        assert!(!a.value.as_bytes().contains(&b'@') && !a.value.as_bytes().contains(&b'/'));
        assert!(hosts <= 1);
    }
    match path::normalize(parts.uri.path()) {
        Ok(normal) if parts.uri.path().starts_with('/') => {
            assert!(normal.starts_with('/'));
            assert_eq!(
                path::normalize(&normal).as_deref(),
                Ok(&*normal),
                "idempotent"
            );
            let inner = normal.strip_suffix('/').unwrap_or(&normal);
            for segment in inner.split('/').skip(1) {
                assert!(!matches!(segment, "" | "." | ".."), "{normal}");
            }
            let lower = normal.to_ascii_lowercase();
            assert!(!lower.contains("%2f") && !lower.contains("%5c") && !normal.contains('?'));
        }
        Ok(_) | Err(_) => {}
    }
});
