//! What `deploy/up.sh` wrote about the stack it started: `deploy/stack.env`
//! (or the file `SWITCHYARD_STACK` names), `KEY=VALUE` lines with the same
//! names as the variables. A flag or a variable wins over the file; what
//! neither gives comes from it, else from the defaults of a stack on this
//! machine (registry `http://127.0.0.1:7000`, gateway admin
//! `http://127.0.0.1:8081`).

use std::{collections::HashMap, path::PathBuf};

use crate::Global;

/// The file read when `SWITCHYARD_STACK` is not set.
const STACK_FILE: &str = "deploy/stack.env";

/// Fills what `g` lacks from the stack file, then from the defaults.
pub(crate) fn fill(g: &mut Global) {
    let file = std::env::var_os("SWITCHYARD_STACK")
        .map_or_else(|| PathBuf::from(STACK_FILE), PathBuf::from);
    let values = std::fs::read_to_string(&file)
        .map(|text| parse(&text))
        .unwrap_or_default();
    let take = |key: &str| values.get(key).cloned();
    let path = |key: &str| take(key).map(PathBuf::from);
    g.registry = g.registry.take().or_else(|| take("SWITCHYARD_REGISTRY"));
    g.gateway_admin = g
        .gateway_admin
        .take()
        .or_else(|| take("SWITCHYARD_GATEWAY_ADMIN"));
    if g.token.is_none() && g.token_file.is_none() {
        g.token = take("SWITCHYARD_TOKEN");
    }
    if g.mtls_ca.is_none() && g.mtls_cert.is_none() && g.mtls_key.is_none() {
        g.mtls_ca = path("SWITCHYARD_MTLS_CA");
        g.mtls_cert = path("SWITCHYARD_MTLS_CERT");
        g.mtls_key = path("SWITCHYARD_MTLS_KEY");
    }
    g.registry
        .get_or_insert_with(|| "http://127.0.0.1:7000".into());
    g.gateway_admin
        .get_or_insert_with(|| "http://127.0.0.1:8081".into());
}

/// `KEY=VALUE` lines; blank lines and `#` comments skipped.
fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_settings() {
        let v = parse(
            "# up.sh\nSWITCHYARD_REGISTRY=https://127.0.0.1:7000\n\n  SWITCHYARD_TOKEN = t=1 \nnot a setting\n",
        );
        assert_eq!(v["SWITCHYARD_REGISTRY"], "https://127.0.0.1:7000");
        assert_eq!(v["SWITCHYARD_TOKEN"], "t=1");
        assert_eq!(v.len(), 2);
    }
}
