//! A check of the right world whose `metadata()` panics: the host cannot learn
//! what it is, so it must refuse to load it, name the file and the reason, and
//! still run every other check. Built from source by the tests; never shipped.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "stellaops:doctor/doctor-check",
        generate_all,
    });
}

use bindings::exports::stellaops::doctor::check::Guest;
use bindings::stellaops::doctor::types::{CheckMetadata, CheckResult, Severity};

struct BrokenMetadata;

impl Guest for BrokenMetadata {
    fn metadata() -> CheckMetadata {
        panic!("metadata is broken on purpose")
    }

    fn run() -> CheckResult {
        CheckResult {
            severity: Severity::Pass,
            diagnosis: "never reached: the host must not run a check it could not describe".into(),
            evidence: vec![],
            likely_causes: vec![],
            remediation: vec![],
            verification_command: None,
        }
    }
}

bindings::export!(BrokenMetadata with_types_in bindings);
