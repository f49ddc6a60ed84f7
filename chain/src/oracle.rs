//! The chain-backed [`StakeOracle`] and the watcher that keeps its cache honest.

use crate::api;
use crate::client::ChainClient;
use crate::error::sx;
use mesh_core::stake::{StakeError, StakeFuture};
use mesh_core::{CachedStakeOracle, NodeClass, PeerId, StakeOracle, SubnetId};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Asks the chain's `NetworkRuntimeApi::proof_of_stake` at the latest
/// finalized block. Uncached: wrap it with [`chain_stake_oracle`].
#[derive(Debug, Clone)]
pub struct ChainStakeOracle {
    client: ChainClient,
}

impl ChainStakeOracle {
    /// An oracle over this connection.
    pub fn new(client: ChainClient) -> Self {
        Self { client }
    }

    /// The connection.
    pub fn client(&self) -> &ChainClient {
        &self.client
    }
}

impl StakeOracle for ChainStakeOracle {
    fn is_staked<'a>(
        &'a self,
        subnet_id: SubnetId,
        peer_id: &'a PeerId,
        min_class: NodeClass,
    ) -> StakeFuture<'a> {
        Box::pin(async move {
            self.client
                .proof_of_stake(subnet_id, peer_id, min_class)
                .await
                .map_err(|e| StakeError::Unavailable(e.to_string()))
        })
    }
}

/// The oracle mesh nodes use: chain answers cached for `ttl` (300 s is the
/// usual), plus a task following finalized blocks that forgets a subnet's
/// answers whenever one of its nodes is registered, activated, deactivated
/// or removed, or stake is removed — so a node that loses its stake is
/// dropped at the next block rather than after a whole TTL. The TTL stays
/// the upper bound if the block stream is interrupted.
pub struct WatchedStakeOracle {
    oracle: Arc<CachedStakeOracle<ChainStakeOracle>>,
    watcher: JoinHandle<()>,
}

impl WatchedStakeOracle {
    /// The cached oracle (cheap to clone and share).
    pub fn oracle(&self) -> Arc<CachedStakeOracle<ChainStakeOracle>> {
        self.oracle.clone()
    }
}

impl Drop for WatchedStakeOracle {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Build the cached, block-watching oracle over `client`. Needs a tokio runtime.
pub fn chain_stake_oracle(client: ChainClient, ttl: Duration) -> WatchedStakeOracle {
    let oracle = Arc::new(CachedStakeOracle::new(
        ChainStakeOracle::new(client.clone()),
        ttl,
    ));
    let watcher = tokio::spawn(watch_blocks(client, Arc::downgrade(&oracle)));
    WatchedStakeOracle { oracle, watcher }
}

async fn watch_blocks(
    client: ChainClient,
    oracle: std::sync::Weak<CachedStakeOracle<ChainStakeOracle>>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match follow(&client, &oracle).await {
            Ok(()) => return, // the oracle is gone
            Err(e) => {
                tracing::warn!(error = %e, "stake oracle: block stream ended; resubscribing");
                // While blind, trust nothing old.
                if let Some(oracle) = oracle.upgrade() {
                    oracle.invalidate_all();
                } else {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn follow(
    client: &ChainClient,
    oracle: &std::sync::Weak<CachedStakeOracle<ChainStakeOracle>>,
) -> Result<(), crate::ChainError> {
    let mut blocks = client.subxt().stream_blocks().await.map_err(sx)?;
    while let Some(block) = blocks.next().await {
        let block = block.map_err(sx)?;
        let Some(oracle) = oracle.upgrade() else {
            return Ok(());
        };
        let at = block.at().await.map_err(sx)?;
        let events = at.events().fetch().await.map_err(sx)?;
        for event in events.iter() {
            let Ok(event) = event else { continue };
            if event.pallet_name() != "Network" {
                continue;
            }
            if let Some(subnet_id) = membership_change(&event) {
                tracing::debug!(
                    %subnet_id,
                    event = event.event_name(),
                    "stake oracle: forgetting subnet"
                );
                oracle.invalidate_subnet(subnet_id);
            }
        }
    }
    Err(crate::ChainError::Rpc(
        "finalized block stream ended".into(),
    ))
}

/// The subnet whose membership an event changes, if it does.
fn membership_change(event: &subxt::events::Event<'_, crate::MeshConfig>) -> Option<SubnetId> {
    use api::network::events as ev;
    fn subnet<E: subxt::events::DecodeAsEvent>(
        event: &subxt::events::Event<'_, crate::MeshConfig>,
        id: impl Fn(E) -> SubnetId,
    ) -> Option<SubnetId> {
        event.decode_fields_as::<E>()?.ok().map(id)
    }
    match event.event_name() {
        "SubnetNodeRegistered" => subnet(event, |e: ev::SubnetNodeRegistered| {
            SubnetId::new(e.subnet_id)
        }),
        "SubnetNodeActivated" => subnet(event, |e: ev::SubnetNodeActivated| {
            SubnetId::new(e.subnet_id)
        }),
        "SubnetNodeDeactivated" => subnet(event, |e: ev::SubnetNodeDeactivated| {
            SubnetId::new(e.subnet_id)
        }),
        "SubnetNodeRemoved" => subnet(event, |e: ev::SubnetNodeRemoved| SubnetId::new(e.subnet_id)),
        "SubnetNodeClassChanged" => subnet(event, |e: ev::SubnetNodeClassChanged| {
            SubnetId::new(e.subnet_id)
        }),
        "StakeRemoved" => subnet(event, |e: ev::StakeRemoved| SubnetId::new(e.subnet_id)),
        _ => None,
    }
}
