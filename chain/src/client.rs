//! The chain client: a reconnecting RPC connection, typed calls and queries.

use crate::amount::Amount;
use crate::api::{self, runtime_types};
use crate::error::{sx, ChainError};
use mesh_core::{NodeClass, PeerId, SubnetId};
use std::time::Duration;
use subxt::rpcs::client::reconnecting_rpc_client::ExponentialBackoff;
use subxt::rpcs::client::{ReconnectingRpcClient, RpcClient};
use subxt::rpcs::{rpc_params, LegacyRpcMethods};
use subxt::utils::AccountId32;
use subxt::{OnlineClient, SubstrateConfig};
use subxt_signer::sr25519::Keypair;

/// The chain configuration mesh speaks (Substrate defaults: sr25519 accounts,
/// `MultiAddress<AccountId32, u32>`, BLAKE2 hashing).
pub type MeshConfig = SubstrateConfig;

/// Events of a finalized transaction.
pub type TxEvents = subxt::extrinsics::ExtrinsicEvents<MeshConfig>;

/// The metadata version pinned in `metadata/mesh-dev.scale`.
pub const METADATA_VERSION: u32 = 16;

/// Default time to wait for a transaction to be finalized.
pub const DEFAULT_TX_TIMEOUT: Duration = Duration::from_secs(60);

type Bytes = runtime_types::bounded_collections::bounded_vec::BoundedVec<u8>;

/// A subnet node as the chain holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubnetNodeInfo {
    /// The subnet.
    pub subnet_id: SubnetId,
    /// The node's id in the subnet.
    pub subnet_node_id: u32,
    /// The hotkey (ss58).
    pub hotkey: String,
    /// The coldkey owning the hotkey (ss58).
    pub coldkey: Option<String>,
    /// Server PeerId.
    #[serde(serialize_with = "base58")]
    pub peer_id: PeerId,
    /// Bootnode PeerId.
    #[serde(serialize_with = "base58")]
    pub bootnode_peer_id: PeerId,
    /// Client PeerId.
    #[serde(serialize_with = "base58")]
    pub client_peer_id: PeerId,
    /// Bootnode multiaddr.
    pub bootnode: Option<String>,
    /// Current class.
    #[serde(serialize_with = "class_name")]
    pub class: NodeClass,
    /// Subnet epoch since which it holds the class.
    pub class_since_epoch: u32,
    /// Delegate reward rate (1e18 = 100 %); a decimal string in JSON.
    #[serde(serialize_with = "decimal_string")]
    pub delegate_reward_rate: u128,
    /// The hotkey's stake in this subnet (18 decimals); a decimal string in JSON.
    #[serde(serialize_with = "decimal_string")]
    pub stake: u128,
}

fn decimal_string<S: serde::Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&value.to_string())
}

fn base58<S: serde::Serializer>(peer: &PeerId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&peer.to_base58())
}

fn class_name<S: serde::Serializer>(class: &NodeClass, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&class.to_string())
}

/// Where a subnet is in its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EpochInfo {
    /// The latest finalized block.
    pub block: u64,
    /// The subnet's slot (block offset of its epochs).
    pub slot: u32,
    /// Blocks per epoch.
    pub epoch_length: u32,
    /// `(block − slot) / epoch_length`.
    pub epoch: u32,
    /// Blocks since the epoch began.
    pub blocks_into_epoch: u32,
}

impl EpochInfo {
    /// The epoch of `block` for a subnet with this slot and epoch length.
    pub fn at(block: u64, slot: u32, epoch_length: u32) -> Self {
        let since = block.saturating_sub(u64::from(slot));
        let length = u64::from(epoch_length.max(1));
        EpochInfo {
            block,
            slot,
            epoch_length,
            epoch: u32::try_from(since / length).unwrap_or(u32::MAX),
            blocks_into_epoch: (since % length) as u32,
        }
    }

    /// Share of the epoch gone by, `0.0..1.0`.
    pub fn progress(&self) -> f64 {
        f64::from(self.blocks_into_epoch) / f64::from(self.epoch_length.max(1))
    }
}

/// What registering a node will cost, asked before submitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationQuote {
    /// Moved into stake (returned by `remove_stake`).
    pub stake: Amount,
    /// Burnt by the pallet.
    pub burn: Amount,
    /// Estimated transaction fee.
    pub fee: Amount,
    /// The signer's free balance.
    pub balance: Amount,
}

impl RegistrationQuote {
    /// Stake + burn + fee.
    pub fn total(&self) -> Amount {
        Amount(
            self.stake
                .0
                .saturating_add(self.burn.0)
                .saturating_add(self.fee.0),
        )
    }
}

/// What `register_subnet_node` takes (the Hypertensor pallet's arguments).
#[derive(Debug, Clone)]
pub struct RegisterNode {
    /// The subnet.
    pub subnet_id: SubnetId,
    /// The node machine's key (not the coldkey that signs this).
    pub hotkey: AccountId32,
    /// Server PeerId.
    pub peer_id: PeerId,
    /// Bootnode PeerId.
    pub bootnode_peer_id: PeerId,
    /// Client PeerId.
    pub client_peer_id: PeerId,
    /// Bootnode multiaddr.
    pub bootnode: Option<String>,
    /// Delegate reward rate (1e18 = 100 %).
    pub delegate_reward_rate: u128,
    /// Stake to add.
    pub stake_to_be_added: Amount,
    /// Data unique in the subnet.
    pub unique: Option<String>,
    /// Free data.
    pub non_unique: Option<String>,
    /// Refuse if the burn exceeds this.
    pub max_burn_amount: Amount,
}

/// A connection to a mesh chain node (ours or a Hypertensor node).
///
/// Reconnects by itself with exponential backoff (100 ms … 10 s) after the
/// connection drops; requests in flight at that moment fail with
/// [`ChainError::Rpc`] and may be retried. Cheap to clone.
#[derive(Clone)]
pub struct ChainClient {
    client: OnlineClient<MeshConfig>,
    rpc: RpcClient,
    url: String,
    tx_timeout: Duration,
}

impl std::fmt::Debug for ChainClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn bytes(text: &str) -> Bytes {
    runtime_types::bounded_collections::bounded_vec::BoundedVec(text.as_bytes().to_vec())
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(&b.0).into_owned()
}

/// A PeerId the chain holds (base58 bytes; the pallet checks them on registration).
fn peer(b: &Bytes) -> Result<PeerId, ChainError> {
    std::str::from_utf8(&b.0)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ChainError::IncompatibleRuntime(format!("the chain holds {:?} as a PeerId", text(b)))
        })
}

fn class_of(class: &runtime_types::pallet_network::pallet::SubnetNodeClass) -> NodeClass {
    use runtime_types::pallet_network::pallet::SubnetNodeClass as C;
    match class {
        C::Deactivated => NodeClass::Deactivated,
        C::Registered => NodeClass::Registered,
        C::Idle => NodeClass::Idle,
        C::Included => NodeClass::Included,
        C::Validator => NodeClass::Validator,
    }
}

impl ChainClient {
    /// Connect to `url` (`ws://` or `wss://`). Fails if the first connection
    /// cannot be made within 10 s; later drops are reconnected.
    pub async fn connect(url: &str) -> Result<Self, ChainError> {
        let connect_error = |reason: String| ChainError::Connect {
            url: url.to_owned(),
            reason,
        };
        let inner = tokio::time::timeout(
            Duration::from_secs(10),
            ReconnectingRpcClient::builder()
                .retry_policy(
                    ExponentialBackoff::from_millis(100).max_delay(Duration::from_secs(10)),
                )
                .connection_timeout(Duration::from_secs(10))
                .request_timeout(Duration::from_secs(60))
                .build(url.to_owned()),
        )
        .await
        .map_err(|_| connect_error("no answer within 10 s".into()))?
        .map_err(|e| connect_error(e.to_string()))?;
        let rpc = RpcClient::new(inner);
        let client = OnlineClient::<MeshConfig>::from_rpc_client(rpc.clone())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(Self {
            client,
            rpc,
            url: url.to_owned(),
            tx_timeout: DEFAULT_TX_TIMEOUT,
        })
    }

    /// Wait at most this long for each transaction to be finalized.
    pub fn with_tx_timeout(mut self, timeout: Duration) -> Self {
        self.tx_timeout = timeout;
        self
    }

    /// The RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying subxt client, for calls this type does not wrap.
    pub fn subxt(&self) -> &OnlineClient<MeshConfig> {
        &self.client
    }

    /// The node's runtime metadata at [`METADATA_VERSION`] (SCALE
    /// `RuntimeMetadataPrefixed`, what `metadata/mesh-dev.scale` pins).
    /// Versions 15 and later carry the runtime APIs, which `state_getMetadata`
    /// (version 14) leaves out.
    pub async fn fetch_metadata_bytes(&self) -> Result<Vec<u8>, ChainError> {
        use subxt::ext::codec::{Decode, Encode};
        let hex: String = self
            .rpc
            .request(
                "state_call",
                rpc_params![
                    "Metadata_metadata_at_version",
                    to_hex(&METADATA_VERSION.encode())
                ],
            )
            .await
            .map_err(|e| ChainError::Rpc(e.to_string()))?;
        let bytes =
            decode_hex(&hex).ok_or_else(|| ChainError::Rpc("state_call: not hex".into()))?;
        Option::<Vec<u8>>::decode(&mut &bytes[..])
            .map_err(|e| ChainError::Rpc(format!("metadata: {e}")))?
            .ok_or_else(|| {
                ChainError::NotFound(format!(
                    "the node has no metadata version {METADATA_VERSION}"
                ))
            })
    }

    /// Whether this client's typed API was generated from the node's runtime.
    pub async fn codegen_matches_node(&self) -> Result<bool, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        Ok(api::is_codegen_valid_for(&at.metadata()))
    }

    /// Sign with `signer`, submit, and wait for the transaction to be in a
    /// finalized block and to have succeeded. Pallet refusals come back as
    /// [`ChainError::Module`].
    pub async fn submit<C: subxt::tx::Payload>(
        &self,
        call: &C,
        signer: &Keypair,
    ) -> Result<TxEvents, ChainError> {
        let mut tx = self.client.tx().await.map_err(sx)?;
        let progress = tx
            .sign_and_submit_then_watch_default(call, signer)
            .await
            .map_err(sx)?;
        tokio::time::timeout(self.tx_timeout, progress.wait_for_finalized_success())
            .await
            .map_err(|_| ChainError::Timeout {
                what: "waiting for the transaction to be finalized".into(),
                after: self.tx_timeout,
            })?
            .map_err(sx)
    }

    /// The fee the chain would charge `signer` for `call` now.
    pub async fn estimate_fee<C: subxt::tx::Payload>(
        &self,
        call: &C,
        signer: &Keypair,
    ) -> Result<Amount, ChainError> {
        let mut tx = self.client.tx().await.map_err(sx)?;
        let signed = tx
            .create_signed(call, signer, Default::default())
            .await
            .map_err(sx)?;
        signed.partial_fee_estimate().await.map(Amount).map_err(sx)
    }

    /// The free balance of an account.
    pub async fn free_balance(&self, account: &AccountId32) -> Result<Amount, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        let info = at
            .storage()
            .fetch(api::storage().system().account(), (*account,))
            .await
            .map_err(sx)?
            .decode()
            .map_err(sx)?;
        Ok(Amount(info.data.free))
    }

    /// Move `amount` from `from` to `to`, keeping `from` alive.
    pub async fn transfer(
        &self,
        from: &Keypair,
        to: &AccountId32,
        amount: Amount,
    ) -> Result<(), ChainError> {
        let call = api::tx()
            .balances()
            .transfer_keep_alive(subxt::utils::MultiAddress::Id(*to), amount.0);
        self.submit(&call, from).await.map(drop)
    }

    /// Latest finalized block number.
    pub async fn finalized_block(&self) -> Result<u64, ChainError> {
        Ok(self
            .client
            .at_current_block()
            .await
            .map_err(sx)?
            .block_number())
    }

    // ----- subnets -----------------------------------------------------------

    /// Register a subnet owned by `owner` and, when `activate`, activate it.
    /// Returns its id.
    pub async fn create_subnet(
        &self,
        owner: &Keypair,
        name: &str,
        activate: bool,
    ) -> Result<SubnetId, ChainError> {
        let events = self
            .submit(&api::tx().network().register_subnet(bytes(name)), owner)
            .await?;
        let subnet_id = events
            .find_first::<api::network::events::SubnetRegistered>()
            .ok_or_else(|| ChainError::NotFound("no SubnetRegistered event".into()))?
            .map_err(sx)?
            .subnet_id;
        if activate {
            self.submit(&api::tx().network().activate_subnet(subnet_id), owner)
                .await?;
        }
        Ok(SubnetId::new(subnet_id))
    }

    /// Where the subnet is in its epoch; [`ChainError::NotFound`] unless active.
    pub async fn epoch_info(&self, subnet_id: SubnetId) -> Result<EpochInfo, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        let slot = at
            .storage()
            .try_fetch(api::storage().network().subnet_slot(), (subnet_id.get(),))
            .await
            .map_err(sx)?
            .ok_or_else(|| ChainError::NotFound(format!("subnet {subnet_id} is not active")))?
            .decode()
            .map_err(sx)?;
        let epoch_length = at
            .constants()
            .entry(api::constants().network().epoch_length())
            .map_err(sx)?;
        Ok(EpochInfo::at(at.block_number(), slot, epoch_length))
    }

    /// The validator elected for a subnet epoch, if any.
    pub async fn elected_validator(
        &self,
        subnet_id: SubnetId,
        epoch: u32,
    ) -> Result<Option<u32>, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        at.storage()
            .try_fetch(
                api::storage().network().subnet_elected_validator(),
                (subnet_id.get(), epoch),
            )
            .await
            .map_err(sx)?
            .map(|v| v.decode())
            .transpose()
            .map_err(sx)
    }

    /// The epoch's consensus submission: its proposer and how many
    /// attestations it holds (the proposer's own included).
    pub async fn consensus_submission(
        &self,
        subnet_id: SubnetId,
        epoch: u32,
    ) -> Result<Option<(u32, usize)>, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        let submission = at
            .storage()
            .try_fetch(
                api::storage().network().subnet_consensus_submission(),
                (subnet_id.get(), epoch),
            )
            .await
            .map_err(sx)?
            .map(|v| v.decode())
            .transpose()
            .map_err(sx)?;
        Ok(submission.map(|data| (data.validator_id, data.attests.0.len())))
    }

    /// The network pallet's minimum stake and registration burn.
    pub async fn registration_terms(&self) -> Result<(Amount, Amount), ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        let min_stake = at
            .constants()
            .entry(api::constants().network().min_stake())
            .map_err(sx)?;
        let burn = at
            .constants()
            .entry(api::constants().network().registration_burn())
            .map_err(sx)?;
        Ok((Amount(min_stake), Amount(burn)))
    }

    // ----- nodes -------------------------------------------------------------

    fn register_call(
        node: &RegisterNode,
    ) -> subxt::tx::StaticPayload<api::network::calls::RegisterSubnetNode> {
        api::tx().network().register_subnet_node(
            node.subnet_id.get(),
            node.hotkey,
            bytes(&node.peer_id.to_base58()),
            bytes(&node.bootnode_peer_id.to_base58()),
            bytes(&node.client_peer_id.to_base58()),
            node.bootnode.as_deref().map(bytes),
            node.delegate_reward_rate,
            node.stake_to_be_added.0,
            node.unique.as_deref().map(bytes),
            node.non_unique.as_deref().map(bytes),
            node.max_burn_amount.0,
        )
    }

    /// What registering will cost `coldkey`: stake, burn, fee, and its balance.
    pub async fn quote_registration(
        &self,
        coldkey: &Keypair,
        node: &RegisterNode,
    ) -> Result<RegistrationQuote, ChainError> {
        let (_, burn) = self.registration_terms().await?;
        let fee = self
            .estimate_fee(&Self::register_call(node), coldkey)
            .await?;
        let balance = self
            .free_balance(&coldkey.public_key().to_account_id())
            .await?;
        Ok(RegistrationQuote {
            stake: node.stake_to_be_added,
            burn,
            fee,
            balance,
        })
    }

    /// Register a node, signed by its coldkey. Returns the new subnet node id.
    pub async fn register_node(
        &self,
        coldkey: &Keypair,
        node: &RegisterNode,
    ) -> Result<u32, ChainError> {
        let events = self.submit(&Self::register_call(node), coldkey).await?;
        Ok(events
            .find_first::<api::network::events::SubnetNodeRegistered>()
            .ok_or_else(|| ChainError::NotFound("no SubnetNodeRegistered event".into()))?
            .map_err(sx)?
            .subnet_node_id)
    }

    /// Activate a node (coldkey-signed).
    pub async fn activate_node(
        &self,
        coldkey: &Keypair,
        subnet_id: SubnetId,
        subnet_node_id: u32,
    ) -> Result<(), ChainError> {
        let call = api::tx()
            .network()
            .activate_subnet_node(subnet_id.get(), subnet_node_id);
        self.submit(&call, coldkey).await.map(drop)
    }

    /// Deactivate a node (coldkey-signed).
    pub async fn deactivate_node(
        &self,
        coldkey: &Keypair,
        subnet_id: SubnetId,
        subnet_node_id: u32,
    ) -> Result<(), ChainError> {
        let call = api::tx()
            .network()
            .deactivate_subnet_node(subnet_id.get(), subnet_node_id);
        self.submit(&call, coldkey).await.map(drop)
    }

    /// Remove a node (coldkey-signed); its stake stays until [`Self::remove_stake`].
    pub async fn remove_node(
        &self,
        coldkey: &Keypair,
        subnet_id: SubnetId,
        subnet_node_id: u32,
    ) -> Result<(), ChainError> {
        let call = api::tx()
            .network()
            .remove_subnet_node(subnet_id.get(), subnet_node_id);
        self.submit(&call, coldkey).await.map(drop)
    }

    /// Add stake to a node's hotkey (coldkey-signed).
    pub async fn add_stake(
        &self,
        coldkey: &Keypair,
        subnet_id: SubnetId,
        subnet_node_id: u32,
        hotkey: &AccountId32,
        amount: Amount,
    ) -> Result<(), ChainError> {
        let call =
            api::tx()
                .network()
                .add_to_stake(subnet_id.get(), subnet_node_id, *hotkey, amount.0);
        self.submit(&call, coldkey).await.map(drop)
    }

    /// Return stake from a hotkey to the signing coldkey.
    pub async fn remove_stake(
        &self,
        coldkey: &Keypair,
        subnet_id: SubnetId,
        hotkey: &AccountId32,
        amount: Amount,
    ) -> Result<(), ChainError> {
        let call = api::tx()
            .network()
            .remove_stake(subnet_id.get(), *hotkey, amount.0);
        self.submit(&call, coldkey).await.map(drop)
    }

    /// The node with this id, with its hotkey's stake and owner.
    pub async fn subnet_node(
        &self,
        subnet_id: SubnetId,
        subnet_node_id: u32,
    ) -> Result<Option<SubnetNodeInfo>, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        let Some(value) = at
            .storage()
            .try_fetch(
                api::storage().network().subnet_nodes_data(),
                (subnet_id.get(), subnet_node_id),
            )
            .await
            .map_err(sx)?
        else {
            return Ok(None);
        };
        let node = value.decode().map_err(sx)?;
        let stake = at
            .storage()
            .fetch(
                api::storage().network().account_subnet_stake(),
                (node.hotkey, subnet_id.get()),
            )
            .await
            .map_err(sx)?
            .decode()
            .map_err(sx)?;
        let coldkey = at
            .storage()
            .try_fetch(api::storage().network().hotkey_owner(), (node.hotkey,))
            .await
            .map_err(sx)?
            .map(|v| v.decode().map(|owner| owner.to_string()))
            .transpose()
            .map_err(sx)?;
        Ok(Some(SubnetNodeInfo {
            subnet_id,
            subnet_node_id,
            hotkey: node.hotkey.to_string(),
            coldkey,
            peer_id: peer(&node.peer_id)?,
            bootnode_peer_id: peer(&node.bootnode_peer_id)?,
            client_peer_id: peer(&node.client_peer_id)?,
            bootnode: node.bootnode.as_ref().map(text),
            class: class_of(&node.classification.node_class),
            class_since_epoch: node.classification.start_epoch,
            delegate_reward_rate: node.delegate_reward_rate,
            stake,
        }))
    }

    /// The node id registered under a (server) PeerId.
    pub async fn node_id_by_peer(
        &self,
        subnet_id: SubnetId,
        peer_id: &PeerId,
    ) -> Result<Option<u32>, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        at.storage()
            .try_fetch(
                api::storage().network().peer_id_subnet_node_id(),
                (subnet_id.get(), bytes(&peer_id.to_base58())),
            )
            .await
            .map_err(sx)?
            .map(|v| v.decode())
            .transpose()
            .map_err(sx)
    }

    /// The node id of a hotkey in a subnet.
    pub async fn node_id_by_hotkey(
        &self,
        subnet_id: SubnetId,
        hotkey: &AccountId32,
    ) -> Result<Option<u32>, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        at.storage()
            .try_fetch(
                api::storage().network().hotkey_subnet_node_id(),
                (subnet_id.get(), *hotkey),
            )
            .await
            .map_err(sx)?
            .map(|v| v.decode())
            .transpose()
            .map_err(sx)
    }

    /// Ids of the nodes in a subnet whose hotkey `coldkey` owns.
    pub async fn nodes_owned_by(
        &self,
        subnet_id: SubnetId,
        coldkey: &AccountId32,
    ) -> Result<Vec<u32>, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        let mut ids = Vec::new();
        let mut nodes = at
            .storage()
            .iter(
                api::storage().network().subnet_nodes_data(),
                (subnet_id.get(),),
            )
            .await
            .map_err(sx)?;
        while let Some(entry) = futures::StreamExt::next(&mut nodes).await {
            let entry = entry.map_err(sx)?;
            let node = entry.value().decode().map_err(sx)?;
            let owner = at
                .storage()
                .try_fetch(api::storage().network().hotkey_owner(), (node.hotkey,))
                .await
                .map_err(sx)?;
            if let Some(owner) = owner {
                if &owner.decode().map_err(sx)? == coldkey {
                    ids.push(node.id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// `NetworkRuntimeApi::proof_of_stake` at the latest finalized block.
    pub async fn proof_of_stake(
        &self,
        subnet_id: SubnetId,
        peer_id: &PeerId,
        min_class: NodeClass,
    ) -> Result<bool, ChainError> {
        let at = self.client.at_current_block().await.map_err(sx)?;
        let call = api::runtime_apis().network_runtime_api().proof_of_stake(
            subnet_id.get(),
            peer_id.to_base58().into_bytes(),
            min_class.as_u8(),
        );
        at.runtime_apis().call(call).await.map_err(sx)
    }

    /// A legacy-RPC view (for raw JSON-RPC calls such as `network_proofOfStake`).
    pub fn legacy_rpc(&self) -> LegacyRpcMethods<subxt::config::RpcConfigFor<MeshConfig>> {
        LegacyRpcMethods::new(self.rpc.clone())
    }

    /// The raw RPC client.
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::from("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_count_from_the_slot() {
        let info = EpochInfo::at(127, 3, 10);
        assert_eq!((info.epoch, info.blocks_into_epoch), (12, 4));
        assert!((info.progress() - 0.4).abs() < 1e-9);
        assert_eq!(EpochInfo::at(2, 3, 10).epoch, 0, "before the slot");
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("0x6d657461"), Some(b"meta".to_vec()));
        assert_eq!(decode_hex("0x6d6"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
