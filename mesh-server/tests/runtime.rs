//! A subnet hosted by the runtime on two real nodes: RPC between them through
//! the context's client, heartbeats with the subnet's info, clean shutdown.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::{KeyType, PeerKey};
use mesh_dht::{DhtConfig, PeerId};
use mesh_server::echo::proto::echo_client::EchoClient;
use mesh_server::echo::proto::echo_server::EchoServer;
use mesh_server::echo::proto::SayRequest;
use mesh_server::echo::EchoService;
use mesh_server::heartbeat::{alive_peers, Heartbeat};
use mesh_server::runtime::HookFuture;
use mesh_server::{Runtime, RuntimeConfig, Subnet, SubnetContext};
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
    dht.subnet_id = "echo".into();
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
