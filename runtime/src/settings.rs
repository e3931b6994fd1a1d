//! Process-level settings: flags > environment (`SWITCHYARD_...`) > TOML file.
//!
//! Each binary declares its settings once with [`settings!`](crate::settings!):
//! the struct, a `///` line per key (which becomes `--help`), and a default.
//! [`load`] merges the three sources into one JSON object and deserializes it
//! with `deny_unknown_fields`, so an unknown key anywhere is refused, and a
//! bad value is reported with the key that carried it.
//!
//! Why not clap: clap covers flags and environment but not the file, and a
//! derive per source would repeat every key three times. Values from flags and
//! the environment are typed by the key's default (number, bool, list, string).

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// One settings key, for `--help` and the environment lookup.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The key, as written in TOML (`snake_case`). The flag is the same with
    /// dashes, the environment variable is `SWITCHYARD_` + upper case.
    pub key: &'static str,
    /// One line saying what the key is for.
    pub help: &'static str,
}

/// The keys a settings struct has. Implemented by [`settings!`](crate::settings!).
pub trait Described {
    /// Every key, in declaration order.
    const FIELDS: &'static [Field];
}

/// A binary's settings.
pub trait Settings: Described + Serialize + DeserializeOwned + Default {
    /// Checks what types cannot; runs once at startup.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// A setting that cannot be used. Printed as one line; the binary exits 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{key}`: {message}")]
pub struct ConfigError {
    /// The key (or flag, or file) at fault.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// Where raw settings come from; tests pass their own.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// Command-line arguments after the binary name (and subcommand).
    pub args: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
}

// === impl ConfigError ===

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

// === impl Sources ===

impl Sources {
    /// This process's arguments (after `skip` of them) and environment.
    pub fn from_process(skip: usize) -> Self {
        Self {
            args: std::env::args().skip(skip).collect(),
            env: std::env::vars().collect(),
        }
    }
}

/// The environment variable that carries `key`.
pub fn env_var(key: &str) -> String {
    format!("SWITCHYARD_{}", key.to_ascii_uppercase())
}

/// Merges file, environment and flags (in rising precedence) and validates.
pub fn load<S: Settings>(sources: &Sources) -> Result<S, ConfigError> {
    let defaults =
        serde_json::to_value(S::default()).map_err(|e| ConfigError::new("<defaults>", e))?;
    let flags = parse_flags::<S>(&sources.args)?;
    let file = flags
        .config
        .clone()
        .or_else(|| sources.env.get("SWITCHYARD_CONFIG").cloned());
    let mut merged = match file {
        Some(path) => read_file(Path::new(&path))?,
        None => Map::new(),
    };
    for field in S::FIELDS {
        if let Some(raw) = sources.env.get(&env_var(field.key)) {
            merged.insert(field.key.into(), typed(&defaults[field.key], raw));
        }
    }
    for field in S::FIELDS.iter().filter(|f| is_secret(f.key)) {
        let file_key = format!("{}_file", field.key);
        if let Some(raw) = sources.env.get(&env_var(&file_key)) {
            merged.insert(file_key, Value::String(raw.clone()));
        }
    }
    for (key, raw) in flags.values {
        let value = match defaults.get(key.as_str()) {
            Some(default) => typed(default, &raw),
            None => Value::String(raw),
        };
        merged.insert(key, value);
    }
    read_secret_files::<S>(&mut merged, &defaults)?;
    // Kept to quote a refused value back (a start-up cost only).
    let given = merged.clone();
    let settings: S = serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| {
        let key = match e.path().to_string() {
            // A key spelled `"" = ...` (found by fuzz/settings_file).
            key if key.is_empty() => "\"\"".to_string(),
            key => key,
        };
        let message = if is_secret(&key) {
            // serde quotes what it found; a token is never printed.
            let expected = if defaults[key.as_str()].is_array() {
                "a list of tokens"
            } else {
                "a token"
            };
            format!("not {expected} (the value is not shown)")
        } else {
            e.into_inner().to_string()
        };
        // The value as given, unless the message already quotes it:
        // "`grpc_listen`: `nothost:1`: invalid socket address syntax".
        match given.get(&key).map(display) {
            Some(value) if !value.is_empty() && !message.contains(&value) && !is_secret(&key) => {
                ConfigError::new(key, format!("`{value}`: {message}"))
            }
            _ => ConfigError::new(key, message),
        }
    })?;
    settings.validate()?;
    Ok(settings)
}

struct Flags {
    config: Option<String>,
    values: Vec<(String, String)>,
}

fn parse_flags<S: Described>(args: &[String]) -> Result<Flags, ConfigError> {
    let mut flags = Flags {
        config: None,
        values: Vec::new(),
    };
    let mut args = args.iter().peekable();
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--") else {
            return Err(ConfigError::new(arg.as_str(), "unexpected argument"));
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        let key = name.replace('-', "_");
        let known = |k: &str| S::FIELDS.iter().any(|f| f.key == k);
        let secret_file = key
            .strip_suffix("_file")
            .is_some_and(|k| is_secret(k) && known(k));
        if key != "config" && !known(&key) && !secret_file {
            return Err(ConfigError::new(format!("--{name}"), "unknown flag"));
        }
        let value = match inline {
            Some(v) => v,
            None => match args.next_if(|next| !next.starts_with("--")) {
                Some(v) => v.clone(),
                None => "true".to_string(),
            },
        };
        if key == "config" {
            flags.config = Some(value);
        } else {
            flags.values.push((key, value));
        }
    }
    Ok(flags)
}

/// Tokens: each may also come from a file (`register_tokens_file`, flag
/// `--register-tokens-file`, `SWITCHYARD_REGISTER_TOKENS_FILE`), so it
/// stays out of process listings and environment dumps, and is never
/// quoted back in an error.
fn is_secret(key: &str) -> bool {
    key.ends_with("_token") || key.ends_with("_tokens")
}

/// Replaces each `<key>_file` by the file's content: one token per line
/// for a list, the trimmed text for one token.
fn read_secret_files<S: Described>(
    merged: &mut Map<String, Value>,
    defaults: &Value,
) -> Result<(), ConfigError> {
    for field in S::FIELDS.iter().filter(|f| is_secret(f.key)) {
        let file_key = format!("{}_file", field.key);
        let Some(path) = merged.remove(&file_key) else {
            continue;
        };
        let Value::String(path) = path else {
            return Err(ConfigError::new(file_key, "must be a path"));
        };
        if merged.contains_key(field.key) {
            return Err(ConfigError::new(
                file_key,
                format!("set {} or {}_file, not both", field.key, field.key),
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::new(&file_key, format!("{path}: {e}")))?;
        let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let value = match &defaults[field.key] {
            Value::Array(_) => Value::Array(lines.map(Value::from).collect()),
            _ => Value::String(lines.collect::<Vec<_>>().join("")),
        };
        merged.insert(field.key.to_string(), value);
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let key = format!("config file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&key, e))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::new(&key, e))?;
    match serde_json::to_value(table) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConfigError::new(key, "not a table")),
        Err(e) => Err(ConfigError::new(key, e)),
    }
}

/// Types a raw string like the key's default, so `"7"` stays a string for a
/// string key and becomes a number for a numeric one. A value that does not
/// parse is kept as a string, and deserialization names the key.
fn typed(default: &Value, raw: &str) -> Value {
    match default {
        Value::Bool(_) => raw.parse().map(Value::Bool).unwrap_or_else(|_| raw.into()),
        Value::Number(n) if n.is_f64() => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| raw.into()),
        Value::Number(_) => raw
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| raw.parse::<u64>().map(Value::from))
            .unwrap_or_else(|_| raw.into()),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Value::from)
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    }
}

/// Renders `--help` for a settings struct.
pub fn help<S: Described + Serialize + Default>() -> String {
    let defaults = serde_json::to_value(S::default()).unwrap_or(Value::Null);
    let mut out = String::new();
    for field in S::FIELDS {
        let default = match &defaults[field.key] {
            Value::Null => String::new(),
            Value::String(s) if s.is_empty() => String::new(),
            Value::Array(a) if a.is_empty() => String::new(),
            v => format!(" [default: {}]", display(v)),
        };
        out.push_str(&format!(
            "  --{:<28} {}{}\n  {:<30} env {}\n",
            field.key.replace('_', "-"),
            field.help.trim(),
            default,
            "",
            env_var(field.key)
        ));
        if is_secret(field.key) {
            let file_key = format!("{}_file", field.key);
            out.push_str(&format!(
                "  --{:<28} {}\n  {:<30} env {}\n",
                file_key.replace('_', "-"),
                "... or read from this file (one per line)",
                "",
                env_var(&file_key)
            ));
        }
    }
    out
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(display).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Serde helpers for durations written as `"10s"`, `"250ms"`, `"2m"`.
pub mod duration {
    use super::Duration;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Serializes a duration as a human-readable string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Deserializes a duration from a string like `"10s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let raw = String::deserialize(d)?;
        humantime::parse_duration(&raw).map_err(|e| {
            D::Error::custom(format!("`{raw}` is not a duration like 10s or 250ms: {e}"))
        })
    }
}

/// Declares a settings struct: fields with a `///` line and a default.
///
/// ```
/// switchyard_runtime::settings! {
///     /// Settings of an example.
///     pub struct Example {
///         /// Where to listen.
///         pub listen: String = "0.0.0.0:7000".into(),
///         /// How long a lease lives.
///         #[serde(with = "switchyard_runtime::settings::duration")]
///         pub ttl: std::time::Duration = std::time::Duration::from_secs(10),
///     }
/// }
/// let e = Example::default();
/// assert_eq!(e.listen, "0.0.0.0:7000");
/// ```
#[macro_export]
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $(#[serde($($serde:tt)*)])?
                $fvis:vis $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        $vis struct $name {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])?
                $fvis $field: $ty,
            )*
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $crate::settings::Described for $name {
            const FIELDS: &'static [$crate::settings::Field] = &[
                $($crate::settings::Field { key: stringify!($field), help: concat!($($doc),+) },)*
            ];
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::settings! {
        /// Test settings.
        pub(crate) struct Demo {
            /// A port.
            pub(crate) port: u16 = 7000,
            /// A name.
            pub(crate) name: String = "x".into(),
            /// Tokens.
            pub(crate) tokens: Vec<String> = Vec::new(),
            /// Secret tokens.
            pub(crate) api_tokens: Vec<String> = Vec::new(),
            /// A switch.
            pub(crate) verbose: bool = false,
            /// A time.
            #[serde(with = "duration")]
            pub(crate) ttl: Duration = Duration::from_secs(10),
        }
    }

    impl Settings for Demo {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.port == 1 {
                return Err(ConfigError::new("port", "1 is reserved"));
            }
            Ok(())
        }
    }

    fn sources(args: &[&str], env: &[(&str, &str)]) -> Sources {
        Sources {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A file under the target dir that is removed on drop (no tempfile dep).
    mod tempfile_path {
        pub(super) struct TempPath(pub(super) std::path::PathBuf);
        impl TempPath {
            pub(super) fn with(text: &str) -> Self {
                let n: u64 = rand::random();
                let p = std::env::temp_dir().join(format!("switchyard-settings-{n}.toml"));
                std::fs::write(&p, text).expect("write temp settings file");
                Self(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_apply_without_sources() {
        let d: Demo = load(&sources(&[], &[])).expect("defaults load");
        assert_eq!(d.port, 7000);
        assert_eq!(d.ttl, Duration::from_secs(10));
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let f = file("port = 1000\nname = \"file\"\nverbose = true\n");
        let path = f.0.to_str().expect("utf8 path");
        let env = [("SWITCHYARD_PORT", "2000"), ("SWITCHYARD_NAME", "env")];
        let d: Demo = load(&sources(&["--config", path, "--port=3000"], &env)).expect("load");
        assert_eq!(d.port, 3000, "flag wins");
        assert_eq!(d.name, "env", "env beats file");
        assert!(d.verbose, "file applies when nothing overrides it");
    }

    #[test]
    fn env_values_are_typed_by_default() {
        let env = [
            ("SWITCHYARD_TOKENS", "a, b,c"),
            ("SWITCHYARD_NAME", "123"),
            ("SWITCHYARD_TTL", "250ms"),
        ];
        let d: Demo = load(&sources(&["--verbose"], &env)).expect("load");
        assert_eq!(d.tokens, ["a", "b", "c"]);
        assert_eq!(d.name, "123");
        assert_eq!(d.ttl, Duration::from_millis(250));
        assert!(d.verbose);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let f = file("prot = 1\n");
        let path = f.0.to_str().expect("utf8 path");
        let err = load::<Demo>(&sources(&["--config", path], &[])).expect_err("unknown key");
        assert!(err.message.contains("prot"), "{err}");
        let err = load::<Demo>(&sources(&["--nope", "1"], &[])).expect_err("unknown flag");
        assert_eq!(err.key, "--nope");
        // An empty key is named as TOML spells it (found by fuzzing).
        let f = file("'' = ''\n");
        let path = f.0.to_str().expect("utf8 path");
        let err = load::<Demo>(&sources(&["--config", path], &[])).expect_err("empty key");
        assert_eq!(err.key, "\"\"");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = load::<Demo>(&sources(&["--port", "seventy"], &[])).expect_err("bad port");
        assert_eq!(err.key, "port");
        let err = load::<Demo>(&sources(&[], &[("SWITCHYARD_TTL", "soon")])).expect_err("bad ttl");
        assert_eq!(err.key, "ttl");
        assert!(err.message.contains("soon"), "{err}");
        let err = load::<Demo>(&sources(&["--port", "1"], &[])).expect_err("validate");
        assert_eq!(
            err.to_string(),
            "invalid configuration: `port`: 1 is reserved"
        );
    }

    #[test]
    fn unrelated_environment_is_ignored_and_missing_file_named() {
        let d: Demo = load(&sources(&[], &[("SWITCHYARD_OTHER", "1")])).expect("ignored");
        assert_eq!(d.port, 7000);
        let err =
            load::<Demo>(&sources(&["--config", "/nonexistent.toml"], &[])).expect_err("file");
        assert!(err.key.contains("/nonexistent.toml"), "{err}");
    }

    #[test]
    fn help_lists_every_key_with_env_and_default() {
        let h = help::<Demo>();
        assert!(h.contains("--port"), "{h}");
        assert!(h.contains("SWITCHYARD_PORT"), "{h}");
        assert!(h.contains("[default: 10s]"), "{h}");
    }

    #[test]
    fn tokens_come_from_files_too() {
        let secrets = tempfile_path::TempPath::with("tok-one\n\n  tok-two  \n");
        let path = secrets.0.display().to_string();
        let by_flag: Demo = load(&sources(&["--api-tokens-file", &path], &[])).expect("flag");
        assert_eq!(by_flag.api_tokens, ["tok-one", "tok-two"]);
        let by_env: Demo =
            load(&sources(&[], &[("SWITCHYARD_API_TOKENS_FILE", &path)])).expect("env");
        assert_eq!(by_env.api_tokens, ["tok-one", "tok-two"]);
        let toml = file(&format!("api_tokens_file = {path:?}\n"));
        let by_toml: Demo =
            load(&sources(&["--config", &toml.0.display().to_string()], &[])).expect("toml");
        assert_eq!(by_toml.api_tokens, ["tok-one", "tok-two"]);

        let both = load::<Demo>(&sources(
            &["--api-tokens-file", &path],
            &[("SWITCHYARD_API_TOKENS", "tok-three")],
        ))
        .expect_err("both");
        assert_eq!(both.key, "api_tokens_file");
        let missing = load::<Demo>(&sources(&["--api-tokens-file", "/nonexistent/x"], &[]))
            .expect_err("missing");
        assert_eq!(missing.key, "api_tokens_file");
        // Only tokens have a file form.
        let err = load::<Demo>(&sources(&["--port-file", &path], &[])).expect_err("port");
        assert_eq!(err.key, "--port-file");
        // A token of the wrong type is not quoted back.
        let toml = file("api_tokens = 12345678\n");
        let err = load::<Demo>(&sources(&["--config", &toml.0.display().to_string()], &[]))
            .expect_err("type");
        assert!(!err.message.contains("12345678"), "{err}");
        assert!(help::<Demo>().contains("--api-tokens-file"));
    }
}
