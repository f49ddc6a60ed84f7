//! A raw libp2p peer for adversarial tests: sends arbitrary bytes on the
//! record protocol and kad PUT_VALUEs, bypassing every local check.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use mesh_proto::dht as pb;
use prost::Message;

#[derive(Clone, Default)]
pub struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.take(4 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
pub struct RawBehaviour {
    rr: request_response::Behaviour<RawCodec>,
    kad: kad::Behaviour<MemoryStore>,
}

pub struct RawPeer {
    swarm: Swarm<RawBehaviour>,
}

/// Frames a protobuf request the way the record protocol does.
pub fn frame(req: &pb::Request) -> Vec<u8> {
    let body = req.encode_to_vec();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

pub fn unframe(bytes: &[u8]) -> pb::Response {
    assert!(bytes.len() >= 4, "short response: {bytes:?}");
    pb::Response::decode(&bytes[4..]).expect("a well-formed response")
}

impl RawPeer {
    pub fn new(subnet: mesh_core::SubnetId) -> Self {
        let records = StreamProtocol::try_from_owned(subnet.protocol("records/1.0.0")).unwrap();
        let kad_proto = StreamProtocol::try_from_owned(subnet.protocol("kad/1.0.0")).unwrap();
        let swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|key| {
                let mut kad = kad::Behaviour::with_config(
                    key.public().to_peer_id(),
                    MemoryStore::new(key.public().to_peer_id()),
                    kad::Config::new(kad_proto),
                );
                kad.set_mode(Some(kad::Mode::Client));
                RawBehaviour {
                    rr: request_response::Behaviour::with_codec(
                        RawCodec,
                        [(records, ProtocolSupport::Outbound)],
                        request_response::Config::default()
                            .with_request_timeout(Duration::from_secs(5)),
                    ),
                    kad,
                }
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build();
        Self { swarm }
    }

    /// Sends raw bytes; returns the raw answer, or the failure as text.
    pub async fn send(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let id =
            self.swarm
                .behaviour_mut()
                .rr
                .send_request_with_addresses(&peer, bytes, vec![addr]);
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return Err("no answer in 10 s".into()),
                ev = self.swarm.select_next_some() => match ev {
                    SwarmEvent::Behaviour(RawBehaviourEvent::Rr(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response }, ..
                    })) if request_id == id => return Ok(response),
                    SwarmEvent::Behaviour(RawBehaviourEvent::Rr(request_response::Event::OutboundFailure {
                        request_id, error, ..
                    })) if request_id == id => return Err(error.to_string()),
                    _ => {}
                }
            }
        }
    }

    /// Sends a protobuf request and decodes the answer.
    pub async fn request(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        req: pb::Request,
    ) -> pb::Response {
        let raw = self
            .send(peer, addr, frame(&req))
            .await
            .expect("the node answers");
        unframe(&raw)
    }

    /// Sends a kad PUT_VALUE of `value` under `key` straight to `peer`.
    pub async fn kad_put(&mut self, peer: PeerId, addr: Multiaddr, key: &[u8], value: Vec<u8>) {
        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        let record = kad::Record::new(key.to_vec(), value);
        let id = self.swarm.behaviour_mut().kad.put_record_to(
            record,
            std::iter::once(peer),
            kad::Quorum::One,
        );
        self.finish_query(id, "kad put").await;
    }

    /// Announces this peer as a provider of `key` through kad's
    /// ADD_PROVIDER (to `peer` and whoever it names as closer).
    pub async fn kad_add_provider(&mut self, peer: PeerId, addr: Multiaddr, key: &[u8]) {
        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(kad::RecordKey::new(&key))
            .expect("the local provider store has room");
        self.finish_query(id, "kad ADD_PROVIDER").await;
    }

    /// Providers of `key` that `peer` (and the peers it names) report,
    /// this peer left out.
    pub async fn kad_get_providers(&mut self, peer: PeerId, addr: Multiaddr, key: &[u8]) -> usize {
        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        let local = *self.swarm.local_peer_id();
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(kad::RecordKey::new(&key));
        let mut found = std::collections::HashSet::new();
        self.drive_query(id, "kad GET_PROVIDERS", |result| {
            if let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                providers,
                ..
            })) = result
            {
                found.extend(providers.into_iter().filter(|p| *p != local));
            }
        })
        .await;
        found.len()
    }

    async fn finish_query(&mut self, id: kad::QueryId, what: &str) {
        self.drive_query(id, what, |_| {}).await;
    }

    /// Runs the swarm until query `id` reports its last step, handing each
    /// of its results to `on_result`; panics after 10 s.
    async fn drive_query(
        &mut self,
        id: kad::QueryId,
        what: &str,
        mut on_result: impl FnMut(kad::QueryResult),
    ) {
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => panic!("{what} did not finish"),
                ev = self.swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(RawBehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id: qid, result, step, .. })) = ev {
                        if qid == id {
                            on_result(result);
                            if step.last {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}
