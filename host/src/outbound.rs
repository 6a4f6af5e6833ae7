//! The host's own HTTP client: the one way a check's `wasi:http` requests leave the sandbox.
//!
//! Every request takes the same steps, and the first that fails answers the check with a
//! `wasi:http` error code while the host records why (see [`crate::incidents`]):
//!
//! 1. its origin must be on the check's allowlist;
//! 2. its body must fit `Doctor:Limits:RequestBodyBytes`;
//! 3. it takes one of `Doctor:Limits:ConcurrentRequests` slots, waiting at most its connect
//!    timeout, and holds it until the response body ends or is dropped;
//! 4. an idle keep-alive connection to the same origin from the same run is reused; otherwise
//!    the host name is resolved once, every address is screened, and the host connects only to
//!    an address that passed. There is no second lookup, so no DNS rebinding window;
//! 5. https is TLS through [`TlsSettings`]; a failed handshake is recorded with its cause;
//! 6. HTTP/1.1 through hyper, with connect, first-byte and between-bytes timeouts that never
//!    outlast the run's deadline;
//! 7. response headers must fit `Doctor:Limits:HeaderBytes`, and the body is cut off after
//!    `Doctor:Limits:ResponseBodyBytes`.
//!
//! Connections live as long as the run: dropping the run's client aborts them.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::{Sleep, timeout, timeout_at};
use tracing::{debug, warn};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::incidents::{Denial, DenialReason, Incidents};
use crate::limits::{
    CONCURRENT_REQUESTS_KEY, HEADER_BYTES_KEY, LimitHit, Limits, REQUEST_BODY_KEY,
    RESPONSE_BODY_KEY, to_usize,
};
use crate::policy::{AddressClass, Allowlist, Origin};
use crate::tls::{self, TlsSettings};

type ResponseIo = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, ResponseIo), HttpError>;
type SendFuture = Box<dyn Future<Output = SendResult> + Send>;

/// The `wasi:http` hooks of one run: every request the check sends goes through
/// [`OutboundHooks::send_request`].
///
/// Kept apart from the store state because `wasmtime-wasi-http` borrows the hooks and the view
/// at the same time.
pub struct OutboundHooks {
    deadline: Instant,
    client: Arc<Client>,
}

/// What the outbound client of one run is allowed and given.
pub struct OutboundPolicy {
    /// The check's identifier, for logs.
    pub check_id: String,
    /// The origins the check may reach, and which of them the operator named.
    pub allowlist: Allowlist,
    /// When the run must be over; every timeout is clamped to it.
    pub deadline: Instant,
    /// Trust anchors.
    pub tls: Arc<TlsSettings>,
    /// Body, header and concurrency limits.
    pub limits: Limits,
    /// Where refusals, TLS failures and tripped limits are recorded.
    pub incidents: Incidents,
}

impl OutboundHooks {
    /// The hooks, and a fresh connection pool, for one run.
    pub fn new(policy: OutboundPolicy) -> Self {
        let slots = to_usize(policy.limits.concurrent_requests);
        OutboundHooks {
            deadline: policy.deadline,
            client: Arc::new(Client {
                check_id: policy.check_id,
                allowlist: policy.allowlist,
                tls: policy.tls,
                slots: Arc::new(Semaphore::new(slots)),
                pool: Pool::new(slots),
                limits: policy.limits,
                incidents: policy.incidents,
            }),
        }
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: ResponseIo,
    ) -> SendFuture {
        let client = &self.client;
        let origin = Origin::of_uri(request.uri());
        let Some(origin) = origin.filter(|origin| client.allowlist.allows(origin)) else {
            client.deny_origin(request.uri());
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };

        debug!(check = %client.check_id, method = %request.method(), origin = %origin, "sending outbound request");
        let options = clamp_options(
            options,
            self.deadline.saturating_duration_since(Instant::now()),
        );
        let client = client.clone();
        Box::new(async move { client.send(origin, request, options).await })
    }

    // A registry that refuses the connection, fails the handshake or speaks broken HTTP is what a
    // check exists to report, in its result; the default hooks would also log each one as a host
    // warning. The codes the check sees are the defaults'.

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        debug!(check = %self.client.check_id, error = %err, "connection failed");
        ErrorCode::ConnectionRefused
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        debug!(check = %self.client.check_id, error = %err, "TLS failed");
        ErrorCode::TlsProtocolError
    }

    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        debug!(check = %self.client.check_id, error = %err, "HTTP exchange failed");
        ErrorCode::HttpProtocolError
    }
}

/// Limits every request timeout to what is left of the run, and sets the ones the guest left
/// unset, which would otherwise wait 600 s.
fn clamp_options(options: Option<RequestOptions>, remaining: Duration) -> RequestOptions {
    // A zero timeout would fail at once with a confusing error; the run's own deadline fires
    // within milliseconds anyway.
    let remaining = remaining.max(Duration::from_millis(1));
    let clamp = |timeout: Option<Duration>| Some(timeout.map_or(remaining, |t| t.min(remaining)));
    let options = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: clamp(options.connect_timeout),
        first_byte_timeout: clamp(options.first_byte_timeout),
        between_bytes_timeout: clamp(options.between_bytes_timeout),
    }
}

/// The outbound client of one run.
struct Client {
    check_id: String,
    allowlist: Allowlist,
    tls: Arc<TlsSettings>,
    limits: Limits,
    slots: Arc<Semaphore>,
    pool: Pool,
    incidents: Incidents,
}

/// An open HTTP/1.1 connection and the address it reached.
struct Connection {
    sender: http1::SendRequest<WasiBody>,
    peer: SocketAddr,
}

/// Why an exchange produced no response.
enum ExchangeError {
    /// The connection could not take the request, which comes back unsent.
    NotSent(http::Request<WasiBody>),
    /// The request failed on the way.
    Failed(HttpError),
}

impl Client {
    /// Sends an allowed request and hands back the response with its body guarded by limits.
    async fn send(
        self: Arc<Self>,
        origin: Origin,
        request: http::Request<WasiBody>,
        options: RequestOptions,
    ) -> SendResult {
        let (request, body_over_limit) = self.limit_request_body(request)?;
        let slot = self
            .take_slot(options.connect_timeout.unwrap_or_default())
            .await?;

        let delivered = self.deliver(&origin, request, &options).await;
        let (connection, response) = delivered.map_err(|error| {
            // hyper reports the cut-off body as its own error; say what really happened.
            if body_over_limit.load(Ordering::Relaxed) {
                HttpError::HttpRequestBodySize(Some(self.limits.request_body_bytes))
            } else {
                error
            }
        })?;
        self.check_header_section(&origin, response.headers())?;
        self.pool.put(origin, connection);

        let between_bytes = options.between_bytes_timeout.unwrap_or_default();
        let response = response
            .map(|incoming| ResponseBody::new(incoming, &self, between_bytes, slot).boxed_unsync());
        Ok((response, Box::new(async { Ok(()) }) as ResponseIo))
    }

    /// Sends `request` on an idle connection to `origin`, or a new one, and waits for the
    /// response head.
    async fn deliver(
        &self,
        origin: &Origin,
        request: http::Request<WasiBody>,
        options: &RequestOptions,
    ) -> Result<(Connection, http::Response<Incoming>), HttpError> {
        let connect_timeout = options.connect_timeout.unwrap_or_default();
        let first_byte = options.first_byte_timeout.unwrap_or_default();
        let pooled = self.pool.take(origin);
        let reused = pooled.is_some();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => self.connect(origin, connect_timeout).await?,
        };
        self.warn_if_insecure(origin, &request, connection.peer);

        let request = into_origin_form(request);
        let outcome = match exchange(&mut connection, request, first_byte).await {
            Err(ExchangeError::NotSent(request)) if reused => {
                // A kept-alive connection the server has since closed; the request never left,
                // so sending it on a fresh connection is safe.
                debug!(check = %self.check_id, origin = %origin, "idle connection was closed; reconnecting");
                connection = self.connect(origin, connect_timeout).await?;
                exchange(&mut connection, request, first_byte).await
            }
            outcome => outcome,
        };
        match outcome {
            Ok(response) => Ok((connection, response)),
            Err(ExchangeError::NotSent(_)) => Err(HttpError::ConnectionTerminated),
            Err(ExchangeError::Failed(error)) => Err(error),
        }
    }

    /// Records a request to an origin the check may not reach.
    fn deny_origin(&self, uri: &http::Uri) {
        let Some(origin) = Origin::of_uri(uri) else {
            warn!(check = %self.check_id, "denied outbound request without a scheme and host");
            return;
        };
        warn!(check = %self.check_id, origin = %origin, "denied outbound request to an origin the check may not reach");
        self.incidents.denied(Denial {
            origin,
            reason: DenialReason::NotAllowed,
        });
    }

    /// Refuses a request whose declared body is too long, and cuts off one whose body turns out
    /// too long; the flag says the cut happened.
    fn limit_request_body(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<(http::Request<WasiBody>, Arc<AtomicBool>), HttpError> {
        let limit = self.limits.request_body_bytes;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            self.limit_tripped(REQUEST_BODY_KEY, "request body is longer than allowed");
            return Err(HttpError::HttpRequestBodySize(declared));
        }

        let over_limit = Arc::new(AtomicBool::new(false));
        let request = request.map(|inner| {
            LimitedRequestBody {
                inner,
                sent: 0,
                limit,
                over_limit: over_limit.clone(),
                incidents: self.incidents.clone(),
                hit: self.limits.hit(REQUEST_BODY_KEY),
                check_id: self.check_id.clone(),
            }
            .boxed_unsync()
        });
        Ok((request, over_limit))
    }

    /// Waits for a free request slot, at most `wait`.
    async fn take_slot(&self, wait: Duration) -> Result<OwnedSemaphorePermit, HttpError> {
        match timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            // The semaphore is never closed; treat it like a full one all the same.
            Ok(Err(_)) | Err(_) => {
                self.limit_tripped(CONCURRENT_REQUESTS_KEY, "too many requests in flight");
                Err(HttpError::ConnectionLimitReached)
            }
        }
    }

    fn limit_tripped(&self, key: &'static str, what: &str) {
        let hit = self.limits.hit(key);
        warn!(check = %self.check_id, limit = %hit, "{what}; refusing it");
        self.incidents.limit(hit);
    }

    /// Resolves, screens, connects, and (for https) completes the TLS handshake, all within
    /// `connect_timeout`.
    async fn connect(
        &self,
        origin: &Origin,
        connect_timeout: Duration,
    ) -> Result<Connection, HttpError> {
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let addresses = resolve(origin, deadline).await?;
        let permitted = self.screen(origin, &addresses)?;
        let (tcp, peer) = connect_tcp(&permitted, deadline).await?;

        let handshake = if origin.scheme == "https" {
            let tls = self.handshake_tls(origin, tcp, deadline).await?;
            self.start_http(tls, deadline).await?
        } else {
            self.start_http(tcp, deadline).await?
        };
        debug!(check = %self.check_id, origin = %origin, %peer, "connected");
        Ok(Connection {
            sender: handshake,
            peer,
        })
    }

    /// The resolved addresses the check may reach; when there are none, records why.
    fn screen(
        &self,
        origin: &Origin,
        addresses: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, HttpError> {
        let mut permitted = Vec::new();
        let mut refused = None;
        for address in addresses {
            match self.allowlist.check_address(origin, address.ip()) {
                Ok(()) => permitted.push(*address),
                Err(class) => {
                    refused.get_or_insert((address.ip(), class));
                }
            }
        }
        if !permitted.is_empty() {
            if refused.is_some() {
                debug!(check = %self.check_id, origin = %origin, "skipping resolved addresses the check may not reach");
            }
            return Ok(permitted);
        }

        let Some((address, class)) = refused else {
            return Err(dns_error());
        };
        let denial = Denial {
            origin: origin.clone(),
            reason: DenialReason::Address { address, class },
        };
        warn!(check = %self.check_id, origin = %origin, reason = %denial.why(), "denied outbound request to an address the check may not reach");
        self.incidents.denied(denial);
        Err(HttpError::HttpRequestDenied)
    }

    /// TLS over `tcp`, verifying the certificate against the origin's host name.
    async fn handshake_tls(
        &self,
        origin: &Origin,
        tcp: TcpStream,
        deadline: tokio::time::Instant,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
        let name = ServerName::try_from(origin.host.as_str())
            .map_err(HttpError::InvalidDnsNameError)?
            .to_owned();
        // The first https connection of the process loads the platform's trust store here.
        let connector = self.tls.connector_for(&origin.host).map_err(|cause| {
            warn!(check = %self.check_id, origin = %origin, %cause, "cannot set up TLS");
            self.incidents.tls_error(cause);
            HttpError::TlsProtocolError
        })?;
        match timeout_at(deadline, connector.connect(name, tcp)).await {
            Err(_) => Err(HttpError::ConnectionTimeout),
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => {
                let failure = tls::describe_failure(&err, &authority(origin));
                // Reported in the result as `tls_error`; not a fault of the host.
                debug!(check = %self.check_id, origin = %origin, cause = %failure.cause, "TLS handshake failed");
                self.incidents.tls_error(failure.cause);
                Err(failure.error)
            }
        }
    }

    /// Starts HTTP/1.1 on `io`; the connection is driven by a task the pool aborts at the end
    /// of the run.
    async fn start_http<T>(
        &self,
        io: T,
        deadline: tokio::time::Instant,
    ) -> Result<http1::SendRequest<WasiBody>, HttpError>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let handshake = http1::Builder::new().handshake(TokioIo::new(io));
        let (sender, driver) = timeout_at(deadline, handshake)
            .await
            .map_err(|_| HttpError::ConnectionTimeout)??;
        let check = self.check_id.clone();
        self.pool.drive(async move {
            if let Err(err) = driver.await {
                debug!(check, error = %err, "connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Records credentials sent in the clear to a host off this machine.
    fn warn_if_insecure(
        &self,
        origin: &Origin,
        request: &http::Request<WasiBody>,
        peer: SocketAddr,
    ) {
        let carries_credentials = request.headers().contains_key(AUTHORIZATION);
        let local = AddressClass::of(peer.ip()) == AddressClass::Loopback;
        if origin.scheme != "http" || !carries_credentials || local {
            return;
        }
        warn!(check = %self.check_id, origin = %origin, "credentials sent over plain http");
        self.incidents.insecure_transport(format!(
            "an `Authorization` header went over plain http to {origin} ({}); configure an https URL",
            peer.ip()
        ));
    }

    /// Refuses a response whose header section is larger than `Doctor:Limits:HeaderBytes`.
    fn check_header_section(
        &self,
        origin: &Origin,
        headers: &http::HeaderMap,
    ) -> Result<(), HttpError> {
        // Wire size: name, `: `, value, CRLF.
        let size: u64 = headers
            .iter()
            .map(|(name, value)| (name.as_str().len() + value.len() + 4) as u64)
            .sum();
        if size <= self.limits.header_bytes {
            return Ok(());
        }
        debug!(check = %self.check_id, origin = %origin, size, "response header section too large");
        self.limit_tripped(
            HEADER_BYTES_KEY,
            "response header section is larger than allowed",
        );
        Err(HttpError::HttpResponseHeaderSectionSize(
            u32::try_from(size).ok(),
        ))
    }
}

/// Sends `request` on `connection`, waiting at most `first_byte` for the response head.
async fn exchange(
    connection: &mut Connection,
    request: http::Request<WasiBody>,
    first_byte: Duration,
) -> Result<http::Response<Incoming>, ExchangeError> {
    match timeout(first_byte, connection.sender.try_send_request(request)).await {
        Err(_) => Err(ExchangeError::Failed(HttpError::ConnectionReadTimeout)),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(mut err)) => match err.take_message() {
            Some(request) => Err(ExchangeError::NotSent(request)),
            None => Err(ExchangeError::Failed(HttpError::Hyper(err.into_error()))),
        },
    }
}

/// The request with only path and query in its URI, as a server (not a proxy) expects it.
fn into_origin_form(mut request: http::Request<WasiBody>) -> http::Request<WasiBody> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // A path that parsed as part of a URI parses on its own.
    if let Ok(uri) = http::Uri::try_from(path) {
        *request.uri_mut() = uri;
    }
    request
}

/// `host:port`, with brackets around an IPv6 host, for messages.
fn authority(origin: &Origin) -> String {
    if origin.host.contains(':') {
        format!("[{}]:{}", origin.host, origin.port)
    } else {
        format!("{}:{}", origin.host, origin.port)
    }
}

/// The addresses of the origin's host: the literal itself, or one system lookup.
async fn resolve(
    origin: &Origin,
    deadline: tokio::time::Instant,
) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(ip) = origin.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, origin.port)]);
    }
    let lookup = tokio::net::lookup_host((origin.host.as_str(), origin.port));
    match timeout_at(deadline, lookup).await {
        Err(_) => Err(HttpError::DnsTimeout),
        Ok(Err(err)) => {
            debug!(host = %origin.host, error = %err, "name lookup failed");
            Err(dns_error())
        }
        Ok(Ok(addresses)) => {
            let addresses: Vec<SocketAddr> = addresses.collect();
            if addresses.is_empty() {
                return Err(dns_error());
            }
            Ok(addresses)
        }
    }
}

/// What the check sees for a name that does not resolve (as wasmtime's own client reports it).
fn dns_error() -> HttpError {
    HttpError::DnsError {
        rcode: Some("address not available".to_string()),
        info_code: None,
    }
}

/// Connects to the first of `addresses` that answers.
async fn connect_tcp(
    addresses: &[SocketAddr],
    deadline: tokio::time::Instant,
) -> Result<(TcpStream, SocketAddr), HttpError> {
    let mut last_error = None;
    for address in addresses {
        match timeout_at(deadline, TcpStream::connect(address)).await {
            Err(_) => return Err(HttpError::ConnectionTimeout),
            Ok(Ok(stream)) => {
                // Request heads and bodies go out as separate writes; without this, Nagle's
                // algorithm holds the second until the peer's (delayed) ACK of the first.
                let _ = stream.set_nodelay(true);
                return Ok((stream, *address));
            }
            Ok(Err(err)) => last_error = Some(err),
        }
    }
    Err(last_error.map_or(HttpError::ConnectionRefused, HttpError::Connect))
}

/// The idle keep-alive connections of one run, and the tasks driving all its connections.
struct Pool {
    idle: Mutex<Vec<(Origin, Connection)>>,
    drivers: Mutex<Vec<AbortHandle>>,
    max_idle: usize,
}

impl Pool {
    fn new(max_idle: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            drivers: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<(Origin, Connection)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `origin` that can take a request now.
    fn take(&self, origin: &Origin) -> Option<Connection> {
        let mut idle = self.idle();
        idle.retain(|(_, connection)| !connection.sender.is_closed());
        let index = idle
            .iter_mut()
            .position(|(o, connection)| o == origin && ready_now(&mut connection.sender))?;
        Some(idle.swap_remove(index).1)
    }

    /// Keeps a connection for a later request to the same origin; it becomes ready once the
    /// current response body has been read to its end.
    fn put(&self, origin: Origin, connection: Connection) {
        let mut idle = self.idle();
        idle.retain(|(_, connection)| !connection.sender.is_closed());
        if idle.len() < self.max_idle {
            idle.push((origin, connection));
        }
    }

    /// Runs a connection's driver until the connection closes or the pool is dropped.
    fn drive(&self, driver: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(driver).abort_handle();
        let mut drivers = self.drivers.lock().unwrap_or_else(|p| p.into_inner());
        drivers.retain(|handle| !handle.is_finished());
        drivers.push(handle);
    }
}

impl Drop for Pool {
    /// No connection outlives its run.
    fn drop(&mut self) {
        let drivers = self.drivers.get_mut().unwrap_or_else(|p| p.into_inner());
        for handle in drivers.drain(..) {
            handle.abort();
        }
    }
}

/// True when the connection can take a request without waiting.
fn ready_now(sender: &mut http1::SendRequest<WasiBody>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
}

/// Counts a request body on its way out and cuts it off past `Doctor:Limits:RequestBodyBytes`.
struct LimitedRequestBody {
    inner: WasiBody,
    sent: u64,
    limit: u64,
    over_limit: Arc<AtomicBool>,
    incidents: Incidents,
    hit: LimitHit,
    check_id: String,
}

impl Body for LimitedRequestBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if this.over_limit.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let length = match &frame {
            Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
            _ => 0,
        };
        this.sent += length as u64;
        if this.sent > this.limit {
            warn!(check = %this.check_id, limit = %this.hit, "request body is longer than allowed; cutting it off");
            this.over_limit.store(true, Ordering::Relaxed);
            this.incidents.limit(this.hit.clone());
            return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(this.sent)))));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body as the check reads it: cut off past `Doctor:Limits:ResponseBodyBytes`,
/// failed when the server pauses longer than the between-bytes timeout, and holding its request
/// slot until it ends.
struct ResponseBody {
    incoming: Incoming,
    received: u64,
    limit: u64,
    between_bytes: Duration,
    pause: Pin<Box<Sleep>>,
    slot: Option<OwnedSemaphorePermit>,
    incidents: Incidents,
    hit: LimitHit,
    check_id: String,
}

impl ResponseBody {
    fn new(
        incoming: Incoming,
        client: &Client,
        between_bytes: Duration,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        ResponseBody {
            incoming,
            received: 0,
            limit: client.limits.response_body_bytes,
            between_bytes,
            pause: Box::pin(tokio::time::sleep(between_bytes)),
            slot: Some(slot),
            incidents: client.incidents.clone(),
            hit: client.limits.hit(RESPONSE_BODY_KEY),
            check_id: client.check_id.clone(),
        }
    }

    /// Ends the body: frees its slot and answers every later poll with the end.
    fn end(
        &mut self,
        last: Option<Result<Frame<Bytes>, HttpError>>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        self.slot = None;
        Poll::Ready(last)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if this.slot.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.received += frame.data_ref().map_or(0, |data| data.len() as u64);
                if this.received > this.limit {
                    warn!(check = %this.check_id, limit = %this.hit, "response body is longer than allowed; cutting it off");
                    this.incidents.limit(this.hit.clone());
                    let error = HttpError::HttpResponseBodySize(Some(this.received));
                    return this.end(Some(Err(error)));
                }
                let next_pause = tokio::time::Instant::now() + this.between_bytes;
                this.pause.as_mut().reset(next_pause);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) if err.is_timeout() => {
                this.end(Some(Err(HttpError::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(err))) => this.end(Some(Err(HttpError::Hyper(err)))),
            Poll::Ready(None) => this.end(None),
            Poll::Pending => match this.pause.as_mut().poll(cx) {
                Poll::Ready(()) => this.end(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot.is_none() || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::model::{CheckMetadata, Severity};
    use http_body_util::Full;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// A loopback HTTP/1.1 server answering every request with `body` and keeping connections
    /// open; its port, and how many connections it accepted.
    async fn serve(body: &'static [u8]) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, body));
            }
        });
        (port, accepted)
    }

    async fn answer(stream: TcpStream, body: &'static [u8]) {
        let mut stream = BufReader::new(stream);
        loop {
            let mut length = 0;
            loop {
                let mut line = String::new();
                if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut request_body = vec![0; length];
            if stream.read_exact(&mut request_body).await.is_err() {
                return;
            }
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            let writer = stream.get_mut();
            if writer.write_all(head.as_bytes()).await.is_err()
                || writer.write_all(body).await.is_err()
            {
                return;
            }
        }
    }

    /// Hooks for check `c` allowed to reach `origin`, named by the operator or only declared.
    fn hooks(origin: &str, operator_named: bool, limits: Limits) -> (OutboundHooks, Incidents) {
        let mut settings = Settings::default();
        let declared = if operator_named {
            settings.set("Doctor:Plugins:c:AllowedHosts", origin);
            vec![]
        } else {
            vec![origin.to_string()]
        };
        let metadata = CheckMetadata {
            id: "c".into(),
            name: "c".into(),
            description: String::new(),
            plugin_id: "p".into(),
            default_severity: Severity::Fail,
            tags: vec![],
            estimated_duration_ms: 0,
            config_keys: vec![],
            outbound_hosts: declared,
            related_checks: vec![],
        };
        let incidents = Incidents::default();
        let hooks = OutboundHooks::new(OutboundPolicy {
            check_id: "c".into(),
            allowlist: Allowlist::for_check(&metadata, &settings),
            deadline: Instant::now() + Duration::from_millis(500),
            tls: Arc::new(TlsSettings::trusting_nothing().unwrap()),
            limits,
            incidents: incidents.clone(),
        });
        (hooks, incidents)
    }

    /// Sends a request through the hooks; the status and the collected body.
    async fn send(
        hooks: &mut OutboundHooks,
        url: &str,
        body: &'static [u8],
        declared_length: bool,
    ) -> Result<(u16, Result<Bytes, HttpError>), HttpError> {
        let mut request = http::Request::builder().uri(url);
        if declared_length {
            request = request.header(CONTENT_LENGTH, body.len());
        }
        let body = Full::new(Bytes::from_static(body)).map_err(|never| match never {});
        let request = request.body(body.boxed_unsync()).unwrap();
        let sent = hooks.send_request(request, None, Box::new(async { Ok(()) }));
        let (response, _io) = Pin::from(sent).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map(|c| c.to_bytes());
        Ok((status, body))
    }

    #[tokio::test]
    async fn connections_are_kept_alive_within_a_run() {
        let (port, accepted) = serve(b"ok").await;
        let url = format!("http://127.0.0.1:{port}/");
        let (mut hooks, _) = hooks(&url, true, Limits::default());

        for _ in 0..3 {
            let (status, body) = send(&mut hooks, &url, b"", false).await.unwrap();
            assert_eq!((status, body.unwrap().as_ref()), (200, b"ok".as_ref()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_declared_loopback_origin_is_refused_before_connecting() {
        let (port, accepted) = serve(b"ok").await;
        let url = format!("http://127.0.0.1:{port}/");
        let (mut hooks, incidents) = hooks(&url, false, Limits::default());

        let sent = send(&mut hooks, &url, b"", false).await;

        assert!(
            matches!(sent, Err(HttpError::HttpRequestDenied)),
            "{sent:?}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        let denials = incidents.snapshot().denials;
        assert_eq!(
            denials[0].reason,
            DenialReason::Address {
                address: "127.0.0.1".parse().unwrap(),
                class: AddressClass::Loopback
            }
        );
    }

    #[tokio::test]
    async fn a_long_response_body_is_cut_off_and_recorded() {
        let (port, _) = serve(&[b'x'; 100]).await;
        let url = format!("http://127.0.0.1:{port}/");
        let limits = Limits {
            response_body_bytes: 10,
            ..Limits::default()
        };
        let (mut hooks, incidents) = hooks(&url, true, limits);

        let (_, body) = send(&mut hooks, &url, b"", false).await.unwrap();

        assert!(
            matches!(body, Err(HttpError::HttpResponseBodySize(Some(100)))),
            "{body:?}"
        );
        let limits = incidents.snapshot().limits;
        assert_eq!(limits[0].to_string(), "Doctor:Limits:ResponseBodyBytes=10");
    }

    #[tokio::test]
    async fn a_long_request_body_is_refused_whether_declared_or_streamed() {
        let (port, _) = serve(b"ok").await;
        let url = format!("http://127.0.0.1:{port}/");
        let limits = Limits {
            request_body_bytes: 10,
            ..Limits::default()
        };
        let (mut hooks, incidents) = hooks(&url, true, limits);

        let declared = send(&mut hooks, &url, &[b'x'; 100], true).await;
        assert!(
            matches!(declared, Err(HttpError::HttpRequestBodySize(Some(100)))),
            "{declared:?}"
        );
        let streamed = send(&mut hooks, &url, &[b'x'; 100], false).await;
        assert!(
            matches!(streamed, Err(HttpError::HttpRequestBodySize(_))),
            "{streamed:?}"
        );
        assert_eq!(incidents.snapshot().limits.len(), 1);
        let small = send(&mut hooks, &url, b"tiny", true).await.unwrap();
        assert_eq!(small.0, 200);
    }

    #[tokio::test]
    async fn requests_past_the_concurrency_limit_wait_then_are_refused() {
        let (port, _) = serve(b"ok").await;
        let url = format!("http://127.0.0.1:{port}/");
        let limits = Limits {
            concurrent_requests: 1,
            ..Limits::default()
        };
        let (mut hooks, incidents) = hooks(&url, true, limits);
        let request = || {
            let body = Full::new(Bytes::new()).map_err(|never| match never {});
            http::Request::builder()
                .uri(&url)
                .body(body.boxed_unsync())
                .unwrap()
        };

        // The first response is held, body unread, so its slot stays taken.
        let first = hooks.send_request(request(), None, Box::new(async { Ok(()) }));
        let held = Pin::from(first).await.unwrap();
        let second = hooks.send_request(request(), None, Box::new(async { Ok(()) }));
        let refused = Pin::from(second).await;

        assert!(
            matches!(refused, Err(HttpError::ConnectionLimitReached)),
            "{:?}",
            refused.err()
        );
        assert_eq!(
            incidents.snapshot().limits[0].to_string(),
            "Doctor:Limits:ConcurrentRequests=1"
        );
        drop(held);
    }

    #[test]
    fn request_timeouts_are_clamped_to_the_deadline() {
        let remaining = Duration::from_secs(5);
        let options = clamp_options(
            Some(RequestOptions {
                connect_timeout: Some(Duration::from_secs(1)),
                first_byte_timeout: Some(Duration::from_secs(60)),
                between_bytes_timeout: None,
            }),
            remaining,
        );
        assert_eq!(options.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(options.first_byte_timeout, Some(remaining));
        assert_eq!(options.between_bytes_timeout, Some(remaining));
        assert_eq!(
            clamp_options(None, remaining).connect_timeout,
            Some(remaining)
        );
    }

    #[test]
    fn requests_go_out_in_origin_form() {
        let request = http::Request::builder()
            .uri("https://registry.local:5000/v2/x/blobs/uploads/?digest=sha256:1")
            .body(
                http_body_util::Empty::new()
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
        let request = into_origin_form(request);
        assert_eq!(
            request.uri().to_string(),
            "/v2/x/blobs/uploads/?digest=sha256:1"
        );
    }

    #[tokio::test]
    async fn credentials_in_the_clear_to_a_remote_host_are_recorded() {
        let (hooks, incidents) = hooks("http://registry.example", true, Limits::default());
        let origin = Origin::parse("http://registry.example").unwrap();
        let with_auth = |uri: &str, auth: bool| {
            let mut request = http::Request::builder().uri(uri);
            if auth {
                request = request.header(AUTHORIZATION, "Basic dTpw");
            }
            let body = http_body_util::Empty::new().map_err(|e| match e {});
            request.body(body.boxed_unsync()).unwrap()
        };
        // Documentation addresses (RFC 5737): nothing is sent, only the decision is made.
        let remote: SocketAddr = "192.0.2.10:80".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:80".parse().unwrap();

        hooks.client.warn_if_insecure(
            &origin,
            &with_auth("http://registry.example/", false),
            remote,
        );
        hooks.client.warn_if_insecure(
            &origin,
            &with_auth("http://registry.example/", true),
            loopback,
        );
        let https = Origin::parse("https://registry.example").unwrap();
        hooks.client.warn_if_insecure(
            &https,
            &with_auth("https://registry.example/", true),
            remote,
        );
        assert!(incidents.snapshot().insecure_transport.is_empty());

        hooks.client.warn_if_insecure(
            &origin,
            &with_auth("http://registry.example/", true),
            remote,
        );
        let warnings = incidents.snapshot().insecure_transport;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("http://registry.example") && warnings[0].contains("192.0.2.10"),
            "{warnings:?}"
        );
        assert!(!warnings[0].contains("dTpw"), "{warnings:?}");
    }

    #[test]
    fn authorities_bracket_ipv6_hosts() {
        let origin = Origin::parse("https://[::1]:8443").unwrap();
        assert_eq!(authority(&origin), "[::1]:8443");
        let origin = Origin::parse("https://registry.local").unwrap();
        assert_eq!(authority(&origin), "registry.local:443");
    }
}
