//! The token request forms and the reading of token answers.

use super::*;
use crate::testing::{FakeRegistry, PASSWORD, jwt};

const USER_AGENT: &str = "test-agent";

fn realm() -> Url {
    Url::parse("https://auth.example/token").unwrap()
}

fn push_scope() -> Vec<String> {
    vec!["repository:team/app:pull,push".to_string()]
}

fn fetch_with(registry: &mut FakeRegistry, grant: Grant) -> Result<Token, TokenError> {
    let realm = realm();
    let scopes = push_scope();
    let request = TokenRequest {
        realm: &realm,
        service: Some("registry.example"),
        scopes: &scopes,
        user_agent: USER_AGENT,
    };
    fetch(registry, &request, grant)
}

fn password() -> Secret {
    Secret::new(PASSWORD)
}

fn password_grant(secret: &Secret) -> Grant<'_> {
    Grant::Password {
        username: "robot",
        password: secret,
    }
}

#[test]
fn password_grant_is_a_get_with_basic_credentials_and_encoded_query() {
    let mut registry = FakeRegistry::new().answer(200, &[], r#"{"token":"t1"}"#);
    let secret = password();

    let token = fetch_with(&mut registry, password_grant(&secret)).unwrap();

    let get = &registry.requests[0];
    assert_eq!(get.method, Method::Get);
    assert_eq!(
        get.url,
        "https://auth.example/token?service=registry.example\
         &scope=repository%3Ateam%2Fapp%3Apull%2Cpush"
    );
    assert!(get.header("authorization").unwrap().starts_with("Basic "));
    assert_eq!(get.header("user-agent"), Some(USER_AGENT));
    assert!(get.body.is_empty());
    assert_eq!(token.value().expose(), "t1");
}

#[test]
fn access_token_wins_and_expiry_defaults_to_sixty_seconds() {
    let both = r#"{"token":"old","access_token":"new","expires_in":300}"#;
    let mut registry =
        FakeRegistry::new()
            .answer(200, &[], both)
            .answer(200, &[], r#"{"access_token":"only"}"#);
    let secret = password();

    let first = fetch_with(&mut registry, password_grant(&secret)).unwrap();
    let second = fetch_with(&mut registry, password_grant(&secret)).unwrap();

    assert_eq!(first.value().expose(), "new");
    assert_eq!(first.expires_in, Duration::from_secs(300));
    assert_eq!(second.value().expose(), "only");
    assert_eq!(second.expires_in, Duration::from_secs(60));
}

#[test]
fn expires_in_is_read_from_integers_floats_and_strings() {
    let cases = [
        ("300", Duration::from_secs(300)),
        ("299.5", Duration::from_millis(299_500)),
        (r#""120""#, Duration::from_secs(120)),
        (r#"" 45 ""#, Duration::from_secs(45)),
        (r#""7.25""#, Duration::from_millis(7_250)),
    ];
    for (value, expected) in cases {
        let body = format!(r#"{{"token":"t","expires_in":{value}}}"#);
        let mut registry = FakeRegistry::new().answer(200, &[], &body);
        let secret = password();

        let token = fetch_with(&mut registry, password_grant(&secret)).unwrap();

        assert_eq!(token.expires_in, expected, "expires_in {value}");
    }
}

#[test]
fn unusable_expires_in_falls_back_to_sixty_seconds_and_keeps_the_token() {
    let values = [
        "0",
        "-5",
        "-0.5",
        "1e300",
        "null",
        "true",
        "[]",
        "{}",
        r#""""#,
        r#""soon""#,
        r#""NaN""#,
        r#""inf""#,
        r#""1e400""#,
    ];
    for value in values {
        let body = format!(r#"{{"token":"t","expires_in":{value}}}"#);
        let mut registry = FakeRegistry::new().answer(200, &[], &body);
        let secret = password();

        let token = fetch_with(&mut registry, password_grant(&secret))
            .unwrap_or_else(|error| panic!("expires_in {value}: {error:?}"));

        assert_eq!(token.value().expose(), "t", "expires_in {value}");
        assert_eq!(
            token.expires_in,
            Duration::from_secs(60),
            "expires_in {value}"
        );
    }
}

#[test]
fn refused_get_falls_back_to_the_oauth2_password_form() {
    for refusal in [404, 405] {
        let mut registry = FakeRegistry::new().answer(refusal, &[], "").answer(
            200,
            &[],
            r#"{"access_token":"t"}"#,
        );
        let secret = Secret::new("p&ss word");

        fetch_with(&mut registry, password_grant(&secret)).unwrap();

        let post = &registry.requests[1];
        assert_eq!(post.method, Method::Post);
        assert_eq!(post.url, "https://auth.example/token");
        assert_eq!(
            post.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(post.header("authorization"), None);
        assert_eq!(
            String::from_utf8(post.body.clone()).unwrap(),
            "grant_type=password&username=robot&password=p%26ss%20word\
             &service=registry.example&scope=repository%3Ateam%2Fapp%3Apull%2Cpush\
             &client_id=stella-doctor"
        );
    }
}

#[test]
fn refresh_token_goes_straight_to_the_oauth2_form() {
    let mut registry = FakeRegistry::new().answer(200, &[], r#"{"access_token":"t"}"#);
    let identity = Secret::new("identity-XYZ");

    fetch_with(&mut registry, Grant::RefreshToken(&identity)).unwrap();

    assert_eq!(registry.requests.len(), 1);
    let post = &registry.requests[0];
    assert_eq!(post.method, Method::Post);
    assert_eq!(
        String::from_utf8(post.body.clone()).unwrap(),
        "grant_type=refresh_token&refresh_token=identity-XYZ&service=registry.example\
         &scope=repository%3Ateam%2Fapp%3Apull%2Cpush&client_id=stella-doctor"
    );
}

#[test]
fn refusals_and_failures_are_told_apart() {
    let secret = password();
    let identity = Secret::new("identity");
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad password"}]}"#;
    let cases: [(u16, Grant, bool); 5] = [
        (401, password_grant(&secret), true),
        (403, password_grant(&secret), true),
        (400, Grant::RefreshToken(&identity), true),
        (400, password_grant(&secret), false),
        (500, password_grant(&secret), false),
    ];
    for (status, grant, refused) in cases {
        let mut registry = FakeRegistry::new().answer(status, &[], body);

        let error = fetch_with(&mut registry, grant).unwrap_err();

        assert_eq!(
            matches!(error, TokenError::Refused { .. }),
            refused,
            "{status}"
        );
        assert_eq!(error.status(), Some(status));
        assert_eq!(
            error.error().unwrap().code().as_deref(),
            Some("UNAUTHORIZED")
        );
    }
}

#[test]
fn success_without_a_token_is_no_token_and_unreachable_realm_is_reported() {
    let secret = password();
    let mut empty = FakeRegistry::new().answer(200, &[], r#"{"refresh_token":"r"}"#);
    let mut down = FakeRegistry::new().fail(TransportError::ConnectionRefused);

    assert_eq!(
        fetch_with(&mut empty, password_grant(&secret)).unwrap_err(),
        TokenError::NoToken { status: 200 }
    );
    assert_eq!(
        fetch_with(&mut down, password_grant(&secret)).unwrap_err(),
        TokenError::Unreachable(TransportError::ConnectionRefused)
    );
}

#[test]
fn granted_actions_come_from_the_answer_scope_first_then_the_jwt() {
    let token = jwt(&serde_json::json!({
        "access": [
            {"type": "repository", "name": "team/app", "actions": ["pull"]},
            {"type": "repository", "name": "other", "actions": ["push"]},
            {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
        ]
    }));
    let scoped = format!(r#"{{"access_token":"{token}","scope":"repository:team/app:pull"}}"#);
    let mut registry = FakeRegistry::new()
        .answer(200, &[], &format!(r#"{{"token":"{token}"}}"#))
        .answer(200, &[], &scoped)
        .answer(200, &[], r#"{"token":"opaque"}"#);
    let secret = password();

    let from_jwt = fetch_with(&mut registry, password_grant(&secret)).unwrap();
    let from_scope = fetch_with(&mut registry, password_grant(&secret)).unwrap();
    let opaque = fetch_with(&mut registry, password_grant(&secret)).unwrap();

    assert_eq!(
        from_jwt.granted_actions("team/app"),
        Some(vec!["pull".into(), "push".into()])
    );
    assert_eq!(from_jwt.granted_actions("elsewhere"), Some(vec![]));
    assert_eq!(
        from_scope.granted_actions("team/app"),
        Some(vec!["pull".into()])
    );
    assert_eq!(opaque.granted_actions("team/app"), None);
}

#[test]
fn scope_lists_with_ports_in_names_are_read() {
    let scope = "registry:catalog:* repository:host:5000/team/app:pull,push";

    assert_eq!(
        actions_in_scope(scope, "host:5000/team/app"),
        Some(vec!["pull".into(), "push".into()])
    );
    assert_eq!(actions_in_scope(scope, "team/app"), None);
}

#[test]
fn malformed_jwts_yield_nothing() {
    for token in ["a.b", "a.b.c.d", "x.!!!.y", "x.e30.y"] {
        assert_eq!(jwt_actions(token, "team/app"), None, "{token}");
    }
}
