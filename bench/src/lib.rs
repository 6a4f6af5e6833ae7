//! What running doctor checks in WebAssembly costs, measured side by side with a native build of
//! the same probe. `make bench` runs the `doctor-bench` harness, which prints the tables and
//! rewrites the measured section of `BENCHMARKS.md`.
//!
//! - [`http1`]: a small blocking HTTP/1.1 client with keep-alive, for the native probe and the
//!   load generator;
//! - [`native`]: the probe's [`oci_probe::http::Transport`] over [`http1`], so `native-probe`
//!   runs the very code the component runs;
//! - [`registry`]: Debian's `docker-registry` with htpasswd users, on a free loopback port;
//! - [`stub`]: a registry stub that answers the push probe in microseconds;
//! - [`stats`]: medians, percentiles and table formatting;
//! - [`size`]: the custom sections of a component, to show what stripping removes.

pub mod http1;
pub mod native;
pub mod registry;
pub mod size;
pub mod stats;
pub mod stub;
