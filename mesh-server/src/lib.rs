//! # mesh-server
//!
//! The node runtime's RPC layer: subnet builders define services in `.proto`
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
//! authorizers, heartbeats and (with a chain) consensus.
//!
//! Still to come (issue 3): the `Subnet` trait, the consensus loop and the
//! `mesh-server` binary.

pub mod auth;
pub mod consensus;
pub mod echo;
pub mod heartbeat;
pub mod rpc;
pub mod runtime;
pub mod signature;

pub use auth::{AuthLayer, Authorizer, RateLimitAuthorizer, RateLimits, StakeAuthorizer};
pub use heartbeat::{alive_peers, spawn_heartbeats, Heartbeat, HeartbeatError};
pub use rpc::{caller, connect, incoming, rpc_protocol, Caller, PeerIo, RpcError};
pub use runtime::{ChainHooks, Runtime, RuntimeConfig, RuntimeError, Subnet, SubnetContext};
pub use signature::{signed, SignResponsesLayer, SignatureAuthorizer, SignedChannel};
