//! Unit tests of every call and refusal.

use crate::{mock::*, pallet::*, Error, Event, SubnetId, SubnetNodeId};
use polkadot_sdk::frame_support::traits::fungible::Inspect;
use polkadot_sdk::polkadot_sdk_frame::testing_prelude::*;

const ALICE: u64 = 1;
const BOB: u64 = 2;
const CHARLIE: u64 = 3;

fn pid(n: u32) -> PeerId {
    const LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    let mut s = b"12D3KooWRkGLz4YbVmrsWK75VjFTs8NvaBu42xhAmQaP4K".to_vec();
    s.push(LETTERS[(n % 24) as usize]);
    s.push(LETTERS[(n / 24 % 24) as usize]);
    s.try_into().unwrap()
}

fn subnet() -> SubnetId {
    assert_ok!(Network::register_subnet(
        RuntimeOrigin::signed(ALICE),
        b"echo".to_vec().try_into().unwrap()
    ));
    let id = TotalSubnetUids::<Test>::get();
    assert_ok!(Network::activate_subnet(RuntimeOrigin::signed(ALICE), id));
    id
}

fn register(coldkey: u64, hotkey: u64, n: u32, stake: u128) -> DispatchResult {
    Network::register_subnet_node(
        RuntimeOrigin::signed(coldkey),
        1,
        hotkey,
        pid(3 * n),
        pid(3 * n + 1),
        pid(3 * n + 2),
        Some(b"/ip4/127.0.0.1/tcp/31330".to_vec().try_into().unwrap()),
        0,
        stake,
        None,
        None,
        BURN,
    )
}

fn class(subnet_id: SubnetId, node: SubnetNodeId) -> SubnetNodeClass {
    SubnetNodesData::<Test>::get(subnet_id, node)
        .unwrap()
        .classification
        .node_class
}

#[test]
fn register_subnet_then_activate_assigns_slot() {
    new_test_ext().execute_with(|| {
        run_to_block(13);
        assert_ok!(Network::register_subnet(
            RuntimeOrigin::signed(ALICE),
            b"s".to_vec().try_into().unwrap()
        ));
        assert_eq!(Network::subnet_epoch(1), None);
        assert_noop!(
            Network::activate_subnet(RuntimeOrigin::signed(BOB), 1),
            Error::<Test>::NotSubnetOwner
        );
        assert_noop!(
            Network::activate_subnet(RuntimeOrigin::signed(ALICE), 9),
            Error::<Test>::SubnetNotExist
        );
        assert_ok!(Network::activate_subnet(RuntimeOrigin::signed(ALICE), 1));
        assert_eq!(SubnetSlot::<Test>::get(1), Some(3));
        System::assert_last_event(
            Event::SubnetActivated {
                subnet_id: 1,
                slot: 3,
            }
            .into(),
        );
        assert_eq!(Network::subnet_epoch(1), Some(1));
        assert_noop!(
            Network::activate_subnet(RuntimeOrigin::signed(ALICE), 1),
            Error::<Test>::SubnetAlreadyActive
        );
        assert_noop!(
            Network::register_subnet(RuntimeOrigin::signed(ALICE), Default::default()),
            Error::<Test>::InvalidSubnetName
        );
    });
}

#[test]
fn register_node_moves_stake_and_burns() {
    new_test_ext().execute_with(|| {
        subnet();
        let before = Balances::balance(&ALICE);
        assert_ok!(register(ALICE, 101, 0, MIN_STAKE));
        assert_eq!(Balances::balance(&ALICE), before - MIN_STAKE - BURN);
        assert_eq!(Balances::balance(&Network::account_id()), MIN_STAKE);
        assert_eq!(AccountSubnetStake::<Test>::get(101, 1), MIN_STAKE);
        assert_eq!(TotalSubnetStake::<Test>::get(1), MIN_STAKE);
        assert_eq!(HotkeyOwner::<Test>::get(101), Some(ALICE));
        assert_eq!(PeerIdSubnetNodeId::<Test>::get(1, pid(0)), Some(1));
        assert_eq!(class(1, 1), SubnetNodeClass::Registered);
        System::assert_has_event(
            Event::SubnetNodeRegistered {
                subnet_id: 1,
                subnet_node_id: 1,
                coldkey: ALICE,
                hotkey: 101,
                peer_id: pid(0),
                burned: BURN,
            }
            .into(),
        );
    });
}

#[test]
fn register_node_refusals() {
    new_test_ext().execute_with(|| {
        subnet();
        let call = |coldkey, hotkey, peers: [PeerId; 3], stake, max_burn, subnet_id| {
            let [p, b, c] = peers;
            Network::register_subnet_node(
                RuntimeOrigin::signed(coldkey),
                subnet_id,
                hotkey,
                p,
                b,
                c,
                None,
                0,
                stake,
                None,
                None,
                max_burn,
            )
        };
        let peers = || [pid(0), pid(1), pid(2)];
        assert_noop!(
            call(ALICE, 101, peers(), MIN_STAKE, BURN, 7),
            Error::<Test>::SubnetNotExist
        );
        assert_noop!(
            call(ALICE, ALICE, peers(), MIN_STAKE, BURN, 1),
            Error::<Test>::ColdkeyMatchesHotkey
        );
        assert_noop!(
            call(ALICE, 101, peers(), MIN_STAKE - 1, BURN, 1),
            Error::<Test>::MinStakeNotReached
        );
        assert_noop!(
            call(ALICE, 101, peers(), MIN_STAKE, BURN - 1, 1),
            Error::<Test>::MaxBurnAmountExceeded
        );
        assert_noop!(
            call(ALICE, 101, peers(), 2_000 * TOKEN, BURN, 1),
            Error::<Test>::NotEnoughBalance
        );
        let bad: PeerId = b"not a peer id".to_vec().try_into().unwrap();
        assert_noop!(
            call(ALICE, 101, [bad, pid(1), pid(2)], MIN_STAKE, BURN, 1),
            Error::<Test>::InvalidPeerId
        );
        assert_noop!(
            call(ALICE, 101, [pid(0), pid(0), pid(2)], MIN_STAKE, BURN, 1),
            Error::<Test>::DuplicatePeerIds
        );

        assert_ok!(call(ALICE, 101, peers(), MIN_STAKE, BURN, 1));
        assert_noop!(
            call(ALICE, 101, [pid(3), pid(4), pid(5)], MIN_STAKE, BURN, 1),
            Error::<Test>::HotkeyAlreadyRegistered
        );
        assert_noop!(
            call(BOB, 101, [pid(3), pid(4), pid(5)], MIN_STAKE, BURN, 1),
            Error::<Test>::HotkeyHasOwner
        );
        // Every PeerId of a node is taken, whichever role it is reused in.
        assert_noop!(
            call(BOB, 102, [pid(0), pid(4), pid(5)], MIN_STAKE, BURN, 1),
            Error::<Test>::PeerIdExist
        );
        assert_noop!(
            call(BOB, 102, [pid(3), pid(0), pid(5)], MIN_STAKE, BURN, 1),
            Error::<Test>::BootnodePeerIdExist
        );
        assert_noop!(
            call(BOB, 102, [pid(3), pid(4), pid(2)], MIN_STAKE, BURN, 1),
            Error::<Test>::ClientPeerIdExist
        );
        assert_noop!(
            Network::register_subnet_node(
                RuntimeOrigin::signed(BOB),
                1,
                102,
                pid(3),
                pid(4),
                pid(5),
                None,
                TOKEN + 1,
                MIN_STAKE,
                None,
                None,
                BURN
            ),
            Error::<Test>::InvalidDelegateRewardRate
        );
        let unique: NodeData = b"gpu-1".to_vec().try_into().unwrap();
        assert_ok!(Network::register_subnet_node(
            RuntimeOrigin::signed(BOB),
            1,
            102,
            pid(3),
            pid(4),
            pid(5),
            None,
            0,
            MIN_STAKE,
            Some(unique.clone()),
            None,
            BURN
        ));
        assert_noop!(
            Network::register_subnet_node(
                RuntimeOrigin::signed(CHARLIE),
                1,
                103,
                pid(6),
                pid(7),
                pid(8),
                None,
                0,
                MIN_STAKE,
                Some(unique),
                None,
                BURN
            ),
            Error::<Test>::UniqueParamTaken
        );
    });
}

#[test]
fn classes_climb_one_per_epoch_and_a_validator_is_elected() {
    new_test_ext().execute_with(|| {
        subnet(); // slot 1: epochs start at blocks 1, 11, 21, …
        assert_ok!(register(ALICE, 101, 0, MIN_STAKE));
        assert_noop!(
            Network::activate_subnet_node(RuntimeOrigin::signed(BOB), 1, 1),
            Error::<Test>::NotKeyOwner
        );
        assert_noop!(
            Network::activate_subnet_node(RuntimeOrigin::signed(ALICE), 1, 9),
            Error::<Test>::InvalidSubnetNodeId
        );
        assert_ok!(Network::activate_subnet_node(
            RuntimeOrigin::signed(ALICE),
            1,
            1
        ));
        assert_noop!(
            Network::activate_subnet_node(RuntimeOrigin::signed(ALICE), 1, 1),
            Error::<Test>::SubnetNodeAlreadyActive
        );
        assert_eq!(class(1, 1), SubnetNodeClass::Idle);
        let idle_from = SubnetNodesData::<Test>::get(1, 1)
            .unwrap()
            .classification
            .start_epoch;
        assert_eq!(idle_from, 1);
        run_to_block(11); // epoch 1 starts: Idle since 1, not yet a full epoch
        assert_eq!(class(1, 1), SubnetNodeClass::Idle);
        run_to_block(21); // epoch 2
        assert_eq!(class(1, 1), SubnetNodeClass::Included);
        assert_eq!(SubnetElectedValidator::<Test>::get(1, 2), None);
        run_to_block(31); // epoch 3
        assert_eq!(class(1, 1), SubnetNodeClass::Validator);
        assert_eq!(SubnetElectedValidator::<Test>::get(1, 3), Some(1));
        System::assert_has_event(
            Event::ValidatorElected {
                subnet_id: 1,
                epoch: 3,
                subnet_node_id: 1,
            }
            .into(),
        );
    });
}

fn two_validators() {
    subnet();
    assert_ok!(register(ALICE, 101, 0, MIN_STAKE));
    assert_ok!(register(BOB, 102, 1, MIN_STAKE));
    assert_ok!(register(CHARLIE, 103, 2, MIN_STAKE));
    for (coldkey, node) in [(ALICE, 1), (BOB, 2)] {
        assert_ok!(Network::activate_subnet_node(
            RuntimeOrigin::signed(coldkey),
            1,
            node
        ));
    }
    run_to_block(31);
}

#[test]
fn only_the_elected_validator_proposes_once_and_validators_attest_once() {
    new_test_ext().execute_with(|| {
        two_validators();
        let elected = SubnetElectedValidator::<Test>::get(1, 3).unwrap();
        let (proposer, other) = if elected == 1 { (101, 102) } else { (102, 101) };
        let scores: BoundedVec<_, _> = vec![
            SubnetNodeConsensusData {
                subnet_node_id: 1,
                score: TOKEN,
            },
            SubnetNodeConsensusData {
                subnet_node_id: 2,
                score: TOKEN,
            },
        ]
        .try_into()
        .unwrap();
        assert_noop!(
            Network::propose_attestation(RuntimeOrigin::signed(other), 1, scores.clone(), None),
            Error::<Test>::InvalidValidator
        );
        assert_noop!(
            Network::propose_attestation(RuntimeOrigin::signed(999), 1, scores.clone(), None),
            Error::<Test>::NotSubnetNode
        );
        assert_noop!(
            Network::attest(RuntimeOrigin::signed(other), 1),
            Error::<Test>::InvalidSubnetConsensusSubmission
        );
        let dup: BoundedVec<_, _> = vec![
            SubnetNodeConsensusData {
                subnet_node_id: 1,
                score: 1,
            },
            SubnetNodeConsensusData {
                subnet_node_id: 1,
                score: 2,
            },
        ]
        .try_into()
        .unwrap();
        assert_noop!(
            Network::propose_attestation(RuntimeOrigin::signed(proposer), 1, dup, None),
            Error::<Test>::InvalidConsensusData
        );
        assert_ok!(Network::propose_attestation(
            RuntimeOrigin::signed(proposer),
            1,
            scores.clone(),
            None
        ));
        assert_noop!(
            Network::propose_attestation(RuntimeOrigin::signed(proposer), 1, scores, None),
            Error::<Test>::SubnetRewardsAlreadySubmitted
        );
        assert_noop!(
            Network::attest(RuntimeOrigin::signed(proposer), 1),
            Error::<Test>::AlreadyAttested
        );
        // Registered but never activated: not a validator.
        assert_noop!(
            Network::attest(RuntimeOrigin::signed(103), 1),
            Error::<Test>::NotValidatorClass
        );
        assert_ok!(Network::attest(RuntimeOrigin::signed(other), 1));
        assert_noop!(
            Network::attest(RuntimeOrigin::signed(other), 1),
            Error::<Test>::AlreadyAttested
        );
        let submission = SubnetConsensusSubmission::<Test>::get(1, 3).unwrap();
        assert_eq!(submission.validator_id, elected);
        assert_eq!(submission.attests.len(), 2);
        assert_eq!(submission.data.len(), 2);
    });
}

#[test]
fn proof_of_stake_follows_class_stake_and_removal() {
    new_test_ext().execute_with(|| {
        subnet();
        assert_ok!(register(ALICE, 101, 0, MIN_STAKE));
        let as_vec = |p: PeerId| p.into_inner();
        assert!(Network::proof_of_stake(1, as_vec(pid(0)), 1));
        assert!(
            Network::proof_of_stake(1, as_vec(pid(1)), 1),
            "bootnode PeerId counts"
        );
        assert!(
            Network::proof_of_stake(1, as_vec(pid(2)), 1),
            "client PeerId counts"
        );
        assert!(
            !Network::proof_of_stake(1, as_vec(pid(0)), 2),
            "Registered is below Idle"
        );
        assert!(!Network::proof_of_stake(1, as_vec(pid(9)), 0), "a stranger");
        assert!(
            !Network::proof_of_stake(2, as_vec(pid(0)), 0),
            "another subnet"
        );
        assert!(
            !Network::proof_of_stake(1, as_vec(pid(0)), 9),
            "no such class"
        );
        assert!(!Network::proof_of_stake(1, vec![0xff; 100], 0), "oversized");
        assert_ok!(Network::activate_subnet_node(
            RuntimeOrigin::signed(ALICE),
            1,
            1
        ));
        assert!(Network::proof_of_stake(1, as_vec(pid(0)), 2));
        assert_ok!(Network::deactivate_subnet_node(
            RuntimeOrigin::signed(ALICE),
            1,
            1
        ));
        assert!(!Network::proof_of_stake(1, as_vec(pid(0)), 1));
        assert_noop!(
            Network::deactivate_subnet_node(RuntimeOrigin::signed(ALICE), 1, 1),
            Error::<Test>::SubnetNodeNotActive
        );
        assert_ok!(Network::remove_subnet_node(
            RuntimeOrigin::signed(ALICE),
            1,
            1
        ));
        assert!(!Network::proof_of_stake(1, as_vec(pid(0)), 0));
        assert_eq!(PeerIdSubnetNodeId::<Test>::get(1, pid(0)), None);
        // The PeerIds are free again.
        assert_ok!(register(BOB, 102, 0, MIN_STAKE));
    });
}

#[test]
fn stake_add_and_remove_keep_the_minimum_while_registered() {
    new_test_ext().execute_with(|| {
        subnet();
        assert_ok!(register(ALICE, 101, 0, MIN_STAKE));
        assert_noop!(
            Network::add_to_stake(RuntimeOrigin::signed(ALICE), 1, 1, 102, TOKEN),
            Error::<Test>::NotKeyOwner
        );
        assert_ok!(Network::add_to_stake(
            RuntimeOrigin::signed(ALICE),
            1,
            1,
            101,
            5 * TOKEN
        ));
        assert_eq!(
            AccountSubnetStake::<Test>::get(101, 1),
            MIN_STAKE + 5 * TOKEN
        );
        assert_noop!(
            Network::remove_stake(RuntimeOrigin::signed(ALICE), 1, 101, 6 * TOKEN),
            Error::<Test>::MinStakeNotReached
        );
        assert_noop!(
            Network::remove_stake(RuntimeOrigin::signed(BOB), 1, 101, TOKEN),
            Error::<Test>::NotKeyOwner
        );
        let before = Balances::balance(&ALICE);
        assert_ok!(Network::remove_stake(
            RuntimeOrigin::signed(ALICE),
            1,
            101,
            5 * TOKEN
        ));
        assert_eq!(Balances::balance(&ALICE), before + 5 * TOKEN);
        assert_ok!(Network::remove_subnet_node(
            RuntimeOrigin::signed(ALICE),
            1,
            1
        ));
        assert_noop!(
            Network::remove_stake(RuntimeOrigin::signed(ALICE), 1, 101, MIN_STAKE + 1),
            Error::<Test>::NotEnoughStakeToWithdraw
        );
        assert_ok!(Network::remove_stake(
            RuntimeOrigin::signed(ALICE),
            1,
            101,
            MIN_STAKE
        ));
        assert_eq!(AccountSubnetStake::<Test>::get(101, 1), 0);
        assert_eq!(TotalSubnetStake::<Test>::get(1), 0);
        System::assert_last_event(
            Event::StakeRemoved {
                subnet_id: 1,
                coldkey: ALICE,
                hotkey: 101,
                amount: MIN_STAKE,
            }
            .into(),
        );
    });
}

#[test]
fn peer_id_shape() {
    assert!(is_valid_peer_id(
        b"12D3KooWRkGLz4YbVmrsWK75VjFTs8NvaBu42xhAmQaP4KeQxyz1"
    ));
    assert!(is_valid_peer_id(
        b"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
    ));
    assert!(!is_valid_peer_id(
        b"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx50"
    )); // '0'
    assert!(!is_valid_peer_id(b"short"));
}
