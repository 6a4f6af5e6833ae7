//! A plain-Rust mirror of the `stellaops:doctor/types` WIT interface.
//!
//! The probe builds these values; the component adapter converts them to the generated bindings in
//! one place, and a native build can serialise them directly (field names in camelCase, as the
//! doctor's JSON output spells them).

use serde::Serialize;

/// How a check turned out, from best to worst, plus "did not apply".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The checked thing works as the platform needs it.
    Pass,
    /// Works, with something the operator may want to know.
    Info,
    /// Works for now, but something is likely to break or degrade.
    Warn,
    /// Does not work; the platform feature that depends on it will fail.
    Fail,
    /// The check did not apply (for example: nothing is configured for it).
    Skip,
}

/// A configuration key the check reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigKey {
    /// The key in `Section:Name` form.
    pub name: String,
    /// True when the host must redact the value from every output and log.
    pub secret: bool,
    /// One sentence telling an operator what the key is for.
    pub description: String,
}

/// Static facts about the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckMetadata {
    /// Stable dotted identifier.
    pub id: String,
    /// Short human-readable name.
    pub name: String,
    /// What the check verifies and why it matters.
    pub description: String,
    /// Identifier of the contributing plugin.
    pub plugin_id: String,
    /// The severity reported when what the check verifies is broken.
    pub default_severity: Severity,
    /// Lower-case selection tags.
    pub tags: Vec<String>,
    /// Typical run time in milliseconds.
    pub estimated_duration_ms: u32,
    /// Every configuration key the check may read.
    pub config_keys: Vec<ConfigKey>,
    /// Outbound HTTP destinations, literal origins or `{Section:Key}` templates.
    pub outbound_hosts: Vec<String>,
    /// Checks to look at together with this one.
    pub related_checks: Vec<String>,
}

/// One named fact the check observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceItem {
    /// A snake_case key.
    pub key: String,
    /// The observed value, as text.
    pub value: String,
}

/// One thing an operator can do to fix the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemediationStep {
    /// What the step achieves.
    pub title: String,
    /// Shell commands to paste as they are, in order.
    pub commands: Vec<String>,
}

/// The outcome of one run of the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// How the check turned out.
    pub severity: Severity,
    /// One or two sentences for an operator.
    pub diagnosis: String,
    /// Observed facts in a stable order.
    pub evidence: Vec<EvidenceItem>,
    /// The most likely reasons for a non-pass result, most likely first.
    pub likely_causes: Vec<String>,
    /// Steps that fix the problem, one per deployment style where they differ.
    pub remediation: Vec<RemediationStep>,
    /// A command that re-runs the check.
    pub verification_command: Option<String>,
}

impl CheckResult {
    /// The value of the first evidence item named `key`, if any.
    pub fn evidence_value(&self, key: &str) -> Option<&str> {
        self.evidence
            .iter()
            .find(|item| item.key == key)
            .map(|item| item.value.as_str())
    }
}
