//! The settings files of the three binaries (`--config FILE`, TOML), read
//! by the runtime's loader as the binaries read them. Checks: no panic; a
//! refused file names a key (or the file) in its error, as the binaries
//! print it before they exit 64.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_runtime::settings::{Sources, load};

fuzz_target!(|text: &[u8]| {
    let path = std::env::temp_dir().join(format!(
        "switchyard-fuzz-settings-{}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write the settings file");
    let sources = Sources {
        args: vec!["--config".into(), path.display().to_string()],
        env: Default::default(),
    };
    let named = |e: switchyard_runtime::ConfigError| {
        assert!(!e.to_string().is_empty());
        assert!(!e.key.is_empty(), "an error without a key: {e}");
    };
    if let Err(e) = load::<switchyard_gateway::Config>(&sources) {
        named(e);
    }
    if let Err(e) = load::<switchyard_registry::Config>(&sources) {
        named(e);
    }
    if let Err(e) = load::<switchyard_balancer::Config>(&sources) {
        named(e);
    }
});
