//! A `wasi:http/proxy` host for the edge component, built from the same
//! pieces `wasmtime serve` uses: wasmtime-wasi for the CLI interfaces,
//! wasmtime-wasi-http's proxy bindings and default outbound client, and
//! wasmtime-wasi-config for `wasi:config/store` (`-S config`). It serves
//! HTTP/1.1 on a free loopback port, one fresh instance per request, and a
//! tiny blocking client talks to it over a real socket.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::guests;

/// The edge component compiled once per test process; compiling it costs
/// seconds and every test serves the same bytes.
pub fn compiled() -> &'static (Engine, Component) {
    static COMPILED: OnceLock<(Engine, Component)> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let engine = Engine::default();
        let path = guests::component("oci-push-edge");
        let component = Component::from_file(&engine, &path)
            .unwrap_or_else(|e| panic!("compile {}: {e:?}", path.display()));
        (engine, component)
    })
}

/// Per-request store data: what `wasmtime serve -S cli -S config` gives a
/// component, with no environment, no preopened directories and stderr
/// passed through so the guest's warnings show in the test output.
struct EdgeState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    config: Arc<WasiConfigVariables>,
}

impl WasiView for EdgeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for EdgeState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            // The default outbound client, as `wasmtime serve` applies no
            // policy of its own.
            hooks: Default::default(),
        }
    }
}

/// The edge component served on `http://127.0.0.1:PORT`; stops on drop.
pub struct EdgeServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    // Dropping the runtime cancels the accept loop and every connection.
    _runtime: Runtime,
}

impl EdgeServer {
    /// Serves the edge component with these `wasi:config/store` variables
    /// (platform names, e.g. `oci_registry_url`).
    pub fn start(variables: &[(&str, &str)]) -> EdgeServer {
        let (engine, component) = compiled();
        let pre = proxy_pre(engine, component).expect("the edge component links as a proxy");
        let config = Arc::new(WasiConfigVariables::from_iter(variables.iter().copied()));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        runtime.spawn(serve(listener, pre, config));

        EdgeServer {
            addr,
            _runtime: runtime,
        }
    }

    /// Sends `METHOD PATH` and waits for the whole answer.
    pub fn request(&self, method: &str, path: &str) -> EdgeResponse {
        send(self.addr, method, path).unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }
}

/// The linker `wasmtime serve -S cli -S config` builds, pre-instantiated.
fn proxy_pre(engine: &Engine, component: &Component) -> anyhow::Result<ProxyPre<EdgeState>> {
    let mut linker = Linker::<EdgeState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    wasmtime_wasi_config::add_to_linker(&mut linker, |state: &mut EdgeState| {
        WasiConfig::from(&*state.config)
    })?;
    Ok(ProxyPre::new(linker.instantiate_pre(component)?)?)
}

async fn serve(listener: TcpListener, pre: ProxyPre<EdgeState>, config: Arc<WasiConfigVariables>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (pre, config) = (pre.clone(), config.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(pre.clone(), config.clone(), request));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("edge proxy: connection failed: {error:?}");
            }
        });
    }
}

/// One request, one fresh store and instance, as `wasmtime serve` does.
async fn handle(
    pre: ProxyPre<EdgeState>,
    config: Arc<WasiConfigVariables>,
    request: hyper::Request<hyper::body::Incoming>,
) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
    let state = EdgeState {
        table: ResourceTable::new(),
        wasi: WasiCtx::builder().inherit_stderr().build(),
        http: WasiHttpCtx::new(),
        config,
    };
    let mut store = Store::new(pre.engine(), state);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;

    // The guest may keep writing the body after it sets the response, so it
    // runs in its own task while the headers go back.
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, out)
            .await
    });
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => bail!("the edge component answered with error code {code:?}"),
        Err(_) => {
            if let Err(error) = task.await.context("the guest task panicked")? {
                let error = anyhow::Error::from(error);
                return Err(error.context("the guest trapped before setting a response"));
            }
            bail!("the guest returned without setting a response")
        }
    }
}

/// What came back over the socket.
#[derive(Debug)]
pub struct EdgeResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl EdgeResponse {
    /// The body parsed as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}):\n{}", self.body))
    }
}

/// A blocking HTTP/1.1 client for one request: `Connection: close`, and the
/// body read to the end (de-chunked when the server streams it).
fn send(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<EdgeResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;

    let end_of_head = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("the answer has no end of headers")?;
    let head = std::str::from_utf8(&raw[..end_of_head]).context("headers are not UTF-8")?;
    let mut lines = head.lines();
    let status_line = lines.next().context("empty answer")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_string()))
        .collect();

    let body = &raw[end_of_head + 4..];
    let body = match headers.get("transfer-encoding").map(String::as_str) {
        Some("chunked") => dechunk(body)?,
        _ => body.to_vec(),
    };
    Ok(EdgeResponse {
        status,
        headers,
        body: String::from_utf8(body).context("the body is not UTF-8")?,
    })
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .context("chunk size line")?;
        let size = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        let chunk_start = line_end + 2;
        let chunk = rest
            .get(chunk_start..chunk_start + size)
            .context("chunk shorter than its size")?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(chunk_start + size + 2..)
            .context("chunk without its line end")?;
    }
}
