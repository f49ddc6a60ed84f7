//! The mesh dev chain runtime.
//!
//! System, timestamp, balances (18-decimal `u128`), transaction payment,
//! sudo and the [`pallet_network`] that holds subnets, staked nodes and
//! attestations. Built to wasm by `substrate-wasm-builder`; the node embeds
//! that wasm. Dev accounts (Alice … Ferdie) start with 1,000,000 tokens;
//! Alice is sudo.

#![cfg_attr(not(feature = "std"), no_std)]

// Make the WASM binary available.
#[cfg(feature = "std")]
include!(concat!(env!("OUT_DIR"), "/wasm_binary.rs"));

extern crate alloc;

use alloc::vec::Vec;
use pallet_network::{Epoch, SubnetId};
use pallet_transaction_payment::{FeeDetails, RuntimeDispatchInfo};
use polkadot_sdk::{
    polkadot_sdk_frame::{
        self as frame,
        deps::sp_genesis_builder,
        runtime::{apis, prelude::*},
    },
    sp_runtime::traits::Block as BlockT,
    *,
};

/// One token (18 decimals).
pub const TOKEN: Balance = pallet_network::TOKEN;
/// Blocks per subnet epoch on the dev chain.
pub const EPOCH_LENGTH: u32 = 10;

/// Genesis presets.
pub mod genesis_config_presets {
    use super::*;
    use crate::{BalancesConfig, RuntimeGenesisConfig, SudoConfig};
    use alloc::{vec, vec::Vec};
    use serde_json::Value;

    /// The development preset: dev accounts funded, Alice sudo.
    pub fn development_config_genesis() -> Value {
        let endowment: Balance = 1_000_000 * TOKEN;
        frame_support::build_struct_json_patch!(RuntimeGenesisConfig {
            balances: BalancesConfig {
                balances: Sr25519Keyring::iter()
                    .map(|a| (a.to_account_id(), endowment))
                    .collect::<Vec<_>>(),
            },
            sudo: SudoConfig {
                key: Some(Sr25519Keyring::Alice.to_account_id())
            },
        })
    }

    /// The preset with this id.
    pub fn get_preset(id: &PresetId) -> Option<Vec<u8>> {
        let patch = match id.as_ref() {
            sp_genesis_builder::DEV_RUNTIME_PRESET
            | sp_genesis_builder::LOCAL_TESTNET_RUNTIME_PRESET => development_config_genesis(),
            _ => return None,
        };
        Some(
            serde_json::to_string(&patch)
                .expect("JSON of a genesis patch")
                .into_bytes(),
        )
    }

    /// The presets there are.
    pub fn preset_names() -> Vec<PresetId> {
        vec![
            PresetId::from(sp_genesis_builder::DEV_RUNTIME_PRESET),
            PresetId::from(sp_genesis_builder::LOCAL_TESTNET_RUNTIME_PRESET),
        ]
    }
}

/// The runtime version.
#[runtime_version]
pub const VERSION: RuntimeVersion = RuntimeVersion {
    spec_name: alloc::borrow::Cow::Borrowed("mesh-dev"),
    impl_name: alloc::borrow::Cow::Borrowed("mesh-dev"),
    authoring_version: 1,
    spec_version: 1,
    impl_version: 1,
    apis: RUNTIME_API_VERSIONS,
    transaction_version: 1,
    system_version: 1,
};

/// The transaction extensions.
type TxExtension = (
    frame_system::CheckNonZeroSender<Runtime>,
    frame_system::CheckSpecVersion<Runtime>,
    frame_system::CheckTxVersion<Runtime>,
    frame_system::CheckGenesis<Runtime>,
    frame_system::CheckEra<Runtime>,
    frame_system::CheckNonce<Runtime>,
    frame_system::CheckWeight<Runtime>,
    pallet_transaction_payment::ChargeTransactionPayment<Runtime>,
    frame_system::WeightReclaim<Runtime>,
);

#[frame_construct_runtime]
mod runtime {
    /// The runtime.
    #[runtime::runtime]
    #[runtime::derive(
        RuntimeCall,
        RuntimeEvent,
        RuntimeError,
        RuntimeOrigin,
        RuntimeFreezeReason,
        RuntimeHoldReason,
        RuntimeSlashReason,
        RuntimeLockId,
        RuntimeTask,
        RuntimeViewFunction
    )]
    pub struct Runtime;

    /// Accounts, blocks, events.
    #[runtime::pallet_index(0)]
    pub type System = frame_system::Pallet<Runtime>;

    /// Block timestamps.
    #[runtime::pallet_index(1)]
    pub type Timestamp = pallet_timestamp::Pallet<Runtime>;

    /// Balances.
    #[runtime::pallet_index(2)]
    pub type Balances = pallet_balances::Pallet<Runtime>;

    /// Privileged calls for the dev key.
    #[runtime::pallet_index(3)]
    pub type Sudo = pallet_sudo::Pallet<Runtime>;

    /// Fees.
    #[runtime::pallet_index(4)]
    pub type TransactionPayment = pallet_transaction_payment::Pallet<Runtime>;

    /// Subnets, staked nodes, epochs, attestations.
    #[runtime::pallet_index(7)]
    pub type Network = pallet_network::Pallet<Runtime>;
}

parameter_types! {
    /// The runtime version.
    pub const Version: RuntimeVersion = VERSION;
    /// The network pallet's stake account.
    pub const NetworkPalletId: PalletId = PalletId(*b"mesh/net");
}

#[derive_impl(frame_system::config_preludes::SolochainDefaultConfig)]
impl frame_system::Config for Runtime {
    type Block = Block;
    type Version = Version;
    type AccountData = pallet_balances::AccountData<Balance>;
}

#[derive_impl(pallet_balances::config_preludes::TestDefaultConfig)]
impl pallet_balances::Config for Runtime {
    type Balance = u128;
    type ExistentialDeposit = ConstU128<1_000_000_000_000>;
    type AccountStore = System;
}

#[derive_impl(pallet_sudo::config_preludes::TestDefaultConfig)]
impl pallet_sudo::Config for Runtime {}

#[derive_impl(pallet_timestamp::config_preludes::TestDefaultConfig)]
impl pallet_timestamp::Config for Runtime {}

#[derive_impl(pallet_transaction_payment::config_preludes::TestDefaultConfig)]
impl pallet_transaction_payment::Config for Runtime {
    type OnChargeTransaction = pallet_transaction_payment::FungibleAdapter<Balances, ()>;
    // A dev chain: a flat fee per byte, nothing per weight.
    type WeightToFee = NoFee<Balance>;
    type LengthToFee = FixedFee<1_000_000_000, Balance>;
}

impl pallet_network::Config for Runtime {
    type Currency = Balances;
    type EpochLength = ConstU32<EPOCH_LENGTH>;
    type MinStake = ConstU128<{ 100 * TOKEN }>;
    type RegistrationBurn = ConstU128<{ TOKEN }>;
    type IdleEpochs = ConstU32<1>;
    type IncludedEpochs = ConstU32<1>;
    type PalletId = NetworkPalletId;
    type WeightInfo = pallet_network::weights::SubstrateWeight<Runtime>;
}

type Block = frame::runtime::types_common::BlockOf<Runtime, TxExtension>;
type Header = HeaderFor<Runtime>;

type RuntimeExecutive =
    Executive<Runtime, Block, frame_system::ChainContext<Runtime>, Runtime, AllPalletsWithSystem>;

impl_runtime_apis! {
    impl apis::Core<Block> for Runtime {
        fn version() -> RuntimeVersion {
            VERSION
        }

        fn execute_block(block: <Block as BlockT>::LazyBlock) {
            RuntimeExecutive::execute_block(block)
        }

        fn initialize_block(header: &Header) -> ExtrinsicInclusionMode {
            RuntimeExecutive::initialize_block(header)
        }
    }

    impl apis::Metadata<Block> for Runtime {
        fn metadata() -> OpaqueMetadata {
            OpaqueMetadata::new(Runtime::metadata().into())
        }

        fn metadata_at_version(version: u32) -> Option<OpaqueMetadata> {
            Runtime::metadata_at_version(version)
        }

        fn metadata_versions() -> Vec<u32> {
            Runtime::metadata_versions()
        }
    }

    impl apis::BlockBuilder<Block> for Runtime {
        fn apply_extrinsic(extrinsic: ExtrinsicFor<Runtime>) -> ApplyExtrinsicResult {
            RuntimeExecutive::apply_extrinsic(extrinsic)
        }

        fn finalize_block() -> HeaderFor<Runtime> {
            RuntimeExecutive::finalize_block()
        }

        fn inherent_extrinsics(data: InherentData) -> Vec<ExtrinsicFor<Runtime>> {
            data.create_extrinsics()
        }

        fn check_inherents(
            block: <Block as BlockT>::LazyBlock,
            data: InherentData,
        ) -> CheckInherentsResult {
            data.check_extrinsics(&block)
        }
    }

    impl apis::TaggedTransactionQueue<Block> for Runtime {
        fn validate_transaction(
            source: TransactionSource,
            tx: ExtrinsicFor<Runtime>,
            block_hash: <Runtime as frame_system::Config>::Hash,
        ) -> TransactionValidity {
            RuntimeExecutive::validate_transaction(source, tx, block_hash)
        }
    }

    impl apis::OffchainWorkerApi<Block> for Runtime {
        fn offchain_worker(header: &HeaderFor<Runtime>) {
            RuntimeExecutive::offchain_worker(header)
        }
    }

    impl apis::SessionKeys<Block> for Runtime {
        fn generate_session_keys(
            _owner: Vec<u8>,
            _seed: Option<Vec<u8>>,
        ) -> apis::OpaqueGeneratedSessionKeys {
            Default::default()
        }

        fn decode_session_keys(
            _encoded: Vec<u8>,
        ) -> Option<Vec<(Vec<u8>, apis::KeyTypeId)>> {
            Default::default()
        }
    }

    impl apis::AccountNonceApi<Block, interface::AccountId, interface::Nonce> for Runtime {
        fn account_nonce(account: interface::AccountId) -> interface::Nonce {
            System::account_nonce(account)
        }
    }

    impl pallet_transaction_payment_rpc_runtime_api::TransactionPaymentApi<
        Block,
        interface::Balance,
    > for Runtime {
        fn query_info(uxt: ExtrinsicFor<Runtime>, len: u32) -> RuntimeDispatchInfo<interface::Balance> {
            TransactionPayment::query_info(uxt, len)
        }
        fn query_fee_details(uxt: ExtrinsicFor<Runtime>, len: u32) -> FeeDetails<interface::Balance> {
            TransactionPayment::query_fee_details(uxt, len)
        }
        fn query_weight_to_fee(weight: Weight) -> interface::Balance {
            TransactionPayment::weight_to_fee(weight)
        }
        fn query_length_to_fee(length: u32) -> interface::Balance {
            TransactionPayment::length_to_fee(length)
        }
    }

    impl pallet_network::runtime_api::NetworkRuntimeApi<Block> for Runtime {
        fn proof_of_stake(subnet_id: SubnetId, peer_id: Vec<u8>, min_class: u8) -> bool {
            Network::proof_of_stake(subnet_id, peer_id, min_class)
        }

        fn subnet_epoch(subnet_id: SubnetId) -> Option<Epoch> {
            Network::subnet_epoch(subnet_id)
        }
    }

    impl apis::GenesisBuilder<Block> for Runtime {
        fn build_state(config: Vec<u8>) -> sp_genesis_builder::Result {
            build_state::<RuntimeGenesisConfig>(config)
        }

        fn get_preset(id: &Option<PresetId>) -> Option<Vec<u8>> {
            get_preset::<RuntimeGenesisConfig>(id, self::genesis_config_presets::get_preset)
        }

        fn preset_names() -> Vec<PresetId> {
            self::genesis_config_presets::preset_names()
        }
    }
}

/// Types the node needs.
pub mod interface {
    use super::Runtime;
    use polkadot_sdk::{polkadot_sdk_frame as frame, *};

    /// The runtime's block.
    pub type Block = super::Block;
    pub use frame::runtime::types_common::OpaqueBlock;
    /// Account ids (sr25519 public keys).
    pub type AccountId = <Runtime as frame_system::Config>::AccountId;
    /// Account nonces.
    pub type Nonce = <Runtime as frame_system::Config>::Nonce;
    /// Block hashes.
    pub type Hash = <Runtime as frame_system::Config>::Hash;
    /// Balances (18 decimals).
    pub type Balance = <Runtime as pallet_balances::Config>::Balance;
}

/// Balances: 18-decimal `u128`.
pub type Balance = u128;
