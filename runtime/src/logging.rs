//! Tracing initialisation: `RUST_LOG` filters, text or JSON lines on stderr.

use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` wins over `default_filter`.
/// Calling it twice (as tests do) keeps the first subscriber.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_parses_from_settings_strings() {
        let f: LogFormat = serde_json::from_str("\"json\"").expect("json");
        assert_eq!(f, LogFormat::Json);
        assert!(serde_json::from_str::<LogFormat>("\"xml\"").is_err());
        init(LogFormat::Text, "info");
        init(LogFormat::Json, "info"); // a second init is harmless
    }
}
