//! `stella-doctor serve`: the doctor engine behind an HTTP API, with checks swapped in while it
//! runs.
//!
//! - [`api`]: the routes (`/api/v1/doctor/checks`, `/api/v1/doctor/run`, `/healthz`,
//!   `/metrics`), bearer-token authentication and the bound on concurrent runs;
//! - [`registry`]: the live set of checks, an immutable snapshot replaced atomically;
//! - [`watch`]: the plugins folder watcher that validates and compiles updates off the request
//!   path;
//! - [`trust`]: the optional policy of pinned digests and ed25519 signatures, and `sign`/`keygen`;
//! - [`cache`]: compiled components on disk, keyed by engine and component hash;
//! - [`metrics`]: counters in the Prometheus text format.
//!
//! [`trust`] and [`cache`] serve the CLI's `list`, `run` and `inspect` too, through
//! [`crate::loader::LoadOptions`]. Runs from the API go through the same
//! [`crate::runner::run_checks`] as the CLI's, with the same sandbox and limits.

pub mod api;
pub mod cache;
pub mod metrics;
pub mod registry;
pub mod trust;
pub mod watch;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{info, warn};

use crate::config::{ConfigError, Settings};
use crate::engine::{Allocation, DEFAULT_POOLED_RUNS, DoctorEngine};
use crate::limits::read_whole;
use crate::loader::LoadOptions;

/// The port `serve` listens on when `--listen` names none.
pub const DEFAULT_PORT: u16 = 7411;

/// The address `serve` listens on by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7411";

/// The configuration key holding the API's bearer token.
pub const TOKEN_KEY: &str = "Doctor:Api:Token";

/// The configuration key bounding how many run requests execute at once.
pub const MAX_RUNS_KEY: &str = "Doctor:Api:MaxConcurrentRuns";

/// The configuration key for the listen address, when `--listen` is not given.
pub const LISTEN_KEY: &str = "Doctor:Api:Listen";

/// How many run requests execute at once when [`MAX_RUNS_KEY`] is not set.
pub const DEFAULT_MAX_RUNS: usize = 8;

/// The configuration key bounding the `parallel` a run request may ask for.
pub const MAX_PARALLEL_KEY: &str = "Doctor:Api:MaxParallel";

/// The largest `parallel` a run request may ask for when [`MAX_PARALLEL_KEY`] is not set.
pub const DEFAULT_MAX_PARALLEL: usize = 16;

/// The most [`MAX_PARALLEL_KEY`] may be set to.
pub const MAX_PARALLEL_LIMIT: usize = 64;

/// The configuration key bounding the `timeout` a run request may ask for, in seconds.
///
/// When it is not set, the bound is the configured deadline (`Doctor:Limits:TimeoutSeconds`):
/// a caller may shorten a run, not make it hold its slot longer than the operator chose.
pub const MAX_TIMEOUT_KEY: &str = "Doctor:Api:MaxTimeoutSeconds";

/// What `serve` needs besides the configuration.
pub struct ServeOptions {
    /// The plugins folder to load and watch.
    pub plugins: PathBuf,
    /// `--listen`, overriding [`LISTEN_KEY`].
    pub listen: Option<String>,
    /// Compile cache and trust policy, shared with the CLI's loading.
    pub load: LoadOptions,
    /// The engine from [`engine`]; the compile cache must have been opened for it.
    pub engine: Arc<DoctorEngine>,
}

/// The engine `serve` runs checks in: the pooling allocator unless `Doctor:Engine:Allocator`
/// says `on-demand`.
///
/// The service instantiates the same components again and again, so a pooled slot makes each
/// instantiation a reset instead of fresh mappings. The pool is sized by [`pooled_runs`].
pub fn engine(settings: &Settings) -> anyhow::Result<DoctorEngine> {
    let run_options = crate::runner::RunOptions::from_settings(settings)?;
    let runs = pooled_runs(settings)?;
    let pooled = Allocation::Pooling {
        runs: runs.max(DEFAULT_POOLED_RUNS),
    };
    let allocation = Allocation::from_settings(settings, pooled, runs)?;
    DoctorEngine::with_allocation(allocation, &run_options.limits)
}

/// How many instances the service may have at once: every permitted run request
/// ([`MAX_RUNS_KEY`]) at the largest parallelism one may ask for ([`MAX_PARALLEL_KEY`]), plus
/// the one the folder watcher instantiates to read a new component's `metadata()`.
///
/// With a pool this large no combination of accepted requests can find it full; a request
/// beyond either bound is refused (429 or 400) before it instantiates anything. The product may
/// be at most [`MAX_POOLED_INSTANCES`].
pub fn pooled_runs(settings: &Settings) -> Result<u32, ConfigError> {
    let (runs, parallel) = (max_runs(settings)?, max_parallel(settings)?);
    let instances = runs.saturating_mul(parallel);
    if instances > MAX_POOLED_INSTANCES {
        return Err(ConfigError::new(format!(
            "`{MAX_RUNS_KEY}` ({runs}) × `{MAX_PARALLEL_KEY}` ({parallel}) is {instances} \
             instances at once, more than the service can reserve ({MAX_POOLED_INSTANCES}); \
             lower one of the two"
        )));
    }
    Ok(u32::try_from(instances + 1).unwrap_or(u32::MAX))
}

/// The most instances the service's pool is sized for.
///
/// Each pooled instance costs a few memory mappings (its stack and guard page among them), and
/// Linux allows a process 65530 by default (`vm.max_map_count`): a pool of twice this size
/// fails to reserve at start.
pub const MAX_POOLED_INSTANCES: usize = 16_384;

/// Checks the address and token, loads the plugins folder, then serves until the process ends.
///
/// A non-loopback address without a token is refused before anything is loaded or bound.
pub async fn serve(settings: Settings, options: ServeOptions) -> anyhow::Result<()> {
    let listen = options
        .listen
        .clone()
        .or_else(|| settings.get(LISTEN_KEY).map(str::to_string))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let addresses = resolve(&listen)?;
    let token = settings
        .get(TOKEN_KEY)
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(api::ApiToken::new);
    if token.is_none() {
        if let Some(open) = addresses.iter().find(|addr| !addr.ip().is_loopback()) {
            anyhow::bail!(
                "refusing to serve on {open} (from `{listen}`) without an API token: anyone who can reach it could run checks; set `{TOKEN_KEY}` (for example the environment variable `Doctor__Api__Token`) or listen on 127.0.0.1"
            );
        }
        info!("no `{TOKEN_KEY}` set; the API is open to local callers only");
    }
    // Read once, before anything loads, so a bad limit is a configuration error at start.
    let max_runs = max_runs(&settings)?;
    let max_parallel = max_parallel(&settings)?;
    let run_options = crate::runner::RunOptions::from_settings(&settings)?;
    let max_timeout = max_timeout(&settings, run_options.limits.timeout)?;

    let engine = options.engine.clone();
    let metrics = Arc::new(metrics::Metrics::default());
    let registry = Arc::new(registry::Registry::new(metrics.clone()));
    let _watch = watch::start(
        engine.clone(),
        options.plugins.clone(),
        options.load.clone(),
        registry.clone(),
    )
    .await?;

    let state = Arc::new(api::ApiState::new(api::ApiConfig {
        engine,
        run_settings: Arc::new(without_api_keys(&settings)),
        settings: Arc::new(settings),
        registry,
        metrics,
        counters: options.load.counters.clone(),
        token,
        max_runs,
        max_parallel,
        max_timeout,
        run_options,
    }));
    let listener = bind(&addresses).await?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // On stdout, so a supervisor (or a test) that asked for port 0 learns the real one.
    println!("stella-doctor serving on http://{local}");
    info!(address = %local, plugins = %options.plugins.display(), "serving");
    api::accept_loop(listener, state).await
}

/// `host:port`, `ip:port` or `[v6]:port` to addresses; a bare host or IP gets [`DEFAULT_PORT`].
fn resolve(listen: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let listen = listen.trim();
    if let Ok(address) = listen.parse::<SocketAddr>() {
        return Ok(vec![address]);
    }
    if let Ok(ip) = listen.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, DEFAULT_PORT)]);
    }
    let with_port = if listen.contains(':') {
        listen.to_string()
    } else {
        format!("{listen}:{DEFAULT_PORT}")
    };
    let addresses: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .with_context(|| {
            format!(
                "cannot resolve the listen address `{listen}`; use `IP:PORT`, for example `{DEFAULT_LISTEN}`"
            )
        })?
        .collect();
    anyhow::ensure!(
        !addresses.is_empty(),
        "the listen address `{listen}` resolves to nothing"
    );
    Ok(addresses)
}

async fn bind(addresses: &[SocketAddr]) -> anyhow::Result<tokio::net::TcpListener> {
    let mut last = None;
    for address in addresses {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(err) => {
                warn!(%address, error = %err, "cannot listen here");
                last = Some((address, err));
            }
        }
    }
    let (address, err) = last.context("no address to listen on")?;
    Err(err).with_context(|| format!("cannot listen on {address}"))
}

/// `settings` without the `Doctor:Api:*` keys, for runs.
///
/// A check reads every key it declares, so a component declaring `Doctor:Api:Token` would
/// otherwise be handed the API's own credential.
pub fn without_api_keys(settings: &Settings) -> Settings {
    let mut kept = Settings::default();
    for (key, value) in settings.iter() {
        if !key.to_ascii_lowercase().starts_with("doctor:api:") {
            kept.set(key, value);
        }
    }
    kept
}

/// The bound configured under [`MAX_RUNS_KEY`].
pub fn max_runs(settings: &Settings) -> Result<usize, ConfigError> {
    let default = DEFAULT_MAX_RUNS as u64;
    Ok(read_whole(settings, MAX_RUNS_KEY, default, 1024)? as usize)
}

/// The bound configured under [`MAX_PARALLEL_KEY`].
pub fn max_parallel(settings: &Settings) -> Result<usize, ConfigError> {
    let (default, max) = (DEFAULT_MAX_PARALLEL as u64, MAX_PARALLEL_LIMIT as u64);
    Ok(read_whole(settings, MAX_PARALLEL_KEY, default, max)? as usize)
}

/// The bound configured under [`MAX_TIMEOUT_KEY`], in whole seconds up to a day, else
/// `configured`, the deadline runs get when they ask for none.
pub fn max_timeout(settings: &Settings, configured: Duration) -> Result<Duration, ConfigError> {
    if settings.get(MAX_TIMEOUT_KEY).is_none() {
        return Ok(configured);
    }
    let seconds = read_whole(settings, MAX_TIMEOUT_KEY, configured.as_secs(), 86_400)?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_default_their_port() {
        assert_eq!(
            resolve("127.0.0.1").unwrap(),
            ["127.0.0.1:7411".parse().unwrap()]
        );
        assert_eq!(resolve("127.0.0.1:0").unwrap()[0].port(), 0);
        assert_eq!(resolve("[::1]:80").unwrap()[0].port(), 80);
        assert!(resolve("127.0.0.1:notaport").is_err());
    }

    #[test]
    fn runs_never_see_the_api_token() {
        let mut settings = Settings::default();
        settings.set("Doctor__Api__Token", "t");
        settings.set("OCI:RegistryUrl", "r");
        let kept = without_api_keys(&settings);
        assert_eq!(kept.get(TOKEN_KEY), None);
        assert_eq!(kept.get("oci:registryurl"), Some("r"));
    }

    #[test]
    fn max_runs_defaults_and_validates() {
        let mut settings = Settings::default();
        assert_eq!(max_runs(&settings), Ok(8));
        settings.set(MAX_RUNS_KEY, "2");
        assert_eq!(max_runs(&settings), Ok(2));
        settings.set(MAX_RUNS_KEY, "0");
        assert!(max_runs(&settings).is_err());
    }

    #[test]
    fn the_pool_holds_every_instance_accepted_requests_can_ask_for() {
        let mut settings = Settings::default();
        assert_eq!(
            pooled_runs(&settings),
            Ok((DEFAULT_MAX_RUNS * DEFAULT_MAX_PARALLEL + 1) as u32)
        );
        settings.set(MAX_RUNS_KEY, "256");
        settings.set(MAX_PARALLEL_KEY, "64");
        assert_eq!(pooled_runs(&settings), Ok(256 * 64 + 1));
        settings.set(MAX_PARALLEL_KEY, "65");
        assert!(pooled_runs(&settings).is_err());

        // More than the pool can reserve is a configuration error naming both keys.
        settings.set(MAX_RUNS_KEY, "300");
        settings.set(MAX_PARALLEL_KEY, "64");
        let error = pooled_runs(&settings).unwrap_err().to_string();
        assert!(
            error.contains(MAX_RUNS_KEY) && error.contains(MAX_PARALLEL_KEY),
            "{error}"
        );
    }

    #[test]
    fn the_timeout_bound_defaults_to_the_configured_deadline() {
        let mut settings = Settings::default();
        let configured = Duration::from_secs(30);
        assert_eq!(max_timeout(&settings, configured), Ok(configured));
        settings.set(MAX_TIMEOUT_KEY, "120");
        assert_eq!(
            max_timeout(&settings, configured),
            Ok(Duration::from_secs(120))
        );
        settings.set(MAX_TIMEOUT_KEY, "24h");
        let err = max_timeout(&settings, configured).unwrap_err().to_string();
        assert!(err.contains(MAX_TIMEOUT_KEY), "{err}");
    }
}
