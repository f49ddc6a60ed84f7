//! The chain client, the pallet's refusals and the stake oracle against a
//! real `mesh-chain-node --dev` started by the test (build it first with
//! `scripts/build-chain.sh`; `scripts/test.sh` does).

use mesh_chain::devnode::{DevNode, DevNodeOptions};
use mesh_chain::{
    api, chain_stake_oracle, Amount, ChainClient, ChainError, Keypair, RegisterNode, SignerSource,
};
use mesh_core::{NodeClass, PeerId, StakeOracle, SubnetId};
use std::time::{Duration, Instant};

fn key(uri: &str) -> Keypair {
    SignerSource::Phrase(uri.into()).keypair().unwrap()
}

async fn start() -> (DevNode, ChainClient) {
    start_with_blocks(250).await
}

async fn start_with_blocks(block_millis: u64) -> (DevNode, ChainClient) {
    let options = DevNodeOptions {
        block_millis,
        ..Default::default()
    };
    let node = DevNode::start_with(options)
        .expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(node.url()).await.expect("connect");
    (node, client)
}

fn registration(subnet_id: SubnetId, hotkey: &Keypair, stake: u128) -> RegisterNode {
    RegisterNode {
        subnet_id,
        hotkey: hotkey.public_key().to_account_id(),
        peer_id: PeerId::random(),
        bootnode_peer_id: PeerId::random(),
        client_peer_id: PeerId::random(),
        bootnode: Some("/ip4/127.0.0.1/tcp/31330".into()),
        delegate_reward_rate: 0,
        stake_to_be_added: Amount::tokens(stake),
        unique: None,
        non_unique: None,
        max_burn_amount: Amount::tokens(1),
    }
}

fn assert_refused(result: Result<impl std::fmt::Debug, ChainError>, expected: &str) {
    match result {
        Err(ChainError::Module {
            pallet,
            error,
            docs,
        }) => {
            assert_eq!(
                (pallet.as_str(), error.as_str()),
                ("Network", expected),
                "{docs}"
            );
            assert!(!docs.is_empty(), "the error carries its explanation");
        }
        other => panic!("expected Network.{expected}, got {other:?}"),
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_activate_query_and_remove() {
    let (_node, client) = start().await;
    let (alice, bob) = (key("//Alice"), key("//Bob"));
    let subnet = client.create_subnet(&alice, "echo", true).await.unwrap();
    let info = client.epoch_info(subnet).await.unwrap();
    assert_eq!(info.epoch_length, 10);

    let before = client
        .free_balance(&alice.public_key().to_account_id())
        .await
        .unwrap();
    let node = registration(subnet, &bob, 100);
    let quote = client.quote_registration(&alice, &node).await.unwrap();
    assert_eq!(quote.burn, Amount::tokens(1));
    assert!(quote.fee.0 > 0 && quote.balance == before);
    let id = client.register_node(&alice, &node).await.unwrap();
    let after = client
        .free_balance(&alice.public_key().to_account_id())
        .await
        .unwrap();
    assert!(
        before.0 - after.0 >= quote.stake.0 + quote.burn.0,
        "stake and burn left the coldkey"
    );

    let shown = client
        .subnet_node(subnet, id)
        .await
        .unwrap()
        .expect("the node is on chain");
    assert_eq!(shown.class, NodeClass::Registered);
    assert_eq!(shown.stake, 100 * mesh_chain::TOKEN);
    assert_eq!(shown.peer_id, node.peer_id);
    assert_eq!(shown.hotkey, bob.public_key().to_account_id().to_string());
    assert_eq!(
        shown.coldkey.as_deref(),
        Some(alice.public_key().to_account_id().to_string().as_str())
    );
    assert_eq!(
        client.node_id_by_peer(subnet, &node.peer_id).await.unwrap(),
        Some(id)
    );
    assert_eq!(
        client
            .nodes_owned_by(subnet, &alice.public_key().to_account_id())
            .await
            .unwrap(),
        vec![id]
    );

    client.activate_node(&alice, subnet, id).await.unwrap();
    let shown = client.subnet_node(subnet, id).await.unwrap().unwrap();
    assert_eq!(shown.class, NodeClass::Idle);

    // The runtime API and the oracle see the node by any of its PeerIds.
    let watched = chain_stake_oracle(client.clone(), Duration::from_secs(300));
    let oracle = watched.oracle();
    for peer in [node.peer_id, node.bootnode_peer_id, node.client_peer_id] {
        assert!(oracle
            .is_staked(subnet, &peer, NodeClass::Idle)
            .await
            .unwrap());
    }
    assert!(!oracle
        .is_staked(subnet, &node.peer_id, NodeClass::Validator)
        .await
        .unwrap());
    let stranger = PeerId::random();
    assert!(!oracle
        .is_staked(subnet, &stranger, NodeClass::Registered)
        .await
        .unwrap());
    assert!(!oracle
        .is_staked(
            SubnetId::new(subnet.get() + 1),
            &node.peer_id,
            NodeClass::Registered
        )
        .await
        .unwrap());

    // The Hypertensor-style RPC answers the same question.
    let rpc: bool = client
        .rpc()
        .request(
            "network_proofOfStake",
            subxt::rpcs::rpc_params![subnet, node.peer_id.to_base58().into_bytes(), 2u8],
        )
        .await
        .unwrap();
    assert!(rpc);

    // Removal is seen at the next finalized block, long before the 300 s TTL.
    client.remove_node(&alice, subnet, id).await.unwrap();
    wait_until(
        "the oracle drops the removed node",
        Duration::from_secs(10),
        || {
            let oracle = oracle.clone();
            async move {
                !oracle
                    .is_staked(subnet, &node.peer_id, NodeClass::Registered)
                    .await
                    .unwrap()
            }
        },
    )
    .await;
    assert!(client.subnet_node(subnet, id).await.unwrap().is_none());

    // Its stake is withdrawn back to the coldkey.
    client
        .remove_stake(
            &alice,
            subnet,
            &bob.public_key().to_account_id(),
            Amount::tokens(100),
        )
        .await
        .unwrap();
    assert_refused(
        client
            .remove_stake(
                &alice,
                subnet,
                &bob.public_key().to_account_id(),
                Amount::tokens(1),
            )
            .await,
        "NotEnoughStakeToWithdraw",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_named_and_only_the_elected_validator_proposes() {
    // 600 ms blocks: a 10-block epoch (6 s) holds the propose/attest exchange.
    let (_node, client) = start_with_blocks(600).await;
    let alice = key("//Alice");
    let (bob, charlie, dave) = (key("//Bob"), key("//Charlie"), key("//Dave"));
    let subnet = client
        .create_subnet(&alice, "refusals", true)
        .await
        .unwrap();

    assert_refused(
        client
            .register_node(&alice, &registration(subnet, &bob, 99))
            .await,
        "MinStakeNotReached",
    );
    assert_refused(
        client
            .register_node(
                &alice,
                &registration(SubnetId::new(subnet.get() + 7), &bob, 100),
            )
            .await,
        "SubnetNotExist",
    );
    assert_refused(
        client
            .register_node(&alice, &registration(subnet, &alice, 100))
            .await,
        "ColdkeyMatchesHotkey",
    );
    let mut cheap = registration(subnet, &bob, 100);
    cheap.max_burn_amount = Amount(1);
    assert_refused(
        client.register_node(&alice, &cheap).await,
        "MaxBurnAmountExceeded",
    );

    let first = registration(subnet, &bob, 100);
    let bob_id = client.register_node(&alice, &first).await.unwrap();
    let mut duplicate = registration(subnet, &charlie, 100);
    duplicate.peer_id = first.peer_id;
    assert_refused(
        client.register_node(&alice, &duplicate).await,
        "PeerIdExist",
    );
    let charlie_id = client
        .register_node(&alice, &registration(subnet, &charlie, 100))
        .await
        .unwrap();
    let dave_id = client
        .register_node(&alice, &registration(subnet, &dave, 100))
        .await
        .unwrap();
    client.activate_node(&alice, subnet, bob_id).await.unwrap();
    client
        .activate_node(&alice, subnet, charlie_id)
        .await
        .unwrap();
    assert_refused(
        client.activate_node(&alice, subnet, bob_id).await,
        "SubnetNodeAlreadyActive",
    );
    assert_refused(
        client.activate_node(&bob, subnet, dave_id).await,
        "NotKeyOwner",
    );

    use api::runtime_types::bounded_collections::bounded_vec::BoundedVec;
    use api::runtime_types::pallet_network::pallet::SubnetNodeConsensusData;
    let scores = BoundedVec(vec![
        SubnetNodeConsensusData {
            subnet_node_id: bob_id,
            score: mesh_chain::TOKEN,
        },
        SubnetNodeConsensusData {
            subnet_node_id: charlie_id,
            score: mesh_chain::TOKEN,
        },
    ]);
    let propose = api::tx()
        .network()
        .propose_attestation(subnet.get(), scores, None);
    let attest = api::tx().network().attest(subnet.get());

    // Bob and Charlie climb Idle → Included → Validator; then one is elected
    // each epoch. The exchange below must happen inside one epoch (6 s): start
    // it early in an epoch, and on a loaded machine where it spills over into
    // the next epoch, run it again there.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut completed = false;
    while !completed {
        assert!(
            Instant::now() < deadline,
            "no complete exchange within one epoch in time"
        );
        let info = client.epoch_info(subnet).await.unwrap();
        let mut both_validators = true;
        for id in [bob_id, charlie_id] {
            let class = client.subnet_node(subnet, id).await.unwrap().unwrap().class;
            both_validators &= class == NodeClass::Validator;
        }
        let elected = client.elected_validator(subnet, info.epoch).await.unwrap();
        let Some(elected) = elected.filter(|_| both_validators && info.blocks_into_epoch <= 1)
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        assert!(
            elected == bob_id || elected == charlie_id,
            "elected {elected}"
        );
        let (proposer, other) = if elected == bob_id {
            (&bob, &charlie)
        } else {
            (&charlie, &bob)
        };
        let by_other = client.submit(&propose, other).await.map(drop);
        let by_proposer = client.submit(&propose, proposer).await.map(drop);
        let again = client.submit(&propose, proposer).await.map(drop);
        let attested = client.submit(&attest, other).await.map(drop);
        let attested_again = client.submit(&attest, other).await.map(drop);
        if client.epoch_info(subnet).await.unwrap().epoch != info.epoch {
            eprintln!("the exchange spilled into the next epoch; again");
            continue;
        }
        assert_refused(by_other, "InvalidValidator");
        by_proposer.unwrap();
        assert_refused(again, "SubnetRewardsAlreadySubmitted");
        attested.unwrap();
        assert_refused(attested_again, "AlreadyAttested");
        let submission = client
            .consensus_submission(subnet, info.epoch)
            .await
            .unwrap();
        assert_eq!(
            submission,
            Some((elected, 2)),
            "the proposer and one attestation"
        );
        completed = true;
    }
    // Not a validator, whatever the epoch: Dave never activated.
    assert_refused(
        client.submit(&propose, &dave).await.map(drop),
        "InvalidValidator",
    );
    assert_refused(
        client.submit(&attest, &dave).await.map(drop),
        "NotValidatorClass",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_metadata_matches_the_node() {
    let (_node, client) = start().await;
    let live = client.fetch_metadata_bytes().await.unwrap();
    let pinned = include_bytes!("../metadata/mesh-dev.scale");
    assert!(
        live == pinned,
        "chain/metadata/mesh-dev.scale is stale: run scripts/update-chain-metadata.sh and commit it"
    );
    assert!(client.codegen_matches_node().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_chain_is_a_clear_error() {
    let err = ChainClient::connect("ws://127.0.0.1:1").await.unwrap_err();
    assert!(matches!(err, ChainError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("ws://127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_the_node_restarts() {
    let state = tempfile::tempdir().unwrap();
    let options = DevNodeOptions {
        base_path: Some(state.path().to_owned()),
        ..Default::default()
    };
    let node = DevNode::start_with(options.clone()).expect("start the node");
    let client = ChainClient::connect(node.url()).await.unwrap();
    let port = node.rpc_port();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = client.finalized_block().await.unwrap();
    assert!(before > 0);
    drop(node); // the connection drops
                // The node comes back on the same port with the same chain.
    let options = DevNodeOptions {
        rpc_port: Some(port),
        ..options
    };
    let _node = DevNode::start_with(options).expect("restart the node");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.finalized_block()).await {
            Ok(Ok(block)) => {
                assert!(
                    block >= before,
                    "the same chain continues: {before} then {block}"
                );
                break;
            }
            failure => {
                assert!(
                    Instant::now() < deadline,
                    "no reconnection in 60 s: {failure:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // And transactions work again on the new connection.
    let subnet = client
        .create_subnet(&key("//Alice"), "after-restart", true)
        .await
        .unwrap();
    assert_eq!(subnet, SubnetId::new(1));
}
