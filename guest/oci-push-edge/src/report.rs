//! The check's result as the doctor's JSON report, with every configured secret redacted.
//!
//! The body has the shape of `stella-doctor run --format json` for one check, so a status page
//! reads both alike: `{"results":[{checkId, name, plugin, severity, diagnosis, evidence{…in
//! order…}, likelyCauses, remediation[{title, commands}], verificationCommand, durationMs,
//! component}], "summary":{total, pass, info, warn, fail, skip, durationMs}, "errors":[]}`.
//!
//! The probe never puts a secret into its result, but the doctor host does not trust a check to
//! keep that promise and neither does this: the configured secret values, and the base64 form of
//! each `user:password` pair, are replaced with `***` before anything is serialised.

use std::time::Duration;

use oci_probe::check;
use oci_probe::model::{CheckResult, EvidenceItem, RemediationStep, Severity};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use spin_sdk::http::Response;

use crate::COMPONENT;

/// What a secret is replaced with, as in the doctor host.
pub const MASK: &str = "***";

/// The HTTP answer for a finished run: `503` when the check failed, `200` otherwise.
pub fn response(result: CheckResult, duration: Duration, redactor: &Redactor) -> Response {
    let status = status_for(result.severity);
    let body = to_json(result, duration, redactor);
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        // A status page polls this; every answer is a fresh run.
        .header("cache-control", "no-store")
        .body(body)
        .build()
}

/// `503` for a failed check, so a load balancer or uptime monitor needs no JSON parsing.
pub fn status_for(severity: Severity) -> u16 {
    match severity {
        Severity::Fail => 503,
        Severity::Pass | Severity::Info | Severity::Warn | Severity::Skip => 200,
    }
}

/// Adds a first remediation step naming the platform's policy when it refused a request: the
/// probe's own text names the doctor host's `AllowedHosts` key, which does not exist here.
pub fn add_platform_policy_step(result: &mut CheckResult, denied_origins: &[String]) {
    if denied_origins.is_empty() {
        return;
    }
    let origins = denied_origins
        .iter()
        .map(|origin| format!("`{origin}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let step = RemediationStep {
        title: format!(
            "Spin: allow {origins} in the component's `allowed_outbound_hosts` (the shipped \
             `spin.toml` takes them from the `oci_registry_url` and `oci_token_realm_url` \
             variables), then redeploy"
        ),
        commands: Vec::new(),
    };
    result.remediation.insert(0, step);
}

/// The pretty JSON report of one run, redacted.
pub fn to_json(mut result: CheckResult, duration: Duration, redactor: &Redactor) -> String {
    redactor.result(&mut result);
    let metadata = check::metadata();
    let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);

    let report = JsonReport {
        results: [JsonResult {
            check_id: &metadata.id,
            name: &metadata.name,
            plugin: &metadata.plugin_id,
            severity: result.severity,
            diagnosis: &result.diagnosis,
            evidence: Evidence(&result.evidence),
            likely_causes: &result.likely_causes,
            remediation: &result.remediation,
            verification_command: result.verification_command.as_deref(),
            duration_ms,
            component: COMPONENT,
        }],
        summary: Summary::of(result.severity, duration_ms),
        errors: [],
    };
    // Serialising these plain structs cannot fail: every map key is a string.
    let mut text = serde_json::to_string_pretty(&report)
        .unwrap_or_else(|err| format!("{{\"error\":\"cannot serialise the report: {err}\"}}"));
    text.push('\n');
    text
}

#[derive(Serialize)]
struct JsonReport<'a> {
    results: [JsonResult<'a>; 1],
    summary: Summary,
    /// Component files that did not load; always empty, kept so the shape is the host's.
    errors: [(); 0],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResult<'a> {
    check_id: &'a str,
    name: &'a str,
    plugin: &'a str,
    severity: Severity,
    diagnosis: &'a str,
    evidence: Evidence<'a>,
    likely_causes: &'a [String],
    remediation: &'a [RemediationStep],
    verification_command: Option<&'a str>,
    duration_ms: u64,
    component: &'a str,
}

/// Evidence as one JSON object whose keys keep the order the check gave them.
struct Evidence<'a>(&'a [EvidenceItem]);

impl Serialize for Evidence<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for item in self.0 {
            map.serialize_entry(&item.key, &item.value)?;
        }
        map.end()
    }
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Summary {
    total: usize,
    pass: usize,
    info: usize,
    warn: usize,
    fail: usize,
    skip: usize,
    duration_ms: u64,
}

impl Summary {
    fn of(severity: Severity, duration_ms: u64) -> Summary {
        let mut summary = Summary {
            total: 1,
            duration_ms,
            ..Summary::default()
        };
        let count = match severity {
            Severity::Pass => &mut summary.pass,
            Severity::Info => &mut summary.info,
            Severity::Warn => &mut summary.warn,
            Severity::Fail => &mut summary.fail,
            Severity::Skip => &mut summary.skip,
        };
        *count = 1;
        summary
    }
}

/// Replaces known secret values with [`MASK`].
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for `secrets` and for the base64 `user:secret` pair of every user name with
    /// every secret, as a basic `Authorization` header carries them; empty values are ignored.
    pub fn new(secrets: &[String], usernames: &[String]) -> Self {
        let secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
        let pairs = usernames.iter().flat_map(|user| {
            secrets
                .iter()
                .map(move |secret| oci_probe::base64::encode(format!("{user}:{secret}").as_bytes()))
        });
        let mut all: Vec<String> = secrets.iter().map(|s| s.to_string()).chain(pairs).collect();
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Redactor { secrets: all }
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
        for item in &mut result.evidence {
            item.key = self.text(&item.key);
            item.value = self.text(&item.value);
        }
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
    use serde_json::Value;

    fn result(severity: Severity) -> CheckResult {
        CheckResult {
            severity,
            diagnosis: "The service account `robot` can push.".to_string(),
            evidence: vec![
                EvidenceItem {
                    key: "registry_url".into(),
                    value: "http://127.0.0.1:5000".into(),
                },
                EvidenceItem {
                    key: "status_code".into(),
                    value: "202".into(),
                },
            ],
            likely_causes: Vec::new(),
            remediation: Vec::new(),
            verification_command: None,
        }
    }

    #[test]
    fn the_report_has_the_doctor_json_shape() {
        let json = to_json(
            result(Severity::Pass),
            Duration::from_millis(42),
            &Redactor::default(),
        );
        let report: Value = serde_json::from_str(&json).unwrap();
        let only = &report["results"][0];

        assert_eq!(only["checkId"], "check.integration.oci.push");
        assert_eq!(only["plugin"], "stellaops.doctor.integration");
        assert_eq!(only["severity"], "pass");
        assert_eq!(only["durationMs"], 42);
        assert_eq!(only["component"], COMPONENT);
        assert_eq!(only["verificationCommand"], Value::Null);
        assert_eq!(only["likelyCauses"], serde_json::json!([]));
        assert_eq!(report["summary"]["total"], 1);
        assert_eq!(report["summary"]["pass"], 1);
        assert_eq!(report["summary"]["fail"], 0);
        assert_eq!(report["errors"], serde_json::json!([]));
    }

    #[test]
    fn evidence_keys_keep_the_order_the_check_gave_them() {
        let json = to_json(result(Severity::Pass), Duration::ZERO, &Redactor::default());

        let registry = json.find("\"registry_url\"").unwrap();
        let status = json.find("\"status_code\"").unwrap();
        assert!(registry < status, "{json}");
    }

    #[test]
    fn only_a_failed_check_is_service_unavailable() {
        assert_eq!(status_for(Severity::Fail), 503);
        for severity in [
            Severity::Pass,
            Severity::Info,
            Severity::Warn,
            Severity::Skip,
        ] {
            assert_eq!(status_for(severity), 200, "{severity:?}");
        }
    }

    #[test]
    fn secrets_and_their_basic_auth_pair_are_masked_everywhere() {
        let mut leaky = result(Severity::Fail);
        leaky.diagnosis = "password hunter2 rejected".into();
        leaky.evidence[0].value = "Basic cm9ib3Q6aHVudGVyMg==".into();
        leaky.verification_command = Some("login -p hunter2".into());
        let redactor = Redactor::new(&["hunter2".into()], &["robot".into()]);

        let json = to_json(leaky, Duration::ZERO, &redactor);

        assert!(!json.contains("hunter2"), "{json}");
        assert!(!json.contains("cm9ib3Q6aHVudGVyMg=="), "{json}");
        assert!(json.contains("password *** rejected"), "{json}");
    }

    #[test]
    fn a_refused_origin_gets_a_step_naming_the_platform_policy_first() {
        let mut failed = result(Severity::Fail);
        failed.remediation.push(RemediationStep {
            title: "host step".into(),
            commands: Vec::new(),
        });

        add_platform_policy_step(&mut failed, &["https://auth.example:443".to_string()]);

        assert!(
            failed.remediation[0]
                .title
                .contains("allowed_outbound_hosts")
        );
        assert!(
            failed.remediation[0]
                .title
                .contains("`https://auth.example:443`")
        );
        assert_eq!(failed.remediation[1].title, "host step");
    }
}
