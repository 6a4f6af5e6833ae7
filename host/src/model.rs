//! The host's own view of checks and their results, independent of the generated bindings.
//!
//! Everything the host prints, logs or serialises is one of these types; the generated
//! `bindgen!` types are converted into them once, in [`crate::contract`].

use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// How a check turned out, from best to worst, plus "did not apply".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The checked thing works as the platform needs it.
    Pass,
    /// Works, with something the operator may want to know.
    Info,
    /// Works for now, but something is likely to break or degrade.
    Warn,
    /// Does not work.
    Fail,
    /// The check did not apply.
    Skip,
}

impl Severity {
    /// The lowercase name used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Pass => "pass",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Fail => "fail",
            Severity::Skip => "skip",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration key a check declares it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigKey {
    /// The key in `Section:Name` form, matched case-insensitively.
    pub name: String,
    /// True when the value must be redacted from every output and log.
    pub secret: bool,
    /// What the key is for, for operators.
    pub description: String,
}

/// Static facts about a check, read once when its component loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckMetadata {
    /// Stable dotted identifier, for example `check.integration.oci.push`.
    pub id: String,
    /// Short human-readable name.
    pub name: String,
    /// What the check verifies and why it matters.
    pub description: String,
    /// Identifier of the plugin that contributes the check.
    pub plugin_id: String,
    /// The severity the check reports when what it verifies is broken.
    pub default_severity: Severity,
    /// Lowercase tags used to select checks.
    pub tags: Vec<String>,
    /// A typical run time, for display only.
    pub estimated_duration_ms: u32,
    /// Every configuration key the check may read.
    pub config_keys: Vec<ConfigKey>,
    /// Outbound HTTP destinations: literal origins or `{Section:Key}` templates.
    pub outbound_hosts: Vec<String>,
    /// Checks an operator should look at together with this one.
    pub related_checks: Vec<String>,
}

/// Observed facts in the order the check reported them.
///
/// Serialised as a JSON object whose members keep that order, so a machine reader sees the same
/// sequence a person does in the text output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence(pub Vec<(String, String)>);

impl Evidence {
    /// Appends a fact, keeping the order of insertion.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.push((key.into(), value.into()));
    }

    /// Iterates over the facts in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when the check reported no facts.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Evidence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// One thing an operator can do to fix the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemediationStep {
    /// What the step achieves.
    pub title: String,
    /// Shell commands to paste as they are, in order.
    pub commands: Vec<String>,
}

/// The outcome of one run of a check, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// How the check turned out.
    pub severity: Severity,
    /// What is wrong (or right), in plain words.
    pub diagnosis: String,
    /// Observed facts in a stable order.
    pub evidence: Evidence,
    /// Most likely reasons for a non-pass result, most likely first.
    pub likely_causes: Vec<String>,
    /// Steps that fix the problem.
    pub remediation: Vec<RemediationStep>,
    /// A command that re-runs this check.
    pub verification_command: Option<String>,
}

impl CheckResult {
    /// A `fail` result produced by the host itself, for a check that could not report one.
    pub fn host_failure(diagnosis: impl Into<String>) -> Self {
        CheckResult {
            severity: Severity::Fail,
            diagnosis: diagnosis.into(),
            evidence: Evidence::default(),
            likely_causes: Vec::new(),
            remediation: Vec::new(),
            verification_command: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_serialises_as_an_object_in_insertion_order() {
        let mut evidence = Evidence::default();
        evidence.push("zeta", "1");
        evidence.push("alpha", "2");
        let json = serde_json::to_string(&evidence).unwrap();
        assert_eq!(json, r#"{"zeta":"1","alpha":"2"}"#);
    }

    #[test]
    fn severity_serialises_lowercase() {
        assert_eq!(serde_json::to_string(&Severity::Warn).unwrap(), r#""warn""#);
    }
}
