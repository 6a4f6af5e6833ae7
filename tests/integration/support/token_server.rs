//! A Docker/distribution token server for the real registry in token mode.
//!
//! It signs ES256 JWTs the way distribution 2.8 verifies them: an `x5c`
//! header holding a self-signed certificate that the registry trusts through
//! its `rootcertbundle`, `iss` and `aud` (a string) matching the registry's
//! `issuer` and `service`, `exp`/`nbf`, and `access: [{type, name, actions}]`.
//! Each user is granted only the intersection of what they asked for and what
//! they may do: a partial grant is a smaller token, not an error.

use crate::support::scripted::{Recorded, Reply, ScriptedServer, respond};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `service` (JWT audience) the registry is configured with.
pub const SERVICE: &str = "doctor-test-registry";
/// The `issuer` the registry is configured with.
pub const ISSUER: &str = "doctor-test-token-issuer";

/// A user of the token server and the repository actions they may get.
#[derive(Clone)]
pub struct TokenUser {
    pub name: &'static str,
    pub password: &'static str,
    pub actions: &'static [&'static str],
}

/// How the token server behaves beyond the happy path.
#[derive(Clone, Copy, Default)]
pub struct TokenServerOptions {
    /// Answer `GET` with 405, so clients must use the OAuth2 form `POST`.
    pub refuse_get: bool,
}

/// A running token server.
pub struct TokenServer {
    server: ScriptedServer,
    /// PEM of the signing certificate, for the registry's `rootcertbundle`.
    pub certificate_pem: String,
}

struct Signer {
    key: EcdsaKeyPair,
    certificate_der: Vec<u8>,
    users: HashMap<&'static str, TokenUser>,
    options: TokenServerOptions,
}

impl TokenServer {
    /// Starts a token server on a free loopback port.
    pub fn start(users: &[TokenUser], options: TokenServerOptions) -> TokenServer {
        let key_pair = rcgen::KeyPair::generate().expect("generate P-256 key");
        let params = rcgen::CertificateParams::new(vec!["doctor-test-token-signer".to_string()])
            .expect("certificate params");
        let certificate = params
            .self_signed(&key_pair)
            .expect("self-signed certificate");
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &SystemRandom::new(),
        )
        .expect("ring reads the rcgen key");
        let signer = Arc::new(Signer {
            key,
            certificate_der: certificate.der().to_vec(),
            users: users.iter().map(|u| (u.name, u.clone())).collect(),
            options,
        });
        let server = ScriptedServer::start(move |request| signer.answer(request));
        TokenServer {
            server,
            certificate_pem: certificate.pem(),
        }
    }

    /// The realm URL to configure in the registry.
    pub fn realm(&self) -> String {
        format!("{}/token", self.server.url)
    }

    /// `host:port` of the token server.
    pub fn authority(&self) -> String {
        self.server.authority()
    }

    /// Every request the token server received.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }
}

impl Signer {
    fn answer(&self, request: &Recorded) -> Reply {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((&request.target, ""));
        if path != "/token" {
            return respond(404, &[], "not found");
        }
        let params = match request.method.as_str() {
            "GET" if self.options.refuse_get => return respond(405, &[], "use POST"),
            "GET" => form_pairs(query),
            "POST" => form_pairs(&request.body),
            _ => return respond(405, &[], "method not allowed"),
        };
        let Some(user) = self.authenticate(request, &params) else {
            let body =
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#;
            return respond(401, &[("Content-Type", "application/json")], body);
        };
        let access = self.grant(user, &params);
        let token = self.sign(user.map(|u| u.name).unwrap_or(""), access);
        let body = json!({ "token": token, "access_token": token, "expires_in": 300 });
        respond(
            200,
            &[("Content-Type", "application/json")],
            &body.to_string(),
        )
    }

    /// `Some(None)` is anonymous; `None` is a refusal.
    fn authenticate(
        &self,
        request: &Recorded,
        params: &[(String, String)],
    ) -> Option<Option<&TokenUser>> {
        let (name, password) = match param(params, "grant_type") {
            Some("password") => (
                param(params, "username")?.to_string(),
                param(params, "password")?.to_string(),
            ),
            Some("refresh_token") => {
                let refresh = param(params, "refresh_token")?;
                let user = self
                    .users
                    .values()
                    .find(|u| refresh == format!("refresh-{}", u.name))?;
                return Some(Some(user));
            }
            _ => match request.header("authorization") {
                None => return Some(None),
                Some(header) => basic_credentials(header)?,
            },
        };
        let user = self.users.get(name.as_str())?;
        (user.password == password).then_some(Some(user))
    }

    fn grant(
        &self,
        user: Option<&TokenUser>,
        params: &[(String, String)],
    ) -> Vec<serde_json::Value> {
        let allowed = user.map(|u| u.actions).unwrap_or(&[]);
        params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, scope)| scope.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                let granted: Vec<&str> =
                    actions.split(',').filter(|a| allowed.contains(a)).collect();
                Some(json!({ "type": kind, "name": name, "actions": granted }))
            })
            .collect()
    }

    fn sign(&self, subject: &str, access: Vec<serde_json::Value>) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({ "alg": "ES256", "typ": "JWT", "x5c": [STANDARD.encode(&self.certificate_der)] });
        let claims = json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("doctor-test-{now}-{subject}"),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("sign");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `a=1&b=x%20y` as pairs, percent- and plus-decoded.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
