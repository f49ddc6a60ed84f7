//! Weights of the network pallet's calls.
//!
//! Estimated from the storage each call reads and writes (no benchmark run):
//! the dev chain has fees of one unit per byte and no weight fee, so these
//! only bound block fullness. Replace with benchmarked figures before using
//! the pallet on a chain that charges by weight.

use core::marker::PhantomData;
use polkadot_sdk::polkadot_sdk_frame::weights_prelude::*;

/// Weight functions of the network pallet.
pub trait WeightInfo {
    /// `register_subnet`
    fn register_subnet() -> Weight;
    /// `activate_subnet`
    fn activate_subnet() -> Weight;
    /// `register_subnet_node`
    fn register_subnet_node() -> Weight;
    /// `activate_subnet_node`
    fn activate_subnet_node() -> Weight;
    /// `deactivate_subnet_node`
    fn deactivate_subnet_node() -> Weight;
    /// `remove_subnet_node`
    fn remove_subnet_node() -> Weight;
    /// `add_to_stake`
    fn add_to_stake() -> Weight;
    /// `remove_stake`
    fn remove_stake() -> Weight;
    /// `propose_attestation` (up to 256 scores)
    fn propose_attestation() -> Weight;
    /// `attest`
    fn attest() -> Weight;
}

/// Weights from storage accesses on a RocksDB/ParityDB-backed node.
pub struct SubstrateWeight<T>(PhantomData<T>);

fn rw<T: frame_system::Config>(reads: u64, writes: u64, compute_us: u64) -> Weight {
    Weight::from_parts(compute_us * 1_000_000, 4_000)
        .saturating_add(T::DbWeight::get().reads_writes(reads, writes))
}

impl<T: frame_system::Config> WeightInfo for SubstrateWeight<T> {
    fn register_subnet() -> Weight {
        rw::<T>(1, 3, 20)
    }
    fn activate_subnet() -> Weight {
        rw::<T>(3, 2, 20)
    }
    fn register_subnet_node() -> Weight {
        rw::<T>(14, 14, 80)
    }
    fn activate_subnet_node() -> Weight {
        rw::<T>(6, 1, 30)
    }
    fn deactivate_subnet_node() -> Weight {
        rw::<T>(5, 1, 30)
    }
    fn remove_subnet_node() -> Weight {
        rw::<T>(4, 8, 40)
    }
    fn add_to_stake() -> Weight {
        rw::<T>(6, 4, 40)
    }
    fn remove_stake() -> Weight {
        rw::<T>(5, 4, 40)
    }
    fn propose_attestation() -> Weight {
        rw::<T>(5 + 256, 1, 200)
    }
    fn attest() -> Weight {
        rw::<T>(6, 1, 40)
    }
}

impl WeightInfo for () {
    fn register_subnet() -> Weight {
        Weight::zero()
    }
    fn activate_subnet() -> Weight {
        Weight::zero()
    }
    fn register_subnet_node() -> Weight {
        Weight::zero()
    }
    fn activate_subnet_node() -> Weight {
        Weight::zero()
    }
    fn deactivate_subnet_node() -> Weight {
        Weight::zero()
    }
    fn remove_subnet_node() -> Weight {
        Weight::zero()
    }
    fn add_to_stake() -> Weight {
        Weight::zero()
    }
    fn remove_stake() -> Weight {
        Weight::zero()
    }
    fn propose_attestation() -> Weight {
        Weight::zero()
    }
    fn attest() -> Weight {
        Weight::zero()
    }
}
