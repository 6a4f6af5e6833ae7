//! Which components the host agrees to run: an optional trust policy of pinned digests and
//! ed25519 publisher keys, and the `keygen` / `sign` helpers that produce the signatures.
//!
//! With no policy configured every valid component loads, as before. With one, a component loads
//! when its SHA-256 is pinned (`Doctor:Trust:Digests`) **or** a detached signature beside it,
//! `<name>.wasm.sig`, verifies under one of the trusted keys (`Doctor:Trust:PublicKeys`). The
//! signature covers the component file's exact bytes, so any change to the file needs a new one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::config::{ConfigError, Settings};

/// Comma-separated SHA-256 digests (hex) of components trusted as they are.
pub const DIGESTS_KEY: &str = "Doctor:Trust:Digests";

/// Comma-separated ed25519 public keys (32 raw bytes, base64 or hex) whose signatures are trusted.
pub const PUBLIC_KEYS_KEY: &str = "Doctor:Trust:PublicKeys";

/// The suffix of a detached signature: `check.wasm` is signed by `check.wasm.sig`.
pub const SIGNATURE_SUFFIX: &str = ".sig";

/// Pinned digests and trusted keys; a component must match one of them.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    digests: BTreeSet<String>,
    keys: Vec<VerifyingKey>,
}

impl TrustPolicy {
    /// The policy configured in `settings`, or `None` when neither key is set.
    pub fn from_settings(settings: &Settings) -> Result<Option<TrustPolicy>, ConfigError> {
        let digests = list(settings.get(DIGESTS_KEY))
            .map(|digest| {
                let digest = digest.to_ascii_lowercase();
                let digest = digest.strip_prefix("sha256:").unwrap_or(&digest).to_string();
                if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(digest)
                } else {
                    Err(ConfigError::new(format!(
                        "`{DIGESTS_KEY}` holds {digest:?}, which is not a SHA-256 in hex; use the `digest` that `stella-doctor list --format json` shows"
                    )))
                }
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let keys = list(settings.get(PUBLIC_KEYS_KEY))
            .map(|text| {
                let bytes = decode_key_bytes(text).map_err(|problem| {
                    ConfigError::new(format!("`{PUBLIC_KEYS_KEY}` holds {text:?}: {problem}"))
                })?;
                VerifyingKey::from_bytes(&bytes).map_err(|_| {
                    ConfigError::new(format!(
                        "`{PUBLIC_KEYS_KEY}` holds {text:?}, which is not a valid ed25519 public key"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        if digests.is_empty() && keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(TrustPolicy { digests, keys }))
    }

    /// Accepts `bytes`, read from `path`, when its digest is pinned or its signature verifies.
    ///
    /// The error says why the component is refused and how to make it trusted.
    pub fn verify(&self, path: &Path, bytes: &[u8], digest: &str) -> Result<(), String> {
        if self.digests.contains(digest) {
            return Ok(());
        }
        let pinned_hint = if self.digests.is_empty() {
            String::new()
        } else {
            format!(" and its digest {digest} is not in `{DIGESTS_KEY}`")
        };
        if self.keys.is_empty() {
            return Err(format!(
                "is not trusted: its digest {digest} is not in `{DIGESTS_KEY}`; pin it there if this build is the one you mean to run"
            ));
        }

        let sig_path = signature_path(path);
        let text = match std::fs::read_to_string(&sig_path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "is not trusted: it is not signed (no `{}` beside it){pinned_hint}; sign it with `stella-doctor sign --key KEYFILE {}`",
                    file_name(&sig_path),
                    file_name(path)
                ));
            }
            Err(err) => {
                return Err(format!(
                    "is not trusted: its signature `{}` cannot be read: {err}",
                    file_name(&sig_path)
                ));
            }
        };
        let Ok(signature) = decode_signature(&text) else {
            return Err(format!(
                "is not trusted: `{}` is not an ed25519 signature (64 bytes, base64 or hex)",
                file_name(&sig_path)
            ));
        };
        if self
            .keys
            .iter()
            .any(|key| key.verify_strict(bytes, &signature).is_ok())
        {
            return Ok(());
        }
        Err(format!(
            "is not trusted: `{}` does not verify under any key in `{PUBLIC_KEYS_KEY}`{pinned_hint}; the file changed after it was signed, or it was signed with another key",
            file_name(&sig_path)
        ))
    }
}

/// The detached signature of a component: `<path>.sig`.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_os_string();
    name.push(SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

/// Writes a new key pair: the private key (base64 seed, mode 0600) to `out` and the public key
/// to `out.pub`; returns the public key in base64.
pub fn keygen(out: &Path) -> anyhow::Result<String> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|err| anyhow::anyhow!("the system random source failed: {err}"))?;
    let key = SigningKey::from_bytes(&seed);
    let public = STANDARD.encode(key.verifying_key().as_bytes());

    write_private(out, &format!("{}\n", STANDARD.encode(seed)))
        .with_context(|| format!("cannot write the private key to `{}`", out.display()))?;
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    std::fs::write(&public_path, format!("{public}\n"))
        .with_context(|| format!("cannot write the public key to `{}`", public_path.display()))?;
    Ok(public)
}

/// Signs `file` with the private key in `key_file` and writes `<file>.sig`; returns its path.
pub fn sign(key_file: &Path, file: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("cannot read the private key `{}`", key_file.display()))?;
    let seed = decode_key_bytes(text.trim()).map_err(|problem| {
        anyhow::anyhow!(
            "`{}` is not a private key made by `stella-doctor keygen`: {problem}",
            key_file.display()
        )
    })?;
    let key = SigningKey::from_bytes(&seed);
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let signature = key.sign(&bytes);

    let sig_path = signature_path(file);
    // Renamed into place so a watching host never reads half a signature.
    let temp = PathBuf::from(format!("{}.tmp", sig_path.display()));
    std::fs::write(
        &temp,
        format!("{}\n", STANDARD.encode(signature.to_bytes())),
    )
    .and_then(|()| std::fs::rename(&temp, &sig_path))
    .with_context(|| format!("cannot write `{}`", sig_path.display()))?;
    Ok(sig_path)
}

/// The comma-separated, trimmed, non-empty items of a setting.
fn list(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// 32 raw key bytes from 64 hex digits or base64.
fn decode_key_bytes(text: &str) -> Result<[u8; 32], String> {
    let bytes = decode_bytes(text).ok_or("neither hex nor base64")?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| format!("{} bytes, an ed25519 key has 32", bytes.len()))
}

fn decode_signature(text: &str) -> Result<Signature, ()> {
    let bytes: [u8; 64] = decode_bytes(text.trim())
        .ok_or(())?
        .try_into()
        .map_err(|_| ())?;
    Ok(Signature::from_bytes(&bytes))
}

fn decode_bytes(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let is_hex = text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && (text.len() == 64 || text.len() == 128) {
        return (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
    }
    STANDARD.decode(text).ok()
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::sha256_hex;

    fn policy_with(key: &str, value: &str) -> Option<TrustPolicy> {
        let mut settings = Settings::default();
        settings.set(key, value);
        TrustPolicy::from_settings(&settings).unwrap()
    }

    #[test]
    fn no_policy_unless_configured() {
        assert!(
            TrustPolicy::from_settings(&Settings::default())
                .unwrap()
                .is_none()
        );
        assert!(policy_with(DIGESTS_KEY, " , ").is_none());
    }

    #[test]
    fn bad_digests_and_keys_are_configuration_errors() {
        let mut settings = Settings::default();
        settings.set(DIGESTS_KEY, "abc");
        assert!(TrustPolicy::from_settings(&settings).is_err());
        let mut settings = Settings::default();
        settings.set(PUBLIC_KEYS_KEY, "AAAA");
        let err = TrustPolicy::from_settings(&settings).unwrap_err();
        assert!(err.to_string().contains("32"), "{err}");
    }

    #[test]
    fn signed_files_verify_and_changed_or_unsigned_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        let public = keygen(&key_file).unwrap();
        let component = dir.path().join("c.wasm");
        std::fs::write(&component, b"component bytes").unwrap();
        let policy = policy_with(PUBLIC_KEYS_KEY, &public).unwrap();

        let unsigned = policy
            .verify(&component, b"component bytes", "00")
            .unwrap_err();
        assert!(unsigned.contains("not signed"), "{unsigned}");

        sign(&key_file, &component).unwrap();
        assert_eq!(policy.verify(&component, b"component bytes", "00"), Ok(()));
        let changed = policy
            .verify(&component, b"component bytes!", "00")
            .unwrap_err();
        assert!(changed.contains("does not verify"), "{changed}");
    }

    #[test]
    fn a_pinned_digest_is_trusted_without_a_signature() {
        let digest = sha256_hex(b"x");
        let policy =
            policy_with(DIGESTS_KEY, &format!("sha256:{}", digest.to_uppercase())).unwrap();
        assert_eq!(policy.verify(Path::new("x.wasm"), b"x", &digest), Ok(()));
        let refused = policy
            .verify(Path::new("y.wasm"), b"y", &sha256_hex(b"y"))
            .unwrap_err();
        assert!(refused.contains(DIGESTS_KEY), "{refused}");
    }
}
