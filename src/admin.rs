//! The admin listener (`[admin] address`): plain HTTP, meant for loopback or a private network.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once listening and not draining; 503 otherwise |
//! | `GET /metrics` | metrics in the Prometheus / OpenMetrics text format (see [`crate::metrics`]) |
//! | `POST /reload` | reloads the config like SIGHUP; loopback peers only (403 otherwise); 200 or 500 with the error |
//!
//! The listener can never starve the proxy: at most [`MAX_CONNECTIONS`] are served at once
//! (beyond that, accepting waits and new peers queue in the kernel backlog, holding no
//! descriptor of ours), a request head must arrive within [`HEADER_TIMEOUT`] (the same bound
//! applies while a kept-alive connection waits for its next request), a connection lives at
//! most [`MAX_LIFETIME`], and a failed accept (EMFILE) backs off instead of spinning.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::proxy::Live;
use crate::reload::Reloader;

/// Admin connections served at once: probes and scrapes need a handful.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// A request head (the first, or the next on a kept-alive connection) must arrive within this.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one admin connection.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// Serves the admin endpoints until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
) {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "admin listening");
    }
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("the admin semaphore is never closed"),
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(crate::proxy::ACCEPT_BACKOFF) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            },
            () = shutdown.cancelled() => return,
        };
        let live = live.clone();
        let reloader = reloader.clone();
        let connection = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |request| {
                let live = live.clone();
                let reloader = reloader.clone();
                async move { Ok::<_, Infallible>(route(request, peer, &live, reloader).await) }
            }),
        );
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(MAX_LIFETIME, connection).await {
                Ok(Err(error)) => debug!(%peer, %error, "admin connection ended with an error"),
                Err(_) => debug!(%peer, "admin connection reached its maximum lifetime"),
                Ok(Ok(())) => {}
            }
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
