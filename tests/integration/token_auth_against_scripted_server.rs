//! Token-auth answers of other vendors, played by a scripted registry whose
//! token endpoint lives on the same server (`/token`) unless a test says
//! otherwise.

use crate::support::doctor::Doctor;
use crate::support::guests::plugins_dir;
use crate::support::scripted::{Recorded, Reply, ScriptedServer, respond};
use crate::{PUSH, diagnosis, evidence};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

const REPO: &str = "stellaops/doctor-test";
const ALLOWED_HOSTS: &str = "Doctor:Plugins:check.integration.oci.push:AllowedHosts";
const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A `Bearer` challenge naming this server's own `/token` as the realm.
fn bearer_challenge(request: &Recorded, extra: &str) -> String {
    let host = request.header("host").unwrap_or("127.0.0.1");
    format!(
        r#"Bearer realm="http://{host}/token",service="scripted",scope="repository:{REPO}:pull,push"{extra}"#
    )
}

fn unauthorized(challenge: &str, body: &str) -> Reply {
    respond(401, &[("WWW-Authenticate", challenge), JSON], body)
}

fn token(value: &str) -> Reply {
    respond(
        200,
        &[JSON],
        &format!(r#"{{"token":"{value}","expires_in":120}}"#),
    )
}

fn run(url: &str, settings: &[(&str, &str)], secrets: &[&str]) -> Value {
    let plugins = plugins_dir(&["oci-push-check"]);
    let mut doctor = Doctor::new(plugins.path())
        .set("OCI:RegistryUrl", url)
        .set("OCI:TimeoutSeconds", "3");
    for (key, value) in settings {
        doctor = doctor.set(key, value);
    }
    let (outcome, result) = doctor.run_check_json(PUSH);
    for secret in secrets {
        assert!(
            !outcome.all_output().contains(secret),
            "`{secret}` leaked:\n{}",
            outcome.all_output()
        );
    }
    result
}

fn basic(url: &str, settings: &[(&str, &str)]) -> Value {
    let mut all = vec![("OCI:Username", "svc"), ("OCI:Password", "svc-pw-4410")];
    all.extend_from_slice(settings);
    run(url, &all, &["svc-pw-4410", "c3ZjOnN2Yy1wdy00NDEw"])
}

#[test]
fn harbor_basic_challenge_after_an_issued_token_means_no_push_permission() {
    let server = ScriptedServer::start(|request: &Recorded| {
        let bearer = request
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "));
        match (
            request.method.as_str(),
            request.target.starts_with("/token"),
        ) {
            ("GET", true) => token("harbor-token-1"),
            ("POST", false) if bearer => unauthorized(
                r#"Basic realm="harbor""#,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized to access repository: stellaops/doctor-test, action: push"}]}"#,
            ),
            _ => unauthorized(
                &bearer_challenge(request, ""),
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized"}]}"#,
            ),
        }
    });

    let result = basic(&server.url, &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    let text = diagnosis(&result);
    assert!(
        text.contains("push") && !text.contains("invalid credentials"),
        "{text}"
    );
    assert_eq!(evidence(&result, "auth_method"), "bearer-exchange");
    assert!(evidence(&result, "error_message").contains("action: push"));
}

/// Harbor with basic credentials and no token exchange: it answers the upload
/// `401` with `Basic realm="harbor"` both to a wrong password and to a valid
/// account without push; only `GET /v2/` tells the two apart.
fn harbor_basic_only(valid_password: &'static str) -> ScriptedServer {
    ScriptedServer::start(move |request: &Recorded| {
        let expected = format!("Basic {}", STANDARD.encode(format!("svc:{valid_password}")));
        let valid = request.header("authorization") == Some(expected.as_str());
        match (request.method.as_str(), request.target.as_str()) {
            ("GET", "/v2/") if valid => respond(200, &[JSON], "{}"),
            _ => unauthorized(
                r#"Basic realm="harbor""#,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized to access repository: stellaops/doctor-test, action: push: unauthorized to access repository: stellaops/doctor-test, action: push"}]}"#,
            ),
        }
    })
}

#[test]
fn harbor_basic_refusal_of_an_account_it_accepts_at_v2_is_no_push_permission() {
    let server = harbor_basic_only("svc-pw-4410");

    let result = basic(&server.url, &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    let text = diagnosis(&result);
    assert!(
        text.contains("do not permit push") && !text.to_lowercase().contains("invalid credentials"),
        "{text}"
    );
    assert_eq!(evidence(&result, "auth_method"), "basic");
    assert_eq!(evidence(&result, "credentials_verified"), "true");
    assert_eq!(evidence(&result, "credentials_check_status"), "200");
    let anonymous = server
        .requests()
        .into_iter()
        .filter(|r| r.target == "/v2/" && r.header("authorization").is_none())
        .count();
    assert_eq!(
        anonymous, 1,
        "a 200 counts only when the anonymous request is refused"
    );
}

#[test]
fn harbor_basic_refusal_of_a_wrong_password_is_invalid_credentials() {
    let server = harbor_basic_only("the-right-password");

    let result = basic(&server.url, &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        diagnosis(&result)
            .to_lowercase()
            .contains("invalid credentials"),
        "{result:#}"
    );
    assert_eq!(evidence(&result, "credentials_verified"), "false");
    assert_eq!(evidence(&result, "credentials_check_status"), "401");
}

#[test]
fn forbidden_after_a_token_is_no_push_permission() {
    let server = ScriptedServer::start(|request: &Recorded| {
        let bearer = request
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "));
        match (
            request.method.as_str(),
            request.target.starts_with("/token"),
        ) {
            ("GET", true) => token("ghcr-token"),
            ("POST", false) if bearer => respond(
                403,
                &[JSON],
                r#"{"errors":[{"code":"DENIED","message":"permission_denied: write_package"}]}"#,
            ),
            _ => unauthorized(&bearer_challenge(request, ""), ""),
        }
    });

    let result = basic(&server.url, &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert_eq!(evidence(&result, "error_code"), "DENIED");
    assert!(!diagnosis(&result).contains("invalid credentials"));
}

#[test]
fn read_only_token_refused_for_push_scope_is_no_push_permission() {
    // Docker Hub: a read-only access token makes the token endpoint itself
    // answer 401 when push is in the scope, and issue a pull token otherwise.
    let server = ScriptedServer::start(|request: &Recorded| {
        let bearer = request
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "));
        match (
            request.method.as_str(),
            request.target.starts_with("/token"),
        ) {
            ("GET", true) if request.target.contains("push") => respond(
                401,
                &[JSON],
                r#"{"details":"access token has insufficient scopes"}"#,
            ),
            ("GET", true) => token("pull-only-token"),
            ("POST", false) if bearer => unauthorized(
                &bearer_challenge(request, r#",error="insufficient_scope""#),
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ),
            _ => unauthorized(&bearer_challenge(request, ""), ""),
        }
    });

    let result = basic(&server.url, &[]);

    assert_eq!(result["severity"], "fail", "{result:#}");
    let text = diagnosis(&result);
    assert!(
        text.contains("push") && !text.contains("invalid credentials"),
        "{text}"
    );
    assert_eq!(evidence(&result, "token_status"), "401", "{result:#}");
    // The push scope first, then pull alone; the upload is never tried with a pull token.
    let token_requests: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/token"))
        .map(|r| r.target)
        .collect();
    assert_eq!(token_requests.len(), 2, "{token_requests:?}");
    assert!(
        token_requests[0].contains("pull%2Cpush"),
        "{token_requests:?}"
    );
    assert!(
        token_requests[1].ends_with("%3Apull") && !token_requests[1].contains("push"),
        "{token_requests:?}"
    );
    let bearer_posts = server
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && r.header("authorization")
                    .is_some_and(|a| a.starts_with("Bearer "))
        })
        .count();
    assert_eq!(bearer_posts, 0);
}

#[test]
fn static_token_is_sent_as_a_bearer_to_the_registry_only() {
    let server = ScriptedServer::start(|request: &Recorded| match request.method.as_str() {
        "POST" if request.header("authorization") == Some("Bearer static-tok-77") => respond(
            202,
            &[(
                "Location",
                "/v2/stellaops/doctor-test/blobs/uploads/9?_state=q",
            )],
            "",
        ),
        "DELETE" => respond(204, &[], ""),
        _ => unauthorized(&bearer_challenge(request, ""), ""),
    });

    let result = run(
        &server.url,
        &[("OCI:Token", "static-tok-77")],
        &["static-tok-77"],
    );

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "auth_method"), "bearer-static");
}

#[test]
fn identity_token_is_exchanged_through_the_refresh_token_grant() {
    let server = ScriptedServer::start(|request: &Recorded| {
        let auth = request
            .header("authorization")
            .unwrap_or_default()
            .to_string();
        match (
            request.method.as_str(),
            request.target.starts_with("/token"),
        ) {
            ("POST", true)
                if request.body.contains("grant_type=refresh_token")
                    && request.body.contains("identity-tok-5") =>
            {
                respond(
                    200,
                    &[JSON],
                    r#"{"access_token":"exchanged-access-1","expires_in":60}"#,
                )
            }
            ("POST", false) if auth == "Bearer exchanged-access-1" => respond(
                202,
                &[(
                    "Location",
                    "/v2/stellaops/doctor-test/blobs/uploads/5?_state=r",
                )],
                "",
            ),
            ("DELETE", false) if auth == "Bearer exchanged-access-1" => respond(204, &[], ""),
            _ => unauthorized(&bearer_challenge(request, r#",error="invalid_token""#), ""),
        }
    });

    let result = run(
        &server.url,
        &[("OCI:Token", "identity-tok-5")],
        &["identity-tok-5", "exchanged-access-1"],
    );

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "auth_method"), "bearer-exchange");
}

#[test]
fn cross_host_location_gets_its_delete_without_authorization() {
    let storage = ScriptedServer::start(|_| respond(204, &[], ""));
    let location = format!("{}/uploads/abc?signature=s1", storage.url);
    let registry = ScriptedServer::start(move |request: &Recorded| match request.method.as_str() {
        "POST" => respond(202, &[("Location", location.as_str())], ""),
        _ => respond(204, &[], ""),
    });

    let result = basic(
        &registry.url,
        &[(ALLOWED_HOSTS, &format!("http://{}", storage.authority()))],
    );

    assert_eq!(result["severity"], "pass", "{result:#}");
    let requests = storage.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].target.as_str()),
        ("DELETE", "/uploads/abc?signature=s1")
    );
    assert_eq!(
        requests[0].header("authorization"),
        None,
        "no credentials to another host"
    );
}

#[test]
fn basic_credentials_go_to_a_realm_on_another_port_only_when_allowed() {
    let tokens = ScriptedServer::start(|_| token("from-other-port"));
    let realm = format!("{}/token", tokens.url);
    let registry =
        ScriptedServer::start(
            move |request: &Recorded| match request.header("authorization") {
                Some("Bearer from-other-port") if request.method == "POST" => respond(
                    202,
                    &[(
                        "Location",
                        "/v2/stellaops/doctor-test/blobs/uploads/1?_state=x",
                    )],
                    "",
                ),
                Some("Bearer from-other-port") => respond(204, &[], ""),
                _ => unauthorized(&format!(r#"Bearer realm="{realm}",service="scripted""#), ""),
            },
        );

    let denied = basic(&registry.url, &[]);
    assert_eq!(denied["severity"], "fail", "{denied:#}");
    assert!(
        denied["diagnosis"]
            .as_str()
            .unwrap()
            .contains(&tokens.authority()),
        "{denied:#}"
    );
    assert!(tokens.requests().is_empty());

    let allowed = basic(
        &registry.url,
        &[(ALLOWED_HOSTS, &format!("http://{}", tokens.authority()))],
    );
    assert_eq!(allowed["severity"], "pass", "{allowed:#}");
    assert_eq!(evidence(&allowed, "token_realm"), "127.0.0.1");
    assert!(
        tokens.requests()[0]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    );
}

#[test]
fn garbage_challenges_give_a_clear_fail_not_a_crash() {
    for challenge in [
        "Bearer realm=\"unterminated,,,=",
        "\u{1}\u{2}garbage",
        "Bearer ,,,,",
        "Bearer realm=ftp://x",
    ] {
        let challenge = challenge.to_string();
        let server = ScriptedServer::start(move |_| unauthorized(&challenge, "not json"));

        let result = basic(&server.url, &[]);

        assert_eq!(result["severity"], "fail", "{result:#}");
        assert!(
            !diagnosis(&result).contains("trap"),
            "the check must not crash: {result:#}"
        );
    }
}
