//! The check as the doctor sees it: static metadata and one entry point that runs it.

use std::time::Duration;

use crate::config::{self, keys};
use crate::http::Transport;
use crate::model::{CheckMetadata, CheckResult, ConfigKey, Severity};
use crate::{push, report};

/// The stable identifier of the check.
pub const CHECK_ID: &str = "check.integration.oci.push";

/// Describes the check; cheap, deterministic and without I/O.
pub fn metadata() -> CheckMetadata {
    CheckMetadata {
        id: CHECK_ID.to_string(),
        name: "OCI registry push permission".to_string(),
        description: DESCRIPTION.to_string(),
        plugin_id: "stellaops.doctor.integration".to_string(),
        default_severity: Severity::Fail,
        tags: strings(&["registry", "oci", "push", "authorization", "credentials"]),
        estimated_duration_ms: 2000,
        config_keys: config_keys(),
        outbound_hosts: strings(&["{OCI:RegistryUrl}", "{Registry:Url}"]),
        related_checks: strings(&[
            "check.integration.oci.credentials",
            "check.integration.oci.pull",
            "check.integration.oci.registry",
        ]),
    }
}

const DESCRIPTION: &str = "Verifies that the configured service account may push to the OCI \
registry. Stella Ops stores attestations, SBOMs and signatures next to the images it promotes, so \
without push access a release cannot carry its evidence. Valid credentials are not enough: the \
check asks the registry to open a blob upload session, which only succeeds with a real push grant, \
and cancels the session at once, so no blob or manifest is written. Registries that answer with \
a bearer-token challenge get a token for `pull,push` from the realm they name; a realm on another \
host (Docker Hub's `auth.docker.io`, GitLab's `/jwt/auth`) must be added to the check's \
`AllowedHosts`. Some registries (Quay, Docker Hub) may still create an empty repository the first \
time a push is attempted.";

fn config_keys() -> Vec<ConfigKey> {
    let key = |name: &str, secret: bool, description: &str| ConfigKey {
        name: name.to_string(),
        secret,
        description: description.to_string(),
    };
    vec![
        key(
            keys::OCI_REGISTRY_URL,
            false,
            "Registry address; no scheme means https.",
        ),
        key(
            keys::REGISTRY_URL,
            false,
            "Platform-wide registry address, used when `OCI:RegistryUrl` is not set.",
        ),
        key(
            keys::OCI_PUSH_TEST_REPOSITORY,
            false,
            "Repository the probe opens an upload session in (default `stellaops/doctor-test`).",
        ),
        key(
            keys::OCI_TEST_REPOSITORY,
            false,
            "Repository shared by the OCI checks, used when `OCI:PushTestRepository` is not set.",
        ),
        key(
            keys::OCI_USERNAME,
            false,
            "Service account user name for basic authentication.",
        ),
        key(
            keys::OCI_PASSWORD,
            true,
            "Service account password or access token for basic authentication.",
        ),
        key(
            keys::OCI_TOKEN,
            true,
            "Bearer token, used when no user name and password are set: sent as it is, and \
             exchanged as an identity (refresh) token when the registry challenges it.",
        ),
        key(
            keys::REGISTRY_USERNAME,
            false,
            "Platform-wide user name, used when no `OCI:` credentials are set.",
        ),
        key(
            keys::REGISTRY_PASSWORD,
            true,
            "Platform-wide password, used with `Registry:Username`.",
        ),
        key(
            keys::REGISTRY_TOKEN,
            true,
            "Platform-wide bearer or identity token, used like `OCI:Token`.",
        ),
        key(
            keys::OCI_TIMEOUT_SECONDS,
            false,
            "Timeout of each HTTP request in seconds (default 10).",
        ),
    ]
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// Runs the check once.
///
/// `lookup` reads a configuration key (`None` or an empty string when unset); `connect` builds
/// the transport once the per-request timeout is known. No request is sent when the
/// configuration is incomplete or invalid.
pub fn run<T, L, C>(lookup: L, connect: C) -> CheckResult
where
    T: Transport,
    L: Fn(&str) -> Option<String>,
    C: FnOnce(Duration) -> T,
{
    let config = match config::resolve(lookup) {
        Ok(config) => config,
        Err(error) => return report::config_problem(&error),
    };

    let mut transport = connect(config.timeout);
    let outcome = push::probe(&config, &mut transport);
    report::probe_result(&config, &outcome)
}

#[cfg(test)]
mod tests;
