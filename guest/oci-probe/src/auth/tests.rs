//! Where credentials and tokens go, and how they are exchanged.

use super::*;
use crate::challenge;
use crate::http::Method;
use crate::testing::{BASIC_VALUE, FakeRegistry, PASSWORD};

fn registry() -> Url {
    Url::parse_registry("registry.example").unwrap()
}

fn basic() -> Credentials {
    Credentials::Basic {
        username: "robot".into(),
        password: Secret::new(PASSWORD),
    }
}

fn bearer_challenge(realm: &str) -> Challenge {
    let header = format!(r#"Bearer realm="{realm}",service="registry.example""#);
    challenge::parse(&header).remove(0)
}

fn scopes() -> Vec<String> {
    vec!["repository:team/app:pull,push".into()]
}

#[test]
fn basic_credentials_become_a_basic_header() {
    let auth = Auth::new(basic(), &registry());

    assert_eq!(
        auth.authorization_for(&registry()),
        Some(format!("Basic {BASIC_VALUE}"))
    );
    assert_eq!(auth.method(), AuthMethod::Basic);
}

#[test]
fn bearer_token_is_sent_unchanged() {
    let token = Credentials::Bearer {
        token: Secret::new("tok"),
    };

    let auth = Auth::new(token, &registry());

    assert_eq!(
        auth.authorization_for(&registry()).as_deref(),
        Some("Bearer tok")
    );
    assert_eq!(auth.method(), AuthMethod::BearerStatic);
}

#[test]
fn anonymous_sends_nothing() {
    let auth = Auth::anonymous(&registry());

    assert_eq!(auth.authorization_for(&registry()), None);
    assert_eq!(auth.method().as_str(), "anonymous");
}

#[test]
fn credentials_stay_on_the_registry_origin() {
    let auth = Auth::new(basic(), &registry());

    for elsewhere in [
        "https://storage.example/upload",
        "http://registry.example/v2/",
        "https://registry.example:8443/v2/",
    ] {
        let target = Url::parse(elsewhere).unwrap();
        assert_eq!(auth.authorization_for(&target), None, "sent to {elsewhere}");
    }
}

#[test]
fn exchanged_token_replaces_the_credentials_on_the_registry_only() {
    let mut realm = FakeRegistry::new().answer(200, &[], r#"{"token":"registry-token"}"#);
    let mut auth = Auth::new(basic(), &registry());

    let issued_by = auth
        .exchange(
            &mut realm,
            &bearer_challenge("https://auth.example/token"),
            &scopes(),
        )
        .unwrap();

    assert_eq!(issued_by.authority(), "auth.example");
    assert_eq!(
        realm.requests[0].header("authorization"),
        Some(format!("Basic {BASIC_VALUE}").as_str()),
        "basic credentials go to the realm the registry named"
    );
    assert_eq!(auth.method(), AuthMethod::BearerExchange);
    assert_eq!(
        auth.authorization_for(&registry()).as_deref(),
        Some("Bearer registry-token")
    );
    let realm_url = Url::parse("https://auth.example/token").unwrap();
    assert_eq!(
        auth.authorization_for(&realm_url),
        None,
        "the token stays on the registry"
    );
}

#[test]
fn static_token_is_exchanged_as_a_refresh_token() {
    let mut realm = FakeRegistry::new().answer(200, &[], r#"{"access_token":"fresh"}"#);
    let identity = Credentials::Bearer {
        token: Secret::new("identity-token"),
    };
    let mut auth = Auth::new(identity, &registry());

    auth.exchange(
        &mut realm,
        &bearer_challenge("https://auth.example/oauth2/token"),
        &scopes(),
    )
    .unwrap();

    let post = &realm.requests[0];
    assert_eq!(post.method, Method::Post);
    assert_eq!(post.header("authorization"), None);
    let body = String::from_utf8(post.body.clone()).unwrap();
    assert!(
        body.starts_with("grant_type=refresh_token&refresh_token=identity-token"),
        "{body}"
    );
    assert_eq!(auth.method(), AuthMethod::BearerExchange);
}

#[test]
fn plain_http_realm_of_an_https_registry_is_refused_without_a_request() {
    let mut realm = FakeRegistry::new();
    let mut auth = Auth::new(basic(), &registry());

    let error = auth
        .exchange(
            &mut realm,
            &bearer_challenge("http://auth.example/token"),
            &scopes(),
        )
        .unwrap_err();

    assert!(
        matches!(error, ExchangeError::Realm(RealmProblem::Downgrade { .. })),
        "{error:?}"
    );
    assert!(realm.requests.is_empty());
    assert_eq!(auth.method(), AuthMethod::Basic);
}

#[test]
fn plain_http_realm_of_a_plain_http_registry_is_used() {
    let registry = Url::parse_registry("http://127.0.0.1:5000").unwrap();
    let mut realm = FakeRegistry::new().answer(200, &[], r#"{"token":"t"}"#);
    let mut auth = Auth::new(basic(), &registry);

    let issued_by = auth
        .exchange(
            &mut realm,
            &bearer_challenge("http://127.0.0.1:5001/token"),
            &scopes(),
        )
        .unwrap();

    assert_eq!(issued_by.authority(), "127.0.0.1:5001");
}

#[test]
fn missing_or_unusable_realms_are_refused_without_a_request() {
    let mut realm = FakeRegistry::new();
    let mut auth = Auth::new(basic(), &registry());
    let no_realm = challenge::parse(r#"Bearer service="s""#).remove(0);

    assert_eq!(
        auth.exchange(&mut realm, &no_realm, &scopes()),
        Err(ExchangeError::Realm(RealmProblem::Missing))
    );
    for bad in [
        "/token",
        "ftp://auth.example/t",
        "https://u:p@auth.example/t",
    ] {
        let error = auth
            .exchange(&mut realm, &bearer_challenge(bad), &scopes())
            .unwrap_err();
        assert!(
            matches!(error, ExchangeError::Realm(RealmProblem::Invalid { .. })),
            "{bad}"
        );
    }
    assert!(realm.requests.is_empty());
}

#[test]
fn debug_output_hides_secrets() {
    let text = format!("{:?}", basic());

    assert!(!text.contains(PASSWORD), "{text}");
    assert!(text.contains("robot"));
}
