//! `originguard demo`: the embedded default. A throwaway PKI in a temp dir, a built-in echo
//! backend on 127.0.0.1, and the proxy in front of it, with the `curl` lines to try.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::app;
use crate::tools::pki;

/// Runs the demo until Ctrl-C / SIGTERM.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let shutdown = crate::signal::shutdown();
    // Removed on drop: the demo's PKI lives only as long as the demo (private to this user).
    let dir = tempfile::Builder::new()
        .prefix("originguard-demo-")
        .tempdir()
        .context("cannot create the demo's temporary directory")?;
    pki::write_dev(dir.path(), 365, false)?;

    let backend = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the echo backend")?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(echo_backend(backend));

    let d = dir.path().display();
    let toml = format!(
        r#"
[listener]
address = "{listen}"
[tls]
certificate = "{d}/server.pem"
private_key = "{d}/server.key"
[client_auth]
trust = ["{d}/ca.pem"]
[upstream]
url = "http://{backend_addr}"
[log]
access_log = true
"#
    );
    let config_path = dir.path().join("originguard.toml");
    std::fs::write(&config_path, toml)?;
    let (config, proxy) = app::load(&config_path)?;
    crate::logging::init(&config.log);

    let host = match listen {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let url = format!("https://{host}:{}/hello", listen.port());
    println!("originguard demo: mTLS proxy on {listen} -> echo backend on {backend_addr}");
    println!("throwaway PKI (deleted on exit): {d}\n");
    println!("succeeds (client certificate issued by the demo CA):");
    println!("  curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client.key {url}\n");
    println!("fails in the TLS handshake (no client certificate):");
    println!("  curl --cacert {d}/ca.pem {url}\n");
    println!("Ctrl-C to stop.");

    app::serve(config, proxy, shutdown).await
}

/// A tiny HTTP/1.1 backend that answers every request with what it received.
pub(crate) async fn echo_backend(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut text = format!(
        "hello from the originguard demo backend\n\n{} {} {:?}\n",
        request.method(),
        request.uri(),
        request.version()
    );
    for (name, value) in request.headers() {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    Ok(Response::new(Full::new(Bytes::from(text))))
}
