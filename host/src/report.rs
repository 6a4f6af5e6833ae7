//! Output: text for people, JSON for machines, markdown for reports.
//!
//! Everything reaching this module is already redacted (see [`crate::runner`]); formatting
//! never sees a secret. The JSON shapes are a stable interface: fields are only ever added.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::loader::{ImportInfo, Inspection, LoadError, LoadedCheck};
use crate::model::{CheckMetadata, Evidence, RemediationStep, Severity};
use crate::runner::CheckRun;

/// What a `run` produced.
pub struct RunReport<'a> {
    /// One entry per check run, in selection order.
    pub runs: &'a [CheckRun],
    /// Component files that did not load.
    pub errors: &'a [LoadError],
    /// Wall time of all runs together.
    pub duration: Duration,
    /// Which component versions produced the results: `serve` names them, the CLI does not.
    pub provenance: Option<Provenance>,
}

/// Which version of each component produced a run's results, and which snapshot of the plugins
/// folder the run used.
pub struct Provenance {
    /// The snapshot's generation.
    pub generation: u64,
    /// For result `i`: the sha256 digest of the component that produced it, and its revision
    /// (how many versions of that file have served, this one included).
    pub versions: Vec<(String, u64)>,
}

/// Counts of results by severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Number of checks run.
    pub total: usize,
    /// Checks that passed.
    pub pass: usize,
    /// Checks that reported info.
    pub info: usize,
    /// Checks that warned.
    pub warn: usize,
    /// Checks that failed.
    pub fail: usize,
    /// Checks that did not apply.
    pub skip: usize,
    /// Wall time of the whole run.
    pub duration_ms: u64,
}

impl Summary {
    /// Counts the runs by severity.
    pub fn of(runs: &[CheckRun], duration: Duration) -> Summary {
        let mut summary = Summary {
            total: runs.len(),
            duration_ms: millis(duration),
            ..Summary::default()
        };
        for run in runs {
            match run.result.severity {
                Severity::Pass => summary.pass += 1,
                Severity::Info => summary.info += 1,
                Severity::Warn => summary.warn += 1,
                Severity::Fail => summary.fail += 1,
                Severity::Skip => summary.skip += 1,
            }
        }
        summary
    }

    /// `1 check`, `3 checks`.
    fn checks_label(&self) -> String {
        match self.total {
            1 => "1 check".to_string(),
            n => format!("{n} checks"),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Captured guest output, in JSON only with `--verbose`.
#[derive(Serialize)]
struct JsonOutput<'a> {
    stdout: &'a str,
    stderr: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResult<'a> {
    check_id: &'a str,
    name: &'a str,
    plugin: &'a str,
    severity: Severity,
    diagnosis: &'a str,
    evidence: &'a Evidence,
    likely_causes: &'a [String],
    remediation: &'a [RemediationStep],
    verification_command: Option<&'a str>,
    duration_ms: u64,
    component: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<JsonOutput<'a>>,
}

#[derive(Serialize)]
struct JsonRunReport<'a> {
    results: Vec<JsonResult<'a>>,
    summary: Summary,
    errors: &'a [LoadError],
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
}

/// The run report as pretty JSON.
///
/// Shape: `{"results":[{checkId, name, plugin, severity, diagnosis, evidence{…in order…},
/// likelyCauses, remediation[{title, commands}], verificationCommand, durationMs, component,
/// output?{stdout, stderr}}], "summary":{total, pass, info, warn, fail, skip, durationMs},
/// "errors":[{file, error}]}`; `output` appears only with `--verbose`. With a [`Provenance`],
/// each result also has `digest` and `revision`, and the report a `generation`.
pub fn run_json(report: &RunReport<'_>, verbose: bool) -> String {
    let version = |index: usize| {
        report
            .provenance
            .as_ref()
            .and_then(|provenance| provenance.versions.get(index))
    };
    let results = report
        .runs
        .iter()
        .enumerate()
        .map(|(index, run)| JsonResult {
            check_id: &run.check_id,
            name: &run.name,
            plugin: &run.plugin_id,
            severity: run.result.severity,
            diagnosis: &run.result.diagnosis,
            evidence: &run.result.evidence,
            likely_causes: &run.result.likely_causes,
            remediation: &run.result.remediation,
            verification_command: run.result.verification_command.as_deref(),
            duration_ms: millis(run.duration),
            component: &run.component,
            digest: version(index).map(|(digest, _)| digest.as_str()),
            revision: version(index).map(|(_, revision)| *revision),
            output: verbose.then_some(JsonOutput {
                stdout: &run.stdout,
                stderr: &run.stderr,
            }),
        })
        .collect();
    let json = JsonRunReport {
        results,
        summary: Summary::of(report.runs, report.duration),
        errors: report.errors,
        generation: report.provenance.as_ref().map(|p| p.generation),
    };
    to_pretty_json(&json)
}

fn to_pretty_json(value: &impl Serialize) -> String {
    // Serialising these plain structs cannot fail: every map key is a string.
    let mut text = serde_json::to_string_pretty(value)
        .unwrap_or_else(|err| format!("{{\"error\":\"cannot serialise the report: {err}\"}}"));
    text.push('\n');
    text
}

/// Terminal colours, used only when stdout is a terminal and `NO_COLOR` is unset.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colours on or off.
    pub fn new(color: bool) -> Self {
        Style { color }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn severity(self, severity: Severity) -> String {
        let label = format!("[{}]", severity.as_str().to_uppercase());
        let code = match severity {
            Severity::Pass => "32",
            Severity::Info => "36",
            Severity::Warn => "33",
            Severity::Fail => "1;31",
            Severity::Skip => "90",
        };
        self.paint(code, &label)
    }

    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// The run report for people.
pub fn run_text(report: &RunReport<'_>, verbose: bool, style: Style) -> String {
    let mut out = String::new();

    for run in report.runs {
        let result = &run.result;
        let _ = writeln!(
            out,
            "{} {} {}",
            style.severity(result.severity),
            style.bold(&run.check_id),
            style.dim(&format!("({})", run.name))
        );
        let _ = writeln!(out, "  {}", result.diagnosis);

        if !result.evidence.is_empty() {
            let _ = writeln!(out, "  Evidence:");
            for (key, value) in result.evidence.iter() {
                let _ = writeln!(out, "    {key}: {value}");
            }
        }
        if !result.likely_causes.is_empty() {
            let _ = writeln!(out, "  Likely causes:");
            for (n, cause) in result.likely_causes.iter().enumerate() {
                let _ = writeln!(out, "    {}. {cause}", n + 1);
            }
        }
        if !result.remediation.is_empty() {
            let _ = writeln!(out, "  Remediation:");
            for step in &result.remediation {
                let _ = writeln!(out, "    {}", step.title);
                for command in &step.commands {
                    let _ = writeln!(out, "      $ {command}");
                }
            }
        }
        if let Some(command) = &result.verification_command {
            let _ = writeln!(out, "  Verify: {command}");
        }
        if verbose {
            let _ = writeln!(
                out,
                "  {}",
                style.dim(&format!(
                    "{} ms, component {}",
                    millis(run.duration),
                    run.component
                ))
            );
            write_captured(&mut out, "stdout", &run.stdout);
            write_captured(&mut out, "stderr", &run.stderr);
        }
        out.push('\n');
    }

    let summary = Summary::of(report.runs, report.duration);
    let _ = writeln!(
        out,
        "{}: {} pass, {} info, {} warn, {} fail, {} skip ({} ms)",
        summary.checks_label(),
        summary.pass,
        summary.info,
        summary.warn,
        summary.fail,
        summary.skip,
        summary.duration_ms
    );
    out
}

fn write_captured(out: &mut String, stream: &str, text: &str) {
    if text.trim().is_empty() {
        return;
    }
    let _ = writeln!(out, "  {stream}:");
    for line in text.lines() {
        let _ = writeln!(out, "    | {line}");
    }
}

/// The run report as markdown, for pasting into tickets and runbooks.
pub fn run_markdown(report: &RunReport<'_>, verbose: bool) -> String {
    let mut out = String::new();
    let summary = Summary::of(report.runs, report.duration);
    let _ = writeln!(out, "# Stella Ops doctor report\n");
    let _ = writeln!(
        out,
        "{}: {} pass, {} info, {} warn, {} fail, {} skip ({} ms).\n",
        summary.checks_label(),
        summary.pass,
        summary.info,
        summary.warn,
        summary.fail,
        summary.skip,
        summary.duration_ms
    );

    let _ = writeln!(out, "| Severity | Check | Diagnosis |");
    let _ = writeln!(out, "|---|---|---|");
    for run in report.runs {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} |",
            run.result.severity,
            run.check_id,
            cell(&run.result.diagnosis)
        );
    }

    for run in report.runs {
        let result = &run.result;
        let _ = writeln!(
            out,
            "\n## {} `{}`: {}\n",
            result.severity.as_str().to_uppercase(),
            run.check_id,
            run.name
        );
        let _ = writeln!(out, "{}\n", result.diagnosis);

        if !result.evidence.is_empty() {
            let _ = writeln!(out, "**Evidence**\n\n| Key | Value |\n|---|---|");
            for (key, value) in result.evidence.iter() {
                let _ = writeln!(out, "| `{}` | {} |", cell(key), cell(value));
            }
            out.push('\n');
        }
        if !result.likely_causes.is_empty() {
            let _ = writeln!(out, "**Likely causes**\n");
            for (n, cause) in result.likely_causes.iter().enumerate() {
                let _ = writeln!(out, "{}. {cause}", n + 1);
            }
            out.push('\n');
        }
        if !result.remediation.is_empty() {
            let _ = writeln!(out, "**Remediation**\n");
            for step in &result.remediation {
                let _ = writeln!(out, "- {}", step.title);
                if !step.commands.is_empty() {
                    let _ = writeln!(out, "\n  ```sh");
                    for command in &step.commands {
                        let _ = writeln!(out, "  {command}");
                    }
                    let _ = writeln!(out, "  ```\n");
                }
            }
            out.push('\n');
        }
        if let Some(command) = &result.verification_command {
            let _ = writeln!(out, "**Verify:** `{command}`\n");
        }
        let _ = writeln!(
            out,
            "_{} ms, component `{}`_",
            millis(run.duration),
            run.component
        );
        if verbose {
            for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                if !text.trim().is_empty() {
                    let _ = writeln!(
                        out,
                        "\n<details><summary>{stream}</summary>\n\n```text\n{}\n```\n</details>",
                        text.trim_end()
                    );
                }
            }
        }
    }

    if !report.errors.is_empty() {
        let _ = writeln!(out, "\n## Components that did not load\n");
        for error in report.errors {
            let _ = writeln!(out, "- `{}`: {}", error.file, error.error);
        }
    }
    out
}

/// Makes text safe inside a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', "<br>")
}

#[derive(Serialize)]
struct JsonListedCheck<'a> {
    #[serde(flatten)]
    metadata: &'a CheckMetadata,
    component: &'a str,
    digest: &'a str,
}

#[derive(Serialize)]
struct JsonList<'a> {
    checks: Vec<JsonListedCheck<'a>>,
    errors: &'a [LoadError],
}

/// `list --format json`: `{"checks":[{…metadata…, component, digest}], "errors":[{file, error}]}`.
pub fn list_json(checks: &[LoadedCheck], errors: &[LoadError]) -> String {
    let checks = checks
        .iter()
        .map(|check| JsonListedCheck {
            metadata: &check.metadata,
            component: &check.component,
            digest: &check.digest,
        })
        .collect();
    to_pretty_json(&JsonList { checks, errors })
}

/// `list --format table`: one row per check.
pub fn list_table(checks: &[LoadedCheck]) -> String {
    let header = ["ID", "NAME", "SEVERITY", "TAGS", "COMPONENT"];
    let rows: Vec<[String; 5]> = checks
        .iter()
        .map(|c| {
            [
                c.metadata.id.clone(),
                c.metadata.name.clone(),
                c.metadata.default_severity.to_string(),
                c.metadata.tags.join(","),
                c.component.clone(),
            ]
        })
        .collect();

    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }

    let mut out = String::new();
    let mut line = |values: [&str; 5]| {
        let cells: Vec<String> = values
            .iter()
            .zip(widths)
            .map(|(value, width)| format!("{value:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    if rows.is_empty() {
        out.push_str("(no checks loaded)\n");
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonInspection<'a> {
    file: &'a str,
    kind: &'a str,
    digest: Option<&'a str>,
    exports: &'a [String],
    contract_version: Option<&'a str>,
    world: Option<&'a str>,
    imports: &'a [ImportInfo],
    metadata: Option<&'a CheckMetadata>,
    loadable: bool,
    problems: &'a [String],
}

/// `inspect --format json`: what the host found in one file and whether it would load.
pub fn inspect_json(inspection: &Inspection) -> String {
    to_pretty_json(&JsonInspection {
        file: &inspection.file,
        kind: inspection.kind,
        digest: inspection.digest.as_deref(),
        exports: &inspection.exports,
        contract_version: inspection.contract_version.as_deref(),
        world: inspection.world.as_deref(),
        imports: &inspection.imports,
        metadata: inspection.metadata.as_ref(),
        loadable: inspection.problems.is_empty(),
        problems: &inspection.problems,
    })
}

/// `inspect --format text`.
pub fn inspect_text(inspection: &Inspection) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "file:      {}", inspection.file);
    let _ = writeln!(out, "kind:      {}", inspection.kind);
    if let Some(digest) = &inspection.digest {
        let _ = writeln!(out, "sha256:    {digest}");
    }
    let _ = writeln!(
        out,
        "contract:  {}",
        inspection.contract_version.as_deref().map_or(
            "none (does not export stellaops:doctor/check)".to_string(),
            |v| { format!("stellaops:doctor/check@{v}") }
        )
    );
    let _ = writeln!(
        out,
        "world:     {}",
        inspection
            .world
            .as_deref()
            .unwrap_or("does not fit stellaops:doctor/doctor-check (see status)")
    );
    if !inspection.exports.is_empty() {
        let _ = writeln!(out, "exports:");
        for export in &inspection.exports {
            let _ = writeln!(out, "  {export}");
        }
    }
    if !inspection.imports.is_empty() {
        let _ = writeln!(out, "imports:");
        for import in &inspection.imports {
            let verdict = if import.allowed { "ok    " } else { "DENIED" };
            let _ = writeln!(out, "  {verdict} {}", import.name);
        }
    }
    if let Some(m) = &inspection.metadata {
        let _ = writeln!(out, "metadata:");
        let _ = writeln!(out, "  id:               {}", m.id);
        let _ = writeln!(out, "  name:             {}", m.name);
        let _ = writeln!(out, "  description:      {}", m.description);
        let _ = writeln!(out, "  plugin:           {}", m.plugin_id);
        let _ = writeln!(out, "  default severity: {}", m.default_severity);
        let _ = writeln!(out, "  tags:             {}", m.tags.join(", "));
        let _ = writeln!(out, "  estimated:        {} ms", m.estimated_duration_ms);
        let _ = writeln!(out, "  outbound hosts:   {}", m.outbound_hosts.join(", "));
        let _ = writeln!(out, "  related checks:   {}", m.related_checks.join(", "));
        if !m.config_keys.is_empty() {
            let _ = writeln!(out, "  config keys:");
            for key in &m.config_keys {
                let secret = if key.secret { " (secret)" } else { "" };
                let _ = writeln!(out, "    {}{secret}: {}", key.name, key.description);
            }
        }
    }
    if inspection.problems.is_empty() {
        let _ = writeln!(out, "status:    loads");
    } else {
        let _ = writeln!(out, "status:    does not load");
        for problem in &inspection.problems {
            let _ = writeln!(out, "  - {} {problem}", inspection.file);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CheckResult;

    fn sample_run() -> CheckRun {
        let mut evidence = Evidence::default();
        evidence.push("registry_url", "http://127.0.0.1:5000");
        evidence.push("status_code", "401");
        CheckRun {
            check_id: "check.integration.oci.push".into(),
            name: "OCI registry push".into(),
            plugin_id: "stellaops.doctor.integration".into(),
            component: "oci_push_check.wasm".into(),
            result: CheckResult {
                severity: Severity::Fail,
                diagnosis: "The registry rejected the credentials.".into(),
                evidence,
                likely_causes: vec!["wrong password".into()],
                remediation: vec![RemediationStep {
                    title: "Reset the password".into(),
                    commands: vec!["htpasswd -B auth/htpasswd stella".into()],
                }],
                verification_command: Some(
                    "stella-doctor run --check check.integration.oci.push".into(),
                ),
            },
            duration: Duration::from_millis(42),
            stdout: "hello\n".into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn run_json_has_the_documented_schema() {
        let runs = [sample_run()];
        let errors = [LoadError {
            file: "bad.wasm".into(),
            error: "is a core WebAssembly module, not a component".into(),
        }];
        let report = RunReport {
            runs: &runs,
            errors: &errors,
            duration: Duration::from_millis(50),
            provenance: None,
        };

        let expected = r#"{
  "results": [
    {
      "checkId": "check.integration.oci.push",
      "name": "OCI registry push",
      "plugin": "stellaops.doctor.integration",
      "severity": "fail",
      "diagnosis": "The registry rejected the credentials.",
      "evidence": {
        "registry_url": "http://127.0.0.1:5000",
        "status_code": "401"
      },
      "likelyCauses": [
        "wrong password"
      ],
      "remediation": [
        {
          "title": "Reset the password",
          "commands": [
            "htpasswd -B auth/htpasswd stella"
          ]
        }
      ],
      "verificationCommand": "stella-doctor run --check check.integration.oci.push",
      "durationMs": 42,
      "component": "oci_push_check.wasm"
    }
  ],
  "summary": {
    "total": 1,
    "pass": 0,
    "info": 0,
    "warn": 0,
    "fail": 1,
    "skip": 0,
    "durationMs": 50
  },
  "errors": [
    {
      "file": "bad.wasm",
      "error": "is a core WebAssembly module, not a component"
    }
  ]
}
"#;
        assert_eq!(run_json(&report, false), expected);
    }

    #[test]
    fn provenance_names_versions_and_keeps_the_evidence_order() {
        let mut run = sample_run();
        // Out of alphabetical order on purpose: the report must keep the check's order.
        run.result.evidence.push("auth_method", "basic");
        let runs = [run];
        let report = RunReport {
            runs: &runs,
            errors: &[],
            duration: Duration::ZERO,
            provenance: Some(Provenance {
                generation: 7,
                versions: vec![("ab12".into(), 3)],
            }),
        };
        let text = run_json(&report, false);

        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["results"][0]["digest"], "ab12");
        assert_eq!(value["results"][0]["revision"], 3);
        assert_eq!(value["generation"], 7);
        let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap();
        assert!(at("registry_url") < at("status_code") && at("status_code") < at("auth_method"));
    }

    #[test]
    fn run_json_includes_output_only_when_verbose() {
        let runs = [sample_run()];
        let report = RunReport {
            runs: &runs,
            errors: &[],
            duration: Duration::ZERO,
            provenance: None,
        };
        let verbose: serde_json::Value = serde_json::from_str(&run_json(&report, true)).unwrap();
        assert_eq!(verbose["results"][0]["output"]["stdout"], "hello\n");
        let quiet: serde_json::Value = serde_json::from_str(&run_json(&report, false)).unwrap();
        assert!(quiet["results"][0].get("output").is_none());
    }

    #[test]
    fn text_shows_every_part_without_colour_codes() {
        let runs = [sample_run()];
        let report = RunReport {
            runs: &runs,
            errors: &[],
            duration: Duration::from_millis(50),
            provenance: None,
        };
        let text = run_text(&report, false, Style::new(false));

        assert!(text.starts_with("[FAIL] check.integration.oci.push (OCI registry push)\n"));
        assert!(text.contains("    status_code: 401\n"));
        assert!(text.contains("    1. wrong password\n"));
        assert!(text.contains("      $ htpasswd -B auth/htpasswd stella\n"));
        assert!(text.contains("  Verify: stella-doctor run --check check.integration.oci.push\n"));
        assert!(text.contains("1 check: 0 pass, 0 info, 0 warn, 1 fail, 0 skip"));
        assert!(!text.contains('\x1b'));
        assert!(!text.contains("hello"), "output only with --verbose");
        assert!(run_text(&report, true, Style::new(false)).contains("    | hello\n"));
    }

    #[test]
    fn markdown_escapes_table_cells() {
        let mut run = sample_run();
        run.result.diagnosis = "a | b".into();
        let runs = [run];
        let report = RunReport {
            runs: &runs,
            errors: &[],
            duration: Duration::ZERO,
            provenance: None,
        };
        let md = run_markdown(&report, false);
        assert!(md.contains("| fail | `check.integration.oci.push` | a \\| b |"));
        assert!(md.contains("## FAIL `check.integration.oci.push`: OCI registry push"));
    }
}
