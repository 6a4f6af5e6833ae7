//! Running checks: selection, a fresh sandbox per run, deadlines, parallelism, and turning every
//! way a run can go wrong into a `fail` result for that check alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::config::{ConfigError, Settings};
use crate::contract;
use crate::engine::DoctorEngine;
use crate::loader::{LoadedCheck, describe_error, is_interrupt};
use crate::model::{CheckMetadata, CheckResult};
use crate::policy::{Allowlist, allowed_hosts_key};
use crate::redact::Redactor;
use crate::sandbox::{SandboxPolicy, ScopedConfig};

/// The configuration key capping each check's linear memory, in MiB.
pub const MEMORY_LIMIT_KEY: &str = "Doctor:Limits:MemoryMiB";

/// The memory cap when [`MEMORY_LIMIT_KEY`] is not set.
pub const DEFAULT_MEMORY_LIMIT_MIB: usize = 256;

/// How checks are run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The whole budget of one check: instantiation, `run()` and every host call it makes.
    pub timeout: Duration,
    /// How many checks run at once.
    pub parallel: usize,
    /// The most linear memory one check may use, in bytes.
    pub memory_limit: usize,
}

/// The memory cap configured under [`MEMORY_LIMIT_KEY`], in bytes.
pub fn memory_limit(settings: &Settings) -> Result<usize, ConfigError> {
    let Some(text) = settings.get(MEMORY_LIMIT_KEY) else {
        return Ok(DEFAULT_MEMORY_LIMIT_MIB * 1024 * 1024);
    };
    match text.trim().parse::<usize>() {
        Ok(mib) if (1..=65536).contains(&mib) => Ok(mib * 1024 * 1024),
        _ => Err(ConfigError::new(format!(
            "`{MEMORY_LIMIT_KEY}` must be a whole number of MiB between 1 and 65536, got {text:?}"
        ))),
    }
}

/// The outcome of one run of one check, redacted and ready to report.
#[derive(Debug, Clone)]
pub struct CheckRun {
    /// The check's identifier.
    pub check_id: String,
    /// The check's display name.
    pub name: String,
    /// The plugin that contributes it.
    pub plugin_id: String,
    /// The component file it came from.
    pub component: String,
    /// What it reported, or the host's `fail` result when it could not report.
    pub result: CheckResult,
    /// Wall time of the whole run.
    pub duration: Duration,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

/// Runs `checks` with at most `options.parallel` at once, returning results in the given order.
///
/// A check that traps, panics, overruns its deadline or fails to instantiate gets a `fail`
/// result; the other checks are unaffected.
pub async fn run_checks(
    engine: Arc<DoctorEngine>,
    checks: Vec<LoadedCheck>,
    settings: Arc<Settings>,
    redactor: Arc<Redactor>,
    options: RunOptions,
) -> Vec<CheckRun> {
    let permits = Arc::new(Semaphore::new(options.parallel.max(1)));
    let mut tasks = JoinSet::new();

    for (index, check) in checks.iter().cloned().enumerate() {
        let (engine, settings, redactor, options, permits) = (
            engine.clone(),
            settings.clone(),
            redactor.clone(),
            options.clone(),
            permits.clone(),
        );
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (
                index,
                run_one(&engine, &check, &settings, &redactor, &options).await,
            )
        });
    }

    let mut runs: Vec<Option<CheckRun>> = vec![None; checks.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, run)) => runs[index] = Some(run),
            // A panic in the host while running one check is reported for that check below.
            Err(err) => warn!(error = %err, "a check's task ended without a result"),
        }
    }

    runs.into_iter()
        .zip(&checks)
        .map(|(run, check)| {
            run.unwrap_or_else(|| {
                finish(
                    check,
                    CheckResult::host_failure("the host failed while running this check (internal panic); rerun with `--verbose` and report it"),
                    Duration::ZERO,
                    (String::new(), String::new()),
                    &redactor,
                )
            })
        })
        .collect()
}

/// Runs one check once, in a fresh sandbox.
async fn run_one(
    engine: &DoctorEngine,
    check: &LoadedCheck,
    settings: &Settings,
    redactor: &Redactor,
    options: &RunOptions,
) -> CheckRun {
    let metadata = &check.metadata;
    let started = Instant::now();
    let policy = SandboxPolicy {
        check_id: metadata.id.clone(),
        config: ScopedConfig::new(&metadata.id, &metadata.config_keys, settings),
        allowlist: Allowlist::for_check(metadata, settings),
        deadline: started + options.timeout,
        memory_limit: options.memory_limit,
    };
    debug!(check = %metadata.id, component = %check.component, allowed = ?policy.allowlist.origins().iter().map(ToString::to_string).collect::<Vec<_>>(), "running check");
    let mut store = engine.store(policy);

    let call = async {
        let instance = check
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|err| Failure::Instantiate(describe_error(&err)))?;
        contract::call_run(&instance, &mut store)
            .await
            .map_err(|err| {
                if is_interrupt(&err) {
                    Failure::Deadline
                } else {
                    Failure::Trap(describe_error(&err))
                }
            })
    };
    // Epoch interruption stops a check computing in WebAssembly; this timeout also covers time
    // it spends blocked in host calls such as a slow HTTP response.
    let outcome = tokio::time::timeout(options.timeout, call)
        .await
        .unwrap_or(Err(Failure::Deadline));

    let state = store.data();
    let output = state.output();
    let mut result = match outcome {
        Ok(result) => result,
        Err(failure) => {
            let diagnosis = failure.diagnosis(options.timeout, &output.1);
            // Converted into a `fail` result rather than propagated, so say so in the log.
            warn!(check = %metadata.id, diagnosis = %redactor.text(&diagnosis), "check did not return a result");
            CheckResult::host_failure(diagnosis)
        }
    };
    note_denials(&mut result, &metadata.id, state.denied_origins());
    finish(check, result, started.elapsed(), output, redactor)
}

/// Why a run produced no result of its own.
enum Failure {
    /// The component could not be instantiated (for example: out of memory).
    Instantiate(String),
    /// `run()` trapped; a Rust panic traps too, after printing its message to stderr.
    Trap(String),
    /// The run's deadline passed, in WebAssembly or in a host call.
    Deadline,
}

impl Failure {
    /// The operator-facing diagnosis, using the panic message from stderr when there is one.
    fn diagnosis(&self, timeout: Duration, stderr: &str) -> String {
        let diagnosis = match self {
            Failure::Instantiate(cause) => format!("check could not be instantiated: {cause}"),
            Failure::Deadline => return deadline_message(timeout),
            Failure::Trap(trap) => match panic_message(stderr) {
                Some(panic) => format!("check trapped after a panic: {panic} ({trap})"),
                None => format!("check trapped: {trap}"),
            },
        };
        if diagnosis.contains("growing memory") {
            format!(
                "{diagnosis}; the check hit its memory cap, raise `{MEMORY_LIMIT_KEY}` if it legitimately needs more"
            )
        } else {
            diagnosis
        }
    }
}

/// The message of a Rust panic as the standard library prints it to stderr:
/// `thread '…' panicked at FILE:LINE:COL:` followed by the message lines.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr
        .lines()
        .skip_while(|line| !line.contains("panicked at "));
    lines.next()?;
    let message: Vec<&str> = lines
        .take_while(|line| !line.starts_with("note: "))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    (!message.is_empty()).then(|| message.join(" "))
}

/// Adds the denied origins to the evidence and, unless the check already says how, tells the
/// operator where to allow them.
fn note_denials(result: &mut CheckResult, check_id: &str, denied: &[crate::policy::Origin]) {
    if denied.is_empty() {
        return;
    }
    let origins = denied
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    result.evidence.push(
        "denied_outbound",
        denied
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    if !result.diagnosis.contains("AllowedHosts") {
        result.diagnosis.push_str(&format!(
            " (the host denied {origins}; allow it with `{}`)",
            allowed_hosts_key(check_id)
        ));
    }
}

/// Redacts and packages a result; the one place results pass before they are reported.
fn finish(
    check: &LoadedCheck,
    mut result: CheckResult,
    duration: Duration,
    (stdout, stderr): (String, String),
    redactor: &Redactor,
) -> CheckRun {
    redactor.result(&mut result);
    CheckRun {
        check_id: check.metadata.id.clone(),
        name: check.metadata.name.clone(),
        plugin_id: check.metadata.plugin_id.clone(),
        component: check.component.clone(),
        result,
        duration,
        stdout: redactor.text(&stdout),
        stderr: redactor.text(&stderr),
    }
}

fn deadline_message(timeout: Duration) -> String {
    format!("check exceeded its {} deadline", format_duration(timeout))
}

/// Formats a duration the way `--timeout` accepts it: `500ms`, `30s`, `2m`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        format!("{millis}ms")
    } else if millis >= 60_000 && millis.is_multiple_of(60_000) {
        format!("{}m", millis / 60_000)
    } else {
        format!("{}s", millis / 1000)
    }
}

/// Which loaded checks a `run` selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--check` ids; empty means any.
    pub checks: Vec<String>,
    /// `--tag` values; a check matches when it has any of them. Empty means any.
    pub tags: Vec<String>,
    /// `--plugin` id; `None` means any.
    pub plugin: Option<String>,
}

impl Selection {
    /// The checks that match every given filter, in load order.
    ///
    /// Fails when the selection is empty, or when a `--check` id names no loaded check (a typo
    /// should not silently run fewer checks); the message lists the ids available.
    pub fn apply(&self, checks: &[LoadedCheck]) -> Result<Vec<LoadedCheck>, String> {
        let metadata: Vec<&CheckMetadata> = checks.iter().map(|c| &c.metadata).collect();
        let indices = self.select(&metadata)?;
        Ok(indices.into_iter().map(|i| checks[i].clone()).collect())
    }

    /// The indices of the matching checks; see [`Selection::apply`].
    pub fn select(&self, checks: &[&CheckMetadata]) -> Result<Vec<usize>, String> {
        let available = || {
            let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
            if ids.is_empty() {
                "no checks are loaded".to_string()
            } else {
                format!("available checks: {}", ids.join(", "))
            }
        };

        if let Some(unknown) = self
            .checks
            .iter()
            .find(|id| !checks.iter().any(|c| c.id.eq_ignore_ascii_case(id)))
        {
            return Err(format!(
                "no loaded check matches `--check {unknown}`; {}",
                available()
            ));
        }

        let selected: Vec<usize> = (0..checks.len())
            .filter(|&i| self.matches(checks[i]))
            .collect();
        if selected.is_empty() {
            return Err(format!(
                "no loaded check matches the selection{}; {}",
                self.describe(),
                available()
            ));
        }
        Ok(selected)
    }

    fn matches(&self, metadata: &CheckMetadata) -> bool {
        let id_ok = self.checks.is_empty()
            || self
                .checks
                .iter()
                .any(|id| id.eq_ignore_ascii_case(&metadata.id));
        let tag_ok = self.tags.is_empty()
            || self
                .tags
                .iter()
                .any(|tag| metadata.tags.iter().any(|t| t.eq_ignore_ascii_case(tag)));
        let plugin_ok = self
            .plugin
            .as_ref()
            .is_none_or(|plugin| plugin.eq_ignore_ascii_case(&metadata.plugin_id));
        id_ok && tag_ok && plugin_ok
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.checks.iter().map(|c| format!("--check {c}")));
        parts.extend(self.tags.iter().map(|t| format!("--tag {t}")));
        parts.extend(self.plugin.iter().map(|p| format!("--plugin {p}")));
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Evidence, Severity};

    #[test]
    fn durations_format_like_the_option_accepts_them() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(
            deadline_message(Duration::from_secs(30)),
            "check exceeded its 30s deadline"
        );
    }

    #[test]
    fn denials_become_evidence_and_a_hint() {
        let mut result = CheckResult {
            severity: Severity::Fail,
            diagnosis: "cannot reach the token service.".into(),
            evidence: Evidence::default(),
            likely_causes: vec![],
            remediation: vec![],
            verification_command: None,
        };
        let denied = [
            crate::policy::Origin::parse("https://auth.example").unwrap(),
            crate::policy::Origin::parse("http://10.0.0.1:8080").unwrap(),
        ];

        note_denials(&mut result, "check.a", &denied);

        assert_eq!(
            result.evidence.0,
            vec![(
                "denied_outbound".to_string(),
                "https://auth.example,http://10.0.0.1:8080".to_string()
            )]
        );
        assert_eq!(
            result.diagnosis,
            "cannot reach the token service. (the host denied https://auth.example, http://10.0.0.1:8080; allow it with `Doctor:Plugins:check.a:AllowedHosts`)"
        );
    }

    #[test]
    fn a_diagnosis_that_already_names_allowed_hosts_is_left_alone() {
        let mut result = CheckResult::host_failure("add it to Doctor:Plugins:check.a:AllowedHosts");
        let denied = [crate::policy::Origin::parse("https://x").unwrap()];
        note_denials(&mut result, "check.a", &denied);
        assert_eq!(
            result.diagnosis,
            "add it to Doctor:Plugins:check.a:AllowedHosts"
        );
        assert_eq!(result.evidence.0.len(), 1);
    }

    fn metadata(id: &str, tags: &[&str], plugin: &str) -> CheckMetadata {
        CheckMetadata {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            plugin_id: plugin.into(),
            default_severity: Severity::Fail,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            estimated_duration_ms: 0,
            config_keys: vec![],
            outbound_hosts: vec![],
            related_checks: vec![],
        }
    }

    #[test]
    fn selection_combines_check_tag_and_plugin_filters() {
        let a = metadata("check.a", &["oci", "push"], "p1");
        let b = metadata("check.b", &["oci"], "p2");
        let c = metadata("check.c", &["db"], "p1");
        let all = [&a, &b, &c];

        assert_eq!(Selection::default().select(&all), Ok(vec![0, 1, 2]));
        let by_tag = Selection {
            tags: vec!["OCI".into()],
            ..Default::default()
        };
        assert_eq!(by_tag.select(&all), Ok(vec![0, 1]));
        let by_tag_and_plugin = Selection {
            tags: vec!["oci".into()],
            plugin: Some("p1".into()),
            ..Default::default()
        };
        assert_eq!(by_tag_and_plugin.select(&all), Ok(vec![0]));
        let by_id = Selection {
            checks: vec!["check.c".into(), "check.b".into()],
            ..Default::default()
        };
        assert_eq!(by_id.select(&all), Ok(vec![1, 2]));
    }

    #[test]
    fn selecting_an_unknown_check_names_the_available_ones() {
        let a = metadata("check.a", &[], "p1");
        let err = Selection {
            checks: vec!["nope".into()],
            ..Default::default()
        }
        .select(&[&a])
        .unwrap_err();
        assert_eq!(
            err,
            "no loaded check matches `--check nope`; available checks: check.a"
        );

        let err = Selection {
            tags: vec!["db".into()],
            ..Default::default()
        }
        .select(&[&a])
        .unwrap_err();
        assert!(
            err.starts_with("no loaded check matches the selection (--tag db)"),
            "{err}"
        );
    }

    #[test]
    fn a_panic_message_on_stderr_names_the_trap() {
        let stderr = "\nthread '<unnamed>' (1) panicked at src/lib.rs:98:24:\nboom on purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        let trap = Failure::Trap("wasm trap: wasm `unreachable` instruction executed".into());
        assert_eq!(
            trap.diagnosis(Duration::from_secs(30), stderr),
            "check trapped after a panic: boom on purpose (wasm trap: wasm `unreachable` instruction executed)"
        );
        assert_eq!(
            trap.diagnosis(Duration::from_secs(30), ""),
            "check trapped: wasm trap: wasm `unreachable` instruction executed"
        );
        assert_eq!(
            Failure::Deadline.diagnosis(Duration::from_secs(30), stderr),
            "check exceeded its 30s deadline"
        );
    }

    #[test]
    fn memory_limit_defaults_and_validates() {
        let mut settings = Settings::default();
        assert_eq!(memory_limit(&settings), Ok(256 * 1024 * 1024));
        settings.set("doctor:limits:memorymib", "64");
        assert_eq!(memory_limit(&settings), Ok(64 * 1024 * 1024));
        settings.set("Doctor:Limits:MemoryMiB", "lots");
        assert!(memory_limit(&settings).is_err());
    }
}
