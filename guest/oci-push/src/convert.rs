//! The one place where `oci_probe::model` values become generated binding types.

use oci_probe::model;

use crate::bindings::stellaops::doctor::types as wit;

/// Converts check metadata.
pub fn metadata(m: model::CheckMetadata) -> wit::CheckMetadata {
    wit::CheckMetadata {
        id: m.id,
        name: m.name,
        description: m.description,
        plugin_id: m.plugin_id,
        default_severity: severity(m.default_severity),
        tags: m.tags,
        estimated_duration_ms: m.estimated_duration_ms,
        config_keys: m.config_keys.into_iter().map(config_key).collect(),
        outbound_hosts: m.outbound_hosts,
        related_checks: m.related_checks,
    }
}

/// Converts a check result.
pub fn result(r: model::CheckResult) -> wit::CheckResult {
    wit::CheckResult {
        severity: severity(r.severity),
        diagnosis: r.diagnosis,
        evidence: r.evidence.into_iter().map(evidence_item).collect(),
        likely_causes: r.likely_causes,
        remediation: r.remediation.into_iter().map(remediation_step).collect(),
        verification_command: r.verification_command,
    }
}

fn severity(s: model::Severity) -> wit::Severity {
    match s {
        model::Severity::Pass => wit::Severity::Pass,
        model::Severity::Info => wit::Severity::Info,
        model::Severity::Warn => wit::Severity::Warn,
        model::Severity::Fail => wit::Severity::Fail,
        model::Severity::Skip => wit::Severity::Skip,
    }
}

fn config_key(k: model::ConfigKey) -> wit::ConfigKey {
    wit::ConfigKey {
        name: k.name,
        secret: k.secret,
        description: k.description,
    }
}

fn evidence_item(e: model::EvidenceItem) -> wit::EvidenceItem {
    wit::EvidenceItem {
        key: e.key,
        value: e.value,
    }
}

fn remediation_step(s: model::RemediationStep) -> wit::RemediationStep {
    wit::RemediationStep {
        title: s.title,
        commands: s.commands,
    }
}
