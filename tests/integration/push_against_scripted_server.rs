//! The push check against a scripted server, for the answers of other vendors
//! and for failures a local distribution cannot be made to produce.

use crate::support::doctor::Doctor;
use crate::support::guests::plugins_dir;
use crate::support::registry::free_port;
use crate::support::scripted::{Recorded, Reply, ScriptedServer, respond};
use crate::{PUSH, diagnosis, evidence};
use serde_json::Value;

const UPLOADS: &str = "/v2/stellaops/doctor-test/blobs/uploads/";
const JSON: (&str, &str) = ("Content-Type", "application/json");
const TEXT: (&str, &str) = ("Content-Type", "text/plain; charset=utf-8");

/// Runs the push check with basic credentials against `url`.
fn run_push(url: &str) -> Value {
    run_push_logging(url).0
}

/// [`run_push`], with what the host logged on stderr.
fn run_push_logging(url: &str) -> (Value, String) {
    let plugins = plugins_dir(&["oci-push-check"]);
    let (outcome, result) = Doctor::new(plugins.path())
        .set("OCI:RegistryUrl", url)
        .set("OCI:Username", "svc")
        .set("OCI:Password", "svc-password-31")
        .set("OCI:TimeoutSeconds", "2")
        .run_check_json(PUSH);
    assert!(!outcome.all_output().contains("svc-password-31"));
    (result, outcome.stderr)
}

/// A server that answers the upload POST with `post` and anything else 204.
fn server_answering_post(post: impl Fn() -> Reply + Send + Sync + 'static) -> ScriptedServer {
    ScriptedServer::start(move |request: &Recorded| {
        if request.method == "POST" {
            post()
        } else {
            respond(204, &[], "")
        }
    })
}

#[test]
fn forbidden_denied_fails_as_no_push_permission_not_bad_password() {
    let server = server_answering_post(|| {
        let body = r#"{"errors":[{"code":"DENIED","message":"permission_denied: write_package"}]}"#;
        respond(403, &[JSON], body)
    });

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(evidence(&result, "status_code"), "403");
    assert_eq!(evidence(&result, "error_code"), "DENIED");
    let text = diagnosis(&result);
    assert!(text.contains("push"), "{text}");
    assert!(!text.contains("invalid credentials"), "{text}");
    assert!(
        result
            .to_string()
            .contains("permission_denied: write_package")
    );
}

#[test]
fn name_unknown_quotes_the_registry_error() {
    let server = server_answering_post(|| {
        let body = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"stellaops/doctor-test"}}]}"#;
        respond(404, &[JSON], body)
    });

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(evidence(&result, "status_code"), "404");
    assert_eq!(evidence(&result, "error_code"), "NAME_UNKNOWN");
    assert!(
        result["diagnosis"]
            .as_str()
            .unwrap()
            .contains("repository name not known to registry")
    );
}

#[test]
fn plain_text_error_body_is_quoted_from_its_start() {
    let server = server_answering_post(|| respond(404, &[TEXT], "404 page not found\n"));

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(evidence(&result, "status_code"), "404");
    assert!(
        result.to_string().contains("404 page not found"),
        "{result:#}"
    );
}

#[test]
fn read_only_registry_405_is_reported_with_its_message() {
    let server = server_answering_post(|| respond(405, &[TEXT], "registry is in read-only mode\n"));

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(evidence(&result, "status_code"), "405");
    assert!(result.to_string().contains("read-only mode"), "{result:#}");
}

#[test]
fn rate_limited_429_warns_with_retry_after() {
    let server = server_answering_post(|| {
        let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
        respond(429, &[JSON, ("Retry-After", "30")], body)
    });

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "warn", "{result:#}");
    assert_eq!(evidence(&result, "error_code"), "TOOMANYREQUESTS");
    assert_eq!(evidence(&result, "retry_after"), "30");
}

#[test]
fn server_error_500_fails_quoting_the_code() {
    let server = server_answering_post(|| {
        let body = r#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"storage backend down"}]}"#;
        respond(500, &[JSON], body)
    });

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(evidence(&result, "status_code"), "500");
    assert_eq!(evidence(&result, "error_code"), "UNKNOWN");
}

#[test]
fn each_error_status_is_quoted_from_an_oci_or_a_plain_body() {
    for (status, severity) in [(404, "fail"), (405, "fail"), (429, "warn"), (500, "fail")] {
        let oci = server_answering_post(move || {
            let body = r#"{"errors":[{"code":"DENIED","message":"scripted refusal"}]}"#;
            respond(status, &[JSON], body)
        });
        let result = run_push(&oci.url);
        assert_eq!(result["severity"], severity, "{status}: {result:#}");
        assert_eq!(evidence(&result, "status_code"), status.to_string());
        assert_eq!(
            evidence(&result, "error_code"),
            "DENIED",
            "{status}: {result:#}"
        );
        assert_eq!(evidence(&result, "error_message"), "scripted refusal");

        let plain = server_answering_post(move || {
            respond(status, &[TEXT], "<html>scripted plain refusal</html>\n")
        });
        let result = run_push(&plain.url);
        assert_eq!(result["severity"], severity, "{status}: {result:#}");
        assert!(
            evidence(&result, "response_body_excerpt").contains("scripted plain refusal"),
            "{status}: {result:#}"
        );
        assert!(
            diagnosis(&result).contains("scripted plain refusal"),
            "the diagnosis quotes the body: {result:#}"
        );
    }
}

#[test]
fn server_that_never_answers_fails_naming_a_timeout() {
    let server = server_answering_post(|| Reply::Hang);

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        diagnosis(&result).contains("timed out") || diagnosis(&result).contains("timeout"),
        "{result:#}"
    );
}

#[test]
fn closed_port_fails_naming_connection_refused() {
    let url = format!("http://127.0.0.1:{}", free_port());

    let (result, log) = run_push_logging(&url);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("refused"), "{result:#}");
    // The verdict is the check's to give: the host itself has nothing to warn about.
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn tls_failure_is_named() {
    // A plain-HTTP server spoken to over https: the handshake fails.
    let server = server_answering_post(|| respond(202, &[], ""));
    let url = format!("https://{}", server.authority());

    let (result, log) = run_push_logging(&url);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("tls"), "{result:#}");
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn relative_location_is_cancelled_with_its_state_kept_exactly() {
    let location = format!("{UPLOADS}8d1e2f?_state=aB%2Bc%2F%3D%3D&x=1");
    let expected = location.clone();
    let server = server_answering_post(move || {
        respond(
            202,
            &[
                ("Location", location.as_str()),
                ("Docker-Upload-UUID", "8d1e2f"),
            ],
            "",
        )
    });

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "upload_cancelled"), "true");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].target.as_str()),
        ("POST", UPLOADS)
    );
    assert_eq!(requests[1].method, "DELETE");
    assert_eq!(requests[1].target, expected);
    assert!(
        requests[1].header("authorization").is_some(),
        "same origin gets credentials"
    );
}

#[test]
fn absolute_location_on_the_registry_is_cancelled() {
    let server = absolute_location_server();

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "upload_cancelled"), "true");
    let delete = &server.requests()[1];
    assert_eq!(delete.method, "DELETE");
    assert_eq!(delete.target, format!("{UPLOADS}77aa?_state=zz"));
}

/// A server whose 202 carries an absolute Location naming itself (the Host
/// header the client sent tells it its own address).
fn absolute_location_server() -> ScriptedServer {
    ScriptedServer::start(|request: &Recorded| match request.method.as_str() {
        "POST" => {
            let host = request.header("host").unwrap_or("127.0.0.1").to_string();
            let location = format!("http://{host}{UPLOADS}77aa?_state=zz");
            respond(202, &[("Location", location.as_str())], "")
        }
        _ => respond(204, &[], ""),
    })
}

#[test]
fn failed_cancel_is_not_a_failed_check() {
    let server = ScriptedServer::start(|request: &Recorded| match request.method.as_str() {
        "POST" => respond(
            202,
            &[(
                "Location",
                "/v2/stellaops/doctor-test/blobs/uploads/1?_state=s",
            )],
            "",
        ),
        _ => respond(
            404,
            &[JSON],
            r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}"#,
        ),
    });

    let result = run_push(&server.url);

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "upload_cancelled"), "false");
}

#[test]
fn unresolvable_registry_host_fails_naming_dns() {
    let result = run_push("http://registry.doctor-test.invalid");

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(diagnosis(&result).contains("dns"), "{result:#}");
}
