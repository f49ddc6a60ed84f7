//! Records outlive the nodes that hold them: nodes die in waves on real
//! swarms on loopback and the survivors' repair puts every record back on
//! `replicas` live peers; a node that joins later receives the records it
//! is now among the closest to; a restarted node keeps what it persisted.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::in_secs;
use libp2p::kad::{KBucketKey, RecordKey};
use mesh_core::{PeerKey, StoredValue};
use mesh_dht::test_utils::Testnet;
use mesh_dht::{Dht, DhtConfig, PeerId};

const REPLICAS: usize = 5;
const PERIOD: Duration = Duration::from_secs(1);

fn tune(c: &mut DhtConfig) {
    c.refresh_period = PERIOD;
    c.replicas = REPLICAS;
    c.request_timeout = Duration::from_secs(3);
}

/// Key, subkey (for a dictionary entry) and value of one written record.
type Written = (Vec<u8>, Option<Vec<u8>>, Vec<u8>);

/// The records the tests write: regular values and dictionaries.
fn records() -> Vec<Written> {
    let mut out = Vec::new();
    for i in 0..48 {
        out.push((
            format!("churn-{i}").into_bytes(),
            None,
            format!("value-{i}").into_bytes(),
        ));
    }
    for i in 0..6 {
        for sk in ["a", "b"] {
            out.push((
                format!("churn-dict-{i}").into_bytes(),
                Some(sk.as_bytes().to_vec()),
                format!("{sk}-{i}").into_bytes(),
            ));
        }
    }
    out
}

/// Whether `v` holds the entry (`subkey`, `value`).
fn holds(v: &Option<StoredValue>, subkey: &Option<Vec<u8>>, value: &[u8]) -> bool {
    match (v, subkey) {
        (Some(StoredValue::Regular(item)), None) => item.value == value,
        (Some(StoredValue::Dictionary(d)), Some(sk)) => d.get(sk).is_some_and(|i| i.value == value),
        _ => false,
    }
}

/// For each record, how many of `nodes` hold it themselves.
async fn copies(nodes: &[Dht]) -> Vec<usize> {
    let mut out = Vec::new();
    for (key, subkey, value) in records() {
        let mut n = 0;
        for node in nodes {
            if holds(&node.local(key.clone()).await.unwrap(), &subkey, &value) {
                n += 1;
            }
        }
        out.push(n);
    }
    out
}

/// Waits (at most `limit`) until every record is held by `want` of `nodes`;
/// returns how long it took, or the copy counts at the deadline.
async fn until_replicated(
    nodes: &[Dht],
    want: usize,
    limit: Duration,
) -> Result<Duration, Vec<usize>> {
    let start = Instant::now();
    loop {
        let c = copies(nodes).await;
        if c.iter().all(|n| *n >= want) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn repair_sent(nodes: &[Dht]) -> (u64, u64) {
    let mut total = (0, 0);
    for n in nodes {
        let s = n.stats().await.unwrap();
        total.0 += s.repair_bytes_sent;
        total.1 += s.repair_entries_sent;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_three_quarters_of_the_nodes_dying_in_waves() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("persisted.redb");
    // Node 1 persists its store and is restarted at the end.
    let persisted_key: Arc<Mutex<Option<PeerKey>>> = Arc::default();
    let (sp, pk) = (store_path.clone(), persisted_key.clone());
    let net = Testnet::builder(16)
        .configure(move |i, c| {
            tune(c);
            if i == 1 {
                c.store_path = Some(sp.clone());
                *pk.lock().unwrap() = Some(c.key.clone());
            }
        })
        .build()
        .await;
    let mut live = net.into_nodes();
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (i, (key, subkey, value)) in records().into_iter().enumerate() {
        let writer = &live[i % live.len()];
        let report = writer
            .store(key, subkey, value, in_secs(600))
            .await
            .unwrap();
        assert!(report.accepted >= 1, "{report:?}");
    }
    let took = until_replicated(&live, REPLICAS, Duration::from_secs(30))
        .await
        .unwrap_or_else(|c| panic!("records never reached {REPLICAS} replicas: {c:?}"));
    eprintln!("initial placement complete after {took:?}");

    // A quiet network sends no repair traffic once every replica holds
    // what it should.
    tokio::time::sleep(3 * PERIOD).await;
    let before = repair_sent(&live).await;
    tokio::time::sleep(3 * PERIOD).await;
    assert_eq!(
        repair_sent(&live).await,
        before,
        "repair traffic in a quiet network"
    );

    // Three waves of a quarter of the nodes (4 of 16), each time the four
    // that hold the most records, node 1 among the first.
    let mut killed_persisted = None;
    for wave in 0..3 {
        let mut load = Vec::new();
        for (i, n) in live.iter().enumerate() {
            load.push((n.stats().await.unwrap().stored_entries, i));
        }
        load.sort_unstable_by(|a, b| b.cmp(a));
        let mut victims: Vec<usize> = load.iter().take(4).map(|(_, i)| *i).collect();
        if wave == 0 {
            let persisted = persisted_key.lock().unwrap().clone().unwrap().peer_id();
            let p = live.iter().position(|n| n.peer_id() == persisted).unwrap();
            if !victims.contains(&p) {
                victims[3] = p;
            }
            killed_persisted = Some(persisted);
        }
        victims.sort_unstable_by(|a, b| b.cmp(a));
        for i in victims {
            let n = live.remove(i);
            n.shutdown().await;
        }
        let want = REPLICAS.min(live.len());
        let took = until_replicated(&live, want, Duration::from_secs(30))
            .await
            .unwrap_or_else(|c| {
                panic!("wave {wave}: records not back on {want} live nodes: {c:?}")
            });
        eprintln!(
            "wave {wave}: {} live, every record on {want} of them after {took:?}",
            live.len()
        );
        // Waves are a few periods apart.
        tokio::time::sleep(3 * PERIOD).await;
    }
    let (bytes, entries) = repair_sent(&live).await;
    assert!(entries > 0 && bytes > 0, "the survivors repaired nothing");

    // Every record reads back whole from every survivor.
    for node in &live {
        for (key, subkey, value) in records() {
            let got = node.get(key.clone(), true).await.unwrap();
            assert!(holds(&got, &subkey, &value), "{key:?} read {got:?}");
        }
    }

    // The node that persisted its store comes back with its records.
    let mut c = mesh_dht::test_utils::config(
        mesh_dht::test_utils::TEST_SUBNET,
        persisted_key.lock().unwrap().clone().unwrap(),
        vec![],
    );
    tune(&mut c);
    c.store_path = Some(store_path);
    let back = Dht::start(c).await.unwrap();
    assert_eq!(Some(back.peer_id()), killed_persisted);
    assert!(
        back.stats().await.unwrap().stored_entries > 0,
        "the restarted node lost what it persisted"
    );
    back.shutdown().await;
    for n in live {
        n.shutdown().await;
    }
}

/// The `REPLICAS` peers of `peers` closest to `key`.
fn closest(key: &[u8], peers: &[PeerId]) -> Vec<PeerId> {
    let target = KBucketKey::new(RecordKey::new(&key));
    let mut by: Vec<_> = peers
        .iter()
        .map(|p| (target.distance(&KBucketKey::from(*p)), *p))
        .collect();
    by.sort_unstable_by_key(|a| a.0);
    by.into_iter().take(REPLICAS).map(|(_, p)| p).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_receives_the_records_it_is_now_closest_to() {
    let net = Testnet::builder(8).configure(|_, c| tune(c)).build().await;
    let nodes = net.into_nodes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (key, subkey, value) in records() {
        nodes[0]
            .store(key, subkey, value, in_secs(600))
            .await
            .unwrap();
    }
    let first = mesh_dht::test_utils::addr(&nodes[0]).await;
    let mut c = mesh_dht::test_utils::config(
        mesh_dht::test_utils::TEST_SUBNET,
        PeerKey::generate(mesh_core::KeyType::Ed25519).unwrap(),
        vec![first],
    );
    tune(&mut c);
    let joined = Dht::start(c).await.unwrap();
    let mut everyone: Vec<PeerId> = nodes.iter().map(Dht::peer_id).collect();
    everyone.push(joined.peer_id());
    let owed: Vec<_> = records()
        .into_iter()
        .filter(|(key, _, _)| closest(key, &everyone).contains(&joined.peer_id()))
        .collect();
    assert!(
        !owed.is_empty(),
        "the new node is among the closest to no key"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = 0;
        for (key, subkey, value) in &owed {
            if !holds(&joined.local(key.clone()).await.unwrap(), subkey, value) {
                missing += 1;
            }
        }
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} records the new node should hold never reached it",
            owed.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    joined.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}
