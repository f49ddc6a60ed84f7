//! Connection floods: one address holding hundreds of half-open sockets,
//! a crowd of unstaked peers, a node past its memory ceiling. Each time the
//! node keeps a place for honest (staked) peers, or refuses with a reason.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use mesh_core::{Expiration, KeyType, PeerKey};
use mesh_dht::test_utils::{config, FixedOracle, TEST_SUBNET};
use mesh_dht::{Dht, DhtError, InboundLimits, MemoryLimit, Multiaddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn key() -> PeerKey {
    PeerKey::generate(KeyType::Ed25519).unwrap()
}

/// Starts `n` client-mode nodes joining through `addr`, one after the
/// other; those whose initial peer never answered are left out.
async fn clients(n: usize, addr: &Multiaddr, bootstrap_timeout: Option<Duration>) -> Vec<Dht> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut c = config(TEST_SUBNET, key(), vec![addr.clone()]);
        c.client_mode = true;
        if let Some(t) = bootstrap_timeout {
            c.bootstrap_timeout = t;
        }
        match Dht::start(c).await {
            Ok(dht) => clients.push(dht),
            Err(DhtError::NoInitialPeerAnswered { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    clients
}

/// How many of `node`'s connections it dialed itself.
async fn dialed(node: &Dht) -> usize {
    node.connections()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.outbound)
        .count()
}

async fn first_addr(dht: &Dht) -> Multiaddr {
    mesh_dht::test_utils::addr(dht).await
}

fn socket_addr(addr: &Multiaddr) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(i) => ip = Some(i),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    SocketAddr::from((ip.unwrap(), port.unwrap()))
}

/// The value of the node's `mesh_dht_connections_denied` counter for `reason`.
fn denied(dht: &Dht, reason: &str) -> u64 {
    let mut text = String::new();
    let registry = dht.registry();
    prometheus_client::encoding::text::encode(&mut text, &registry.lock().unwrap()).unwrap();
    let prefix = format!("mesh_dht_connections_denied_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Keeps `n` TCP connections from 127.0.0.2 open to `target`: half silent,
/// half trickling a byte of garbage now and then (neither ever finishes a
/// handshake). A socket the node closes is opened again at once.
fn flood(target: SocketAddr, n: usize, stop: CancellationToken) {
    for i in 0..n {
        let stop = stop.clone();
        tokio::spawn(async move {
            let trickle = i % 2 == 1;
            while !stop.is_cancelled() {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                let Ok(mut conn) = socket.connect(target).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut buf = [0u8; 256];
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = conn.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                        _ = tokio::time::sleep(Duration::from_millis(500)), if trickle => {
                            if conn.write_all(&[0x13]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_from_one_address_leaves_room_for_others() {
    let target = Dht::start(config(TEST_SUBNET, key(), vec![]))
        .await
        .unwrap();
    let addr = first_addr(&target).await;
    let stop = CancellationToken::new();
    // More half-open sockets than the node's total handshake budget (128).
    flood(socket_addr(&addr), 300, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        denied(&target, "handshakes_per_ip") > 0,
        "the flood was not held back"
    );

    // A newcomer (from 127.0.0.1) joins through the flooded node and stores.
    let newcomer = Dht::start(config(TEST_SUBNET, key(), vec![addr.clone()]))
        .await
        .expect("an honest peer joins during the flood");
    let report = newcomer
        .store(
            b"k".to_vec(),
            None,
            b"v".to_vec(),
            Expiration::in_(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(report.accepted >= 1, "{report:?}");
    assert!(target.local(b"k".to_vec()).await.unwrap().is_some());
    stop.cancel();
    newcomer.shutdown().await;
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstaked_peers_cannot_take_the_slots_of_staked_ones() {
    let target_key = key();
    let staked_key = key();
    let oracle = FixedOracle::new([target_key.peer_id(), staked_key.peer_id()]);
    let mut c = config(TEST_SUBNET, target_key, vec![]);
    c.stake_gate = Some(oracle.gate());
    c.inbound = InboundLimits {
        max_unadmitted: 3,
        ..InboundLimits::default()
    };
    let target = Dht::start(c).await.unwrap();
    let addr = first_addr(&target).await;

    // Six unstaked clients connect (to read, which stays open to them).
    let clients = clients(6, &addr, None).await;
    // Once the oracle's answers are in, at most three of them stay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let connected = target.stats().await.unwrap().connected_peers;
        if connected <= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{connected} unstaked clients still connected, the budget is 3"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every client that got in past the budget was refused or closed
    // (a client whose own start timed out under load never got in).
    let over = clients.len().saturating_sub(3) as u64;
    assert!(
        denied(&target, "unadmitted") >= over,
        "{} refusals for {} clients over the budget",
        denied(&target, "unadmitted"),
        over
    );

    // A staked node still joins and stores.
    let staked = Dht::start(config(TEST_SUBNET, staked_key, vec![addr.clone()]))
        .await
        .expect("a staked peer joins while unstaked ones fill their budget");
    let report = staked
        .store(
            b"k".to_vec(),
            None,
            b"v".to_vec(),
            Expiration::in_(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(report.accepted >= 1, "{report:?}");
    assert!(target.local(b"k".to_vec()).await.unwrap().is_some());
    for c in clients {
        c.shutdown().await;
    }
    staked.shutdown().await;
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_past_its_memory_ceiling_accepts_no_connection() {
    let mut c = config(TEST_SUBNET, key(), vec![]);
    // Any process uses more than a mebibyte.
    c.inbound.max_memory = Some(MemoryLimit::Bytes(1 << 20));
    let target = Dht::start(c).await.unwrap();
    let addr = first_addr(&target).await;
    let mut c = config(TEST_SUBNET, key(), vec![addr]);
    c.bootstrap_timeout = Duration::from_secs(3);
    let Err(err) = Dht::start(c).await else {
        panic!("the join is refused");
    };
    assert!(
        matches!(err, DhtError::NoInitialPeerAnswered { .. }),
        "{err}"
    );
    assert!(denied(&target, "memory") >= 1);
    target.shutdown().await;
}

/// One address holds at most `max_established_per_ip` established inbound
/// connections, staked or not; the rest are refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_established_connections() {
    let mut c = config(TEST_SUBNET, key(), vec![]);
    c.inbound = InboundLimits {
        max_established_per_ip: 3,
        ..InboundLimits::default()
    };
    let target = Dht::start(c).await.unwrap();
    let addr = first_addr(&target).await;
    // (A refused client may still start: the handshake completed before
    // the target closed the connection.)
    let clients = clients(5, &addr, Some(Duration::from_secs(5))).await;
    // Refusals are counted as the target sees them; a client may also open
    // a second connection that is refused, so the count is at least one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while denied(&target, "established_per_ip") < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal counted for five clients against a cap of three"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connected = target.stats().await.unwrap().connected_peers;
    assert!(
        connected <= 3,
        "{connected} clients connected from 127.0.0.1, the cap is 3"
    );
    for c in clients {
        c.shutdown().await;
    }
    target.shutdown().await;
}

/// A node keeps at most `max_outbound` connections it dialed, however many
/// peers it is told about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialed_connections_stay_within_the_outbound_limit() {
    let mut peers = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..5 {
        let p = Dht::start(config(TEST_SUBNET, key(), vec![]))
            .await
            .unwrap();
        addrs.push(first_addr(&p).await);
        peers.push(p);
    }
    let mut c = config(TEST_SUBNET, key(), addrs);
    c.max_outbound = 2;
    let node = Dht::start(c).await.unwrap();
    for i in 0..5 {
        let _ = node
            .store(
                format!("k{i}").into_bytes(),
                None,
                b"v".to_vec(),
                Expiration::in_(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        let dialed = dialed(&node).await;
        assert!(dialed <= 2, "{dialed} dialed connections, the limit is 2");
    }
    assert_eq!(dialed(&node).await, 2, "it did dial up to its limit");
    node.shutdown().await;
    for p in peers {
        p.shutdown().await;
    }
}
