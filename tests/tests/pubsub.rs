//! Pubsub across real libp2p nodes on loopback: every subscriber gets each
//! message once; a message the application refuses goes no further than the
//! first hop; an unstaked publisher reaches nobody, while a staked author's
//! message relayed by an unstaked reader arrives; late subscribers get
//! what is published after they join; leavers stop receiving.
//! (The same stake rule against the real dev chain: `stake_gate.rs`.)

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{addr_of, config, Net};
use mesh_core::PeerId;
use mesh_dht::test_utils::{FixedOracle, Testnet};
use mesh_dht::{Dht, DhtConfig, PubsubMessage, Subscription, Topic, Verdict};

const WAIT: Duration = Duration::from_secs(20);

fn fast(mut c: DhtConfig) -> DhtConfig {
    c.pubsub.heartbeat_interval = Duration::from_millis(200);
    c
}

/// `n` nodes joined to each other, with a fast gossipsub heartbeat.
async fn network(n: usize) -> Vec<Dht> {
    Testnet::builder(n)
        .configure(|_, c| {
            c.pubsub.heartbeat_interval = Duration::from_millis(200);
            c.refresh_period = Duration::from_secs(1);
        })
        .build()
        .await
        .into_nodes()
}

async fn subscribe_all(nodes: &[Dht], topic: &Topic) -> Vec<Subscription> {
    let mut subs = Vec::new();
    for n in nodes {
        subs.push(n.pubsub().subscribe(topic).await.unwrap());
    }
    subs
}

/// Waits until every node sees at least `min` subscribed peers on `topic`.
async fn wait_for_mesh(nodes: &[Dht], topic: &Topic, min: usize) {
    let deadline = Instant::now() + WAIT;
    for n in nodes {
        while n.pubsub().peers(topic).await.unwrap().len() < min {
            assert!(Instant::now() < deadline, "topic peers did not appear");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // One gossipsub heartbeat to graft the meshes.
    tokio::time::sleep(Duration::from_millis(600)).await;
}

/// Publishes `data` on `topic` from `node`.
async fn publish(node: &Dht, topic: &Topic, data: Vec<u8>) {
    node.pubsub().publish(topic, data).await.unwrap();
}

/// Everything `sub` receives within `within`.
async fn drain(sub: &mut Subscription, within: Duration) -> Vec<PubsubMessage> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.recv()).await {
        got.push(m);
    }
    got
}

/// Receives until `want` payloads have all arrived (or the wait ends); returns all received.
async fn receive_until(
    sub: &mut Subscription,
    want: &HashSet<Vec<u8>>,
    within: Duration,
) -> Vec<PubsubMessage> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut missing = want.clone();
    while !missing.is_empty() {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(m)) => {
                missing.remove(&m.data);
                got.push(m);
            }
            _ => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_every_subscriber_gets_each_message_once() {
    let nodes = network(10).await;
    let topic = Topic::new("news").unwrap();
    let mut subs = subscribe_all(&nodes, &topic).await;
    wait_for_mesh(&nodes, &topic, 1).await;

    // Three publishers, 20 messages each.
    let publishers = [0usize, 4, 9];
    let mut sent: HashMap<Vec<u8>, PeerId> = HashMap::new();
    for round in 0..20 {
        for &p in &publishers {
            let data = format!("m-{p}-{round}").into_bytes();
            publish(&nodes[p], &topic, data.clone()).await;
            sent.insert(data, nodes[p].peer_id());
        }
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let me = nodes[i].peer_id();
        let want: HashSet<Vec<u8>> = sent
            .iter()
            .filter(|(_, author)| **author != me)
            .map(|(d, _)| d.clone())
            .collect();
        let mut got = receive_until(sub, &want, WAIT).await;
        // Late duplicates would arrive within a few heartbeats.
        got.extend(drain(sub, Duration::from_millis(800)).await);
        let mut count: HashMap<&[u8], usize> = HashMap::new();
        for m in &got {
            assert_eq!(m.author, sent[&m.data], "the author is the publisher");
            assert_eq!(m.topic, topic);
            *count.entry(&m.data).or_default() += 1;
        }
        assert_eq!(
            count.len(),
            want.len(),
            "node {i} got every message but its own"
        );
        assert!(
            count.values().all(|&c| c == 1),
            "node {i} got a message twice: {count:?}"
        );
        assert!(
            !count.keys().any(|d| sent[*d] == me),
            "own messages are not delivered"
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_validator_rejects_goes_no_further_than_the_first_hop() {
    let mut nodes = network(6).await;
    // The publisher may hold one connection only: its every message reaches
    // the others through `relay`, so "the first hop" is exactly one node.
    let relay = nodes[5].clone();
    let mut c = fast(config(Net::Tcp, vec![addr_of(&relay, Net::Tcp).await]));
    c.max_connections = 1;
    let publisher = Dht::start(c).await.unwrap();

    let topic = Topic::new("checked").unwrap();
    let saw_bad: Arc<Mutex<HashSet<PeerId>>> = Arc::default();
    let mut subs = Vec::new();
    for n in &nodes {
        let (me, saw_bad) = (n.peer_id(), saw_bad.clone());
        let validator = Arc::new(move |m: &PubsubMessage| {
            if m.data.starts_with(b"bad") {
                saw_bad.lock().unwrap().insert(me);
                Verdict::Reject
            } else {
                Verdict::Accept
            }
        });
        subs.push(
            n.pubsub()
                .subscribe_validated(&topic, validator)
                .await
                .unwrap(),
        );
    }
    wait_for_mesh(
        &[&nodes[..], std::slice::from_ref(&publisher)].concat(),
        &topic,
        1,
    )
    .await;
    assert_eq!(
        publisher.pubsub().peers(&topic).await.unwrap(),
        vec![relay.peer_id()],
        "the publisher's one connection is to the relay"
    );

    publish(&publisher, &topic, b"bad-1".to_vec()).await;
    publish(&publisher, &topic, b"good-1".to_vec()).await;
    let good: HashSet<Vec<u8>> = [b"good-1".to_vec()].into();
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut got = receive_until(sub, &good, WAIT).await;
        got.extend(drain(sub, Duration::from_millis(300)).await);
        let data: Vec<&[u8]> = got.iter().map(|m| m.data.as_slice()).collect();
        assert_eq!(
            data,
            vec![b"good-1".as_slice()],
            "node {i}: only the good message"
        );
    }
    // The relay's validator saw the bad message and refused it; nobody
    // beyond it ever saw it.
    assert_eq!(
        *saw_bad.lock().unwrap(),
        HashSet::from([relay.peer_id()]),
        "only the first hop saw the refused message"
    );
    let score = relay
        .pubsub()
        .peer_score(publisher.peer_id())
        .await
        .unwrap()
        .expect("connected");
    assert!(
        score < 0.0,
        "the sender of an invalid message is penalised: {score}"
    );

    nodes.push(publisher);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstaked_publisher_reaches_nobody() {
    // The staked nodes' keys must be known to the oracle before they start.
    let keys: Vec<_> = (0..5)
        .map(|_| mesh_core::PeerKey::generate(mesh_core::KeyType::Ed25519).unwrap())
        .collect();
    let staked: HashSet<PeerId> = keys.iter().map(|k| k.peer_id()).collect();
    let gate = FixedOracle::new(staked).gate();
    let mut nodes: Vec<Dht> = Vec::new();
    for key in keys {
        let initial = match nodes.first() {
            Some(first) => vec![addr_of(first, Net::Tcp).await],
            None => vec![],
        };
        let mut c = fast(config(Net::Tcp, initial));
        c.key = key;
        c.stake_gate = Some(gate.clone());
        nodes.push(Dht::start(c).await.unwrap());
    }
    // The stranger is not staked; it runs no gate itself.
    let stranger = Dht::start(fast(config(
        Net::Tcp,
        vec![addr_of(&nodes[0], Net::Tcp).await],
    )))
    .await
    .unwrap();

    let topic = Topic::new("staked-only").unwrap();
    let mut subs = subscribe_all(&nodes, &topic).await;
    let mut stranger_sub = stranger.pubsub().subscribe(&topic).await.unwrap();
    wait_for_mesh(
        &[&nodes[..], std::slice::from_ref(&stranger)].concat(),
        &topic,
        1,
    )
    .await;

    for i in 0..5 {
        publish(&stranger, &topic, format!("spam-{i}").into_bytes()).await;
    }
    publish(&nodes[2], &topic, b"staked".to_vec()).await;
    let want: HashSet<Vec<u8>> = [b"staked".to_vec()].into();
    for (i, sub) in subs.iter_mut().enumerate() {
        if i == 2 {
            continue;
        }
        let mut got = receive_until(sub, &want, WAIT).await;
        got.extend(drain(sub, Duration::from_millis(500)).await);
        let data: Vec<&[u8]> = got.iter().map(|m| m.data.as_slice()).collect();
        assert_eq!(
            data,
            vec![b"staked".as_slice()],
            "node {i}: nothing from the stranger"
        );
    }
    // Reading stays open: the stranger receives the staked node's message.
    let got = receive_until(&mut stranger_sub, &want, WAIT).await;
    assert!(got.iter().any(|m| m.data == b"staked"), "{got:?}");
    // The node the stranger joined through penalised it.
    let score = nodes[0]
        .pubsub()
        .peer_score(stranger.peer_id())
        .await
        .unwrap()
        .expect("connected");
    assert!(score < 0.0, "the unstaked publisher is penalised: {score}");

    stranger.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// gossipsub keeps only the first copy of a message id, so a node that
/// rejected a good message because an unstaked reader relayed it first would
/// never take the honest copy: readers could censor staked authors. Here the
/// only path from the staked author to the staked receiver runs through an
/// unstaked reader (each staked node may hold one connection): the message
/// arrives, and the reader's own messages still do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staked_authors_message_relayed_by_an_unstaked_reader_arrives() {
    let keys: Vec<_> = (0..2)
        .map(|_| mesh_core::PeerKey::generate(mesh_core::KeyType::Ed25519).unwrap())
        .collect();
    let (receiver_id, author_id) = (keys[0].peer_id(), keys[1].peer_id());
    let gate = FixedOracle::new([receiver_id, author_id]).gate();
    let reader = Dht::start(fast(config(Net::Tcp, vec![]))).await.unwrap();
    let reader_addr = addr_of(&reader, Net::Tcp).await;
    let mut staked = Vec::new();
    for key in keys {
        let mut c = fast(config(Net::Tcp, vec![reader_addr.clone()]));
        c.key = key;
        c.stake_gate = Some(gate.clone());
        c.max_connections = 1; // the reader only: no direct path between them
        staked.push(Dht::start(c).await.unwrap());
    }
    let (receiver, author) = (&staked[0], &staked[1]);

    let topic = Topic::new("relayed").unwrap();
    let mut at_receiver = receiver.pubsub().subscribe(&topic).await.unwrap();
    let _at_author = author.pubsub().subscribe(&topic).await.unwrap();
    let mut at_reader = reader.pubsub().subscribe(&topic).await.unwrap();
    wait_for_mesh(&staked, &topic, 1).await;
    wait_for_mesh(std::slice::from_ref(&reader), &topic, 2).await;
    assert!(
        !receiver
            .pubsub()
            .peers(&topic)
            .await
            .unwrap()
            .contains(&author_id),
        "the staked nodes are not connected to each other"
    );

    publish(&reader, &topic, b"from-the-reader".to_vec()).await;
    publish(author, &topic, b"from-the-author".to_vec()).await;
    let want: HashSet<Vec<u8>> = [b"from-the-author".to_vec()].into();
    let mut got = receive_until(&mut at_receiver, &want, WAIT).await;
    got.extend(drain(&mut at_receiver, Duration::from_millis(500)).await);
    let seen: Vec<(&[u8], PeerId, PeerId)> = got
        .iter()
        .map(|m| (m.data.as_slice(), m.author, m.forwarder))
        .collect();
    assert_eq!(
        seen,
        vec![(b"from-the-author".as_slice(), author_id, reader.peer_id())],
        "the author's message, relayed by the reader; nothing the reader wrote"
    );
    let read = receive_until(&mut at_reader, &want, WAIT).await;
    assert!(
        read.iter().any(|m| m.data == b"from-the-author"),
        "{read:?}"
    );
    let score = receiver
        .pubsub()
        .peer_score(reader.peer_id())
        .await
        .unwrap()
        .expect("connected");
    assert!(score < 0.0, "the reader's own message cost it: {score}");

    reader.shutdown().await;
    for n in staked {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscribers_receive_what_follows_and_leavers_stop() {
    let nodes = network(6).await;
    let topic = Topic::new("late").unwrap();
    let mut subs = subscribe_all(&nodes[..5], &topic).await;
    wait_for_mesh(&nodes[..5], &topic, 1).await;
    publish(&nodes[0], &topic, b"before".to_vec()).await;
    let before: HashSet<Vec<u8>> = [b"before".to_vec()].into();
    for sub in &mut subs[1..] {
        let got = receive_until(sub, &before, WAIT).await;
        assert_eq!(got.len(), 1);
    }

    // Node 5 subscribes late: it gets what is published from then on only.
    // (gossipsub keeps a message in its gossip window for 5 heartbeats: let
    // "before" leave it first, so node 5 cannot fetch it through gossip.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut late = nodes[5].pubsub().subscribe(&topic).await.unwrap();
    wait_for_mesh(&nodes[5..], &topic, 1).await;
    publish(&nodes[0], &topic, b"after".to_vec()).await;
    let after: HashSet<Vec<u8>> = [b"after".to_vec()].into();
    let mut got = receive_until(&mut late, &after, WAIT).await;
    got.extend(drain(&mut late, Duration::from_millis(300)).await);
    let data: Vec<&[u8]> = got.iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(
        data,
        vec![b"after".as_slice()],
        "only what followed the subscription"
    );

    // Node 3 drops its subscription: within a heartbeat nobody counts it a
    // subscriber any more. Node 4 shuts down.
    let leaver = nodes[3].peer_id();
    drop(subs.remove(3));
    nodes[4].shutdown().await;
    let gone = [leaver, nodes[4].peer_id()];
    let deadline = Instant::now() + WAIT;
    for n in [&nodes[0], &nodes[1], &nodes[2], &nodes[5]] {
        while n
            .pubsub()
            .peers(&topic)
            .await
            .unwrap()
            .iter()
            .any(|p| gone.contains(p))
        {
            assert!(
                Instant::now() < deadline,
                "leavers still counted as subscribers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The rest still hear each other.
    publish(&nodes[1], &topic, b"still".to_vec()).await;
    let still: HashSet<Vec<u8>> = [b"still".to_vec()].into();
    let (first, rest) = subs.split_at_mut(1);
    for sub in [&mut first[0], &mut rest[1], &mut late] {
        let got = receive_until(sub, &still, WAIT).await;
        assert!(got.iter().any(|m| m.data == b"still"), "{got:?}");
    }
    for (i, n) in nodes.into_iter().enumerate() {
        if i != 4 {
            n.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_get_clear_errors() {
    let nodes = network(2).await;
    let topic = Topic::new("errors").unwrap();
    let big = vec![0u8; mesh_dht::PubsubConfig::default().max_message_bytes + 1];
    assert!(matches!(
        nodes[0].pubsub().publish(&topic, big).await,
        Err(mesh_dht::PubsubError::TooLarge { .. })
    ));
    // Nobody subscribes yet.
    assert!(matches!(
        nodes[0].pubsub().publish(&topic, b"x".to_vec()).await,
        Err(mesh_dht::PubsubError::NoPeers(_))
    ));
    let _sub = nodes[1].pubsub().subscribe(&topic).await.unwrap();
    wait_for_mesh(&nodes[..1], &topic, 1).await;
    publish(&nodes[0], &topic, b"once".to_vec()).await;
    assert!(matches!(
        nodes[0].pubsub().publish(&topic, b"once".to_vec()).await,
        Err(mesh_dht::PubsubError::Duplicate)
    ));
    // A node that runs without pubsub says so.
    let mut c = fast(config(Net::Tcp, vec![addr_of(&nodes[0], Net::Tcp).await]));
    c.pubsub.enabled = false;
    let plain = Dht::start(c).await.unwrap();
    assert!(matches!(
        plain.pubsub().subscribe(&topic).await,
        Err(mesh_dht::PubsubError::Disabled)
    ));
    assert!(matches!(
        plain.pubsub().publish(&topic, b"x".to_vec()).await,
        Err(mesh_dht::PubsubError::Disabled)
    ));
    plain.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}
