//! The check end to end against a scripted registry: what an operator would see.

use std::collections::HashMap;

use super::*;
use crate::http::TransportError;
use crate::testing::{BASIC_VALUE, FakeRegistry, PASSWORD};

const TOKEN: &str = "static-token-XYZ-987";

fn settings(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = [
        ("OCI:RegistryUrl", "https://registry.example"),
        ("OCI:Username", "robot"),
        ("OCI:Password", PASSWORD),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    map.retain(|_, v| !v.is_empty());
    map
}

/// Runs the check with `settings` against `registry`; returns the result and what was sent.
fn run_against(
    settings: &HashMap<String, String>,
    registry: FakeRegistry,
) -> (CheckResult, FakeRegistry) {
    let mut used = None;
    let result = run(|key| settings.get(key).cloned(), |_| used.insert(registry));
    (result, used.unwrap_or_default())
}

// `run` takes the transport by value through `connect`; a `&mut` lets the test keep it.
impl Transport for &mut FakeRegistry {
    fn send(
        &mut self,
        req: &crate::http::Request,
    ) -> Result<crate::http::Response, TransportError> {
        (**self).send(req)
    }
}

fn run_basic(registry: FakeRegistry) -> (CheckResult, FakeRegistry) {
    run_against(&settings(&[]), registry)
}

const JSON_DENIED: &str =
    r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;

#[test]
fn accepted_upload_passes_and_is_cancelled() {
    let registry = FakeRegistry::new()
        .answer(
            202,
            &[(
                "Location",
                "/v2/stellaops/doctor-test/blobs/uploads/1?_state=s",
            )],
            "",
        )
        .answer(204, &[], "");

    let (result, registry) = run_basic(registry);

    assert_eq!(result.severity, Severity::Pass, "{result:#?}");
    assert_eq!(result.evidence_value("upload_cancelled"), Some("true"));
    assert_eq!(result.evidence_value("cancel_status"), Some("204"));
    assert!(result.remediation.is_empty());
    assert!(result.likely_causes.is_empty());
    assert_eq!(registry.requests.len(), 2);
}

#[test]
fn failed_cancel_still_passes_and_says_so() {
    let registry = FakeRegistry::new()
        .answer(202, &[("Location", "/v2/x/blobs/uploads/1")], "")
        .answer(
            404,
            &[],
            r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"m"}]}"#,
        );

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Pass);
    assert_eq!(result.evidence_value("upload_cancelled"), Some("false"));
    assert_eq!(result.evidence_value("cancel_status"), Some("404"));
    assert!(
        result.diagnosis.contains("harmless"),
        "{}",
        result.diagnosis
    );
}

#[test]
fn cancel_lost_in_transport_still_passes() {
    let registry = FakeRegistry::new()
        .answer(202, &[("Location", "/v2/x/blobs/uploads/1")], "")
        .fail(TransportError::Timeout);

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Pass);
    assert_eq!(result.evidence_value("cancel_error"), Some("timed out"));
}

#[test]
fn accepted_upload_without_location_passes_with_a_note() {
    let (result, registry) = run_basic(FakeRegistry::new().answer(202, &[], ""));

    assert_eq!(result.severity, Severity::Pass);
    assert_eq!(result.evidence_value("upload_cancelled"), Some("false"));
    assert!(
        result.diagnosis.contains("no `Location`"),
        "{}",
        result.diagnosis
    );
    assert_eq!(registry.requests.len(), 1);
}

#[test]
fn wrong_password_fails_with_invalid_credentials() {
    let challenge = r#"Basic realm="registry""#;
    let registry = FakeRegistry::new().answer(
        401,
        &[("WWW-Authenticate", challenge)],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    );

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        result
            .diagnosis
            .to_lowercase()
            .contains("invalid credentials")
    );
    assert_eq!(result.evidence_value("status_code"), Some("401"));
    assert_eq!(result.evidence_value("error_code"), Some("UNAUTHORIZED"));
    assert_eq!(result.evidence_value("auth_challenge"), Some(challenge));
    assert!(
        result.likely_causes[0].contains("wrong"),
        "{:?}",
        result.likely_causes
    );
}

#[test]
fn unauthorized_with_a_denied_body_puts_missing_grant_first() {
    let challenge = r#"Basic realm="registry""#;
    let registry = FakeRegistry::new().answer(401, &[("www-authenticate", challenge)], JSON_DENIED);

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        result.likely_causes[0].contains("write permission"),
        "{:?}",
        result.likely_causes
    );
}

#[test]
fn forbidden_fails_as_valid_credentials_without_push_permission() {
    let (result, _) = run_basic(FakeRegistry::new().answer(403, &[], JSON_DENIED));

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        result
            .diagnosis
            .contains("credentials are valid but do not permit push"),
        "{}",
        result.diagnosis
    );
    assert!(
        result
            .diagnosis
            .contains("requested access to the resource is denied")
    );
    assert_eq!(result.evidence_value("error_code"), Some("DENIED"));
    assert_eq!(
        result.evidence_value("error_message"),
        Some("requested access to the resource is denied")
    );
    assert_eq!(result.remediation.len(), 3, "one step per deployment style");
}

#[test]
fn unknown_repository_fails_quoting_the_registry() {
    let body =
        r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;

    let (result, _) = run_basic(FakeRegistry::new().answer(404, &[], body));

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        result
            .diagnosis
            .contains("NAME_UNKNOWN: repository name not known to registry")
    );
}

#[test]
fn read_only_registry_fails_quoting_the_plain_text_body() {
    let registry = FakeRegistry::new().answer(405, &[], "registry is in read-only mode\n");

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        result.diagnosis.contains("read-only"),
        "{}",
        result.diagnosis
    );
    assert_eq!(
        result.evidence_value("response_body_excerpt"),
        Some("registry is in read-only mode")
    );
    assert_eq!(result.evidence_value("error_code"), None);
}

#[test]
fn rate_limit_warns_and_quotes_retry_after() {
    let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
    let registry = FakeRegistry::new().answer(429, &[("Retry-After", "30")], body);

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Warn);
    assert_eq!(result.evidence_value("retry_after"), Some("30"));
    assert!(
        result.diagnosis.contains("retry after 30"),
        "{}",
        result.diagnosis
    );
}

#[test]
fn unavailable_registry_warns_and_other_server_errors_fail() {
    let (unavailable, _) = run_basic(FakeRegistry::new().answer(503, &[], "<html>down</html>"));
    let (broken, _) = run_basic(FakeRegistry::new().answer(500, &[], ""));

    assert_eq!(unavailable.severity, Severity::Warn);
    assert_eq!(broken.severity, Severity::Fail);
    assert!(broken.diagnosis.contains("(500)"), "{}", broken.diagnosis);
}

#[test]
fn unexpected_status_fails_naming_it() {
    let registry = FakeRegistry::new().answer(302, &[("Location", "https://sso.example/")], "");

    let (result, registry) = run_basic(registry);

    assert_eq!(result.severity, Severity::Fail);
    assert!(result.diagnosis.contains("302"), "{}", result.diagnosis);
    assert_eq!(registry.requests.len(), 1, "redirects are not followed");
}

#[test]
fn transport_failures_fail_naming_what_went_wrong() {
    let cases = [
        (TransportError::ConnectionRefused, "refused"),
        (TransportError::Dns, "dns"),
        (
            TransportError::Tls("unknown issuer".into()),
            "unknown issuer",
        ),
        (TransportError::Timeout, "timed out after 10 seconds"),
        (TransportError::Other("reset".into()), "reset"),
    ];
    for (error, phrase) in cases {
        let (result, _) = run_basic(FakeRegistry::new().fail(error.clone()));

        assert_eq!(result.severity, Severity::Fail, "{error:?}");
        assert!(
            result.diagnosis.contains(phrase),
            "{error:?}: {}",
            result.diagnosis
        );
        assert!(!result.remediation.is_empty(), "{error:?}");
    }
}

#[test]
fn denied_request_names_the_host_and_the_allowlist_key() {
    let denied = TransportError::Denied {
        origin: "https://registry.example".into(),
    };

    let (result, _) = run_basic(FakeRegistry::new().fail(denied));

    assert_eq!(result.severity, Severity::Fail);
    assert!(result.diagnosis.contains("`https://registry.example`"));
    assert!(
        result
            .diagnosis
            .contains("Doctor:Plugins:check.integration.oci.push:AllowedHosts")
    );
    assert_eq!(result.evidence_value("transport_error"), Some("denied"));
}

#[test]
fn evidence_keys_come_in_a_stable_order() {
    let registry = FakeRegistry::new().answer(403, &[], JSON_DENIED);

    let (result, _) = run_basic(registry);

    let keys: Vec<&str> = result.evidence.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "registry_url",
            "repository",
            "auth_method",
            "username",
            "status_code",
            "error_code",
            "error_message",
            "duration_ms"
        ]
    );
}

#[test]
fn no_secret_appears_anywhere_in_any_result() {
    let answers = [
        FakeRegistry::new()
            .answer(202, &[("Location", "https://elsewhere.example/u?x=1")], "")
            .answer(204, &[], ""),
        FakeRegistry::new().answer(401, &[("WWW-Authenticate", "Basic realm=\"r\"")], ""),
        FakeRegistry::new().answer(403, &[], JSON_DENIED),
        FakeRegistry::new().fail(TransportError::Timeout),
    ];
    let token_settings = settings(&[
        ("OCI:Username", ""),
        ("OCI:Password", ""),
        ("OCI:Token", TOKEN),
    ]);

    for registry in answers {
        for settings in [settings(&[]), token_settings.clone()] {
            let (result, _) = run_against(&settings, registry.clone());
            let json = serde_json::to_string(&result).unwrap();

            for secret in [PASSWORD, BASIC_VALUE, TOKEN] {
                assert!(!json.contains(secret), "{secret} leaked: {json}");
            }
        }
    }
}

#[test]
fn bearer_token_is_reported_as_static_bearer_and_used_in_commands_as_a_variable() {
    let token_settings = settings(&[
        ("OCI:Username", ""),
        ("OCI:Password", ""),
        ("OCI:Token", TOKEN),
    ]);
    let (result, registry) = run_against(&token_settings, FakeRegistry::new().answer(403, &[], ""));

    assert_eq!(result.evidence_value("auth_method"), Some("bearer-static"));
    assert_eq!(
        registry.requests[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let commands = serde_json::to_string(&result.remediation).unwrap();
    assert!(commands.contains("$OCI_TOKEN"), "{commands}");
}

#[test]
fn remediation_commands_name_the_real_registry_and_repository() {
    let (result, _) = run_basic(FakeRegistry::new().answer(403, &[], JSON_DENIED));

    let commands: Vec<&String> = result
        .remediation
        .iter()
        .flat_map(|s| &s.commands)
        .collect();
    assert!(commands.iter().any(|c| c.contains(
        "curl -i -X POST -H 'Content-Length: 0' -u \"$OCI_USERNAME:$OCI_PASSWORD\" \
         https://registry.example/v2/stellaops/doctor-test/blobs/uploads/"
    )));
    assert!(
        commands
            .iter()
            .any(|c| c.contains("--set oci.registryUrl=https://registry.example"))
    );
    assert_eq!(
        result.verification_command.as_deref(),
        Some("stella-doctor run --check check.integration.oci.push")
    );
}

/// Each of `expected` stands somewhere in the commands of `step`.
fn assert_commands_contain(step: &crate::model::RemediationStep, expected: &[&str]) {
    let commands = step.commands.join("\n");
    for expected in expected {
        assert!(commands.contains(expected), "{expected}: {commands}");
    }
}

#[test]
fn remediation_covers_compose_systemd_and_helm_with_vendor_hints() {
    let (result, _) = run_basic(FakeRegistry::new().answer(403, &[], JSON_DENIED));

    let [compose, systemd, helm] = result.remediation.as_slice() else {
        panic!("one step per deployment style: {:?}", result.remediation);
    };
    assert!(
        compose.title.starts_with("Docker Compose:"),
        "{}",
        compose.title
    );
    assert!(
        compose.title.contains("OCI__PushTestRepository"),
        "{}",
        compose.title
    );
    assert_commands_contain(
        compose,
        &[
            "docker push registry.example/stellaops/doctor-test:doctor-push-test",
            "OCI__PushTestRepository=$OCI_PUSH_REPOSITORY\" >> .env",
            "docker compose up -d",
        ],
    );

    assert!(
        systemd.title.starts_with("Bare metal / systemd:"),
        "{}",
        systemd.title
    );
    assert!(systemd.title.contains("202 Accepted"), "{}", systemd.title);
    assert!(
        systemd
            .commands
            .iter()
            .any(|c| c.starts_with("sudo systemctl restart ")),
        "{:?}",
        systemd.commands
    );

    assert!(
        helm.title.starts_with("Kubernetes / Helm:"),
        "{}",
        helm.title
    );
    assert_commands_contain(
        helm,
        &[
            "--set oci.pushTestRepository=stellaops/doctor-test",
            "--set oci.existingSecret=",
            "helm upgrade ",
        ],
    );

    // A registry the check does not recognise gets the grant advice of each common vendor.
    for hint in [
        "Harbor: Developer role",
        "ecr:InitiateLayerUpload",
        "GitLab: Developer",
    ] {
        assert!(compose.title.contains(hint), "{hint}: {}", compose.title);
    }
    for step in &result.remediation {
        let last = step.commands.last().map(String::as_str);
        assert_eq!(
            last,
            Some("stella-doctor run --check check.integration.oci.push")
        );
    }
}

#[test]
fn missing_credentials_skip_naming_the_keys_and_send_nothing() {
    let settings = settings(&[("OCI:Username", ""), ("OCI:Password", "")]);

    let (result, registry) = run_against(&settings, FakeRegistry::new());

    assert_eq!(result.severity, Severity::Skip);
    for key in ["OCI:Username", "OCI:Password", "OCI:Token"] {
        assert!(result.diagnosis.contains(key), "{}", result.diagnosis);
    }
    assert!(registry.requests.is_empty());
}

#[test]
fn missing_registry_skips_naming_the_key() {
    let settings = settings(&[("OCI:RegistryUrl", "")]);

    let (result, _) = run_against(&settings, FakeRegistry::new());

    assert_eq!(result.severity, Severity::Skip);
    assert!(
        result.diagnosis.contains("OCI:RegistryUrl"),
        "{}",
        result.diagnosis
    );
}

#[test]
fn username_without_password_fails_saying_so() {
    let settings = settings(&[("OCI:Password", "")]);

    let (result, _) = run_against(&settings, FakeRegistry::new());

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        result.diagnosis.contains("`OCI:Password` is not"),
        "{}",
        result.diagnosis
    );
}

#[test]
fn metadata_marks_exactly_the_passwords_and_tokens_secret() {
    let metadata = metadata();
    let secret: Vec<&str> = metadata
        .config_keys
        .iter()
        .filter(|key| key.secret)
        .map(|key| key.name.as_str())
        .collect();

    assert_eq!(
        secret,
        [
            "OCI:Password",
            "OCI:Token",
            "Registry:Password",
            "Registry:Token"
        ]
    );
    assert_eq!(metadata.id, CHECK_ID);
}

#[test]
fn metadata_serialises_in_camel_case() {
    let json = serde_json::to_string(&metadata()).unwrap();

    assert!(
        json.contains("\"pluginId\":\"stellaops.doctor.integration\""),
        "{json}"
    );
    assert!(json.contains("\"defaultSeverity\":\"fail\""), "{json}");
}

// Token authentication, end to end: what an operator sees for each kind of account.

const REALM: &str = "https://auth.example/token";
const PUSH_TOKEN_VALUE: &str = "issued-push-token-abc";
const IDENTITY_TOKEN: &str = "identity-refresh-token-777";

fn bearer(realm: &str, extra: &str) -> String {
    format!(r#"Bearer realm="{realm}",service="registry.example"{extra}"#)
}

fn jwt_granting(actions: &[&str]) -> String {
    crate::testing::jwt(&serde_json::json!({"access": [
        {"type": "repository", "name": "stellaops/doctor-test", "actions": actions}
    ]}))
}

fn token_answer(token: &str) -> String {
    format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#)
}

/// 401 with a Bearer challenge, then the token service's answer.
fn challenged(token_status: u16, token_body: &str) -> FakeRegistry {
    FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(REALM, ""))], "")
        .answer(token_status, &[], token_body)
}

fn delete_challenge() -> String {
    bearer(
        REALM,
        r#",scope="repository:stellaops/doctor-test:delete",error="insufficient_scope""#,
    )
}

fn lower(result: &CheckResult) -> String {
    result.diagnosis.to_lowercase()
}

#[test]
fn push_pull_delete_account_passes_through_a_token_exchange() {
    let token = jwt_granting(&["pull", "push"]);
    let registry = challenged(200, &token_answer(&token))
        .answer(
            202,
            &[(
                "Location",
                "/v2/stellaops/doctor-test/blobs/uploads/1?_state=s",
            )],
            "",
        )
        .answer(401, &[("WWW-Authenticate", &delete_challenge())], "")
        .answer(200, &[], &token_answer("delete-token"))
        .answer(204, &[], "");

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Pass, "{result:#?}");
    assert_eq!(
        result.evidence_value("auth_method"),
        Some("bearer-exchange")
    );
    assert_eq!(result.evidence_value("token_realm"), Some("auth.example"));
    assert_eq!(result.evidence_value("granted_actions"), Some("pull,push"));
    assert_eq!(result.evidence_value("upload_cancelled"), Some("true"));
    assert_eq!(
        result.evidence_value("cancel_retried_with_token"),
        Some("true")
    );
}

#[test]
fn push_pull_account_passes_with_the_cancel_reported_as_not_done() {
    let registry = challenged(200, &token_answer(&jwt_granting(&["pull", "push"])))
        .answer(
            202,
            &[("Location", "/v2/stellaops/doctor-test/blobs/uploads/1")],
            "",
        )
        .answer(401, &[("WWW-Authenticate", &delete_challenge())], "")
        .answer(200, &[], &token_answer(&jwt_granting(&[])))
        .answer(
            401,
            &[("WWW-Authenticate", &delete_challenge())],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );

    let (result, registry) = run_basic(registry);

    assert_eq!(result.severity, Severity::Pass, "{result:#?}");
    assert_eq!(result.evidence_value("upload_cancelled"), Some("false"));
    assert_eq!(result.evidence_value("cancel_status"), Some("401"));
    assert_eq!(
        result.evidence_value("cancel_error_code"),
        Some("UNAUTHORIZED")
    );
    assert!(
        result.diagnosis.contains("harmless"),
        "{}",
        result.diagnosis
    );
    assert_eq!(registry.requests.len(), 6);
}

#[test]
fn pull_only_account_fails_with_no_push_permission_not_invalid_credentials() {
    let refused = bearer(
        REALM,
        r#",scope="repository:stellaops/doctor-test:pull,push",error="insufficient_scope""#,
    );
    let registry = challenged(200, &token_answer(&jwt_granting(&["pull"]))).answer(
        401,
        &[("WWW-Authenticate", &refused)],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    );

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Fail);
    let text = lower(&result);
    assert!(
        text.contains("credentials are valid but do not permit push"),
        "{text}"
    );
    assert!(text.contains("granting only `pull`"), "{text}");
    assert!(!text.contains("invalid credentials"), "{text}");
    assert_eq!(
        result.evidence_value("challenge_error"),
        Some("insufficient_scope")
    );
    assert_eq!(result.evidence_value("granted_actions"), Some("pull"));
    assert_eq!(result.evidence_value("error_code"), Some("UNAUTHORIZED"));
    assert!(
        result.likely_causes[0].contains("no write permission"),
        "{:?}",
        result.likely_causes
    );
}

#[test]
fn wrong_password_at_the_token_service_fails_with_invalid_credentials() {
    let refusal =
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#;
    let registry = challenged(401, refusal).answer(401, &[], refusal);

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Fail);
    let text = lower(&result);
    assert!(text.contains("invalid credentials"), "{text}");
    assert!(text.contains("`auth.example`"), "{text}");
    assert!(text.contains("invalid username or password"), "{text}");
    assert_eq!(result.evidence_value("token_status"), Some("401"));
    assert_eq!(
        result.evidence_value("token_error"),
        Some("UNAUTHORIZED: invalid username or password")
    );
}

#[test]
fn read_only_access_token_refused_a_push_scope_fails_with_no_push_permission() {
    let registry = challenged(401, "").answer(200, &[], &token_answer("pull-token"));

    let (result, _) = run_basic(registry);

    assert_eq!(result.severity, Severity::Fail);
    let text = lower(&result);
    assert!(text.contains("do not permit push"), "{text}");
    assert!(!text.contains("invalid credentials"), "{text}");
    // The pull token is opaque: it proves the account exists, not which actions it carries.
    assert_eq!(result.evidence_value("granted_actions"), None);
}

#[test]
fn forbidden_after_a_token_fails_with_no_push_permission() {
    let registry = challenged(200, &token_answer("opaque")).answer(403, &[], JSON_DENIED);

    let (result, _) = run_basic(registry);

    let text = lower(&result);
    assert!(
        text.contains("credentials are valid but do not permit push"),
        "{text}"
    );
    assert_eq!(result.evidence_value("error_code"), Some("DENIED"));
    assert_eq!(
        result.evidence_value("granted_actions"),
        None,
        "an opaque token tells nothing"
    );
}

#[test]
fn an_issued_token_echoed_by_the_registry_is_masked() {
    let echo = r#"{"errors":[{"code":"DENIED","message":"token echoed-token-77 may not push"}]}"#;
    let registry = challenged(200, &token_answer("echoed-token-77")).answer(403, &[], echo);

    let (result, _) = run_basic(registry);

    let json = serde_json::to_string(&result).unwrap();
    assert!(!json.contains("echoed-token-77"), "{json}");
    assert_eq!(
        result.evidence_value("error_message"),
        Some("token *** may not push")
    );
}

#[test]
fn token_service_refusing_get_is_asked_with_the_oauth2_form() {
    let registry = challenged(405, "")
        .answer(200, &[], &token_answer("t"))
        .answer(202, &[], "");

    let (result, registry) = run_basic(registry);

    assert_eq!(result.severity, Severity::Pass, "{result:#?}");
    let form = String::from_utf8(registry.requests[2].body.clone()).unwrap();
    assert!(
        form.starts_with("grant_type=password&username=robot&password="),
        "{form}"
    );
    assert!(form.ends_with("&client_id=stella-doctor"), "{form}");
}

#[test]
fn realm_on_a_host_that_is_not_allowed_names_the_host_the_key_and_the_fix() {
    let loopback = settings(&[("OCI:RegistryUrl", "http://127.0.0.1:5000")]);
    let realm = "http://127.0.0.1:41234/token";
    let registry = FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(realm, ""))], "")
        .fail(TransportError::Denied {
            origin: "http://127.0.0.1:41234".into(),
        });

    let (result, _) = run_against(&loopback, registry);

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        result.diagnosis.contains("`127.0.0.1:41234`"),
        "{}",
        result.diagnosis
    );
    assert!(
        result
            .diagnosis
            .contains("Doctor:Plugins:check.integration.oci.push:AllowedHosts"),
        "{}",
        result.diagnosis
    );
    assert_eq!(result.evidence_value("token_realm"), Some("127.0.0.1"));
    assert_eq!(result.evidence_value("transport_error"), Some("denied"));
    let commands: Vec<&String> = result
        .remediation
        .iter()
        .flat_map(|s| &s.commands)
        .collect();
    assert!(commands.contains(&&format!(
        "{VERIFY} --set 'Doctor:Plugins:check.integration.oci.push:AllowedHosts=http://127.0.0.1:41234'"
    )), "{commands:?}");
    assert!(commands.contains(&&format!(
        "env 'Doctor__Plugins__check.integration.oci.push__AllowedHosts=http://127.0.0.1:41234' {VERIFY}"
    )), "{commands:?}");
}

const VERIFY: &str = "stella-doctor run --check check.integration.oci.push";

#[test]
fn plain_http_realm_of_an_https_registry_fails_without_sending_credentials() {
    let registry = FakeRegistry::new().answer(
        401,
        &[("WWW-Authenticate", &bearer("http://auth.example/token", ""))],
        "",
    );

    let (result, registry) = run_basic(registry);

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        result.diagnosis.contains("plain-http realm"),
        "{}",
        result.diagnosis
    );
    assert_eq!(result.evidence_value("token_realm"), Some("auth.example"));
    assert_eq!(registry.requests.len(), 1);
}

#[test]
fn downgraded_location_is_refused_and_the_evidence_says_why() {
    let registry = FakeRegistry::new().answer(
        202,
        &[("Location", "http://registry.example/v2/x/blobs/uploads/1")],
        "",
    );

    let (result, registry) = run_basic(registry);

    assert_eq!(result.severity, Severity::Pass);
    assert_eq!(result.evidence_value("upload_cancelled"), Some("false"));
    assert!(
        result
            .evidence_value("cancel_error")
            .unwrap()
            .contains("leaves https for plain http"),
        "{result:#?}"
    );
    assert_eq!(registry.requests.len(), 1);
}

#[test]
fn token_evidence_keys_come_in_a_stable_order() {
    let refused = bearer(REALM, r#",error="insufficient_scope""#);
    let registry = challenged(200, &token_answer(&jwt_granting(&["pull"]))).answer(
        401,
        &[("WWW-Authenticate", &refused)],
        JSON_DENIED,
    );

    let (result, _) = run_basic(registry);

    let keys: Vec<&str> = result.evidence.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "registry_url",
            "repository",
            "auth_method",
            "username",
            "status_code",
            "error_code",
            "error_message",
            "duration_ms",
            "token_realm",
            "granted_actions",
            "challenge_error",
            "auth_challenge"
        ]
    );
}

#[test]
fn no_secret_appears_anywhere_in_any_token_result() {
    let push_token = format!("{}.{PUSH_TOKEN_VALUE}", jwt_granting(&["pull"]));
    let scripts = [
        challenged(200, &token_answer(PUSH_TOKEN_VALUE)).answer(202, &[], ""),
        challenged(200, &token_answer(&push_token)).answer(401, &[], ""),
        challenged(401, "").answer(401, &[], ""),
        challenged(401, "").answer(200, &[], &token_answer(PUSH_TOKEN_VALUE)),
        challenged(500, "boom"),
        FakeRegistry::new()
            .answer(401, &[("WWW-Authenticate", &bearer(REALM, ""))], "")
            .fail(TransportError::Denied {
                origin: "https://auth.example".into(),
            }),
    ];
    let identity = settings(&[
        ("OCI:Username", ""),
        ("OCI:Password", ""),
        ("OCI:Token", IDENTITY_TOKEN),
    ]);

    for registry in scripts {
        for settings in [settings(&[]), identity.clone()] {
            let (result, _) = run_against(&settings, registry.clone());
            let json = serde_json::to_string(&result).unwrap();

            for secret in [PASSWORD, BASIC_VALUE, IDENTITY_TOKEN, PUSH_TOKEN_VALUE] {
                assert!(!json.contains(secret), "{secret} leaked: {json}");
            }
        }
    }
}

#[test]
fn identity_token_is_exchanged_and_reported_as_bearer_exchange() {
    let identity = settings(&[
        ("OCI:Username", ""),
        ("OCI:Password", ""),
        ("OCI:Token", IDENTITY_TOKEN),
    ]);
    let registry = challenged(
        200,
        r#"{"access_token":"fresh","scope":"repository:stellaops/doctor-test:pull,push"}"#,
    )
    .answer(202, &[], "");

    let (result, registry) = run_against(&identity, registry);

    assert_eq!(result.severity, Severity::Pass, "{result:#?}");
    assert_eq!(
        result.evidence_value("auth_method"),
        Some("bearer-exchange")
    );
    assert_eq!(result.evidence_value("granted_actions"), Some("pull,push"));
    let form = String::from_utf8(registry.requests[1].body.clone()).unwrap();
    assert!(
        form.starts_with("grant_type=refresh_token&refresh_token="),
        "{form}"
    );
}

#[test]
fn refused_identity_token_fails_with_invalid_credentials() {
    let identity = settings(&[
        ("OCI:Username", ""),
        ("OCI:Password", ""),
        ("OCI:Token", IDENTITY_TOKEN),
    ]);
    let registry = challenged(
        400,
        r#"{"error":"invalid_grant","error_description":"expired"}"#,
    );

    let (result, _) = run_against(&identity, registry);

    assert_eq!(result.severity, Severity::Fail);
    assert!(
        lower(&result).contains("invalid credentials"),
        "{}",
        result.diagnosis
    );
    assert_eq!(
        result.evidence_value("token_error"),
        Some("invalid_grant: expired")
    );
}
