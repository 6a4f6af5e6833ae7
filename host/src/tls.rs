//! TLS for outbound requests: which certificate authorities the host trusts, and what a failed
//! handshake is called in a result.
//!
//! The trust store is the platform's own (`rustls-native-certs`; an empty or missing one is
//! fine), plus the Mozilla roots (`webpki-roots`), plus the operator's PEM bundle under
//! `Doctor:Tls:CaBundle`. A bundle under `Doctor:Tls:Hosts:<host>:CaBundle` is trusted for that
//! host only, on top of the others, so a private CA cannot vouch for public names.
//!
//! A check only sees `tls-certificate-error` or `tls-protocol-error`; [`describe_failure`] turns
//! the rustls error behind it into a sentence the host records as `tls_error` evidence.

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tracing::debug;
use wasmtime_wasi_http::Error as HttpError;

use crate::config::{ConfigError, Settings};

/// The configuration key of the operator's CA bundle, trusted for every host.
pub const CA_BUNDLE_KEY: &str = "Doctor:Tls:CaBundle";

/// `Doctor:Tls:Hosts:<host>:CaBundle`, lowercased, split around the host.
const HOST_BUNDLE_PREFIX: &str = "doctor:tls:hosts:";
const HOST_BUNDLE_SUFFIX: &str = ":cabundle";

/// The TLS client configurations of a doctor run.
///
/// The operator's bundles are read and checked when the settings are read, so a bad one stops
/// the host at start; the platform's trust store, which takes milliseconds to read, is loaded at
/// the first https handshake, so runs that reach only plain-http registries never pay for it.
#[derive(Clone)]
pub struct TlsSettings {
    trust: Arc<Trust>,
}

/// What a [`TlsSettings`] trusts, and the client configurations built from it on first use.
struct Trust {
    /// Whether the platform's and the Mozilla roots are trusted (not for [`trusting_nothing`]).
    ///
    /// [`trusting_nothing`]: TlsSettings::trusting_nothing
    public_roots: bool,
    /// `Doctor:Tls:CaBundle`'s certificates, trusted for every host.
    everywhere: Vec<CertificateDer<'static>>,
    /// Lowercased host names with the certificates of their own bundle.
    per_host: Vec<(String, Vec<CertificateDer<'static>>)>,
    /// The platform's and the Mozilla roots, once read; every configuration starts from them.
    public: OnceLock<RootCertStore>,
    /// The configuration for hosts without a bundle of their own, once built.
    default: OnceLock<Result<Arc<ClientConfig>, String>>,
    /// The configuration of each `per_host` entry, in the same order, once built.
    host_configs: OnceLock<Vec<Result<Arc<ClientConfig>, String>>>,
}

impl TlsSettings {
    /// Reads and checks the operator's bundles; the platform and Mozilla roots are added when
    /// the first https connection needs them.
    ///
    /// A bundle that cannot be read or holds no usable certificate is an error naming the key
    /// and the file: a typo there would otherwise surface as a confusing "unknown issuer".
    pub fn from_settings(settings: &Settings) -> Result<TlsSettings, ConfigError> {
        let everywhere = match settings.get(CA_BUNDLE_KEY) {
            Some(path) => read_bundle(CA_BUNDLE_KEY, Path::new(path.trim()))?,
            None => Vec::new(),
        };
        let mut per_host = Vec::new();
        for (key, path) in settings.iter() {
            if let Some(host) = host_of_bundle_key(key) {
                per_host.push((host, read_bundle(key, Path::new(path.trim()))?));
            }
        }
        // Building a configuration fails only if the crypto provider cannot do TLS at all;
        // finding that out now keeps it a start-up error rather than a failed handshake.
        client_config(RootCertStore::empty())?;
        Ok(TlsSettings::new(true, everywhere, per_host))
    }

    /// Settings that trust nothing, for sandboxes that may not reach any host (the loader's
    /// `metadata()` call).
    pub fn trusting_nothing() -> Result<TlsSettings, ConfigError> {
        client_config(RootCertStore::empty())?;
        Ok(TlsSettings::new(false, Vec::new(), Vec::new()))
    }

    fn new(
        public_roots: bool,
        everywhere: Vec<CertificateDer<'static>>,
        per_host: Vec<(String, Vec<CertificateDer<'static>>)>,
    ) -> TlsSettings {
        TlsSettings {
            trust: Arc::new(Trust {
                public_roots,
                everywhere,
                per_host,
                public: OnceLock::new(),
                default: OnceLock::new(),
                host_configs: OnceLock::new(),
            }),
        }
    }

    /// The connector for `host` (lowercase): its own bundle's configuration, or the default.
    /// The first call loads the platform's trust store.
    pub fn connector_for(&self, host: &str) -> Result<TlsConnector, String> {
        let trust = &self.trust;
        let config = match trust.per_host.iter().position(|(name, _)| name == host) {
            Some(index) => &trust.host_configs.get_or_init(|| {
                trust
                    .per_host
                    .iter()
                    .map(|(_, certs)| trust.config_with(certs))
                    .collect()
            })[index],
            None => trust.default.get_or_init(|| trust.config_with(&[])),
        };
        config.clone().map(TlsConnector::from)
    }

    /// The hosts with a bundle of their own, lowercased.
    #[cfg(test)]
    fn bundle_hosts(&self) -> Vec<&str> {
        self.trust
            .per_host
            .iter()
            .map(|(host, _)| host.as_str())
            .collect()
    }
}

impl Trust {
    /// A configuration trusting the public roots (when this trust has them), the bundle for
    /// every host, and `extra`.
    fn config_with(&self, extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
        let mut roots = if self.public_roots {
            self.public.get_or_init(base_roots).clone()
        } else {
            RootCertStore::empty()
        };
        for cert in self.everywhere.iter().chain(extra) {
            roots
                .add(cert.clone())
                .map_err(|err| format!("a configured CA certificate was refused ({err})"))?;
        }
        client_config(roots).map_err(|err| err.to_string())
    }
}

/// The host named by a `Doctor:Tls:Hosts:<host>:CaBundle` key, lowercased.
fn host_of_bundle_key(key: &str) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    let host = lower
        .strip_prefix(HOST_BUNDLE_PREFIX)?
        .strip_suffix(HOST_BUNDLE_SUFFIX)?;
    (!host.is_empty()).then(|| host.to_string())
}

/// The platform's trust store plus the Mozilla roots.
///
/// A missing or partly unreadable platform store is not an error: containers often have none,
/// and the Mozilla roots still cover public registries.
fn base_roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(
        added,
        ignored,
        errors = native.errors.len(),
        "loaded the platform's root certificates"
    );
    for error in &native.errors {
        debug!(%error, "part of the platform's root certificates could not be read");
    }
    roots
}

/// The certificates of the PEM file at `path` (configured under `key`), each checked to be
/// usable as a trust anchor.
fn read_bundle(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|err| {
        ConfigError::new(format!(
            "`{key}` names `{shown}`, which cannot be read ({err}); point it at a PEM file of CA certificates"
        ))
    })?;
    let certs = parse_bundle(&bytes)
        .map_err(|problem| ConfigError::new(format!("`{key}` names `{shown}`, which {problem}")))?;

    let mut check = RootCertStore::empty();
    for cert in &certs {
        check.add(cert.clone()).map_err(|err| {
            ConfigError::new(format!(
                "`{key}` names `{shown}`, which holds a certificate that cannot be a trust anchor ({err})"
            ))
        })?;
    }
    debug!(key, file = %shown, "read an operator CA bundle");
    Ok(certs)
}

/// The certificates of a PEM bundle; the error completes "the file …".
fn parse_bundle(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|err| format!("is not valid PEM ({err})"))?;
    if certs.is_empty() {
        return Err("holds no `-----BEGIN CERTIFICATE-----` block".to_string());
    }
    Ok(certs)
}

/// A client configuration on the ring provider (the one the rest of the tree uses), HTTP/1.1.
fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ConfigError::new(format!("cannot set up TLS (host bug): {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A failed TLS handshake: the sentence for the evidence, and the error the check sees.
#[derive(Debug)]
pub struct TlsFailure {
    /// What went wrong, naming the peer, for `tls_error` evidence.
    pub cause: String,
    /// The `wasi:http` error handed to the check.
    pub error: HttpError,
}

/// Names the cause of a failed handshake with `peer` (`host:port`).
pub fn describe_failure(err: &io::Error, peer: &str) -> TlsFailure {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let Some(rustls_error) = rustls_error else {
        return TlsFailure {
            cause: format!("TLS handshake with {peer} failed: {err}"),
            error: HttpError::TlsProtocolError,
        };
    };

    match rustls_error {
        rustls::Error::InvalidCertificate(certificate) => TlsFailure {
            cause: certificate_problem(certificate, peer),
            error: HttpError::TlsCertificateError,
        },
        rustls::Error::AlertReceived(alert) => TlsFailure {
            cause: format!("{peer} ended the TLS handshake with the alert `{alert:?}`"),
            error: HttpError::TlsAlertReceived {
                alert_id: Some(u8::from(*alert)),
                alert_message: Some(format!("{alert:?}")),
            },
        },
        rustls::Error::InvalidMessage(_) => TlsFailure {
            cause: format!(
                "{peer} did not answer in TLS; if it serves plain http, configure an `http://` URL"
            ),
            error: HttpError::TlsProtocolError,
        },
        other => TlsFailure {
            cause: format!("TLS handshake with {peer} failed: {other}"),
            error: HttpError::TlsProtocolError,
        },
    }
}

/// "certificate for registry.local:8443 is not valid for that name", and the like.
fn certificate_problem(error: &CertificateError, peer: &str) -> String {
    let subject = format!("certificate for {peer}");
    match error {
        CertificateError::UnknownIssuer => format!(
            "{subject} is signed by an unknown authority; add its CA certificate to the PEM file named by `{CA_BUNDLE_KEY}`"
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("{subject} has expired")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("{subject} is not valid yet (check this machine's clock)")
        }
        CertificateError::NotValidForName => format!("{subject} is not valid for that name"),
        CertificateError::NotValidForNameContext { presented, .. } => {
            let names: Vec<&str> = presented.iter().map(|name| plain_name(name)).collect();
            let names = if names.is_empty() {
                "no names".to_string()
            } else {
                names.join(", ")
            };
            format!("{subject} is not valid for that name (it is for {names})")
        }
        CertificateError::Revoked => format!("{subject} has been revoked"),
        CertificateError::BadSignature => format!("{subject} has a bad signature"),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!("{subject} is not meant for TLS servers")
        }
        other => format!("{subject} was rejected: {other}"),
    }
}

/// `localhost` from webpki's `DnsName("localhost")`, `10.0.0.1` from `IpAddress(10.0.0.1)`.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::AlertDescription;
    use rustls::pki_types::ServerName;

    fn tls_io_error(error: rustls::Error) -> io::Error {
        // tokio-rustls reports handshake failures this way.
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    fn cause_of(error: rustls::Error) -> String {
        describe_failure(&tls_io_error(error), "registry.local:8443").cause
    }

    #[test]
    fn certificate_problems_are_named() {
        let invalid = rustls::Error::InvalidCertificate;
        assert_eq!(
            cause_of(invalid(CertificateError::NotValidForName)),
            "certificate for registry.local:8443 is not valid for that name"
        );
        assert_eq!(
            cause_of(invalid(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("registry.local").unwrap(),
                presented: vec![
                    "DnsName(\"other.local\")".into(),
                    "IpAddress(10.0.0.1)".into()
                ],
            })),
            "certificate for registry.local:8443 is not valid for that name (it is for other.local, 10.0.0.1)"
        );
        assert_eq!(
            cause_of(invalid(CertificateError::Expired)),
            "certificate for registry.local:8443 has expired"
        );
        assert!(
            cause_of(invalid(CertificateError::UnknownIssuer))
                .contains("unknown authority; add its CA certificate to the PEM file named by `Doctor:Tls:CaBundle`")
        );
        let failure = describe_failure(
            &tls_io_error(invalid(CertificateError::UnknownIssuer)),
            "r:1",
        );
        assert!(matches!(failure.error, HttpError::TlsCertificateError));
    }

    #[test]
    fn protocol_problems_are_named() {
        let alert = describe_failure(
            &tls_io_error(rustls::Error::AlertReceived(
                AlertDescription::HandshakeFailure,
            )),
            "r:443",
        );
        assert_eq!(
            alert.cause,
            "r:443 ended the TLS handshake with the alert `HandshakeFailure`"
        );
        assert!(matches!(
            alert.error,
            HttpError::TlsAlertReceived {
                alert_id: Some(40),
                ..
            }
        ));

        let plain = describe_failure(
            &tls_io_error(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType,
            )),
            "r:443",
        );
        assert!(
            plain.cause.contains("did not answer in TLS"),
            "{}",
            plain.cause
        );
        assert!(matches!(plain.error, HttpError::TlsProtocolError));

        let reset = describe_failure(
            &io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer"),
            "r:443",
        );
        assert_eq!(
            reset.cause,
            "TLS handshake with r:443 failed: connection reset by peer"
        );
    }

    #[test]
    fn bundle_problems_name_the_key_and_file() {
        let dir = std::env::temp_dir().join(format!("stella-doctor-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n%%%\n").unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();

        for (path, expected) in [
            (dir.join("missing.pem"), "which cannot be read"),
            (garbage, "which is not valid PEM"),
            (empty, "which holds no `-----BEGIN CERTIFICATE-----` block"),
        ] {
            let mut settings = Settings::default();
            settings.set("doctor:tls:cabundle", path.display().to_string());
            let Err(err) = TlsSettings::from_settings(&settings) else {
                panic!("{} was accepted", path.display());
            };
            let err = err.to_string();
            assert!(err.starts_with("`Doctor:Tls:CaBundle` names `"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(expected), "{err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_platform_store_is_loaded_at_the_first_handshake_only() {
        let tls = TlsSettings::from_settings(&Settings::default()).unwrap();
        assert!(tls.trust.default.get().is_none());

        let clone = tls.clone();
        clone.connector_for("registry.example").unwrap();

        // Built once, and shared by every clone (each run holds one).
        assert!(tls.trust.default.get().is_some_and(Result::is_ok));
    }

    #[test]
    fn a_host_bundle_key_names_its_host() {
        assert_eq!(
            host_of_bundle_key("Doctor:Tls:Hosts:Registry.Local:CaBundle").as_deref(),
            Some("registry.local")
        );
        assert_eq!(host_of_bundle_key("Doctor:Tls:CaBundle"), None);
        assert_eq!(host_of_bundle_key("Doctor:Tls:Hosts::CaBundle"), None);
    }

    #[test]
    fn a_valid_bundle_is_trusted_for_its_host_only() {
        let dir = std::env::temp_dir().join(format!("stella-doctor-tls-ok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bundle = dir.join("ca.pem");
        let ca = rcgen::generate_simple_self_signed(vec!["harbor.internal".to_string()]).unwrap();
        std::fs::write(&bundle, ca.cert.pem()).unwrap();
        let mut settings = Settings::default();
        settings.set(
            "Doctor:Tls:Hosts:harbor.internal:CaBundle",
            bundle.display().to_string(),
        );

        let tls = TlsSettings::from_settings(&settings).unwrap();

        assert_eq!(tls.bundle_hosts(), ["harbor.internal"]);
        assert!(tls.connector_for("harbor.internal").is_ok());
        assert!(tls.connector_for("other.example").is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
