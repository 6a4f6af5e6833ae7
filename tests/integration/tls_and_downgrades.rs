//! An https registry trusted through the operator's CA bundle, and the
//! downgrades (https to http) the push check must refuse: a `Location` and a
//! token realm on plain http never receive anything.

use crate::support::doctor::Doctor;
use crate::support::guests::plugins_dir;
use crate::support::scripted::{Recorded, ScriptedServer, TestTls, respond};
use crate::{PUSH, diagnosis, evidence};
use serde_json::Value;

const UPLOAD: &str = "/v2/stellaops/doctor-test/blobs/uploads/";

/// Runs the push check with basic credentials against `url`, trusting `ca`.
fn run_push(url: &str, ca: Option<&TestTls>) -> Value {
    let plugins = plugins_dir(&["oci-push-check"]);
    let bundle = plugins.path().join("test-ca.pem");
    let mut doctor = Doctor::new(plugins.path())
        .set("OCI:RegistryUrl", url)
        .set("OCI:Username", "svc")
        .set("OCI:Password", "tls-svc-pw-2290")
        .set("OCI:TimeoutSeconds", "3");
    if let Some(ca) = ca {
        std::fs::write(&bundle, ca.ca_pem()).unwrap();
        doctor = doctor.set("Doctor:Tls:CaBundle", bundle.to_str().unwrap());
    }
    let (outcome, result) = doctor.run_check_json(PUSH);
    assert!(!outcome.all_output().contains("tls-svc-pw-2290"));
    result
}

#[test]
fn https_registry_is_trusted_through_the_operator_ca_bundle() {
    let tls = TestTls::new();
    let server =
        ScriptedServer::start_tls(&tls, |request: &Recorded| match request.method.as_str() {
            "POST" => respond(
                202,
                &[(
                    "Location",
                    "/v2/stellaops/doctor-test/blobs/uploads/t1?_state=s",
                )],
                "",
            ),
            _ => respond(204, &[], ""),
        });

    let result = run_push(&server.url, Some(&tls));

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "upload_cancelled"), "true");
}

#[test]
fn https_registry_with_an_unknown_issuer_names_the_cause() {
    let tls = TestTls::new();
    let server = ScriptedServer::start_tls(&tls, |_| respond(202, &[], ""));

    let result = run_push(&server.url, None);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("tls"), "{result:#}");
    assert!(
        evidence(&result, "tls_error").contains("unknown authority"),
        "{result:#}"
    );
    assert!(
        server.requests().is_empty(),
        "no request without a trusted handshake"
    );
}

#[test]
fn location_downgraded_to_http_is_not_followed() {
    let tls = TestTls::new();
    let plain = ScriptedServer::start(|_| respond(204, &[], ""));
    let location = format!(
        "http://localhost:{}{UPLOAD}d1?_state=s",
        plain.authority().rsplit(':').next().unwrap()
    );
    let server = ScriptedServer::start_tls(&tls, move |request: &Recorded| {
        match request.method.as_str() {
            "POST" => respond(202, &[("Location", location.as_str())], ""),
            _ => respond(204, &[], ""),
        }
    });

    let result = run_push(&server.url, Some(&tls));

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "upload_cancelled"), "false");
    assert!(
        evidence(&result, "cancel_error").contains("plain http"),
        "says why: {result:#}"
    );
    assert!(
        plain.requests().is_empty(),
        "nothing goes to the plain-http location"
    );
}

#[test]
fn token_realm_downgraded_to_http_gets_no_credentials() {
    let tls = TestTls::new();
    let tokens = ScriptedServer::start(|_| respond(200, &[], r#"{"token":"t"}"#));
    let challenge = format!(r#"Bearer realm="{}/token",service="registry""#, tokens.url);
    let server = ScriptedServer::start_tls(&tls, move |_| {
        respond(401, &[("WWW-Authenticate", challenge.as_str())], "")
    });

    let result = run_push(&server.url, Some(&tls));

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        diagnosis(&result).contains("refused to send the credentials"),
        "{result:#}"
    );
    assert!(
        tokens.requests().is_empty(),
        "the plain-http realm received nothing"
    );
}
