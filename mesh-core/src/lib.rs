//! # mesh-core
//!
//! The parts of mesh that need no network: who a node is, what a DHT record
//! is and which rules records obey.
//!
//! - [`identity`]: peer keys (Ed25519 by default, RSA-2048) in libp2p's
//!   protobuf `PrivateKey` encoding — the format go-libp2p and the Python
//!   Hypertensor mesh write — so their key files load here with the same
//!   PeerId; signing and verification of records.
//! - [`record`]: records `(key, subkey?, value, expiration)`, dictionaries,
//!   and the merge rules (strictly newer wins, expired writes refused).
//! - [`store`]: a bounded in-memory store applying those rules, with
//!   earliest-expiring eviction and per-publisher quotas.
//! - [`validator`]: signature, schema and predicate validators and their
//!   composition.
//! - [`consensus`]: what the per-epoch consensus loop needs from the chain.
//! - [`subnet`]: [`SubnetId`], a subnet's id on chain and the namespace of
//!   its protocols on the network.
//! - [`stake`]: the [`StakeOracle`] question (is this PeerId staked in a
//!   subnet with at least a class?) and its time-bounded cache.
//!
//! `mesh-core` knows nothing of libp2p swarms; `mesh-dht` puts these pieces
//! on the network.

pub mod consensus;
pub mod identity;
pub mod rate;
pub mod record;
pub mod stake;
pub mod store;
pub mod subnet;
pub mod validator;

pub use identity::{KeyError, KeyType, PeerKey};
pub use libp2p_identity::{PeerId, PublicKey};
pub use rate::{Offences, RateLimit, TokenBucket};
pub use record::{Expiration, Item, MergeRefusal, Record, StoredValue};
pub use stake::{CachedStakeOracle, NodeClass, StakeError, StakeGate, StakeOracle};
pub use store::{Refusal, Store, StoreLimits};
pub use subnet::{ParseSubnetIdError, SubnetId};
pub use validator::{CompositeValidator, Kind, RecordValidator, ValidationError};
