//! Test support: a scripted registry that records what it was sent.

use std::collections::VecDeque;
use std::time::Duration;

use crate::auth::{Credentials, Secret};
use crate::base64;
use crate::config::ProbeConfig;
use crate::http::{Request, Response, Transport, TransportError};
use crate::url::Url;

/// The password every test configuration uses, searched for in serialised results.
pub const PASSWORD: &str = "pa55-w0rd-SECRET";

/// `base64("robot:pa55-w0rd-SECRET")`, the `Authorization` value that must never leak either.
pub const BASIC_VALUE: &str = "cm9ib3Q6cGE1NS13MHJkLVNFQ1JFVA==";

/// A transport that replays scripted answers in order and records every request.
#[derive(Default, Clone)]
pub struct FakeRegistry {
    answers: VecDeque<Result<Response, TransportError>>,
    /// Every request sent, in order.
    pub requests: Vec<Request>,
}

impl FakeRegistry {
    pub fn new() -> Self {
        FakeRegistry::default()
    }

    /// Queues an HTTP answer.
    pub fn answer(mut self, status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        self.answers.push_back(Ok(Response {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }));
        self
    }

    /// Queues a transport failure.
    pub fn fail(mut self, error: TransportError) -> Self {
        self.answers.push_back(Err(error));
        self
    }
}

impl Transport for FakeRegistry {
    fn send(&mut self, req: &Request) -> Result<Response, TransportError> {
        self.requests.push(req.clone());
        self.answers
            .pop_front()
            .unwrap_or_else(|| Err(TransportError::Other("no scripted answer left".into())))
    }
}

/// Basic credentials for `robot` against `https://registry.example`.
pub fn config() -> ProbeConfig {
    ProbeConfig {
        registry: Url::parse_registry("registry.example").unwrap(),
        repository: "stellaops/doctor-test".into(),
        credentials: Credentials::Basic {
            username: "robot".into(),
            password: Secret::new(PASSWORD),
        },
        timeout: Duration::from_secs(10),
    }
}

/// An unsigned JWT with `payload` as its claims, as a token server would issue one.
pub fn jwt(payload: &serde_json::Value) -> String {
    let part = |bytes: &[u8]| {
        base64::encode(bytes)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        part(br#"{"alg":"ES256","typ":"JWT"}"#),
        part(payload.to_string().as_bytes())
    )
}
