//! What the host noticed during one run that the check's result must show: refused requests,
//! TLS failures, credentials sent in the clear, and limits that tripped.
//!
//! The guest only sees a `wasi:http` error code or a trap, so the host writes down why, while it
//! happens, and [`Incidents::annotate`] adds it to the result afterwards as evidence (and, where
//! it explains a failure, to the diagnosis).

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::limits::LimitHit;
use crate::model::{CheckResult, Severity};
use crate::policy::{AddressClass, Origin, allowed_hosts_key};

/// A request the host refused to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Where the request was going.
    pub origin: Origin,
    /// Why it was refused.
    pub reason: DenialReason,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenialReason {
    /// Its origin is not on the check's allowlist.
    NotAllowed,
    /// Its origin is allowed, but every address it resolved to is one the check may not reach.
    Address {
        /// The first refused address.
        address: IpAddr,
        /// What kind of address that is.
        class: AddressClass,
    },
}

impl Denial {
    /// One sentence saying why, for evidence and diagnosis.
    pub fn why(&self) -> String {
        let host = &self.origin.host;
        match &self.reason {
            DenialReason::NotAllowed => format!("{} is not an allowed origin", self.origin),
            DenialReason::Address { address, class } => {
                let what = if host.parse::<IpAddr>() == Ok(*address) {
                    format!("`{host}` is {}", class.described())
                } else {
                    format!("`{host}` resolved to {address}, {}", class.described())
                };
                match class {
                    AddressClass::CloudMetadata => format!(
                        "{what}; only an operator's entry naming that very address reaches it"
                    ),
                    _ => format!("{what} that the operator did not name"),
                }
            }
        }
    }

    /// What the operator would add to allow it, for the diagnosis.
    fn fix(&self, check_id: &str) -> String {
        let key = allowed_hosts_key(check_id);
        match &self.reason {
            DenialReason::NotAllowed => format!("allow it with `{key}`"),
            DenialReason::Address {
                address,
                class: AddressClass::CloudMetadata,
            } => {
                let literal = Origin {
                    host: address.to_string(),
                    ..self.origin.clone()
                };
                format!("if that is intended, add `{literal}` to `{key}`")
            }
            DenialReason::Address { .. } => {
                format!(
                    "if the check should reach it, add `{}` to `{key}`",
                    self.origin
                )
            }
        }
    }
}

/// The incidents of one run, shared between the store and the outbound requests it spawns.
#[derive(Debug, Clone, Default)]
pub struct Incidents {
    inner: Arc<Mutex<Recorded>>,
}

/// The incidents recorded so far; each list keeps the first occurrence of each entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Requests refused.
    pub denials: Vec<Denial>,
    /// TLS failures, each a sentence naming the peer and the cause.
    pub tls_errors: Vec<String>,
    /// Credentials sent over plain http to a host off this machine.
    pub insecure_transport: Vec<String>,
    /// Limits that tripped.
    pub limits: Vec<LimitHit>,
}

impl Incidents {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panic while holding the lock leaves the lists intact; keep using them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a refused request.
    pub fn denied(&self, denial: Denial) {
        push_new(&mut self.lock().denials, denial);
    }

    /// Records a TLS failure.
    pub fn tls_error(&self, cause: String) {
        push_new(&mut self.lock().tls_errors, cause);
    }

    /// Records credentials going over plain http.
    pub fn insecure_transport(&self, warning: String) {
        push_new(&mut self.lock().insecure_transport, warning);
    }

    /// Records a tripped limit.
    pub fn limit(&self, hit: LimitHit) {
        push_new(&mut self.lock().limits, hit);
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Recorded {
        self.lock().clone()
    }
}

fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

impl Recorded {
    /// Adds what was recorded to `result`: evidence always, and to the diagnosis of a result
    /// that is not a success the denials and limits that explain it.
    ///
    /// A diagnosis that already names the AllowedHosts key is taken to explain the denial itself.
    pub fn annotate(&self, result: &mut CheckResult, check_id: &str) {
        self.note_denials(result, check_id);
        push_joined(result, "tls_error", &self.tls_errors, "; ");
        push_joined(result, "insecure_transport", &self.insecure_transport, "; ");
        push_joined(result, "limit_exceeded", &self.limits, ", ");

        let failed = matches!(result.severity, Severity::Fail | Severity::Warn);
        // The check only saw "certificate error"; the cause is what the operator needs.
        let tls_untold: Vec<&str> = self
            .tls_errors
            .iter()
            .filter(|cause| !result.diagnosis.contains(cause.as_str()))
            .map(String::as_str)
            .collect();
        if failed && !tls_untold.is_empty() {
            result
                .diagnosis
                .push_str(&format!(" (TLS: {})", tls_untold.join("; ")));
        }

        let untold: Vec<String> = self
            .limits
            .iter()
            .filter(|hit| !result.diagnosis.contains(hit.key))
            .filter(|hit| hit.key != crate::limits::OUTPUT_KEY)
            .map(|hit| format!("{} `{}` = {}", hit.noun(), hit.key, hit.value))
            .collect();
        if failed && !untold.is_empty() {
            result
                .diagnosis
                .push_str(&format!(" (the host's {} was reached)", untold.join(", ")));
        }
    }

    fn note_denials(&self, result: &mut CheckResult, check_id: &str) {
        if self.denials.is_empty() {
            return;
        }
        let origins: Vec<String> = self.denials.iter().map(|d| d.origin.to_string()).collect();
        result.evidence.push("denied_outbound", origins.join(","));
        let reasons: Vec<String> = self.denials.iter().map(Denial::why).collect();
        result.evidence.push("denied_reason", reasons.join("; "));

        if result.diagnosis.contains("AllowedHosts") {
            return;
        }
        let notes: Vec<String> = self
            .denials
            .iter()
            .map(|denial| match denial.reason {
                DenialReason::NotAllowed => denial.origin.to_string(),
                DenialReason::Address { .. } => format!("{}: {}", denial.origin, denial.why()),
            })
            .collect();
        // One fix is enough: the keys are the same, and the first denial is usually the cause.
        let fix = self.denials[0].fix(check_id);
        result
            .diagnosis
            .push_str(&format!(" (the host denied {}; {fix})", notes.join(", ")));
    }
}

fn push_joined<T: fmt::Display>(result: &mut CheckResult, key: &str, items: &[T], sep: &str) {
    if items.is_empty() {
        return;
    }
    let text: Vec<String> = items.iter().map(ToString::to_string).collect();
    result.evidence.push(key, text.join(sep));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Limits, MEMORY_KEY, OUTPUT_KEY, RESPONSE_BODY_KEY};
    use crate::model::Evidence;

    fn failed(diagnosis: &str) -> CheckResult {
        CheckResult {
            severity: Severity::Fail,
            diagnosis: diagnosis.into(),
            evidence: Evidence::default(),
            likely_causes: vec![],
            remediation: vec![],
            verification_command: None,
        }
    }

    fn origin(text: &str) -> Origin {
        Origin::parse(text).unwrap()
    }

    fn recorded(denials: Vec<Denial>) -> Recorded {
        Recorded {
            denials,
            ..Recorded::default()
        }
    }

    #[test]
    fn policy_denials_become_evidence_and_a_hint() {
        let mut result = failed("cannot reach the token service.");
        let denials = vec![
            Denial {
                origin: origin("https://auth.example"),
                reason: DenialReason::NotAllowed,
            },
            Denial {
                origin: origin("http://10.0.0.1:8080"),
                reason: DenialReason::NotAllowed,
            },
        ];

        recorded(denials).annotate(&mut result, "check.a");

        assert_eq!(
            result.evidence.0[0],
            (
                "denied_outbound".to_string(),
                "https://auth.example,http://10.0.0.1:8080".to_string()
            )
        );
        assert_eq!(
            result.diagnosis,
            "cannot reach the token service. (the host denied https://auth.example, http://10.0.0.1:8080; allow it with `Doctor:Plugins:check.a:AllowedHosts`)"
        );
    }

    #[test]
    fn an_address_denial_says_what_the_name_resolved_to() {
        let mut result = failed("request failed.");
        let denial = Denial {
            origin: origin("http://metadata.example"),
            reason: DenialReason::Address {
                address: "169.254.169.254".parse().unwrap(),
                class: AddressClass::CloudMetadata,
            },
        };

        recorded(vec![denial]).annotate(&mut result, "check.a");

        let reason = "`metadata.example` resolved to 169.254.169.254, a cloud metadata address; only an operator's entry naming that very address reaches it";
        assert_eq!(
            result.evidence.0[1],
            ("denied_reason".into(), reason.into())
        );
        assert_eq!(
            result.diagnosis,
            format!(
                "request failed. (the host denied http://metadata.example: {reason}; if that is intended, add `http://169.254.169.254` to `Doctor:Plugins:check.a:AllowedHosts`)"
            )
        );
    }

    #[test]
    fn a_loopback_literal_is_named_as_such() {
        let denial = Denial {
            origin: origin("http://127.0.0.1:5000"),
            reason: DenialReason::Address {
                address: "127.0.0.1".parse().unwrap(),
                class: AddressClass::Loopback,
            },
        };
        assert_eq!(
            denial.why(),
            "`127.0.0.1` is a loopback address that the operator did not name"
        );
        assert_eq!(
            denial.fix("c"),
            "if the check should reach it, add `http://127.0.0.1:5000` to `Doctor:Plugins:c:AllowedHosts`"
        );
    }

    #[test]
    fn a_diagnosis_that_already_names_allowed_hosts_is_left_alone() {
        let mut result = failed("add it to Doctor:Plugins:check.a:AllowedHosts");
        let denial = Denial {
            origin: origin("https://x"),
            reason: DenialReason::NotAllowed,
        };
        recorded(vec![denial]).annotate(&mut result, "check.a");
        assert_eq!(
            result.diagnosis,
            "add it to Doctor:Plugins:check.a:AllowedHosts"
        );
        assert_eq!(result.evidence.0.len(), 2);
    }

    #[test]
    fn tripped_limits_are_evidence_and_explain_a_failure_but_not_a_pass() {
        let limits = Limits::default();
        let recorded = Recorded {
            limits: vec![limits.hit(RESPONSE_BODY_KEY), limits.hit(OUTPUT_KEY)],
            tls_errors: vec!["certificate for r:443 has expired".into()],
            ..Recorded::default()
        };

        let mut result = failed("could not read the body.");
        recorded.annotate(&mut result, "c");
        assert_eq!(
            result.evidence.0,
            vec![
                (
                    "tls_error".into(),
                    "certificate for r:443 has expired".into()
                ),
                (
                    "limit_exceeded".into(),
                    "Doctor:Limits:ResponseBodyBytes=1048576, Doctor:Limits:OutputBytes=65536"
                        .into()
                ),
            ]
        );
        assert_eq!(
            result.diagnosis,
            "could not read the body. (TLS: certificate for r:443 has expired) (the host's response body limit `Doctor:Limits:ResponseBodyBytes` = 1048576 was reached)"
        );

        let mut passed = failed("fine");
        passed.severity = Severity::Pass;
        recorded.annotate(&mut passed, "c");
        assert_eq!(passed.diagnosis, "fine");
    }

    #[test]
    fn a_diagnosis_naming_the_limit_is_not_repeated() {
        let hit = Limits::default().hit(MEMORY_KEY);
        let mut result = failed(&hit.diagnosis());
        let recorded = Recorded {
            limits: vec![hit.clone()],
            ..Recorded::default()
        };
        recorded.annotate(&mut result, "c");
        assert_eq!(result.diagnosis, hit.diagnosis());
    }

    #[test]
    fn incidents_keep_the_first_of_each() {
        let incidents = Incidents::default();
        incidents.tls_error("a".into());
        incidents.tls_error("a".into());
        incidents.limit(Limits::default().hit(MEMORY_KEY));
        incidents.limit(Limits::default().hit(MEMORY_KEY));
        let snapshot = incidents.snapshot();
        assert_eq!(snapshot.tls_errors, vec!["a".to_string()]);
        assert_eq!(snapshot.limits.len(), 1);
    }
}
