//! The path routes match and upstreams receive: the request's path,
//! normalised once (Envoy's `normalize_path` and `merge_slashes`, with
//! `path_with_escaped_slashes_action: REJECT_REQUEST`).
//!
//! A route that guards `/app/admin/` must see every spelling of that path
//! as that path, and the upstream must receive the path the route matched,
//! not another spelling its own parser may read differently. So, in order:
//! 1. Percent-escapes of unreserved characters (letters, digits, `-`, `.`,
//!    `_`, `~`) are decoded (`/app/%61dmin` is `/app/admin`); the other
//!    escapes stay, their hex digits upper-cased (RFC 3986 §6.2.2). A `%`
//!    not followed by two hex digits is refused (400).
//! 2. An escaped slash or backslash (`%2F`, `%5C`) is refused (400): a
//!    route cannot tell whether the upstream reads it as a separator, and
//!    decoding it would change what the upstream receives.
//! 3. Empty segments are merged (`//app` is `/app`).
//! 4. Dot-segments are removed (RFC 3986 §5.2.4, after step 1, so `%2e` is
//!    a dot); a path that climbs above the root is refused (400).
//!
//! The query is never touched. A target that is not a path (`*`) passes as
//! it is.

use std::borrow::Cow;

/// Why a path was refused (each a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// `..` above the root.
    AboveRoot,
    /// `%2F` or `%5C`.
    EscapedSlash,
    /// `%` without two hex digits.
    BadEscape,
}

// === impl Invalid ===

impl Invalid {
    /// The client's word for it.
    pub fn message(self) -> &'static str {
        match self {
            Self::AboveRoot => "path climbs above the root",
            Self::EscapedSlash => "escaped slash in path",
            Self::BadEscape => "invalid percent-escape in path",
        }
    }
}

/// The normalised `path` (borrowed when it is normal already, as nearly
/// every path is: one pass over its bytes decides).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, Invalid> {
    if !path.starts_with('/') || is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes())?;
    let mut out: Vec<&[u8]> = Vec::new();
    let mut segments = decoded[1..].split(|b| *b == b'/').peekable();
    // Whether the path ends in a slash (so does its normal form).
    let mut dir = false;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            b"" | b"." => dir = last,
            b".." => {
                out.pop().ok_or(Invalid::AboveRoot)?;
                dir = last;
            }
            s => {
                out.push(s);
                dir = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        // Every byte is ASCII: decoded escapes are unreserved characters.
        normal.push_str(std::str::from_utf8(s).unwrap_or_default());
    }
    if dir || out.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Whether nothing in `path` needs a change: no `%`, no `//`, no segment
/// that starts with a dot (rarely a false alarm, `/.well-known`, which the
/// full pass then leaves as it is).
fn is_normal(path: &[u8]) -> bool {
    let mut prev = 0;
    for &b in path {
        if b == b'%' || (prev == b'/' && (b == b'/' || b == b'.')) {
            return false;
        }
        prev = b;
    }
    true
}

/// Step 1 and 2 of the module doc.
fn decode(path: &[u8]) -> Result<Vec<u8>, Invalid> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] != b'%' {
            out.push(path[i]);
            i += 1;
            continue;
        }
        let (hi, lo) = match (path.get(i + 1), path.get(i + 2)) {
            (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => (h, l),
            _ => return Err(Invalid::BadEscape),
        };
        let byte = (hex(hi) << 4) | hex(lo);
        if byte == b'/' || byte == b'\\' {
            return Err(Invalid::EscapedSlash);
        }
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte);
        } else {
            out.extend_from_slice(&[b'%', hi.to_ascii_uppercase(), lo.to_ascii_uppercase()]);
        }
        i += 3;
    }
    Ok(out)
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => (digit | 0x20) - b'a' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_path_is_that_path() {
        for spelling in [
            "/app/x/../admin/secret",
            "/app/./admin/secret",
            "/app//admin/secret",
            "//app/admin/secret",
            "/app/%61dmin/secret",
            "/app/%2e/admin/secret",
            "/app/x/%2e%2e/admin/secret",
            "/app/x/%2E%2E/admin/./secret",
            "/app/admin/secret",
        ] {
            assert_eq!(
                normalize(spelling).as_deref(),
                Ok("/app/admin/secret"),
                "{spelling}"
            );
        }
    }

    #[test]
    fn slashes_at_the_end_and_dot_files_stay() {
        for (path, normal) in [
            ("/", "/"),
            ("/a/", "/a/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a%20b/%7e", "/a%20b/~"),
            ("/a%c3%a9", "/a%C3%A9"),
            ("*", "*"),
        ] {
            assert_eq!(normalize(path).as_deref(), Ok(normal), "{path}");
        }
        assert!(matches!(normalize("/plain/path"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn climbing_escaped_slashes_and_bad_escapes_are_refused() {
        assert_eq!(normalize("/../../etc/passwd"), Err(Invalid::AboveRoot));
        assert_eq!(normalize("/a/../../b"), Err(Invalid::AboveRoot));
        assert_eq!(
            normalize("/app/x/..%2fadmin/secret"),
            Err(Invalid::EscapedSlash)
        );
        assert_eq!(normalize("/app/admin%2Fsecret"), Err(Invalid::EscapedSlash));
        assert_eq!(normalize("/a%5cb"), Err(Invalid::EscapedSlash));
        assert_eq!(normalize("/a%zz"), Err(Invalid::BadEscape));
        assert_eq!(normalize("/a%4"), Err(Invalid::BadEscape));
    }
}
