//! Authorizers on real RPC between libp2p nodes, with the stake answered by
//! the real dev chain.

use std::sync::Arc;
use std::time::Duration;

use mesh_chain::devnode::{register_dev_node, DevNode};
use mesh_chain::{chain_stake_oracle, ChainClient, SignerSource};
use mesh_core::{KeyType, NodeClass, PeerKey};
use mesh_dht::test_utils::node;
use mesh_dht::Dht;
use mesh_server::{
    connect, incoming, rpc_protocol, AuthLayer, Authorizer, RateLimitAuthorizer, RateLimits,
    StakeAuthorizer,
};
use mesh_subnet_echo::proto::echo_client::EchoClient;
use mesh_subnet_echo::proto::echo_server::EchoServer;
use mesh_subnet_echo::proto::SayRequest;
use mesh_subnet_echo::EchoService;
use tonic::Code;

fn say(text: &str) -> SayRequest {
    SayRequest {
        text: text.into(),
        delay_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_and_rate_limit_authorizers_refuse_with_named_statuses() {
    let chain = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let alice = SignerSource::Phrase("//Alice".into()).keypair().unwrap();
    let bob = SignerSource::Phrase("//Bob".into()).keypair().unwrap();
    let subnet = client.create_subnet(&alice, "auth", true).await.unwrap();
    let staked_key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let staked_id = staked_key.peer_id();
    register_dev_node(&client, &alice, subnet, &bob, staked_id)
        .await
        .unwrap();
    let watched = chain_stake_oracle(client.clone(), Duration::from_secs(300));

    let limits = RateLimits {
        burst: 5.0,
        per_second: 0.5,
        ..RateLimits::default()
    };
    let layer = AuthLayer::new(vec![
        Arc::new(StakeAuthorizer::new(
            watched.oracle(),
            subnet,
            NodeClass::Registered,
        )) as Arc<dyn Authorizer>,
        Arc::new(RateLimitAuthorizer::new(limits)),
    ]);
    let metrics = layer.metrics();
    let server = node(PeerKey::generate(KeyType::Ed25519).unwrap(), vec![], false).await;
    let connections = incoming(
        &mut server.streams(),
        rpc_protocol(mesh_dht::test_utils::TEST_SUBNET),
    )
    .unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(EchoServer::new(EchoService::default()))
            .serve_with_incoming(connections)
            .await
            .unwrap();
    });
    let addr = server.listen_addrs().await.unwrap()[0].clone();

    let staked = node(staked_key, vec![addr.clone()], true).await;
    let stranger = node(
        PeerKey::generate(KeyType::Ed25519).unwrap(),
        vec![addr],
        true,
    )
    .await;
    let echo = |dht: &Dht| {
        EchoClient::new(connect(
            dht.streams(),
            server.peer_id(),
            rpc_protocol(mesh_dht::test_utils::TEST_SUBNET),
            Duration::from_secs(5),
        ))
    };

    // The stranger is refused by the stake authorizer, by name.
    let status = echo(&stranger).say(say("let me in")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().starts_with("stake: "), "{status:?}");
    assert!(
        status.message().contains(&stranger.peer_id().to_base58()),
        "{status:?}"
    );

    // The staked peer gets through, until it exceeds its burst of 5.
    let mut staked_echo = echo(&staked);
    for i in 0..5 {
        let reply = staked_echo
            .say(say(&i.to_string()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.caller, staked_id.to_base58());
    }
    let status = staked_echo.say(say("one too many")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("rate_limit: "), "{status:?}");
    assert!(status.message().contains("blocked for 300 s"), "{status:?}");
    // Blocked: even a well-spaced call is refused now.
    let status = staked_echo.say(say("please")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);

    assert_eq!(metrics.refused("stake"), 1);
    assert_eq!(metrics.refused("rate_limit"), 2);
    assert_eq!(metrics.allowed(), 5);
    for n in [staked, stranger, server] {
        n.shutdown().await;
    }
}

/// The rate limit over real RPC: a burst over the limit is blocked, the block
/// is lifted when it ends, and the second violation blocks for longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_block_and_lift_on_real_rpc() {
    let limits = RateLimits {
        burst: 3.0,
        per_second: 0.1,
        blocks: vec![Duration::from_millis(600), Duration::from_secs(60)],
        ..RateLimits::default()
    };
    let layer = AuthLayer::new(vec![
        Arc::new(RateLimitAuthorizer::new(limits)) as Arc<dyn Authorizer>
    ]);
    let metrics = layer.metrics();
    let server = node(PeerKey::generate(KeyType::Ed25519).unwrap(), vec![], false).await;
    let connections = incoming(
        &mut server.streams(),
        rpc_protocol(mesh_dht::test_utils::TEST_SUBNET),
    )
    .unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(EchoServer::new(EchoService::default()))
            .serve_with_incoming(connections),
    );
    let addr = server.listen_addrs().await.unwrap()[0].clone();
    let caller = node(
        PeerKey::generate(KeyType::Ed25519).unwrap(),
        vec![addr],
        true,
    )
    .await;
    let mut echo = EchoClient::new(connect(
        caller.streams(),
        server.peer_id(),
        rpc_protocol(mesh_dht::test_utils::TEST_SUBNET),
        Duration::from_secs(5),
    ));
    for i in 0..3 {
        echo.say(say(&i.to_string())).await.unwrap();
    }
    let status = echo.say(say("over")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("(violation 1)"), "{status:?}");
    let status = echo.say(say("still blocked")).await.unwrap_err();
    assert!(status.message().contains("is blocked"), "{status:?}");

    // The block ends: the bucket is full again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in 0..3 {
        echo.say(say(&format!("again {i}"))).await.unwrap();
    }
    let status = echo.say(say("over again")).await.unwrap_err();
    assert!(
        status.message().contains("blocked for 60 s (violation 2)"),
        "{status:?}"
    );
    assert_eq!(metrics.allowed(), 6);
    assert_eq!(metrics.refused("rate_limit"), 3);
    caller.shutdown().await;
    server.shutdown().await;
}
