//! The admin listener (`[admin] address`): plain HTTP, meant for loopback or a private network.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once listening and not draining; 503 otherwise |
//! | `GET /metrics` | metrics in the Prometheus / OpenMetrics text format (see [`crate::metrics`]) |
//! | `POST /reload` | reloads the config like SIGHUP; loopback peers only (403 otherwise); 200 or 500 with the error |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::proxy::Live;
use crate::reload::Reloader;

/// Serves the admin endpoints until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, live: Arc<Live>, reloader: Arc<Reloader>, shutdown: CancellationToken) {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "admin listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "admin accept failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let live = live.clone();
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let live = live.clone();
                let reloader = reloader.clone();
                async move { Ok::<_, Infallible>(route(request, peer, &live, reloader).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(
    request: Request<Incoming>,
    peer: SocketAddr,
    live: &Live,
    reloader: Arc<Reloader>,
) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") => match live.ready.load(Ordering::Acquire) {
            true => text(StatusCode::OK, "ready\n".into()),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        },
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(live.metrics.encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        (&Method::POST, "/reload") if !peer.ip().is_loopback() => {
            text(StatusCode::FORBIDDEN, "reload is allowed from loopback only\n".into())
        }
        (&Method::POST, "/reload") => match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(fixed)) if fixed.is_empty() => text(StatusCode::OK, "reloaded\n".into()),
            Ok(Ok(fixed)) => text(
                StatusCode::OK,
                format!("reloaded; not applied until restart: {}\n", fixed.join(", ")),
            ),
            Ok(Err(error)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("reload failed: {error}\n")),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "reload failed\n".into()),
        },
        (_, "/healthz" | "/readyz" | "/metrics" | "/reload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
