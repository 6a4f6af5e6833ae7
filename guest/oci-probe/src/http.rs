//! The transport seam: the probe speaks HTTP only through [`Transport`].
//!
//! The component adapter implements it over `wasi:http/outgoing-handler`; tests implement it with a
//! scripted fake. Only the OAuth2 form request to a token endpoint carries a body; everything the
//! probe sends to the registry itself is bodiless.

use std::fmt;

/// The HTTP methods the probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Opens an upload session, or sends the OAuth2 form to a token endpoint.
    Post,
    /// Cancels an upload session.
    Delete,
    /// Fetches a token; also for probes that only read.
    Get,
}

impl Method {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Get => "GET",
        }
    }
}

/// One outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request method.
    pub method: Method,
    /// The absolute URL, sent exactly as written (no re-encoding).
    pub url: String,
    /// Header names and values, in the order they are sent.
    pub headers: Vec<(String, String)>,
    /// The body; empty for every request except a token form.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Sets the body with its `content-type` and `content-length` headers.
    pub fn with_body(self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let length = body.len().to_string();
        let mut request = self
            .with_header("content-type", content_type)
            .with_header("content-length", length);
        request.body = body;
        request
    }

    /// Adds a header and returns the request.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The first value of the header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// What came back; `body` may be cut short by the transport.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header names and values as received.
    pub headers: Vec<(String, String)>,
    /// The start of the body (transports bound how much they read).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of the header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of the header `name`, in the order received (a registry may send several
    /// `WWW-Authenticate` lines).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Why a request got no HTTP answer at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The host's outbound policy refused the request before it left.
    Denied {
        /// The origin (`scheme://host:port`) that was refused.
        origin: String,
    },
    /// Nothing listens at the registry's address.
    ConnectionRefused,
    /// The registry's host name did not resolve.
    Dns,
    /// The TLS handshake failed.
    Tls(String),
    /// Connecting or waiting for an answer took longer than the configured timeout.
    Timeout,
    /// Any other failure, described by the transport.
    Other(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Denied { origin } => {
                write!(
                    f,
                    "request to `{origin}` denied by the host's outbound policy"
                )
            }
            TransportError::ConnectionRefused => f.write_str("connection refused"),
            TransportError::Dns => f.write_str("dns lookup failed"),
            TransportError::Tls(detail) => write!(f, "tls failure: {detail}"),
            TransportError::Timeout => f.write_str("timed out"),
            TransportError::Other(detail) => write!(f, "transport failure: {detail}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Sends one request and waits for its answer.
///
/// An implementation follows no redirects and adds no credentials of its own: the probe decides
/// what is sent where. It applies its own per-request timeout and may truncate the body.
pub trait Transport {
    /// Sends `req` and returns the response, whatever its status.
    fn send(&mut self, req: &Request) -> Result<Response, TransportError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case() {
        let response = Response {
            status: 202,
            headers: vec![("location".into(), "/v2/x".into())],
            body: Vec::new(),
        };

        assert_eq!(response.header("Location"), Some("/v2/x"));
        assert_eq!(response.header("Range"), None);
    }

    #[test]
    fn repeated_headers_are_all_returned_in_order() {
        let response = Response {
            status: 401,
            headers: vec![
                ("WWW-Authenticate".into(), "Basic realm=\"a\"".into()),
                ("content-type".into(), "text/plain".into()),
                ("www-authenticate".into(), "Bearer realm=\"b\"".into()),
            ],
            body: Vec::new(),
        };

        let values: Vec<&str> = response.header_values("www-authenticate").collect();
        assert_eq!(values, ["Basic realm=\"a\"", "Bearer realm=\"b\""]);
    }

    #[test]
    fn a_body_brings_its_type_and_length() {
        let request = Request::new(Method::Post, "https://auth.example/token")
            .with_body("application/x-www-form-urlencoded", "a=b");

        assert_eq!(request.header("Content-Length"), Some("3"));
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(request.body, b"a=b");
    }
}
