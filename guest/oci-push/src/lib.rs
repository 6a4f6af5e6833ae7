//! The `check.integration.oci.push` doctor check as a WebAssembly component.
//!
//! A thin adapter: the registry protocol lives in the `oci-probe` crate, and this crate only
//! connects it to the component world `stellaops:doctor/doctor-check`. [`transport`] sends HTTP
//! through `wasi:http/outgoing-handler`, configuration comes from `wasi:config/store`, and
//! [`convert`] turns the probe's plain types into the generated ones.

mod bindings;
mod convert;
mod transport;

use bindings::exports::stellaops::doctor::check::Guest;
use bindings::stellaops::doctor::types::{CheckMetadata, CheckResult};
use bindings::wasi::config::store;

/// The exported check.
struct PushCheck;

impl Guest for PushCheck {
    fn metadata() -> CheckMetadata {
        convert::metadata(oci_probe::check::metadata())
    }

    fn run() -> CheckResult {
        let result = oci_probe::check::run(config_value, transport::WasiTransport::new);
        convert::result(result)
    }
}

/// Reads `key` from `wasi:config/store`.
///
/// A store failure is reported on stderr and read as "unset": the check then skips or names the
/// key, which points the operator at the right setting even when the store itself is at fault.
fn config_value(key: &str) -> Option<String> {
    match store::get(key) {
        Ok(value) => value,
        Err(error) => {
            eprintln!("warning: reading `{key}` from `wasi:config/store` failed: {error:?}");
            None
        }
    }
}

bindings::export!(PushCheck with_types_in bindings);
