//! The probe's [`Transport`] over `wasi:http/outgoing-handler@0.2.0`.
//!
//! Adapter code only: the probe decides what is sent where. This talks to the outgoing handler
//! directly rather than through `spin_sdk::http::send` because only the handler's
//! `request-options` carry the probe's per-request timeout. It uses the WASI 0.2.0 bindings
//! spin-sdk itself is built on, so the component imports one `wasi:http` version.
//!
//! The platform enforces its own outbound policy (`allowed_outbound_hosts` on Spin); a refused
//! request comes back as `http-request-denied`, and its origin is remembered so the report can
//! say where the policy lives.

use std::time::Duration;

use oci_probe::http::{Method, Request, Response, Transport, TransportError};
use oci_probe::url::{Scheme, Url};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method as WasiMethod,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme as WasiScheme,
};
use wasi::io::streams::StreamError;

/// The most of a response body the probe reads: it quotes the start of error bodies and reads
/// small token answers.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK_BYTES: usize = 4096;

/// Sends the probe's requests through the platform with a fixed per-request timeout.
pub struct EdgeTransport {
    timeout: Duration,
    denied: Vec<String>,
}

impl EdgeTransport {
    /// A transport whose connect, first-byte and between-bytes timeouts are all `timeout`.
    pub fn new(timeout: Duration) -> Self {
        EdgeTransport {
            timeout,
            denied: Vec::new(),
        }
    }

    /// The origins (`scheme://host:port`) the platform refused, in the order refused.
    pub fn denied_origins(&self) -> &[String] {
        &self.denied
    }

    fn options(&self) -> RequestOptions {
        let options = RequestOptions::new();
        let nanos = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        // A platform that cannot honour a timeout refuses to set it; its own defaults then
        // apply, which is better than not probing at all.
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
        options
    }
}

/// Lent to `oci_probe::check::run`, which consumes its transport, so the caller can still read
/// [`EdgeTransport::denied_origins`] afterwards.
impl Transport for &mut EdgeTransport {
    fn send(&mut self, req: &Request) -> Result<Response, TransportError> {
        let url = Url::parse(&req.url).map_err(|error| {
            TransportError::Other(format!("invalid url {:?}: {error}", req.url))
        })?;
        let result = send(req, &url, self.options());
        if let Err(TransportError::Denied { origin }) = &result {
            self.denied.push(origin.clone());
        }
        result
    }
}

fn send(req: &Request, url: &Url, options: RequestOptions) -> Result<Response, TransportError> {
    let outgoing = outgoing_request(req, url)?;
    let body = match req.body.is_empty() {
        true => None,
        false => Some(outgoing.body().map_err(|()| refused("body"))?),
    };

    let future = outgoing_handler::handle(outgoing, Some(options))
        .map_err(|code| transport_error(code, url))?;
    if let Some(body) = body {
        write_body(body, &req.body).map_err(|code| transport_error(code, url))?;
    }
    let response = wait_for(&future).map_err(|code| transport_error(code, url))?;
    Ok(read_response(&response))
}

/// Builds the wasi request; a bodiless request never opens its body, which the platform sends
/// as an empty one.
fn outgoing_request(req: &Request, url: &Url) -> Result<OutgoingRequest, TransportError> {
    let headers = Fields::new();
    for (name, value) in &req.headers {
        headers
            .append(name, &value.as_bytes().to_vec())
            .map_err(|error| {
                TransportError::Other(format!("header `{name}` refused: {error:?}"))
            })?;
    }

    let request = OutgoingRequest::new(headers);
    let method = match req.method {
        Method::Post => WasiMethod::Post,
        Method::Delete => WasiMethod::Delete,
        Method::Get => WasiMethod::Get,
    };
    let scheme = match url.scheme() {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    request
        .set_method(&method)
        .map_err(|()| refused("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    request
        .set_authority(Some(&url.authority()))
        .map_err(|()| refused("authority"))?;
    request
        .set_path_with_query(Some(&url.path_and_query()))
        .map_err(|()| refused("path"))?;
    Ok(request)
}

fn refused(part: &str) -> TransportError {
    TransportError::Other(format!("the platform refused the request {part}"))
}

/// Streams `bytes` into the request body and finishes it.
fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), ErrorCode> {
    let failed = |what: String| ErrorCode::InternalError(Some(what));
    let stream = body
        .write()
        .map_err(|()| failed("the request body stream was already taken".to_string()))?;
    for chunk in bytes.chunks(WRITE_CHUNK_BYTES) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|error| failed(format!("writing the request body failed: {error:?}")))?;
    }
    // The stream is a child of the body and must go before the body is finished.
    drop(stream);
    OutgoingBody::finish(body, None)
}

/// Blocks until the response (or the reason there is none) arrives.
fn wait_for(future: &FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
    loop {
        match future.get() {
            Some(Ok(result)) => return result,
            Some(Err(())) => {
                return Err(ErrorCode::InternalError(Some(
                    "response was already taken".to_string(),
                )));
            }
            None => future.subscribe().block(),
        }
    }
}

fn read_response(response: &IncomingResponse) -> Response {
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    Response {
        status: response.status(),
        headers,
        body: read_body(response),
    }
}

/// Reads at most [`MAX_BODY_BYTES`]; a body that breaks off midway keeps what arrived, since the
/// probe only quotes it.
fn read_body(response: &IncomingResponse) -> Vec<u8> {
    let Ok(body) = response.consume() else {
        return Vec::new();
    };
    let Ok(stream) = body.stream() else {
        return Vec::new();
    };

    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY_BYTES {
        let wanted = (MAX_BODY_BYTES - bytes.len()) as u64;
        match stream.blocking_read(wanted) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                eprintln!(
                    "warning: reading the response body failed: {}",
                    error.to_debug_string()
                );
                break;
            }
        }
    }
    // The stream is a child of the body and must go first.
    drop(stream);
    drop(body);
    bytes
}

/// Maps the platform's error code to the probe's transport error.
fn transport_error(code: ErrorCode, url: &Url) -> TransportError {
    match code {
        ErrorCode::HttpRequestDenied => TransportError::Denied {
            origin: url.origin().to_string(),
        },
        ErrorCode::ConnectionRefused => TransportError::ConnectionRefused,
        ErrorCode::DnsError(_) | ErrorCode::DnsTimeout | ErrorCode::DestinationNotFound => {
            TransportError::Dns
        }
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => TransportError::Timeout,
        ErrorCode::TlsProtocolError => TransportError::Tls("protocol error".to_string()),
        ErrorCode::TlsCertificateError => TransportError::Tls("certificate error".to_string()),
        ErrorCode::TlsAlertReceived(alert) => TransportError::Tls(format!(
            "alert {} received{}",
            alert.alert_id.map_or("?".to_string(), |id| id.to_string()),
            alert
                .alert_message
                .map_or(String::new(), |m| format!(": {m}"))
        )),
        other => TransportError::Other(format!("{other:?}")),
    }
}
