//! Stake-gated admission across real libp2p nodes and the real dev chain:
//! only peers staked on chain enter routing tables, may store and reach
//! anyone over pubsub; a node removed on chain is dropped at the next refresh.

mod common;

use std::time::{Duration, Instant};

use common::{addr_of, in_secs, Net};
use mesh_chain::devnode::{register_dev_node, DevNode};
use mesh_chain::{chain_stake_oracle, ChainClient, SignerSource};
use mesh_core::{KeyType, NodeClass, PeerId, PeerKey};
use mesh_dht::{Dht, DhtConfig, Multiaddr, RefusalKind, StakeGate, Topic};

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(key: PeerKey, initial_peers: Vec<Multiaddr>, gate: &StakeGate) -> Dht {
    let mut config = DhtConfig::new(key);
    config.subnet_id = gate.subnet_id;
    config.listen = vec![common::listen_addr(Net::Tcp)];
    config.initial_peers = initial_peers;
    config.refresh_period = Duration::from_secs(1);
    config.bootstrap_timeout = Duration::from_secs(10);
    config.request_timeout = Duration::from_secs(5);
    config.stake_gate = Some(gate.clone());
    Dht::start(config).await.expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_staked_peers_enter_routing_tables_and_store() {
    let chain = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let alice = SignerSource::Phrase("//Alice".into()).keypair().unwrap();
    let subnet = client.create_subnet(&alice, "gated", true).await.unwrap();

    let keys: Vec<PeerKey> = (0..3)
        .map(|_| PeerKey::generate(KeyType::Ed25519).unwrap())
        .collect();
    let (a_id, b_id, c_id) = (keys[0].peer_id(), keys[1].peer_id(), keys[2].peer_id());
    let mut node_ids = Vec::new();
    for (peer_id, hotkey) in [(a_id, "//Bob"), (b_id, "//Charlie")] {
        let hotkey = SignerSource::Phrase(hotkey.into()).keypair().unwrap();
        node_ids.push(
            register_dev_node(&client, &alice, subnet, &hotkey, peer_id)
                .await
                .unwrap(),
        );
    }

    let watched = chain_stake_oracle(client.clone(), Duration::from_secs(300));
    let gate = StakeGate::new(watched.oracle(), subnet, NodeClass::Registered);
    let mut keys = keys.into_iter();
    let a = start(keys.next().unwrap(), vec![], &gate).await;
    let a_addr = addr_of(&a, Net::Tcp).await;
    let b = start(keys.next().unwrap(), vec![a_addr.clone()], &gate).await;
    let c = start(keys.next().unwrap(), vec![a_addr], &gate).await; // not staked

    wait_until("staked a and b know each other", || async {
        a.routing_table().await.unwrap().contains(&b_id)
            && b.routing_table().await.unwrap().contains(&a_id)
    })
    .await;
    // Several refresh rounds later the unstaked peer is still in nobody's table.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!a.routing_table().await.unwrap().contains(&c_id));
    assert!(!b.routing_table().await.unwrap().contains(&c_id));

    // The unstaked peer's writes are refused by every staked replica, with the reason.
    let report = c
        .store(b"from-c".to_vec(), None, b"x".to_vec(), in_secs(60))
        .await
        .unwrap();
    let refusers: Vec<PeerId> = report
        .refused
        .iter()
        .filter(|r| r.kind == RefusalKind::NotStaked && r.reason.contains("not staked"))
        .map(|r| r.peer)
        .collect();
    assert!(
        refusers.contains(&a_id) && refusers.contains(&b_id),
        "{report:?}"
    );
    // A staked peer's writes are accepted, and reads stay open to everyone.
    let report = b
        .store(b"from-b".to_vec(), None, b"hello".to_vec(), in_secs(60))
        .await
        .unwrap();
    assert!(report.accepted >= 2, "b and a accept: {report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    let read = c.get(b"from-b".to_vec(), true).await.unwrap();
    assert!(read.is_some(), "an unstaked peer may read");

    // Pubsub: the unstaked peer's messages reach nobody; b's reach a (and c,
    // since reading stays open).
    let topic = Topic::new("gated-news").unwrap();
    let mut a_sub = a.pubsub().subscribe(&topic).await.unwrap();
    let mut c_sub = c.pubsub().subscribe(&topic).await.unwrap();
    let _b_sub = b.pubsub().subscribe(&topic).await.unwrap();
    wait_until("c and b see a on the topic", || async {
        c.pubsub().peers(&topic).await.unwrap().contains(&a_id)
            && b.pubsub().peers(&topic).await.unwrap().contains(&a_id)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a gossipsub heartbeat
    c.pubsub()
        .publish(&topic, b"from-c".to_vec())
        .await
        .unwrap();
    b.pubsub()
        .publish(&topic, b"from-b".to_vec())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), a_sub.recv())
        .await
        .expect("a receives b's message")
        .unwrap();
    assert_eq!(
        (first.data.as_slice(), first.author),
        (b"from-b".as_slice(), b_id)
    );
    let more = tokio::time::timeout(Duration::from_millis(1000), a_sub.recv()).await;
    assert!(more.is_err(), "nothing from the unstaked c: {more:?}");
    let at_c = tokio::time::timeout(Duration::from_secs(20), c_sub.recv())
        .await
        .expect("c may read")
        .unwrap();
    assert_eq!(at_c.data, b"from-b");
    let score = a.pubsub().peer_score(c_id).await.unwrap();
    assert!(score.is_some_and(|s| s < 0.0), "a penalised c: {score:?}");

    // b is removed on chain: a drops it within a refresh or two.
    client
        .remove_node(&alice, subnet, node_ids[1])
        .await
        .unwrap();
    wait_until("a drops the removed b", || async {
        !a.routing_table().await.unwrap().contains(&b_id)
    })
    .await;
    let report = b
        .store(b"late".to_vec(), None, b"y".to_vec(), in_secs(60))
        .await
        .unwrap();
    assert!(
        report
            .refused
            .iter()
            .any(|r| r.peer == a_id && r.kind == RefusalKind::NotStaked),
        "{report:?}"
    );
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// A node that joined while its initial peer was not staked yet (its
/// routing table stayed empty) joins once the peer is: it asks its initial
/// peers again every refresh while its table is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_initial_peer_gets_staked_later_joins_then() {
    let chain = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let alice = SignerSource::Phrase("//Alice".into()).keypair().unwrap();
    let subnet = client.create_subnet(&alice, "late", true).await.unwrap();
    let (a_key, b_key) = (
        PeerKey::generate(KeyType::Ed25519).unwrap(),
        PeerKey::generate(KeyType::Ed25519).unwrap(),
    );
    let (a_id, b_id) = (a_key.peer_id(), b_key.peer_id());
    let bob = SignerSource::Phrase("//Bob".into()).keypair().unwrap();
    register_dev_node(&client, &alice, subnet, &bob, b_id)
        .await
        .unwrap();

    let watched = chain_stake_oracle(client.clone(), Duration::from_secs(300));
    let gate = StakeGate::new(watched.oracle(), subnet, NodeClass::Registered);
    let a = start(a_key, vec![], &gate).await;
    let b = start(b_key, vec![addr_of(&a, Net::Tcp).await], &gate).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        b.routing_table().await.unwrap().is_empty(),
        "a is not staked yet: b's table stays empty"
    );

    let charlie = SignerSource::Phrase("//Charlie".into()).keypair().unwrap();
    register_dev_node(&client, &alice, subnet, &charlie, a_id)
        .await
        .unwrap();
    wait_until("b finds a in its table once a is staked", || async {
        b.routing_table().await.unwrap().contains(&a_id)
    })
    .await;
    wait_until("and a finds b", || async {
        a.routing_table().await.unwrap().contains(&b_id)
    })
    .await;
    b.shutdown().await;
    a.shutdown().await;
}
