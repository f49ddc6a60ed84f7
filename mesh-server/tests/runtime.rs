//! A subnet hosted by the runtime on two real nodes: RPC between them through
//! the context's client, heartbeats with the subnet's info, clean shutdown.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::{KeyType, PeerKey};
use mesh_dht::{DhtConfig, PeerId};
use mesh_server::heartbeat::{alive_peers, Heartbeat};
use mesh_server::runtime::HookFuture;
use mesh_server::{Runtime, RuntimeConfig, Subnet, SubnetContext};
use mesh_subnet_echo::proto::echo_client::EchoClient;
use mesh_subnet_echo::proto::echo_server::EchoServer;
use mesh_subnet_echo::proto::SayRequest;
use mesh_subnet_echo::EchoService;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EchoInfo {
    version: String,
}

struct EchoSubnet;

impl Subnet for EchoSubnet {
    type Info = EchoInfo;

    fn routes(&self, _ctx: &SubnetContext) -> tonic::service::Routes {
        tonic::service::Routes::new(EchoServer::new(EchoService::default()))
    }

    fn heartbeat(&self) -> EchoInfo {
        EchoInfo {
            version: "1".into(),
        }
    }

    fn score<'a>(
        &'a self,
        _epoch: u32,
        alive: &'a [Heartbeat<EchoInfo>],
    ) -> HookFuture<'a, Vec<(PeerId, u128)>> {
        Box::pin(async move { alive.iter().map(|h| (h.peer_id, 1)).collect() })
    }
}

fn config(initial_peers: Vec<mesh_dht::Multiaddr>) -> RuntimeConfig {
    let mut dht = DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
    dht.subnet_id = mesh_dht::test_utils::TEST_SUBNET;
    dht.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    dht.initial_peers = initial_peers;
    RuntimeConfig {
        dht,
        update_period: Duration::from_millis(500),
        authorizers: vec![],
        chain: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_runs_on_two_nodes() {
    let subnet = Arc::new(EchoSubnet);
    let a = Runtime::start(config(vec![]), subnet.clone())
        .await
        .unwrap();
    let addr = a.context().dht.listen_addrs().await.unwrap()[0].clone();
    let b = Runtime::start(config(vec![addr]), subnet).await.unwrap();
    let (a_id, b_id) = (a.context().dht.peer_id(), b.context().dht.peer_id());

    let mut echo = EchoClient::new(b.context().client(a_id));
    let reply = echo
        .say(SayRequest {
            text: "hi".into(),
            delay_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.caller, b_id.to_base58());

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alive = alive_peers::<EchoInfo>(&b.context().dht).await.unwrap();
        let ids: Vec<_> = alive.iter().map(|h| h.peer_id).collect();
        if ids.contains(&a_id) && ids.contains(&b_id) {
            assert!(alive.iter().all(|h| h.info.version == "1"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "heartbeats of both nodes: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tokio::time::timeout(Duration::from_secs(10), a.shutdown())
        .await
        .expect("a stops cleanly");
    // a is gone: b's calls to it now fail as Unavailable.
    let status = echo
        .say(SayRequest {
            text: "still there?".into(),
            delay_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    tokio::time::timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("b stops cleanly");
}

/// With a chain: each node scores the alive peers from heartbeats, the
/// runtime maps PeerIds to node ids on chain, and the elected node's
/// submission (attested by the other) carries both nodes' scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staked_subnet_reaches_consensus_from_heartbeats() {
    use mesh_chain::devnode::{register_dev_node, DevNode, DevNodeOptions};
    use mesh_chain::{ChainClient, HotkeyChain, SignerSource};
    use mesh_core::consensus::ConsensusChain;
    use mesh_server::ChainHooks;

    let options = DevNodeOptions {
        block_millis: 300,
        ..Default::default()
    };
    let chain = DevNode::start_with(options)
        .expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let signer = |uri: &str| SignerSource::Phrase(uri.into()).keypair().unwrap();
    let alice = signer("//Alice");
    let subnet_id = client.create_subnet(&alice, "echo", true).await.unwrap();

    let mut configs = Vec::new();
    let mut first_addr = None;
    let mut runtimes = Vec::new();
    for hotkey in ["//Bob", "//Charlie"] {
        let mut config = config(first_addr.iter().cloned().collect());
        // Heartbeats live 4 s: both nodes see both in every epoch's scoring.
        config.update_period = Duration::from_secs(2);
        config.dht.subnet_id = subnet_id;
        let peer_id = config.dht.key.peer_id();
        let id = register_dev_node(&client, &alice, subnet_id, &signer(hotkey), peer_id)
            .await
            .unwrap();
        client.activate_node(&alice, subnet_id, id).await.unwrap();
        config.chain = Some(ChainHooks {
            chain: Arc::new(HotkeyChain::new(client.clone(), signer(hotkey))),
            poll: Duration::from_millis(100),
            // The dev chain's 10-block epochs leave 1.5 blocks at 15 %.
            attest_window: 0.5,
        });
        configs.push(id);
        let runtime = Runtime::start(config, Arc::new(EchoSubnet)).await.unwrap();
        if first_addr.is_none() {
            first_addr = Some(runtime.context().dht.listen_addrs().await.unwrap()[0].clone());
        }
        runtimes.push(runtime);
    }

    let reader = HotkeyChain::new(client.clone(), signer("//Bob"));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let submission = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no attested submission in time"
        );
        let epoch = client.epoch_info(subnet_id).await.unwrap().epoch;
        let mut found = None;
        for e in epoch.saturating_sub(2)..=epoch {
            if let Some(s) = reader.submission(subnet_id, e).await.unwrap() {
                if s.attested_by.len() == 2 {
                    found = Some(s);
                }
            }
        }
        if let Some(s) = found {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut scored: Vec<u32> = submission.scores.iter().map(|s| s.node_id).collect();
    scored.sort();
    assert_eq!(scored, configs, "both nodes scored from their heartbeats");
    for runtime in runtimes {
        runtime.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_runtime_stops_the_node() {
    let subnet = Arc::new(EchoSubnet);
    let a = Runtime::start(config(vec![]), subnet.clone())
        .await
        .unwrap();
    let addr = a.context().dht.listen_addrs().await.unwrap()[0].clone();
    let b = Runtime::start(config(vec![addr]), subnet).await.unwrap();
    let a_id = a.context().dht.peer_id();
    // A clone of a's DHT handle outlives the runtime, as a subnet's would.
    let a_dht = a.context().dht.clone();
    let say = || {
        let mut echo = EchoClient::new(b.context().client(a_id));
        async move {
            echo.say(SayRequest {
                text: "hi".into(),
                delay_ms: 0,
            })
            .await
        }
    };
    say().await.expect("a serves while it runs");

    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while say().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped runtime still serves RPC"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(a_dht.stats().await, Err(mesh_dht::DhtError::Stopped)),
        "the dropped runtime's DHT stopped, though a handle to it lives"
    );
    b.shutdown().await;
}

/// A client-mode runtime calls and reads but serves nothing: it is in no
/// routing table, publishes no heartbeat, and calls to it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_mode_node_calls_but_serves_nothing() {
    let subnet = Arc::new(EchoSubnet);
    let a = Runtime::start(config(vec![]), subnet.clone())
        .await
        .unwrap();
    let addr = a.context().dht.listen_addrs().await.unwrap()[0].clone();
    let b = Runtime::start(config(vec![addr.clone()]), subnet.clone())
        .await
        .unwrap();
    let mut client_config = config(vec![addr]);
    client_config.dht.client_mode = true;
    let c = Runtime::start(client_config, subnet).await.unwrap();
    let (a_id, b_id, c_id) = (
        a.context().dht.peer_id(),
        b.context().dht.peer_id(),
        c.context().dht.peer_id(),
    );
    // It calls both servers (b found through the DHT).
    for peer in [a_id, b_id] {
        let reply = EchoClient::new(c.context().client(peer))
            .say(SayRequest {
                text: "hi".into(),
                delay_ms: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.caller, c_id.to_base58());
    }
    // Several heartbeat periods later: the servers' heartbeats, never the client's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alive: Vec<PeerId> = alive_peers::<EchoInfo>(&a.context().dht)
        .await
        .unwrap()
        .iter()
        .map(|h| h.peer_id)
        .collect();
    assert!(alive.contains(&a_id) && alive.contains(&b_id), "{alive:?}");
    assert!(
        !alive.contains(&c_id),
        "a client sends no heartbeat: {alive:?}"
    );
    for server in [&a, &b] {
        let table = server.context().dht.routing_table().await.unwrap();
        assert!(!table.contains(&c_id), "a client is in no routing table");
    }
    // It serves no RPC.
    let status = EchoClient::new(a.context().client(c_id))
        .say(SayRequest {
            text: "anyone?".into(),
            delay_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}
