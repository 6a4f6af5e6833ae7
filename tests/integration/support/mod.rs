//! Real parts for the integration tests: check components built from source,
//! Debian's `docker-registry` on a free loopback port, a scripted HTTP server
//! for answers a real registry cannot be made to give, and the real
//! `stella-doctor` binary.

pub mod doctor;
pub mod edge_proxy;
pub mod guests;
pub mod registry;
pub mod scripted;
pub mod service;
pub mod token_server;
