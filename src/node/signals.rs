//! Process signals a node answers: Ctrl-C and SIGTERM stop it gracefully.
//! (SIGHUP, the TLS reload, is handled by the node's own task.)

/// Resolves on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Registered now, not when first polled: a signal that arrives while
    // the node is still starting must stop it gracefully, not kill it.
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(int.take()) => {}
            _ = wait(term.take()) => {}
        }
    }
}
