//! The outbound allowlist: which HTTP origins one check may reach.
//!
//! A check may reach what its metadata declares in `outbound-hosts` (a literal origin, or a
//! `{Section:Key}` template standing for the origin of the URL configured under that key) plus
//! what the operator adds under `Doctor:Plugins:<checkId>:AllowedHosts`. Scheme, host and port
//! must all match: allowing `https://registry.local` does not allow `http://registry.local`.

use std::fmt;

use tracing::{debug, warn};

use crate::config::Settings;
use crate::model::CheckMetadata;

/// Where an HTTP request goes: scheme, host and port, all normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// The host name or IP literal, lowercase (IPv6 without brackets).
    pub host: String,
    /// The explicit port, or the scheme's default.
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port][/path…]`, `host:port` or `host`; no scheme means https.
    ///
    /// Any user information, path, query or fragment is ignored, so a configured URL such as
    /// `https://registry.local:5000/v2/` yields its origin.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let text = text.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_string(), text),
        };
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            other => return Err(format!("unsupported scheme `{other}` (use http or https)")),
        };

        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            return Err(format!("`{text}` names no host"));
        }

        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(default_port),
        })
    }

    /// The origin a request URI is addressed to, if it names a scheme and host.
    pub fn of_uri(uri: &http::Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?;
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        Some(Origin {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
        })
    }

    fn default_port(&self) -> u16 {
        if self.scheme == "http" { 80 } else { 443 }
    }
}

impl fmt::Display for Origin {
    /// `scheme://host[:port]`, the port shown only when it is not the scheme's default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{host}", self.scheme)?;
        if self.port != self.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// Splits `host[:port]`, understanding bracketed IPv6 literals.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let parse_port = |port: &str| {
        port.parse::<u16>()
            .map_err(|_| format!("invalid port `{port}` in `{authority}`"))
    };

    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("unclosed `[` in `{authority}`"));
        };
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(parse_port(port)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("unexpected `{after}` after `]` in `{authority}`")),
        };
    }

    match authority.split_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((authority, None)),
    }
}

/// The configuration key where an operator adds origins for one check.
pub fn allowed_hosts_key(check_id: &str) -> String {
    format!("Doctor:Plugins:{check_id}:AllowedHosts")
}

/// The origins one check may reach during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    origins: Vec<Origin>,
}

impl Allowlist {
    /// Builds the allowlist for a check from its metadata and the operator's configuration.
    ///
    /// Entries that do not parse are skipped with a warning rather than failing the run: a
    /// check that then needs them is denied, and the denial tells the operator what to add.
    pub fn for_check(metadata: &CheckMetadata, settings: &Settings) -> Allowlist {
        let mut origins = Vec::new();
        let check = metadata.id.as_str();

        for entry in &metadata.outbound_hosts {
            let entry = entry.trim();
            if let Some(key) = entry.strip_prefix('{').and_then(|e| e.strip_suffix('}')) {
                let Some(url) = settings.get(key).filter(|url| !url.trim().is_empty()) else {
                    debug!(check, key, "outbound template key is not set; dropping it");
                    continue;
                };
                match Origin::parse(url) {
                    Ok(origin) => origins.push(origin),
                    // The value itself is not logged: a URL may carry credentials.
                    Err(problem) => {
                        warn!(check, key, %problem, "configured URL for an outbound template is not a usable origin")
                    }
                }
            } else {
                match Origin::parse(entry) {
                    Ok(origin) => origins.push(origin),
                    Err(problem) => {
                        warn!(check, entry, %problem, "check declares an outbound host that does not parse")
                    }
                }
            }
        }

        let key = allowed_hosts_key(check);
        if let Some(list) = settings.get(&key) {
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                match Origin::parse(entry) {
                    Ok(origin) => origins.push(origin),
                    Err(problem) => {
                        warn!(check, key = %key, entry, %problem, "ignoring an AllowedHosts entry that does not parse")
                    }
                }
            }
        }

        origins.dedup();
        Allowlist { origins }
    }

    /// True when scheme, host and port all match an allowed origin.
    pub fn allows(&self, origin: &Origin) -> bool {
        self.origins.contains(origin)
    }

    /// The allowed origins, for display.
    pub fn origins(&self) -> &[Origin] {
        &self.origins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    fn metadata(outbound: &[&str]) -> CheckMetadata {
        CheckMetadata {
            id: "check.test.push".into(),
            name: "test".into(),
            description: String::new(),
            plugin_id: "test".into(),
            default_severity: Severity::Fail,
            tags: vec![],
            estimated_duration_ms: 0,
            config_keys: vec![],
            outbound_hosts: outbound.iter().map(|s| s.to_string()).collect(),
            related_checks: vec![],
        }
    }

    fn origin(text: &str) -> Origin {
        Origin::parse(text).unwrap()
    }

    #[test]
    fn origin_parsing_defaults_scheme_and_port() {
        assert_eq!(
            origin("registry.local"),
            Origin {
                scheme: "https".into(),
                host: "registry.local".into(),
                port: 443
            }
        );
        assert_eq!(origin("http://Registry.Local").port, 80);
        assert_eq!(origin("registry.local:5000").port, 5000);
        assert_eq!(origin("registry.local:5000").scheme, "https");
        assert_eq!(
            origin("http://user:pw@127.0.0.1:5000/v2/?x#y"),
            origin("http://127.0.0.1:5000")
        );
        assert_eq!(origin("http://[::1]:5000").host, "::1");
        assert!(Origin::parse("ftp://x").is_err());
        assert!(Origin::parse("https://x:notaport").is_err());
        assert!(Origin::parse("https://").is_err());
    }

    #[test]
    fn origin_display_omits_default_port() {
        assert_eq!(
            origin("HTTPS://Evil.Example:443/x").to_string(),
            "https://evil.example"
        );
        assert_eq!(
            origin("http://127.0.0.1:5000").to_string(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(origin("http://[::1]:81").to_string(), "http://[::1]:81");
    }

    #[test]
    fn template_stands_for_the_origin_of_the_configured_url() {
        let mut settings = Settings::default();
        settings.set("OCI:RegistryUrl", "http://127.0.0.1:5000/");
        let list = Allowlist::for_check(&metadata(&["{OCI:RegistryUrl}"]), &settings);

        assert!(list.allows(&origin("http://127.0.0.1:5000")));
        assert!(
            !list.allows(&origin("https://127.0.0.1:5000")),
            "scheme must match"
        );
        assert!(
            !list.allows(&origin("http://127.0.0.1:5001")),
            "port must match"
        );
    }

    #[test]
    fn template_without_scheme_means_https_and_unset_template_is_dropped() {
        let mut settings = Settings::default();
        settings.set("OCI:RegistryUrl", "registry.local");
        let list = Allowlist::for_check(
            &metadata(&["{OCI:RegistryUrl}", "{OCI:TokenUrl}"]),
            &settings,
        );

        assert_eq!(list.origins(), &[origin("https://registry.local:443")]);
    }

    #[test]
    fn literal_entries_match_case_insensitively() {
        let list =
            Allowlist::for_check(&metadata(&["https://Auth.Docker.IO"]), &Settings::default());
        assert!(list.allows(&origin("https://auth.docker.io")));
        assert!(!list.allows(&origin("http://auth.docker.io")));
    }

    #[test]
    fn operator_allowed_hosts_are_parsed_per_entry() {
        let mut settings = Settings::default();
        settings.set(
            "doctor:plugins:CHECK.TEST.PUSH:allowedhosts",
            " auth.example , mirror.example:8443,http://plain.example ,, bad:port ",
        );
        let list = Allowlist::for_check(&metadata(&[]), &settings);

        assert!(list.allows(&origin("https://auth.example")));
        assert!(list.allows(&origin("https://mirror.example:8443")));
        assert!(!list.allows(&origin("https://mirror.example")));
        assert!(list.allows(&origin("http://plain.example:80")));
        assert_eq!(list.origins().len(), 3);
    }

    #[test]
    fn uri_origin_uses_scheme_default_port() {
        let uri: http::Uri = "https://Registry.Local/v2/".parse().unwrap();
        assert_eq!(Origin::of_uri(&uri), Some(origin("https://registry.local")));
        let uri: http::Uri = "/v2/".parse().unwrap();
        assert_eq!(Origin::of_uri(&uri), None);
    }
}
