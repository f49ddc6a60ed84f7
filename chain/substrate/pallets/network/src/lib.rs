//! # The `network` pallet: subnets, staked subnet nodes, epochs and attestations
//!
//! The on-chain half of mesh. A subnet owner registers and activates a
//! subnet; node operators register a *subnet node* (a hotkey, the libp2p
//! PeerIds it runs under, a stake) with their coldkey, activate it, and from
//! then on the node climbs the classes `Registered < Idle < Included <
//! Validator`, one step per subnet epoch. Each epoch one `Validator` node is
//! elected to `propose_attestation` of its scores; other validators `attest`
//! to that submission.
//!
//! Calls and storage follow the names of the Hypertensor network pallet
//! (`register_subnet_node`, `SubnetNodesData`, `PeerIdSubnetNodeId`,
//! `SubnetElectedValidator`, `SubnetConsensusSubmission`, …) so a client
//! written for one speaks to the other for the parts they share.
//!
//! * Epochs: a subnet's epoch is `(block − slot) / EpochLength`, where `slot`
//!   is assigned when the subnet is activated.
//! * Amounts are 18-decimal `u128`s. Stake moves from the coldkey into the
//!   pallet's account and is accounted to the hotkey; `remove_stake` returns it.
//!   Registering burns `RegistrationBurn`, refused above the caller's
//!   `max_burn_amount`.
//! * [`Pallet::proof_of_stake`] answers "is this PeerId staked in subnet S with
//!   at least class C" and backs the [`runtime_api::NetworkRuntimeApi`].

#![cfg_attr(not(feature = "std"), no_std)]
// `register_subnet_node` keeps the Hypertensor pallet's eleven arguments.
#![allow(clippy::too_many_arguments)]

extern crate alloc;

pub use pallet::*;
pub use weights::WeightInfo;

#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;
pub mod weights;

use alloc::vec::Vec;
use polkadot_sdk::polkadot_sdk_frame as frame;

/// Subnet identifier (`1..`).
pub type SubnetId = u32;
/// Subnet node identifier, unique within a subnet (`1..`).
pub type SubnetNodeId = u32;
/// A subnet epoch number.
pub type Epoch = u32;
/// One token: amounts have 18 decimals.
pub const TOKEN: u128 = 1_000_000_000_000_000_000;

/// The runtime API the node and clients call.
pub mod runtime_api {
    use super::*;

    polkadot_sdk::sp_api::decl_runtime_apis! {
        /// Questions about subnets the mesh runtime answers off-chain.
        pub trait NetworkRuntimeApi {
            /// Whether `peer_id` (base58 text, as stored) is the peer, bootnode or
            /// client PeerId of a node in `subnet_id` whose class is at least
            /// `min_class` (0 Deactivated … 4 Validator) and whose hotkey holds at
            /// least the minimum stake.
            fn proof_of_stake(subnet_id: SubnetId, peer_id: Vec<u8>, min_class: u8) -> bool;
            /// The subnet's current epoch, `None` when the subnet is not active.
            fn subnet_epoch(subnet_id: SubnetId) -> Option<Epoch>;
        }
    }
}

#[frame::pallet]
pub mod pallet {
    use super::*;
    use frame::prelude::*;
    use frame::traits::fungible::{Inspect, Mutate};

    /// A libp2p PeerId in its base58 text form, as the Hypertensor pallet stores it.
    pub type PeerId = BoundedVec<u8, ConstU32<64>>;
    /// A multiaddr in text form.
    pub type Multiaddr = BoundedVec<u8, ConstU32<1024>>;
    /// Free-form node data (`unique` / `non_unique` parameters).
    pub type NodeData = BoundedVec<u8, ConstU32<1024>>;
    /// A subnet's name.
    pub type SubnetName = BoundedVec<u8, ConstU32<64>>;
    /// Optional arguments of a consensus submission.
    pub type ConsensusArgs = BoundedVec<u8, ConstU32<1024>>;

    /// Most nodes a subnet holds (and scores one submission may carry).
    pub const MAX_SUBNET_NODES: u32 = 256;

    /// Classes a subnet node moves through; ordered, so `>=` means "at least".
    #[derive(
        Encode,
        Decode,
        DecodeWithMemTracking,
        Clone,
        Copy,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Debug,
        TypeInfo,
        MaxEncodedLen,
    )]
    pub enum SubnetNodeClass {
        /// Taken out of the subnet by its owner; may be activated again.
        Deactivated,
        /// Registered and staked, not yet activated.
        Registered,
        /// Activated; waiting for its first full epoch.
        Idle,
        /// Included in consensus data.
        Included,
        /// May be elected to propose attestations and may attest.
        Validator,
    }

    impl SubnetNodeClass {
        /// The class for a `min_class` byte (`0..=4`), `None` above.
        pub fn from_u8(value: u8) -> Option<Self> {
            Some(match value {
                0 => Self::Deactivated,
                1 => Self::Registered,
                2 => Self::Idle,
                3 => Self::Included,
                4 => Self::Validator,
                _ => return None,
            })
        }
    }

    /// A node's class and the subnet epoch from which it holds it.
    #[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
    pub struct SubnetNodeClassification {
        /// The class.
        pub node_class: SubnetNodeClass,
        /// First subnet epoch of this class.
        pub start_epoch: Epoch,
    }

    /// A registered subnet node.
    #[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
    pub struct SubnetNode<AccountId> {
        /// Its id within the subnet.
        pub id: SubnetNodeId,
        /// The key the node machine signs with.
        pub hotkey: AccountId,
        /// The PeerId its server runs under.
        pub peer_id: PeerId,
        /// The PeerId of its DHT bootnode.
        pub bootnode_peer_id: PeerId,
        /// The PeerId of its client.
        pub client_peer_id: PeerId,
        /// A multiaddr others may bootstrap from.
        pub bootnode: Option<Multiaddr>,
        /// Class and since when.
        pub classification: SubnetNodeClassification,
        /// Share of rewards for delegators (18 decimals, 1e18 = 100 %).
        pub delegate_reward_rate: u128,
        /// Data no other node of the subnet may carry.
        pub unique: Option<NodeData>,
        /// Free data.
        pub non_unique: Option<NodeData>,
    }

    /// Lifecycle of a subnet.
    #[derive(
        Encode,
        Decode,
        DecodeWithMemTracking,
        Clone,
        Copy,
        PartialEq,
        Eq,
        Debug,
        TypeInfo,
        MaxEncodedLen,
    )]
    pub enum SubnetState {
        /// Registered; nodes may register but epochs do not run.
        Registered,
        /// Active: epochs run, validators are elected.
        Active,
    }

    /// A subnet.
    #[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
    pub struct SubnetData {
        /// Its id.
        pub id: SubnetId,
        /// Its name.
        pub name: SubnetName,
        /// Registered or active.
        pub state: SubnetState,
        /// Subnet epoch it was activated in (0 until then).
        pub start_epoch: Epoch,
    }

    /// One node's score in a consensus submission.
    #[derive(
        Encode, Decode, DecodeWithMemTracking, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen,
    )]
    pub struct SubnetNodeConsensusData {
        /// The node scored.
        pub subnet_node_id: SubnetNodeId,
        /// Its score (18 decimals).
        pub score: u128,
    }

    /// The elected validator's submission for one epoch and who attested it.
    #[derive(Encode, Decode, Clone, PartialEq, Eq, Debug, TypeInfo, MaxEncodedLen)]
    pub struct ConsensusData<BlockNumber> {
        /// The proposer.
        pub validator_id: SubnetNodeId,
        /// `(node, block)` for every attestation, the proposer's first.
        pub attests: BoundedVec<(SubnetNodeId, BlockNumber), ConstU32<MAX_SUBNET_NODES>>,
        /// The scores.
        pub data: BoundedVec<SubnetNodeConsensusData, ConstU32<MAX_SUBNET_NODES>>,
        /// Optional subnet-defined arguments.
        pub args: Option<ConsensusArgs>,
    }

    #[pallet::pallet]
    pub struct Pallet<T>(_);

    /// Configuration.
    #[pallet::config]
    pub trait Config: polkadot_sdk::frame_system::Config {
        /// The balance stake and burns are taken from.
        type Currency: Mutate<Self::AccountId, Balance = u128>;
        /// Blocks per subnet epoch.
        #[pallet::constant]
        type EpochLength: Get<u32>;
        /// Least stake a subnet node's hotkey must hold.
        #[pallet::constant]
        type MinStake: Get<u128>;
        /// Burnt from the coldkey when a node registers.
        #[pallet::constant]
        type RegistrationBurn: Get<u128>;
        /// Full epochs a node spends as `Idle` before it is `Included`.
        #[pallet::constant]
        type IdleEpochs: Get<u32>;
        /// Full epochs a node spends as `Included` before it is a `Validator`.
        #[pallet::constant]
        type IncludedEpochs: Get<u32>;
        /// The account stake is kept in.
        #[pallet::constant]
        type PalletId: Get<PalletId>;
        /// Weights of the calls.
        type WeightInfo: WeightInfo;
    }

    /// Id of the last subnet registered.
    #[pallet::storage]
    pub type TotalSubnetUids<T> = StorageValue<_, SubnetId, ValueQuery>;

    /// Subnets by id.
    #[pallet::storage]
    pub type SubnetsData<T> = StorageMap<_, Identity, SubnetId, SubnetData>;

    /// The owner of each subnet.
    #[pallet::storage]
    pub type SubnetOwner<T: Config> = StorageMap<_, Identity, SubnetId, T::AccountId>;

    /// The block offset of each active subnet's epochs.
    #[pallet::storage]
    pub type SubnetSlot<T> = StorageMap<_, Identity, SubnetId, u32>;

    /// Id of the last node registered in each subnet.
    #[pallet::storage]
    pub type TotalSubnetNodeUids<T> = StorageMap<_, Identity, SubnetId, SubnetNodeId, ValueQuery>;

    /// Number of nodes currently in each subnet.
    #[pallet::storage]
    pub type TotalSubnetNodes<T> = StorageMap<_, Identity, SubnetId, u32, ValueQuery>;

    /// Subnet nodes by subnet and id.
    #[pallet::storage]
    pub type SubnetNodesData<T: Config> =
        StorageDoubleMap<_, Identity, SubnetId, Identity, SubnetNodeId, SubnetNode<T::AccountId>>;

    /// Node id of each hotkey in a subnet.
    #[pallet::storage]
    pub type HotkeySubnetNodeId<T: Config> =
        StorageDoubleMap<_, Identity, SubnetId, Blake2_128Concat, T::AccountId, SubnetNodeId>;

    /// Node id of each (server) PeerId in a subnet.
    #[pallet::storage]
    pub type PeerIdSubnetNodeId<T> =
        StorageDoubleMap<_, Identity, SubnetId, Blake2_128Concat, PeerId, SubnetNodeId>;

    /// Node id of each bootnode PeerId in a subnet.
    #[pallet::storage]
    pub type BootnodePeerIdSubnetNodeId<T> =
        StorageDoubleMap<_, Identity, SubnetId, Blake2_128Concat, PeerId, SubnetNodeId>;

    /// Node id of each client PeerId in a subnet.
    #[pallet::storage]
    pub type ClientPeerIdSubnetNodeId<T> =
        StorageDoubleMap<_, Identity, SubnetId, Blake2_128Concat, PeerId, SubnetNodeId>;

    /// Node id holding each `unique` value in a subnet.
    #[pallet::storage]
    pub type UniqueParamSubnetNodeId<T> =
        StorageDoubleMap<_, Identity, SubnetId, Blake2_128Concat, NodeData, SubnetNodeId>;

    /// The coldkey that owns each hotkey.
    #[pallet::storage]
    pub type HotkeyOwner<T: Config> = StorageMap<_, Blake2_128Concat, T::AccountId, T::AccountId>;

    /// Stake of each hotkey in each subnet.
    #[pallet::storage]
    pub type AccountSubnetStake<T: Config> =
        StorageDoubleMap<_, Blake2_128Concat, T::AccountId, Identity, SubnetId, u128, ValueQuery>;

    /// Total stake in each subnet.
    #[pallet::storage]
    pub type TotalSubnetStake<T> = StorageMap<_, Identity, SubnetId, u128, ValueQuery>;

    /// The validator elected for each subnet epoch.
    #[pallet::storage]
    pub type SubnetElectedValidator<T> =
        StorageDoubleMap<_, Identity, SubnetId, Identity, Epoch, SubnetNodeId>;

    /// The consensus submission of each subnet epoch.
    #[pallet::storage]
    pub type SubnetConsensusSubmission<T: Config> =
        StorageDoubleMap<_, Identity, SubnetId, Identity, Epoch, ConsensusData<BlockNumberFor<T>>>;

    /// Events: one for every change of state.
    #[pallet::event]
    #[pallet::generate_deposit(pub(super) fn deposit_event)]
    pub enum Event<T: Config> {
        /// A subnet was registered.
        SubnetRegistered {
            subnet_id: SubnetId,
            owner: T::AccountId,
            name: SubnetName,
        },
        /// A subnet was activated; its epochs run from `slot`.
        SubnetActivated { subnet_id: SubnetId, slot: u32 },
        /// A node was registered.
        SubnetNodeRegistered {
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
            coldkey: T::AccountId,
            hotkey: T::AccountId,
            peer_id: PeerId,
            burned: u128,
        },
        /// A node was activated (now `Idle`).
        SubnetNodeActivated {
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
            start_epoch: Epoch,
        },
        /// A node was deactivated.
        SubnetNodeDeactivated {
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
        },
        /// A node was removed; its stake stays until `remove_stake`.
        SubnetNodeRemoved {
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
        },
        /// A node moved up a class at an epoch boundary.
        SubnetNodeClassChanged {
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
            node_class: SubnetNodeClass,
            epoch: Epoch,
        },
        /// Stake was added to a hotkey.
        StakeAdded {
            subnet_id: SubnetId,
            coldkey: T::AccountId,
            hotkey: T::AccountId,
            amount: u128,
        },
        /// Stake was returned to the coldkey.
        StakeRemoved {
            subnet_id: SubnetId,
            coldkey: T::AccountId,
            hotkey: T::AccountId,
            amount: u128,
        },
        /// A validator was elected for a subnet epoch.
        ValidatorElected {
            subnet_id: SubnetId,
            epoch: Epoch,
            subnet_node_id: SubnetNodeId,
        },
        /// The elected validator proposed its attestation.
        AttestationProposed {
            subnet_id: SubnetId,
            epoch: Epoch,
            subnet_node_id: SubnetNodeId,
        },
        /// A validator attested the epoch's submission.
        Attestation {
            subnet_id: SubnetId,
            epoch: Epoch,
            subnet_node_id: SubnetNodeId,
        },
    }

    /// Errors, each saying what is wrong.
    #[pallet::error]
    pub enum Error<T> {
        /// No subnet with this id.
        SubnetNotExist,
        /// Only the subnet's owner may do this.
        NotSubnetOwner,
        /// The subnet is already active.
        SubnetAlreadyActive,
        /// The subnet is not active yet.
        SubnetNotActive,
        /// The subnet name is empty.
        InvalidSubnetName,
        /// The subnet holds its maximum number of nodes.
        MaxSubnetNodes,
        /// Hotkey and coldkey must differ: the coldkey never sits on the node machine.
        ColdkeyMatchesHotkey,
        /// The hotkey belongs to another coldkey.
        HotkeyHasOwner,
        /// This hotkey already runs a node in the subnet.
        HotkeyAlreadyRegistered,
        /// A PeerId is not base58 text of a plausible length.
        InvalidPeerId,
        /// The node's peer, bootnode and client PeerIds must differ.
        DuplicatePeerIds,
        /// The PeerId is already taken in this subnet.
        PeerIdExist,
        /// The bootnode PeerId is already taken in this subnet.
        BootnodePeerIdExist,
        /// The client PeerId is already taken in this subnet.
        ClientPeerIdExist,
        /// The `unique` value is already taken in this subnet.
        UniqueParamTaken,
        /// The delegate reward rate is above 1e18 (100 %).
        InvalidDelegateRewardRate,
        /// The stake is below the subnet minimum (`MinStake`).
        MinStakeNotReached,
        /// The registration burn exceeds the caller's `max_burn_amount`.
        MaxBurnAmountExceeded,
        /// The coldkey's free balance cannot cover stake plus burn.
        NotEnoughBalance,
        /// Less stake than asked to remove.
        NotEnoughStakeToWithdraw,
        /// No node with this id in the subnet.
        InvalidSubnetNodeId,
        /// The signer does not own this node (or hotkey).
        NotKeyOwner,
        /// The hotkey runs no node in the subnet.
        NotSubnetNode,
        /// The node is already active.
        SubnetNodeAlreadyActive,
        /// The node is not active.
        SubnetNodeNotActive,
        /// No validator was elected for this epoch.
        NoElectedValidator,
        /// Only the epoch's elected validator may propose.
        InvalidValidator,
        /// The epoch's attestation was already proposed.
        SubnetRewardsAlreadySubmitted,
        /// Scores name an unknown node or a node twice.
        InvalidConsensusData,
        /// No submission to attest in this epoch.
        InvalidSubnetConsensusSubmission,
        /// Only `Validator`-class nodes may attest.
        NotValidatorClass,
        /// This node already attested this epoch.
        AlreadyAttested,
    }

    #[pallet::hooks]
    impl<T: Config> Hooks<BlockNumberFor<T>> for Pallet<T> {
        fn on_initialize(n: BlockNumberFor<T>) -> Weight {
            let block: u32 = n.saturated_into();
            let epoch_length = T::EpochLength::get().max(1);
            let mut weight = T::DbWeight::get().reads(1);
            for (subnet_id, data) in SubnetsData::<T>::iter() {
                weight = weight.saturating_add(T::DbWeight::get().reads(2));
                if data.state != SubnetState::Active {
                    continue;
                }
                let Some(slot) = SubnetSlot::<T>::get(subnet_id) else {
                    continue;
                };
                if block < slot || !(block - slot).is_multiple_of(epoch_length) {
                    continue;
                }
                let epoch = (block - slot) / epoch_length;
                weight = weight.saturating_add(Self::on_subnet_epoch(subnet_id, epoch));
            }
            weight
        }
    }

    #[pallet::call]
    impl<T: Config> Pallet<T> {
        /// Register a subnet owned by the signer (dev-friendly: no deposit).
        #[pallet::call_index(0)]
        #[pallet::weight(T::WeightInfo::register_subnet())]
        pub fn register_subnet(origin: OriginFor<T>, name: SubnetName) -> DispatchResult {
            let owner = ensure_signed(origin)?;
            ensure!(!name.is_empty(), Error::<T>::InvalidSubnetName);
            let subnet_id = TotalSubnetUids::<T>::get().saturating_add(1);
            TotalSubnetUids::<T>::put(subnet_id);
            SubnetsData::<T>::insert(
                subnet_id,
                SubnetData {
                    id: subnet_id,
                    name: name.clone(),
                    state: SubnetState::Registered,
                    start_epoch: 0,
                },
            );
            SubnetOwner::<T>::insert(subnet_id, owner.clone());
            Self::deposit_event(Event::SubnetRegistered {
                subnet_id,
                owner,
                name,
            });
            Ok(())
        }

        /// Activate a subnet (its owner, or root): epochs start to run.
        #[pallet::call_index(1)]
        #[pallet::weight(T::WeightInfo::activate_subnet())]
        pub fn activate_subnet(origin: OriginFor<T>, subnet_id: SubnetId) -> DispatchResult {
            let who = ensure_signed_or_root(origin)?;
            let mut data = SubnetsData::<T>::get(subnet_id).ok_or(Error::<T>::SubnetNotExist)?;
            if let Some(who) = who {
                ensure!(
                    SubnetOwner::<T>::get(subnet_id) == Some(who),
                    Error::<T>::NotSubnetOwner
                );
            }
            ensure!(
                data.state != SubnetState::Active,
                Error::<T>::SubnetAlreadyActive
            );
            let block: u32 = frame_system::Pallet::<T>::block_number().saturated_into();
            let slot = block % T::EpochLength::get().max(1);
            data.state = SubnetState::Active;
            data.start_epoch = block.saturating_sub(slot) / T::EpochLength::get().max(1);
            SubnetsData::<T>::insert(subnet_id, data);
            SubnetSlot::<T>::insert(subnet_id, slot);
            Self::deposit_event(Event::SubnetActivated { subnet_id, slot });
            Ok(())
        }

        /// Register a node: the signer is the coldkey paying stake and burn.
        #[pallet::call_index(2)]
        #[pallet::weight(T::WeightInfo::register_subnet_node())]
        #[allow(clippy::too_many_arguments)]
        pub fn register_subnet_node(
            origin: OriginFor<T>,
            subnet_id: SubnetId,
            hotkey: T::AccountId,
            peer_id: PeerId,
            bootnode_peer_id: PeerId,
            client_peer_id: PeerId,
            bootnode: Option<Multiaddr>,
            delegate_reward_rate: u128,
            stake_to_be_added: u128,
            unique: Option<NodeData>,
            non_unique: Option<NodeData>,
            max_burn_amount: u128,
        ) -> DispatchResult {
            let coldkey = ensure_signed(origin)?;
            ensure!(
                SubnetsData::<T>::contains_key(subnet_id),
                Error::<T>::SubnetNotExist
            );
            ensure!(coldkey != hotkey, Error::<T>::ColdkeyMatchesHotkey);
            if let Some(owner) = HotkeyOwner::<T>::get(&hotkey) {
                ensure!(owner == coldkey, Error::<T>::HotkeyHasOwner);
            }
            ensure!(
                !HotkeySubnetNodeId::<T>::contains_key(subnet_id, &hotkey),
                Error::<T>::HotkeyAlreadyRegistered
            );
            ensure!(
                TotalSubnetNodes::<T>::get(subnet_id) < MAX_SUBNET_NODES,
                Error::<T>::MaxSubnetNodes
            );
            for id in [&peer_id, &bootnode_peer_id, &client_peer_id] {
                ensure!(is_valid_peer_id(id), Error::<T>::InvalidPeerId);
            }
            ensure!(
                peer_id != bootnode_peer_id && peer_id != client_peer_id,
                Error::<T>::DuplicatePeerIds
            );
            ensure!(
                Self::peer_id_free(subnet_id, &peer_id),
                Error::<T>::PeerIdExist
            );
            ensure!(
                Self::peer_id_free(subnet_id, &bootnode_peer_id),
                Error::<T>::BootnodePeerIdExist
            );
            ensure!(
                Self::peer_id_free(subnet_id, &client_peer_id),
                Error::<T>::ClientPeerIdExist
            );
            if let Some(unique) = &unique {
                ensure!(
                    !UniqueParamSubnetNodeId::<T>::contains_key(subnet_id, unique),
                    Error::<T>::UniqueParamTaken
                );
            }
            ensure!(
                delegate_reward_rate <= TOKEN,
                Error::<T>::InvalidDelegateRewardRate
            );
            let stake =
                AccountSubnetStake::<T>::get(&hotkey, subnet_id).saturating_add(stake_to_be_added);
            ensure!(stake >= T::MinStake::get(), Error::<T>::MinStakeNotReached);
            let burn = T::RegistrationBurn::get();
            ensure!(burn <= max_burn_amount, Error::<T>::MaxBurnAmountExceeded);
            Self::ensure_can_pay(&coldkey, stake_to_be_added.saturating_add(burn))?;

            // Checks done: from here on nothing fails but the transfers, which
            // `ensure_can_pay` just proved possible.
            T::Currency::burn_from(
                &coldkey,
                burn,
                Preservation::Preserve,
                Precision::Exact,
                Fortitude::Polite,
            )?;
            Self::do_add_stake(subnet_id, &coldkey, &hotkey, stake_to_be_added)?;

            let subnet_node_id = TotalSubnetNodeUids::<T>::get(subnet_id).saturating_add(1);
            TotalSubnetNodeUids::<T>::insert(subnet_id, subnet_node_id);
            TotalSubnetNodes::<T>::mutate(subnet_id, |n| *n = n.saturating_add(1));
            HotkeyOwner::<T>::insert(&hotkey, &coldkey);
            HotkeySubnetNodeId::<T>::insert(subnet_id, &hotkey, subnet_node_id);
            PeerIdSubnetNodeId::<T>::insert(subnet_id, &peer_id, subnet_node_id);
            BootnodePeerIdSubnetNodeId::<T>::insert(subnet_id, &bootnode_peer_id, subnet_node_id);
            ClientPeerIdSubnetNodeId::<T>::insert(subnet_id, &client_peer_id, subnet_node_id);
            if let Some(unique) = &unique {
                UniqueParamSubnetNodeId::<T>::insert(subnet_id, unique, subnet_node_id);
            }
            let node = SubnetNode {
                id: subnet_node_id,
                hotkey: hotkey.clone(),
                peer_id: peer_id.clone(),
                bootnode_peer_id,
                client_peer_id,
                bootnode,
                classification: SubnetNodeClassification {
                    node_class: SubnetNodeClass::Registered,
                    start_epoch: Self::subnet_epoch(subnet_id).unwrap_or(0),
                },
                delegate_reward_rate,
                unique,
                non_unique,
            };
            SubnetNodesData::<T>::insert(subnet_id, subnet_node_id, node);
            Self::deposit_event(Event::SubnetNodeRegistered {
                subnet_id,
                subnet_node_id,
                coldkey,
                hotkey,
                peer_id,
                burned: burn,
            });
            Ok(())
        }

        /// Activate a registered (or deactivated) node: it becomes `Idle` from
        /// the next epoch and climbs a class per epoch after that.
        #[pallet::call_index(3)]
        #[pallet::weight(T::WeightInfo::activate_subnet_node())]
        pub fn activate_subnet_node(
            origin: OriginFor<T>,
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
        ) -> DispatchResult {
            let coldkey = ensure_signed(origin)?;
            let epoch = Self::subnet_epoch(subnet_id).ok_or(Error::<T>::SubnetNotActive)?;
            let mut node = Self::owned_node(&coldkey, subnet_id, subnet_node_id)?;
            ensure!(
                node.classification.node_class <= SubnetNodeClass::Registered,
                Error::<T>::SubnetNodeAlreadyActive
            );
            ensure!(
                AccountSubnetStake::<T>::get(&node.hotkey, subnet_id) >= T::MinStake::get(),
                Error::<T>::MinStakeNotReached
            );
            let start_epoch = epoch.saturating_add(1);
            node.classification = SubnetNodeClassification {
                node_class: SubnetNodeClass::Idle,
                start_epoch,
            };
            SubnetNodesData::<T>::insert(subnet_id, subnet_node_id, node);
            Self::deposit_event(Event::SubnetNodeActivated {
                subnet_id,
                subnet_node_id,
                start_epoch,
            });
            Ok(())
        }

        /// Take an active node out of the subnet's epochs (it keeps its stake).
        #[pallet::call_index(4)]
        #[pallet::weight(T::WeightInfo::deactivate_subnet_node())]
        pub fn deactivate_subnet_node(
            origin: OriginFor<T>,
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
        ) -> DispatchResult {
            let coldkey = ensure_signed(origin)?;
            let mut node = Self::owned_node(&coldkey, subnet_id, subnet_node_id)?;
            ensure!(
                node.classification.node_class >= SubnetNodeClass::Idle,
                Error::<T>::SubnetNodeNotActive
            );
            node.classification = SubnetNodeClassification {
                node_class: SubnetNodeClass::Deactivated,
                start_epoch: Self::subnet_epoch(subnet_id).unwrap_or(0),
            };
            SubnetNodesData::<T>::insert(subnet_id, subnet_node_id, node);
            Self::deposit_event(Event::SubnetNodeDeactivated {
                subnet_id,
                subnet_node_id,
            });
            Ok(())
        }

        /// Remove a node and free its PeerIds; the stake stays with the hotkey
        /// until `remove_stake`.
        #[pallet::call_index(5)]
        #[pallet::weight(T::WeightInfo::remove_subnet_node())]
        pub fn remove_subnet_node(
            origin: OriginFor<T>,
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
        ) -> DispatchResult {
            let coldkey = ensure_signed(origin)?;
            let node = Self::owned_node(&coldkey, subnet_id, subnet_node_id)?;
            SubnetNodesData::<T>::remove(subnet_id, subnet_node_id);
            HotkeySubnetNodeId::<T>::remove(subnet_id, &node.hotkey);
            PeerIdSubnetNodeId::<T>::remove(subnet_id, &node.peer_id);
            BootnodePeerIdSubnetNodeId::<T>::remove(subnet_id, &node.bootnode_peer_id);
            ClientPeerIdSubnetNodeId::<T>::remove(subnet_id, &node.client_peer_id);
            if let Some(unique) = &node.unique {
                UniqueParamSubnetNodeId::<T>::remove(subnet_id, unique);
            }
            TotalSubnetNodes::<T>::mutate(subnet_id, |n| *n = n.saturating_sub(1));
            Self::deposit_event(Event::SubnetNodeRemoved {
                subnet_id,
                subnet_node_id,
            });
            Ok(())
        }

        /// Add stake to a node's hotkey from the signing coldkey.
        #[pallet::call_index(6)]
        #[pallet::weight(T::WeightInfo::add_to_stake())]
        pub fn add_to_stake(
            origin: OriginFor<T>,
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
            hotkey: T::AccountId,
            stake_to_be_added: u128,
        ) -> DispatchResult {
            let coldkey = ensure_signed(origin)?;
            let node = Self::owned_node(&coldkey, subnet_id, subnet_node_id)?;
            ensure!(node.hotkey == hotkey, Error::<T>::NotKeyOwner);
            Self::ensure_can_pay(&coldkey, stake_to_be_added)?;
            Self::do_add_stake(subnet_id, &coldkey, &hotkey, stake_to_be_added)
        }

        /// Return stake from a hotkey to its coldkey. A hotkey that still runs
        /// a node must keep at least `MinStake`.
        #[pallet::call_index(7)]
        #[pallet::weight(T::WeightInfo::remove_stake())]
        pub fn remove_stake(
            origin: OriginFor<T>,
            subnet_id: SubnetId,
            hotkey: T::AccountId,
            stake_to_be_removed: u128,
        ) -> DispatchResult {
            let coldkey = ensure_signed(origin)?;
            ensure!(
                HotkeyOwner::<T>::get(&hotkey) == Some(coldkey.clone()),
                Error::<T>::NotKeyOwner
            );
            let stake = AccountSubnetStake::<T>::get(&hotkey, subnet_id);
            ensure!(
                stake >= stake_to_be_removed,
                Error::<T>::NotEnoughStakeToWithdraw
            );
            let remaining = stake - stake_to_be_removed;
            if HotkeySubnetNodeId::<T>::contains_key(subnet_id, &hotkey) {
                ensure!(
                    remaining >= T::MinStake::get(),
                    Error::<T>::MinStakeNotReached
                );
            }
            T::Currency::transfer(
                &Self::account_id(),
                &coldkey,
                stake_to_be_removed,
                Preservation::Expendable,
            )?;
            AccountSubnetStake::<T>::insert(&hotkey, subnet_id, remaining);
            TotalSubnetStake::<T>::mutate(subnet_id, |s| {
                *s = s.saturating_sub(stake_to_be_removed)
            });
            Self::deposit_event(Event::StakeRemoved {
                subnet_id,
                coldkey,
                hotkey,
                amount: stake_to_be_removed,
            });
            Ok(())
        }

        /// The epoch's elected validator (signing with its hotkey) submits its
        /// scores. Once per epoch.
        #[pallet::call_index(8)]
        #[pallet::weight(T::WeightInfo::propose_attestation())]
        pub fn propose_attestation(
            origin: OriginFor<T>,
            subnet_id: SubnetId,
            data: BoundedVec<SubnetNodeConsensusData, ConstU32<MAX_SUBNET_NODES>>,
            args: Option<ConsensusArgs>,
        ) -> DispatchResult {
            let hotkey = ensure_signed(origin)?;
            let epoch = Self::subnet_epoch(subnet_id).ok_or(Error::<T>::SubnetNotActive)?;
            let subnet_node_id = HotkeySubnetNodeId::<T>::get(subnet_id, &hotkey)
                .ok_or(Error::<T>::NotSubnetNode)?;
            let elected = SubnetElectedValidator::<T>::get(subnet_id, epoch)
                .ok_or(Error::<T>::NoElectedValidator)?;
            ensure!(elected == subnet_node_id, Error::<T>::InvalidValidator);
            ensure!(
                !SubnetConsensusSubmission::<T>::contains_key(subnet_id, epoch),
                Error::<T>::SubnetRewardsAlreadySubmitted
            );
            let mut seen = alloc::collections::BTreeSet::new();
            for score in data.iter() {
                ensure!(
                    seen.insert(score.subnet_node_id)
                        && SubnetNodesData::<T>::contains_key(subnet_id, score.subnet_node_id),
                    Error::<T>::InvalidConsensusData
                );
            }
            let block = frame_system::Pallet::<T>::block_number();
            let mut attests = BoundedVec::new();
            attests
                .try_push((subnet_node_id, block))
                .map_err(|_| Error::<T>::InvalidConsensusData)?;
            SubnetConsensusSubmission::<T>::insert(
                subnet_id,
                epoch,
                ConsensusData {
                    validator_id: subnet_node_id,
                    attests,
                    data,
                    args,
                },
            );
            Self::deposit_event(Event::AttestationProposed {
                subnet_id,
                epoch,
                subnet_node_id,
            });
            Ok(())
        }

        /// A `Validator`-class node (signing with its hotkey) attests the
        /// epoch's submission. Once per node and epoch.
        #[pallet::call_index(9)]
        #[pallet::weight(T::WeightInfo::attest())]
        pub fn attest(origin: OriginFor<T>, subnet_id: SubnetId) -> DispatchResult {
            let hotkey = ensure_signed(origin)?;
            let epoch = Self::subnet_epoch(subnet_id).ok_or(Error::<T>::SubnetNotActive)?;
            let subnet_node_id = HotkeySubnetNodeId::<T>::get(subnet_id, &hotkey)
                .ok_or(Error::<T>::NotSubnetNode)?;
            let node = SubnetNodesData::<T>::get(subnet_id, subnet_node_id)
                .ok_or(Error::<T>::InvalidSubnetNodeId)?;
            ensure!(
                node.classification.node_class >= SubnetNodeClass::Validator,
                Error::<T>::NotValidatorClass
            );
            let block = frame_system::Pallet::<T>::block_number();
            SubnetConsensusSubmission::<T>::try_mutate(subnet_id, epoch, |submission| {
                let submission = submission
                    .as_mut()
                    .ok_or(Error::<T>::InvalidSubnetConsensusSubmission)?;
                ensure!(
                    !submission
                        .attests
                        .iter()
                        .any(|(id, _)| *id == subnet_node_id),
                    Error::<T>::AlreadyAttested
                );
                submission
                    .attests
                    .try_push((subnet_node_id, block))
                    .map_err(|_| Error::<T>::AlreadyAttested)?;
                Ok::<_, Error<T>>(())
            })?;
            Self::deposit_event(Event::Attestation {
                subnet_id,
                epoch,
                subnet_node_id,
            });
            Ok(())
        }
    }

    impl<T: Config> Pallet<T> {
        /// The account that holds all stake.
        pub fn account_id() -> T::AccountId {
            T::PalletId::get().into_account_truncating()
        }

        /// The subnet's current epoch, `None` unless it is active.
        pub fn subnet_epoch(subnet_id: SubnetId) -> Option<Epoch> {
            let data = SubnetsData::<T>::get(subnet_id)?;
            if data.state != SubnetState::Active {
                return None;
            }
            let slot = SubnetSlot::<T>::get(subnet_id)?;
            let block: u32 = frame_system::Pallet::<T>::block_number().saturated_into();
            Some(block.saturating_sub(slot) / T::EpochLength::get().max(1))
        }

        /// See [`runtime_api::NetworkRuntimeApi::proof_of_stake`].
        pub fn proof_of_stake(subnet_id: SubnetId, peer_id: Vec<u8>, min_class: u8) -> bool {
            let Some(min_class) = SubnetNodeClass::from_u8(min_class) else {
                return false;
            };
            let Ok(peer_id) = PeerId::try_from(peer_id) else {
                return false;
            };
            let Some(node_id) = PeerIdSubnetNodeId::<T>::get(subnet_id, &peer_id)
                .or_else(|| BootnodePeerIdSubnetNodeId::<T>::get(subnet_id, &peer_id))
                .or_else(|| ClientPeerIdSubnetNodeId::<T>::get(subnet_id, &peer_id))
            else {
                return false;
            };
            let Some(node) = SubnetNodesData::<T>::get(subnet_id, node_id) else {
                return false;
            };
            node.classification.node_class >= min_class
                && AccountSubnetStake::<T>::get(&node.hotkey, subnet_id) >= T::MinStake::get()
        }

        fn peer_id_free(subnet_id: SubnetId, peer_id: &PeerId) -> bool {
            !PeerIdSubnetNodeId::<T>::contains_key(subnet_id, peer_id)
                && !BootnodePeerIdSubnetNodeId::<T>::contains_key(subnet_id, peer_id)
                && !ClientPeerIdSubnetNodeId::<T>::contains_key(subnet_id, peer_id)
        }

        fn owned_node(
            coldkey: &T::AccountId,
            subnet_id: SubnetId,
            subnet_node_id: SubnetNodeId,
        ) -> Result<SubnetNode<T::AccountId>, Error<T>> {
            ensure!(
                SubnetsData::<T>::contains_key(subnet_id),
                Error::<T>::SubnetNotExist
            );
            let node = SubnetNodesData::<T>::get(subnet_id, subnet_node_id)
                .ok_or(Error::<T>::InvalidSubnetNodeId)?;
            ensure!(
                HotkeyOwner::<T>::get(&node.hotkey).as_ref() == Some(coldkey),
                Error::<T>::NotKeyOwner
            );
            Ok(node)
        }

        fn ensure_can_pay(coldkey: &T::AccountId, amount: u128) -> DispatchResult {
            let spendable =
                T::Currency::reducible_balance(coldkey, Preservation::Preserve, Fortitude::Polite);
            ensure!(spendable >= amount, Error::<T>::NotEnoughBalance);
            Ok(())
        }

        fn do_add_stake(
            subnet_id: SubnetId,
            coldkey: &T::AccountId,
            hotkey: &T::AccountId,
            amount: u128,
        ) -> DispatchResult {
            if amount == 0 {
                return Ok(());
            }
            T::Currency::transfer(coldkey, &Self::account_id(), amount, Preservation::Preserve)?;
            AccountSubnetStake::<T>::mutate(hotkey, subnet_id, |s| *s = s.saturating_add(amount));
            TotalSubnetStake::<T>::mutate(subnet_id, |s| *s = s.saturating_add(amount));
            Self::deposit_event(Event::StakeAdded {
                subnet_id,
                coldkey: coldkey.clone(),
                hotkey: hotkey.clone(),
                amount,
            });
            Ok(())
        }

        /// Epoch boundary of one subnet: promote nodes whose time has come,
        /// then elect the epoch's validator among `Validator`-class nodes.
        fn on_subnet_epoch(subnet_id: SubnetId, epoch: Epoch) -> Weight {
            let mut reads = 0u64;
            let mut writes = 0u64;
            let mut validators = Vec::new();
            for (node_id, mut node) in SubnetNodesData::<T>::iter_prefix(subnet_id) {
                reads += 1;
                let class = &node.classification;
                let next = match class.node_class {
                    SubnetNodeClass::Idle
                        if epoch >= class.start_epoch.saturating_add(T::IdleEpochs::get()) =>
                    {
                        Some(SubnetNodeClass::Included)
                    }
                    SubnetNodeClass::Included
                        if epoch >= class.start_epoch.saturating_add(T::IncludedEpochs::get()) =>
                    {
                        Some(SubnetNodeClass::Validator)
                    }
                    _ => None,
                };
                if let Some(node_class) = next {
                    node.classification = SubnetNodeClassification {
                        node_class,
                        start_epoch: epoch,
                    };
                    SubnetNodesData::<T>::insert(subnet_id, node_id, &node);
                    writes += 1;
                    Self::deposit_event(Event::SubnetNodeClassChanged {
                        subnet_id,
                        subnet_node_id: node_id,
                        node_class,
                        epoch,
                    });
                }
                if node.classification.node_class == SubnetNodeClass::Validator {
                    validators.push(node_id);
                }
            }
            if !validators.is_empty() {
                validators.sort_unstable();
                // Deterministic and not chosen by the proposer: mix the parent
                // block hash with subnet and epoch.
                let parent = frame_system::Pallet::<T>::parent_hash();
                let seed = (parent, subnet_id, epoch).using_encoded(blake2_256);
                let index = u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]) as usize
                    % validators.len();
                let subnet_node_id = validators[index];
                SubnetElectedValidator::<T>::insert(subnet_id, epoch, subnet_node_id);
                writes += 1;
                Self::deposit_event(Event::ValidatorElected {
                    subnet_id,
                    epoch,
                    subnet_node_id,
                });
            }
            T::DbWeight::get().reads_writes(reads, writes)
        }
    }

    /// Base58 text (Bitcoin alphabet) of 32 to 64 characters: what `Qm…` (RSA)
    /// and `12D3Koo…` (Ed25519) PeerIds look like.
    pub fn is_valid_peer_id(peer_id: &[u8]) -> bool {
        const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        (32..=64).contains(&peer_id.len()) && peer_id.iter().all(|c| ALPHABET.contains(c))
    }
}
