//! Process signals as futures.

use std::future::Future;

use tracing::info;

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is *called*
/// (not first polled), so a signal that arrives right after startup is never missed. Must be
/// called inside a tokio runtime.
pub fn shutdown() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        if let (Ok(mut terminate), Ok(mut interrupt)) = (terminate, interrupt) {
            tokio::select! {
                _ = terminate.recv() => info!("SIGTERM received"),
                _ = interrupt.recv() => info!("SIGINT received"),
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
        info!("SIGINT received");
    }
}

/// A stream of SIGHUPs (reload requests), registered now; `None` where there are no signals.
#[cfg(unix)]
pub(crate) fn hangups() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
pub(crate) fn hangups() -> Option<NeverSignal> {
    None
}

#[cfg(not(unix))]
pub(crate) struct NeverSignal;

#[cfg(not(unix))]
impl NeverSignal {
    pub(crate) async fn recv(&mut self) -> Option<()> {
        std::future::pending().await
    }
}
