//! [`ConsensusChain`] answered by the real chain, signing with the node's hotkey.

use crate::api::{self, runtime_types};
use crate::client::ChainClient;
use crate::error::{sx, ChainError};
use mesh_core::consensus::{
    ChainCallError, ChainFuture, ConsensusChain, EpochClock, NodeId, Score, Submission,
};
use mesh_core::{NodeClass, PeerId, SubnetId};
use subxt_signer::sr25519::Keypair;

/// The chain as one node's consensus loop sees it: reads, and proposals and
/// attestations signed by the node's hotkey (never the coldkey).
pub struct HotkeyChain {
    client: ChainClient,
    hotkey: Keypair,
}

impl HotkeyChain {
    /// Sign with `hotkey` on `client`.
    pub fn new(client: ChainClient, hotkey: Keypair) -> Self {
        Self { client, hotkey }
    }
}

fn call_error(e: ChainError) -> ChainCallError {
    ChainCallError(e.to_string())
}

impl ConsensusChain for HotkeyChain {
    fn clock(&self, subnet_id: SubnetId) -> ChainFuture<'_, Option<EpochClock>> {
        Box::pin(async move {
            match self.client.epoch_info(subnet_id).await {
                Ok(info) => Ok(Some(EpochClock {
                    epoch: info.epoch,
                    blocks_into_epoch: info.blocks_into_epoch,
                    epoch_length: info.epoch_length,
                })),
                Err(ChainError::NotFound(_)) => Ok(None),
                Err(e) => Err(call_error(e)),
            }
        })
    }

    fn own_node(&self, subnet_id: SubnetId) -> ChainFuture<'_, Option<(NodeId, NodeClass)>> {
        Box::pin(async move {
            let account = self.hotkey.public_key().to_account_id();
            let Some(id) = self
                .client
                .node_id_by_hotkey(subnet_id, &account)
                .await
                .map_err(call_error)?
            else {
                return Ok(None);
            };
            let node = self
                .client
                .subnet_node(subnet_id, id)
                .await
                .map_err(call_error)?;
            Ok(node.map(|n| (id, n.class)))
        })
    }

    fn elected_validator(
        &self,
        subnet_id: SubnetId,
        epoch: u32,
    ) -> ChainFuture<'_, Option<NodeId>> {
        Box::pin(async move {
            self.client
                .elected_validator(subnet_id, epoch)
                .await
                .map_err(call_error)
        })
    }

    fn node_of(&self, subnet_id: SubnetId, peer: PeerId) -> ChainFuture<'_, Option<NodeId>> {
        Box::pin(async move {
            self.client
                .node_id_by_peer(subnet_id, &peer)
                .await
                .map_err(call_error)
        })
    }

    fn submission(&self, subnet_id: SubnetId, epoch: u32) -> ChainFuture<'_, Option<Submission>> {
        Box::pin(async move {
            let at = self
                .client
                .subxt()
                .at_current_block()
                .await
                .map_err(|e| call_error(sx(e)))?;
            let Some(value) = at
                .storage()
                .try_fetch(
                    api::storage().network().subnet_consensus_submission(),
                    (subnet_id.get(), epoch),
                )
                .await
                .map_err(|e| call_error(sx(e)))?
            else {
                return Ok(None);
            };
            let data = value.decode().map_err(|e| call_error(sx(e)))?;
            Ok(Some(Submission {
                validator: data.validator_id,
                scores: data
                    .data
                    .0
                    .into_iter()
                    .map(|s| Score {
                        node_id: s.subnet_node_id,
                        score: s.score,
                    })
                    .collect(),
                attested_by: data.attests.0.into_iter().map(|(id, _)| id).collect(),
            }))
        })
    }

    fn propose(&self, subnet_id: SubnetId, scores: Vec<Score>) -> ChainFuture<'_, ()> {
        Box::pin(async move {
            use runtime_types::bounded_collections::bounded_vec::BoundedVec;
            use runtime_types::pallet_network::pallet::SubnetNodeConsensusData;
            let data = BoundedVec(
                scores
                    .into_iter()
                    .map(|s| SubnetNodeConsensusData {
                        subnet_node_id: s.node_id,
                        score: s.score,
                    })
                    .collect(),
            );
            let call = api::tx()
                .network()
                .propose_attestation(subnet_id.get(), data, None);
            self.client
                .submit(&call, &self.hotkey)
                .await
                .map(drop)
                .map_err(call_error)
        })
    }

    fn attest(&self, subnet_id: SubnetId) -> ChainFuture<'_, ()> {
        Box::pin(async move {
            let call = api::tx().network().attest(subnet_id.get());
            self.client
                .submit(&call, &self.hotkey)
                .await
                .map(drop)
                .map_err(call_error)
        })
    }
}
