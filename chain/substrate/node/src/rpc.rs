//! JSON-RPC: system and transaction payment, plus `network_proofOfStake`.

use jsonrpsee::{
    core::RpcResult,
    proc_macros::rpc,
    types::{ErrorObject, ErrorObjectOwned},
    RpcModule,
};
use mesh_chain_runtime::interface::{AccountId, Balance, Nonce, OpaqueBlock as Block};
use pallet_network::runtime_api::NetworkRuntimeApi;
use sc_transaction_pool_api::TransactionPool;
use sp_api::ProvideRuntimeApi;
use sp_blockchain::HeaderBackend;
use sp_runtime::traits::Block as BlockT;
use std::sync::Arc;

type Hash = <Block as BlockT>::Hash;

/// The network pallet's questions over JSON-RPC (the Hypertensor mesh's names).
#[rpc(server)]
pub(crate) trait NetworkApi {
    /// Whether `peer_id` (base58 text as bytes) is staked in `subnet_id` with a
    /// node class of at least `min_class` (0 Deactivated … 4 Validator).
    #[method(name = "network_proofOfStake")]
    fn proof_of_stake(
        &self,
        subnet_id: u32,
        peer_id: Vec<u8>,
        min_class: u8,
        at: Option<Hash>,
    ) -> RpcResult<bool>;
}

struct Network<C> {
    client: Arc<C>,
}

impl<C> NetworkApiServer for Network<C>
where
    C: ProvideRuntimeApi<Block> + HeaderBackend<Block> + Send + Sync + 'static,
    C::Api: NetworkRuntimeApi<Block>,
{
    fn proof_of_stake(
        &self,
        subnet_id: u32,
        peer_id: Vec<u8>,
        min_class: u8,
        at: Option<Hash>,
    ) -> RpcResult<bool> {
        let at = at.unwrap_or_else(|| self.client.info().best_hash);
        self.client
            .runtime_api()
            .proof_of_stake(at, subnet_id, peer_id, min_class)
            .map_err(|e| -> ErrorObjectOwned {
                ErrorObject::owned(1, "runtime API call failed", Some(e.to_string()))
            })
    }
}

/// Everything the RPC needs.
pub(crate) struct FullDeps<C, P> {
    pub(crate) client: Arc<C>,
    pub(crate) pool: Arc<P>,
}

/// All RPC methods of the node beyond Substrate's defaults.
pub(crate) fn create_full<C, P>(
    deps: FullDeps<C, P>,
) -> Result<RpcModule<()>, Box<dyn std::error::Error + Send + Sync>>
where
    C: ProvideRuntimeApi<Block>
        + HeaderBackend<Block>
        + sp_blockchain::HeaderMetadata<Block, Error = sp_blockchain::Error>
        + Send
        + Sync
        + 'static,
    C::Api: substrate_frame_rpc_system::AccountNonceApi<Block, AccountId, Nonce>
        + pallet_transaction_payment_rpc::TransactionPaymentRuntimeApi<Block, Balance>
        + sp_block_builder::BlockBuilder<Block>
        + NetworkRuntimeApi<Block>,
    P: TransactionPool + 'static,
{
    use pallet_transaction_payment_rpc::{TransactionPayment, TransactionPaymentApiServer};
    use substrate_frame_rpc_system::{System, SystemApiServer};

    let mut module = RpcModule::new(());
    let FullDeps { client, pool } = deps;
    module.merge(System::<P, C, Block>::new(client.clone(), pool).into_rpc())?;
    module.merge(TransactionPayment::new(client.clone()).into_rpc())?;
    module.merge(Network { client }.into_rpc())?;
    Ok(module)
}
