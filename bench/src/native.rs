//! The probe's [`Transport`] over [`crate::http1`]: the native counterpart of the component's
//! `wasi:http` transport, with the same keep-alive the host gives the component within a run.

use std::io;
use std::time::Duration;

use oci_probe::http::{Request, Response, Transport, TransportError};
use oci_probe::url::{Scheme, Url};

use crate::http1::Connection;

/// The most of a body handed to the probe, as the component's transport reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Plain-HTTP transport that keeps one connection open per origin it last talked to.
pub struct NativeTransport {
    timeout: Duration,
    open: Option<(String, Connection)>,
}

impl NativeTransport {
    /// A transport with `timeout` for connecting and for each read.
    pub fn new(timeout: Duration) -> Self {
        NativeTransport {
            timeout,
            open: None,
        }
    }

    fn connection(&mut self, authority: &str) -> Result<&mut Connection, TransportError> {
        let reuse = matches!(&self.open, Some((open, _)) if open == authority);
        if !reuse {
            let connection = Connection::connect(authority, self.timeout).map_err(error)?;
            self.open = Some((authority.to_string(), connection));
        }
        Ok(&mut self.open.as_mut().expect("just opened").1)
    }
}

impl Transport for NativeTransport {
    fn send(&mut self, req: &Request) -> Result<Response, TransportError> {
        let url = Url::parse(&req.url)
            .map_err(|err| TransportError::Other(format!("invalid url {:?}: {err}", req.url)))?;
        if url.scheme() != Scheme::Http {
            return Err(TransportError::Other(
                "the bench's native transport speaks plain http only".to_string(),
            ));
        }
        let authority = url.authority();
        let target = url.path_and_query();
        let method = req.method.as_str();

        // A kept-alive connection the server has closed in the meantime fails at once; one
        // retry on a fresh connection is what any HTTP client does.
        let reused = matches!(&self.open, Some((open, _)) if *open == authority);
        let first = self
            .connection(&authority)?
            .send(method, &target, &req.headers, &req.body);
        let reply = match first {
            Err(_) if reused => {
                self.open = None;
                self.connection(&authority)?
                    .send(method, &target, &req.headers, &req.body)
                    .map_err(error)?
            }
            other => other.map_err(error)?,
        };
        if reply.closes {
            self.open = None;
        }
        let mut body = reply.body;
        body.truncate(MAX_BODY_BYTES);
        Ok(Response {
            status: reply.status,
            headers: reply.headers,
            body,
        })
    }
}

fn error(err: io::Error) -> TransportError {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => TransportError::ConnectionRefused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportError::Timeout,
        _ => TransportError::Other(err.to_string()),
    }
}
