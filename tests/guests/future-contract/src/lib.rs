//! A component that exports `stellaops:doctor/check@0.2.0`, a contract
//! version newer than the host's: the host must refuse it at load time and
//! say which version it supports.

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "doctor-check" });
}

struct Future;

impl bindings::exports::stellaops::doctor::check::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
}

bindings::export!(Future with_types_in bindings);
