//! The probe's requests and verdicts against scripted registry and token service answers.

use super::*;
use crate::testing::{BASIC_VALUE, FakeRegistry, config, jwt};

const REALM: &str = "https://auth.example/token";
const UPLOAD: &str = "https://registry.example/v2/stellaops/doctor-test/blobs/uploads/";

fn bearer(extra: &str) -> String {
    format!(r#"Bearer realm="{REALM}",service="registry.example"{extra}"#)
}

fn token_body(token: &str) -> String {
    format!(r#"{{"token":"{token}","expires_in":300}}"#)
}

/// 401 with a Bearer challenge, then a token: the start of every token-mode conversation.
fn challenged_then_token(token: &str) -> FakeRegistry {
    FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .answer(200, &[], &token_body(token))
}

fn cancel_of(outcome: &PushOutcome) -> &Cancel {
    match &outcome.verdict {
        Verdict::Permitted(cancel) => cancel,
        other => panic!("expected permitted, got {other:?}"),
    }
}

#[test]
fn upload_request_carries_credentials_and_an_empty_body() {
    let mut registry = FakeRegistry::new().answer(202, &[("Location", "/v2/u/1")], "");

    probe(&config(), &mut registry);

    let post = &registry.requests[0];
    assert_eq!(post.method, Method::Post);
    assert_eq!(post.url, UPLOAD);
    assert_eq!(post.header("Content-Length"), Some("0"));
    assert!(post.body.is_empty());
    assert!(post.header("Authorization").unwrap().starts_with("Basic "));
}

#[test]
fn accepted_upload_is_cancelled_at_its_exact_location() {
    let location = "/v2/stellaops/doctor-test/blobs/uploads/9a?_state=a%2Bb%3D%3D+c=d";
    let mut registry = FakeRegistry::new()
        .answer(202, &[("location", location)], "")
        .answer(204, &[], "");

    let outcome = probe(&config(), &mut registry);

    let delete = &registry.requests[1];
    assert_eq!(delete.method, Method::Delete);
    assert_eq!(delete.url, format!("https://registry.example{location}"));
    assert!(delete.header("authorization").is_some());
    assert!(cancel_of(&outcome).succeeded());
    assert_eq!(outcome.auth_method, "basic");
}

#[test]
fn cross_origin_location_is_cancelled_without_credentials() {
    let mut registry = FakeRegistry::new()
        .answer(
            202,
            &[("Location", "https://storage.example/uploads/9a?sig=x")],
            "",
        )
        .answer(204, &[], "");

    probe(&config(), &mut registry);

    let delete = &registry.requests[1];
    assert_eq!(delete.url, "https://storage.example/uploads/9a?sig=x");
    assert_eq!(delete.header("authorization"), None);
}

#[test]
fn downgraded_location_is_not_deleted_at_all() {
    let mut registry = FakeRegistry::new().answer(
        202,
        &[("Location", "http://registry.example/v2/x/uploads/1")],
        "",
    );

    let outcome = probe(&config(), &mut registry);

    assert_eq!(registry.requests.len(), 1, "no DELETE over plain http");
    assert!(matches!(cancel_of(&outcome), Cancel::Downgrade { .. }));
}

#[test]
fn statuses_map_to_verdicts() {
    let cases = [
        (401, Verdict::InvalidCredentials),
        (403, Verdict::NotPermitted(Denial::Forbidden)),
        (404, Verdict::RepositoryUnknown),
        (405, Verdict::ReadOnly),
        (429, Verdict::RateLimited),
        (503, Verdict::Unavailable),
        (500, Verdict::ServerError),
        (502, Verdict::ServerError),
        (200, Verdict::Unexpected),
        (302, Verdict::Unexpected),
        (400, Verdict::Unexpected),
    ];
    for (status, verdict) in cases {
        let mut registry = FakeRegistry::new().answer(status, &[], "");
        let outcome = probe(&config(), &mut registry);

        assert_eq!(outcome.verdict, verdict, "status {status}");
        assert_eq!(registry.requests.len(), 1, "status {status} sent a cancel");
    }
}

#[test]
fn bearer_challenge_is_answered_with_a_push_token_and_the_upload_repeated() {
    let token = jwt(&serde_json::json!({"access": [
        {"type": "repository", "name": "stellaops/doctor-test", "actions": ["pull", "push"]}
    ]}));
    let mut registry = challenged_then_token(&token)
        .answer(
            202,
            &[("Location", "/v2/stellaops/doctor-test/blobs/uploads/1")],
            "",
        )
        .answer(204, &[], "");

    let outcome = probe(&config(), &mut registry);

    let [_, get, post, delete] = &registry.requests[..] else {
        panic!("expected four requests, got {:#?}", registry.requests);
    };
    assert_eq!(
        get.url,
        format!(
            "{REALM}?service=registry.example&scope=repository%3Astellaops%2Fdoctor-test%3Apull%2Cpush"
        )
    );
    assert_eq!(
        get.header("authorization"),
        Some(format!("Basic {BASIC_VALUE}").as_str())
    );
    let bearer_header = format!("Bearer {token}");
    assert_eq!(post.url, UPLOAD);
    assert_eq!(post.header("authorization"), Some(bearer_header.as_str()));
    assert_eq!(delete.header("authorization"), Some(bearer_header.as_str()));
    assert!(cancel_of(&outcome).succeeded());
    assert_eq!(outcome.auth_method, "bearer-exchange");
    let exchange = outcome.token.unwrap();
    assert_eq!(exchange.realm.host(), "auth.example");
    assert_eq!(
        exchange.granted_actions,
        Some(vec!["pull".into(), "push".into()])
    );
}

#[test]
fn delete_is_never_asked_for_up_front() {
    let mut registry = challenged_then_token("t").answer(202, &[], "");

    probe(&config(), &mut registry);

    assert!(
        !registry.requests[1].url.contains("delete"),
        "{}",
        registry.requests[1].url
    );
}

#[test]
fn challenged_cancel_gets_a_token_for_the_named_scope_and_is_retried_once() {
    let delete_challenge =
        bearer(r#",scope="repository:stellaops/doctor-test:delete",error="insufficient_scope""#);
    let mut registry = challenged_then_token("push-token")
        .answer(
            202,
            &[("Location", "/v2/stellaops/doctor-test/blobs/uploads/1")],
            "",
        )
        .answer(401, &[("WWW-Authenticate", &delete_challenge)], "")
        .answer(200, &[], &token_body("delete-token"))
        .answer(204, &[], "");

    let outcome = probe(&config(), &mut registry);

    let token_get = &registry.requests[4];
    assert!(
        token_get
            .url
            .ends_with("scope=repository%3Astellaops%2Fdoctor-test%3Adelete"),
        "{}",
        token_get.url
    );
    let retry = &registry.requests[5];
    assert_eq!(retry.method, Method::Delete);
    assert_eq!(retry.header("authorization"), Some("Bearer delete-token"));
    let cancel = cancel_of(&outcome);
    assert!(cancel.succeeded());
    assert!(matches!(
        cancel,
        Cancel::Attempted {
            retried_with_token: true,
            ..
        }
    ));
}

#[test]
fn cancel_that_stays_refused_after_one_retry_is_reported_not_cancelled() {
    let delete_challenge =
        bearer(r#",scope="repository:stellaops/doctor-test:delete",error="insufficient_scope""#);
    let challenged = [("WWW-Authenticate", delete_challenge.as_str())];
    let mut registry = challenged_then_token("push-token")
        .answer(
            202,
            &[("Location", "/v2/stellaops/doctor-test/blobs/uploads/1")],
            "",
        )
        .answer(401, &challenged, "")
        .answer(200, &[], &token_body("token-without-delete"))
        .answer(401, &challenged, "");

    let outcome = probe(&config(), &mut registry);

    assert_eq!(
        registry.requests.len(),
        6,
        "one token fetch and one retry only"
    );
    let cancel = cancel_of(&outcome);
    assert!(!cancel.succeeded());
    assert!(matches!(
        cancel,
        Cancel::Attempted {
            result: Ok((401, _)),
            ..
        }
    ));
}

#[test]
fn insufficient_scope_after_a_token_means_no_push_permission() {
    let refused =
        bearer(r#",scope="repository:stellaops/doctor-test:pull,push",error="insufficient_scope""#);
    let mut registry =
        challenged_then_token("pull-only").answer(401, &[("WWW-Authenticate", &refused)], "");

    let outcome = probe(&config(), &mut registry);

    assert_eq!(
        outcome.verdict,
        Verdict::NotPermitted(Denial::TokenLacksPush)
    );
    assert_eq!(
        outcome.challenge_error.as_deref(),
        Some("insufficient_scope")
    );
    assert_eq!(registry.requests.len(), 3, "no second exchange");
}

#[test]
fn harbor_basic_challenge_after_a_token_means_no_push_permission() {
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized to access repository: stellaops/doctor-test, action: push"}]}"#;
    let mut registry = challenged_then_token("t").answer(
        401,
        &[("WWW-Authenticate", r#"Basic realm="harbor""#)],
        body,
    );

    let outcome = probe(&config(), &mut registry);

    assert_eq!(
        outcome.verdict,
        Verdict::NotPermitted(Denial::TokenLacksPush)
    );
    assert_eq!(outcome.error.code().as_deref(), Some("UNAUTHORIZED"));
}

#[test]
fn basic_only_challenge_to_direct_credentials_means_invalid_credentials() {
    let mut registry = FakeRegistry::new().answer(
        401,
        &[("WWW-Authenticate", r#"Basic realm="registry""#)],
        "",
    );

    let outcome = probe(&config(), &mut registry);

    assert_eq!(outcome.verdict, Verdict::InvalidCredentials);
    assert_eq!(registry.requests.len(), 1, "no realm to ask");
}

#[test]
fn token_endpoint_refusal_means_invalid_credentials() {
    let mut registry = FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .answer(401, &[], r#"{"details":"incorrect username or password"}"#)
        .answer(401, &[], "");

    let outcome = probe(&config(), &mut registry);

    assert_eq!(outcome.verdict, Verdict::TokenRefused);
    assert_eq!(outcome.token.unwrap().status, Some(401));
    assert!(
        registry.requests[2].url.ends_with("%3Apull"),
        "pull-only retry"
    );
    assert_eq!(registry.requests.len(), 3);
}

#[test]
fn push_refused_but_pull_granted_at_the_token_endpoint_means_no_push_permission() {
    let mut registry = FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .answer(401, &[], "")
        .answer(200, &[], &token_body("pull-token"));

    let outcome = probe(&config(), &mut registry);

    assert_eq!(outcome.verdict, Verdict::NotPermitted(Denial::PullOnly));
    let exchange = outcome.token.unwrap();
    assert_eq!(exchange.granted_actions, Some(vec!["pull".into()]));
    assert_eq!(
        registry.requests.len(),
        3,
        "the upload is not tried with a pull token"
    );
}

#[test]
fn static_token_challenged_by_bearer_is_exchanged_as_a_refresh_token() {
    let mut token_config = config();
    token_config.credentials = crate::auth::Credentials::Bearer {
        token: crate::auth::Secret::new("identity-token"),
    };
    let mut registry = FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .answer(200, &[], r#"{"access_token":"access"}"#)
        .answer(202, &[], "");

    let outcome = probe(&token_config, &mut registry);

    assert_eq!(
        registry.requests[0].header("authorization"),
        Some("Bearer identity-token")
    );
    let form = String::from_utf8(registry.requests[1].body.clone()).unwrap();
    assert!(form.contains("grant_type=refresh_token"), "{form}");
    assert_eq!(
        registry.requests[2].header("authorization"),
        Some("Bearer access")
    );
    assert!(matches!(outcome.verdict, Verdict::Permitted(_)));
    assert_eq!(outcome.auth_method, "bearer-exchange");
}

#[test]
fn static_token_with_insufficient_scope_is_not_exchanged() {
    let mut token_config = config();
    token_config.credentials = crate::auth::Credentials::Bearer {
        token: crate::auth::Secret::new("registry-token"),
    };
    let refused = bearer(r#",error="insufficient_scope""#);
    let mut registry = FakeRegistry::new().answer(401, &[("WWW-Authenticate", &refused)], "");

    let outcome = probe(&token_config, &mut registry);

    assert_eq!(
        outcome.verdict,
        Verdict::NotPermitted(Denial::TokenLacksPush)
    );
    assert_eq!(outcome.auth_method, "bearer-static");
    assert_eq!(registry.requests.len(), 1);
}

#[test]
fn plain_http_realm_of_an_https_registry_is_refused() {
    let challenge = r#"Bearer realm="http://auth.example/token",service="r""#;
    let mut registry = FakeRegistry::new().answer(401, &[("WWW-Authenticate", challenge)], "");

    let outcome = probe(&config(), &mut registry);

    assert!(
        matches!(
            outcome.verdict,
            Verdict::TokenUnavailable(TokenProblem::Realm(RealmProblem::Downgrade { .. }))
        ),
        "{:?}",
        outcome.verdict
    );
    assert_eq!(registry.requests.len(), 1, "nothing is sent to the realm");
}

#[test]
fn realm_denied_by_the_host_is_reported_as_unreachable_token_service() {
    let denied = TransportError::Denied {
        origin: "https://auth.example".into(),
    };
    let mut registry = FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .fail(denied.clone());

    let outcome = probe(&config(), &mut registry);

    assert_eq!(
        outcome.verdict,
        Verdict::TokenUnavailable(TokenProblem::Unreachable(denied))
    );
    assert_eq!(outcome.token.unwrap().realm.host(), "auth.example");
}

#[test]
fn cross_origin_location_after_an_exchange_gets_no_token_and_no_retry() {
    let mut registry = challenged_then_token("secret-token")
        .answer(202, &[("Location", "https://storage.example/u/1")], "")
        .answer(
            401,
            &[("WWW-Authenticate", &bearer(r#",scope="x:y:delete""#))],
            "",
        );

    let outcome = probe(&config(), &mut registry);

    assert_eq!(registry.requests.len(), 4);
    assert_eq!(registry.requests[3].header("authorization"), None);
    assert!(matches!(
        cancel_of(&outcome),
        Cancel::Attempted {
            credentials_sent: false,
            retried_with_token: false,
            ..
        }
    ));
}

#[test]
fn several_challenge_lines_are_searched_for_the_bearer_one() {
    let mut registry = FakeRegistry::new()
        .answer(
            401,
            &[
                ("WWW-Authenticate", r#"Basic realm="registry""#),
                ("WWW-Authenticate", &bearer("")),
            ],
            "",
        )
        .answer(200, &[], &token_body("t"))
        .answer(202, &[], "");

    let outcome = probe(&config(), &mut registry);

    assert!(
        matches!(outcome.verdict, Verdict::Permitted(_)),
        "{:?}",
        outcome.verdict
    );
}
