//! `/metrics` of the daemons, on the gateway's HTTP stack (axum).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The endpoint [`serve_metrics`] started: it serves until
/// [`shutdown`](Self::shutdown) or until it is dropped.
#[must_use = "the endpoint stops when this is dropped"]
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes open requests, and waits.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `registry` as Prometheus text on `http://<addr>/metrics` until the
/// returned [`MetricsServer`] is shut down or dropped.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Mutex<Registry>>,
) -> std::io::Result<MetricsServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let router = mesh_gateway::metrics_router(registry);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!("the metrics endpoint stopped: {e}");
        }
    });
    Ok(MetricsServer {
        addr: bound,
        cancel,
        task: Some(task),
    })
}
