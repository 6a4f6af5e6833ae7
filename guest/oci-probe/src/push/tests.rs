//! The probe's requests and verdicts against scripted registry and token service answers.

use super::*;
use crate::auth::{Credentials, Secret};
use crate::testing::{self, BASIC_VALUE, FakeRegistry, config, jwt};

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
        assert_eq!(
            registry.requests.len(),
            1,
            "status {status} sent another request"
        );
        assert_eq!(outcome.credentials_check, None, "status {status}");
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

const HARBOR_DENIAL: &str = r#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized to access repository: stellaops/doctor-test, action: push"}]}"#;
const HARBOR_CHALLENGE: &str = r#"Basic realm="harbor""#;
const V2: &str = "https://registry.example/v2/";

/// Harbor's answer to an upload that carried any `Authorization`: a wrong password (which it
/// treats as anonymous) and a valid account without push both get exactly this.
fn harbor_refuses_the_upload() -> FakeRegistry {
    FakeRegistry::new().answer(
        401,
        &[("WWW-Authenticate", HARBOR_CHALLENGE)],
        HARBOR_DENIAL,
    )
}

#[test]
fn basic_challenge_after_an_issued_token_means_no_push_permission() {
    let mut registry = challenged_then_token("t").answer(
        401,
        &[("WWW-Authenticate", HARBOR_CHALLENGE)],
        HARBOR_DENIAL,
    );

    let outcome = probe(&config(), &mut registry);

    assert_eq!(
        outcome.verdict,
        Verdict::NotPermitted(Denial::TokenLacksPush)
    );
    assert_eq!(outcome.error.code().as_deref(), Some("UNAUTHORIZED"));
    assert_eq!(registry.requests.len(), 3, "an issued token needs no check");
    assert_eq!(outcome.credentials_check, None);
}

#[test]
fn harbor_account_without_push_is_told_from_a_wrong_password_by_get_v2() {
    let mut registry = harbor_refuses_the_upload().answer(200, &[], "{}").answer(
        401,
        &[("WWW-Authenticate", &bearer(""))],
        "",
    );

    let outcome = probe(&config(), &mut registry);

    assert_eq!(
        outcome.verdict,
        Verdict::NotPermitted(Denial::CredentialsAccepted)
    );
    assert_eq!(
        outcome.credentials_check,
        Some(CredentialsCheck::Accepted { status: 200 })
    );
    let [post, login, anonymous] = &registry.requests[..] else {
        panic!("expected three requests, got {:#?}", registry.requests);
    };
    assert_eq!(post.method, Method::Post);
    assert_eq!((login.method, login.url.as_str()), (Method::Get, V2));
    assert_eq!(
        login.header("authorization"),
        Some(format!("Basic {BASIC_VALUE}").as_str()),
        "the same credentials as the upload"
    );
    assert_eq!(
        (anonymous.method, anonymous.url.as_str()),
        (Method::Get, V2)
    );
    assert_eq!(anonymous.header("authorization"), None);
    assert_eq!(outcome.auth_method, "basic");
    assert_eq!(outcome.error.code().as_deref(), Some("UNAUTHORIZED"));
}

#[test]
fn wrong_password_refused_again_by_get_v2_means_invalid_credentials() {
    let mut registry =
        harbor_refuses_the_upload().answer(401, &[("WWW-Authenticate", HARBOR_CHALLENGE)], "");

    let outcome = probe(&config(), &mut registry);

    assert_eq!(outcome.verdict, Verdict::InvalidCredentials);
    assert_eq!(
        outcome.credentials_check,
        Some(CredentialsCheck::Refused { status: 401 })
    );
    assert_eq!(
        registry.requests.len(),
        2,
        "no anonymous request after a 401"
    );
}

#[test]
fn basic_only_challenge_to_direct_credentials_means_invalid_credentials() {
    let basic_challenge = [("WWW-Authenticate", r#"Basic realm="registry""#)];
    let mut registry = FakeRegistry::new()
        .answer(401, &basic_challenge, "")
        .answer(401, &basic_challenge, "");

    let outcome = probe(&config(), &mut registry);

    assert_eq!(outcome.verdict, Verdict::InvalidCredentials);
    assert_eq!(outcome.credentials_check.unwrap().verified(), Some(false));
    let urls: Vec<&str> = registry.requests.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(urls, [UPLOAD, V2], "no realm to ask");
}

#[test]
fn get_v2_that_cannot_tell_keeps_invalid_credentials_and_records_why() {
    let ok = || {
        Ok(Response {
            status: 200,
            ..Response::default()
        })
    };
    let cases: [(Vec<Result<Response, TransportError>>, CredentialsCheck); 4] = [
        (
            vec![ok(), ok()],
            CredentialsCheck::OpenToAnyone { status: 200 },
        ),
        (
            vec![Ok(Response {
                status: 500,
                ..Response::default()
            })],
            CredentialsCheck::Unexpected { status: 500 },
        ),
        (
            vec![Err(TransportError::Timeout)],
            CredentialsCheck::Unanswered {
                status: None,
                error: TransportError::Timeout,
            },
        ),
        (
            vec![ok(), Err(TransportError::ConnectionRefused)],
            CredentialsCheck::Unanswered {
                status: Some(200),
                error: TransportError::ConnectionRefused,
            },
        ),
    ];
    for (answers, expected) in cases {
        let mut registry = harbor_refuses_the_upload();
        for answer in answers {
            registry = registry.reply(answer);
        }

        let outcome = probe(&config(), &mut registry);

        assert_eq!(outcome.verdict, Verdict::InvalidCredentials, "{expected:?}");
        assert_eq!(outcome.credentials_check.as_ref(), Some(&expected));
        assert_eq!(expected.verified(), None);
    }
}

#[test]
fn static_token_refused_without_a_bearer_challenge_is_checked_with_get_v2() {
    let mut token_config = config();
    token_config.credentials = Credentials::Bearer {
        token: Secret::new("registry-token"),
    };
    let mut registry = harbor_refuses_the_upload()
        .answer(200, &[], "{}")
        .answer(401, &[], "");

    let outcome = probe(&token_config, &mut registry);

    assert_eq!(
        outcome.verdict,
        Verdict::NotPermitted(Denial::CredentialsAccepted)
    );
    assert_eq!(
        registry.requests[1].header("authorization"),
        Some("Bearer registry-token")
    );
    assert_eq!(outcome.auth_method, "bearer-static");
}

#[test]
fn invalid_token_after_an_issued_token_is_a_rejected_token_not_a_missing_grant() {
    let rejected = bearer(r#",error="invalid_token""#);
    let mut registry = challenged_then_token("t").answer(
        401,
        &[("WWW-Authenticate", &rejected)],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    );

    let outcome = probe(&config(), &mut registry);

    assert_eq!(outcome.verdict, Verdict::TokenRejected);
    assert_eq!(outcome.challenge_error.as_deref(), Some("invalid_token"));
    assert_eq!(outcome.auth_method, "bearer-exchange");
    assert_eq!(registry.requests.len(), 3, "no second exchange, no check");
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
    assert_eq!(
        exchange.granted_actions, None,
        "an opaque token does not say what it grants"
    );
    assert_eq!(
        registry.requests.len(),
        3,
        "the upload is not tried with a pull token"
    );
    assert_eq!(
        outcome.auth_method, "basic",
        "the registry only ever saw the basic credentials"
    );
}

#[test]
fn pull_token_that_names_its_grant_is_reported_as_granting_it() {
    let pull_jwt = jwt(&serde_json::json!({"access": [
        {"type": "repository", "name": "stellaops/doctor-test", "actions": ["pull"]}
    ]}));
    let mut registry = FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .answer(401, &[], "")
        .answer(200, &[], &token_body(&pull_jwt));

    let outcome = probe(&config(), &mut registry);

    assert_eq!(outcome.verdict, Verdict::NotPermitted(Denial::PullOnly));
    assert_eq!(
        outcome.token.unwrap().granted_actions,
        Some(vec!["pull".into()])
    );
}

#[test]
fn static_token_challenged_by_bearer_is_exchanged_as_a_refresh_token() {
    let mut token_config = config();
    token_config.credentials = Credentials::Bearer {
        token: Secret::new("identity-token"),
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
    token_config.credentials = Credentials::Bearer {
        token: Secret::new("registry-token"),
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

// Token lifetimes, on the test clock that the scripted answers move forward.

const SESSION: &str = "/v2/stellaops/doctor-test/blobs/uploads/1?_state=s";

/// 401, a token living 30 seconds, then a 202 that takes `upload_takes` to arrive.
fn short_lived_token_then_upload(upload_takes: Duration) -> FakeRegistry {
    FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .answer(200, &[], r#"{"token":"first","expires_in":"30"}"#)
        .answer(202, &[("Location", SESSION)], "")
        .taking(upload_takes)
}

#[test]
fn token_within_its_lifetime_is_reused_for_the_cancel() {
    let mut registry = short_lived_token_then_upload(Duration::from_secs(29)).answer(204, &[], "");

    let outcome = probe_with_clock(&config(), &mut registry, testing::clock);

    assert_eq!(registry.requests.len(), 4, "{:#?}", registry.requests);
    assert_eq!(
        registry.requests[3].header("authorization"),
        Some("Bearer first")
    );
    assert!(matches!(
        cancel_of(&outcome),
        Cancel::Attempted {
            token_renewed: false,
            ..
        }
    ));
}

#[test]
fn expired_token_is_not_reused_a_fresh_one_is_fetched_once_for_the_cancel() {
    let mut registry = short_lived_token_then_upload(Duration::from_secs(30))
        .answer(200, &[], &token_body("second"))
        .answer(204, &[], "");

    let outcome = probe_with_clock(&config(), &mut registry, testing::clock);

    let renewal = &registry.requests[3];
    assert_eq!(renewal.method, Method::Get);
    assert_eq!(
        renewal.url, registry.requests[1].url,
        "the same scopes again"
    );
    let delete = &registry.requests[4];
    assert_eq!(delete.method, Method::Delete);
    assert_eq!(delete.header("authorization"), Some("Bearer second"));
    assert_eq!(registry.requests.len(), 5);
    let cancel = cancel_of(&outcome);
    assert!(cancel.succeeded());
    assert!(matches!(
        cancel,
        Cancel::Attempted {
            token_renewed: true,
            ..
        }
    ));
}

#[test]
fn expired_token_that_cannot_be_renewed_is_not_sent_at_all() {
    let mut registry = short_lived_token_then_upload(Duration::from_secs(31)).answer(
        503,
        &[],
        "token service down",
    );

    let outcome = probe_with_clock(&config(), &mut registry, testing::clock);

    assert_eq!(
        registry.requests.len(),
        4,
        "no DELETE: {:#?}",
        registry.requests
    );
    assert!(
        registry.requests[2..]
            .iter()
            .all(|r| r.method != Method::Delete),
        "{:#?}",
        registry.requests
    );
    assert!(matches!(cancel_of(&outcome), Cancel::TokenExpired { .. }));
}

// Which challenged cancels earn a second token.

/// A pass whose cancel is answered 401 with `challenge`, then whatever `rest` scripts.
fn cancel_challenged(challenge: &str) -> FakeRegistry {
    challenged_then_token("push-token")
        .answer(202, &[("Location", SESSION)], "")
        .answer(401, &[("WWW-Authenticate", challenge)], "")
}

#[test]
fn cancel_challenged_for_something_other_than_scope_is_not_retried() {
    for extra in [
        r#",scope="repository:stellaops/doctor-test:pull""#,
        r#",scope="repository:stellaops/doctor-test:pull,push",error="invalid_token""#,
        "",
    ] {
        let mut registry = cancel_challenged(&bearer(extra));

        let outcome = probe(&config(), &mut registry);

        assert_eq!(
            registry.requests.len(),
            4,
            "{extra}: {:#?}",
            registry.requests
        );
        assert!(
            matches!(
                cancel_of(&outcome),
                Cancel::Attempted {
                    retried_with_token: false,
                    result: Ok((401, _)),
                    ..
                }
            ),
            "{extra}"
        );
    }
}

#[test]
fn cancel_challenged_with_insufficient_scope_or_a_delete_scope_is_retried() {
    for extra in [
        r#",scope="repository:stellaops/doctor-test:pull",error="insufficient_scope""#,
        r#",scope="repository:stellaops/doctor-test:delete""#,
        r#",scope="repository:stellaops/doctor-test:pull,delete""#,
    ] {
        let mut registry = cancel_challenged(&bearer(extra))
            .answer(200, &[], &token_body("retry-token"))
            .answer(204, &[], "");

        let outcome = probe(&config(), &mut registry);

        assert_eq!(
            registry.requests.len(),
            6,
            "{extra}: {:#?}",
            registry.requests
        );
        assert_eq!(
            registry.requests[5].header("authorization"),
            Some("Bearer retry-token"),
            "{extra}"
        );
        assert!(cancel_of(&outcome).succeeded(), "{extra}");
    }
}

#[test]
fn scopes_of_a_challenged_cancel_are_split_on_any_whitespace() {
    let extra = ",scope=\"registry:catalog:*  \trepository:stellaops/doctor-test:delete \"";
    let mut registry = cancel_challenged(&bearer(extra))
        .answer(200, &[], &token_body("retry-token"))
        .answer(204, &[], "");

    probe(&config(), &mut registry);

    let token_get = &registry.requests[4].url;
    assert!(
        token_get.ends_with(
            "&scope=registry%3Acatalog%3A%2A&scope=repository%3Astellaops%2Fdoctor-test%3Adelete"
        ),
        "one `scope` per item, none empty: {token_get}"
    );
}

#[test]
fn auth_method_names_what_the_last_upload_showed_the_registry() {
    let refused = FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .answer(401, &[], "")
        .answer(401, &[], "");
    let unavailable = FakeRegistry::new()
        .answer(401, &[("WWW-Authenticate", &bearer(""))], "")
        .answer(500, &[], "");
    let exchanged = challenged_then_token("t").answer(403, &[], "");
    let cases = [
        (refused, Verdict::TokenRefused, "basic"),
        (
            unavailable,
            Verdict::TokenUnavailable(TokenProblem::Failed),
            "basic",
        ),
        (
            exchanged,
            Verdict::NotPermitted(Denial::Forbidden),
            "bearer-exchange",
        ),
    ];
    for (mut registry, verdict, method) in cases {
        let outcome = probe(&config(), &mut registry);

        assert_eq!(outcome.verdict, verdict);
        assert_eq!(outcome.auth_method, method, "{verdict:?}");
    }
}

// Generated answers: whatever a registry or token service sends, the probe neither panics nor
// leaks a secret, and stays within a bounded number of requests.

const STATIC_TOKEN: &str = "static-SECRET-tok";
const ISSUED_TOKEN: &str = "issued-SECRET-tok";

const REALMS: &[&str] = &[
    "https://auth.example/token",
    "http://auth.example/token",
    "https://auth.example:99999/t",
    "https://",
    "ftp://auth.example/",
    "https://[::1",
    "https://user:pw@auth.example/",
    "//auth.example/token",
    "not a url",
    "",
];

const LOCATIONS: &[&str] = &[
    "/v2/stellaops/doctor-test/blobs/uploads/1?_state=a%2Bb",
    "https://storage.example/u/1?sig=x",
    "//storage.example/u/2",
    "http://registry.example/v2/x/blobs/uploads/3",
    "http://storage.example/u/4",
    "?_state=",
    "uploads/5",
    "https://storage.example:0/",
    "",
    " ",
];

const EXPIRIES: &[&str] = &["60", "0", "-1", "1e300", r#""30""#, r#""x""#, "null", "2.5"];

const BODY_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "errors",
    "code",
    "message",
    "detail",
    "token",
    "access_token",
    "expires_in",
    "null",
    "1e999",
    "-",
    "\\u0000",
    "\\",
    "DENIED",
    "\u{fffd}",
];

const HEADER_PIECES: &[&str] = &[
    "Bearer",
    "Basic",
    "realm=",
    "\"",
    ",",
    "=",
    " ",
    "error=",
    "scope=",
    "invalid_token",
    "insufficient_scope",
    "https://auth.example/",
    "\r\n",
    "\u{0}",
    "é",
];

fn garbage_challenge(rng: &mut testing::Rng) -> String {
    if rng.chance(3) {
        return testing::garbage(rng, HEADER_PIECES, 20);
    }
    let error = *rng.pick(&[
        "",
        ",error=\"insufficient_scope\"",
        ",error=\"invalid_token\"",
    ]);
    let scope = *rng.pick(&[
        "",
        ",scope=\"repository:stellaops/doctor-test:delete\"",
        ",scope=\"  \"",
        ",scope=\"a:b:c d:e:f\"",
    ]);
    let scheme = *rng.pick(&["Bearer", "bearer", "Basic"]);
    format!(
        r#"{scheme} realm="{}",service="registry.example"{scope}{error}"#,
        rng.pick(REALMS)
    )
}

fn garbage_body(rng: &mut testing::Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => Vec::new(),
        1 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        2 => testing::garbage(rng, BODY_PIECES, 30).into_bytes(),
        3 => format!(
            r#"{{"token":"{ISSUED_TOKEN}","expires_in":{}}}"#,
            rng.pick(EXPIRIES)
        )
        .into_bytes(),
        4 => {
            let actions = *rng.pick(&[r#"["pull"]"#, "[]", r#""push""#, "null", r#"[1,2]"#]);
            let claims = format!(
                r#"{{"access":[{{"type":"repository","name":"stellaops/doctor-test","actions":{actions}}}]}}"#
            );
            let token = match serde_json::from_str::<serde_json::Value>(&claims) {
                Ok(value) => format!("{}.{ISSUED_TOKEN}", jwt(&value)),
                Err(_) => ISSUED_TOKEN.to_string(),
            };
            format!(r#"{{"access_token":"{token}","scope":"repository:x:pull"}}"#).into_bytes()
        }
        _ => br#"{"errors":[{"code":"DENIED","message":"no","detail":{"a":[1]}}]}"#.to_vec(),
    }
}

fn garbage_answer(rng: &mut testing::Rng) -> Result<Response, TransportError> {
    if rng.chance(10) {
        return Err(rng
            .pick(&[
                TransportError::Timeout,
                TransportError::ConnectionRefused,
                TransportError::Denied {
                    origin: "https://auth.example".into(),
                },
            ])
            .clone());
    }
    let status = match rng.below(4) {
        0 => rng.below(1000) as u16,
        _ => *rng.pick(&[200, 202, 204, 400, 401, 401, 403, 404, 405, 429, 500, 503]),
    };
    let mut headers = Vec::new();
    for _ in 0..rng.below(4) {
        let header = match rng.below(4) {
            0 => ("WWW-Authenticate", garbage_challenge(rng)),
            1 => ("Location", rng.pick(LOCATIONS).to_string()),
            2 => ("Retry-After", testing::garbage(rng, HEADER_PIECES, 4)),
            _ => ("WWW-Authenticate", garbage_challenge(rng)),
        };
        headers.push((header.0.to_string(), header.1));
    }
    Ok(Response {
        status,
        headers,
        body: garbage_body(rng),
    })
}

/// One generated conversation, checked for what must hold whatever the answers were.
fn probe_garbage(rng: &mut testing::Rng) {
    let mut registry = FakeRegistry::new();
    for _ in 0..rng.below(10) {
        registry = registry
            .reply(garbage_answer(rng))
            .taking(Duration::from_secs(rng.below(90) as u64));
    }
    let mut probed = config();
    if rng.chance(3) {
        probed.credentials = Credentials::Bearer {
            token: Secret::new(STATIC_TOKEN),
        };
    }

    let outcome = probe_with_clock(&probed, &mut registry, testing::clock);
    let result = crate::report::probe_result(&probed, &outcome);

    let json = serde_json::to_string(&result).unwrap();
    for secret in [testing::PASSWORD, BASIC_VALUE, STATIC_TOKEN] {
        assert!(!json.contains(secret), "{secret} leaked: {json}");
    }
    // A token counts as the probe's secret once a token service issued it; the generated
    // answers may carry token-like bodies anywhere, which are only text until then.
    for token in &outcome.issued_tokens {
        let token = token.expose();
        assert!(
            token.is_empty() || !json.contains(token),
            "issued token {token} leaked: {json}"
        );
    }
    assert!(registry.requests.len() <= 12, "{:#?}", registry.requests);
    for request in &registry.requests {
        let carries_secret = request.header("authorization").is_some() || !request.body.is_empty();
        assert!(
            !(carries_secret && request.url.contains("storage.example")),
            "a secret went to a Location's host: {request:#?}"
        );
        assert!(
            !(carries_secret && request.url.starts_with("http:")),
            "a secret left https: {request:#?}"
        );
    }
}

#[test]
fn probe_never_panics_or_leaks_on_generated_answers() {
    let mut rng = testing::Rng(0x0c1_b0b);
    for _ in 0..3_000 {
        probe_garbage(&mut rng);
    }

    testing::fuzz_for(
        "probe",
        Duration::from_millis(800),
        1_000_000,
        probe_garbage,
    );
}
