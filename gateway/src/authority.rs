//! The request's one authority: decided once from the request target and
//! the `Host` field, checked, used to route and forwarded as `Host`.
//!
//! The rules (RFC 9112 §3.2, RFC 9113 §8.3.1, RFC 3986 §3.2.2):
//! - An absolute-form target's authority (`GET http://a.example/ HTTP/1.1`)
//!   replaces `Host`, and the forwarded `Host` becomes it. Over HTTP/2,
//!   `:authority` is the authority, and a `host` field that names another
//!   one is refused.
//! - An HTTP/1.1 request without `Host`, and any request with two `Host`
//!   fields, is refused (400). HTTP/1.0 may go without (it then matches
//!   only routes without a `host`).
//! - The authority must be `host [":" port]`: a registered name of letters,
//!   digits, `-`, `_` and `.` (the characters DNS names use: percent-escapes
//!   and the other sub-delimiters RFC 3986 allows are refused, as they would
//!   name a host no route can spell), an IPv4 address, or an IPv6 literal
//!   in brackets; a port of digits. No user information, no path.
//! - Routes compare the host case-blind, without the port and without a
//!   trailing dot: `Internal.Example.:8080` matches `internal.example`.

use http::{HeaderValue, Version, request::Parts};

/// The request's authority, checked.
#[derive(Debug, Clone)]
pub struct Authority {
    /// As the client sent it (the target's authority, or the `Host` field):
    /// forwarded as `Host`.
    pub value: HeaderValue,
    /// Whether it came from the request target rather than `Host` (a
    /// `Host` field sent beside it is then replaced, not forwarded).
    pub from_target: bool,
    /// Where the host ends in `value`: without the port and a trailing dot.
    host_len: usize,
}

/// Why a request's authority was refused (each a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// HTTP/1.1 without `Host`.
    Missing,
    /// Two or more `Host` fields.
    Duplicate,
    /// `host` and `:authority` name different hosts.
    Conflicting,
    /// Not `host [":" port]`.
    Malformed,
}

// === impl Invalid ===

impl Invalid {
    /// The client's word for it.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing Host header",
            Self::Duplicate => "more than one Host header",
            Self::Conflicting => "Host header differs from :authority",
            Self::Malformed => "invalid Host",
        }
    }
}

// === impl Authority ===

impl Authority {
    /// The request's authority: `None` for an HTTP/1.0 or HTTP/2 request
    /// that names none. `host` is the first `Host` field and `hosts` how
    /// many there were.
    pub fn of(
        parts: &Parts,
        host: Option<&HeaderValue>,
        hosts: usize,
    ) -> Result<Option<Self>, Invalid> {
        if hosts > 1 {
            return Err(Invalid::Duplicate);
        }
        let header = host.map(Self::parse).transpose()?;
        let Some(target) = parts.uri.authority() else {
            return match header {
                None if parts.version == Version::HTTP_11 => Err(Invalid::Missing),
                header => Ok(header),
            };
        };
        if parts
            .uri
            .scheme_str()
            .is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https"))
        {
            return Err(Invalid::Malformed);
        }
        let value = HeaderValue::from_str(target.as_str()).map_err(|_| Invalid::Malformed)?;
        let mut target = Self::parse(&value)?;
        target.from_target = true;
        match header {
            // RFC 9112 §3.2: HTTP/1.1 sends Host even beside an absolute
            // target (whose authority then wins).
            None if parts.version == Version::HTTP_11 => Err(Invalid::Missing),
            Some(h) if parts.version == Version::HTTP_2 && !h.same_as(&target) => {
                Err(Invalid::Conflicting)
            }
            _ => Ok(Some(target)),
        }
    }

    /// Checks one value as `host [":" port]`.
    pub fn parse(value: &HeaderValue) -> Result<Self, Invalid> {
        let bytes = value.as_bytes();
        let (host, port) = split_port(bytes).ok_or(Invalid::Malformed)?;
        if !port.iter().all(u8::is_ascii_digit) || port.len() > 5 {
            return Err(Invalid::Malformed);
        }
        if port.len() == 5 && port > b"65535".as_slice() {
            return Err(Invalid::Malformed);
        }
        let host_len = if host.first() == Some(&b'[') {
            ipv6_literal(host)?
        } else {
            reg_name(host)?
        };
        Ok(Self {
            value: value.clone(),
            from_target: false,
            host_len,
        })
    }

    /// The host to route by: without the port and a trailing dot (compare
    /// it case-blind).
    pub fn host(&self) -> &str {
        // Checked ASCII in `parse`.
        self.value
            .to_str()
            .ok()
            .and_then(|s| s.get(..self.host_len))
            .unwrap_or("")
    }

    /// The port, if the value names one.
    fn port(&self) -> &[u8] {
        split_port(self.value.as_bytes()).map_or(&[][..], |(_, p)| p)
    }

    /// Whether both name the same host and port.
    fn same_as(&self, other: &Self) -> bool {
        self.host().eq_ignore_ascii_case(other.host()) && self.port() == other.port()
    }
}

/// Splits `host [":" port]`; the port is empty when there is none.
fn split_port(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let host_end = if bytes.first() == Some(&b'[') {
        bytes.iter().position(|b| *b == b']')? + 1
    } else {
        bytes.iter().position(|b| *b == b':').unwrap_or(bytes.len())
    };
    let (host, rest) = bytes.split_at(host_end);
    match rest {
        [] => Some((host, rest)),
        [b':', port @ ..] => Some((host, port)),
        _ => None,
    }
}

/// `[` IPv6 `]`; its length (all of it).
fn ipv6_literal(host: &[u8]) -> Result<usize, Invalid> {
    let inner = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or(Invalid::Malformed)?;
    inner
        .parse::<std::net::Ipv6Addr>()
        .map_err(|_| Invalid::Malformed)?;
    Ok(host.len())
}

/// A DNS-style name (or an IPv4 address): labels of letters, digits, `-`
/// and `_`, one trailing dot allowed; its length without that dot.
fn reg_name(host: &[u8]) -> Result<usize, Invalid> {
    let name = host.strip_suffix(b".").unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split(|b| *b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        });
    if ok {
        Ok(name.len())
    } else {
        Err(Invalid::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Version};

    use super::*;

    fn of(version: Version, target: &str, hosts: &[&str]) -> Result<Option<String>, Invalid> {
        let mut req = Request::builder().version(version).uri(target);
        for h in hosts {
            req = req.header("host", *h);
        }
        let (parts, ()) = req.body(()).expect("request").into_parts();
        let first = parts.headers.get("host").cloned();
        Authority::of(&parts, first.as_ref(), hosts.len()).map(|a| {
            a.map(|a| {
                format!(
                    "{} {} {}",
                    a.value.to_str().unwrap_or("?"),
                    a.host(),
                    a.from_target
                )
            })
        })
    }

    #[test]
    fn the_targets_authority_replaces_host() {
        assert_eq!(
            of(
                Version::HTTP_11,
                "http://public.example/abs",
                &["internal.example"]
            ),
            Ok(Some("public.example public.example true".into()))
        );
        assert_eq!(
            of(Version::HTTP_11, "/x", &["Internal.Example.:8080"]),
            Ok(Some("Internal.Example.:8080 Internal.Example false".into()))
        );
        assert_eq!(of(Version::HTTP_10, "/x", &[]), Ok(None));
    }

    #[test]
    fn missing_duplicate_and_conflicting_hosts_are_refused() {
        assert_eq!(of(Version::HTTP_11, "/x", &[]), Err(Invalid::Missing));
        assert_eq!(
            of(Version::HTTP_11, "http://a.example/x", &[]),
            Err(Invalid::Missing)
        );
        assert_eq!(
            of(
                Version::HTTP_11,
                "/x",
                &["public.example", "internal.example"]
            ),
            Err(Invalid::Duplicate)
        );
        assert_eq!(
            of(
                Version::HTTP_2,
                "http://public.example/x",
                &["internal.example"]
            ),
            Err(Invalid::Conflicting)
        );
        assert_eq!(
            of(
                Version::HTTP_2,
                "http://public.example/x",
                &["PUBLIC.example"]
            ),
            Ok(Some("public.example public.example true".into()))
        );
        assert_eq!(
            of(Version::HTTP_2, "http://public.example/x", &[]),
            Ok(Some("public.example public.example true".into()))
        );
    }

    #[test]
    fn only_host_and_port_pass() {
        for bad in [
            "u@internal.example",
            "internal.example:abc",
            "internal.example x",
            "internal.example/x",
            "internal.example%2e",
            "internal..example",
            ".internal.example",
            ".",
            "",
            "a.example:65536",
            "a.example:123456",
            "[::1",
            "[not-ip]",
            "[::1]x",
            "a.example:80:80",
        ] {
            let v = HeaderValue::from_str(bad).expect("value");
            assert_eq!(
                Authority::parse(&v).err(),
                Some(Invalid::Malformed),
                "{bad:?}"
            );
        }
        for (good, host) in [
            ("internal.example.", "internal.example"),
            ("a.example:65535", "a.example"),
            ("a.example:", "a.example"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("under_score.example", "under_score.example"),
        ] {
            let v = HeaderValue::from_str(good).expect("value");
            assert_eq!(
                Authority::parse(&v).map(|a| a.host().to_string()),
                Ok(host.into()),
                "{good:?}"
            );
        }
    }
}
