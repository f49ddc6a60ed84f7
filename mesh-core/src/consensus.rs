//! What the per-epoch consensus loop needs from the chain (see `docs/architecture.md`, "Consensus"), as a
//! trait: `mesh-server` runs the loop, `mesh-chain` answers from the real
//! chain, and neither knows the other.

use std::future::Future;
use std::pin::Pin;

use libp2p_identity::PeerId;

use crate::stake::{NodeClass, SubnetId};

/// A subnet node id on chain.
pub type NodeId = u32;

/// One node's score in a submission (18-decimal fixed point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Score {
    /// The node scored.
    pub node_id: NodeId,
    /// Its score.
    pub score: u128,
}

/// Where the subnet's epoch clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochClock {
    /// `(block − slot) / epoch_length`.
    pub epoch: u32,
    /// Blocks since the epoch began.
    pub blocks_into_epoch: u32,
    /// Blocks per epoch.
    pub epoch_length: u32,
}

impl EpochClock {
    /// Share of the epoch gone by, `0.0..1.0`.
    pub fn progress(&self) -> f64 {
        f64::from(self.blocks_into_epoch) / f64::from(self.epoch_length.max(1))
    }
}

/// The epoch's submission as the chain holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The proposer.
    pub validator: NodeId,
    /// The scores it proposed, in its order.
    pub scores: Vec<Score>,
    /// Nodes that attested (the proposer first).
    pub attested_by: Vec<NodeId>,
}

/// A chain call that failed; the loop retries with backoff.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ChainCallError(pub String);

/// The future chain calls return.
pub type ChainFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ChainCallError>> + Send + 'a>>;

/// The chain as the consensus loop of one node (signing with its hotkey) sees it.
pub trait ConsensusChain: Send + Sync {
    /// Whether the subnet is active, and its epoch clock.
    fn clock(&self, subnet_id: SubnetId) -> ChainFuture<'_, Option<EpochClock>>;
    /// This node's id and class in the subnet, if it is registered.
    fn own_node(&self, subnet_id: SubnetId) -> ChainFuture<'_, Option<(NodeId, NodeClass)>>;
    /// The validator elected for an epoch.
    fn elected_validator(&self, subnet_id: SubnetId, epoch: u32)
        -> ChainFuture<'_, Option<NodeId>>;
    /// The node registered under a (server) PeerId, if any: how scores
    /// for peers become scores for node ids.
    fn node_of(&self, subnet_id: SubnetId, peer: PeerId) -> ChainFuture<'_, Option<NodeId>>;
    /// The epoch's submission.
    fn submission(&self, subnet_id: SubnetId, epoch: u32) -> ChainFuture<'_, Option<Submission>>;
    /// Submit this node's scores as the epoch's attestation proposal.
    fn propose(&self, subnet_id: SubnetId, scores: Vec<Score>) -> ChainFuture<'_, ()>;
    /// Attest the epoch's submission.
    fn attest(&self, subnet_id: SubnetId) -> ChainFuture<'_, ()>;
}
