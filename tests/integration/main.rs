//! Integration tests: the real `stella-doctor` binary runs real check
//! components, built from source, against Debian's `docker-registry` and a
//! scripted HTTP server on loopback. Nothing here mocks wasmtime.
//!
//! This file is compiled as the `integration` test of the host crate (see
//! `host/Cargo.toml`) so that cargo hands it the path of the built binary.

mod support;

mod edge;
mod host_behaviour;
mod push_against_registry;
mod push_against_scripted_server;
mod push_with_token_auth;
mod sandbox_hostile;
mod service;
mod tls_and_downgrades;
mod token_auth_against_scripted_server;

use serde_json::Value;

/// The id of the check under test.
pub const PUSH: &str = "check.integration.oci.push";

/// An evidence value as a string (evidence values are text in the schema).
pub fn evidence<'a>(result: &'a Value, key: &str) -> &'a str {
    result["evidence"][key]
        .as_str()
        .unwrap_or_else(|| panic!("evidence has no `{key}`: {result:#}"))
}

/// The diagnosis, lower-cased for phrase matching.
pub fn diagnosis(result: &Value) -> String {
    result["diagnosis"]
        .as_str()
        .expect("diagnosis")
        .to_lowercase()
}
