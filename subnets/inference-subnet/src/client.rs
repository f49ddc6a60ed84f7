//! The subnet's client: pick a server by load, stream, fail over.
//!
//! [`InferenceClient::servers`] reads the servers' heartbeats from the DHT
//! (only staked nodes can publish them in a staked subnet) and orders them
//! by load: fewest queued requests, then most free batch slots.
//! [`InferenceClient::generate`] streams from the first; when a server
//! fails — before or in the middle of the stream — it asks the next one
//! the same request and skips the tokens it already delivered, checking
//! that they are the same. Decoding is deterministic for a given request
//! (greedy, or sampled with a seed: the client fixes a random seed when the
//! caller gave none), so the caller sees one seamless stream.

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use mesh_core::{PeerKey, SubnetId};
use mesh_dht::Dht;
use mesh_server::heartbeat::{alive_peers, Heartbeat};
use mesh_server::{connect, rpc_protocol, signed};
use tonic::Status;

use crate::proto::generate_chunk::Item;
use crate::proto::inference_client::InferenceClient as RpcClient;
use crate::proto::{self, GenerateRequest};
use crate::InferenceInfo;

/// Why a generation failed on every server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No server's heartbeat is in the DHT.
    #[error("no inference server is alive in subnet {0} (no heartbeats in the DHT)")]
    NoServers(SubnetId),
    /// The DHT could not be read.
    #[error("reading the servers' heartbeats: {0}")]
    Heartbeats(#[from] mesh_server::HeartbeatError),
    /// The request itself was refused (it would be refused everywhere).
    #[error("server {peer} refused the request: {status}")]
    Refused {
        /// Who refused.
        peer: PeerId,
        /// Its answer.
        status: Status,
    },
    /// Every server failed.
    #[error("every server failed: {}", .0.iter().map(|(p, s)| format!("{p}: {s}")).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<(PeerId, Status)>),
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Generated token ids.
    pub ids: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// The final server's summary.
    pub finished: proto::Finished,
    /// The servers asked, in order; the last one finished the stream.
    pub servers: Vec<PeerId>,
}

/// Servers ordered by load: fewest queued, then most free slots (PeerId breaks ties).
pub fn by_load(mut alive: Vec<Heartbeat<InferenceInfo>>) -> Vec<Heartbeat<InferenceInfo>> {
    alive.retain(|h| !h.info.model.is_empty());
    alive.sort_by(|a, b| {
        (
            a.info.queued,
            std::cmp::Reverse(a.info.free_slots),
            a.peer_id,
        )
            .cmp(&(
                b.info.queued,
                std::cmp::Reverse(b.info.free_slots),
                b.peer_id,
            ))
    });
    alive
}

/// Calls the inference subnet from a node (usually a client-mode one).
#[derive(Clone)]
pub struct InferenceClient {
    dht: Dht,
    key: Arc<PeerKey>,
    connect_timeout: Duration,
}

impl InferenceClient {
    /// A client on `dht` (which holds `key`) for the subnet `dht` is in.
    pub fn new(dht: Dht, key: Arc<PeerKey>) -> Self {
        Self {
            dht,
            key,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The alive servers, least loaded first.
    pub async fn servers(&self) -> Result<Vec<Heartbeat<InferenceInfo>>, ClientError> {
        Ok(by_load(alive_peers::<InferenceInfo>(&self.dht).await?))
    }

    /// A signed client of one server.
    pub fn rpc(&self, peer: PeerId) -> RpcClient<mesh_server::SignedChannel> {
        let channel = connect(
            self.dht.streams(),
            peer,
            rpc_protocol(self.dht.subnet_id()),
            self.connect_timeout,
        );
        RpcClient::new(signed(channel, self.key.clone(), peer))
    }

    /// Generate on the least-loaded server, failing over to the next ones;
    /// `on_token` sees every token once, in order.
    pub async fn generate(
        &self,
        request: GenerateRequest,
        on_token: impl FnMut(&proto::Token),
    ) -> Result<Outcome, ClientError> {
        self.generate_on(None, request, on_token).await
    }

    /// [`generate`](Self::generate) on the servers of `model` only (any
    /// server with `None`): a subnet may serve several models, and failing
    /// over to another model would change the answer.
    pub async fn generate_on(
        &self,
        model: Option<&str>,
        mut request: GenerateRequest,
        mut on_token: impl FnMut(&proto::Token),
    ) -> Result<Outcome, ClientError> {
        let mut servers = self.servers().await?;
        if let Some(model) = model {
            servers.retain(|s| s.info.model == model);
        }
        if servers.is_empty() {
            return Err(ClientError::NoServers(self.dht.subnet_id()));
        }
        if request.temperature > 0.0 && request.seed == 0 {
            // A fixed seed makes another server's stream the same stream.
            request.seed = rand::random::<u64>() | 1;
        }
        let mut delivered: Vec<proto::Token> = Vec::new();
        let mut failures = Vec::new();
        let mut asked = Vec::new();
        for server in servers {
            let peer = server.peer_id;
            asked.push(peer);
            match self
                .stream_from(peer, request.clone(), &mut delivered, &mut on_token)
                .await
            {
                Ok(finished) => {
                    return Ok(Outcome {
                        ids: delivered.iter().map(|t| t.id).collect(),
                        text: delivered.iter().map(|t| t.text.as_str()).collect(),
                        finished,
                        servers: asked,
                    })
                }
                Err(status) if is_request_error(&status) => {
                    return Err(ClientError::Refused { peer, status })
                }
                Err(status) => {
                    tracing::warn!(%peer, delivered = delivered.len(), "server failed, trying the next: {status}");
                    failures.push((peer, status));
                }
            }
        }
        Err(ClientError::AllFailed(failures))
    }

    /// One server's stream: tokens beyond `delivered` are delivered; the
    /// ones before must match.
    async fn stream_from(
        &self,
        peer: PeerId,
        request: GenerateRequest,
        delivered: &mut Vec<proto::Token>,
        on_token: &mut impl FnMut(&proto::Token),
    ) -> Result<proto::Finished, Status> {
        let mut stream = self.rpc(peer).generate(request).await?.into_inner();
        let mut index = 0;
        loop {
            let Some(chunk) = stream.message().await? else {
                return Err(Status::unavailable("the stream ended without a summary"));
            };
            match chunk.item {
                Some(Item::Token(token)) => {
                    match delivered.get(index) {
                        Some(seen) if seen.id == token.id => {}
                        Some(seen) => {
                            return Err(Status::data_loss(format!(
                                "token {index} differs from the previous server's ({} vs {})",
                                token.id, seen.id
                            )))
                        }
                        None => {
                            on_token(&token);
                            delivered.push(token);
                        }
                    }
                    index += 1;
                }
                Some(Item::Done(finished)) => return Ok(finished),
                None => return Err(Status::internal("an empty chunk")),
            }
        }
    }
}

/// Statuses that another server would answer the same way.
fn is_request_error(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::Expiration;

    fn beat(queued: usize, free_slots: usize, model: &str) -> Heartbeat<InferenceInfo> {
        Heartbeat {
            peer_id: PeerId::random(),
            info: InferenceInfo {
                model: model.into(),
                backend: "cpu".into(),
                max_batch: 8,
                free_slots,
                queued,
                embeddings: false,
                version: "0".into(),
            },
            expiration: Expiration::in_(Duration::from_secs(60)),
        }
    }

    #[test]
    fn servers_are_ordered_by_queue_then_free_slots() {
        let busy = beat(3, 0, "m");
        let idle = beat(0, 8, "m");
        let half = beat(0, 4, "m");
        let none = beat(0, 8, "");
        let order: Vec<PeerId> = by_load(vec![busy.clone(), half.clone(), none, idle.clone()])
            .into_iter()
            .map(|h| h.peer_id)
            .collect();
        assert_eq!(order, vec![idle.peer_id, half.peer_id, busy.peer_id]);
    }
}
