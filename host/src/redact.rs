//! Secret redaction: the one place secret values are removed from what the host shows.
//!
//! A check may echo anything it was given, so the host does not trust it to keep secrets out of
//! its result. Every result and every captured output goes through [`Redactor`] before it is
//! formatted, whatever the output format.

use crate::model::{CheckResult, Evidence};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Replaces known secret values with [`MASK`].
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values; empty values are ignored.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn text(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MASK);
            }
        }
        text
    }

    /// Redacts every text field of a result in place.
    pub fn result(&self, result: &mut CheckResult) {
        result.diagnosis = self.text(&result.diagnosis);
        result.evidence = Evidence(
            result
                .evidence
                .iter()
                .map(|(key, value)| (self.text(key), self.text(value)))
                .collect(),
        );
        for cause in &mut result.likely_causes {
            *cause = self.text(cause);
        }
        for step in &mut result.remediation {
            step.title = self.text(&step.title);
            for command in &mut step.commands {
                *command = self.text(command);
            }
        }
        if let Some(command) = &mut result.verification_command {
            *command = self.text(command);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::model::{RemediationStep, Severity};

    fn redactor() -> Redactor {
        let mut settings = Settings::default();
        settings.set("OCI:Username", "alice");
        settings.set("OCI:Password", "hunter2");
        Redactor::new(settings.secret_values([]))
    }

    #[test]
    fn every_field_of_a_result_is_redacted_including_basic_auth() {
        let mut evidence = Evidence::default();
        evidence.push("authorization", "Basic YWxpY2U6aHVudGVyMg==");
        evidence.push("password_hunter2", "hunter2");
        let mut result = CheckResult {
            severity: Severity::Fail,
            diagnosis: "login with hunter2 failed".into(),
            evidence,
            likely_causes: vec!["password hunter2 expired".into()],
            remediation: vec![RemediationStep {
                title: "reset hunter2".into(),
                commands: vec!["docker login -p hunter2".into()],
            }],
            verification_command: Some("stella-doctor run --set OCI:Password=hunter2".into()),
        };

        redactor().result(&mut result);

        let all = format!("{result:?}");
        assert!(!all.contains("hunter2"), "{all}");
        assert!(!all.contains("YWxpY2U6aHVudGVyMg"), "{all}");
        assert_eq!(result.diagnosis, "login with *** failed");
        assert_eq!(result.evidence.0[0].1, "Basic ***");
        assert_eq!(result.evidence.0[1].0, "password_***");
    }

    #[test]
    fn longer_secrets_are_replaced_before_their_substrings() {
        let redactor = Redactor::new(["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(redactor.text("xabcdefx abc"), "x***x ***");
    }

    #[test]
    fn username_alone_is_not_a_secret() {
        assert_eq!(redactor().text("user alice"), "user alice");
    }
}
