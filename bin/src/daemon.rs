//! What the node daemons (`mesh-dht`, `mesh-server`, `mesh devnet`) share:
//! logging set up the same way and waiting for a stop signal.

/// Logs to stderr; `RUST_LOG` sets the filter (default `info`), `json`
/// writes JSON lines. A second call keeps the first subscriber.
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A future that ends at SIGINT (Ctrl-C) or, on Unix, SIGTERM. The handlers
/// are installed when this is called, not when the future is first polled:
/// call it before telling anyone the daemon is ready, so a signal sent right
/// after that is never met by the default action (killing the process).
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        Ok(async move {
            let _ = ctrl_c.await;
        })
    }
}
