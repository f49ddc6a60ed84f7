//! Heartbeats count only from staked owners: a staked node that stores
//! heartbeats for keys it made up (each validly signed by its made-up
//! owner) adds nobody to what gated readers see.

mod common;

use std::sync::Arc;
use std::time::Duration;

use mesh_core::validator::{owner_marker, SignatureValidator, HEARTBEAT_KEY};
use mesh_core::{CompositeValidator, Expiration, KeyType, PeerKey, Record};
use mesh_dht::test_utils::{FixedOracle, Testnet};
use mesh_server::heartbeat::{alive_peers, publish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_of_made_up_owners_do_not_count() {
    let oracle = FixedOracle::new([]);
    let keys: Vec<PeerKey> = (0..3)
        .map(|_| PeerKey::generate(KeyType::Ed25519).unwrap())
        .collect();
    for k in &keys {
        oracle.add(k.peer_id());
    }
    let ks = keys.clone();
    let net = Testnet::builder(3)
        .stake_gate(oracle.gate())
        .configure(move |i, c| {
            c.key = ks[i].clone();
            c.refresh_period = Duration::from_secs(1);
        })
        .build()
        .await;
    let nodes = net.into_nodes();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Two honest heartbeats.
    for (node, key) in nodes.iter().zip(&keys).take(2) {
        let r = publish(
            node,
            &key.public(),
            &serde_json::json!({"load": 0}),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert!(r.accepted >= 1, "{r:?}");
    }
    // Node 2 (staked) stores five heartbeats for owners it made up.
    let mut fakes = Vec::new();
    for _ in 0..5 {
        let fake = PeerKey::generate(KeyType::Ed25519).unwrap();
        let mut signer = CompositeValidator::new();
        signer.add(SignatureValidator::new(Arc::new(fake.clone())));
        let record = signer.sign(Record {
            key: HEARTBEAT_KEY.to_vec(),
            subkey: Some(owner_marker(&fake.public())),
            value: serde_json::to_vec(&serde_json::json!({"load": 0})).unwrap(),
            expiration: Expiration::in_(Duration::from_secs(60)),
        });
        let r = nodes[2].store_record(record).await.unwrap();
        assert!(
            r.accepted >= 1,
            "the fake is stored (it is validly signed): {r:?}"
        );
        fakes.push(fake.peer_id());
    }

    // The dictionary holds all seven; readers count the two staked owners.
    let raw = nodes[0]
        .get(HEARTBEAT_KEY.to_vec(), true)
        .await
        .unwrap()
        .expect("heartbeats stored");
    assert_eq!(raw.len(), 7, "{raw:?}");
    for reader in &nodes {
        let alive = alive_peers::<serde_json::Value>(reader).await.unwrap();
        let ids: Vec<_> = alive.iter().map(|h| h.peer_id).collect();
        let mut want = vec![keys[0].peer_id(), keys[1].peer_id()];
        want.sort();
        assert_eq!(ids, want, "made-up owners {fakes:?} counted");
    }
    // Once one of them is staked, its heartbeat counts.
    oracle.add(fakes[0]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let alive = alive_peers::<serde_json::Value>(&nodes[0]).await.unwrap();
        if alive.iter().any(|h| h.peer_id == fakes[0]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a newly staked owner never counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in nodes {
        n.shutdown().await;
    }
}
