//! `native-probe`: the push check's probe (`oci-probe`, the crate the component is built from)
//! compiled natively, with a plain-HTTP transport. The bench's reference for what the check costs
//! without WebAssembly.
//!
//! ```text
//! native-probe                 run the check once, print the result as JSON; exit 1 unless it passes
//! native-probe --serve ADDR    answer `POST /run` with one run each, as `stella-doctor serve` does
//! ```
//!
//! Configuration comes from the environment the way the host reads it: `OCI:Username` is
//! `OCI__Username`.

use std::convert::Infallible;
use std::process::ExitCode;

use doctor_bench::native::NativeTransport;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use oci_probe::model::{CheckResult, Severity};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let result = run_once();
            println!("{}", serde_json::to_string(&result).unwrap_or_default());
            if result.severity == Severity::Pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        [flag, address] if flag == "--serve" => match serve(address) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("usage: native-probe [--serve ADDR]");
            ExitCode::from(2)
        }
    }
}

/// One run of the check, configured from the environment.
fn run_once() -> CheckResult {
    let lookup = |key: &str| std::env::var(key.replace(':', "__")).ok();
    oci_probe::check::run(lookup, NativeTransport::new)
}

fn serve(address: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address).await?;
        println!("native-probe serving on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    service_fn(|request| async move { Ok::<_, Infallible>(answer(request).await) });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let _ = body.collect().await;
    if parts.method != Method::POST || parts.uri.path() != "/run" {
        return reply(StatusCode::NOT_FOUND, b"{\"error\":\"POST /run\"}".to_vec());
    }
    // The probe blocks on its socket, as the component blocks on `wasi:http`; the host runs the
    // component on an async executor, and this runs the probe beside one.
    match tokio::task::spawn_blocking(run_once).await {
        Ok(result) => reply(
            StatusCode::OK,
            serde_json::to_vec(&result).unwrap_or_default(),
        ),
        Err(err) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\":\"{err}\"}}").into_bytes(),
        ),
    }
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
