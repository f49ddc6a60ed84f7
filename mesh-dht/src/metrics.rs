//! Prometheus metrics of a node and a minimal `/metrics` HTTP endpoint.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Labels = Vec<(&'static str, String)>;

/// The node's own metrics (libp2p's are registered beside them).
pub(crate) struct NodeMetrics {
    pub(crate) libp2p: libp2p::metrics::Metrics,
    /// Inbound record-protocol requests by kind (`store`, `find`).
    pub(crate) inbound_requests: Family<Labels, Counter>,
    /// Outcome of every record offered to the local store, by result.
    pub(crate) store_results: Family<Labels, Counter>,
    /// Inbound requests refused before handling, by reason.
    pub(crate) refused_requests: Family<Labels, Counter>,
    /// Peers blocked for refused input (each block counts once).
    pub(crate) peers_blocked: Counter,
    pub(crate) routing_table_peers: Gauge,
    pub(crate) stored_entries: Gauge,
    pub(crate) stored_keys: Gauge,
}

impl NodeMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let libp2p = libp2p::metrics::Metrics::new(registry);
        let sub = registry.sub_registry_with_prefix("mesh_dht");
        let m = Self {
            libp2p,
            inbound_requests: Family::default(),
            store_results: Family::default(),
            refused_requests: Family::default(),
            peers_blocked: Counter::default(),
            routing_table_peers: Gauge::default(),
            stored_entries: Gauge::default(),
            stored_keys: Gauge::default(),
        };
        sub.register(
            "inbound_requests",
            "Inbound record requests by kind",
            m.inbound_requests.clone(),
        );
        sub.register(
            "store_results",
            "Records offered to the local store, by result",
            m.store_results.clone(),
        );
        sub.register(
            "refused_requests",
            "Inbound requests refused before handling, by reason",
            m.refused_requests.clone(),
        );
        sub.register(
            "peers_blocked",
            "Peers blocked for sending too much refused input",
            m.peers_blocked.clone(),
        );
        sub.register(
            "routing_table_peers",
            "Peers in the routing table",
            m.routing_table_peers.clone(),
        );
        sub.register(
            "stored_entries",
            "Entries (values and subkeys) in the local store",
            m.stored_entries.clone(),
        );
        sub.register(
            "stored_keys",
            "Keys in the local store",
            m.stored_keys.clone(),
        );
        m
    }

    pub(crate) fn count(family: &Family<Labels, Counter>, label: &'static str, value: &str) {
        family
            .get_or_create(&vec![(label, value.to_string())])
            .inc();
    }
}

/// The HTTP endpoint [`serve_metrics`] started: it serves until
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

    /// Stops accepting and waits for the accept loop to end.
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
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let read =
                    tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf));
                let Ok(Ok(n)) = read.await else {
                    return;
                };
                let req = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if req.starts_with("GET /metrics") {
                    let mut body = String::new();
                    let r = registry.lock().expect("metrics registry lock");
                    let _ = encode(&mut body, &r);
                    ("200 OK", body)
                } else {
                    ("404 Not Found", "only /metrics is served\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(MetricsServer {
        addr: bound,
        cancel,
        task: Some(task),
    })
}
