//! # mesh-dht
//!
//! mesh's Kademlia DHT on libp2p, with validated, versioned, signed records.
//!
//! ## Bird's-eye view
//!
//! A node is one libp2p `Swarm` driven by one event-loop task; [`Dht`] is
//! the cloneable handle to it. Handles send commands over a bounded channel,
//! each with a oneshot for the answer; the loop ends when every handle is
//! dropped or [`Dht::shutdown`] is called.
//!
//! The swarm composes:
//! - **kad** (`/mesh/<subnet_id>/kad/1.0.0`): the routing table, the join and
//!   refresh. A node joins with one lookup of its own PeerId: it learns its
//!   neighbourhood and the peers on the way there, and they learn it. The
//!   farther buckets are refreshed at every `refresh_period` (kad's
//!   bootstrap: one lookup per bucket). Joining with a whole bootstrap, as
//!   kad does by default, made every join contact about ten times more peers
//!   (each a Noise handshake), which is what stopped a 1,000-node network
//!   from starting on two cores. Peers enter our buckets only after identify shows they serve
//!   the subnet's kad protocol, so client-mode nodes never appear there.
//!   Records that arrive through kad's own `PUT_VALUE` are filtered
//!   (`StoreInserts::FilterBoth`) through the same validators and merge rules
//!   as everything else, and kad's `GET_VALUE` reads our store.
//! - **the record protocol** (`/mesh/<subnet_id>/records/1.0.0`): stores and
//!   reads. kad answers every `PUT_VALUE` before the application has looked
//!   at it, so a writer cannot learn whether a replica accepted the record or
//!   why it refused; this protocol answers each store with accepted or the
//!   refusal and its reason, and each read with the key's whole dictionary.
//!   A lookup asks the `replicas` closest peers it knows, and keeps asking
//!   closer peers they name until the closest have all answered.
//! - **gossipsub** ([`Pubsub`], from [`Dht::pubsub`]): the subnet's topics
//!   (`/mesh/<subnet_id>/<topic>`), signed messages with content-hash ids,
//!   each checked before it is forwarded or delivered: the forwarder's rate
//!   limit, the author's stake, the subnet's validators.
//! - **identify**, **ping**, and connection limits; TCP, QUIC and an
//!   in-process memory transport, with Noise and Yamux.
//!
//! One admission policy serves every gate (routing-table inserts, every
//! store path, pubsub): a stake verdict per peer, refreshed in the
//! background, kept through oracle outages for a grace period, with one
//! oracle query per peer in flight and bounded queues. The repository's
//! `docs/architecture.md` follows a store, a get, a pubsub message and an RPC
//! call through the code.
//!
//! Every record is checked by a [`mesh_core::CompositeValidator`] on the way
//! in (`Put`) and out (`Get`); by default it holds a
//! [`mesh_core::validator::SignatureValidator`] with the node's key, so
//! records whose key or subkey carries this node's owner marker are signed
//! automatically and nobody else can overwrite them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_dht::DhtError> {
//! use std::time::Duration;
//! use mesh_core::{Expiration, KeyType, PeerKey};
//! use mesh_dht::{Dht, DhtConfig};
//!
//! let mut config = DhtConfig::new(PeerKey::generate(KeyType::Ed25519)?);
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
//! let dht = Dht::start(config).await?;
//! let report = dht
//!     .store(b"hello".to_vec(), None, b"world".to_vec(), Expiration::in_(Duration::from_secs(60)))
//!     .await?;
//! println!("{} replicas accepted", report.accepted);
//! let value = dht.get(b"hello".to_vec(), true).await?;
//! # Ok(()) }
//! ```

mod admission;
mod codec;
mod config;
mod guard;
mod kad_store;
mod lookup;
mod metrics;
mod node;
mod persist;
pub mod pubsub;
pub mod reach;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use admission::BanPolicy;
pub use config::DhtConfig;
pub use guard::{InboundLimits, MemoryLimit};
pub use libp2p::{Multiaddr, PeerId};
pub use mesh_core::{RateLimit, StakeGate};
pub use node::{Dht, DhtStats, RefusalKind, RemoteRefusal, StoreReport};
pub use pubsub::{
    MessageId, MessageValidator, Pubsub, PubsubConfig, PubsubError, PubsubMessage, Subscription,
    Topic, Verdict,
};
pub use reach::{NatStatus, PeerConnection, ReachConfig, Reachability, RelayLimits};

/// Errors of the DHT.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// None of the initial peers could be reached.
    #[error("none of the {} initial peers answered within {timeout_s:.0} s: {}", tried.len(), tried.iter().map(|(a, e)| format!("{a} ({e})")).collect::<Vec<_>>().join(", "))]
    NoInitialPeerAnswered {
        /// Each initial peer with why it failed.
        tried: Vec<(Multiaddr, String)>,
        /// How long we waited.
        timeout_s: f64,
    },
    /// An initial peer's address is unusable.
    #[error("initial peer {addr}: {reason}")]
    BadInitialPeer {
        /// The address given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Building the transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// Our own validators refused the record before it was sent.
    #[error("record refused locally: {0}")]
    Invalid(#[from] mesh_core::ValidationError),
    /// Key handling failed.
    #[error(transparent)]
    Key(#[from] mesh_core::KeyError),
    /// A peer could not be found or dialed.
    #[error("cannot reach peer {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The persistent store failed.
    #[error("persistent store: {0}")]
    Persistence(String),
    /// The node has shut down.
    #[error("the DHT node has stopped")]
    Stopped,
}
