//! Soak: the hostile test components run 200 rounds in one host process and
//! the host's resident memory must level off. A leak per run (a store, an
//! instance, a captured buffer, a connection kept past its run) would show as
//! steady growth across rounds.
//!
//! This is its own test binary, so nothing else running in the process moves
//! the numbers; it drives the host library directly, the way `stella-doctor
//! serve` does for every request.

// The shared support code serves the integration tests too; this binary uses
// only the guest builder.
#[allow(dead_code)]
#[path = "../integration/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;
use stella_doctor::config::Settings;
use stella_doctor::engine::DoctorEngine;
use stella_doctor::loader;
use stella_doctor::model::Severity;
use stella_doctor::redact::Redactor;
use stella_doctor::runner::{self, RunOptions};
use support::guests::{component, plugins_dir};

const ROUNDS: usize = 200;
/// Every hostile behaviour that needs no server of its own (the cloud-metadata one is left to
/// `sandbox_hostile.rs`, which runs it without a network).
const MODES: &[&str] = &[
    "panic",
    "trap",
    "loop",
    "grow-memory",
    "recurse",
    "flood",
    "echo-secret",
    "read-env",
    "open-file",
    "egress",
    "read-undeclared",
    "declared-loopback",
    "smuggle-secret",
    "cut-secret",
];
const SECRET: &str = "soak-Secret-value-00d1";
/// Growth allowed between the warmed-up sample and the last one. A leak of
/// even 100 KiB per run would exceed it (200 rounds × 14 runs).
const ALLOWED_GROWTH: u64 = 48 << 20;

#[test]
fn hostile_set_200_rounds_in_one_host_does_not_keep_growing() {
    let plugins = plugins_dir(&["misbehaving-check", "well-behaved-check"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let samples = runtime.block_on(async {
        let engine = Arc::new(DoctorEngine::new().expect("engine"));
        let loaded = loader::load_dir(&engine, plugins.path())
            .await
            .expect("plugins folder");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let broken = broken_components();

        let mut samples = Vec::new();
        for round in 0..ROUNDS {
            for mode in MODES {
                run_round(&engine, &loaded.checks, mode).await;
            }
            // The components that must not load are refused again every round.
            let refused = loader::load_dir(&engine, broken.path())
                .await
                .expect("broken components folder");
            assert!(
                refused.checks.is_empty(),
                "{round}: a broken component loaded"
            );
            assert_eq!(refused.errors.len(), 4, "{round}: {:?}", refused.errors);
            if round % 20 == 19 {
                samples.push(resident_bytes());
            }
        }
        samples
    });

    // The first samples include one-time growth (code, caches, allocator
    // arenas); from the second on, memory must stay level.
    let (warm, last) = (samples[1], *samples.last().unwrap());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let trace: Vec<String> = samples.iter().map(|&b| format!("{:.1}", mib(b))).collect();
    eprintln!("resident MiB every 20 rounds: {}", trace.join(", "));
    assert!(
        last <= warm + ALLOWED_GROWTH,
        "resident memory kept growing: {:.1} MiB after 40 rounds, {:.1} MiB after {ROUNDS} (samples every 20 rounds, MiB: {})",
        mib(warm),
        mib(last),
        trace.join(", ")
    );
}

/// A folder of the hostile set's components that must not load: another world, a newer
/// contract version, a core module and a truncated component.
fn broken_components() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let well = std::fs::read(component("well-behaved-check")).expect("well-behaved build");
    let files: [(&str, Vec<u8>); 4] = [
        (
            "other-world.wasm",
            std::fs::read(component("other-world")).expect("other-world build"),
        ),
        (
            "future.wasm",
            std::fs::read(component("future-contract-check")).expect("future-contract build"),
        ),
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec()),
        ("truncated.wasm", well[..well.len() / 2].to_vec()),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write a broken component");
    }
    dir
}

async fn run_round(engine: &Arc<DoctorEngine>, checks: &[loader::LoadedCheck], mode: &str) {
    let mut settings = Settings::default();
    settings.set("Test:Mode", mode);
    settings.set("Test:Secret", SECRET);
    settings.set("Test:Url", "http://127.0.0.1:9/");
    settings.set("Doctor:Limits:MemoryMiB", "32");
    let options = RunOptions::from_settings(&settings)
        .expect("limits")
        .with_timeout(Duration::from_millis(200));
    let redactor = Arc::new(Redactor::new(settings.secret_values(["Test:Secret"])));

    let runs = runner::run_checks(
        engine.clone(),
        checks.to_vec(),
        Arc::new(settings),
        redactor,
        options,
    )
    .await;

    for run in &runs {
        let text = format!("{:?} {} {}", run.result, run.stdout, run.stderr).to_lowercase();
        assert!(
            !text.contains(&SECRET.to_lowercase()),
            "{mode}: a secret leaked from {}",
            run.check_id
        );
        if run.check_id == "test.well-behaved" {
            assert_eq!(
                run.result.severity,
                Severity::Pass,
                "{mode}: the well-behaved check failed"
            );
        }
    }
}

/// This process's resident set size, from `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}
