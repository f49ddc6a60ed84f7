//! Helpers shared by the integration tests: real nodes on loopback.

#![allow(dead_code, unreachable_pub)]

pub mod raw;

use std::time::Duration;

use mesh_core::{Expiration, KeyType, PeerKey};
use mesh_dht::test_utils::Testnet;
use mesh_dht::{Dht, DhtConfig, Multiaddr};

/// Which transport the test network uses.
#[derive(Clone, Copy, Debug)]
pub enum Net {
    Tcp,
    Quic,
    Memory,
}

pub fn listen_addr(net: Net) -> Multiaddr {
    match net {
        Net::Tcp => "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        Net::Quic => "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        Net::Memory => format!("/memory/{}", rand::random::<u64>())
            .parse()
            .unwrap(),
    }
}

/// A config for a node of a test network: short timeouts, loopback.
pub fn config(net: Net, initial_peers: Vec<Multiaddr>) -> DhtConfig {
    let mut c = DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
    c.subnet_id = mesh_dht::test_utils::TEST_SUBNET;
    c.listen = vec![listen_addr(net)];
    c.initial_peers = initial_peers;
    c.bootstrap_timeout = Duration::from_secs(10);
    c.request_timeout = Duration::from_secs(5);
    c
}

/// The address to join `dht` through, for transport `net`.
pub async fn addr_of(dht: &Dht, net: Net) -> Multiaddr {
    let want = match net {
        Net::Tcp => "/tcp/",
        Net::Quic => "/quic-v1",
        Net::Memory => "/memory/",
    };
    dht.listen_addrs()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.to_string().contains(want))
        .expect("node listens on the transport")
}

/// Starts `n` server nodes on transport `net` ([`Testnet`]: the first
/// alone, each next one joining through up to three earlier nodes).
pub async fn network(n: usize, net: Net) -> Vec<Dht> {
    let nodes = Testnet::builder(n)
        .configure(move |_, c| c.listen = vec![listen_addr(net)])
        .build()
        .await
        .into_nodes();
    // Let identify spread addresses and a refresh round fill the tables.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes
}

pub fn in_secs(s: u64) -> Expiration {
    Expiration::in_(Duration::from_secs(s))
}

pub async fn shutdown(nodes: &[Dht]) {
    for n in nodes {
        n.shutdown().await;
    }
}
