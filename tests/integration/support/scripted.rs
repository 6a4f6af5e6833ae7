//! A scripted HTTP/1.1 server on a free loopback port, for registry answers
//! that a real distribution with htpasswd cannot be made to give (another
//! vendor's 403, a 429, a server that never answers). It records every request
//! so tests can assert what the check sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as sent, e.g. `/v2/x/blobs/uploads/?_state=a%2Bb`.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The body, as text (form posts to token endpoints).
    pub body: String,
}

impl Recorded {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
pub enum Reply {
    /// Send this status, headers and body, then close the connection.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Accept the request and never answer (until the server stops).
    Hang,
}

/// Shorthand for a `Reply::Respond`.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    Reply::Respond {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.to_string(),
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// The running server; stopped on drop.
pub struct ScriptedServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl ScriptedServer {
    /// Starts a server that answers each request with `handler`.
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> ScriptedServer {
        ScriptedServer::start_with(None, handler)
    }

    /// Starts an https server for `localhost` with a certificate from its own
    /// test CA ([`TestTls::ca_pem`]); its URL names `localhost`.
    pub fn start_tls(
        tls: &TestTls,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> ScriptedServer {
        let mut server = ScriptedServer::start_with(Some(tls.config.clone()), handler);
        server.url = format!("https://localhost:{}", server.port);
        server
    }

    fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);

        let acceptor = {
            let (requests, stop) = (requests.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, stop, handler) =
                        (requests.clone(), stop.clone(), handler.clone());
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls.clone() {
                        None => thread::spawn(move || serve(stream, &requests, &stop, &*handler)),
                        Some(config) => thread::spawn(move || {
                            let Ok(session) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let stream = rustls::StreamOwned::new(session, stream);
                            serve(stream, &requests, &stop, &*handler)
                        }),
                    };
                }
            })
        };
        ScriptedServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            requests,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve(
    stream: impl Read + Write,
    requests: &Mutex<Vec<Recorded>>,
    stop: &AtomicBool,
    handler: &Handler,
) {
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    requests.lock().unwrap().push(request.clone());
    let mut stream = reader.into_inner();
    match handler(&request) {
        Reply::Respond {
            status,
            headers,
            body,
        } => {
            let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        Reply::Hang => {
            // Bounded, so a forgotten server cannot keep a test process alive.
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn read_request(reader: &mut BufReader<impl Read>) -> Option<Recorded> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut recorded = Recorded {
        method,
        target,
        headers,
        body: String::new(),
    };
    let length: usize = recorded
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body).ok()?;
    recorded.body = String::from_utf8_lossy(&body).into_owned();
    Some(recorded)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A test CA and a `localhost` server certificate it signed.
pub struct TestTls {
    config: Arc<rustls::ServerConfig>,
    ca_pem: String,
}

impl TestTls {
    /// A fresh CA and server identity.
    pub fn new() -> TestTls {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "stella-doctor test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let certificate = params.signed_by(&key, &issuer).expect("server certificate");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .expect("server config");
        TestTls {
            config: Arc::new(config),
            ca_pem: ca.pem(),
        }
    }

    /// The CA certificate, PEM, for `Doctor:Tls:CaBundle`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}
