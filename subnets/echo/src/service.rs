//! The echo service (`proto/echo.proto`): `Say` echoes a text with the
//! caller's PeerId, `Count` streams numbers. Framework tests, benchmarks and
//! the docs call it.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Response, Status};

/// Generated messages, client and server of `mesh.echo`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("mesh.echo");
}

use proto::{CountReply, CountRequest, SayReply, SayRequest};

/// Echoes text with the caller's PeerId; counts on a server stream.
#[derive(Debug, Default, Clone)]
pub struct EchoService {
    cancelled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl EchoService {
    /// Count streams whose caller went away before the end (clones share it).
    pub fn cancelled_streams(&self) -> usize {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Calls answered so far (clones share it).
    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tonic::async_trait]
impl proto::echo_server::Echo for EchoService {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let caller = mesh_server::caller(&request)
            .map(|p| p.to_base58())
            .ok_or_else(|| Status::unauthenticated("no caller identity"))?;
        let SayRequest { text, delay_ms } = request.into_inner();
        if delay_ms > 60_000 {
            return Err(Status::invalid_argument("delay_ms is at most 60,000"));
        }
        // When the caller's deadline passes or it goes away, tonic drops this
        // future: the sleep ends with it.
        tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
        self.served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(SayReply { text, caller }))
    }

    type CountStream = Pin<Box<dyn Stream<Item = Result<CountReply, Status>> + Send>>;

    async fn count(
        &self,
        request: Request<CountRequest>,
    ) -> Result<Response<Self::CountStream>, Status> {
        let CountRequest { up_to, delay_ms } = request.into_inner();
        if up_to > 10_000 {
            return Err(Status::invalid_argument("up_to is at most 10,000"));
        }
        self.served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let cancelled = self.cancelled.clone();
        tokio::spawn(async move {
            for n in 1..=up_to {
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(delay_ms))).await;
                }
                // The caller went away (cancelled, deadline): stop counting.
                if tx.send(Ok(CountReply { n })).await.is_err() {
                    tracing::debug!(n, "count: the caller went away");
                    cancelled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream_from(rx))))
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
