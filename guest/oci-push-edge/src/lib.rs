//! The `check.integration.oci.push` probe as an HTTP service for serverless Wasm platforms.
//!
//! The same probe the doctor host runs (the `oci-probe` crate) behind the `wasi:http/proxy`
//! world, built with spin-sdk's HTTP component support: Spin and SpinKube, `wasmtime serve`, and
//! any other `wasi:http/incoming-handler@0.2` host run it without a doctor host installed. A
//! scheduler or status page calls `GET /` (or `GET /checks/check.integration.oci.push`) and gets
//! the check's result in the JSON schema of `stella-doctor run --format json`, with `200` for
//! pass, info, warn and skip and `503` for fail.
//!
//! How the modules map to the design:
//! - [`routes`]: which request runs the check, and the JSON errors for every other request;
//! - [`config`]: configuration through `wasi:config/store`, and the one mapping between the
//!   check's `Section:Name` keys and the variable names Spin allows (`OCI:RegistryUrl` is
//!   `oci_registry_url`);
//! - [`transport`]: the probe's HTTP seam over `wasi:http/outgoing-handler`, with its timeouts;
//! - [`report`]: the doctor's JSON report, with every configured secret redacted.
//!
//! The doctor host's outbound allowlist (`Doctor:Plugins:<checkId>:AllowedHosts`) does not exist
//! here: on Spin the policy is `allowed_outbound_hosts` in `spin.toml`, and `wasmtime serve`
//! applies none. A request the platform refuses is reported as a failed check naming the origin.

pub mod config;
pub mod report;
pub mod routes;
pub mod transport;

use std::time::Instant;

use spin_sdk::http::{Request, Response};
#[cfg(target_arch = "wasm32")]
use spin_sdk::http_component;

use crate::report::Redactor;
use crate::routes::Route;
use crate::transport::EdgeTransport;

/// The file `make edge` writes this build to, reported as the result's `component`.
pub const COMPONENT: &str = if cfg!(feature = "spin") {
    "oci-push-edge-spin.wasm"
} else {
    "oci-push-edge.wasm"
};

/// Answers one HTTP request.
///
/// Exported only on wasm: the export's name (`wasi:http/incoming-handler@0.2.0#handle`) is not a
/// symbol a native linker accepts, and native builds exist only for unit tests and clippy.
#[cfg_attr(target_arch = "wasm32", http_component)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn handle(request: Request) -> Response {
    let path = routes::path_of(&request);
    match routes::route(request.method(), &path) {
        Route::RunCheck => run_check(),
        Route::NotFound => routes::not_found(&path),
        Route::MethodNotAllowed => routes::method_not_allowed(request.method()),
    }
}

/// Runs the probe once against the configuration in `wasi:config/store`.
fn run_check() -> Response {
    let started = Instant::now();

    // `run` consumes its transport; lending it a `&mut` keeps the denied origins readable after.
    let mut slot = None;
    let mut result = oci_probe::check::run(config::lookup, |timeout| {
        slot.insert(EdgeTransport::new(timeout))
    });
    if let Some(transport) = &slot {
        report::add_platform_policy_step(&mut result, transport.denied_origins());
    }

    let redactor = Redactor::new(
        &config::secret_values(config::lookup),
        &config::usernames(config::lookup),
    );
    report::response(result, started.elapsed(), &redactor)
}
