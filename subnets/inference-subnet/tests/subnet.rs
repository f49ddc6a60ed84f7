//! The inference subnet end to end with the real model and the real dev
//! chain: two staked servers (stake gate, signature and stake authorizers),
//! a client whose PeerId is a registered node's client PeerId; the client
//! finds the servers by their heartbeats, streams a generation that matches
//! the engine's own, survives its server dying mid-stream, and an unstaked
//! client is refused.

use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use mesh_chain::devnode::{register_dev_node_with_client, DevNode};
use mesh_chain::{chain_stake_oracle, ChainClient, SignerSource};
use mesh_core::{KeyType, PeerId, PeerKey, SubnetId};
use mesh_dht::{Dht, DhtConfig, Multiaddr};
use mesh_inference::{Engine, EngineConfig, GenerateRequest as EngineRequest, Prompt};
use mesh_server::{Runtime, RuntimeConfig};
use mesh_subnet_inference::client::{ClientError, InferenceClient};
use mesh_subnet_inference::proto::generate_chunk::Item;
use mesh_subnet_inference::proto::{generate_request, GenerateRequest};
use mesh_subnet_inference::test_utils::staked_server;
use mesh_subnet_inference::InferenceSubnet;

const PROMPT: &str = "The capital of France is";
const TOKENS: u32 = 32;

fn request() -> GenerateRequest {
    GenerateRequest {
        prompt: Some(generate_request::Prompt::Text(PROMPT.into())),
        max_tokens: TOKENS,
        ..Default::default()
    }
}

fn engine() -> Arc<Engine> {
    let path = mesh_inference::find_smollm2().unwrap_or_else(|e| panic!("{e}"));
    let mut config = EngineConfig::new(path);
    config.max_batch = 4;
    Arc::new(Engine::start(config).expect("the engine starts"))
}

/// The subnet of the chain-less test.
const LOCAL: SubnetId = SubnetId::new(9);

async fn client_node(key: PeerKey, initial: Vec<Multiaddr>, subnet: SubnetId) -> Dht {
    let mut config = DhtConfig::new(key);
    config.subnet_id = subnet;
    config.client_mode = true;
    config.initial_peers = initial;
    config.bootstrap_timeout = Duration::from_secs(10);
    Dht::start(config).await.expect("the client joins")
}

/// Both servers' heartbeats, once both say they are idle (so the client's
/// choice is the PeerId tie-break, known in advance).
async fn idle_servers(
    asker: &InferenceClient,
) -> Vec<mesh_server::Heartbeat<mesh_subnet_inference::InferenceInfo>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive = asker.servers().await.unwrap();
        if alive.len() == 2 && alive.iter().all(|h| h.info.free_slots == h.info.max_batch) {
            for h in &alive {
                assert!(h.info.model.to_lowercase().contains("smollm2"), "{h:?}");
                assert_eq!(h.info.backend, "cpu");
            }
            return alive;
        }
        assert!(Instant::now() < deadline, "both servers idle: {alive:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staked_inference_subnet_streams_fails_over_and_refuses_strangers() {
    let chain = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let signer = |uri: &str| SignerSource::Phrase(uri.into()).keypair().unwrap();
    let alice = signer("//Alice");
    let subnet_id = client
        .create_subnet(&alice, "inference", true)
        .await
        .unwrap();

    let client_key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let server_keys: Vec<PeerKey> = (0..2)
        .map(|_| PeerKey::generate(KeyType::Ed25519).unwrap())
        .collect();
    for (i, (key, hotkey)) in server_keys.iter().zip(["//Bob", "//Charlie"]).enumerate() {
        // The first operator's client key is the one that asks.
        let client_peer_id = if i == 0 {
            client_key.peer_id()
        } else {
            PeerId::random()
        };
        register_dev_node_with_client(
            &client,
            &alice,
            subnet_id,
            &signer(hotkey),
            key.peer_id(),
            client_peer_id,
        )
        .await
        .unwrap();
    }
    let oracle = chain_stake_oracle(client.clone(), Duration::from_secs(300));

    // Each server its own engine, so each reports its own load.
    let engines = [engine(), engine()];
    let mut servers = Vec::new();
    let mut first: Option<Multiaddr> = None;
    for (key, engine) in server_keys.iter().zip(&engines) {
        let node = staked_server(
            key.clone(),
            subnet_id,
            oracle.oracle(),
            first.iter().cloned().collect(),
            InferenceSubnet::new(engine.clone(), None),
        )
        .await
        .expect("a server starts");
        if first.is_none() {
            first = Some(node.context().dht.listen_addrs().await.unwrap()[0].clone());
        }
        servers.push(node);
    }

    // What the engine itself answers.
    let reference = engines[0]
        .generate(EngineRequest {
            prompt: Prompt::Text(PROMPT.into()),
            params: mesh_inference::SamplingParams::greedy(TOKENS as usize),
        })
        .unwrap()
        .collect()
        .await
        .unwrap();

    let client_id = client_key.peer_id();
    let mut server_addrs = Vec::new();
    for server in &servers {
        server_addrs.push(server.context().dht.listen_addrs().await.unwrap()[0].clone());
    }
    let dht = client_node(client_key.clone(), server_addrs, subnet_id).await;
    let asker = InferenceClient::new(dht.clone(), Arc::new(client_key));
    let order = idle_servers(&asker).await;

    // A whole stream through the first server.
    let mut streamed = Vec::new();
    let outcome = asker
        .generate(request(), |t| streamed.push(t.id))
        .await
        .unwrap();
    assert_eq!(
        outcome.ids, reference.ids,
        "the subnet answers what the engine does"
    );
    assert_eq!(streamed, reference.ids, "tokens were streamed one by one");
    assert_eq!(outcome.text, reference.text);
    assert_eq!(outcome.servers, vec![order[0].peer_id]);
    assert_eq!(
        outcome.finished.completion_tokens as usize,
        reference.finished.completion_tokens
    );

    // The chosen server dies after the third token: the stream continues elsewhere.
    let order = idle_servers(&asker).await;
    let victim = order[0].peer_id;
    let index = servers
        .iter()
        .position(|s| s.context().dht.peer_id() == victim)
        .unwrap();
    let doomed = servers.remove(index);
    // Its network goes away at once, as in a crash (a graceful shutdown
    // would let the stream finish first).
    let network = Mutex::new(Some(doomed.context().dht.clone()));
    let mut seen = Vec::new();
    let outcome = asker
        .generate(request(), |t| {
            seen.push(t.id);
            if seen.len() == 3 {
                if let Some(dht) = network.lock().unwrap().take() {
                    tokio::spawn(async move { dht.shutdown().await });
                }
            }
        })
        .await
        .unwrap();
    doomed.shutdown().await;
    assert_eq!(seen, reference.ids, "one seamless stream, no token twice");
    assert_eq!(outcome.ids, reference.ids);
    assert_eq!(
        outcome.servers,
        vec![victim, order[1].peer_id],
        "failed over to the other server"
    );

    // A client that is nobody's client PeerId is refused by the stake authorizer.
    let stranger_key = PeerKey::generate(KeyType::Ed25519).unwrap();
    // It joins through the surviving server (the first may be the one that died).
    let survivor_addr = servers[0].context().dht.listen_addrs().await.unwrap()[0].clone();
    let stranger_dht = client_node(stranger_key.clone(), vec![survivor_addr], subnet_id).await;
    let stranger = InferenceClient::new(stranger_dht.clone(), Arc::new(stranger_key));
    match stranger.generate(request(), |_| {}).await {
        Err(ClientError::AllFailed(failures)) => {
            // The live server refuses by name; the dead one's heartbeat may
            // not have lapsed yet, and it is unreachable.
            let survivor = order[1].peer_id;
            let (_, status) = failures
                .iter()
                .find(|(peer, _)| *peer == survivor)
                .expect("the live server was asked");
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
            assert!(status.message().starts_with("stake: "), "{status:?}");
            for (peer, status) in &failures {
                if *peer != survivor {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                }
            }
        }
        other => panic!("the stranger is refused: {other:?}"),
    }
    assert_ne!(client_id, stranger_dht.peer_id());

    stranger_dht.shutdown().await;
    dht.shutdown().await;
    for node in servers {
        node.shutdown().await;
    }
}

/// Without a chain: `Embed` through RPC gives the embedding model's own
/// vectors; a server without one says so; a caller that goes away mid-stream
/// frees its batch slot on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embeddings_and_cancellation_over_rpc() {
    use mesh_inference::embed::MiniLm;
    use mesh_subnet_inference::proto::EmbedRequest;

    let dir = mesh_inference::models_dir().join("all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} missing: run scripts/fetch-models.sh minilm",
        dir.display()
    );
    let embedder = Arc::new(MiniLm::load(&dir, &Default::default()).unwrap());
    let texts = ["A cat sits on the mat.", "Stocks fell sharply on Monday."];
    let local = embedder.embed(&texts);

    let engine = engine();
    let mut nodes = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    for embeds in [true, false] {
        let mut dht = DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
        dht.subnet_id = LOCAL;
        dht.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        dht.initial_peers = addrs.clone();
        let config = RuntimeConfig {
            dht,
            update_period: Duration::from_millis(500),
            authorizers: vec![],
            chain: None,
        };
        let subnet = InferenceSubnet::new(engine.clone(), embeds.then(|| embedder.clone()));
        let node = Runtime::start(config, Arc::new(subnet)).await.unwrap();
        addrs.push(node.context().dht.listen_addrs().await.unwrap()[0].clone());
        nodes.push(node);
    }
    let key = PeerKey::generate(KeyType::Ed25519).unwrap();
    // Through both servers, so it can dial each at once.
    let dht = client_node(key.clone(), addrs, LOCAL).await;
    let asker = InferenceClient::new(dht.clone(), Arc::new(key));
    let (with, without) = (
        nodes[0].context().dht.peer_id(),
        nodes[1].context().dht.peer_id(),
    );

    let reply = asker
        .rpc(with)
        .embed(EmbedRequest {
            texts: texts.iter().map(|t| t.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.vectors.len(), 2);
    for (remote, local) in reply.vectors.iter().zip(&local) {
        assert_eq!(remote.values.len(), 384);
        assert_eq!(
            &remote.values, local,
            "the server's vectors are the model's"
        );
        let norm: f32 = remote.values.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
    let status = asker
        .rpc(without)
        .embed(EmbedRequest {
            texts: vec!["x".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let status = asker
        .rpc(with)
        .embed(EmbedRequest { texts: vec![] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // Huge inputs are refused before any tokenizing, and the server goes on.
    let t = Instant::now();
    let status = asker
        .rpc(with)
        .embed(EmbedRequest {
            texts: vec!["a".repeat(1 << 20)],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most"), "{status:?}");
    let mut huge = request();
    huge.prompt = Some(generate_request::Prompt::Text("word ".repeat(600_000)));
    let refused = async {
        let mut stream = asker.rpc(with).generate(huge).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    }
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("cannot fit"), "{refused:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "refused at once, not after tokenizing: {:?}",
        t.elapsed()
    );
    let reply = asker
        .rpc(with)
        .embed(EmbedRequest {
            texts: vec![texts[0].to_string()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.vectors[0].values, local[0], "still serving");

    // A long generation, abandoned after its first token.
    let mut long = request();
    long.max_tokens = 1_000;
    long.prompt = Some(generate_request::Prompt::Chat(
        mesh_subnet_inference::proto::Chat {
            messages: vec![mesh_subnet_inference::proto::ChatMessage {
                role: "user".into(),
                content: "Write a very long story about a lighthouse keeper.".into(),
            }],
        },
    ));
    let mut stream = asker.rpc(with).generate(long).await.unwrap().into_inner();
    for _ in 0..3 {
        let chunk = stream.message().await.unwrap().expect("a chunk");
        assert!(matches!(chunk.item, Some(Item::Token(_))), "{chunk:?}");
    }
    assert_eq!(engine.load().active, 1, "the generation is running");
    let steps = engine.load().steps;
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.load().active > 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned generation is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(engine.load().free_slots, 4);
    let ran = engine.load().steps - steps;
    assert!(
        ran < 200,
        "stopped long before its 1,000 tokens: {ran} more steps"
    );

    dht.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}
