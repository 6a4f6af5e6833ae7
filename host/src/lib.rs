//! The Stella Ops doctor host: runs health checks compiled to WebAssembly components, each in
//! its own sandbox, and reports what they found.
//!
//! The modules follow the life of a check:
//!
//! - [`config`]: layered configuration (environment, JSON file, `--set`);
//! - [`contract`]: the `stellaops:doctor@0.1.0` bindings and their conversion to [`model`] types;
//! - [`loader`]: a plugins folder becomes validated, pre-linked checks with metadata;
//! - [`engine`]: the shared Wasmtime engine, linker and epoch ticker;
//! - [`policy`]: which HTTP origins a check may reach;
//! - [`sandbox`]: what a check can touch during one run (config, HTTP, stdio);
//! - [`runner`]: selection, deadlines, parallelism, failures turned into results;
//! - [`redact`]: secrets removed from every result before it is shown;
//! - [`report`]: text, JSON and markdown output.

pub mod config;
pub mod contract;
pub mod engine;
pub mod loader;
pub mod model;
pub mod policy;
pub mod redact;
pub mod report;
pub mod runner;
pub mod sandbox;
