//! Turning what the probe saw into a [`CheckResult`] an operator can act on.
//!
//! Severity, diagnosis, evidence and causes are decided here; the deployment-specific fixes live
//! in [`crate::remediation`]. Nothing here ever sees a password or token: the probe outcome holds
//! only the authentication method, and the configuration's secrets are never formatted.

use crate::auth::{AuthMethod, Credentials, RealmProblem, Secret};
use crate::config::{ConfigError, ProbeConfig};
use crate::http::TransportError;
use crate::model::{CheckResult, EvidenceItem, Severity};
use crate::push::{
    Cancel, CredentialsCheck, Denial, PushOutcome, TokenExchange, TokenProblem, Verdict,
};
use crate::remediation;
use crate::url::Url;

/// The command that re-runs this check.
pub const VERIFY_COMMAND: &str = "stella-doctor run --check check.integration.oci.push";

/// The host configuration key that lists the origins this check may reach.
pub const ALLOWED_HOSTS_KEY: &str = "Doctor:Plugins:check.integration.oci.push:AllowedHosts";

/// The result for a configuration that cannot be probed: skip when nothing is set, fail when a
/// value is wrong.
pub fn config_problem(error: &ConfigError) -> CheckResult {
    let severity = match error {
        ConfigError::RegistryNotConfigured | ConfigError::CredentialsNotConfigured => {
            Severity::Skip
        }
        ConfigError::IncompleteBasicAuth { .. } | ConfigError::Invalid { .. } => Severity::Fail,
    };
    let mut diagnosis = error.to_string();
    capitalise(&mut diagnosis);
    diagnosis.push('.');

    CheckResult {
        severity,
        diagnosis,
        evidence: config_evidence(error),
        likely_causes: Vec::new(),
        remediation: remediation::for_config(error),
        verification_command: Some(VERIFY_COMMAND.to_string()),
    }
}

/// The result for a completed probe.
pub fn probe_result(config: &ProbeConfig, outcome: &PushOutcome) -> CheckResult {
    let severity = match outcome.verdict {
        Verdict::Permitted(_) => Severity::Pass,
        // Both say "try again later"; the grant itself is unknown, not broken.
        Verdict::RateLimited | Verdict::Unavailable => Severity::Warn,
        _ => Severity::Fail,
    };
    let passed = severity == Severity::Pass;

    let mut result = CheckResult {
        severity,
        diagnosis: diagnosis(config, outcome),
        evidence: evidence(config, outcome),
        likely_causes: likely_causes(outcome),
        remediation: if passed {
            Vec::new()
        } else {
            remediation::for_outcome(config, outcome)
        },
        verification_command: (!passed).then(|| VERIFY_COMMAND.to_string()),
    };
    mask_issued_tokens(&mut result, &outcome.issued_tokens);
    result
}

/// Replaces every issued token in `result` with `***`.
///
/// The report never formats a token, but it quotes what registries and token services answered,
/// and the host, which redacts the configured secrets, cannot know a token issued inside the
/// run.
fn mask_issued_tokens(result: &mut CheckResult, tokens: &[Secret]) {
    let tokens: Vec<&str> = tokens
        .iter()
        .map(Secret::expose)
        .filter(|token| !token.is_empty())
        .collect();
    if tokens.is_empty() {
        return;
    }
    let mask = |text: &mut String| {
        for token in &tokens {
            if text.contains(token) {
                *text = text.replace(token, "***");
            }
        }
    };
    mask(&mut result.diagnosis);
    result
        .evidence
        .iter_mut()
        .for_each(|item| mask(&mut item.value));
    result.likely_causes.iter_mut().for_each(mask);
    for step in &mut result.remediation {
        mask(&mut step.title);
        step.commands.iter_mut().for_each(mask);
    }
    if let Some(command) = &mut result.verification_command {
        mask(command);
    }
}

fn diagnosis(config: &ProbeConfig, outcome: &PushOutcome) -> String {
    let target = format!("`{}/{}`", config.registry.authority(), config.repository);
    let answer = answer_summary(outcome);
    let account = match &config.credentials {
        Credentials::Basic { username, .. } => format!("The service account `{username}`"),
        Credentials::Bearer { .. } => "The configured token".to_string(),
    };

    match &outcome.verdict {
        Verdict::Permitted(cancel) => format!(
            "{account} can push to {target}: the registry opened an upload session ({answer}){}",
            cancel_sentence(cancel)
        ),
        Verdict::InvalidCredentials => invalid_credentials(config, outcome, &target),
        Verdict::TokenRefused => format!(
            "Invalid credentials: the token service {} refused them ({}) when asked for push \
             access to {target}; the password or token is wrong, expired or revoked.",
            realm_name(outcome),
            token_answer(outcome)
        ),
        Verdict::TokenRejected => format!(
            "The registry rejected the token its own token service {} issued ({answer}, \
             challenge error `invalid_token`): the registry and the token service disagree on \
             the issuer, the service (audience) or the signing certificate, or their clocks \
             differ; push permission could not be checked.",
            realm_name(outcome)
        ),
        Verdict::NotPermitted(denial) => format!(
            "The credentials are valid but do not permit push to {target} for {}; {}.",
            lowercase_first(&account),
            denial_detail(config, outcome, *denial)
        ),
        Verdict::RepositoryUnknown => format!(
            "The registry does not know the repository {target} and did not create it ({answer})."
        ),
        Verdict::ReadOnly => format!(
            "The registry accepts no uploads at {target} ({answer}): it is read-only or a \
             pull-through cache."
        ),
        Verdict::RateLimited => format!(
            "The registry is rate-limiting {} ({answer}); push permission could not be confirmed.",
            lowercase_first(&account)
        ),
        Verdict::Unavailable => format!(
            "The registry is temporarily unavailable ({answer}); push permission could not be \
             confirmed."
        ),
        Verdict::ServerError => format!(
            "The registry failed with a server error ({answer}); push permission could not be \
             confirmed."
        ),
        Verdict::Unexpected => format!(
            "The registry answered the upload request with {answer} instead of 202 Accepted; \
             `{}` may not be an OCI registry API.",
            config.registry
        ),
        Verdict::Unreachable(error) => unreachable_diagnosis(config, outcome, error),
        Verdict::TokenUnavailable(problem) => token_diagnosis(outcome, problem),
    }
}

/// A 401 to credentials sent as they are, explained by what `GET /v2/` said about them.
fn invalid_credentials(config: &ProbeConfig, outcome: &PushOutcome, target: &str) -> String {
    let answer = answer_summary(outcome);
    let login = login_request(config);
    match &outcome.credentials_check {
        Some(CredentialsCheck::Refused { status }) => format!(
            "Invalid credentials: the registry refused them for the upload to {target} ({answer}) \
             and again for {login} ({status}); the password or token is wrong, expired or \
             revoked."
        ),
        Some(check) => format!(
            "Invalid credentials, or valid ones without push permission: the registry refused \
             the upload to {target} ({answer}), and checking the credentials with {login} could \
             not tell which ({}).",
            check_failure(check)
        ),
        None => format!(
            "Invalid credentials: the registry refused them for {target} ({answer}); the \
             password or token is wrong, expired or revoked, or the account may not push there."
        ),
    }
}

/// `` `GET https://registry/v2/` ``: the request that checks credentials without a push grant.
fn login_request(config: &ProbeConfig) -> String {
    format!("`GET {}`", config.registry.join_path("/v2/"))
}

/// Why a credentials check told nothing, as a clause.
fn check_failure(check: &CredentialsCheck) -> String {
    match check {
        CredentialsCheck::OpenToAnyone { status } => {
            format!("it answers {status} without credentials too")
        }
        CredentialsCheck::Unexpected { status } => format!("it answered {status}"),
        CredentialsCheck::Unanswered { error, .. } => format!("it got no answer: {error}"),
        CredentialsCheck::Accepted { status } | CredentialsCheck::Refused { status } => {
            format!("it answered {status}")
        }
    }
}

/// How the registry said no, after the credentials were shown to be valid.
fn denial_detail(config: &ProbeConfig, outcome: &PushOutcome, denial: Denial) -> String {
    let answer = answer_summary(outcome);
    match denial {
        Denial::Forbidden => format!("the registry answered {answer}"),
        Denial::TokenLacksPush if outcome.token.is_none() => {
            format!("the registry refused the token for the upload ({answer})")
        }
        Denial::TokenLacksPush => format!(
            "the token service {} issued a token{}, and the registry refused it for the upload \
             ({answer})",
            realm_name(outcome),
            granted_clause(outcome)
        ),
        Denial::PullOnly => format!(
            "the token service {} refused a push token ({}) but issued a pull token to the same \
             credentials",
            realm_name(outcome),
            token_answer(outcome)
        ),
        Denial::CredentialsAccepted => {
            let status = outcome
                .credentials_check
                .as_ref()
                .and_then(CredentialsCheck::status)
                .map_or(String::new(), |status| format!(" ({status})"));
            format!(
                "the registry refused the upload ({answer}) although it accepted the same \
                 credentials for {}{status}",
                login_request(config)
            )
        }
    }
}

/// ` granting only `pull`` when the token said what it grants.
fn granted_clause(outcome: &PushOutcome) -> String {
    let granted = outcome
        .token
        .as_ref()
        .and_then(|token| token.granted_actions.as_ref());
    match granted {
        Some(actions) if actions.is_empty() => " granting no action on the repository".to_string(),
        Some(actions) if !actions.iter().any(|a| a == "push" || a == "*") => {
            format!(" granting only `{}`", actions.join(","))
        }
        _ => String::new(),
    }
}

/// The realm's authority in backticks, e.g. `` `auth.docker.io` ``.
fn realm_name(outcome: &PushOutcome) -> String {
    outcome
        .token
        .as_ref()
        .map_or("of the registry".to_string(), |token| {
            format!("`{}`", token.realm.authority())
        })
}

/// The token service's status with its own words, e.g. `401 UNAUTHORIZED: bad password`.
fn token_answer(outcome: &PushOutcome) -> String {
    let Some(TokenExchange { status, error, .. }) = &outcome.token else {
        return "no answer".to_string();
    };
    let status = status.map_or(String::new(), |s| s.to_string());
    match error.summary() {
        Some(text) => format!("{status} {text}"),
        None if status.starts_with('2') => {
            format!("{status} without a `token` or `access_token`")
        }
        None => status,
    }
}

fn token_diagnosis(outcome: &PushOutcome, problem: &TokenProblem) -> String {
    let answer = answer_summary(outcome);
    match problem {
        TokenProblem::Realm(RealmProblem::Missing) => format!(
            "The registry asked for a token ({answer}) but its challenge names no realm to get \
             one from; push permission could not be checked."
        ),
        TokenProblem::Realm(RealmProblem::Invalid { realm, error }) => format!(
            "The registry's challenge names the token realm {realm:?}, which is not a usable url \
             ({error}); push permission could not be checked."
        ),
        TokenProblem::Realm(RealmProblem::Downgrade { realm }) => format!(
            "Refused to send the credentials to the token service `{realm}`: the registry is \
             served over https but its challenge names a plain-http realm, where the password \
             would cross the network unencrypted."
        ),
        TokenProblem::Unreachable(TransportError::Denied { origin }) => format!(
            "The doctor's outbound policy denied the request to the token service {} that the \
             registry named in its challenge; add `{origin}` to `{ALLOWED_HOSTS_KEY}` to let \
             this check fetch a token.",
            realm_name(outcome)
        ),
        TokenProblem::Unreachable(error) => format!(
            "The token service {} that the registry named could not be reached ({error}); push \
             permission could not be checked.",
            realm_name(outcome)
        ),
        TokenProblem::Failed => format!(
            "The token service {} answered {} instead of issuing a token; push permission could \
             not be checked.",
            realm_name(outcome),
            token_answer(outcome)
        ),
    }
}

/// The status with the registry's own words, e.g. `403 DENIED: requested access is denied`.
fn answer_summary(outcome: &PushOutcome) -> String {
    let status = outcome.status.map_or(String::new(), |s| s.to_string());
    let mut summary = match outcome.error.summary() {
        Some(text) => format!("{status} {text}"),
        None => status,
    };
    if let Some(retry) = &outcome.retry_after {
        summary.push_str(&format!(", retry after {retry}"));
    }
    summary
}

fn cancel_sentence(cancel: &Cancel) -> String {
    const HARMLESS: &str = "which is harmless: registries expire abandoned upload sessions";
    match cancel {
        Cancel::Attempted {
            result: Ok((status, _)),
            ..
        } if cancel.succeeded() => {
            format!(" and the probe cancelled it at once ({status}).")
        }
        Cancel::Attempted {
            result: Ok((status, body)),
            retried_with_token,
            ..
        } => {
            let said = body.code().map_or(String::new(), |code| format!(" {code}"));
            // distribution needs the `delete` action to cancel; push alone is enough to pass.
            let why = match (*status, *retried_with_token) {
                (401, true) => {
                    " even with a token for the scope the registry named (the account \
                                lacks the `delete` action)"
                }
                _ => "",
            };
            format!("; cancelling it answered {status}{said}{why}, {HARMLESS}.")
        }
        Cancel::Attempted {
            result: Err(error), ..
        } => {
            format!("; cancelling it failed ({error}), {HARMLESS}.")
        }
        Cancel::NoLocation => format!(
            "; the answer named no `Location`, so the session could not be cancelled, {HARMLESS}."
        ),
        Cancel::BadLocation(error) => format!(
            "; its `Location` was unusable ({error}), so the session could not be cancelled, \
             {HARMLESS}."
        ),
        Cancel::Downgrade { .. } => format!(
            "; the probe {DOWNGRADE_REFUSED}, so the session was not cancelled, {HARMLESS}."
        ),
        Cancel::TokenExpired { .. } => {
            format!("; {TOKEN_EXPIRED}, so the session was not cancelled, {HARMLESS}.")
        }
    }
}

/// Why an expired token led to no DELETE.
const TOKEN_EXPIRED: &str =
    "the token had expired before the cancel and no fresh one could be fetched";

/// Why a plain-http `Location` of an https registry gets no DELETE.
const DOWNGRADE_REFUSED: &str = "refused to follow a `Location` that leaves https for plain http";

fn unreachable_diagnosis(
    config: &ProbeConfig,
    outcome: &PushOutcome,
    error: &TransportError,
) -> String {
    let url = &outcome.upload_url;
    let address = format!("{}:{}", url.host(), url.port());
    match error {
        TransportError::Denied { origin } => format!(
            "The doctor's outbound policy denied the request to `{origin}`; add it to \
             `{ALLOWED_HOSTS_KEY}` to let this check reach the registry."
        ),
        TransportError::Dns => format!(
            "The registry host `{}` could not be resolved (dns failure).",
            url.host()
        ),
        TransportError::ConnectionRefused => {
            format!("The connection to `{address}` was refused: nothing accepts connections there.")
        }
        TransportError::Tls(_) => {
            format!("Could not open a TLS connection to `{address}` ({error}).")
        }
        TransportError::Timeout => format!(
            "The request to `{address}` timed out after {} seconds (`OCI:TimeoutSeconds`).",
            config.timeout.as_secs()
        ),
        TransportError::Other(detail) => format!("The request to `{url}` failed: {detail}."),
    }
}

fn likely_causes(outcome: &PushOutcome) -> Vec<String> {
    let causes: &[&str] = match &outcome.verdict {
        Verdict::Permitted(_) => &[],
        Verdict::InvalidCredentials if credentials_refused(outcome) => &[
            "The password or token is wrong, has expired or has been revoked.",
            "The user name is wrong, or the account is disabled or locked.",
            "A robot account's secret was regenerated, or the robot account deleted (Harbor, \
             Quay), and the old secret is still configured.",
        ],
        Verdict::InvalidCredentials => &[
            "The password or token is wrong, has expired or has been revoked.",
            "The credentials are valid but lack write permission: Harbor, Quay and token-based \
             registries answer 401 rather than 403 when push is not granted.",
            "The project or organisation in the repository path does not exist (Harbor answers \
             401 for a missing project).",
            "The registry expects a token exchange that static credentials cannot satisfy.",
        ],
        Verdict::TokenRejected => &[
            "The token's issuer (`iss`) is not the one the registry expects (distribution: \
             `auth.token.issuer`).",
            "The token's audience (`aud`) is not the registry's service name (distribution: \
             `auth.token.service`).",
            "The certificate that signs the tokens is not in the registry's trusted bundle \
             (distribution: `auth.token.rootcertbundle`), for example after the token service's \
             key was rotated.",
            "The clocks of the registry and the token service differ, so the token looks expired \
             or not yet valid.",
        ],
        Verdict::TokenRefused => &[
            "The password or token is wrong, has expired or has been revoked.",
            "The user name is wrong: token services refuse unknown users the same way.",
            "The account is locked or disabled in the identity provider behind the token service.",
        ],
        Verdict::NotPermitted(Denial::TokenLacksPush) => &[
            "The account may read the repository but has no write permission on it: the registry \
             issued a token without `push`.",
            "A pull-only robot account or read-only access token is configured.",
            "The project or organisation in the repository path does not exist, or the account \
             is not a member of it (Harbor answers 401 for a missing project).",
        ],
        Verdict::NotPermitted(Denial::CredentialsAccepted) => &[
            "The account is valid but has no push permission on the repository (Harbor: a Guest \
             or Limited Guest role on the project, or a robot account without push).",
            "The project or organisation in the repository path does not exist, or the account \
             is not a member of it (Harbor answers 401 for a missing project).",
            "An organisation or team policy limits who may push to this repository.",
        ],
        Verdict::NotPermitted(Denial::PullOnly) => &[
            "The access token is read-only (Docker Hub: a Read-only or Public Repo Read-only \
             access token).",
            "The account may pull but has no write permission on the repository.",
        ],
        Verdict::TokenUnavailable(TokenProblem::Realm(RealmProblem::Downgrade { .. })) => &[
            "The registry's token realm (`auth.token.realm` in distribution) says `http://` \
             although the registry itself is served over https.",
            "A proxy in front of the registry rewrites the `WWW-Authenticate` header.",
        ],
        Verdict::TokenUnavailable(TokenProblem::Realm(_)) => &[
            "The registry's token authentication is misconfigured: a `Bearer` challenge must \
             name an absolute `realm` url.",
            "A proxy in front of the registry rewrites the `WWW-Authenticate` header.",
        ],
        Verdict::TokenUnavailable(TokenProblem::Unreachable(TransportError::Denied { .. })) => &[
            "The registry sends clients to a token service on another host (Docker Hub: \
             `auth.docker.io`; GitLab: the GitLab host), which is not in the check's allowed \
             outbound hosts.",
        ],
        Verdict::TokenUnavailable(TokenProblem::Unreachable(error)) => transport_causes(error),
        Verdict::TokenUnavailable(TokenProblem::Failed) => &[
            "The token service is down, overloaded or misconfigured.",
            "The token service does not know the `service` or `scope` the registry asks for.",
        ],
        Verdict::NotPermitted(Denial::Forbidden) => &[
            "The credentials are valid but the account has no write permission on the repository.",
            "The service account is read-only (a pull-only robot account or access token).",
            "An organisation or team policy limits who may push to this repository.",
            "IP allowlists or network rules on the registry block writes from this host.",
            "The registry's storage quota for the project is exhausted.",
        ],
        Verdict::RepositoryUnknown => &[
            "The repository does not exist and the registry does not create repositories on \
             push (ECR, some Harbor and Artifactory setups).",
            "The repository path names a project or namespace that does not exist.",
            "`OCI:RegistryUrl` carries a path prefix the registry does not serve.",
        ],
        Verdict::ReadOnly => &[
            "The registry runs in read-only or maintenance mode.",
            "`OCI:RegistryUrl` points at a pull-through cache or mirror instead of the primary \
             registry.",
            "A reverse proxy in front of the registry only allows reads.",
        ],
        Verdict::RateLimited => &[
            "The account or this host's address exceeded the registry's request rate limit.",
            "Many clients share the service account at the same time.",
        ],
        Verdict::Unavailable | Verdict::ServerError => &[
            "The registry or its storage backend is down, overloaded or being upgraded.",
            "A reverse proxy or load balancer cannot reach the registry.",
        ],
        Verdict::Unexpected => &[
            "`OCI:RegistryUrl` points at a web page, login portal or proxy rather than the \
             registry API.",
            "A proxy redirects the request (for example from http to https).",
        ],
        Verdict::Unreachable(error) => transport_causes(error),
    };
    let mut causes: Vec<String> = causes.iter().map(|cause| cause.to_string()).collect();

    // A 401 usually means a bad password, unless the registry said outright that the scope was
    // too small: then the missing grant is the better first guess (when `GET /v2/` did not
    // already show the credentials wrong).
    if outcome.verdict == Verdict::InvalidCredentials
        && !credentials_refused(outcome)
        && scope_was_insufficient(outcome)
    {
        causes.swap(0, 1);
    }
    causes
}

/// True when `GET /v2/` showed the credentials wrong.
fn credentials_refused(outcome: &PushOutcome) -> bool {
    matches!(
        outcome.credentials_check,
        Some(CredentialsCheck::Refused { .. })
    )
}

/// True when a 401 says the account was recognised but lacks the requested access.
fn scope_was_insufficient(outcome: &PushOutcome) -> bool {
    let challenge = outcome.challenge.as_deref().unwrap_or_default();
    challenge.contains("insufficient_scope") || outcome.error.has_code("DENIED")
}

fn transport_causes(error: &TransportError) -> &'static [&'static str] {
    match error {
        TransportError::Denied { .. } => &[
            "The registry's origin is not in the check's allowed outbound hosts.",
            "The registry URL changed and the allowlist still names the old one.",
        ],
        TransportError::Dns => &[
            "The host name in the registry URL is misspelt.",
            "The doctor's machine uses a DNS server that does not know the registry's name.",
        ],
        TransportError::ConnectionRefused => &[
            "The port in the registry URL is wrong.",
            "The registry is not running.",
            "A firewall rejects connections from this host.",
        ],
        TransportError::Tls(_) => &[
            "The registry's certificate is self-signed or signed by a CA this host does not trust.",
            "The certificate does not cover the host name in the registry URL.",
            "The registry speaks plain http but the URL says https.",
        ],
        TransportError::Timeout => &[
            "A firewall silently drops traffic to the registry.",
            "The registry is overloaded.",
            "`OCI:TimeoutSeconds` is too low for this network.",
        ],
        TransportError::Other(_) => {
            &["The network between the doctor and the registry is failing."]
        }
    }
}

fn evidence(config: &ProbeConfig, outcome: &PushOutcome) -> Vec<EvidenceItem> {
    let mut items = Evidence::default();
    items.add("registry_url", config.registry.to_string());
    items.add("repository", &config.repository);
    items.add("auth_method", outcome.auth_method);
    if let Credentials::Basic { username, .. } = &config.credentials {
        items.add("username", username);
    }
    items.add_opt("status_code", outcome.status);
    if let Verdict::Permitted(cancel) = &outcome.verdict {
        items.add("upload_cancelled", cancel.succeeded());
    }
    items.add_opt("error_code", outcome.error.code());
    items.add_opt("error_message", outcome.error.message());
    items.add("duration_ms", outcome.duration.as_millis());

    token_evidence(&mut items, outcome);
    items.add_opt("challenge_error", outcome.challenge_error.as_deref());
    items.add_opt("response_body_excerpt", outcome.error.raw());
    items.add_opt("auth_challenge", outcome.challenge.as_deref());
    items.add_opt("retry_after", outcome.retry_after.as_deref());
    if let Some(check) = &outcome.credentials_check {
        credentials_check_evidence(&mut items, check);
    }
    if let Verdict::Permitted(cancel) = &outcome.verdict {
        cancel_evidence(&mut items, cancel);
    }
    match &outcome.verdict {
        Verdict::Unreachable(error)
        | Verdict::TokenUnavailable(TokenProblem::Unreachable(error)) => {
            transport_evidence(&mut items, config, error)
        }
        _ => {}
    }
    items.0
}

/// `token_realm` (the host alone), the token service's refusal, and what the token granted.
fn token_evidence(items: &mut Evidence, outcome: &PushOutcome) {
    let refused_realm = match &outcome.verdict {
        Verdict::TokenUnavailable(TokenProblem::Realm(RealmProblem::Downgrade { realm })) => {
            Some(realm)
        }
        _ => None,
    };
    let realm: Option<&Url> = outcome.token.as_ref().map(|t| &t.realm).or(refused_realm);
    items.add_opt("token_realm", realm.map(Url::host));

    let Some(token) = &outcome.token else {
        return;
    };
    items.add_opt("token_status", token.status);
    // The raw excerpt unquoted: evidence values are shown as they are, unlike a diagnosis clause.
    let token_error = token.error.raw().map(str::to_string);
    items.add_opt("token_error", token_error.or_else(|| token.error.summary()));
    items.add_opt(
        "granted_actions",
        token
            .granted_actions
            .as_ref()
            .map(|actions| actions.join(",")),
    );
}

/// `credentials_verified` when `GET /v2/` told, its status, and why it did not tell.
fn credentials_check_evidence(items: &mut Evidence, check: &CredentialsCheck) {
    items.add_opt("credentials_verified", check.verified());
    items.add_opt("credentials_check_status", check.status());
    let error = match check {
        CredentialsCheck::Accepted { .. } | CredentialsCheck::Refused { .. } => None,
        CredentialsCheck::OpenToAnyone { .. } => {
            Some("GET /v2/ answers without credentials too".to_string())
        }
        CredentialsCheck::Unexpected { status } => Some(format!("unexpected status {status}")),
        CredentialsCheck::Unanswered { error, .. } => Some(error.to_string()),
    };
    items.add_opt("credentials_check_error", error);
}

fn cancel_evidence(items: &mut Evidence, cancel: &Cancel) {
    match cancel {
        Cancel::NoLocation => items.add("upload_location_host", "none"),
        Cancel::BadLocation(error) => items.add("cancel_error", error),
        Cancel::Downgrade { location } => {
            items.add("upload_location_host", location.authority());
            items.add("cancel_error", DOWNGRADE_REFUSED);
        }
        Cancel::TokenExpired { location } => {
            items.add("upload_location_host", location.authority());
            items.add("cancel_error", TOKEN_EXPIRED);
        }
        Cancel::Attempted {
            location,
            credentials_sent,
            token_renewed,
            retried_with_token,
            result,
        } => {
            items.add("upload_location_host", location.authority());
            items.add("cancel_credentials_sent", credentials_sent);
            if *token_renewed {
                items.add("cancel_token_renewed", true);
            }
            if *retried_with_token {
                items.add("cancel_retried_with_token", true);
            }
            match result {
                Ok((status, body)) => {
                    items.add("cancel_status", status);
                    items.add_opt("cancel_error_code", body.code());
                }
                Err(error) => items.add("cancel_error", error),
            }
        }
    }
}

fn transport_evidence(items: &mut Evidence, config: &ProbeConfig, error: &TransportError) {
    let kind = match error {
        TransportError::Denied { .. } => "denied",
        TransportError::ConnectionRefused => "connection_refused",
        TransportError::Dns => "dns",
        TransportError::Tls(_) => "tls",
        TransportError::Timeout => "timeout",
        TransportError::Other(_) => "other",
    };
    items.add("transport_error", kind);
    items.add("transport_detail", error);
    items.add("timeout_seconds", config.timeout.as_secs());
    if let TransportError::Denied { origin } = error {
        items.add("denied_origin", origin);
        items.add("allowed_hosts_key", ALLOWED_HOSTS_KEY);
    }
}

fn config_evidence(error: &ConfigError) -> Vec<EvidenceItem> {
    let mut items = Evidence::default();
    match error {
        ConfigError::RegistryNotConfigured => {
            items.add("missing_keys", "OCI:RegistryUrl or Registry:Url")
        }
        ConfigError::CredentialsNotConfigured => {
            items.add(
                "missing_keys",
                "OCI:Username and OCI:Password, or OCI:Token",
            );
            // What the registry would have been shown; the check sends nothing anonymously,
            // since an anonymous push grant is not what the platform relies on.
            items.add("auth_method", AuthMethod::Anonymous.as_str());
        }
        ConfigError::IncompleteBasicAuth { present, missing } => {
            items.add("present_key", present);
            items.add("missing_key", missing);
        }
        ConfigError::Invalid { key, problem, .. } => {
            items.add("invalid_key", key);
            items.add("problem", problem);
        }
    }
    items.0
}

/// Evidence items in the order they are added.
#[derive(Default)]
struct Evidence(Vec<EvidenceItem>);

impl Evidence {
    fn add(&mut self, key: &str, value: impl ToString) {
        self.0.push(EvidenceItem {
            key: key.to_string(),
            value: value.to_string(),
        });
    }

    fn add_opt(&mut self, key: &str, value: Option<impl ToString>) {
        if let Some(value) = value {
            self.add(key, value);
        }
    }
}

fn capitalise(text: &mut String) {
    if let Some(first) = text.get(..1) {
        let upper = first.to_ascii_uppercase();
        text.replace_range(..1, &upper);
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or(String::new(), |first| {
        first.to_lowercase().chain(chars).collect()
    })
}
