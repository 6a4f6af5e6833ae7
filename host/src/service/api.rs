//! The HTTP API: routes, bearer-token authentication, and the bound on concurrent runs.
//!
//! Every route but `/healthz` needs `Authorization: Bearer <token>` when `Doctor:Api:Token` is
//! set; the comparison takes the same time whatever the presented token is. Errors are JSON
//! objects with an `error` message written for whoever calls the API.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::config::{Settings, parse_duration};
use crate::engine::DoctorEngine;
use crate::loader::{LoadCounters, LoadError, LoadedCheck};
use crate::redact::{LogSecrets, Redactor};
use crate::report::{self, Provenance, RunReport};
use crate::runner::{self, RunOptions, Selection};
use crate::service::metrics::{Gauges, Metrics};
use crate::service::registry::{Registry, Snapshot};
use crate::service::{MAX_PARALLEL_KEY, MAX_RUNS_KEY, MAX_TIMEOUT_KEY, TOKEN_KEY};

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a run request's body, once its headers are in.
///
/// The body is read before a run slot is taken, so a client that stalls holds a connection,
/// never one of the `Doctor:Api:MaxConcurrentRuns` slots; this bounds how long it holds that.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks run at once within one request when it sets no `parallel` (the CLI's default).
const DEFAULT_PARALLEL: usize = 4;

/// The API token, kept only as its SHA-256.
///
/// Comparing digests in constant time hides both the token's bytes and its length.
pub struct ApiToken {
    digest: [u8; 32],
}

impl ApiToken {
    /// The token callers must present.
    pub fn new(token: &str) -> Self {
        ApiToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// True when `presented` is the token.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }
}

/// Everything the API needs, shared by all connections.
pub struct ApiConfig {
    /// The engine every run uses.
    pub engine: Arc<DoctorEngine>,
    /// The whole configuration, where secrets to redact are taken from.
    pub settings: Arc<Settings>,
    /// The configuration checks may read: without `Doctor:Api:*`.
    pub run_settings: Arc<Settings>,
    /// The live set of checks.
    pub registry: Arc<Registry>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Compiles and cache hits.
    pub counters: Arc<LoadCounters>,
    /// The bearer token, when one is configured.
    pub token: Option<ApiToken>,
    /// How many run requests execute at once.
    pub max_runs: usize,
    /// The largest `parallel` a run request may ask for.
    pub max_parallel: usize,
    /// The longest `timeout` a run request may ask for.
    pub max_timeout: Duration,
    /// Limits and TLS settings from configuration, as the CLI applies them.
    pub run_options: RunOptions,
}

/// The configuration plus the permits that bound concurrent runs.
pub struct ApiState {
    config: ApiConfig,
    runs: Arc<Semaphore>,
}

impl ApiState {
    /// State for these settings, with all run permits free.
    pub fn new(config: ApiConfig) -> Self {
        let runs = Arc::new(Semaphore::new(config.max_runs));
        ApiState { config, runs }
    }

    fn runs_in_flight(&self) -> usize {
        self.config
            .max_runs
            .saturating_sub(self.runs.available_permits())
    }
}

/// Accepts connections until the process ends, one task per connection.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors; the listener itself is still fine.
                warn!(error = %err, "cannot accept a connection; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Answers are written as soon as they are ready, not held back for the client's ACK.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
}

/// Routes one request.
async fn handle(state: &ApiState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    if path == "/healthz" {
        return match method {
            Method::GET => health(state),
            _ => method_not_allowed("GET"),
        };
    }
    if let Err(response) = authorize(state, &request) {
        return *response;
    }
    match (method, path.as_str()) {
        (Method::GET, "/metrics") => metrics(state),
        (Method::GET, "/api/v1/doctor/checks") => checks(state),
        (Method::POST, "/api/v1/doctor/run") => run(state, request).await,
        (_, "/metrics" | "/api/v1/doctor/checks") => method_not_allowed("GET"),
        (_, "/api/v1/doctor/run") => method_not_allowed("POST"),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no route `{path}`; see docs/openapi.yaml for the API"),
        ),
    }
}

/// `Ok` when no token is configured or the request carries it.
#[allow(clippy::result_large_err)]
fn authorize(
    state: &ApiState,
    request: &Request<Incoming>,
) -> Result<(), Box<Response<Full<Bytes>>>> {
    let Some(token) = &state.config.token else {
        return Ok(());
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, credentials) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credentials.trim())
        });
    let problem = match presented {
        Some(presented) if token.matches(presented) => return Ok(()),
        Some(_) => "the bearer token is not valid",
        None => {
            "this API needs `Authorization: Bearer <token>`, the token configured as `Doctor:Api:Token`"
        }
    };
    state
        .config
        .metrics
        .unauthorized
        .fetch_add(1, Ordering::Relaxed);
    let mut response = error(StatusCode::UNAUTHORIZED, problem.to_string());
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"stella-doctor\""),
    );
    debug!(key = TOKEN_KEY, "request refused: {problem}");
    Err(Box::new(response))
}

fn health(state: &ApiState) -> Response<Full<Bytes>> {
    let snapshot = state.config.registry.snapshot();
    let body = json!({
        "status": "ok",
        "checks": snapshot.checks().len(),
        "failed": snapshot.failed_count(),
        "generation": snapshot.generation,
    });
    json_response(StatusCode::OK, &body)
}

fn metrics(state: &ApiState) -> Response<Full<Bytes>> {
    let snapshot = state.config.registry.snapshot();
    let text = state.config.metrics.render(&Gauges {
        checks_loaded: snapshot.checks().len(),
        components_failed: snapshot.failed_count(),
        runs_in_flight: state.runs_in_flight(),
        generation: snapshot.generation,
        load: &state.config.counters,
    });
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /api/v1/doctor/checks`: every serving check with its version and status, and every file
/// that has no serving version.
fn checks(state: &ApiState) -> Response<Full<Bytes>> {
    let snapshot = state.config.registry.snapshot();
    let redactor = redactor(&state.config.settings, &snapshot);
    let mut checks = Vec::new();
    let mut errors = Vec::new();
    for (file, file_state) in &snapshot.files {
        let rejection = file_state.rejected.as_ref().map(|rejection| {
            json!({
                "digest": rejection.digest,
                "error": redactor.text(&rejection.error),
                "at": rfc3339(rejection.at),
            })
        });
        let Some(active) = &file_state.active else {
            if let Some(Value::Object(mut rejection)) = rejection {
                rejection.insert("file".into(), file.clone().into());
                errors.push(Value::Object(rejection));
            }
            continue;
        };
        let check = &active.check;
        let mut entry = serde_json::to_value(&check.metadata).unwrap_or_else(|_| json!({}));
        if let Value::Object(map) = &mut entry {
            map.insert("component".into(), check.component.clone().into());
            map.insert("digest".into(), check.digest.clone().into());
            map.insert(
                "contractVersion".into(),
                check.contract_version.clone().into(),
            );
            map.insert("revision".into(), active.revision.into());
            map.insert("loadedAt".into(), rfc3339(active.since).into());
            let status = if rejection.is_some() {
                "update-rejected"
            } else {
                "loaded"
            };
            map.insert("status".into(), status.into());
            if let Some(rejection) = rejection {
                map.insert("rejectedUpdate".into(), rejection);
            }
        }
        checks.push(entry);
    }
    let body = json!({
        "generation": snapshot.generation,
        "checks": checks,
        "errors": errors,
    });
    json_response(StatusCode::OK, &body)
}

/// The body of `POST /api/v1/doctor/run`; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunRequest {
    /// Check ids, as `--check`.
    #[serde(default)]
    checks: Vec<String>,
    /// Tags, as `--tag`.
    #[serde(default)]
    tags: Vec<String>,
    /// A plugin id, as `--plugin`.
    #[serde(default)]
    plugin: Option<String>,
    /// Each check's budget, as `--timeout` (`30s`, `500ms`).
    #[serde(default)]
    timeout: Option<String>,
    /// Checks run at once, as `--parallel`.
    #[serde(default)]
    parallel: Option<u16>,
    /// Include captured stdout/stderr, as `--verbose`.
    #[serde(default)]
    verbose: bool,
}

/// `POST /api/v1/doctor/run`: runs the selected checks of the current snapshot.
///
/// The body is read and checked before a run slot is taken: a slot is held only while checks
/// run, never while a client is still sending.
async fn run(state: &ApiState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let run_request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body is not a run request ({err}); send for example {{\"checks\":[\"check.integration.oci.push\"]}}, {{\"tags\":[\"oci\"]}} or {{}} for every check"
                    ),
                );
            }
        }
    };
    let config = &state.config;
    let options = match run_options(
        &run_request,
        &config.run_options,
        config.max_parallel,
        config.max_timeout,
    ) {
        Ok(options) => options,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };

    let Ok(_permit) = state.runs.clone().try_acquire_owned() else {
        state
            .config
            .metrics
            .runs_throttled
            .fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "error": format!("{} runs are already in progress, the most `{MAX_RUNS_KEY}` allows; retry shortly", state.config.max_runs),
            "maxConcurrentRuns": state.config.max_runs,
        });
        let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
        response
            .headers_mut()
            .insert(RETRY_AFTER, http::HeaderValue::from_static("1"));
        return response;
    };

    // Everything below uses this snapshot: a swap now does not change what this run executes.
    let snapshot = state.config.registry.snapshot();
    let loaded = snapshot.checks();
    if loaded.is_empty() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no checks are loaded; put check components (`*.wasm`) in the plugins folder"
                .to_string(),
        );
    }
    let selection = Selection {
        checks: run_request.checks,
        tags: run_request.tags,
        plugin: run_request.plugin,
    };
    let selected = match selection.apply(&loaded) {
        Ok(selected) => selected,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };

    let redactor = Arc::new(redactor(&state.config.settings, &snapshot));
    let errors: Vec<LoadError> = snapshot
        .errors()
        .into_iter()
        .map(|error| LoadError {
            error: redactor.text(&error.error),
            ..error
        })
        .collect();
    let started = Instant::now();
    let runs = runner::run_checks(
        state.config.engine.clone(),
        selected.clone(),
        state.config.run_settings.clone(),
        redactor,
        options,
    )
    .await;
    let duration = started.elapsed();

    state.config.metrics.record_run(duration);
    for run in &runs {
        state
            .config
            .metrics
            .record_check(&run.check_id, run.result.severity);
    }
    let report = RunReport {
        runs: &runs,
        errors: &errors,
        duration,
        provenance: Some(provenance(&selected, &snapshot)),
    };
    text_response(
        StatusCode::OK,
        report::run_json(&report, run_request.verbose),
    )
}

/// A run request's body: at most [`MAX_BODY`] bytes, within [`BODY_TIMEOUT`].
///
/// The error is the answer: 408 for a body that stalls, 413 for one too large, 400 for one that
/// cannot be read (a broken chunked encoding, a connection closed halfway). Each closes the
/// connection, whose unread rest cannot be told from a next request.
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Box<Response<Full<Bytes>>>> {
    let body = request.into_body();
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {MAX_BODY} bytes; a run request is a small JSON object such as {{\"checks\":[\"check.integration.oci.push\"]}}"
            ),
        )
    };
    // A `Content-Length` beyond the bound is refused before a byte of the body is waited for.
    let declared = hyper::body::Body::size_hint(&body).lower();
    let (status, message) = if declared > MAX_BODY as u64 {
        too_large()
    } else {
        let collect = Limited::new(body, MAX_BODY).collect();
        match tokio::time::timeout(BODY_TIMEOUT, collect).await {
            Ok(Ok(body)) => return Ok(body.to_bytes()),
            Err(_) => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}s; send the whole body with the headers",
                    BODY_TIMEOUT.as_secs()
                ),
            ),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => too_large(),
            Ok(Err(err)) => (
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {err}"),
            ),
        }
    };
    debug!(%status, "run request refused before it ran: {message}");
    let mut response = error(status, message);
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    Err(Box::new(response))
}

/// The configured run options with what the request asks for, defaulting like the CLI, within
/// the bounds the operator set for API callers.
fn run_options(
    request: &RunRequest,
    configured: &RunOptions,
    max_parallel: usize,
    max_timeout: Duration,
) -> Result<RunOptions, String> {
    let parallel = request
        .parallel
        .map_or(DEFAULT_PARALLEL.min(max_parallel), usize::from);
    if !(1..=max_parallel).contains(&parallel) {
        return Err(format!(
            "`parallel` must be between 1 and {max_parallel}, the most `{MAX_PARALLEL_KEY}` allows; got {parallel}"
        ));
    }
    let mut options = configured.clone();
    options.parallel = parallel;
    if let Some(text) = &request.timeout {
        let timeout = parse_duration(text).map_err(|problem| format!("`timeout`: {problem}"))?;
        if timeout > max_timeout {
            return Err(format!(
                "`timeout` {text:?} is longer than the {}s `{MAX_TIMEOUT_KEY}` allows; ask for at most that, or have the operator raise `{MAX_TIMEOUT_KEY}`",
                max_timeout.as_secs()
            ));
        }
        options = options.with_timeout(timeout);
    }
    Ok(options)
}

/// The digest and revision of each selected component, and the snapshot's generation.
///
/// `run_checks` returns results in selection order, so result `i` came from `selected[i]`.
fn provenance(selected: &[LoadedCheck], snapshot: &Snapshot) -> Provenance {
    let versions = selected
        .iter()
        .map(|check| {
            let revision = snapshot
                .files
                .get(&check.component)
                .and_then(|state| state.active.as_ref())
                .map_or(0, |active| active.revision);
            (check.digest.clone(), revision)
        })
        .collect();
    Provenance {
        generation: snapshot.generation,
        versions,
    }
}

/// A redactor for the configured secrets and the keys any serving check declares secret; the
/// log writer learns them too.
fn redactor(settings: &Settings, snapshot: &Snapshot) -> Redactor {
    let checks = snapshot.checks();
    let declared = checks
        .iter()
        .flat_map(|check| &check.metadata.config_keys)
        .filter(|key| key.secret)
        .map(|key| key.name.as_str());
    let redactor = Redactor::new(settings.secret_values(declared));
    LogSecrets::global().protect(&redactor);
    redactor
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_default();
    text.push('\n');
    text_response(status, text)
}

/// An answer whose JSON body is already serialised (the run report, whose evidence keeps the
/// order the check gave it; a `serde_json::Value` would sort it).
fn text_response(status: StatusCode, json: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this route answers {allow} only"),
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    response
}

/// A UTC timestamp such as `2025-01-31T12:00:00Z`.
fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value_only() {
        let token = ApiToken::new("s3cret-token");
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-tokem"));
        assert!(!token.matches(""));
        assert!(!token.matches("s3cret-token "));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(leap_day), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn run_requests_default_like_the_cli_and_refuse_unknown_fields() {
        let request: RunRequest =
            serde_json::from_str(r#"{"checks":["a"],"tags":["oci"],"plugin":"p"}"#).unwrap();
        let configured = RunOptions::from_settings(&Settings::default()).unwrap();
        let max = Duration::from_secs(30);
        let options = run_options(&request, &configured, 16, max).unwrap();
        assert_eq!(options.parallel, 4);
        assert!(serde_json::from_str::<RunRequest>(r#"{"check":["a"]}"#).is_err());
        let bad = RunRequest {
            timeout: Some("soon".into()),
            ..RunRequest::default()
        };
        assert!(run_options(&bad, &configured, 16, max).is_err());
    }

    #[test]
    fn run_requests_stay_within_the_operators_bounds() {
        let configured = RunOptions::from_settings(&Settings::default()).unwrap();
        let max = Duration::from_secs(30);
        let asking = |timeout: &str, parallel: u16| RunRequest {
            timeout: Some(timeout.into()),
            parallel: Some(parallel),
            ..RunRequest::default()
        };

        let at_the_bounds = run_options(&asking("30s", 16), &configured, 16, max).unwrap();
        assert_eq!(at_the_bounds.limits.timeout, max);
        assert_eq!(at_the_bounds.parallel, 16);

        let refused = |request: &RunRequest, max_parallel: usize| {
            run_options(request, &configured, max_parallel, max)
                .err()
                .expect("refused")
        };
        let long = refused(&asking("24h", 4), 16);
        assert!(long.contains(MAX_TIMEOUT_KEY), "{long}");
        let wide = refused(&asking("1s", 17), 16);
        assert!(wide.contains(MAX_PARALLEL_KEY), "{wide}");
        assert!(run_options(&asking("1s", 0), &configured, 16, max).is_err());

        // A request that names no parallelism never exceeds a bound below the default.
        let narrow = run_options(&RunRequest::default(), &configured, 2, max).unwrap();
        assert_eq!(narrow.parallel, 2);
    }
}
