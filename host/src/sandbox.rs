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
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::AsyncWrite;
use tracing::{debug, warn};
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::config::Settings;
use crate::contract::config_store;
use crate::model::ConfigKey;
use crate::policy::{Allowlist, Origin};

/// How much of each of stdout and stderr a run keeps.
pub const OUTPUT_CAPACITY: usize = 64 * 1024;

/// Everything the host gives one run of one check.
pub struct SandboxState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    config: ScopedConfig,
    limits: StoreLimits,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

/// What a run may do, decided before it starts.
#[derive(Debug, Clone)]
pub struct SandboxPolicy {
    /// The check's identifier, for logs and denials.
    pub check_id: String,
    /// The configuration keys the check declared, with their values where set.
    pub config: ScopedConfig,
    /// The origins the check may reach.
    pub allowlist: Allowlist,
    /// When the run must be over; outbound timeouts are clamped to it.
    pub deadline: Instant,
    /// The most linear memory the instance may grow to, in bytes.
    pub memory_limit: usize,
}

impl SandboxState {
    /// A fresh, empty sandbox for one run.
    pub fn new(policy: SandboxPolicy) -> Self {
        let stdout = CapturedOutput::new(OUTPUT_CAPACITY);
        let stderr = CapturedOutput::new(OUTPUT_CAPACITY);

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

        let limits = StoreLimitsBuilder::new()
            .memory_size(policy.memory_limit)
            .instances(64)
            .trap_on_grow_failure(true)
            .build();

        SandboxState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHooks {
                check_id: policy.check_id,
                allowlist: policy.allowlist,
                deadline: policy.deadline,
                denied: Vec::new(),
            },
            config: policy.config,
            limits,
            stdout,
            stderr,
        }
    }

    /// The store limiter, for [`wasmtime::Store::limiter`].
    pub fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }

    /// The origins the host refused during this run, in the order first refused.
    pub fn denied_origins(&self) -> &[Origin] {
        &self.hooks.denied
    }

    /// What the check wrote to stdout and stderr, lossily decoded.
    pub fn output(&self) -> (String, String) {
        (self.stdout.text(), self.stderr.text())
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

/// The outbound HTTP policy of one run, applied to every request the check sends.
///
/// Kept apart from [`SandboxState`] because `wasmtime-wasi-http` borrows the hooks and the view
/// at the same time.
pub struct OutboundHooks {
    check_id: String,
    allowlist: Allowlist,
    deadline: Instant,
    denied: Vec<Origin>,
}

type ResponseIo = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, ResponseIo), HttpError>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: ResponseIo,
    ) -> SendFuture {
        let origin = Origin::of_uri(request.uri());
        let Some(origin) = origin.filter(|origin| self.allowlist.allows(origin)) else {
            let shown = Origin::of_uri(request.uri())
                .map_or_else(|| "<no origin>".to_string(), |o| o.to_string());
            warn!(check = %self.check_id, origin = %shown, "denied outbound request to an origin the check may not reach");
            if let Some(origin) = Origin::of_uri(request.uri())
                && !self.denied.contains(&origin)
            {
                self.denied.push(origin);
            }
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };

        debug!(check = %self.check_id, method = %request.method(), origin = %origin, "sending outbound request");
        let options = clamp_options(
            options,
            self.deadline.saturating_duration_since(Instant::now()),
        );
        Box::new(async move {
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as ResponseIo,
            ))
        })
    }
}

/// Limits every request timeout to what is left of the run, and sets the ones the guest left
/// unset, which would otherwise wait 600 s.
fn clamp_options(options: Option<RequestOptions>, remaining: Duration) -> RequestOptions {
    // A zero timeout would fail at once with a confusing error; the run's own deadline fires
    // within milliseconds anyway.
    let remaining = remaining.max(Duration::from_millis(1));
    let clamp = |timeout: Option<Duration>| Some(timeout.map_or(remaining, |t| t.min(remaining)));
    let options = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: clamp(options.connect_timeout),
        first_byte_timeout: clamp(options.first_byte_timeout),
        between_bytes_timeout: clamp(options.between_bytes_timeout),
    }
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
    pub fn new(check_id: &str, declared: &[ConfigKey], settings: &Settings) -> Self {
        ScopedConfig {
            check_id: check_id.to_string(),
            keys: declared
                .iter()
                .map(|key| {
                    (
                        key.name.clone(),
                        settings.get(&key.name).map(str::to_string),
                    )
                })
                .collect(),
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

    fn text(&self) -> String {
        let captured = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::from_utf8_lossy(&captured.bytes).into_owned();
        if captured.truncated {
            text.push_str("\n[output truncated]\n");
        }
        text
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
    fn request_timeouts_are_clamped_to_the_deadline() {
        let remaining = Duration::from_secs(5);
        let options = clamp_options(
            Some(RequestOptions {
                connect_timeout: Some(Duration::from_secs(1)),
                first_byte_timeout: Some(Duration::from_secs(60)),
                between_bytes_timeout: None,
            }),
            remaining,
        );
        assert_eq!(options.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(options.first_byte_timeout, Some(remaining));
        assert_eq!(options.between_bytes_timeout, Some(remaining));
        assert_eq!(
            clamp_options(None, remaining).connect_timeout,
            Some(remaining)
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
        assert_eq!(output.text(), "abcd\n[output truncated]\n");
    }
}
