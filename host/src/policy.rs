//! The outbound allowlist: which HTTP origins one check may reach.
//!
//! A check may reach what its metadata declares in `outbound-hosts` (a literal origin, or a
//! `{Section:Key}` template standing for the origin of the URL configured under that key) plus
//! what the operator adds under `Doctor:Plugins:<checkId>:AllowedHosts`. Scheme, host and port
//! must all match: allowing `https://registry.local` does not allow `http://registry.local`.
//!
//! An allowed origin is not yet an allowed connection: its host is resolved once, and each
//! address is screened ([`Allowlist::check_address`]) before the host connects to it. Loopback,
//! private, link-local and unspecified addresses are reachable only through origins the
//! operator named in configuration, cloud metadata addresses only when the operator wrote the
//! address itself. A check cannot reach `127.0.0.1` or `10.0.0.1` through a public-looking name
//! it declared, while an internal registry the operator configured works.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// One origin on a check's allowlist, and whether the operator named it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    origin: Origin,
    /// True when the origin came from the operator's configuration (a URL a `{Section:Key}`
    /// template expanded from, or an AllowedHosts entry) rather than from the check's metadata.
    operator_named: bool,
}

/// The origins one check may reach during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Allowed>,
}

impl Allowlist {
    /// Builds the allowlist for a check from its metadata and the operator's configuration.
    ///
    /// Entries that do not parse are skipped with a warning rather than failing the run: a
    /// check that then needs them is denied, and the denial tells the operator what to add.
    pub fn for_check(metadata: &CheckMetadata, settings: &Settings) -> Allowlist {
        let mut list = Allowlist::default();
        let check = metadata.id.as_str();

        for entry in &metadata.outbound_hosts {
            let entry = entry.trim();
            if let Some(key) = entry.strip_prefix('{').and_then(|e| e.strip_suffix('}')) {
                let Some(url) = settings.get(key).filter(|url| !url.trim().is_empty()) else {
                    debug!(check, key, "outbound template key is not set; dropping it");
                    continue;
                };
                match Origin::parse(url) {
                    Ok(origin) => list.add(origin, true),
                    // The value itself is not logged: a URL may carry credentials.
                    Err(problem) => {
                        warn!(check, key, %problem, "configured URL for an outbound template is not a usable origin")
                    }
                }
            } else {
                match Origin::parse(entry) {
                    Ok(origin) => list.add(origin, false),
                    Err(problem) => {
                        warn!(check, entry, %problem, "check declares an outbound host that does not parse")
                    }
                }
            }
        }

        let key = allowed_hosts_key(check);
        if let Some(entries) = settings.get(&key) {
            for entry in entries.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                match Origin::parse(entry) {
                    Ok(origin) => list.add(origin, true),
                    Err(problem) => {
                        warn!(check, key = %key, entry, %problem, "ignoring an AllowedHosts entry that does not parse")
                    }
                }
            }
        }
        list
    }

    /// Adds an origin; naming it once as operator is enough to count as operator-named.
    fn add(&mut self, origin: Origin, operator_named: bool) {
        match self.entries.iter_mut().find(|e| e.origin == origin) {
            Some(existing) => existing.operator_named |= operator_named,
            None => self.entries.push(Allowed {
                origin,
                operator_named,
            }),
        }
    }

    /// True when scheme, host and port all match an allowed origin.
    pub fn allows(&self, origin: &Origin) -> bool {
        self.entries.iter().any(|e| &e.origin == origin)
    }

    /// True when the operator's configuration names this origin (scheme, host and port).
    ///
    /// The whole origin is compared, not just the host: an operator who configured a registry
    /// at `http://127.0.0.1:5000` has not opened the rest of loopback to a check that declares
    /// `http://127.0.0.1:6379` in its own metadata.
    pub fn operator_named(&self, origin: &Origin) -> bool {
        self.entries
            .iter()
            .any(|e| &e.origin == origin && e.operator_named)
    }

    /// Whether a request to the allowed `origin` may connect to `address`, one of the addresses
    /// its host resolved to; the error is the kind of address that was refused.
    ///
    /// Public addresses are always fine. Cloud metadata addresses only when the operator wrote
    /// that exact address as the host; loopback, private, link-local and unspecified addresses
    /// only when the operator named the origin.
    pub fn check_address(&self, origin: &Origin, address: IpAddr) -> Result<(), AddressClass> {
        let class = AddressClass::of(address);
        let permitted = match class {
            AddressClass::Public => true,
            AddressClass::CloudMetadata => {
                self.operator_named(origin) && origin.host.parse::<IpAddr>() == Ok(address)
            }
            _ => self.operator_named(origin),
        };
        if permitted { Ok(()) } else { Err(class) }
    }

    /// The allowed origins, for display.
    pub fn origins(&self) -> Vec<&Origin> {
        self.entries.iter().map(|e| &e.origin).collect()
    }
}

/// The cloud instance metadata services' addresses: AWS, GCP, Azure and others share the IPv4
/// one, AWS also answers on the IPv6 one, Alibaba Cloud uses its own.
const CLOUD_METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// What kind of address a host resolved to, as far as the outbound policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Anything not listed below: reachable whenever the origin is allowed.
    Public,
    /// A cloud instance metadata service, which hands out credentials.
    CloudMetadata,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), shared address space (`100.64/10`) and
    /// unique local IPv6 (`fc00::/7`).
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// `0.0.0.0/8`, `::`: "this host" to most stacks, so another way of saying loopback.
    Unspecified,
}

impl AddressClass {
    /// Classifies an address; IPv4 inside IPv6 (mapped `::ffff:a.b.c.d` or NAT64
    /// `64:ff9b::a.b.c.d`) is classified as the IPv4 address it carries.
    pub fn of(address: IpAddr) -> AddressClass {
        if CLOUD_METADATA.contains(&address) {
            return AddressClass::CloudMetadata;
        }
        match address {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => match embedded_v4(v6) {
                Some(v4) => Self::of(IpAddr::V4(v4)),
                None => Self::of_v6(v6),
            },
        }
    }

    fn of_v4(v4: Ipv4Addr) -> AddressClass {
        let [a, b, ..] = v4.octets();
        if v4.is_loopback() {
            AddressClass::Loopback
        } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
            AddressClass::Private
        } else if v4.is_link_local() {
            AddressClass::LinkLocal
        } else if a == 0 {
            AddressClass::Unspecified
        } else {
            AddressClass::Public
        }
    }

    fn of_v6(v6: Ipv6Addr) -> AddressClass {
        let first = v6.segments()[0];
        if v6.is_loopback() {
            AddressClass::Loopback
        } else if v6.is_unspecified() {
            AddressClass::Unspecified
        } else if first & 0xfe00 == 0xfc00 {
            AddressClass::Private
        } else if first & 0xffc0 == 0xfe80 {
            AddressClass::LinkLocal
        } else {
            AddressClass::Public
        }
    }

    /// "a loopback address", "a cloud metadata address", …
    pub fn described(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::CloudMetadata => "a cloud metadata address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Unspecified => "an unspecified address",
        }
    }
}

/// The IPv4 address carried by an IPv4-mapped or NAT64 (`64:ff9b::/96`) IPv6 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let [_, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d] = v6.octets();
        Ipv4Addr::new(a, b, c, d)
    })
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

        assert_eq!(list.origins(), vec![&origin("https://registry.local:443")]);
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_addresses_are_classified() {
        for (address, class) in [
            ("8.8.8.8", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.32.0.1", AddressClass::Public),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("100.128.0.1", AddressClass::Public),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("169.254.169.254", AddressClass::CloudMetadata),
            ("100.100.100.200", AddressClass::CloudMetadata),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
        ] {
            assert_eq!(AddressClass::of(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn ipv6_addresses_are_classified() {
        for (address, class) in [
            ("2606:4700::1111", AddressClass::Public),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Unspecified),
            ("fd12:3456::1", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("febf::1", AddressClass::LinkLocal),
            ("fec0::1", AddressClass::Public),
            ("fd00:ec2::254", AddressClass::CloudMetadata),
        ] {
            assert_eq!(AddressClass::of(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_classified_as_the_ipv4_address() {
        for (address, class) in [
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::ffff:169.254.169.254", AddressClass::CloudMetadata),
            ("::ffff:169.254.0.1", AddressClass::LinkLocal),
            ("::ffff:0.0.0.0", AddressClass::Unspecified),
            ("::ffff:8.8.8.8", AddressClass::Public),
            ("64:ff9b::169.254.169.254", AddressClass::CloudMetadata),
            ("64:ff9b::192.168.0.1", AddressClass::Private),
            ("64:ff9b::8.8.8.8", AddressClass::Public),
        ] {
            assert_eq!(AddressClass::of(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn only_operator_named_origins_reach_internal_addresses() {
        let mut settings = Settings::default();
        settings.set("OCI:RegistryUrl", "http://harbor.internal:8080");
        settings.set(
            "Doctor:Plugins:check.test.push:AllowedHosts",
            "http://localhost:5000",
        );
        let list = Allowlist::for_check(
            &metadata(&[
                "{OCI:RegistryUrl}",
                "https://public.example",
                "http://localhost:6379",
            ]),
            &settings,
        );

        let harbor = origin("http://harbor.internal:8080");
        assert_eq!(list.check_address(&harbor, ip("10.0.0.5")), Ok(()));
        assert_eq!(list.check_address(&harbor, ip("8.8.8.8")), Ok(()));

        let public = origin("https://public.example");
        assert_eq!(list.check_address(&public, ip("8.8.8.8")), Ok(()));
        assert_eq!(
            list.check_address(&public, ip("127.0.0.1")),
            Err(AddressClass::Loopback),
            "a declared name cannot lead to loopback"
        );
        assert_eq!(
            list.check_address(&public, ip("::ffff:192.168.0.1")),
            Err(AddressClass::Private)
        );

        let named = origin("http://localhost:5000");
        assert_eq!(list.check_address(&named, ip("127.0.0.1")), Ok(()));
        assert_eq!(list.check_address(&named, ip("::1")), Ok(()));
        assert_eq!(
            list.check_address(&origin("http://localhost:6379"), ip("127.0.0.1")),
            Err(AddressClass::Loopback),
            "naming one loopback origin does not open the others"
        );
    }

    #[test]
    fn metadata_is_reached_only_through_the_operator_written_address() {
        let mut settings = Settings::default();
        settings.set(
            "Doctor:Plugins:check.test.push:AllowedHosts",
            "http://169.254.169.254, http://metadata.example, http://2852039166",
        );
        let list = Allowlist::for_check(&metadata(&["http://[fd00:ec2::254]"]), &settings);
        let metadata_ip = ip("169.254.169.254");

        assert_eq!(
            list.check_address(&origin("http://169.254.169.254"), metadata_ip),
            Ok(())
        );
        for host in ["http://metadata.example", "http://2852039166"] {
            assert_eq!(
                list.check_address(&origin(host), metadata_ip),
                Err(AddressClass::CloudMetadata),
                "{host}"
            );
        }
        assert_eq!(
            list.check_address(&origin("http://[fd00:ec2::254]"), ip("fd00:ec2::254")),
            Err(AddressClass::CloudMetadata),
            "a literal in the check's metadata is not operator-named"
        );
    }

    #[test]
    fn an_origin_named_by_check_and_operator_counts_as_operator_named() {
        let mut settings = Settings::default();
        settings.set(
            "Doctor:Plugins:check.test.push:AllowedHosts",
            "http://localhost:5000",
        );
        let declared_only =
            Allowlist::for_check(&metadata(&["http://localhost:5000"]), &Settings::default());
        let both = Allowlist::for_check(&metadata(&["http://localhost:5000"]), &settings);
        let local = origin("http://localhost:5000");

        assert!(declared_only.allows(&local) && !declared_only.operator_named(&local));
        assert!(both.operator_named(&local));
        assert_eq!(both.origins().len(), 1);
    }

    #[test]
    fn uri_origin_uses_scheme_default_port() {
        let uri: http::Uri = "https://Registry.Local/v2/".parse().unwrap();
        assert_eq!(Origin::of_uri(&uri), Some(origin("https://registry.local")));
        let uri: http::Uri = "/v2/".parse().unwrap();
        assert_eq!(Origin::of_uri(&uri), None);
    }
}
