//! Running checks: selection, a fresh sandbox per run, deadlines, parallelism, and turning every
//! way a run can go wrong into a `fail` result for that check alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::config::{ConfigError, Settings};
use crate::contract;
use crate::engine::{DoctorEngine, WASM_STACK_BYTES};
use crate::limits::{HEADER_BYTES_KEY, LimitHit, Limits};
use crate::loader::{LoadedCheck, describe_error, is_interrupt};
use crate::model::{CheckMetadata, CheckResult};
use crate::policy::Allowlist;
use crate::redact::Redactor;
use crate::sandbox::{SandboxPolicy, SandboxState, ScopedConfig, count_limit_in};
use crate::tls::TlsSettings;

/// How checks are run.
#[derive(Clone)]
pub struct RunOptions {
    /// How many checks run at once.
    pub parallel: usize,
    /// The limits of every run, the deadline among them.
    pub limits: Limits,
    /// The certificate authorities outbound https trusts.
    pub tls: Arc<TlsSettings>,
}

impl RunOptions {
    /// Options from configuration: `Doctor:Limits:*`, `Doctor:Tls:*`, and 4 checks at once.
    ///
    /// Read once, before anything runs, so a bad value is a configuration error.
    pub fn from_settings(settings: &Settings) -> Result<RunOptions, ConfigError> {
        Ok(RunOptions {
            parallel: 4,
            limits: Limits::from_settings(settings)?,
            tls: Arc::new(TlsSettings::from_settings(settings)?),
        })
    }

    /// These options with the deadline an explicit option (`--timeout`) gave.
    pub fn with_timeout(mut self, timeout: Duration) -> RunOptions {
        self.limits = self.limits.with_timeout_flag(timeout);
        self
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
    let timeout = options.limits.timeout;
    let policy = SandboxPolicy {
        check_id: metadata.id.clone(),
        config: ScopedConfig::new(&metadata.id, &metadata.config_keys, settings),
        allowlist: Allowlist::for_check(metadata, settings),
        deadline: started + timeout,
        limits: options.limits.clone(),
        tls: options.tls.clone(),
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
            .map_err(|err| Failure::of_run(&err))
    };
    // Epoch interruption stops a check computing in WebAssembly; this timeout also covers time
    // it spends blocked in host calls such as a slow HTTP response.
    let outcome = tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(Failure::Deadline));

    let state = store.data();
    let output = state.output(redactor);
    let mut result = match outcome {
        Ok(result) => result,
        Err(failure) => {
            let diagnosis = failure.diagnosis(state, &options.limits, &output.1);
            // Converted into a `fail` result rather than propagated, so say so in the log.
            warn!(check = %metadata.id, diagnosis = %redactor.text(&diagnosis), "check did not return a result");
            CheckResult::host_failure(diagnosis)
        }
    };
    state.incidents().annotate(&mut result, &metadata.id);
    finish(check, result, started.elapsed(), output, redactor)
}

/// Why a run produced no result of its own.
enum Failure {
    /// The component could not be instantiated (for example: out of memory).
    Instantiate(String),
    /// `run()` trapped; a Rust panic traps too, after printing its message to stderr.
    Trap {
        /// The trap or its root cause.
        description: String,
        /// Which stack ran out, when the trap came from one.
        stack: Option<StackExhaustion>,
    },
    /// The run's deadline passed, in WebAssembly or in a host call.
    Deadline,
}

impl Failure {
    /// Classifies an error `run()` ended with.
    fn of_run(err: &wasmtime::Error) -> Failure {
        if is_interrupt(err) {
            return Failure::Deadline;
        }
        Failure::Trap {
            description: describe_error(err),
            stack: StackExhaustion::of(err),
        }
    }

    /// The operator-facing diagnosis: the limit that stopped the run when one did (recording it
    /// in `state`), else the panic message from stderr or the trap.
    fn diagnosis(&self, state: &SandboxState, limits: &Limits, stderr: &str) -> String {
        if let Some(hit) = self.limit_hit(state, limits) {
            let diagnosis = match self {
                Failure::Deadline => deadline_message(&hit, limits.timeout),
                _ => hit.diagnosis(),
            };
            state.record_limit(hit);
            return diagnosis;
        }
        match self {
            Failure::Instantiate(cause) => format!("check could not be instantiated: {cause}"),
            Failure::Deadline => unreachable!("a deadline is always a limit hit"),
            Failure::Trap {
                stack: Some(StackExhaustion::Native),
                ..
            } => format!(
                "check trapped with a stack overflow: it recursed deeper than the {} KiB WebAssembly stack the host allows",
                WASM_STACK_BYTES / 1024
            ),
            Failure::Trap {
                stack: Some(StackExhaustion::Shadow),
                description,
            } => format!(
                "check trapped with a stack overflow: deep recursion used up the stack it keeps in its own linear memory ({description})"
            ),
            Failure::Trap { description, .. } => match panic_message(stderr) {
                Some(panic) => format!("check trapped after a panic: {panic} ({description})"),
                None => format!("check trapped: {description}"),
            },
        }
    }

    /// The limit that ended the run, if one did: the deadline, a grow the limiter refused, a
    /// count limit instantiation reported, or the header size limit.
    fn limit_hit(&self, state: &SandboxState, limits: &Limits) -> Option<LimitHit> {
        let description = match self {
            Failure::Deadline => return Some(LimitHit::deadline(limits)),
            Failure::Instantiate(description) | Failure::Trap { description, .. } => description,
        };
        if let Some(hit) = state
            .incidents()
            .limits
            .into_iter()
            .find(LimitHit::is_fatal)
        {
            return Some(hit);
        }
        if let Some(key) = count_limit_in(description) {
            return Some(limits.hit(key));
        }
        // wasmtime-wasi-http traps a guest whose header fields outgrow the field size limit.
        description
            .contains("total size of fields exceeds limit")
            .then(|| limits.hit(HEADER_BYTES_KEY))
    }
}

/// Which stack a runaway recursion used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StackExhaustion {
    /// The native stack wasmtime gives WebAssembly: a `StackOverflow` trap.
    Native,
    /// The stack compilers such as LLVM keep in linear memory for locals that live in memory;
    /// running out of it wraps the stack pointer, so it shows as an out-of-bounds access.
    Shadow,
}

impl StackExhaustion {
    /// The stack a trap ran out of, if it ran out of one.
    ///
    /// A shadow stack overflow is recognised from the backtrace: an out-of-bounds access whose
    /// captured frames (wasmtime keeps the innermost 20) are nearly all one function.
    fn of(err: &wasmtime::Error) -> Option<StackExhaustion> {
        match err.downcast_ref::<wasmtime::Trap>()? {
            wasmtime::Trap::StackOverflow => Some(StackExhaustion::Native),
            wasmtime::Trap::MemoryOutOfBounds => {
                let frames = err.downcast_ref::<wasmtime::WasmBacktrace>()?.frames();
                let indices: Vec<u32> = frames.iter().map(|f| f.func_index()).collect();
                looks_recursive(&indices).then_some(StackExhaustion::Shadow)
            }
            _ => None,
        }
    }
}

/// True when a full-looking backtrace (16 frames or more) is at least three quarters one
/// function.
fn looks_recursive(func_indices: &[u32]) -> bool {
    let most = func_indices
        .iter()
        .map(|index| func_indices.iter().filter(|i| *i == index).count())
        .max()
        .unwrap_or(0);
    func_indices.len() >= 16 && most * 4 >= func_indices.len() * 3
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

/// Redacts and packages a result; the one place results pass before they are reported.
///
/// `stdout` and `stderr` come redacted already: only the sandbox knows where a limit cut them.
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
        stdout,
        stderr,
    }
}

/// "check exceeded its 30s deadline (set by `--timeout`)".
fn deadline_message(hit: &LimitHit, timeout: Duration) -> String {
    format!(
        "check exceeded its {} deadline (set by `{}`)",
        format_duration(timeout),
        hit.key
    )
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
    use crate::model::Severity;

    #[test]
    fn durations_format_like_the_option_accepts_them() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    fn sandbox(limits: &Limits) -> SandboxState {
        SandboxState::new(SandboxPolicy {
            check_id: "c".into(),
            config: ScopedConfig::empty("c"),
            allowlist: Allowlist::default(),
            deadline: Instant::now(),
            limits: limits.clone(),
            tls: Arc::new(TlsSettings::trusting_nothing().unwrap()),
        })
    }

    #[test]
    fn a_deadline_names_the_knob_that_set_it() {
        let limits = Limits::default();
        let state = sandbox(&limits);
        assert_eq!(
            Failure::Deadline.diagnosis(&state, &limits, ""),
            "check exceeded its 30s deadline (set by `Doctor:Limits:TimeoutSeconds`)"
        );
        let flagged = limits.with_timeout_flag(Duration::from_secs(3));
        assert_eq!(
            Failure::Deadline.diagnosis(&state, &flagged, ""),
            "check exceeded its 3s deadline (set by `--timeout`)"
        );
        let recorded: Vec<String> = state
            .incidents()
            .limits
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            recorded,
            ["Doctor:Limits:TimeoutSeconds=30", "--timeout=3s"]
        );
    }

    #[test]
    fn a_trap_after_a_refused_grow_names_the_memory_limit() {
        let limits = Limits::default();
        let state = sandbox(&limits);
        state.record_limit(limits.hit(crate::limits::MEMORY_KEY));
        let trap = Failure::Trap {
            description: "check exceeded its memory limit".into(),
            stack: None,
        };
        assert_eq!(
            trap.diagnosis(&state, &limits, ""),
            "check exceeded its memory limit (`Doctor:Limits:MemoryMiB` = 256); raise it only if the check legitimately needs more"
        );
    }

    #[test]
    fn count_limits_and_stack_overflow_are_named() {
        let limits = Limits::default();
        let state = sandbox(&limits);
        let instantiate =
            Failure::Instantiate("resource limit exceeded: instance count too high at 65".into());
        assert!(instantiate.diagnosis(&state, &limits, "").starts_with(
            "check exceeded its instance count limit (`Doctor:Limits:Instances` = 64)"
        ));
        let headers = Failure::Trap {
            description: "total size of fields exceeds limit".into(),
            stack: None,
        };
        assert!(headers.diagnosis(&state, &limits, "").starts_with(
            "check exceeded its header size limit (`Doctor:Limits:HeaderBytes` = 16384)"
        ));
        let overflow = Failure::Trap {
            description: "wasm trap: call stack exhausted".into(),
            stack: Some(StackExhaustion::Native),
        };
        assert_eq!(
            overflow.diagnosis(&state, &limits, ""),
            "check trapped with a stack overflow: it recursed deeper than the 512 KiB WebAssembly stack the host allows"
        );
        let shadow = Failure::Trap {
            description: "wasm trap: out of bounds memory access".into(),
            stack: Some(StackExhaustion::Shadow),
        };
        assert!(
            shadow
                .diagnosis(&state, &limits, "")
                .starts_with("check trapped with a stack overflow: deep recursion")
        );
    }

    #[test]
    fn a_backtrace_of_one_function_looks_recursive() {
        let mut frames = vec![7; 18];
        frames.extend([1, 2]);
        assert!(looks_recursive(&frames));
        assert!(!looks_recursive(&[7; 10]), "too shallow to tell");
        assert!(!looks_recursive(&(0..20).collect::<Vec<u32>>()));
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
        let limits = Limits::default();
        let state = sandbox(&limits);
        let stderr = "\nthread '<unnamed>' (1) panicked at src/lib.rs:98:24:\nboom on purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        let trap = Failure::Trap {
            description: "wasm trap: wasm `unreachable` instruction executed".into(),
            stack: None,
        };
        assert_eq!(
            trap.diagnosis(&state, &limits, stderr),
            "check trapped after a panic: boom on purpose (wasm trap: wasm `unreachable` instruction executed)"
        );
        assert_eq!(
            trap.diagnosis(&state, &limits, ""),
            "check trapped: wasm trap: wasm `unreachable` instruction executed"
        );
    }
}
