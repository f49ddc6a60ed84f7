//! A whole subnet on loopback with the real dev chain: three staked nodes
//! running the reference echo subnet through the runtime, and one node that
//! is not staked.
//!
//! - calls are signed end to end (the signature authorizer is in front);
//! - the unstaked node is refused at every gate: it is in nobody's routing
//!   table, its stores (its heartbeat too) are refused as not staked, and
//!   its RPCs are refused by the stake authorizer;
//! - the staked nodes call each other (unary and streaming);
//! - a full epoch: the elected validator proposes the scores it derived
//!   from heartbeats and the two others attest; read back from the chain;
//! - a node that restarts with the same key rejoins: the same PeerId, back
//!   in the routing tables, serving and calling RPC again.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{addr_of, Net};
use mesh_chain::devnode::{register_dev_node, DevNode, DevNodeOptions};
use mesh_chain::{
    chain_stake_oracle, ChainClient, HotkeyChain, Keypair, SignerSource, WatchedStakeOracle,
};
use mesh_core::consensus::{ConsensusChain, Submission};
use mesh_core::{KeyType, NodeClass, PeerId, PeerKey};
use mesh_dht::{DhtConfig, Multiaddr, RefusalKind, StakeGate};
use mesh_server::heartbeat::alive_peers;
use mesh_server::signature::SignedChannel;
use mesh_server::{ChainHooks, Runtime, RuntimeConfig, StakeAuthorizer};
use mesh_subnet_echo::proto::echo_client::EchoClient;
use mesh_subnet_echo::proto::{CountRequest, SayRequest};
use mesh_subnet_echo::{EchoInfo, EchoSubnet, ALIVE_SCORE};

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn signer(uri: &str) -> Keypair {
    SignerSource::Phrase(uri.into()).keypair().unwrap()
}

struct Subnet {
    client: ChainClient,
    subnet_id: mesh_core::SubnetId,
    oracle: WatchedStakeOracle,
}

impl Subnet {
    /// The dev chain (a block every 300 ms) and an echo subnet on it,
    /// registered and activated by //Alice.
    async fn start() -> (DevNode, Subnet) {
        let chain = DevNode::start_with(DevNodeOptions {
            block_millis: 300,
            ..Default::default()
        })
        .expect("start mesh-chain-node (run scripts/build-chain.sh first)");
        let client = ChainClient::connect(chain.url()).await.unwrap();
        let subnet_id = client
            .create_subnet(&signer("//Alice"), "echo", true)
            .await
            .unwrap();
        let subnet = Subnet {
            client: client.clone(),
            subnet_id,
            oracle: chain_stake_oracle(client, Duration::from_secs(300)),
        };
        (chain, subnet)
    }

    /// A node's config: stake gate on the DHT, rate limit, stake and
    /// signature in front of RPC (as `mesh-server` orders them), consensus
    /// signed by `hotkey`.
    fn config(&self, key: PeerKey, initial: Vec<Multiaddr>, hotkey: &str) -> RuntimeConfig {
        let local = key.peer_id();
        let gate = StakeGate::new(self.oracle.oracle(), self.subnet_id, NodeClass::Registered);
        let mut dht = DhtConfig::new(key);
        dht.subnet_id = self.subnet_id;
        dht.listen = vec![common::listen_addr(Net::Tcp)];
        dht.initial_peers = initial;
        dht.refresh_period = Duration::from_secs(1);
        dht.bootstrap_timeout = Duration::from_secs(10);
        dht.request_timeout = Duration::from_secs(5);
        dht.stake_gate = Some(gate);
        let authorizers = mesh_server::standard_authorizers(
            local,
            Some(StakeAuthorizer::new(
                self.oracle.oracle(),
                self.subnet_id,
                NodeClass::Registered,
            )),
        );
        RuntimeConfig {
            dht,
            update_period: Duration::from_secs(1),
            authorizers,
            chain: Some(ChainHooks {
                chain: Arc::new(HotkeyChain::new(self.client.clone(), signer(hotkey))),
                poll: Duration::from_millis(100),
                // 15 % of a 10-block dev epoch is 1.5 blocks.
                attest_window: 0.5,
            }),
        }
    }
}

async fn say(channel: SignedChannel, text: &str) -> Result<String, tonic::Status> {
    let reply = EchoClient::new(channel)
        .say(SayRequest {
            text: text.into(),
            delay_ms: 0,
        })
        .await?
        .into_inner();
    assert_eq!(reply.text, text);
    Ok(reply.caller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staked_subnet_serves_refuses_the_unstaked_reaches_consensus_and_rejoins() {
    let (_chain, subnet) = Subnet::start().await;
    let (client, subnet_id, alice) = (subnet.client.clone(), subnet.subnet_id, signer("//Alice"));

    let hotkeys = ["//Bob", "//Charlie", "//Dave"];
    let keys: Vec<PeerKey> = (0..3)
        .map(|_| PeerKey::generate(KeyType::Ed25519).unwrap())
        .collect();
    let mut node_ids = Vec::new();
    for (key, hotkey) in keys.iter().zip(hotkeys) {
        let id = register_dev_node(&client, &alice, subnet_id, &signer(hotkey), key.peer_id())
            .await
            .unwrap();
        client.activate_node(&alice, subnet_id, id).await.unwrap();
        node_ids.push(id);
    }

    let mut nodes = Vec::new();
    let mut first: Option<Multiaddr> = None;
    for (key, hotkey) in keys.iter().zip(hotkeys) {
        let config = subnet.config(key.clone(), first.iter().cloned().collect(), hotkey);
        let node = Runtime::start(config, Arc::new(EchoSubnet::new()))
            .await
            .expect("a staked node starts");
        if first.is_none() {
            first = Some(addr_of(&node.context().dht, Net::Tcp).await);
        }
        nodes.push(node);
    }
    let ids: Vec<PeerId> = keys.iter().map(PeerKey::peer_id).collect();
    // Not staked: registered nowhere, with a hotkey that has no node.
    let outsider_key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let outsider_id = outsider_key.peer_id();
    let outsider = Runtime::start(
        subnet.config(outsider_key, vec![first.clone().unwrap()], "//Eve"),
        Arc::new(EchoSubnet::new()),
    )
    .await
    .expect("the unstaked node starts (reads stay open)");

    // Staked nodes serve each other, unary and streaming.
    let (a, b) = (&nodes[0], &nodes[1]);
    let caller = say(b.context().client(ids[0]), "hello").await.unwrap();
    assert_eq!(caller, ids[1].to_base58());
    let mut counts = EchoClient::new(a.context().client(ids[2]))
        .count(CountRequest {
            up_to: 5,
            delay_ms: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(item) = counts.message().await.unwrap() {
        got.push(item.n);
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5]);

    // Every staked node sees the three staked heartbeats, never the outsider's.
    wait_until(
        "heartbeats of the staked nodes",
        Duration::from_secs(30),
        || async {
            let alive = alive_peers::<EchoInfo>(&b.context().dht)
                .await
                .unwrap_or_default();
            ids.iter().all(|id| alive.iter().any(|h| &h.peer_id == id))
        },
    )
    .await;

    // Gate 1: routing tables.
    for node in &nodes {
        let table = node.context().dht.routing_table().await.unwrap();
        assert!(!table.contains(&outsider_id), "outsider in a routing table");
    }
    // Gate 2: stores. The outsider must first know every staked node (it
    // learns them by its own lookups: staked nodes keep it out of their
    // tables but still answer its reads); a store goes only to the peers its
    // own table names, since a refused store names no closer peers.
    wait_until(
        "the outsider's routing table names every staked node",
        Duration::from_secs(30),
        || async {
            let table = outsider.context().dht.routing_table().await.unwrap();
            ids.iter().all(|id| table.contains(id))
        },
    )
    .await;
    let report = outsider
        .context()
        .dht
        .store(
            b"outsider".to_vec(),
            None,
            b"x".to_vec(),
            common::in_secs(60),
        )
        .await
        .unwrap();
    // Only its own store takes it: every staked replica refuses.
    assert!(report.accepted <= 1, "{report:?}");
    for id in &ids {
        assert!(
            report
                .refused
                .iter()
                .any(|r| r.kind == RefusalKind::NotStaked && &r.peer == id),
            "{id} refuses: {report:?}"
        );
    }
    let alive = alive_peers::<EchoInfo>(&a.context().dht).await.unwrap();
    assert!(alive.iter().all(|h| h.peer_id != outsider_id));
    // Gate 3: RPC.
    let status = say(outsider.context().client(ids[0]), "let me in")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().starts_with("stake: ") && status.message().contains("not staked"),
        "{status:?}"
    );
    assert_eq!(
        a.auth_metrics().refused("stake"),
        1,
        "the refusal is counted"
    );
    assert!(a.auth_metrics().allowed() >= 1);

    // A full epoch on chain: proposed by the elected node, attested by the two others,
    // with every staked node's score and none for the outsider.
    let reader = HotkeyChain::new(client.clone(), signer("//Bob"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let (epoch, submission): (u32, Submission) = loop {
        assert!(
            Instant::now() < deadline,
            "no fully attested submission within 120 s"
        );
        let now = client.epoch_info(subnet_id).await.unwrap().epoch;
        let mut found = None;
        for e in now.saturating_sub(3)..now {
            if let Some(s) = reader.submission(subnet_id, e).await.unwrap() {
                if s.attested_by.len() == 3 {
                    found = Some((e, s));
                }
            }
        }
        if let Some(found) = found {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        client.elected_validator(subnet_id, epoch).await.unwrap(),
        Some(submission.validator),
        "the elected node proposed"
    );
    let mut attesters = submission.attested_by.clone();
    attesters.sort();
    assert_eq!(attesters, node_ids, "everyone attested once");
    let mut scored: Vec<(u32, u128)> = submission
        .scores
        .iter()
        .map(|s| (s.node_id, s.score))
        .collect();
    scored.sort();
    let want: Vec<(u32, u128)> = node_ids.iter().map(|&id| (id, ALIVE_SCORE)).collect();
    assert_eq!(scored, want, "scores from heartbeats, outsider excluded");

    // A node restarts with the same key and rejoins.
    let c = nodes.pop().unwrap();
    c.shutdown().await;
    let a = &nodes[0];
    let restarted = Runtime::start(
        subnet.config(keys[2].clone(), vec![first.clone().unwrap()], hotkeys[2]),
        Arc::new(EchoSubnet::new()),
    )
    .await
    .expect("the node restarts");
    assert_eq!(restarted.context().dht.peer_id(), ids[2]);
    let caller = say(a.context().client(ids[2]), "welcome back")
        .await
        .unwrap();
    assert_eq!(caller, ids[0].to_base58());
    wait_until(
        "the restarted node in a's routing table",
        Duration::from_secs(20),
        || async {
            a.context()
                .dht
                .routing_table()
                .await
                .unwrap()
                .contains(&ids[2])
        },
    )
    .await;
    let caller = say(restarted.context().client(ids[1]), "i am back")
        .await
        .unwrap();
    assert_eq!(caller, ids[2].to_base58());

    outsider.shutdown().await;
    restarted.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// A node whose chain went away still stops at once: the consensus loop's
/// chain call (the client reconnecting without end) does not hold shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_promptly_when_its_chain_is_gone() {
    let (chain, subnet) = Subnet::start().await;
    let (client, subnet_id, alice) = (subnet.client.clone(), subnet.subnet_id, signer("//Alice"));
    let key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let id = register_dev_node(&client, &alice, subnet_id, &signer("//Bob"), key.peer_id())
        .await
        .unwrap();
    client.activate_node(&alice, subnet_id, id).await.unwrap();
    let node = Runtime::start(
        subnet.config(key, vec![], "//Bob"),
        Arc::new(EchoSubnet::new()),
    )
    .await
    .expect("the node starts");
    // Consensus is running (the node proposes or attests on its own).
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(chain);
    // Let the loop's next chain call start and hang on the lost connection.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::time::timeout(Duration::from_secs(10), node.shutdown())
        .await
        .expect("shutdown finishes within 10 s without a chain");
}
