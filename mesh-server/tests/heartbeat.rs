//! Heartbeats over a real libp2p network: every node sees every live node
//! with its typed info; a node that stops publishing drops out.

use std::time::Duration;

use mesh_core::{KeyType, PeerKey};
use mesh_dht::Dht;
use mesh_server::heartbeat::{alive_peers, publish, spawn_heartbeats};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ServerInfo {
    model: String,
    queue: u32,
}

async fn node(key: PeerKey, initial_peers: Vec<mesh_dht::Multiaddr>) -> Dht {
    mesh_dht::test_utils::node(key, initial_peers, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_sees_the_live_ones_and_silent_ones_lapse() {
    let keys: Vec<PeerKey> = (0..4)
        .map(|_| PeerKey::generate(KeyType::Ed25519).unwrap())
        .collect();
    let first = node(keys[0].clone(), vec![]).await;
    let addr = first.listen_addrs().await.unwrap()[0].clone();
    let mut nodes = vec![first];
    for key in &keys[1..] {
        nodes.push(node(key.clone(), vec![addr.clone()]).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let period = Duration::from_secs(1);
    let cancels: Vec<CancellationToken> = (0..4).map(|_| CancellationToken::new()).collect();
    for (i, (dht, key)) in nodes.iter().zip(&keys).enumerate() {
        let info = ServerInfo {
            model: "smollm2".into(),
            queue: i as u32,
        };
        spawn_heartbeats(
            dht.clone(),
            key.public(),
            move || info.clone(),
            period,
            cancels[i].clone(),
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    for dht in &nodes {
        let alive = alive_peers::<ServerInfo>(dht).await.unwrap();
        let mut seen: Vec<_> = alive.iter().map(|h| (h.peer_id, h.info.queue)).collect();
        seen.sort_by_key(|(_, q)| *q);
        let expected: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.peer_id(), i as u32))
            .collect();
        assert_eq!(seen, expected, "every node sees all four with their info");
    }

    // Node 3 stops; within two periods (+ slack) it is no longer alive.
    cancels[3].cancel();
    tokio::time::sleep(period * 2 + Duration::from_millis(800)).await;
    let alive = alive_peers::<ServerInfo>(&nodes[0]).await.unwrap();
    let ids: Vec<_> = alive.iter().map(|h| h.peer_id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&keys[3].peer_id()));

    // Info of another shape is skipped, not an error.
    publish(&nodes[1], &keys[1].public(), &"not server info", period)
        .await
        .unwrap();
    let alive = alive_peers::<ServerInfo>(&nodes[0]).await.unwrap();
    assert!(
        alive.iter().all(|h| h.peer_id != keys[1].peer_id()),
        "{alive:?}"
    );
    for c in cancels {
        c.cancel();
    }
    for n in nodes {
        n.shutdown().await;
    }
}
