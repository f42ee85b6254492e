//! systemd's readiness protocol (`Type=notify`): `READY=1` once listening, `RELOADING=1` and
//! `READY=1` around each reload, `STOPPING=1` when the drain begins — datagrams to
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Without the variable nothing
//! is sent; a failed send is logged at debug and never matters to serving.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` lines) to the service manager, if any.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let path = path.to_string_lossy();
        match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                socket.send_to_addr(state.as_bytes(), &address)
            }
            None => socket.send_to(state.as_bytes(), path.as_ref()),
        }
    });
    if let Err(error) = sent {
        tracing::debug!(%error, state, "sd_notify failed");
    }
}
