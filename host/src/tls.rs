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
use std::sync::Arc;

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

/// The TLS client configurations of a doctor run, built once before any check runs.
#[derive(Clone)]
pub struct TlsSettings {
    default: Arc<ClientConfig>,
    /// Lowercased host names with their own extra bundle.
    per_host: Vec<(String, Arc<ClientConfig>)>,
}

impl TlsSettings {
    /// Loads the platform and Mozilla roots and the operator's bundles.
    ///
    /// A bundle that cannot be read or holds no usable certificate is an error naming the key
    /// and the file: a typo there would otherwise surface as a confusing "unknown issuer".
    pub fn from_settings(settings: &Settings) -> Result<TlsSettings, ConfigError> {
        let mut roots = base_roots();
        if let Some(path) = settings.get(CA_BUNDLE_KEY) {
            add_bundle(&mut roots, CA_BUNDLE_KEY, Path::new(path.trim()))?;
        }

        let mut per_host = Vec::new();
        for (key, path) in settings.iter() {
            let Some(host) = host_of_bundle_key(key) else {
                continue;
            };
            let mut host_roots = roots.clone();
            add_bundle(&mut host_roots, key, Path::new(path.trim()))?;
            per_host.push((host, client_config(host_roots)?));
        }

        Ok(TlsSettings {
            default: client_config(roots)?,
            per_host,
        })
    }

    /// Settings that trust nothing, for sandboxes that may not reach any host (the loader's
    /// `metadata()` call), where loading the platform store would be wasted work.
    pub fn trusting_nothing() -> Result<TlsSettings, ConfigError> {
        Ok(TlsSettings {
            default: client_config(RootCertStore::empty())?,
            per_host: Vec::new(),
        })
    }

    /// The connector for `host` (lowercase): its own bundle's configuration, or the default.
    pub fn connector_for(&self, host: &str) -> TlsConnector {
        let config = self
            .per_host
            .iter()
            .find(|(name, _)| name == host)
            .map_or(&self.default, |(_, config)| config);
        TlsConnector::from(config.clone())
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

/// Adds every certificate of the PEM file at `path` (configured under `key`) to `roots`.
fn add_bundle(roots: &mut RootCertStore, key: &str, path: &Path) -> Result<(), ConfigError> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|err| {
        ConfigError::new(format!(
            "`{key}` names `{shown}`, which cannot be read ({err}); point it at a PEM file of CA certificates"
        ))
    })?;
    let certs = parse_bundle(&bytes)
        .map_err(|problem| ConfigError::new(format!("`{key}` names `{shown}`, which {problem}")))?;

    for cert in certs {
        roots.add(cert).map_err(|err| {
            ConfigError::new(format!(
                "`{key}` names `{shown}`, which holds a certificate that cannot be a trust anchor ({err})"
            ))
        })?;
    }
    debug!(key, file = %shown, "added an operator CA bundle");
    Ok(())
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

        assert_eq!(tls.per_host.len(), 1);
        assert_eq!(tls.per_host[0].0, "harbor.internal");
        std::fs::remove_dir_all(&dir).ok();
    }
}
