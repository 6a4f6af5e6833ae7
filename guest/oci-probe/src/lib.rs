//! The registry side of the `check.integration.oci.push` doctor check, in plain Rust.
//!
//! The check asks an OCI registry to open a blob upload session with the configured service
//! account and cancels the session at once, so it proves the push grant without writing a blob.
//! Everything here is independent of WebAssembly: a runtime supplies a [`http::Transport`] and a
//! configuration lookup, and gets a [`model::CheckResult`] back. The component adapter, a future
//! edge build and a native binary all share this crate.
//!
//! How the modules map to the design:
//! - [`check`]: the entry point and the check's static metadata;
//! - [`config`]: reading and validating configuration keys;
//! - [`push`]: the upload-and-cancel probe and the meaning of each registry answer;
//! - [`report`]: turning a probe outcome into severity, diagnosis, evidence and causes;
//! - [`remediation`]: paste-able fixes per deployment style;
//! - [`auth`]: credentials, the token exchange, and the rules deciding where secrets may go;
//! - [`challenge`]: parsing `WWW-Authenticate` challenges;
//! - [`token`]: fetching a token from a realm (Docker token GET and OAuth2 form);
//! - [`base64`]: the encodings of basic credentials and JWT payloads;
//! - [`url`]: the small amount of URL handling the probe needs;
//! - [`errors`]: reading OCI error bodies;
//! - [`http`]: the transport seam;
//! - [`model`]: a plain mirror of the WIT types of `stellaops:doctor`.

pub mod auth;
pub mod base64;
pub mod challenge;
pub mod check;
pub mod config;
pub mod errors;
pub mod http;
pub mod model;
pub mod push;
pub mod remediation;
pub mod report;
pub mod token;
pub mod url;

#[cfg(test)]
mod testing;
