//! Reading and validating the check's configuration.
//!
//! Values come from a lookup function so the same code serves `wasi:config/store`, environment
//! variables or a test map. Everything is validated before the first request, so a bad value
//! becomes a precise message naming the key instead of a confusing registry answer.

use std::fmt;
use std::time::Duration;

use crate::auth::{Credentials, Secret};
use crate::url::{Url, UrlError};

/// The configuration keys the check reads.
pub mod keys {
    /// The registry URL; preferred over [`REGISTRY_URL`].
    pub const OCI_REGISTRY_URL: &str = "OCI:RegistryUrl";
    /// The repository the probe opens an upload in.
    pub const OCI_PUSH_TEST_REPOSITORY: &str = "OCI:PushTestRepository";
    /// The repository shared by the OCI checks, used when no push-specific one is set.
    pub const OCI_TEST_REPOSITORY: &str = "OCI:TestRepository";
    /// User name for basic authentication.
    pub const OCI_USERNAME: &str = "OCI:Username";
    /// Password for basic authentication.
    pub const OCI_PASSWORD: &str = "OCI:Password";
    /// A bearer token, sent as it is or exchanged as an identity token when challenged.
    pub const OCI_TOKEN: &str = "OCI:Token";
    /// Per-request timeout in seconds.
    pub const OCI_TIMEOUT_SECONDS: &str = "OCI:TimeoutSeconds";
    /// The platform-wide registry URL, the fallback for [`OCI_REGISTRY_URL`].
    pub const REGISTRY_URL: &str = "Registry:Url";
    /// Platform-wide user name.
    pub const REGISTRY_USERNAME: &str = "Registry:Username";
    /// Platform-wide password.
    pub const REGISTRY_PASSWORD: &str = "Registry:Password";
    /// Platform-wide bearer token, the fallback for [`OCI_TOKEN`].
    pub const REGISTRY_TOKEN: &str = "Registry:Token";
}

/// The repository probed when none is configured.
pub const DEFAULT_REPOSITORY: &str = "stellaops/doctor-test";

/// The per-request timeout when none is configured.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

/// The largest accepted timeout; a doctor run should not hang for minutes on one check.
const MAX_TIMEOUT_SECONDS: u64 = 300;

/// Everything the probe needs, validated.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The registry, without a trailing slash or `/v2`.
    pub registry: Url,
    /// The repository name, valid per the OCI name grammar.
    pub repository: String,
    /// The service account.
    pub credentials: Credentials,
    /// The timeout for each HTTP request.
    pub timeout: Duration,
}

/// Why the configuration cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// No registry URL is set: the check does not apply.
    RegistryNotConfigured,
    /// No credentials are set: the check does not apply.
    CredentialsNotConfigured,
    /// One half of a user name and password pair is set.
    IncompleteBasicAuth {
        /// The key that is set.
        present: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
    /// A value cannot be used.
    Invalid {
        /// The key holding the value.
        key: &'static str,
        /// What is wrong with it, lowercase.
        problem: String,
        /// What to set instead.
        fix: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::RegistryNotConfigured => write!(
                f,
                "no registry is configured; set `{}` (or `{}`)",
                keys::OCI_REGISTRY_URL,
                keys::REGISTRY_URL
            ),
            ConfigError::CredentialsNotConfigured => write!(
                f,
                "no registry credentials are configured; set `{}` and `{}`, or `{}`",
                keys::OCI_USERNAME,
                keys::OCI_PASSWORD,
                keys::OCI_TOKEN
            ),
            ConfigError::IncompleteBasicAuth { present, missing } => {
                write!(f, "`{present}` is set but `{missing}` is not; set both")
            }
            ConfigError::Invalid { key, problem, fix } => write!(f, "`{key}` {problem}; {fix}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the configuration; an empty value counts as absent.
pub fn resolve(lookup: impl Fn(&str) -> Option<String>) -> Result<ProbeConfig, ConfigError> {
    let get = |key: &str| lookup(key).filter(|value| !value.trim().is_empty());

    let (url_key, url_text) = first_of(&get, &[keys::OCI_REGISTRY_URL, keys::REGISTRY_URL])
        .ok_or(ConfigError::RegistryNotConfigured)?;
    let registry = parse_registry(url_key, &url_text)?;
    let credentials = credentials(&get)?;
    let repository = repository(&get)?;
    let timeout = timeout(&get)?;

    Ok(ProbeConfig {
        registry,
        repository,
        credentials,
        timeout,
    })
}

/// The first key in `candidates` that holds a value, with the value.
fn first_of(
    get: &impl Fn(&str) -> Option<String>,
    candidates: &[&'static str],
) -> Option<(&'static str, String)> {
    candidates
        .iter()
        .find_map(|key| get(key).map(|value| (*key, value)))
}

fn parse_registry(key: &'static str, text: &str) -> Result<Url, ConfigError> {
    Url::parse_registry(text).map_err(|error| {
        let fix = match error {
            UrlError::UserInfo => format!(
                "remove the credentials from the url and set `{}` and `{}` instead",
                keys::OCI_USERNAME,
                keys::OCI_PASSWORD
            ),
            _ => "set it to the registry's address, for example `https://registry.example.com`"
                .to_string(),
        };
        ConfigError::Invalid {
            key,
            problem: format!("is not a usable registry url ({error})"),
            fix,
        }
    })
}

/// Credentials from the `OCI:` section, or else from the `Registry:` section.
///
/// A section is taken as a whole: a user name from one section paired with a password from the
/// other is far more likely a mistake than an intention.
fn credentials(get: &impl Fn(&str) -> Option<String>) -> Result<Credentials, ConfigError> {
    let sections = [
        (keys::OCI_USERNAME, keys::OCI_PASSWORD, keys::OCI_TOKEN),
        (
            keys::REGISTRY_USERNAME,
            keys::REGISTRY_PASSWORD,
            keys::REGISTRY_TOKEN,
        ),
    ];
    for (user_key, password_key, token_key) in sections {
        match (get(user_key), get(password_key), get(token_key)) {
            (Some(username), Some(password), _) => {
                let password = Secret::new(password);
                return Ok(Credentials::Basic { username, password });
            }
            (Some(_), None, _) => {
                let (present, missing) = (user_key, password_key);
                return Err(ConfigError::IncompleteBasicAuth { present, missing });
            }
            (None, Some(_), _) => {
                let (present, missing) = (password_key, user_key);
                return Err(ConfigError::IncompleteBasicAuth { present, missing });
            }
            (None, None, Some(token)) => {
                return Ok(Credentials::Bearer {
                    token: Secret::new(token),
                });
            }
            (None, None, None) => {}
        }
    }
    Err(ConfigError::CredentialsNotConfigured)
}

fn repository(get: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let candidates = [keys::OCI_PUSH_TEST_REPOSITORY, keys::OCI_TEST_REPOSITORY];
    let Some((key, name)) = first_of(get, &candidates) else {
        return Ok(DEFAULT_REPOSITORY.to_string());
    };
    let name = name.trim().trim_matches('/').to_string();

    match repository_problem(&name) {
        None => Ok(name),
        Some(problem) => Err(ConfigError::Invalid {
            key,
            problem,
            fix: format!(
                "use lower-case letters, digits and single separators (`.`, `_`, `__`, `-`) \
                 between `/`-separated parts, for example `{DEFAULT_REPOSITORY}`"
            ),
        }),
    }
}

/// What makes `name` break the OCI repository name grammar, if anything.
///
/// The grammar: `/`-separated components, each `[a-z0-9]+` runs joined by `.`, `_`, `__` or any
/// number of `-`.
pub fn repository_problem(name: &str) -> Option<String> {
    if name.len() > 255 {
        return Some(format!(
            "is {} characters long, the limit is 255",
            name.len()
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Some(format!("{name:?} contains upper-case letters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(*c)))
    {
        return Some(format!("{name:?} contains the character {bad:?}"));
    }
    name.split('/')
        .find(|component| !component_is_valid(component))
        .map(|component| format!("{name:?} has an invalid path component {component:?}"))
}

fn component_is_valid(component: &str) -> bool {
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let starts_and_ends = component.starts_with(is_alnum) && component.ends_with(is_alnum);

    // Every run of separators between alphanumerics must be `.`, `_`, `__` or only dashes.
    let separators_ok = component
        .split(is_alnum)
        .filter(|run| !run.is_empty())
        .all(|run| matches!(run, "." | "_" | "__") || run.chars().all(|c| c == '-'));
    starts_and_ends && separators_ok
}

fn timeout(get: &impl Fn(&str) -> Option<String>) -> Result<Duration, ConfigError> {
    let Some(text) = get(keys::OCI_TIMEOUT_SECONDS) else {
        return Ok(Duration::from_secs(DEFAULT_TIMEOUT_SECONDS));
    };
    let invalid = |problem: String| ConfigError::Invalid {
        key: keys::OCI_TIMEOUT_SECONDS,
        problem,
        fix: format!(
            "set a whole number of seconds from 1 to {MAX_TIMEOUT_SECONDS}, \
             or remove it for the default of {DEFAULT_TIMEOUT_SECONDS}"
        ),
    };

    match text.trim().parse::<u64>() {
        Ok(seconds) if (1..=MAX_TIMEOUT_SECONDS).contains(&seconds) => {
            Ok(Duration::from_secs(seconds))
        }
        Ok(seconds) => Err(invalid(format!("is {seconds}, outside the accepted range"))),
        Err(_) => Err(invalid(format!(
            "is {text:?}, not a whole number of seconds"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_with(pairs: &[(&str, &str)]) -> Result<ProbeConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(|key| map.get(key).cloned())
    }

    const BASE: [(&str, &str); 3] = [
        ("OCI:RegistryUrl", "registry.example"),
        ("OCI:Username", "robot"),
        ("OCI:Password", "pw"),
    ];

    fn with_base(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs = BASE.to_vec();
        pairs.extend_from_slice(extra);
        pairs
    }

    fn invalid_key(result: Result<ProbeConfig, ConfigError>) -> &'static str {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid value, got {other:?}"),
        }
    }

    #[test]
    fn minimal_configuration_uses_defaults() {
        let config = resolve_with(&BASE).unwrap();

        assert_eq!(config.registry.to_string(), "https://registry.example");
        assert_eq!(config.repository, DEFAULT_REPOSITORY);
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.credentials.method(), "basic");
    }

    #[test]
    fn missing_registry_url_is_reported_as_not_configured() {
        let result = resolve_with(&[("OCI:Username", "robot"), ("OCI:Password", "pw")]);

        assert_eq!(result.unwrap_err(), ConfigError::RegistryNotConfigured);
    }

    #[test]
    fn empty_values_count_as_absent() {
        let result = resolve_with(&[("OCI:RegistryUrl", " "), ("Registry:Url", "")]);

        assert_eq!(result.unwrap_err(), ConfigError::RegistryNotConfigured);
    }

    #[test]
    fn platform_registry_keys_are_the_fallback() {
        let config = resolve_with(&[
            ("Registry:Url", "http://mirror.local:5000"),
            ("Registry:Token", "tok"),
        ])
        .unwrap();

        assert_eq!(config.registry.to_string(), "http://mirror.local:5000");
        assert_eq!(config.credentials.method(), "bearer-static");
    }

    #[test]
    fn oci_section_wins_over_registry_section() {
        let config = resolve_with(&[
            ("OCI:RegistryUrl", "oci.example"),
            ("Registry:Url", "platform.example"),
            ("OCI:Token", "oci-token"),
            ("Registry:Username", "platform"),
            ("Registry:Password", "pw"),
        ])
        .unwrap();

        assert_eq!(config.registry.host(), "oci.example");
        assert_eq!(config.credentials.method(), "bearer-static");
    }

    #[test]
    fn missing_credentials_are_reported_as_not_configured() {
        let result = resolve_with(&[("OCI:RegistryUrl", "registry.example")]);

        assert_eq!(result.unwrap_err(), ConfigError::CredentialsNotConfigured);
    }

    #[test]
    fn username_without_password_is_an_error_naming_both_keys() {
        let result = resolve_with(&[("OCI:RegistryUrl", "r.example"), ("OCI:Username", "u")]);
        let error = result.unwrap_err();

        assert_eq!(
            error,
            ConfigError::IncompleteBasicAuth {
                present: "OCI:Username",
                missing: "OCI:Password"
            }
        );
        assert_eq!(
            error.to_string(),
            "`OCI:Username` is set but `OCI:Password` is not; set both"
        );
    }

    #[test]
    fn repository_falls_back_from_push_test_to_test_repository() {
        let shared = resolve_with(&with_base(&[("OCI:TestRepository", "shared/repo")])).unwrap();
        let specific = resolve_with(&with_base(&[
            ("OCI:TestRepository", "shared/repo"),
            ("OCI:PushTestRepository", "push/repo"),
        ]))
        .unwrap();

        assert_eq!(shared.repository, "shared/repo");
        assert_eq!(specific.repository, "push/repo");
    }

    #[test]
    fn upper_case_repository_is_refused_naming_the_key() {
        let result = resolve_with(&with_base(&[("OCI:PushTestRepository", "Team/App")]));
        let error = result.unwrap_err();

        assert!(error.to_string().contains("upper-case"), "{error}");
        assert_eq!(invalid_key(Err(error)), "OCI:PushTestRepository");
    }

    #[test]
    fn repository_grammar_accepts_and_refuses_the_right_names() {
        for good in ["a", "team/app", "a.b_c__d---e/f0", "library/ubuntu"] {
            assert_eq!(repository_problem(good), None, "{good}");
        }
        for bad in [
            "a..b", "a___b", "-a", "a-", "a//b", "a b", "a_-b", "a:tag", "",
        ] {
            assert!(repository_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unsupported_scheme_is_refused_naming_the_key_in_use() {
        let result = resolve_with(&[("Registry:Url", "ftp://r.example"), ("OCI:Token", "t")]);

        assert_eq!(invalid_key(result), "Registry:Url");
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        let result = resolve_with(&[
            ("OCI:RegistryUrl", "https://u:p@r.example"),
            ("OCI:Token", "t"),
        ]);
        let message = result.unwrap_err().to_string();

        assert!(message.contains("remove the credentials"), "{message}");
        assert!(!message.contains("u:p"), "{message}");
    }

    #[test]
    fn timeout_must_be_a_whole_number_in_range() {
        let custom = resolve_with(&with_base(&[("OCI:TimeoutSeconds", "30")])).unwrap();
        assert_eq!(custom.timeout, Duration::from_secs(30));

        for bad in ["ten", "0", "1.5", "100000"] {
            let result = resolve_with(&with_base(&[("OCI:TimeoutSeconds", bad)]));
            assert_eq!(invalid_key(result), "OCI:TimeoutSeconds", "{bad}");
        }
    }
}
