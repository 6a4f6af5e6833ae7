//! `test.well-behaved`: a check that does a little honest work and passes.
//! The sandbox tests run it next to every hostile component: whatever the
//! hostile one does, this one must still pass in the same run.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "stellaops:doctor/doctor-check",
        generate_all,
    });
}

use bindings::exports::stellaops::doctor::check::Guest;
use bindings::stellaops::doctor::types::{CheckMetadata, CheckResult, EvidenceItem, Severity};

struct WellBehaved;

impl Guest for WellBehaved {
    fn metadata() -> CheckMetadata {
        CheckMetadata {
            id: "test.well-behaved".into(),
            name: "Well-behaved test check".into(),
            description: "Computes a checksum and passes.".into(),
            plugin_id: "stellaops.doctor.tests".into(),
            default_severity: Severity::Fail,
            tags: vec!["test".into()],
            estimated_duration_ms: 1,
            config_keys: vec![],
            outbound_hosts: vec![],
            related_checks: vec![],
        }
    }

    fn run() -> CheckResult {
        let checksum = (0u64..10_000).fold(0u64, |acc, n| acc.wrapping_mul(31).wrapping_add(n));
        CheckResult {
            severity: Severity::Pass,
            diagnosis: "the well-behaved check ran to the end".into(),
            evidence: vec![EvidenceItem {
                key: "checksum".into(),
                value: checksum.to_string(),
            }],
            likely_causes: vec![],
            remediation: vec![],
            verification_command: None,
        }
    }
}

bindings::export!(WellBehaved with_types_in bindings);
