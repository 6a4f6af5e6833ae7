//! From a plugins folder to validated, pre-instantiated checks with their metadata.
//!
//! Every `*.wasm` file goes through the same steps, and the first step that fails rejects the
//! file with a reason an operator can act on, while the other files still load:
//!
//! 1. it must be a WebAssembly component, not a core module;
//! 2. it must export `stellaops:doctor/check` in a contract version this host supports;
//! 3. every import must be in the `doctor-check` world (no sockets, no other worlds);
//! 4. it must link (`Linker::instantiate_pre`, kept for every later run);
//! 5. `metadata()` must answer within [`METADATA_TIMEOUT`] in an empty sandbox with a sane id.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tracing::debug;
use wasmtime::component::Component;

use crate::contract::{self, CHECK_INTERFACE, DoctorCheckPre, SUPPORTED_VERSIONS};
use crate::engine::DoctorEngine;
use crate::limits::Limits;
use crate::model::CheckMetadata;
use crate::policy::Allowlist;
use crate::sandbox::{SandboxPolicy, SandboxState, ScopedConfig};
use crate::service::cache::CompileCache;
use crate::service::trust::TrustPolicy;
use crate::tls::TlsSettings;

/// How long `metadata()` may take; it must be cheap and make no calls.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Linear memory `metadata()` may use, in MiB.
const METADATA_MEMORY_MIB: u64 = 64;

/// A check ready to run: its metadata and its pre-linked component.
#[derive(Clone)]
pub struct LoadedCheck {
    /// What the check said about itself.
    pub metadata: CheckMetadata,
    /// The component's file name, for reports.
    pub component: String,
    /// The component's path.
    pub path: PathBuf,
    /// SHA-256 of the component file, lowercase hex.
    pub digest: String,
    /// The contract version the component exports.
    pub contract_version: String,
    /// The component linked against the host, instantiated afresh for every run.
    pub pre: DoctorCheckPre<SandboxState>,
}

/// A component file that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadError {
    /// The file name inside the plugins folder.
    pub file: String,
    /// What is wrong with it and, where possible, what to do.
    pub error: String,
}

/// Everything found in a plugins folder.
#[derive(Default)]
pub struct Plugins {
    /// Checks that loaded, ordered by file name.
    pub checks: Vec<LoadedCheck>,
    /// Files that did not load, ordered by file name.
    pub errors: Vec<LoadError>,
}

/// One import of a component and whether the host offers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportInfo {
    /// The full import name, for example `wasi:http/types@0.2.4`.
    pub name: String,
    /// True when the name is within the `doctor-check` world.
    pub allowed: bool,
}

/// What the host found in one component file, whether or not it would load.
pub struct Inspection {
    /// The file name.
    pub file: String,
    /// SHA-256 of the file, when it could be read.
    pub digest: Option<String>,
    /// `component`, `core module` or `not WebAssembly`.
    pub kind: &'static str,
    /// Every export name.
    pub exports: Vec<String>,
    /// The contract version of the exported `stellaops:doctor/check`, if any.
    pub contract_version: Option<String>,
    /// `stellaops:doctor/doctor-check@<version>` when the component exports a supported `check`
    /// and imports nothing outside that world; `None` when it does not fit the world.
    pub world: Option<String>,
    /// Every import, with its verdict.
    pub imports: Vec<ImportInfo>,
    /// The check's metadata, when `metadata()` could be called.
    pub metadata: Option<CheckMetadata>,
    /// Why the file would not load; empty when it loads.
    pub problems: Vec<String>,
    pre: Option<DoctorCheckPre<SandboxState>>,
}

/// What loading may use besides the engine: a compile cache, a trust policy, and counters.
///
/// The default is what the host always did: compile every component, trust every valid one.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Compiled components from earlier starts, and where new ones are kept.
    pub cache: Option<Arc<CompileCache>>,
    /// When set, a component must be pinned or signed to load (checked before it is compiled).
    pub trust: Option<Arc<TrustPolicy>>,
    /// How many components were compiled and how many came from the cache.
    pub counters: Arc<LoadCounters>,
}

/// Counts of the work loading did, for metrics.
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Components compiled by Cranelift.
    pub compiles: AtomicU64,
    /// Components deserialized from the compile cache instead.
    pub cache_hits: AtomicU64,
}

/// Loads every `*.wasm` file in `dir`.
///
/// Only an unreadable folder is an error; problems with single files are collected in
/// [`Plugins::errors`].
pub async fn load_dir(engine: &Arc<DoctorEngine>, dir: &Path) -> anyhow::Result<Plugins> {
    load_dir_with(engine, dir, &LoadOptions::default()).await
}

/// [`load_dir`] with a compile cache and trust policy.
pub async fn load_dir_with(
    engine: &Arc<DoctorEngine>,
    dir: &Path,
    options: &LoadOptions,
) -> anyhow::Result<Plugins> {
    let files = component_files(dir)?;
    let mut plugins = Plugins::default();

    for path in files {
        let inspection = inspect_with(engine, &path, options).await;
        let file = inspection.file.clone();
        match into_loaded(inspection, &path) {
            Ok(check) => {
                if let Some(other) = plugins
                    .checks
                    .iter()
                    .find(|c| c.metadata.id.eq_ignore_ascii_case(&check.metadata.id))
                {
                    let error = format!(
                        "declares check id `{}`, which `{}` already provides; remove one of the two files",
                        check.metadata.id, other.component
                    );
                    debug!(component = %file, %error, "plugin rejected");
                    plugins.errors.push(LoadError { file, error });
                    continue;
                }
                debug!(component = %file, check = %check.metadata.id, "plugin loaded");
                plugins.checks.push(check);
            }
            Err(error) => {
                debug!(component = %file, %error, "plugin rejected");
                plugins.errors.push(LoadError { file, error });
            }
        }
    }

    Ok(plugins)
}

/// Loads one component file on its own: every step of [`load_dir`] except the check for an id
/// another file already provides, which is the caller's to make.
pub async fn load_file(
    engine: &Arc<DoctorEngine>,
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedCheck, LoadError> {
    let inspection = inspect_with(engine, path, options).await;
    let file = inspection.file.clone();
    into_loaded(inspection, path).map_err(|error| LoadError { file, error })
}

/// The `*.wasm` files directly inside `dir`, sorted by name.
pub fn component_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot read plugins folder `{}`; pass the folder holding the check components with `--plugins DIR` or `STELLA_DOCTOR_PLUGINS`",
            dir.display()
        )
    })?;

    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list plugins folder `{}`", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The check an [`inspect_with`] of `path` found, or why it does not load.
///
/// For callers that need the inspection's digest of the bytes it read, whatever the outcome
/// (the service records the digest of a refused update).
pub fn into_loaded(inspection: Inspection, path: &Path) -> Result<LoadedCheck, String> {
    if !inspection.problems.is_empty() {
        return Err(inspection.problems.join("; "));
    }
    let (Some(metadata), Some(pre), Some(digest), Some(contract_version)) = (
        inspection.metadata,
        inspection.pre,
        inspection.digest,
        inspection.contract_version,
    ) else {
        return Err("was not fully inspected (host bug: no problem recorded)".to_string());
    };
    Ok(LoadedCheck {
        metadata,
        component: inspection.file,
        path: path.to_path_buf(),
        digest,
        contract_version,
        pre,
    })
}

/// Runs every loading step on one file, recording what it finds and the first blocking problem.
pub async fn inspect(engine: &Arc<DoctorEngine>, path: &Path) -> Inspection {
    inspect_with(engine, path, &LoadOptions::default()).await
}

/// [`inspect`] with a compile cache and trust policy.
pub async fn inspect_with(
    engine: &Arc<DoctorEngine>,
    path: &Path,
    options: &LoadOptions,
) -> Inspection {
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut inspection = Inspection {
        file,
        digest: None,
        kind: "not WebAssembly",
        exports: Vec::new(),
        contract_version: None,
        world: None,
        imports: Vec::new(),
        metadata: None,
        problems: Vec::new(),
        pre: None,
    };

    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            inspection.problems.push(format!("cannot be read: {err}"));
            return inspection;
        }
    };
    let digest = sha256_hex(&bytes);
    inspection.digest = Some(digest.clone());

    // Before anything parses the bytes: an untrusted file gets no further than this. The same
    // bytes are verified, compiled and hashed, so a file swapped in between cannot slip through.
    if let Some(trust) = &options.trust
        && let Err(problem) = trust.verify(path, &bytes, &digest)
    {
        inspection.problems.push(problem);
        return inspection;
    }

    if let Err(problem) = classify(&bytes, &mut inspection) {
        inspection.problems.push(problem);
        return inspection;
    }

    let component = match compile_with(engine, bytes, &digest, options).await {
        Ok(component) => component,
        Err(err) => {
            inspection
                .problems
                .push(format!("is not a valid component: {err:#}"));
            return inspection;
        }
    };

    read_world(engine, &component, &mut inspection);
    if !inspection.problems.is_empty() {
        return inspection;
    }

    let pre = match engine
        .linker()
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .and_then(|pre| DoctorCheckPre::new(pre).map_err(anyhow::Error::from))
    {
        Ok(pre) => pre,
        Err(err) => {
            inspection
                .problems
                .push(format!("cannot be linked against the host: {err:#}"));
            return inspection;
        }
    };

    match read_metadata(engine, &pre, &inspection.file).await {
        Ok(metadata) => match check_metadata(&metadata) {
            Ok(()) => {
                inspection.metadata = Some(metadata);
                inspection.pre = Some(pre);
            }
            Err(problem) => {
                inspection.metadata = Some(metadata);
                inspection.problems.push(problem);
            }
        },
        Err(problem) => inspection.problems.push(problem),
    }
    inspection
}

/// Tells components from core modules by the binary header, so a core module gets a precise
/// message instead of a compiler error.
fn classify(bytes: &[u8], inspection: &mut Inspection) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("is not a WebAssembly file (no `\\0asm` header)".to_string());
    }
    // After the magic: a 16-bit version and a 16-bit layer; layer 1 is a component.
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    if layer == 0 {
        inspection.kind = "core module";
        return Err("is a core WebAssembly module, not a component; build the check for `wasm32-wasip2` (or wrap it with `wasm-tools component new`)".to_string());
    }
    inspection.kind = "component";
    Ok(())
}

/// Takes the compiled component from the cache when it is there, else compiles and caches it.
async fn compile_with(
    engine: &Arc<DoctorEngine>,
    bytes: Vec<u8>,
    digest: &str,
    options: &LoadOptions,
) -> anyhow::Result<Component> {
    let Some(cache) = options.cache.clone() else {
        options.counters.compiles.fetch_add(1, Ordering::Relaxed);
        return compile(engine, bytes).await;
    };

    let cached = {
        let (engine, cache, digest) = (engine.clone(), cache.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || cache.load(engine.engine(), &digest))
            .await
            .ok()
            .flatten()
    };
    if let Some(component) = cached {
        options.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(component);
    }

    options.counters.compiles.fetch_add(1, Ordering::Relaxed);
    let component = compile(engine, bytes).await?;
    let (stored, digest) = (component.clone(), digest.to_string());
    // Writing the entry is not on the way to a usable check; a failure is logged by `store`.
    let _ = tokio::task::spawn_blocking(move || cache.store(&digest, &stored)).await;
    Ok(component)
}

/// Compiles off the async threads: Cranelift is CPU-bound and takes a while for large files.
async fn compile(engine: &Arc<DoctorEngine>, bytes: Vec<u8>) -> anyhow::Result<Component> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || Component::new(engine.engine(), &bytes))
        .await
        .context("the compile task failed")?
        .map_err(anyhow::Error::from)
}

/// Records exports and imports and checks both against the contract.
fn read_world(engine: &DoctorEngine, component: &Component, inspection: &mut Inspection) {
    let ty = component.component_type();
    inspection.exports = ty
        .exports(engine.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    inspection.imports = ty
        .imports(engine.engine())
        .map(|(name, _)| ImportInfo {
            name: name.to_string(),
            allowed: import_allowed(name),
        })
        .collect();

    let check_export = inspection.exports.iter().find_map(|name| {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        (interface == CHECK_INTERFACE).then(|| version.to_string())
    });
    match check_export {
        None => inspection.problems.push(format!(
            "does not export `{CHECK_INTERFACE}@{}`, so it is not a doctor check (it exports: {})",
            contract::CONTRACT_VERSION,
            list_or_none(&inspection.exports)
        )),
        Some(version) if !contract_version_supported(&version) => {
            let shown = if version.is_empty() {
                "without a version".to_string()
            } else {
                version.clone()
            };
            inspection.contract_version = Some(version);
            inspection.problems.push(format!(
                "built for contract {shown}, this host supports {SUPPORTED_VERSIONS}; rebuild the check against `stellaops:doctor@{}`",
                contract::CONTRACT_VERSION
            ));
        }
        Some(version) => inspection.contract_version = Some(version),
    }

    for import in inspection.imports.iter().filter(|i| !i.allowed) {
        inspection.problems.push(format!(
            "imports `{}`, which the `doctor-check` world does not offer; checks reach the network only through `wasi:http/outgoing-handler` and get no other host interfaces",
            import.name
        ));
    }
    if inspection.problems.is_empty()
        && let Some(version) = &inspection.contract_version
    {
        inspection.world = Some(format!("stellaops:doctor/doctor-check@{version}"));
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    }
}

/// True for the contract versions this host can run: `0.1.x`.
pub fn contract_version_supported(version: &str) -> bool {
    let mut parts = version.split(['.', '-', '+']);
    matches!((parts.next(), parts.next()), (Some("0"), Some("1")))
}

/// True when an import name is within the `doctor-check` world: WASI 0.2.x io, clocks, random,
/// the CLI environment and stdio, filesystem types and preopens, HTTP types and outgoing
/// handler, and `wasi:config/store`.
pub fn import_allowed(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else {
        return false;
    };
    let Some((package, interface)) = path.split_once('/') else {
        return false;
    };
    if package == "stellaops:doctor" {
        return interface == "types" && contract_version_supported(version);
    }
    if !version.starts_with("0.2.") {
        return false;
    }
    match package {
        "wasi:io" | "wasi:clocks" | "wasi:random" => true,
        "wasi:cli" => {
            matches!(
                interface,
                "environment" | "exit" | "stdin" | "stdout" | "stderr"
            ) || interface.starts_with("terminal-")
        }
        "wasi:filesystem" => matches!(interface, "types" | "preopens"),
        "wasi:http" => matches!(interface, "types" | "outgoing-handler"),
        "wasi:config" => interface == "store",
        _ => false,
    }
}

/// Calls `metadata()` in an empty sandbox: no configuration, no outbound hosts, short deadline.
async fn read_metadata(
    engine: &DoctorEngine,
    pre: &DoctorCheckPre<SandboxState>,
    file: &str,
) -> Result<CheckMetadata, String> {
    // No origin is allowed, so no request leaves; the TLS settings are never used.
    let tls = TlsSettings::trusting_nothing().map_err(|err| err.to_string())?;
    let policy = SandboxPolicy {
        check_id: format!("<metadata of {file}>"),
        config: ScopedConfig::empty(file),
        allowlist: Allowlist::default(),
        deadline: Instant::now() + METADATA_TIMEOUT,
        limits: Limits {
            memory_mib: METADATA_MEMORY_MIB,
            ..Limits::default()
        },
        tls: Arc::new(tls),
    };
    let mut store = engine.store(policy);

    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        contract::call_metadata(&instance, &mut store).await
    };
    match tokio::time::timeout(METADATA_TIMEOUT, call).await {
        Ok(Ok(metadata)) => Ok(metadata),
        Ok(Err(err)) if is_interrupt(&err) => Err(metadata_timeout()),
        Ok(Err(err)) => Err(format!("`metadata()` failed: {}", describe_error(&err))),
        Err(_) => Err(metadata_timeout()),
    }
}

fn metadata_timeout() -> String {
    format!(
        "`metadata()` did not answer within {}s; it must be cheap and make no calls",
        METADATA_TIMEOUT.as_secs()
    )
}

/// True when the error is the epoch deadline firing.
pub(crate) fn is_interrupt(err: &wasmtime::Error) -> bool {
    err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
}

/// A one-line description of a wasmtime error: the trap or root cause, without the backtrace.
pub(crate) fn describe_error(err: &wasmtime::Error) -> String {
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    err.root_cause().to_string()
}

/// Rejects metadata the host cannot work with.
fn check_metadata(metadata: &CheckMetadata) -> Result<(), String> {
    if !is_valid_id(&metadata.id) {
        return Err(format!(
            "`metadata()` returned the id {:?}; a check id is lowercase dotted words such as `check.integration.oci.push`",
            metadata.id
        ));
    }
    if metadata.name.trim().is_empty() {
        return Err(format!(
            "check `{}` has an empty name in `metadata()`",
            metadata.id
        ));
    }
    Ok(())
}

/// A check id: lowercase letters, digits, `.`, `-` and `_`, starting with a letter or digit.
fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    id.len() <= 200
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_within_the_world_are_allowed() {
        for name in [
            "wasi:io/streams@0.2.4",
            "wasi:io/error@0.2.12",
            "wasi:clocks/monotonic-clock@0.2.0",
            "wasi:random/random@0.2.3",
            "wasi:cli/environment@0.2.4",
            "wasi:cli/terminal-stdout@0.2.4",
            "wasi:filesystem/preopens@0.2.4",
            "wasi:http/outgoing-handler@0.2.4",
            "wasi:config/store@0.2.0-rc.1",
            "stellaops:doctor/types@0.1.0",
        ] {
            assert!(import_allowed(name), "{name}");
        }
    }

    #[test]
    fn imports_outside_the_world_are_rejected() {
        for name in [
            "wasi:sockets/tcp@0.2.4",
            "wasi:sockets/ip-name-lookup@0.2.4",
            "wasi:http/incoming-handler@0.2.4",
            "wasi:io/streams@0.3.0",
            "wasi:io/streams",
            "acme:evil/thing@1.0.0",
            "stellaops:doctor/types@0.2.0",
        ] {
            assert!(!import_allowed(name), "{name}");
        }
    }

    #[test]
    fn contract_versions_0_1_x_are_supported() {
        assert!(contract_version_supported("0.1.0"));
        assert!(contract_version_supported("0.1.7"));
        assert!(!contract_version_supported("0.2.0"));
        assert!(!contract_version_supported("1.0.0"));
        assert!(!contract_version_supported(""));
    }

    #[test]
    fn check_ids_are_lowercase_dotted() {
        assert!(is_valid_id("check.integration.oci.push"));
        assert!(is_valid_id("check.a-b_c.9"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("Check.Upper"));
        assert!(!is_valid_id(".leading"));
        assert!(!is_valid_id("with space"));
    }

    #[test]
    fn metadata_needs_a_valid_id_and_a_name() {
        let metadata = |id: &str, name: &str| CheckMetadata {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            plugin_id: "p".into(),
            default_severity: crate::model::Severity::Fail,
            tags: vec![],
            estimated_duration_ms: 0,
            config_keys: vec![],
            outbound_hosts: vec![],
            related_checks: vec![],
        };
        assert!(check_metadata(&metadata("check.ok", "A check")).is_ok());
        let bad_id = check_metadata(&metadata("Check Bad", "A check")).unwrap_err();
        assert!(bad_id.contains("\"Check Bad\""), "{bad_id}");
        let no_name = check_metadata(&metadata("check.ok", "  ")).unwrap_err();
        assert!(no_name.contains("empty name"), "{no_name}");
    }

    #[test]
    fn header_tells_core_modules_from_components() {
        let mut inspection = Inspection {
            file: "x.wasm".into(),
            digest: None,
            kind: "not WebAssembly",
            exports: vec![],
            contract_version: None,
            world: None,
            imports: vec![],
            metadata: None,
            problems: vec![],
            pre: None,
        };
        let core = b"\0asm\x01\0\0\0";
        let problem = classify(core, &mut inspection).unwrap_err();
        assert!(problem.contains("core WebAssembly module, not a component"));
        assert!(classify(b"\0asm\x0d\0\x01\0", &mut inspection).is_ok());
        assert!(classify(b"hello world", &mut inspection).is_err());
    }

    #[test]
    fn digest_is_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
