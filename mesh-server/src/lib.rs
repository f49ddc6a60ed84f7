//! # mesh-server
//!
//! The node runtime: everything a subnet node runs besides its application.
//! Subnet builders define services in `.proto`
//! files, implement them as tonic services, and call them on other peers by
//! PeerId. Calls travel over libp2p streams on `/mesh/<subnet_id>/rpc/1`
//! (Noise-authenticated, multiplexed by Yamux on the node's one swarm); each
//! stream carries one HTTP/2 connection, so unary and streaming calls,
//! deadlines and cancellation are tonic's own. Handlers learn who called
//! with [`rpc::caller`].
//!
//! [`auth`] adds authorizers (stake, rate limit, signature) as a tower layer.
//!
//! [`signature`] signs requests and responses end to end (caller key,
//! timestamp, nonce, target): the `"signature"` authorizer refuses tampered,
//! replayed, stale or misdirected requests, and [`signed`] channels verify
//! that answers are the called peer's.
//!
//! [`heartbeat`] publishes and reads signed heartbeats with typed server info.
//!
//! [`consensus`] runs the per-epoch propose/attest loop over a
//! [`mesh_core::consensus::ConsensusChain`].
//!
//! [`runtime`] wires them for a [`Subnet`]: DHT, RPC server behind the
//! authorizers, heartbeats and (with a chain) consensus; RPC counters join
//! the DHT's Prometheus registry.
//!
//! The `mesh-server` binary that hosts a subnet by name lives in the
//! `mesh-cli` crate (`bin/`), above the reference subnets (`subnets/`).
//!
//! ## Writing a subnet
//!
//! A subnet is a `.proto` service implemented with tonic plus a [`Subnet`]:
//! what each node publishes in its heartbeat, and how it scores the alive
//! peers each epoch. The runtime does the rest: the DHT (stake-gated with a
//! chain), the RPC server behind the authorizers, signed heartbeats and the
//! consensus loop. `subnets/echo` is the complete reference; in short:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use mesh_core::{KeyType, PeerKey};
//! use mesh_dht::{DhtConfig, PeerId};
//! use mesh_subnet_echo::{proto::echo_server::EchoServer, EchoService};
//! use mesh_server::heartbeat::Heartbeat;
//! use mesh_server::runtime::HookFuture;
//! use mesh_server::{Runtime, RuntimeConfig, Subnet, SubnetContext};
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Info { version: String }
//!
//! struct MySubnet;
//!
//! impl Subnet for MySubnet {
//!     type Info = Info;
//!     fn routes(&self, _ctx: &SubnetContext) -> tonic::service::Routes {
//!         tonic::service::Routes::new(EchoServer::new(EchoService::default()))
//!     }
//!     fn heartbeat(&self) -> Info {
//!         Info { version: "1".into() }
//!     }
//!     fn score<'a>(&'a self, _epoch: u32, alive: &'a [Heartbeat<Info>])
//!         -> HookFuture<'a, Vec<(PeerId, u128)>> {
//!         Box::pin(async move { alive.iter().map(|h| (h.peer_id, 1)).collect() })
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut dht = DhtConfig::new(PeerKey::generate(KeyType::Ed25519)?);
//! dht.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
//! let config = RuntimeConfig {
//!     dht,                                   // set `stake_gate` for a staked subnet
//!     update_period: Duration::from_secs(30),
//!     authorizers: vec![],                   // signature, stake, rate limit
//!     chain: None,                           // `ChainHooks` to take part in consensus
//! };
//! let node = Runtime::start(config, Arc::new(MySubnet)).await?;
//! let peer: PeerId = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA".parse()?;
//! let _channel = node.context().client(peer);  // typed, signed calls to another node
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod consensus;
pub mod heartbeat;
pub mod rpc;
pub mod runtime;
pub mod signature;

pub use auth::{AuthLayer, Authorizer, RateLimitAuthorizer, RateLimits, StakeAuthorizer};
pub use heartbeat::{alive_peers, spawn_heartbeats, Heartbeat, HeartbeatError};
pub use rpc::{
    caller, connect, incoming, incoming_with_timeout, rpc_protocol, Caller, PeerIo, RpcError,
};
pub use runtime::{ChainHooks, Runtime, RuntimeConfig, RuntimeError, Subnet, SubnetContext};
pub use signature::{signed, SignResponsesLayer, SignatureAuthorizer, SignedChannel};

use std::sync::Arc;

/// The authorizers a node puts in front of its RPC, cheapest first: the
/// rate limit ([`RateLimits::default`]), then `stake` when the subnet is
/// staked (it checks the Noise-authenticated PeerId, so an unstaked caller
/// is refused before its body is buffered or its signature checked, and
/// never takes a place in the nonce cache), then the signature authorizer
/// for the server `local`.
pub fn standard_authorizers(
    local: libp2p::PeerId,
    stake: Option<StakeAuthorizer>,
) -> Vec<Arc<dyn Authorizer>> {
    let mut authorizers: Vec<Arc<dyn Authorizer>> =
        vec![Arc::new(RateLimitAuthorizer::new(RateLimits::default()))];
    if let Some(stake) = stake {
        authorizers.push(Arc::new(stake));
    }
    authorizers.push(Arc::new(SignatureAuthorizer::new(local)));
    authorizers
}
