//! What a check can reach while it runs: the per-run store state and the linker that exposes it.
//!
//! Every run gets a fresh [`SandboxState`]: no preopened directories, no environment variables,
//! no arguments, an empty stdin, no sockets (every address denied, no name lookup), bounded
//! captured stdout/stderr, only its declared configuration keys through `wasi:config/store`, and
//! outbound HTTP only to its allowlisted origins through [`OutboundHooks`].

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::AsyncWrite;
use tracing::{debug, warn};
use wasmtime::ResourceLimiter;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::Settings;
use crate::contract::config_store;
use crate::incidents::{Incidents, Recorded};
use crate::limits::{
    INSTANCES_KEY, LimitHit, Limits, MEMORIES_KEY, MEMORY_KEY, OUTPUT_KEY, TABLE_ELEMENTS_KEY,
    TABLES_KEY, to_usize,
};
use crate::model::ConfigKey;
use crate::outbound::{OutboundHooks, OutboundPolicy};
use crate::policy::Allowlist;
use crate::redact::Redactor;
use crate::tls::TlsSettings;

/// Everything the host gives one run of one check.
pub struct SandboxState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    config: ScopedConfig,
    limiter: SandboxLimiter,
    incidents: Incidents,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

/// What a run may do, decided before it starts.
#[derive(Clone)]
pub struct SandboxPolicy {
    /// The check's identifier, for logs and denials.
    pub check_id: String,
    /// The configuration keys the check declared, with their values where set.
    pub config: ScopedConfig,
    /// The origins the check may reach.
    pub allowlist: Allowlist,
    /// When the run must be over; outbound timeouts are clamped to it.
    pub deadline: Instant,
    /// Memory, table, instance, HTTP and output limits.
    pub limits: Limits,
    /// The certificate authorities outbound https trusts.
    pub tls: Arc<TlsSettings>,
}

impl SandboxState {
    /// A fresh, empty sandbox for one run.
    pub fn new(policy: SandboxPolicy) -> Self {
        let incidents = Incidents::default();
        let output_bytes = to_usize(policy.limits.output_bytes);
        let stdout = CapturedOutput::new(output_bytes);
        let stderr = CapturedOutput::new(output_bytes);

        // The builder's defaults already give no preopens, no env, no args and a closed stdin;
        // sockets are switched off explicitly so a later default change cannot open them.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();

        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(to_usize(policy.limits.header_bytes));

        SandboxState {
            wasi,
            http,
            table: ResourceTable::new(),
            hooks: OutboundHooks::new(OutboundPolicy {
                check_id: policy.check_id.clone(),
                allowlist: policy.allowlist,
                deadline: policy.deadline,
                tls: policy.tls,
                limits: policy.limits.clone(),
                incidents: incidents.clone(),
            }),
            config: policy.config,
            limiter: SandboxLimiter {
                check_id: policy.check_id,
                limits: policy.limits,
                incidents: incidents.clone(),
            },
            incidents,
            stdout,
            stderr,
        }
    }

    /// The store limiter, for [`wasmtime::Store::limiter`].
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Records a limit the host noticed from outside the sandbox (the deadline, a count limit
    /// reported by instantiation).
    pub fn record_limit(&self, hit: LimitHit) {
        self.incidents.limit(hit);
    }

    /// Everything the host recorded during this run, including truncated output.
    pub fn incidents(&self) -> Recorded {
        if self.stdout.truncated() || self.stderr.truncated() {
            self.incidents.limit(self.limiter.limits.hit(OUTPUT_KEY));
        }
        self.incidents.snapshot()
    }

    /// What the check wrote to stdout and stderr, lossily decoded, with `redactor`'s secrets
    /// masked.
    pub fn output(&self, redactor: &Redactor) -> (String, String) {
        (self.stdout.text(redactor), self.stderr.text(redactor))
    }
}

/// Caps memories and tables, and records which cap a run hit before trapping it.
///
/// Refusing a grow with a trap, rather than letting `memory.grow` return -1, turns a check that
/// runs out of memory into a `fail` that names the limit instead of an allocator abort.
struct SandboxLimiter {
    check_id: String,
    limits: Limits,
    incidents: Incidents,
}

impl SandboxLimiter {
    fn refuse(&self, key: &'static str, desired: usize, unit: &str) -> wasmtime::Error {
        let hit = self.limits.hit(key);
        warn!(check = %self.check_id, limit = %hit, desired, "refused to grow past a limit; trapping");
        let message = format!("{} (growing to {desired} {unit})", hit.diagnosis());
        self.incidents.limit(hit);
        wasmtime::format_err!("{message}")
    }
}

impl ResourceLimiter for SandboxLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes() {
            return Err(self.refuse(MEMORY_KEY, desired, "bytes"));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > to_usize(self.limits.table_elements) {
            return Err(self.refuse(TABLE_ELEMENTS_KEY, desired, "elements"));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        to_usize(self.limits.instances)
    }

    fn tables(&self) -> usize {
        to_usize(self.limits.tables)
    }

    fn memories(&self) -> usize {
        to_usize(self.limits.memories)
    }
}

/// The count limit behind wasmtime's "resource limit exceeded: … count too high" error.
///
/// Instantiation enforces these itself, without asking the limiter, so the error text is the
/// only place the host learns which one tripped.
pub fn count_limit_in(error: &str) -> Option<&'static str> {
    let rest = error.split("resource limit exceeded: ").nth(1)?;
    match rest.split(' ').next()? {
        "instance" => Some(INSTANCES_KEY),
        "table" => Some(TABLES_KEY),
        "memory" => Some(MEMORIES_KEY),
        _ => None,
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for SandboxState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Adds every interface a check may import to `linker`.
///
/// The WASI socket interfaces are linked as well (they come with the CLI set) but every use of
/// them is refused; the loader rejects components that import them in the first place.
pub fn add_to_linker(linker: &mut Linker<SandboxState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    config_store::add_to_linker::<SandboxState, ConfigAccess>(linker, |state| &mut state.config)?;
    Ok(())
}

/// True for keys of the host's own `Doctor:` section (any case, `:` or `__` separated).
fn is_host_key(key: &str) -> bool {
    let key = key.replace("__", ":");
    key.get(..7)
        .is_some_and(|section| section.eq_ignore_ascii_case("doctor:"))
}

/// The configuration one check can see: only the keys it declared.
#[derive(Debug, Clone, Default)]
pub struct ScopedConfig {
    check_id: String,
    /// Declared key names (as declared) with their value when configured.
    keys: Vec<(String, Option<String>)>,
}

impl ScopedConfig {
    /// The view of `settings` a check declaring `declared` may have.
    ///
    /// Keys in the host's own `Doctor:` section (the API token, trust keys, limits, allowlists)
    /// read as absent even when declared: declaring a key must not be a way to read the
    /// settings that govern the sandbox itself.
    pub fn new(check_id: &str, declared: &[ConfigKey], settings: &Settings) -> Self {
        let keys = declared
            .iter()
            .map(|key| {
                let value = if is_host_key(&key.name) {
                    debug!(check = check_id, key = %key.name, "a check declared a host setting; it reads as absent");
                    None
                } else {
                    settings.get(&key.name).map(str::to_string)
                };
                (key.name.clone(), value)
            })
            .collect();
        ScopedConfig {
            check_id: check_id.to_string(),
            keys,
        }
    }

    /// A view with no keys, for calls such as `metadata()` that must not depend on configuration.
    pub fn empty(check_id: &str) -> Self {
        ScopedConfig {
            check_id: check_id.to_string(),
            keys: Vec::new(),
        }
    }

    /// The value of a declared key, ignoring case; undeclared keys read as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        let wanted = key.replace("__", ":");
        let Some((_, value)) = self
            .keys
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&wanted))
        else {
            debug!(check = %self.check_id, key, "check asked for a configuration key it did not declare; reading it as absent");
            return None;
        };
        value.as_deref()
    }

    /// Every declared key that is set, under its declared name.
    pub fn all(&self) -> Vec<(String, String)> {
        self.keys
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), value.clone()?)))
            .collect()
    }
}

/// Ties `wasi:config/store` to the [`ScopedConfig`] inside [`SandboxState`].
struct ConfigAccess;

impl HasData for ConfigAccess {
    type Data<'a> = &'a mut ScopedConfig;
}

impl config_store::Host for ScopedConfig {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, config_store::Error>> {
        Ok(Ok(ScopedConfig::get(self, &key).map(str::to_string)))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, config_store::Error>> {
        Ok(Ok(self.all()))
    }
}

/// A stdout or stderr sink that keeps the first `capacity` bytes and drops the rest.
///
/// `MemoryOutputPipe` traps the guest once full; a chatty check should be cut short in its
/// output, not failed, so writes past the limit succeed and are discarded.
#[derive(Clone)]
struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    capacity: usize,
    bytes: Vec<u8>,
    truncated: bool,
}

impl CapturedOutput {
    fn new(capacity: usize) -> Self {
        CapturedOutput {
            inner: Arc::new(Mutex::new(Captured {
                capacity,
                bytes: Vec::new(),
                truncated: false,
            })),
        }
    }

    /// The captured bytes, redacted; when the limit cut the output, a secret the cut went
    /// through leaves no beginning behind either.
    fn text(&self, redactor: &Redactor) -> String {
        let captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !captured.truncated {
            return redactor.text(&String::from_utf8_lossy(&captured.bytes));
        }
        let mut text = redactor.cut_off(&captured.bytes);
        text.push_str(&format!(
            "\n[output truncated after {} bytes; `{OUTPUT_KEY}` keeps more]\n",
            captured.capacity
        ));
        text
    }

    fn truncated(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncated
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = captured.capacity.saturating_sub(captured.bytes.len());
        let kept = room.min(buf.len());
        captured.bytes.extend_from_slice(&buf[..kept]);
        if kept < buf.len() {
            captured.truncated = true;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ConfigKey {
        ConfigKey {
            name: name.into(),
            secret: false,
            description: String::new(),
        }
    }

    #[test]
    fn host_settings_read_as_absent_even_when_declared() {
        let mut settings = Settings::default();
        settings.set("Doctor:Api:Token", "api-token-value");
        settings.set("doctor:trust:publickeys", "key");
        settings.set("OCI:RegistryUrl", "https://registry.example");
        let declared = [
            key("Doctor:Api:Token"),
            key("DOCTOR__Trust__PublicKeys"),
            key("OCI:RegistryUrl"),
        ];

        let config = ScopedConfig::new("check.sneaky", &declared, &settings);

        assert_eq!(config.get("Doctor:Api:Token"), None);
        assert_eq!(config.get("DOCTOR__Trust__PublicKeys"), None);
        assert_eq!(
            config.get("OCI:RegistryUrl"),
            Some("https://registry.example")
        );
    }

    #[test]
    fn a_check_sees_only_its_declared_keys_case_insensitively() {
        let mut settings = Settings::default();
        settings.set("OCI:RegistryUrl", "http://r");
        settings.set("OCI:Password", "pw");
        settings.set("Other:Secret", "nope");
        let config = ScopedConfig::new(
            "c",
            &[
                key("OCI:RegistryUrl"),
                key("OCI:Password"),
                key("OCI:Repository"),
            ],
            &settings,
        );

        assert_eq!(config.get("oci:registryurl"), Some("http://r"));
        assert_eq!(config.get("OCI__Password"), Some("pw"));
        assert_eq!(config.get("OCI:Repository"), None);
        assert_eq!(config.get("Other:Secret"), None);
        assert_eq!(
            config.all(),
            vec![
                ("OCI:RegistryUrl".to_string(), "http://r".to_string()),
                ("OCI:Password".to_string(), "pw".to_string()),
            ]
        );
    }

    #[test]
    fn captured_output_keeps_the_first_bytes_and_marks_truncation() {
        let output = CapturedOutput::new(4);
        let mut writer = output.clone();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let written = Pin::new(&mut writer).poll_write(&mut cx, b"abcdef");
        assert!(matches!(written, Poll::Ready(Ok(6))));
        assert_eq!(
            output.text(&Redactor::default()),
            "abcd\n[output truncated after 4 bytes; `Doctor:Limits:OutputBytes` keeps more]\n"
        );
        assert!(output.truncated());
    }

    #[test]
    fn captured_output_masks_a_secret_the_limit_cut_in_two() {
        let output = CapturedOutput::new(8);
        let mut writer = output.clone();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let _ = Pin::new(&mut writer).poll_write(&mut cx, b"key=hunter2\n");
        let redactor = Redactor::new(["hunter2".to_string()]);

        let text = output.text(&redactor);

        assert!(text.starts_with("key=***\n[output truncated"), "{text:?}");
    }

    #[test]
    fn count_limits_are_read_from_wasmtime_errors() {
        assert_eq!(
            count_limit_in("resource limit exceeded: instance count too high at 65"),
            Some(INSTANCES_KEY)
        );
        assert_eq!(
            count_limit_in("resource limit exceeded: memory count too high at 17"),
            Some(MEMORIES_KEY)
        );
        assert_eq!(
            count_limit_in("resource limit exceeded: table count too high at 65"),
            Some(TABLES_KEY)
        );
        assert_eq!(count_limit_in("wasm trap: unreachable"), None);
    }

    #[test]
    fn growing_past_a_limit_traps_and_is_recorded() {
        let limits = Limits {
            memory_mib: 1,
            table_elements: 10,
            ..Limits::default()
        };
        let incidents = Incidents::default();
        let mut limiter = SandboxLimiter {
            check_id: "c".into(),
            limits,
            incidents: incidents.clone(),
        };

        assert!(matches!(limiter.memory_growing(0, 65536, None), Ok(true)));
        assert!(matches!(
            limiter.memory_growing(0, 65536, Some(0)),
            Ok(false)
        ));
        let err = limiter.memory_growing(0, 2 << 20, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("check exceeded its memory limit (`Doctor:Limits:MemoryMiB` = 1)"),
            "{err}"
        );
        assert!(limiter.table_growing(0, 11, None).is_err());
        assert_eq!(
            incidents
                .snapshot()
                .limits
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "Doctor:Limits:MemoryMiB=1",
                "Doctor:Limits:TableElements=10"
            ]
        );
    }
}
