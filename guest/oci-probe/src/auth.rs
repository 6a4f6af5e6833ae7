//! Credentials, the token exchange, and the rules that decide which request may carry what.
//!
//! [`Auth`] owns every `Authorization` header the probe sends. It starts with the configured
//! credentials and, when the registry answers with a `Bearer` challenge, trades them at the
//! challenge's realm for a registry token ([`Auth::exchange`]). Two rules keep secrets where they
//! belong:
//!
//! - the registry's credentials and tokens go only to the registry's own scheme, host and port, so
//!   a `Location` on another origin, or on the same host over plain http, never receives them;
//! - credentials go to a token realm only because the registry named it in a challenge, and never
//!   to a plain-http realm of a registry served over https.
//!
//! A token is shown only within the lifetime its realm gave it (`expires_in`, 60 s by default):
//! [`Auth::token_expired`] tells when it has run out, and [`Auth::renew`] repeats the exchange
//! that produced it.

use std::fmt;
use std::time::Instant;

use crate::base64;
use crate::challenge::Challenge;
use crate::http::Transport;
use crate::token::{self, Grant, Token, TokenError, TokenRequest};
use crate::url::{Url, UrlError};

/// A secret string whose `Debug` output never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for building a header or a token request and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The configured service account, in one of two forms.
///
/// - `Basic` (`OCI:Username` + `OCI:Password`): sent as HTTP basic to the registry first. When the
///   registry answers with a `Bearer` challenge, the pair is exchanged at the challenge's realm
///   for a token (`GET` with basic credentials, or the OAuth2 `grant_type=password` form when the
///   realm refuses `GET`), and the token is what the registry then sees.
/// - `Bearer` (`OCI:Token`): sent as `Authorization: Bearer` unchanged first, which suits a
///   registry access token. When the registry answers `401` with a `Bearer` challenge anyway, the
///   token is taken for an identity (refresh) token, as `docker login` stores for ACR or an
///   OAuth2 registry, and exchanged with the OAuth2 `grant_type=refresh_token` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User name and password (or a personal access token used as password).
    Basic {
        /// The user name, which is not secret and may appear in evidence.
        username: String,
        /// The password.
        password: Secret,
    },
    /// A registry token, or an identity token to exchange when the registry challenges it.
    Bearer {
        /// The token.
        token: Secret,
    },
}

impl Credentials {
    /// The evidence name of the method before any exchange: `basic` or `bearer-static`.
    pub fn method(&self) -> &'static str {
        match self {
            Credentials::Basic { .. } => AuthMethod::Basic.as_str(),
            Credentials::Bearer { .. } => AuthMethod::BearerStatic.as_str(),
        }
    }

    /// The value of the `Authorization` header for these credentials used as they are.
    fn header_value(&self) -> String {
        match self {
            Credentials::Basic { username, password } => basic_header(username, password),
            Credentials::Bearer { token } => format!("Bearer {}", token.expose()),
        }
    }

    /// How these credentials are presented to a token realm.
    fn grant(&self) -> Grant<'_> {
        match self {
            Credentials::Basic { username, password } => Grant::Password { username, password },
            Credentials::Bearer { token } => Grant::RefreshToken(token),
        }
    }
}

/// What the registry is currently shown, as reported in the `auth_method` evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No credentials at all.
    Anonymous,
    /// The configured user name and password, sent as HTTP basic.
    Basic,
    /// The configured token, sent unchanged.
    BearerStatic,
    /// A token fetched from the realm with the configured credentials.
    BearerExchange,
}

impl AuthMethod {
    /// The evidence spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Basic => "basic",
            AuthMethod::BearerStatic => "bearer-static",
            AuthMethod::BearerExchange => "bearer-exchange",
        }
    }
}

/// Why the realm of a challenge is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealmProblem {
    /// The challenge names no realm.
    Missing,
    /// The realm is not an absolute http(s) URL.
    Invalid {
        /// The realm as the registry wrote it.
        realm: String,
        /// Why it does not parse.
        error: UrlError,
    },
    /// The registry is served over https but the realm is plain http, where the password would
    /// cross the network readable.
    Downgrade {
        /// The refused realm.
        realm: Url,
    },
}

/// Why an exchange produced no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// The challenge's realm is unusable; nothing was sent.
    Realm(RealmProblem),
    /// The realm was asked and issued no token.
    Token {
        /// The realm that was asked.
        realm: Url,
        /// What went wrong.
        error: TokenError,
    },
}

/// Where the time comes from; tests substitute a clock they can move forward.
pub type Clock = fn() -> Instant;

/// Decides the `Authorization` header of each request and performs token exchanges.
#[derive(Debug, Clone)]
pub struct Auth {
    credentials: Option<Credentials>,
    registry: Url,
    user_agent: String,
    clock: Clock,
    token: Option<HeldToken>,
    /// Every token value any exchange returned, so a report can make sure none is quoted.
    issued: Vec<Secret>,
}

/// The token in use, when it runs out, and the exchange that produced it (to repeat it).
#[derive(Debug, Clone)]
struct HeldToken {
    token: Token,
    expires_at: Option<Instant>,
    challenge: Challenge,
    scopes: Vec<String>,
}

impl Auth {
    /// Binds `credentials` to the origin of `registry`.
    pub fn new(credentials: Credentials, registry: &Url) -> Self {
        Auth {
            credentials: Some(credentials),
            ..Auth::anonymous(registry)
        }
    }

    /// No credentials: requests go without `Authorization` until a challenge yields a token.
    pub fn anonymous(registry: &Url) -> Self {
        Auth {
            credentials: None,
            registry: registry.clone(),
            user_agent: concat!("stellaops-doctor/", env!("CARGO_PKG_VERSION")).to_string(),
            clock: Instant::now,
            token: None,
            issued: Vec::new(),
        }
    }

    /// Sets the `User-Agent` of token requests.
    pub fn with_user_agent(mut self, user_agent: &str) -> Self {
        self.user_agent = user_agent.to_string();
        self
    }

    /// Measures token lifetimes with `clock` instead of [`Instant::now`].
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// What the registry is currently shown.
    pub fn method(&self) -> AuthMethod {
        match (&self.token, &self.credentials) {
            (Some(_), _) => AuthMethod::BearerExchange,
            (None, Some(Credentials::Basic { .. })) => AuthMethod::Basic,
            (None, Some(Credentials::Bearer { .. })) => AuthMethod::BearerStatic,
            (None, None) => AuthMethod::Anonymous,
        }
    }

    /// The token from the last successful exchange.
    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref().map(|held| &held.token)
    }

    /// Every token value the exchanges returned, the held one among them.
    pub fn issued_tokens(&self) -> &[Secret] {
        &self.issued
    }

    /// True when a token is held and its lifetime has passed, so it must not be shown again.
    pub fn token_expired(&self) -> bool {
        let expires_at = self.token.as_ref().and_then(|held| held.expires_at);
        // A lifetime too long for `Instant` never runs out within a probe.
        expires_at.is_some_and(|at| (self.clock)() >= at)
    }

    /// Repeats the exchange that produced the held token, for a fresh one with the same scopes.
    ///
    /// `None` when no token is held. On failure the old token stays, so the caller decides
    /// whether to send anything at all.
    pub fn renew(&mut self, transport: &mut dyn Transport) -> Option<Result<Url, ExchangeError>> {
        let held = self.token.as_ref()?;
        let (challenge, scopes) = (held.challenge.clone(), held.scopes.clone());
        Some(self.exchange(transport, &challenge, &scopes))
    }

    /// The `Authorization` value for a request to `target`, or `None` when `target` lies on
    /// another origin (including the registry's host over plain http) or there is nothing to send.
    pub fn authorization_for(&self, target: &Url) -> Option<String> {
        if !self.registry.same_origin(target) {
            return None;
        }
        match (&self.token, &self.credentials) {
            (Some(held), _) => Some(format!("Bearer {}", held.token.value().expose())),
            (None, Some(credentials)) => Some(credentials.header_value()),
            (None, None) => None,
        }
    }

    /// The realm of `challenge`, if credentials may be sent there.
    pub fn realm_of(&self, challenge: &Challenge) -> Result<Url, RealmProblem> {
        let text = challenge.realm().ok_or(RealmProblem::Missing)?;
        let realm = Url::parse(text).map_err(|error| RealmProblem::Invalid {
            realm: text.to_string(),
            error,
        })?;
        if self.registry.is_downgraded_by(&realm) {
            return Err(RealmProblem::Downgrade { realm });
        }
        Ok(realm)
    }

    /// Fetches a token for `scopes` from the realm of `challenge` and shows it to the registry
    /// from now on; returns the realm that issued it.
    pub fn exchange(
        &mut self,
        transport: &mut dyn Transport,
        challenge: &Challenge,
        scopes: &[String],
    ) -> Result<Url, ExchangeError> {
        let realm = self.realm_of(challenge).map_err(ExchangeError::Realm)?;
        let request = TokenRequest {
            realm: &realm,
            service: challenge.service(),
            scopes,
            user_agent: &self.user_agent,
        };
        let grant = self
            .credentials
            .as_ref()
            .map_or(Grant::Anonymous, Credentials::grant);

        match token::fetch(transport, &request, grant) {
            Ok(token) => {
                // The lifetime counts from the answer's arrival, which is now.
                let expires_at = (self.clock)().checked_add(token.expires_in);
                self.issued.push(token.value().clone());
                self.token = Some(HeldToken {
                    token,
                    expires_at,
                    challenge: challenge.clone(),
                    scopes: scopes.to_vec(),
                });
                Ok(realm)
            }
            Err(error) => Err(ExchangeError::Token { realm, error }),
        }
    }
}

/// `Basic base64(username:password)`.
pub(crate) fn basic_header(username: &str, password: &Secret) -> String {
    let pair = format!("{username}:{}", password.expose());
    format!("Basic {}", base64::encode(pair.as_bytes()))
}

#[cfg(test)]
mod tests;
