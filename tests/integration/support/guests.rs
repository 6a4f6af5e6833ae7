//! Builds the check components from source, once per test process.
//!
//! The build uses its own target directory: the `cargo test` that runs us
//! holds the lock on the workspace's, and a nested cargo waiting on that lock
//! would never finish.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every guest package the tests use; built together in one cargo call.
const PACKAGES: &[&str] = &[
    "oci-push-check",
    "oci-push-edge",
    "misbehaving-check",
    "well-behaved-check",
    "other-world",
    "future-contract-check",
    "broken-metadata-check",
];

/// The workspace root (the host crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate lives inside the workspace")
        .to_path_buf()
}

/// The built `.wasm` of a guest package, building all of them on first use.
pub fn component(package: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    assert!(
        PACKAGES.contains(&package),
        "`{package}` is not a test guest"
    );
    let out = BUILT.get_or_init(build_all);
    // cargo names a library's artifact with underscores and a binary's as the package is named.
    let library = out.join(format!("{}.wasm", package.replace('-', "_")));
    if library.exists() {
        library
    } else {
        out.join(format!("{package}.wasm"))
    }
}

fn build_all() -> PathBuf {
    let root = workspace_root();
    let target_dir = root.join("target").join("test-guests");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--quiet", "--target", "wasm32-wasip2"]);
    for package in PACKAGES {
        cargo.args(["-p", package]);
    }
    let output = cargo.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building the test guests failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir.join("wasm32-wasip2").join("debug")
}

/// A fresh plugins folder holding copies of the given components.
pub fn plugins_dir(packages: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for package in packages {
        let source = component(package);
        fs::copy(&source, dir.path().join(format!("{package}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", source.display()));
    }
    dir
}
