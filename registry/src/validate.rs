//! Field checks shared by the gRPC and JSON edges, so both refuse the same
//! input with the same words. Every check names the field it refused.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    config::Limits,
    error::Error,
    model::{OverrideRequest, State},
};

/// Most instances in one Register call.
pub const MAX_INSTANCES_PER_CALL: usize = 1000;
/// Most services in one Watch.
pub const MAX_WATCHED_SERVICES: usize = 1000;
const MAX_METADATA: usize = 64;
const MAX_METADATA_KEY: usize = 128;
const MAX_METADATA_VALUE: usize = 1024;
const MAX_TAGS: usize = 32;
const MAX_TAG: usize = 64;
const MAX_SHORT: usize = 64;
/// Highest weight.
pub const MAX_WEIGHT: u32 = 10_000;
/// Weight when the client leaves it at 0.
pub const DEFAULT_WEIGHT: u32 = 100;

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A service name: 1 to 63 of `[a-z0-9-]`, starting with a letter.
pub fn service(field: &str, name: &str) -> Result<(), Error> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let starts = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if name.is_empty() || name.len() > 63 || !ok_chars || !starts {
        return Err(invalid(
            field,
            "must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter",
        ));
    }
    Ok(())
}

/// An instance id: 1 to 128 of `[A-Za-z0-9._:-]`.
pub fn instance_id(field: &str, id: &str) -> Result<(), Error> {
    let ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if id.is_empty() || id.len() > 128 || !ok {
        return Err(invalid(
            field,
            "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
        ));
    }
    Ok(())
}

/// host:port, with a port from 1 to 65535 and a plausible host.
pub fn address(field: &str, address: &str) -> Result<(), Error> {
    let bad = || invalid(field, format!("`{address}` is not host:port"));
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(())
}

/// Metadata bounds.
pub fn metadata(field: &str, metadata: &BTreeMap<String, String>) -> Result<(), Error> {
    if metadata.len() > MAX_METADATA {
        return Err(invalid(field, format!("at most {MAX_METADATA} entries")));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(invalid(
                field,
                format!("keys must be 1 to {MAX_METADATA_KEY} bytes"),
            ));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(invalid(
                &format!("{field}.{k}"),
                format!("at most {MAX_METADATA_VALUE} bytes"),
            ));
        }
    }
    Ok(())
}

/// Tag bounds.
pub fn tags(field: &str, tags: &[String]) -> Result<(), Error> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(field, format!("at most {MAX_TAGS} tags")));
    }
    if tags.iter().any(|t| t.is_empty() || t.len() > MAX_TAG) {
        return Err(invalid(
            field,
            format!("each tag must be 1 to {MAX_TAG} bytes"),
        ));
    }
    Ok(())
}

/// Weight: 0 (default) or 1 to 10000; returns the weight to use.
pub fn weight(field: &str, weight: u32) -> Result<u32, Error> {
    match weight {
        0 => Ok(DEFAULT_WEIGHT),
        w if w <= MAX_WEIGHT => Ok(w),
        _ => Err(invalid(field, format!("must be 1 to {MAX_WEIGHT}"))),
    }
}

/// A short free-form string (zone, version).
pub fn short(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_SHORT || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("at most {MAX_SHORT} bytes without control characters"),
        ));
    }
    Ok(())
}

/// The longest an override may be set to last.
pub const MAX_OVERRIDE_EXPIRY: Duration = Duration::from_secs(30 * 86_400);
const MAX_REASON: usize = 256;

/// An operator's override request: STARTING cannot be forced, a weight
/// is 1 to 10000, something must be asked, a reason is short, an expiry
/// is 1 s to 30 days.
pub fn override_request(r: OverrideRequest) -> Result<OverrideRequest, Error> {
    if r.state == Some(State::Starting) {
        return Err(invalid("state", "STARTING cannot be forced"));
    }
    if let Some(w) = r.weight {
        if w == 0 {
            return Err(invalid("weight", format!("must be 1 to {MAX_WEIGHT}")));
        }
        weight("weight", w)?;
    }
    if !r.clear && r.state.is_none() && r.weight.is_none() {
        return Err(invalid("state", "set state, weight, or clear"));
    }
    if r.reason.len() > MAX_REASON || r.reason.chars().any(char::is_control) {
        return Err(invalid(
            "reason",
            format!("at most {MAX_REASON} bytes without control characters"),
        ));
    }
    if let Some(d) = r.expires_in {
        if d < Duration::from_secs(1) || d > MAX_OVERRIDE_EXPIRY {
            return Err(invalid("expires_in", "must be 1 s to 30 days"));
        }
    }
    Ok(r)
}

/// A lease TTL in seconds; 0 means the default.
pub fn ttl(field: &str, seconds: u32, limits: &Limits) -> Result<u32, Error> {
    if seconds == 0 {
        return Ok(limits.default_ttl_secs);
    }
    if !(limits.min_ttl_secs..=limits.max_ttl_secs).contains(&seconds) {
        return Err(invalid(
            field,
            format!(
                "must be {} to {} seconds",
                limits.min_ttl_secs, limits.max_ttl_secs
            ),
        ));
    }
    Ok(seconds)
}

/// The list of instances of one Register call.
pub fn instance_count(field: &str, n: usize) -> Result<(), Error> {
    if n == 0 || n > MAX_INSTANCES_PER_CALL {
        return Err(invalid(
            field,
            format!("must hold 1 to {MAX_INSTANCES_PER_CALL} instances"),
        ));
    }
    Ok(())
}

/// The service list of a Watch.
pub fn watched_services(field: &str, services: &[String]) -> Result<(), Error> {
    if services.len() > MAX_WATCHED_SERVICES {
        return Err(invalid(
            field,
            format!("at most {MAX_WATCHED_SERVICES} services"),
        ));
    }
    for (i, s) in services.iter().enumerate() {
        service(&format!("{field}[{i}]"), s)?;
    }
    Ok(())
}

/// An HTTP health check path.
pub fn check_path(field: &str, path: &str) -> Result<(), Error> {
    if !path.starts_with('/') || path.len() > 1024 || path.chars().any(char::is_whitespace) {
        return Err(invalid(field, "must start with '/' and have no spaces"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert!(service("s", "hello-2").is_ok());
        for bad in ["", "Hello", "2x", "a_b", &"a".repeat(64)] {
            assert!(service("s", bad).is_err(), "{bad}");
        }
        assert!(instance_id("i", "h-1.a:b_c").is_ok());
        assert!(instance_id("i", "a/b").is_err());
        for ok in ["10.0.0.1:80", "hello:8080", "[::1]:7000"] {
            assert!(address("a", ok).is_ok(), "{ok}");
        }
        for bad in ["10.0.0.1", ":80", "h:0", "h:70000", "h h:80"] {
            assert!(address("a", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let Err(Error::Invalid { field, .. }) = weight("instances[0].weight", 10_001) else {
            panic!("weight above the cap must fail")
        };
        assert_eq!(field, "instances[0].weight");
        assert_eq!(weight("w", 0).ok(), Some(DEFAULT_WEIGHT));
    }
}
