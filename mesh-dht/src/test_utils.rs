//! Test utilities (feature `test-utils`): real nodes on loopback, and a
//! fixed stake oracle for tests of logic that only need "staked or not".
//!
//! Tests that prove a gate against the real chain use the dev chain
//! (`mesh_chain::devnode`); everything else builds its network here.
//!
//! ```no_run
//! # async fn demo() {
//! use mesh_dht::test_utils::Testnet;
//! let net = Testnet::builder(4).subnet(mesh_core::SubnetId::new(7)).build().await;
//! let report = net.node(0).store(b"k".to_vec(), None, b"v".to_vec(),
//!     mesh_core::Expiration::in_(std::time::Duration::from_secs(60))).await.unwrap();
//! assert!(report.accepted >= 1);
//! net.shutdown().await;
//! # }
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use mesh_core::stake::StakeFuture;
use mesh_core::{KeyType, NodeClass, PeerKey, StakeGate, StakeOracle, SubnetId};

use crate::{Dht, DhtConfig};

/// A stake oracle that calls exactly its peers staked (in every subnet, at
/// every class). Peers can be added and removed while it is in use.
#[derive(Debug, Default)]
pub struct FixedOracle {
    staked: Mutex<HashSet<PeerId>>,
}

impl FixedOracle {
    /// Staked: exactly `peers`.
    pub fn new(peers: impl IntoIterator<Item = PeerId>) -> Arc<Self> {
        Arc::new(Self {
            staked: Mutex::new(peers.into_iter().collect()),
        })
    }

    /// Stakes `peer`.
    pub fn add(&self, peer: PeerId) {
        self.staked.lock().expect("oracle lock").insert(peer);
    }

    /// Unstakes `peer`.
    pub fn remove(&self, peer: &PeerId) {
        self.staked.lock().expect("oracle lock").remove(peer);
    }

    /// A gate over this oracle (subnet 1, class `Registered`).
    pub fn gate(self: &Arc<Self>) -> StakeGate {
        StakeGate::new(self.clone(), TEST_SUBNET, NodeClass::Registered)
    }
}

impl StakeOracle for FixedOracle {
    fn is_staked<'a>(&'a self, _: SubnetId, peer: &'a PeerId, _: NodeClass) -> StakeFuture<'a> {
        let staked = self.staked.lock().expect("oracle lock").contains(peer);
        Box::pin(async move { Ok(staked) })
    }
}

/// A node config for tests: subnet `subnet`, `key`, TCP on 127.0.0.1, short
/// timeouts.
pub fn config(subnet: SubnetId, key: PeerKey, initial_peers: Vec<Multiaddr>) -> DhtConfig {
    let mut c = DhtConfig::new(key);
    c.subnet_id = subnet;
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid address")];
    c.initial_peers = initial_peers;
    c.bootstrap_timeout = Duration::from_secs(10);
    c.request_timeout = Duration::from_secs(5);
    c
}

/// Starts one node of [`TEST_SUBNET`] with `key` (a client with `client_mode`).
pub async fn node(key: PeerKey, initial_peers: Vec<Multiaddr>, client_mode: bool) -> Dht {
    let mut c = config(TEST_SUBNET, key, initial_peers);
    c.client_mode = client_mode;
    Dht::start(c).await.expect("test node starts")
}

/// The first address `dht` listens on, with its `/p2p/` suffix.
pub async fn addr(dht: &Dht) -> Multiaddr {
    dht.listen_addrs()
        .await
        .expect("node runs")
        .into_iter()
        .next()
        .expect("node listens")
}

/// The subnet test networks run in unless told otherwise.
pub const TEST_SUBNET: SubnetId = SubnetId::new(1);

type Tweak = Box<dyn Fn(usize, &mut DhtConfig) + Send + Sync>;

/// Builds a [`Testnet`].
pub struct TestnetBuilder {
    n: usize,
    subnet: SubnetId,
    gate: Option<StakeGate>,
    tweak: Option<Tweak>,
}

impl TestnetBuilder {
    /// The subnet (default 1, the subnet [`FixedOracle::gate`] asks about).
    pub fn subnet(mut self, subnet: SubnetId) -> Self {
        self.subnet = subnet;
        self
    }

    /// Every node runs this stake gate.
    pub fn stake_gate(mut self, gate: StakeGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Changes node `i`'s config before it starts.
    pub fn configure(mut self, f: impl Fn(usize, &mut DhtConfig) + Send + Sync + 'static) -> Self {
        self.tweak = Some(Box::new(f));
        self
    }

    /// Starts the nodes: the first alone, each next one joining through up
    /// to three earlier ones.
    pub async fn build(self) -> Testnet {
        let mut nodes: Vec<Dht> = Vec::new();
        for i in 0..self.n {
            let mut peers = Vec::new();
            for j in [0, i / 2, i.saturating_sub(1)] {
                if j < i {
                    let a = addr(&nodes[j]).await;
                    if !peers.contains(&a) {
                        peers.push(a);
                    }
                }
            }
            let key = PeerKey::generate(KeyType::Ed25519).expect("key");
            let mut c = config(self.subnet, key, peers);
            c.stake_gate = self.gate.clone();
            if let Some(tweak) = &self.tweak {
                tweak(i, &mut c);
            }
            nodes.push(Dht::start(c).await.expect("test node starts"));
        }
        Testnet { nodes }
    }
}

/// N real nodes on loopback, joined to each other.
#[derive(Debug)]
pub struct Testnet {
    nodes: Vec<Dht>,
}

impl Testnet {
    /// `n` nodes of subnet 1, no stake gate.
    pub fn builder(n: usize) -> TestnetBuilder {
        TestnetBuilder {
            n,
            subnet: TEST_SUBNET,
            gate: None,
            tweak: None,
        }
    }

    /// The nodes, in the order they started.
    pub fn nodes(&self) -> &[Dht] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Dht {
        &self.nodes[i]
    }

    /// The nodes, to own them.
    pub fn into_nodes(self) -> Vec<Dht> {
        self.nodes
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}
