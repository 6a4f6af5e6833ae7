//! Compiled components cached on disk, so a restart or a swap back to a known version does not
//! run Cranelift again.
//!
//! An entry lives at `<dir>/<engine>/<component>.cwasm`, where `<engine>` is a SHA-256 of the
//! engine's [`Engine::precompile_compatibility_hash`] (wasmtime version, compiler settings, CPU
//! features) and `<component>` the SHA-256 of the component file. The entry starts with a header
//! naming both and the SHA-256 of the serialized code that follows; an entry is deserialized
//! only when all three match what this host expects, so a truncated, corrupted or edited file is
//! discarded and the component compiled again.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::loader::sha256_hex;

/// The configuration key naming the cache folder; `off` turns the cache off.
pub const CACHE_DIR_KEY: &str = "Doctor:Cache:Dir";

/// The first line of every entry: the format, so a later layout is never misread.
const MAGIC: &[u8] = b"stella-doctor compiled component v1\n";

/// Length of the header: magic, then three lowercase hex SHA-256 values each ending in `\n`.
const HEADER_LEN: usize = MAGIC.len() + 3 * 65;

/// A folder of compiled components for one engine configuration.
#[derive(Debug)]
pub struct CompileCache {
    /// `<root>/<engine hash>`.
    dir: PathBuf,
    /// The engine hash, repeated in every entry's header.
    engine_hash: String,
}

impl CompileCache {
    /// Opens (creating it if needed) the cache under `root` for this engine.
    ///
    /// Refuses a folder that other users may write to: whoever can write an entry can make the
    /// host run arbitrary native code (see [`CompileCache::load`]).
    pub fn open(engine: &Engine, root: &Path) -> anyhow::Result<CompileCache> {
        let engine_hash = engine_hash(engine);
        let dir = root.join(&engine_hash);
        create_private_dir(&dir)
            .with_context(|| format!("cannot create the compile cache `{}`", dir.display()))?;
        for folder in [root, dir.as_path()] {
            refuse_shared(folder)?;
        }
        Ok(CompileCache { dir, engine_hash })
    }

    /// The folder holding this engine's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The compiled component for the file whose SHA-256 is `digest`, if a valid entry exists.
    ///
    /// An entry whose header or checksum does not match is removed and reported as a miss.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry_path(digest);
        let bytes = std::fs::read(&path).ok()?;
        let Some(code) = self.verified_code(&bytes, digest) else {
            warn!(entry = %path.display(), "discarding a compile cache entry that does not match its header or checksum");
            let _ = std::fs::remove_file(&path);
            return None;
        };

        // SAFETY: `Component::deserialize` trusts its input to be code that
        // `Component::serialize` produced for a compatible engine; anything else is undefined
        // behaviour. These bytes are exactly what `store` wrote: the header names this engine's
        // compatibility hash and this component's digest, and the SHA-256 of `code` matches the
        // one written beside it, so a truncated, corrupted or foreign file never gets here. The
        // folder is private to this user (`open` refuses a group- or world-writable one), so a
        // file with a recomputed checksum could only come from someone who can already run code
        // as this user. wasmtime checks its own version and engine settings again on load.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => {
                debug!(component = %digest, "compiled component loaded from the cache");
                Some(component)
            }
            Err(err) => {
                warn!(entry = %path.display(), error = %err, "discarding a compile cache entry wasmtime refused");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// The serialized code of an entry, when its header matches and its checksum holds.
    fn verified_code<'a>(&self, bytes: &'a [u8], digest: &str) -> Option<&'a [u8]> {
        let (header, code) = bytes.split_at_checked(HEADER_LEN)?;
        let expected = format!(
            "{}{}\n{}\n{}\n",
            String::from_utf8_lossy(MAGIC),
            self.engine_hash,
            digest,
            sha256_hex(code)
        );
        (header == expected.as_bytes()).then_some(code)
    }

    /// Stores a freshly compiled component; failures only cost a compile next time.
    pub fn store(&self, digest: &str, component: &Component) {
        if let Err(err) = self.try_store(digest, component) {
            warn!(component = %digest, error = %format!("{err:#}"), "could not write the compile cache entry; the next start compiles it again");
        }
    }

    fn try_store(&self, digest: &str, component: &Component) -> anyhow::Result<()> {
        let code = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("cannot serialize the compiled component")?;
        let header = format!(
            "{}{}\n{}\n{}\n",
            String::from_utf8_lossy(MAGIC),
            self.engine_hash,
            digest,
            sha256_hex(&code)
        );
        debug_assert_eq!(header.len(), HEADER_LEN);

        // Written beside the entry and renamed over it, so a reader never sees half an entry.
        let path = self.entry_path(digest);
        let temp = self
            .dir
            .join(format!(".{digest}.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&temp)
            .with_context(|| format!("cannot create `{}`", temp.display()))?;
        file.write_all(header.as_bytes())
            .and_then(|()| file.write_all(&code))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write `{}`", temp.display()))?;
        std::fs::rename(&temp, &path).with_context(|| {
            let _ = std::fs::remove_file(&temp);
            format!("cannot move the entry into place at `{}`", path.display())
        })?;
        debug!(component = %digest, entry = %path.display(), "compiled component cached");
        Ok(())
    }
}

/// The default cache root: `$XDG_CACHE_HOME/stella-doctor`, else `$HOME/.cache/stella-doctor`.
pub fn default_root() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("stella-doctor"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".cache").join("stella-doctor"))
}

/// Where the cache lives: `--cache-dir`, else [`CACHE_DIR_KEY`], else [`default_root`]; `None`
/// when the cache is off (`off`, `none` or `false`) or no location is known.
pub fn configured_root(flag: Option<&Path>, configured: Option<&str>) -> Option<PathBuf> {
    let chosen = match (flag, configured.map(str::trim)) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(text)) if !text.is_empty() => PathBuf::from(text),
        _ => return default_root(),
    };
    let off = ["off", "none", "false"]
        .iter()
        .any(|word| chosen.as_os_str().eq_ignore_ascii_case(word));
    (!off).then_some(chosen)
}

/// A stable text form of the engine's compatibility hash.
///
/// The hash is only offered as `impl Hash`; feeding it to SHA-256 (instead of std's
/// `DefaultHasher`, whose output may change between Rust releases) keeps the folder name stable
/// for as long as wasmtime says compiled code stays compatible.
fn engine_hash(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher
        .0
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A [`Hasher`] that feeds everything it is given to SHA-256.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Fails when other users may write into `dir`.
#[cfg(unix)]
fn refuse_shared(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read `{}`", dir.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        mode & 0o022 == 0,
        "the compile cache `{}` is writable by other users (mode {:o}); compiled code from there would run as this host, so use a private folder (`chmod go-w`) or `--cache-dir off`",
        dir.display(),
        mode & 0o777
    );
    Ok(())
}

#[cfg(not(unix))]
fn refuse_shared(_dir: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, CompileCache) {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache {
            dir: root.path().to_path_buf(),
            engine_hash: "e".repeat(64),
        };
        (root, cache)
    }

    fn entry(cache: &CompileCache, digest: &str, code: &[u8]) -> Vec<u8> {
        let mut bytes = format!(
            "{}{}\n{}\n{}\n",
            String::from_utf8_lossy(MAGIC),
            cache.engine_hash,
            digest,
            sha256_hex(code)
        )
        .into_bytes();
        bytes.extend_from_slice(code);
        bytes
    }

    #[test]
    fn an_entry_is_accepted_only_with_matching_key_and_checksum() {
        let (_root, cache) = cache();
        let digest = "d".repeat(64);
        let bytes = entry(&cache, &digest, b"compiled code");

        assert_eq!(
            cache.verified_code(&bytes, &digest),
            Some(&b"compiled code"[..])
        );
        assert_eq!(cache.verified_code(&bytes, &"0".repeat(64)), None);

        let mut tampered = bytes.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(cache.verified_code(&tampered, &digest), None);
        assert_eq!(cache.verified_code(&bytes[..HEADER_LEN - 1], &digest), None);
    }

    #[test]
    fn the_cache_can_be_turned_off_or_moved() {
        let flag = Path::new("/tmp/x");
        assert_eq!(configured_root(Some(flag), Some("/y")), Some(flag.into()));
        assert_eq!(configured_root(None, Some("/y")), Some("/y".into()));
        assert_eq!(configured_root(None, Some("OFF")), None);
        assert_eq!(configured_root(Some(Path::new("none")), None), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = refuse_shared(root.path()).unwrap_err().to_string();
        assert!(err.contains("writable by other users"), "{err}");
    }
}
