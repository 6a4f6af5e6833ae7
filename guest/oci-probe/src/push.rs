//! The probe: open a blob upload session, then cancel it at once.
//!
//! `POST /v2/<name>/blobs/uploads/` is the first step of every push, and registries check the push
//! grant right there, so a `202 Accepted` proves the account can push without a byte being
//! stored. The returned `Location` is then deleted to end the session; registries expire abandoned
//! sessions anyway, so a failed cancel does not make the check fail.
//!
//! Most registries answer the first request with a `Bearer` challenge. The probe then fetches a
//! token for `pull,push` (never `delete`: Quay refuses any other action with 400) and posts again.
//! Only when the cancel itself is challenged, as distribution does because cancelling needs the
//! `delete` action, does it ask for the scope that challenge names, once.
//!
//! A `401` that offers no token exchange does not tell a wrong password from a missing grant:
//! Harbor answers both with `Basic realm="harbor"` once credentials were sent. The probe then asks
//! `GET /v2/`, which such registries answer `200` only to an account they authenticated.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::auth::{Auth, AuthMethod, Clock, ExchangeError, RealmProblem, Secret};
use crate::challenge::{self, Challenge};
use crate::config::ProbeConfig;
use crate::errors::{ErrorBody, excerpt};
use crate::http::{Method, Request, Response, Transport, TransportError};
use crate::token::TokenError;
use crate::url::{Url, UrlError};

/// Identifies the probe in registry and token service access logs.
const USER_AGENT: &str = concat!(
    "stellaops-doctor/",
    env!("CARGO_PKG_VERSION"),
    " (check.integration.oci.push)"
);

/// The challenge `error` a registry gives when the token lacks an action.
const INSUFFICIENT_SCOPE: &str = "insufficient_scope";

/// The challenge `error` a registry gives when it does not accept the token at all.
const INVALID_TOKEN: &str = "invalid_token";

/// What the registry's answer to the upload request means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 202: the account may push; carries what happened to the session.
    Permitted(Cancel),
    /// 401 to credentials sent to the registry as they are, and `GET /v2/` did not show them
    /// accepted ([`PushOutcome::credentials_check`] says what it showed).
    InvalidCredentials,
    /// The token service refused the credentials (401 or 403, or 400 to a refresh token).
    TokenRefused,
    /// The token service issued a token and the registry rejected it as `invalid_token`: the two
    /// disagree about issuer, audience or signing key, or their clocks do.
    TokenRejected,
    /// The credentials are valid but push is not granted.
    NotPermitted(Denial),
    /// 404: the registry does not know the repository and did not create it.
    RepositoryUnknown,
    /// 405: the registry accepts no uploads (read-only, or a pull-through cache).
    ReadOnly,
    /// 429: the registry is rate-limiting the account.
    RateLimited,
    /// 503: the registry is temporarily unavailable.
    Unavailable,
    /// Any other 5xx.
    ServerError,
    /// Any status the protocol does not foresee for this request.
    Unexpected,
    /// No HTTP answer from the registry at all.
    Unreachable(TransportError),
    /// No token could be had, for a reason other than refused credentials.
    TokenUnavailable(TokenProblem),
}

impl Verdict {
    /// The verdict for a status other than 202, before any token was exchanged.
    fn for_status(status: u16) -> Verdict {
        match status {
            401 => Verdict::InvalidCredentials,
            403 => Verdict::NotPermitted(Denial::Forbidden),
            404 => Verdict::RepositoryUnknown,
            405 => Verdict::ReadOnly,
            429 => Verdict::RateLimited,
            503 => Verdict::Unavailable,
            500..=599 => Verdict::ServerError,
            _ => Verdict::Unexpected,
        }
    }
}

/// How a registry said that valid credentials may not push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// 403 to the upload request (GHCR, ECR and Artifact Registry answer `DENIED`).
    Forbidden,
    /// 401 to the upload request although it carried a token (distribution, Quay and Docker Hub
    /// say `insufficient_scope`).
    TokenLacksPush,
    /// The token service refused a push scope but issued a pull token (Docker Hub read-only
    /// access tokens).
    PullOnly,
    /// 401 to the upload request, but `GET /v2/` with the same credentials succeeded (Harbor
    /// answers a valid account without push this way).
    CredentialsAccepted,
}

/// What `GET <registry>/v2/` with the upload's credentials said about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsCheck {
    /// A 2xx, and a refusal to the same request without credentials: the account is valid.
    Accepted {
        /// The status of the authenticated answer.
        status: u16,
    },
    /// 401: the registry does not accept the credentials.
    Refused {
        /// The status of the answer.
        status: u16,
    },
    /// A 2xx without credentials too, so the answer says nothing about them.
    OpenToAnyone {
        /// The status of the authenticated answer.
        status: u16,
    },
    /// A status that is neither 2xx nor 401.
    Unexpected {
        /// The status of the answer.
        status: u16,
    },
    /// A request of the check got no answer.
    Unanswered {
        /// The status of the authenticated answer, when only the anonymous one was lost.
        status: Option<u16>,
        /// Why there was no answer.
        error: TransportError,
    },
}

impl CredentialsCheck {
    /// `Some(true)` when the credentials were shown valid, `Some(false)` when shown invalid,
    /// `None` when the check could not tell.
    pub fn verified(&self) -> Option<bool> {
        match self {
            CredentialsCheck::Accepted { .. } => Some(true),
            CredentialsCheck::Refused { .. } => Some(false),
            _ => None,
        }
    }

    /// The status of the answer to the authenticated `GET /v2/`, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            CredentialsCheck::Accepted { status }
            | CredentialsCheck::Refused { status }
            | CredentialsCheck::OpenToAnyone { status }
            | CredentialsCheck::Unexpected { status } => Some(*status),
            CredentialsCheck::Unanswered { status, .. } => *status,
        }
    }
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    /// The challenge named no usable realm, or one the probe will not send credentials to.
    Realm(RealmProblem),
    /// The token service gave no HTTP answer (including the host's outbound policy refusing it).
    Unreachable(TransportError),
    /// The token service answered with an error other than a refusal, or without a token.
    Failed,
}

/// What became of the upload session after a 202.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The answer had no `Location`, so there is nothing to delete.
    NoLocation,
    /// The `Location` could not be resolved to an http(s) URL.
    BadLocation(UrlError),
    /// The `Location` leaves https for plain http; no DELETE was sent there.
    Downgrade {
        /// The refused session URL.
        location: Url,
    },
    /// The token had expired and no fresh one could be had, so no DELETE was sent.
    TokenExpired {
        /// The session URL.
        location: Url,
    },
    /// A DELETE was sent to the session URL.
    Attempted {
        /// The session URL the DELETE went to.
        location: Url,
        /// True when the session lies on the registry's origin, so credentials were sent.
        credentials_sent: bool,
        /// True when the token had expired before the DELETE and a fresh one was fetched.
        token_renewed: bool,
        /// True when the first DELETE was challenged and sent again with a token for the scope
        /// the challenge named.
        retried_with_token: bool,
        /// The status and error body of the last answer, or why there was none.
        result: Result<(u16, ErrorBody), TransportError>,
    },
}

impl Cancel {
    /// True when the registry confirmed the session is gone.
    pub fn succeeded(&self) -> bool {
        matches!(self, Cancel::Attempted { result: Ok((status, _)), .. } if (200..300).contains(status))
    }
}

/// What the probe learned from the token service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchange {
    /// The realm the registry's challenge named.
    pub realm: Url,
    /// The challenge's `service`, echoed to the realm.
    pub service: Option<String>,
    /// The status of the realm's answer when it issued no token for the push scope.
    pub status: Option<u16>,
    /// The error body of that answer.
    pub error: ErrorBody,
    /// The actions the issued token carries on the repository, when the answer or JWT tells.
    pub granted_actions: Option<Vec<String>>,
}

/// Everything the probe observed, for the report to explain.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// The upload URL the probe posted to.
    pub upload_url: Url,
    /// The evidence name of what the last upload request showed the registry (a token fetched
    /// but never presented does not count).
    pub auth_method: &'static str,
    /// What the answers mean.
    pub verdict: Verdict,
    /// The status of the last answer to the upload request.
    pub status: Option<u16>,
    /// The error body of a non-202 answer.
    pub error: ErrorBody,
    /// The `WWW-Authenticate` header(s) of a 401, which name realm and scope but never a secret.
    pub challenge: Option<String>,
    /// The `error` parameter of that challenge, e.g. `insufficient_scope`.
    pub challenge_error: Option<String>,
    /// The token exchange, when the registry asked for one.
    pub token: Option<TokenExchange>,
    /// What `GET /v2/` said, when a 401 left the credentials in doubt.
    pub credentials_check: Option<CredentialsCheck>,
    /// The `Retry-After` value of a 429 or 503.
    pub retry_after: Option<String>,
    /// Time spent on all requests.
    pub duration: Duration,
    /// Every token a token service issued during the probe: the report masks them, since a
    /// registry or token service could echo one in a body the report quotes.
    pub issued_tokens: Vec<Secret>,
}

/// Runs the probe against the configured registry; never panics on any answer.
pub fn probe(config: &ProbeConfig, transport: &mut dyn Transport) -> PushOutcome {
    probe_with_clock(config, transport, Instant::now)
}

/// [`probe`], measuring token lifetimes with `clock`.
pub fn probe_with_clock(
    config: &ProbeConfig,
    transport: &mut dyn Transport,
    clock: Clock,
) -> PushOutcome {
    let started = Instant::now();
    let mut auth = Auth::new(config.credentials.clone(), &config.registry)
        .with_user_agent(USER_AGENT)
        .with_clock(clock);
    let upload_url = config
        .registry
        .join_path(&format!("/v2/{}/blobs/uploads/", config.repository));

    let mut outcome = PushOutcome {
        upload_url,
        auth_method: auth.method().as_str(),
        verdict: Verdict::Unexpected,
        status: None,
        error: ErrorBody::Empty,
        challenge: None,
        challenge_error: None,
        token: None,
        credentials_check: None,
        retry_after: None,
        duration: Duration::ZERO,
        issued_tokens: Vec::new(),
    };
    outcome.verdict = open_session(&mut outcome, &mut auth, config, transport);
    outcome.duration = started.elapsed();
    outcome.issued_tokens = auth.issued_tokens().to_vec();
    outcome
}

/// Posts the upload request, answering one `Bearer` challenge with a token, and judges the answer.
fn open_session(
    outcome: &mut PushOutcome,
    auth: &mut Auth,
    config: &ProbeConfig,
    transport: &mut dyn Transport,
) -> Verdict {
    let repository = &config.repository;
    let mut response = match post_upload(outcome, auth, transport) {
        Ok(response) => response,
        Err(error) => return Verdict::Unreachable(error),
    };

    if let Some(challenge) = challenge_to_answer(&response, auth) {
        if let ControlFlow::Break(verdict) =
            obtain_push_token(outcome, auth, &challenge, repository, transport)
        {
            return verdict;
        }
        response = match post_upload(outcome, auth, transport) {
            Ok(response) => response,
            Err(error) => return Verdict::Unreachable(error),
        };
    }
    judge(outcome, auth, &response, &config.registry, transport)
}

/// Sends the upload request and records its answer in `outcome`.
fn post_upload(
    outcome: &mut PushOutcome,
    auth: &Auth,
    transport: &mut dyn Transport,
) -> Result<Response, TransportError> {
    outcome.auth_method = auth.method().as_str();
    let response = transport.send(&request(Method::Post, &outcome.upload_url, auth))?;

    outcome.status = Some(response.status);
    outcome.error = match response.status {
        202 => ErrorBody::Empty,
        _ => ErrorBody::parse(&response.body),
    };
    let challenges: Vec<&str> = response.header_values("www-authenticate").collect();
    outcome.challenge = (!challenges.is_empty()).then(|| one_line(&challenges.join(", ")));
    outcome.challenge_error = challenge::parse_all(challenges)
        .iter()
        .find_map(|c| c.error().map(str::to_string));
    outcome.retry_after = response.header("retry-after").map(one_line);
    Ok(response)
}

/// The `Bearer` challenge of a 401 worth answering with a token exchange, if any.
///
/// None after a token was already exchanged (a second 401 means the grant is too small), and
/// none when a static token was recognised but lacks the scope: exchanging it as a refresh token
/// would only turn "no push permission" into a confusing token error.
fn challenge_to_answer(response: &Response, auth: &Auth) -> Option<Challenge> {
    if response.status != 401 || auth.method() == AuthMethod::BearerExchange {
        return None;
    }
    let bearer = bearer_challenge(response)?;
    let recognised = bearer.error() == Some(INSUFFICIENT_SCOPE);
    (!(recognised && auth.method() == AuthMethod::BearerStatic)).then_some(bearer)
}

fn bearer_challenge(response: &Response) -> Option<Challenge> {
    challenge::parse_all(response.header_values("www-authenticate"))
        .into_iter()
        .find(Challenge::is_bearer)
}

/// Trades the credentials for a `pull,push` token, or breaks with the verdict explaining why not.
fn obtain_push_token(
    outcome: &mut PushOutcome,
    auth: &mut Auth,
    challenge: &Challenge,
    repository: &str,
    transport: &mut dyn Transport,
) -> ControlFlow<Verdict> {
    let push_scope = [format!("repository:{repository}:pull,push")];
    let error = match auth.exchange(transport, challenge, &push_scope) {
        Ok(realm) => {
            outcome.token = Some(exchange_record(realm, challenge, auth, repository, None));
            return ControlFlow::Continue(());
        }
        Err(ExchangeError::Realm(problem)) => {
            return ControlFlow::Break(Verdict::TokenUnavailable(TokenProblem::Realm(problem)));
        }
        Err(ExchangeError::Token { realm, error }) => {
            let record = exchange_record(realm, challenge, auth, repository, Some(&error));
            outcome.token = Some(record);
            error
        }
    };

    ControlFlow::Break(match error {
        // Docker Hub answers 401 for a push scope when a read-only token asks; if the same
        // credentials get a pull token, they are valid and only the push grant is missing.
        TokenError::Refused { status: 401, .. }
            if pull_token(outcome, auth, challenge, repository, transport) =>
        {
            Verdict::NotPermitted(Denial::PullOnly)
        }
        TokenError::Refused { .. } => Verdict::TokenRefused,
        TokenError::Unreachable(error) => {
            Verdict::TokenUnavailable(TokenProblem::Unreachable(error))
        }
        TokenError::Failed { .. } | TokenError::NoToken { .. } => {
            Verdict::TokenUnavailable(TokenProblem::Failed)
        }
    })
}

/// Asks once for a `pull` token; true when one was issued.
fn pull_token(
    outcome: &mut PushOutcome,
    auth: &mut Auth,
    challenge: &Challenge,
    repository: &str,
    transport: &mut dyn Transport,
) -> bool {
    let pull_scope = [format!("repository:{repository}:pull")];
    if auth.exchange(transport, challenge, &pull_scope).is_err() {
        return false;
    }
    // Only what the answer or the JWT says: an opaque token proves a grant, not which.
    if let Some(record) = &mut outcome.token {
        record.granted_actions = auth
            .token()
            .and_then(|token| token.granted_actions(repository));
    }
    true
}

fn exchange_record(
    realm: Url,
    challenge: &Challenge,
    auth: &Auth,
    repository: &str,
    error: Option<&TokenError>,
) -> TokenExchange {
    TokenExchange {
        realm,
        service: challenge.service().map(str::to_string),
        status: error.and_then(TokenError::status),
        error: error
            .and_then(TokenError::error)
            .cloned()
            .unwrap_or(ErrorBody::Empty),
        granted_actions: match error {
            None => auth.token().and_then(|t| t.granted_actions(repository)),
            Some(_) => None,
        },
    }
}

/// The verdict for the last answer to the upload request.
fn judge(
    outcome: &mut PushOutcome,
    auth: &mut Auth,
    response: &Response,
    registry: &Url,
    transport: &mut dyn Transport,
) -> Verdict {
    match response.status {
        202 => {
            let location = response.header("location");
            Verdict::Permitted(cancel(&outcome.upload_url, location, auth, transport))
        }
        401 => judge_unauthorized(outcome, auth, registry, transport),
        status => Verdict::for_status(status),
    }
}

/// The verdict for a 401 that no (further) token exchange can answer.
fn judge_unauthorized(
    outcome: &mut PushOutcome,
    auth: &Auth,
    registry: &Url,
    transport: &mut dyn Transport,
) -> Verdict {
    let challenge_error = outcome.challenge_error.as_deref();
    match auth.method() {
        // The registry's own token service vouched for the account, and the registry says the
        // token itself is bad: the two are misconfigured, whatever the account may do.
        AuthMethod::BearerExchange if challenge_error == Some(INVALID_TOKEN) => {
            Verdict::TokenRejected
        }
        // A registry that issued a token and still answers 401 recognised the account; the
        // grant is what is missing.
        AuthMethod::BearerExchange => Verdict::NotPermitted(Denial::TokenLacksPush),
        AuthMethod::BearerStatic if challenge_error == Some(INSUFFICIENT_SCOPE) => {
            Verdict::NotPermitted(Denial::TokenLacksPush)
        }
        AuthMethod::Basic | AuthMethod::BearerStatic => {
            let check = check_credentials(auth, registry, transport);
            let verdict = match check {
                CredentialsCheck::Accepted { .. } => {
                    Verdict::NotPermitted(Denial::CredentialsAccepted)
                }
                _ => Verdict::InvalidCredentials,
            };
            outcome.credentials_check = Some(check);
            verdict
        }
        AuthMethod::Anonymous => Verdict::InvalidCredentials,
    }
}

/// Asks `GET <registry>/v2/` with the upload's credentials whether the registry accepts them.
///
/// The API root needs no grant on any repository, only an authenticated account: Harbor answers
/// it 200 to a valid account and 401 to a wrong password, which its upload answer does not tell
/// apart; distribution with htpasswd answers a wrong password 401 there too. Some registries let
/// anyone read `/v2/`, so a 2xx is only taken as proof when the same request without
/// credentials is refused.
fn check_credentials(
    auth: &Auth,
    registry: &Url,
    transport: &mut dyn Transport,
) -> CredentialsCheck {
    let url = registry.join_path("/v2/");
    let status = match transport.send(&request(Method::Get, &url, auth)) {
        Ok(response) => response.status,
        Err(error) => {
            return CredentialsCheck::Unanswered {
                status: None,
                error,
            };
        }
    };
    match status {
        200..=299 => {}
        401 => return CredentialsCheck::Refused { status },
        _ => return CredentialsCheck::Unexpected { status },
    }

    let anonymous =
        Request::new(Method::Get, url.to_string()).with_header("user-agent", USER_AGENT);
    match transport.send(&anonymous) {
        Ok(response) if (200..300).contains(&response.status) => {
            CredentialsCheck::OpenToAnyone { status }
        }
        Ok(_) => CredentialsCheck::Accepted { status },
        Err(error) => CredentialsCheck::Unanswered {
            status: Some(status),
            error,
        },
    }
}

/// Deletes the upload session named by `location`.
fn cancel(
    upload_url: &Url,
    location: Option<&str>,
    auth: &mut Auth,
    transport: &mut dyn Transport,
) -> Cancel {
    let Some(location) = location.filter(|value| !value.trim().is_empty()) else {
        return Cancel::NoLocation;
    };
    let location = match upload_url.resolve(location) {
        Ok(url) => url,
        Err(error) => return Cancel::BadLocation(error),
    };
    // Even without credentials, following a registry from https to http is the kind of answer
    // an attacker in the middle would give; the session expires on its own.
    if upload_url.is_downgraded_by(&location) {
        return Cancel::Downgrade { location };
    }

    // A token past its lifetime is not shown again (the registry would refuse it, and it should
    // not outlive what its issuer said); one fresh token for the same scopes is fetched instead.
    let mut token_renewed = false;
    if auth.token_expired() && auth.authorization_for(&location).is_some() {
        match auth.renew(transport) {
            Some(Ok(_)) => token_renewed = true,
            _ => return Cancel::TokenExpired { location },
        }
    }

    let delete = request(Method::Delete, &location, auth);
    let credentials_sent = delete.header("authorization").is_some();
    let mut answer = transport.send(&delete);
    let mut retried_with_token = false;

    if credentials_sent
        && let Ok(response) = &answer
        && reauthorise_cancel(response, auth, transport)
    {
        answer = transport.send(&request(Method::Delete, &location, auth));
        retried_with_token = true;
    }
    Cancel::Attempted {
        location,
        credentials_sent,
        token_renewed,
        retried_with_token,
        result: answer.map(|response| (response.status, ErrorBody::parse(&response.body))),
    }
}

/// Fetches a token for the scope a challenged DELETE names; true when one was issued.
///
/// Only a challenge about the grant is worth a new token: `insufficient_scope`, or a scope that
/// asks for `delete` (distribution names `repository:<name>:delete`). Any other 401, a rejected
/// token say, would be answered the same way again. A static token that the registry accepted
/// as it is cannot be exchanged, so it gets no retry either.
fn reauthorise_cancel(response: &Response, auth: &mut Auth, transport: &mut dyn Transport) -> bool {
    if response.status != 401 || auth.method() == AuthMethod::BearerStatic {
        return false;
    }
    let Some(challenge) = bearer_challenge(response) else {
        return false;
    };
    let Some(scope) = challenge.scope() else {
        return false;
    };
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
    let asks_for_delete = scopes
        .iter()
        .any(|item| scope_actions(item).any(|a| a == "delete"));
    if scopes.is_empty() || (challenge.error() != Some(INSUFFICIENT_SCOPE) && !asks_for_delete) {
        return false;
    }
    auth.exchange(transport, &challenge, &scopes).is_ok()
}

/// The actions of one scope item such as `repository:team/app:pull,delete`.
fn scope_actions(item: &str) -> impl Iterator<Item = &str> {
    let actions = item.rsplit_once(':').map_or("", |(_, actions)| actions);
    actions.split(',')
}

/// A request to `url`, with credentials only when `auth` allows them there.
fn request(method: Method, url: &Url, auth: &Auth) -> Request {
    let mut request = Request::new(method, url.to_string()).with_header("user-agent", USER_AGENT);
    if method == Method::Post {
        // Without it some proxies wait for a body or answer 411 Length Required.
        request = request.with_header("content-length", "0");
    }
    if let Some(authorization) = auth.authorization_for(url) {
        request = request.with_header("authorization", authorization);
    }
    request
}

/// A header value made safe for a single evidence line.
fn one_line(value: &str) -> String {
    excerpt(value.as_bytes())
}

#[cfg(test)]
mod tests;
