//! The push check against a real distribution 2.8 registry in token mode,
//! with the tests' token server granting each user only their actions.

use crate::support::doctor::Doctor;
use crate::support::guests::plugins_dir;
use crate::support::registry::{self, Registry};
use crate::support::token_server::{TokenServer, TokenServerOptions, TokenUser};
use crate::{PUSH, diagnosis, evidence};
use serde_json::Value;

const ALLOWED_HOSTS: &str = "Doctor:Plugins:check.integration.oci.push:AllowedHosts";

const USERS: &[TokenUser] = &[
    TokenUser {
        name: "releaser",
        password: "releaser-pw-8812",
        actions: &["pull", "push", "delete"],
    },
    TokenUser {
        name: "pusher",
        password: "pusher-pw-1204",
        actions: &["pull", "push"],
    },
    TokenUser {
        name: "reader",
        password: "reader-pw-5530",
        actions: &["pull"],
    },
];

struct TokenSetup {
    tokens: TokenServer,
    registry: Registry,
    plugins: tempfile::TempDir,
}

fn setup(options: TokenServerOptions) -> Option<TokenSetup> {
    if !registry::available() {
        return None;
    }
    let tokens = TokenServer::start(USERS, options);
    let registry = Registry::start_with_token_server(&tokens);
    let plugins = plugins_dir(&["oci-push-check"]);
    Some(TokenSetup {
        tokens,
        registry,
        plugins,
    })
}

impl TokenSetup {
    /// Runs the push check as `user`; the realm (another port) is allowed.
    fn run_as(&self, user: &str, password: &str) -> Value {
        let allow = format!("http://{}", self.tokens.authority());
        self.run_with(user, password, Some(&allow))
    }

    fn run_with(&self, user: &str, password: &str, allow: Option<&str>) -> Value {
        let mut doctor = Doctor::new(self.plugins.path())
            .set("OCI:RegistryUrl", &self.registry.url)
            .set("OCI:Username", user)
            .set("OCI:Password", password);
        if let Some(allow) = allow {
            doctor = doctor.set(ALLOWED_HOSTS, allow);
        }
        let (outcome, result) = doctor.run_check_json(PUSH);
        assert!(
            !outcome.all_output().contains(password),
            "the password leaked"
        );
        result
    }
}

#[test]
fn push_pull_delete_user_passes_and_the_upload_is_cancelled() {
    let Some(setup) = setup(TokenServerOptions::default()) else {
        return;
    };

    let result = setup.run_as("releaser", "releaser-pw-8812");

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "auth_method"), "bearer-exchange");
    assert_eq!(evidence(&result, "token_realm"), "127.0.0.1");
    assert_eq!(evidence(&result, "upload_cancelled"), "true", "{result:#}");
    assert_eq!(setup.registry.upload_sessions().len(), 1);
    assert_eq!(
        setup.registry.leftover_upload_data(),
        Vec::<std::path::PathBuf>::new()
    );
    let scopes: Vec<String> = setup
        .tokens
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert!(
        scopes
            .iter()
            .all(|s| !s.contains("pull%2Cpush%2Cdelete") && !s.contains("pull,push,delete")),
        "delete is never asked for up front: {scopes:?}"
    );
}

#[test]
fn push_pull_user_passes_with_the_cancel_reported_as_not_done() {
    let Some(setup) = setup(TokenServerOptions::default()) else {
        return;
    };

    let result = setup.run_as("pusher", "pusher-pw-1204");

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert_eq!(evidence(&result, "upload_cancelled"), "false", "{result:#}");
}

#[test]
fn pull_only_user_fails_with_no_push_permission_not_invalid_credentials() {
    let Some(setup) = setup(TokenServerOptions::default()) else {
        return;
    };

    let result = setup.run_as("reader", "reader-pw-5530");

    assert_eq!(result["severity"], "fail", "{result:#}");
    let text = diagnosis(&result);
    assert!(text.contains("push"), "{text}");
    assert!(!text.contains("invalid credentials"), "{text}");
    assert_eq!(evidence(&result, "challenge_error"), "insufficient_scope");
    // Read from the JWT's `access` claim the token server signed.
    assert_eq!(evidence(&result, "granted_actions"), "pull");
    assert_eq!(evidence(&result, "auth_method"), "bearer-exchange");
    assert!(setup.registry.upload_sessions().is_empty());
}

#[test]
fn wrong_password_fails_with_invalid_credentials_at_the_token_endpoint() {
    let Some(setup) = setup(TokenServerOptions::default()) else {
        return;
    };

    let result = setup.run_as("releaser", "not-the-releaser-pw");

    assert_eq!(result["severity"], "fail", "{result:#}");
    assert!(
        diagnosis(&result).contains("invalid credentials"),
        "{result:#}"
    );
}

#[test]
fn token_server_that_refuses_get_is_used_through_the_oauth2_form() {
    let Some(setup) = setup(TokenServerOptions { refuse_get: true }) else {
        return;
    };

    let result = setup.run_as("releaser", "releaser-pw-8812");

    assert_eq!(result["severity"], "pass", "{result:#}");
    assert!(
        setup
            .tokens
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.body.contains("grant_type=password"))
    );
}

#[test]
fn realm_on_a_host_that_is_not_allowed_names_the_host_and_the_key() {
    let Some(setup) = setup(TokenServerOptions::default()) else {
        return;
    };

    let result = setup.run_with("releaser", "releaser-pw-8812", None);

    assert_eq!(result["severity"], "fail", "{result:#}");
    let text = result["diagnosis"].as_str().unwrap();
    assert!(
        text.contains(&setup.tokens.authority()),
        "names the realm host: {text}"
    );
    assert!(text.contains(ALLOWED_HOSTS), "names the key: {text}");
    assert!(setup.tokens.requests().is_empty());
}
