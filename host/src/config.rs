//! Layered configuration the Stella Ops way: `Section:Key` names, case-insensitive, later sources win.
//!
//! Sources, weakest first:
//!
//! 1. environment variables whose name contains `__` (`OCI__RegistryUrl` is `OCI:RegistryUrl`);
//!    variables without `__` are never read, so the host's own environment (`PATH`, `HOME`, …)
//!    cannot leak into a check;
//! 2. a JSON settings file (`--config FILE`): nested objects become `A:B` keys, array items
//!    `A:0`, `A:1`, numbers and booleans their text, `null` leaves the key unset;
//! 3. `--set KEY=VALUE` options, in the order given.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Key suffixes that mark a value as secret even when no check declares it so.
const SECRET_SUFFIXES: [&str; 4] = ["password", "token", "secret", "apikey"];

/// Username/password key pairs whose `user:password` base64 form is redacted too, because a
/// check may echo the `Authorization: Basic …` header it built from them.
pub const BASIC_AUTH_PAIRS: [(&str, &str); 2] = [
    ("OCI:Username", "OCI:Password"),
    ("Registry:Username", "Registry:Password"),
];

/// A configuration problem the operator has to fix before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A configuration error with this operator-facing message.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

/// One stored value, with the key spelled as its source last spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: String,
    value: String,
}

/// The merged configuration: a case-insensitive map from `Section:Key` to text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Indexed by the lowercased key so lookups ignore case.
    entries: BTreeMap<String, Entry>,
}

impl Settings {
    /// Builds the configuration from all three sources, weakest first.
    pub fn layered(
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
        sets: &[String],
    ) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();

        settings.merge_env(env);
        if let Some(path) = file {
            settings.merge_json_file(path)?;
        }
        for assignment in sets {
            settings.merge_assignment(assignment)?;
        }

        Ok(settings)
    }

    /// Stores `value` under `key`, replacing any value stored under another spelling of it.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let key = normalize_key(key);
        self.entries.insert(
            key.to_lowercase(),
            Entry {
                key,
                value: value.into(),
            },
        );
    }

    /// The value stored under `key`, whatever its case.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .get(&normalize_key(key).to_lowercase())
            .map(|entry| entry.value.as_str())
    }

    /// Every key and value, ordered by lowercased key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .values()
            .map(|entry| (entry.key.as_str(), entry.value.as_str()))
    }

    /// Merges environment variables; only names containing `__` are configuration.
    pub fn merge_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            if name.contains("__") {
                self.set(&name, value);
            }
        }
    }

    /// Merges a JSON settings file.
    pub fn merge_json_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError(format!(
                "cannot read config file `{}`: {err}; pass an existing JSON file to `--config`",
                path.display()
            ))
        })?;
        self.merge_json_str(&text)
            .map_err(|problem| ConfigError(format!("config file `{}` {problem}", path.display())))
    }

    /// Merges JSON settings text; the error says what is wrong with it, without naming a file.
    pub fn merge_json_str(&mut self, text: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(text)
            .map_err(|err| format!("is not valid JSON ({err}); fix the syntax there"))?;
        let Value::Object(_) = value else {
            return Err("must hold a JSON object at the top level, like `{\"OCI\": {\"RegistryUrl\": \"…\"}}`".to_string());
        };

        let mut flat = Vec::new();
        flatten_json("", &value, &mut flat);
        for (key, value) in flat {
            self.set(&key, value);
        }
        Ok(())
    }

    /// Merges one `--set KEY=VALUE` option.
    ///
    /// A malformed option is not echoed back: `--set 'OCI:Password hunter2'` would otherwise
    /// print the password, so only the key of a well-formed part is ever named.
    pub fn merge_assignment(&mut self, assignment: &str) -> Result<(), ConfigError> {
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(ConfigError(
                "a `--set` option has no `=` (not shown, in case it holds a secret); write it as `--set Section:Key=value`, for example `--set OCI:RegistryUrl=https://registry.local`".to_string(),
            ));
        };
        if key.trim().is_empty() {
            return Err(ConfigError(
                "a `--set` option has an empty key before `=` (its value is not shown); write it as `--set Section:Key=value`".to_string(),
            ));
        }
        self.set(key.trim(), value);
        Ok(())
    }

    /// The values that must never appear in output: declared secrets, keys named like secrets,
    /// and the base64 `user:password` form of the known credential pairs.
    ///
    /// `declared_secret_keys` are the keys any loaded check marked `secret: true`.
    pub fn secret_values<'a>(
        &self,
        declared_secret_keys: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut secrets: Vec<String> = declared_secret_keys
            .into_iter()
            .filter_map(|key| self.get(key))
            .map(str::to_string)
            .collect();

        secrets.extend(
            self.iter()
                .filter(|(key, _)| is_secret_name(key))
                .map(|(_, value)| value.to_string()),
        );

        for (user_key, password_key) in BASIC_AUTH_PAIRS {
            if let (Some(user), Some(password)) = (self.get(user_key), self.get(password_key)) {
                use base64::Engine as _;
                let token = format!("{user}:{password}");
                let encoded = base64::engine::general_purpose::STANDARD.encode(token.as_bytes());
                // Some clients drop the padding; redact both spellings.
                secrets.push(encoded.trim_end_matches('=').to_string());
                secrets.push(encoded);
            }
        }

        secrets.retain(|secret| !secret.is_empty());
        secrets
    }
}

/// True when a key's name says it holds a secret (`…Password`, `…Token`, `…Secret`, `…ApiKey`).
pub fn is_secret_name(key: &str) -> bool {
    let key = key.to_lowercase();
    SECRET_SUFFIXES.iter().any(|suffix| key.ends_with(suffix))
}

/// Turns any accepted spelling of a key into `Section:Key` form.
///
/// `__` is the environment's section separator; it is accepted everywhere so an operator can
/// copy a variable name into `--set` unchanged.
fn normalize_key(key: &str) -> String {
    key.trim().replace("__", ":")
}

/// Flattens nested JSON into `A:B` keys, the way .NET configuration reads JSON files.
fn flatten_json(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let child = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}:{name}")
        }
    };
    match value {
        Value::Object(map) => {
            for (name, value) in map {
                flatten_json(&child(name), value, out);
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                flatten_json(&child(&index.to_string()), value, out);
            }
        }
        Value::Null => {}
        Value::String(text) => out.push((prefix.to_string(), text.clone())),
        Value::Bool(_) | Value::Number(_) => out.push((prefix.to_string(), value.to_string())),
    }
}

/// Parses a duration such as `30s`, `500ms`, `2m`, `1h` or plain seconds (`45`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let invalid = || {
        format!(
            "invalid duration `{text}`: use a whole number with `ms`, `s`, `m` or `h`, for example `30s`"
        )
    };

    let amount: u64 = number.parse().map_err(|_| invalid())?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(amount),
        "" | "s" => Duration::from_secs(amount),
        "m" => Duration::from_secs(amount.saturating_mul(60)),
        "h" => Duration::from_secs(amount.saturating_mul(3600)),
        _ => return Err(invalid()),
    };
    if duration.is_zero() {
        return Err(format!(
            "invalid duration `{text}`: it must be longer than zero"
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_double_underscore_is_the_section_separator() {
        let settings = Settings::layered(
            env(&[("OCI__RegistryUrl", "https://r.local"), ("PATH", "/bin")]),
            None,
            &[],
        )
        .unwrap();

        assert_eq!(settings.get("OCI:RegistryUrl"), Some("https://r.local"));
        assert_eq!(settings.get("PATH"), None, "names without `__` are ignored");
    }

    #[test]
    fn keys_are_case_insensitive() {
        let mut settings = Settings::default();
        settings.set("OCI:RegistryUrl", "a");

        assert_eq!(settings.get("oci:registryurl"), Some("a"));
        assert_eq!(settings.get("OCI__REGISTRYURL"), Some("a"));

        settings.set("oci:REGISTRYURL", "b");
        assert_eq!(settings.iter().count(), 1);
        assert_eq!(settings.get("OCI:RegistryUrl"), Some("b"));
    }

    #[test]
    fn json_nesting_becomes_colon_keys() {
        let mut settings = Settings::default();
        settings
            .merge_json_str(
                r#"{"OCI":{"RegistryUrl":"https://r","Port":5000,"Insecure":true,"Gone":null},
                    "Doctor":{"Plugins":{"check.a":{"AllowedHosts":"x.local"}}},
                    "List":["a","b"]}"#,
            )
            .unwrap();

        assert_eq!(settings.get("oci:registryurl"), Some("https://r"));
        assert_eq!(settings.get("OCI:Port"), Some("5000"));
        assert_eq!(settings.get("OCI:Insecure"), Some("true"));
        assert_eq!(settings.get("OCI:Gone"), None);
        assert_eq!(
            settings.get("Doctor:Plugins:check.a:AllowedHosts"),
            Some("x.local")
        );
        assert_eq!(settings.get("List:1"), Some("b"));
    }

    #[test]
    fn later_sources_win_env_then_file_then_set() {
        let dir = std::env::temp_dir().join(format!("stella-doctor-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.json");
        std::fs::write(
            &file,
            r#"{"OCI":{"RegistryUrl":"file","Username":"file-user"}}"#,
        )
        .unwrap();

        let settings = Settings::layered(
            env(&[
                ("OCI__RegistryUrl", "env"),
                ("OCI__Username", "env-user"),
                ("OCI__Repository", "env-repo"),
            ]),
            Some(&file),
            &["oci:registryurl=set".to_string()],
        )
        .unwrap();

        assert_eq!(settings.get("OCI:RegistryUrl"), Some("set"));
        assert_eq!(settings.get("OCI:Username"), Some("file-user"));
        assert_eq!(settings.get("OCI:Repository"), Some("env-repo"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_config_file_names_the_file_and_problem() {
        let missing = Path::new("/nonexistent/stella/settings.json");
        let err = Settings::layered(Vec::new(), Some(missing), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/stella/settings.json")
        );
        assert!(err.to_string().starts_with("cannot read config file"));

        let mut settings = Settings::default();
        let problem = settings.merge_json_str("{ not json").unwrap_err();
        assert!(problem.starts_with("is not valid JSON"), "{problem}");
        let problem = settings.merge_json_str("[1]").unwrap_err();
        assert!(problem.contains("JSON object"), "{problem}");
    }

    #[test]
    fn set_requires_key_and_value() {
        let mut settings = Settings::default();
        let no_equals = settings
            .merge_assignment("OCI:Password hunter2")
            .unwrap_err();
        assert!(no_equals.to_string().contains("`--set Section:Key=value`"));
        assert!(!no_equals.to_string().contains("hunter2"), "{no_equals}");
        let empty_key = settings.merge_assignment("=hunter2").unwrap_err();
        assert!(!empty_key.to_string().contains("hunter2"), "{empty_key}");
        settings.merge_assignment("A:B=x=y").unwrap();
        assert_eq!(settings.get("a:b"), Some("x=y"));
    }

    #[test]
    fn secret_names_are_recognised_by_suffix() {
        assert!(is_secret_name("OCI:Password"));
        assert!(is_secret_name("Registry:AccessToken"));
        assert!(is_secret_name("Vault:ClientSecret"));
        assert!(is_secret_name("Scanner:apikey"));
        assert!(!is_secret_name("OCI:Username"));
    }

    #[test]
    fn secret_values_include_declared_named_and_basic_auth() {
        let mut settings = Settings::default();
        settings.set("OCI:Username", "alice");
        settings.set("OCI:Password", "s3cret");
        settings.set("Custom:Credential", "declared-value");
        settings.set("Empty:Token", "");

        let secrets = settings.secret_values(["custom:credential"]);

        assert!(secrets.contains(&"declared-value".to_string()));
        assert!(secrets.contains(&"s3cret".to_string()));
        assert!(
            secrets.contains(&"YWxpY2U6czNjcmV0".to_string()),
            "{secrets:?}"
        );
        assert!(!secrets.contains(&String::new()));
        assert!(!secrets.contains(&"alice".to_string()));
    }

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
