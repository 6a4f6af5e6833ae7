//! The Stella Ops doctor host: runs health checks compiled to WebAssembly components, each in
//! its own sandbox, and reports what they found.
//!
//! The modules follow the life of a check:
//!
//! - [`config`]: layered configuration (environment, JSON file, `--set`);
//! - [`contract`]: the `stellaops:doctor@0.1.0` bindings and their conversion to [`model`] types;
//! - [`loader`]: a plugins folder becomes validated, pre-linked checks with metadata;
//! - [`engine`]: the shared Wasmtime engine, linker and epoch ticker;
//! - [`policy`]: which HTTP origins a check may reach, and which addresses behind them;
//! - [`limits`]: the `Doctor:Limits:*` keys, their defaults, and how a tripped limit is named;
//! - [`sandbox`]: what a check can touch during one run (config, HTTP, stdio, memory);
//! - [`outbound`]: the host's own HTTP client, which screens addresses and enforces body limits;
//! - [`tls`]: trusted certificate authorities, and TLS failures named by cause;
//! - [`incidents`]: what the host noticed during a run (denials, TLS failures, limits), added to
//!   its result;
//! - [`runner`]: selection, deadlines, parallelism, failures turned into results;
//! - [`redact`]: secrets removed from every result before it is shown;
//! - [`report`]: text, JSON and markdown output;
//! - [`service`]: `serve`, the HTTP API with checks hot-swapped from a watched folder, and the
//!   compile cache and trust policy the CLI shares.

pub mod config;
pub mod contract;
pub mod engine;
pub mod incidents;
pub mod limits;
pub mod loader;
pub mod model;
pub mod outbound;
pub mod policy;
pub mod redact;
pub mod report;
pub mod runner;
pub mod sandbox;
pub mod service;
pub mod tls;
