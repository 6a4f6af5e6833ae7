//! Fetching a registry token from the realm a `Bearer` challenge names.
//!
//! Registries in token mode (distribution, Docker Hub, GHCR, Harbor, GitLab, Quay, ACR, ECR) do
//! not take credentials on the registry API itself: they answer `401` with a challenge naming a
//! token endpoint (`realm`), the `service` to ask for and the `scope` needed. Two wire forms
//! exist for the token request:
//!
//! - the Docker token protocol: `GET <realm>?service=…&scope=…` with HTTP basic credentials;
//! - the OAuth2 form: `POST <realm>` with an `application/x-www-form-urlencoded` body carrying a
//!   `grant_type` of `password` or `refresh_token`.
//!
//! Both answer JSON with `token` and/or `access_token` and an optional `expires_in`. Which form
//! each credential uses is documented on [`Grant`]. A partial grant is not an error: the token
//! simply carries fewer actions, which [`Token::granted_actions`] reports when it can.
//!
//! A token's lifetime is read here but measured by the caller ([`crate::auth::Auth`]), whose clock
//! tests can replace.

use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Secret, basic_header};
use crate::base64;
use crate::errors::ErrorBody;
use crate::http::{Method, Request, Response, Transport, TransportError};
use crate::url::{Url, percent_encode};

/// The OAuth2 `client_id` the probe introduces itself with.
pub const CLIENT_ID: &str = "stella-doctor";

/// The lifetime the token protocol prescribes when an answer names none.
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60);

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// What a token is requested for.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The token endpoint, from the challenge's `realm`.
    pub realm: &'a Url,
    /// The challenge's `service`, echoed back so the token is issued for this registry.
    pub service: Option<&'a str>,
    /// Scopes such as `repository:team/app:pull,push`.
    pub scopes: &'a [String],
    /// Identifies the client in the token service's access log.
    pub user_agent: &'a str,
}

/// The credential presented to the token endpoint.
///
/// - [`Grant::Password`], from a user name and password (or an access token used as password,
///   as GHCR, GitLab, Docker Hub and Harbor robot accounts expect): sent as HTTP basic on
///   `GET <realm>?service=…&scope=…`; when the endpoint refuses GET (`404` or `405`, as OAuth2-only
///   services do), sent again as the form `grant_type=password&username=…&password=…&service=…
///   &scope=…&client_id=stella-doctor`.
/// - [`Grant::RefreshToken`], from a configured token that the registry did not accept as it is
///   (an identity token from `docker login`, an ACR refresh token): sent only as the form
///   `grant_type=refresh_token&refresh_token=…&service=…&scope=…&client_id=stella-doctor`, since the
///   GET form has no place for it.
/// - [`Grant::Anonymous`]: a GET without credentials, for scopes a registry grants to anyone.
#[derive(Debug, Clone, Copy)]
pub enum Grant<'a> {
    /// No credentials.
    Anonymous,
    /// A user name and password.
    Password {
        /// The user name.
        username: &'a str,
        /// The password or access token.
        password: &'a Secret,
    },
    /// An OAuth2 refresh (identity) token.
    RefreshToken(&'a Secret),
}

/// A token the realm issued.
#[derive(Debug, Clone)]
pub struct Token {
    value: Secret,
    /// The answer's `scope`, when it named what was granted (OAuth2 answers do).
    granted_scope: Option<String>,
    /// How long the token lasts from the moment the answer arrived, as the answer said (60
    /// seconds when it said nothing usable).
    pub expires_in: Duration,
}

impl Token {
    /// The token, for an `Authorization: Bearer` header and nothing else.
    pub fn value(&self) -> &Secret {
        &self.value
    }

    /// The actions granted on `repository`, from the answer's `scope` or else from the token's
    /// JWT `access` claim; `None` when neither tells (an opaque token).
    pub fn granted_actions(&self, repository: &str) -> Option<Vec<String>> {
        self.granted_scope
            .as_deref()
            .and_then(|scope| actions_in_scope(scope, repository))
            .or_else(|| jwt_actions(self.value.expose(), repository))
    }
}

/// Why the realm issued no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The realm refused the credential: `401` or `403`, or `400` to a refresh token (OAuth2's
    /// `invalid_grant`).
    Refused {
        /// The status of the answer.
        status: u16,
        /// Its error body.
        error: ErrorBody,
    },
    /// Any other non-success status.
    Failed {
        /// The status of the answer.
        status: u16,
        /// Its error body.
        error: ErrorBody,
    },
    /// A success answer without a `token` or `access_token`; its body is not quoted, since it
    /// may hold other secrets.
    NoToken {
        /// The status of the answer.
        status: u16,
    },
    /// No answer at all.
    Unreachable(TransportError),
}

impl TokenError {
    /// The status of the realm's answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            TokenError::Refused { status, .. }
            | TokenError::Failed { status, .. }
            | TokenError::NoToken { status } => Some(*status),
            TokenError::Unreachable(_) => None,
        }
    }

    /// The error body of the realm's answer, when it is worth quoting.
    pub fn error(&self) -> Option<&ErrorBody> {
        match self {
            TokenError::Refused { error, .. } | TokenError::Failed { error, .. } => Some(error),
            TokenError::NoToken { .. } | TokenError::Unreachable(_) => None,
        }
    }
}

/// Asks the realm for a token; see [`Grant`] for which request each credential leads to.
pub fn fetch(
    transport: &mut dyn Transport,
    request: &TokenRequest,
    grant: Grant,
) -> Result<Token, TokenError> {
    if let Grant::RefreshToken(token) = grant {
        let form = form_request(
            request,
            "refresh_token",
            &[("refresh_token", token.expose())],
        );
        return read_answer(send(transport, &form)?, true);
    }

    let answer = send(transport, &get_request(request, grant))?;
    match grant {
        Grant::Password { username, password } if matches!(answer.status, 404 | 405) => {
            let fields = [("username", username), ("password", password.expose())];
            let form = form_request(request, "password", &fields);
            read_answer(send(transport, &form)?, false)
        }
        _ => read_answer(answer, false),
    }
}

fn send(transport: &mut dyn Transport, request: &Request) -> Result<Response, TokenError> {
    transport.send(request).map_err(TokenError::Unreachable)
}

/// `GET <realm>?service=…&scope=…`, one `scope` parameter per scope.
fn get_request(request: &TokenRequest, grant: Grant) -> Request {
    let mut params: Vec<(&str, &str)> = Vec::new();
    params.extend(request.service.map(|service| ("service", service)));
    params.extend(request.scopes.iter().map(|scope| ("scope", scope.as_str())));

    let url = request.realm.with_query_params(&params);
    let get =
        Request::new(Method::Get, url.to_string()).with_header("user-agent", request.user_agent);
    match grant {
        Grant::Password { username, password } => {
            get.with_header("authorization", basic_header(username, password))
        }
        Grant::Anonymous | Grant::RefreshToken(_) => get,
    }
}

/// The OAuth2 form `POST <realm>`; scopes are space-joined, as RFC 6749 has them.
fn form_request(request: &TokenRequest, grant_type: &str, fields: &[(&str, &str)]) -> Request {
    let scope = request.scopes.join(" ");
    let mut pairs = vec![("grant_type", grant_type)];
    pairs.extend_from_slice(fields);
    pairs.extend(request.service.map(|service| ("service", service)));
    if !scope.is_empty() {
        pairs.push(("scope", &scope));
    }
    pairs.push(("client_id", CLIENT_ID));

    let body: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
        .collect();
    Request::new(Method::Post, request.realm.to_string())
        .with_header("user-agent", request.user_agent)
        .with_body(FORM_CONTENT_TYPE, body.join("&"))
}

#[derive(Deserialize)]
struct WireToken {
    #[serde(default)]
    token: Option<serde_json::Value>,
    #[serde(default)]
    access_token: Option<serde_json::Value>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<serde_json::Value>,
}

/// Turns the realm's answer into a token or the reason there is none.
fn read_answer(answer: Response, refresh_grant: bool) -> Result<Token, TokenError> {
    let status = answer.status;
    let refused = matches!(status, 401 | 403) || (refresh_grant && status == 400);
    if !(200..300).contains(&status) {
        let error = ErrorBody::parse(&answer.body);
        return Err(match refused {
            true => TokenError::Refused { status, error },
            false => TokenError::Failed { status, error },
        });
    }

    let Ok(wire) = serde_json::from_slice::<WireToken>(&answer.body) else {
        return Err(TokenError::NoToken { status });
    };
    let text = |value: &Option<serde_json::Value>| {
        value
            .as_ref()
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    // `access_token` is the OAuth2 name; when a realm sends both, the spec makes it win.
    let Some(value) = text(&wire.access_token).or_else(|| text(&wire.token)) else {
        return Err(TokenError::NoToken { status });
    };
    Ok(Token {
        value: Secret::new(value),
        granted_scope: text(&wire.scope),
        expires_in: expires_in(wire.expires_in.as_ref()),
    })
}

/// The lifetime an answer's `expires_in` names.
///
/// The token spec says an integer number of seconds, but token services differ: some send a
/// float (`299.99`) or a string (`"300"`). Anything that is not a positive, finite number of
/// seconds (zero, negative, `"soon"`, `1e400`) falls back to the spec's 60 seconds rather than
/// making the token expire at once or never.
fn expires_in(value: Option<&serde_json::Value>) -> Duration {
    let seconds = match value {
        Some(serde_json::Value::Number(number)) => number.as_f64(),
        Some(serde_json::Value::String(text)) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    seconds
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .unwrap_or(DEFAULT_EXPIRES_IN)
}

/// The actions on `repository` in a space-separated scope list such as
/// `repository:team/app:pull,push`; the name may itself hold `:` (a registry port).
fn actions_in_scope(scope: &str, repository: &str) -> Option<Vec<String>> {
    scope.split_whitespace().find_map(|item| {
        let (resource, actions) = item.rsplit_once(':')?;
        let (kind, name) = resource.split_once(':')?;
        (kind == "repository" && name == repository).then(|| split_actions(actions))
    })
}

fn split_actions(actions: &str) -> Vec<String> {
    actions
        .split(',')
        .filter(|action| !action.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    access: Option<Vec<AccessEntry>>,
}

#[derive(Deserialize)]
struct AccessEntry {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    actions: Vec<String>,
}

/// The actions the JWT's `access` claim grants on `repository`; an empty list when the claim
/// names other resources only, `None` when the token is no JWT or has no such claim.
///
/// The signature is deliberately not verified: the registry verifies the token when it is
/// presented, and the probe only reads the claim to describe the grant to an operator. Nothing
/// is decided on it.
fn jwt_actions(token: &str, repository: &str) -> Option<Vec<String>> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let claims: Claims = serde_json::from_slice(&base64::decode_url_safe(payload)?).ok()?;

    let mut granted: Vec<String> = Vec::new();
    let entries = claims.access?;
    for entry in entries
        .iter()
        .filter(|e| e.kind == "repository" && e.name == repository)
    {
        for action in &entry.actions {
            if !granted.contains(action) {
                granted.push(action.clone());
            }
        }
    }
    Some(granted)
}

#[cfg(test)]
mod tests;
