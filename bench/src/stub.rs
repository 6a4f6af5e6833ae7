//! A registry stub that answers the push probe at once: basic authentication, an upload session
//! opened with `202` and a `Location`, cancelled with `204`.
//!
//! It stands for a registry whose own work costs nothing, so that what is left is the cost of
//! the client: the host with its component, or the native probe.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A running stub; it serves until the process ends.
pub struct Stub {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Stub {
    /// Starts the stub on its own thread, accepting `user` with `password`.
    pub fn start(user: &str, password: &str) -> anyhow::Result<Stub> {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address: SocketAddr = listener.local_addr()?;
        std::thread::Builder::new()
            .name("registry-stub".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the stub");
                runtime.block_on(serve(listener, expected));
            })?;
        Ok(Stub {
            url: format!("http://{address}"),
        })
    }
}

async fn serve(listener: std::net::TcpListener, expected: String) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    let expected: &'static str = Box::leak(expected.into_boxed_str());
    let sessions: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| async move {
                Ok::<_, Infallible>(answer(request, expected, sessions).await)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    expected: &str,
    sessions: &AtomicU64,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let _ = body.collect().await;
    let authorized = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == expected.as_bytes());
    if !authorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"doctor-bench-stub\"")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )))
            .expect("a valid response");
    }

    let path = parts.uri.path();
    let reply = Response::builder().header("docker-distribution-api-version", "registry/2.0");
    let reply = match (&parts.method, path) {
        (&Method::POST, path) if path.ends_with("/blobs/uploads/") => {
            let id = sessions.fetch_add(1, Ordering::Relaxed);
            reply
                .status(StatusCode::ACCEPTED)
                .header("location", format!("{path}{id:032x}"))
                .header("docker-upload-uuid", format!("{id:032x}"))
                .header("range", "0-0")
        }
        (&Method::DELETE, path) if path.contains("/blobs/uploads/") => {
            reply.status(StatusCode::NO_CONTENT)
        }
        (&Method::GET, "/v2/") => reply.status(StatusCode::OK),
        _ => reply.status(StatusCode::NOT_FOUND),
    };
    reply
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}
