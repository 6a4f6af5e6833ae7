//! The `stellaops:doctor@0.1.0` contract as Rust: the `bindgen!` output and its conversion to
//! [`crate::model`] types.
//!
//! The generated types never leave this module; the rest of the host works with the domain types.
//! `wasi:config/store` is generated here too because the host implements it itself (see
//! [`crate::sandbox`]); every other WASI interface comes from `wasmtime-wasi` and
//! `wasmtime-wasi-http`.

use crate::model::{CheckMetadata, CheckResult, ConfigKey, Evidence, RemediationStep, Severity};

/// The interface every check exports, without its version.
pub const CHECK_INTERFACE: &str = "stellaops:doctor/check";

/// The contract version this host was built against.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The version range this host accepts, as shown to operators.
pub const SUPPORTED_VERSIONS: &str = "0.1.x";

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "stellaops:doctor/doctor-check",
        imports: { default: async | trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:cli": wasmtime_wasi::p2::bindings::cli,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
    });
}

pub use generated::DoctorCheckPre;

/// The host side of `wasi:config/store`, implemented in [`crate::sandbox`].
pub use generated::wasi::config::store as config_store;

use generated::stellaops::doctor::types as wit;

impl From<wit::Severity> for Severity {
    fn from(severity: wit::Severity) -> Self {
        match severity {
            wit::Severity::Pass => Severity::Pass,
            wit::Severity::Info => Severity::Info,
            wit::Severity::Warn => Severity::Warn,
            wit::Severity::Fail => Severity::Fail,
            wit::Severity::Skip => Severity::Skip,
        }
    }
}

impl From<wit::CheckMetadata> for CheckMetadata {
    fn from(m: wit::CheckMetadata) -> Self {
        CheckMetadata {
            id: m.id,
            name: m.name,
            description: m.description,
            plugin_id: m.plugin_id,
            default_severity: m.default_severity.into(),
            tags: m.tags,
            estimated_duration_ms: m.estimated_duration_ms,
            config_keys: m
                .config_keys
                .into_iter()
                .map(|k| ConfigKey {
                    name: k.name,
                    secret: k.secret,
                    description: k.description,
                })
                .collect(),
            outbound_hosts: m.outbound_hosts,
            related_checks: m.related_checks,
        }
    }
}

impl From<wit::CheckResult> for CheckResult {
    fn from(r: wit::CheckResult) -> Self {
        CheckResult {
            severity: r.severity.into(),
            diagnosis: r.diagnosis,
            evidence: Evidence(r.evidence.into_iter().map(|e| (e.key, e.value)).collect()),
            likely_causes: r.likely_causes,
            remediation: r
                .remediation
                .into_iter()
                .map(|s| RemediationStep {
                    title: s.title,
                    commands: s.commands,
                })
                .collect(),
            verification_command: r.verification_command,
        }
    }
}

/// Calls `metadata()` on an instance, converting the answer to the domain type.
pub async fn call_metadata<T: Send>(
    bindings: &generated::DoctorCheck,
    store: &mut wasmtime::Store<T>,
) -> wasmtime::Result<CheckMetadata> {
    let metadata = bindings
        .stellaops_doctor_check()
        .call_metadata(store)
        .await?;
    Ok(metadata.into())
}

/// Calls `run()` on an instance, converting the answer to the domain type.
pub async fn call_run<T: Send>(
    bindings: &generated::DoctorCheck,
    store: &mut wasmtime::Store<T>,
) -> wasmtime::Result<CheckResult> {
    let result = bindings.stellaops_doctor_check().call_run(store).await?;
    Ok(result.into())
}

/// An instantiated check, as returned by [`DoctorCheckPre::instantiate_async`].
pub type CheckInstance = generated::DoctorCheck;
