//! A test runtime: system, balances and the network pallet.

use crate as pallet_network;
use polkadot_sdk::polkadot_sdk_frame::testing_prelude::*;
use polkadot_sdk::{frame_system, pallet_balances};

type Block = frame_system::mocking::MockBlock<Test>;

#[frame_construct_runtime]
mod runtime {
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
    pub struct Test;

    #[runtime::pallet_index(0)]
    pub type System = frame_system::Pallet<Test>;
    #[runtime::pallet_index(1)]
    pub type Balances = pallet_balances::Pallet<Test>;
    #[runtime::pallet_index(2)]
    pub type Network = pallet_network::Pallet<Test>;
}

#[derive_impl(frame_system::config_preludes::TestDefaultConfig)]
impl frame_system::Config for Test {
    type Block = Block;
    type AccountId = u64;
    type Lookup = IdentityLookup<u64>;
    type AccountData = pallet_balances::AccountData<u128>;
}

#[derive_impl(pallet_balances::config_preludes::TestDefaultConfig)]
impl pallet_balances::Config for Test {
    type Balance = u128;
    type ExistentialDeposit = ConstU128<1>;
    type AccountStore = System;
}

pub const TOKEN: u128 = crate::TOKEN;
pub const EPOCH: u64 = 10;
pub const MIN_STAKE: u128 = 100 * TOKEN;
pub const BURN: u128 = TOKEN;

parameter_types! {
    pub const NetworkPalletId: PalletId = PalletId(*b"mesh/net");
}

impl pallet_network::Config for Test {
    type Currency = Balances;
    type EpochLength = ConstU32<{ EPOCH as u32 }>;
    type MinStake = ConstU128<MIN_STAKE>;
    type RegistrationBurn = ConstU128<BURN>;
    type IdleEpochs = ConstU32<1>;
    type IncludedEpochs = ConstU32<1>;
    type PalletId = NetworkPalletId;
    type WeightInfo = ();
}

/// Coldkeys 1..=4 hold 1,000 tokens each; hotkeys are 101..
pub fn new_test_ext() -> TestState {
    let mut storage = frame_system::GenesisConfig::<Test>::default()
        .build_storage()
        .unwrap();
    pallet_balances::GenesisConfig::<Test> {
        balances: (1..=4).map(|who| (who, 1_000 * TOKEN)).collect(),
        ..Default::default()
    }
    .assimilate_storage(&mut storage)
    .unwrap();
    let mut ext = TestState::new(storage);
    ext.execute_with(|| System::set_block_number(1));
    ext
}

/// Advance to block `n`, running the pallet's `on_initialize` on the way.
pub fn run_to_block(n: u64) {
    System::run_to_block::<AllPalletsWithSystem>(n);
}
