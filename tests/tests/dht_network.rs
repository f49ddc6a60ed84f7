//! Multi-node DHT tests over real libp2p swarms on loopback.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{config, in_secs, network, shutdown, Net};
use mesh_core::{Expiration, StoredValue};
use mesh_dht::{Dht, DhtError};
use rand::seq::SliceRandom;

fn value_of(v: Option<StoredValue>) -> Vec<u8> {
    match v {
        Some(StoredValue::Regular(item)) => item.value,
        other => panic!("expected a regular value, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_store_and_read_through_other_nodes() {
    let nodes = network(20, Net::Tcp).await;
    let mut rng = rand::thread_rng();
    for i in 0..40 {
        let key = format!("key-{i}").into_bytes();
        let writer = nodes.choose(&mut rng).unwrap();
        let report = writer
            .store(
                key.clone(),
                None,
                format!("value-{i}").into_bytes(),
                in_secs(600),
            )
            .await
            .unwrap();
        assert_eq!(
            report.accepted, 5,
            "every one of the 5 closest replicas accepts: {report:?}"
        );
        assert!(report.refused.is_empty(), "{report:?}");
        // Read through a different node, asking the replicas (latest).
        let reader = loop {
            let r = nodes.choose(&mut rng).unwrap();
            if r.peer_id() != writer.peer_id() {
                break r;
            }
        };
        let got = reader.get(key.clone(), true).await.unwrap();
        assert_eq!(value_of(got), format!("value-{i}").into_bytes());
    }
    // The records live on other nodes than the writers: count holders.
    let mut holders = 0;
    for n in &nodes {
        if n.stats().await.unwrap().stored_keys > 0 {
            holders += 1;
        }
    }
    assert!(
        holders >= 10,
        "40 keys spread over at least 10 of 20 nodes, got {holders}"
    );
    assert_eq!(nodes[0].get(b"missing".to_vec(), true).await.unwrap(), None);
    shutdown(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_network_stores_and_reads() {
    let nodes = network(4, Net::Quic).await;
    let r = nodes[3]
        .store(b"q".to_vec(), None, b"over quic".to_vec(), in_secs(60))
        .await
        .unwrap();
    assert!(r.accepted >= 3, "{r:?}");
    assert_eq!(
        value_of(nodes[1].get(b"q".to_vec(), true).await.unwrap()),
        b"over quic"
    );
    shutdown(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_merge_one_dictionary() {
    let nodes = network(10, Net::Memory).await;
    for n in &nodes {
        let r = n
            .store(
                b"members".to_vec(),
                Some(n.peer_id().to_bytes()),
                format!("hello from {}", n.peer_id()).into_bytes(),
                in_secs(120),
            )
            .await
            .unwrap();
        assert!(r.accepted >= 1, "{r:?}");
    }
    let want: BTreeSet<Vec<u8>> = nodes.iter().map(|n| n.peer_id().to_bytes()).collect();
    for n in &nodes {
        match n.get(b"members".to_vec(), true).await.unwrap() {
            Some(StoredValue::Dictionary(d)) => {
                let got: BTreeSet<Vec<u8>> = d.keys().cloned().collect();
                assert_eq!(
                    got,
                    want,
                    "reader {} sees every writer's subkey",
                    n.peer_id()
                );
                for (sk, item) in &d {
                    let pid = mesh_core::PeerId::from_bytes(sk).unwrap();
                    assert_eq!(item.value, format!("hello from {pid}").into_bytes());
                }
            }
            other => panic!("expected a dictionary, got {other:?}"),
        }
    }
    shutdown(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_older_writes_are_refused_with_the_reason() {
    let nodes = network(6, Net::Memory).await;
    let past = Expiration::now().saturating_sub(Duration::from_secs(5));
    let r = nodes[1]
        .store(b"k".to_vec(), None, b"late".to_vec(), past)
        .await
        .unwrap();
    assert_eq!(r.accepted, 0, "{r:?}");
    assert!(!r.refused.is_empty());
    for refusal in &r.refused {
        assert_eq!(refusal.kind, mesh_dht::RefusalKind::Expired, "{refusal:?}");
        assert!(
            refusal.reason.contains("already past"),
            "{}",
            refusal.reason
        );
    }

    let t = in_secs(300);
    assert_eq!(
        nodes[2]
            .store(b"k".to_vec(), None, b"v2".to_vec(), t)
            .await
            .unwrap()
            .accepted,
        5
    );
    for older in [t, t.saturating_sub(Duration::from_secs(10))] {
        let r = nodes[3]
            .store(b"k".to_vec(), None, b"v1".to_vec(), older)
            .await
            .unwrap();
        assert_eq!(r.accepted, 0, "{r:?}");
        assert_eq!(r.refused.len(), 5, "{r:?}");
        for refusal in &r.refused {
            assert_eq!(refusal.kind, mesh_dht::RefusalKind::NotNewer, "{refusal:?}");
            assert!(
                refusal.reason.contains("strictly later"),
                "{}",
                refusal.reason
            );
        }
    }
    // Nothing was lost: the newer value is still there.
    assert_eq!(
        value_of(nodes[4].get(b"k".to_vec(), true).await.unwrap()),
        b"v2"
    );
    // And a newer write still wins.
    let r = nodes[4]
        .store(
            b"k".to_vec(),
            None,
            b"v3".to_vec(),
            t.saturating_add(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(r.accepted, 5);
    assert_eq!(
        value_of(nodes[0].get(b"k".to_vec(), true).await.unwrap()),
        b"v3"
    );
    shutdown(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_are_refused_by_every_replica() {
    let nodes = network(4, Net::Memory).await;
    let big = vec![7u8; mesh_core::StoreLimits::default().max_value_bytes + 1];
    let r = nodes[0]
        .store(b"big".to_vec(), None, big, in_secs(60))
        .await
        .unwrap();
    assert_eq!(r.accepted, 0, "{r:?}");
    assert!(!r.refused.is_empty());
    assert!(
        r.refused
            .iter()
            .all(|x| x.kind == mesh_dht::RefusalKind::TooLarge),
        "{r:?}"
    );
    assert_eq!(nodes[1].get(b"big".to_vec(), true).await.unwrap(), None);
    shutdown(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_node_stores_and_reads_but_is_in_no_routing_table() {
    let nodes = network(5, Net::Tcp).await;
    let mut c = config(Net::Tcp, vec![common::addr_of(&nodes[0], Net::Tcp).await]);
    c.client_mode = true;
    c.listen.clear();
    let client = Dht::start(c).await.unwrap();
    let r = client
        .store(b"from-client".to_vec(), None, b"hi".to_vec(), in_secs(60))
        .await
        .unwrap();
    assert_eq!(
        r.accepted, 5,
        "all five servers hold it, the client holds nothing: {r:?}"
    );
    assert_eq!(client.stats().await.unwrap().stored_entries, 0);
    assert_eq!(
        value_of(client.get(b"from-client".to_vec(), true).await.unwrap()),
        b"hi"
    );
    assert_eq!(
        value_of(nodes[3].get(b"from-client".to_vec(), false).await.unwrap()),
        b"hi"
    );
    // Servers do know each other, and none knows the client.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in &nodes {
        let table = n.routing_table().await.unwrap();
        assert!(!table.is_empty());
        assert!(
            !table.contains(&client.peer_id()),
            "client found in {}'s table",
            n.peer_id()
        );
    }
    client.shutdown().await;
    shutdown(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answering_initial_peer_is_a_clear_error() {
    // A listener that is closed again: nobody answers on that port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ghost = mesh_core::PeerKey::generate(mesh_core::KeyType::Ed25519)
        .unwrap()
        .peer_id();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{ghost}")
        .parse()
        .unwrap();
    let mut c = config(Net::Tcp, vec![addr]);
    c.bootstrap_timeout = Duration::from_secs(3);
    let err = Dht::start(c).await.unwrap_err();
    assert!(
        matches!(err, DhtError::NoInitialPeerAnswered { ref tried, .. } if tried.len() == 1),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("none of the 1 initial peers answered") && msg.contains(&port.to_string()),
        "{msg}"
    );

    let mut c = config(Net::Tcp, vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()]);
    c.bootstrap_timeout = Duration::from_secs(3);
    let err = Dht::start(c).await.unwrap_err();
    assert!(matches!(err, DhtError::BadInitialPeer { .. }), "{err}");
    assert!(err.to_string().contains("/p2p/<PeerId>"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_the_same_identity_keeps_peer_id_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("node.key");
    let store_path = dir.path().join("store.redb");
    let start = |key_path: std::path::PathBuf, store_path: std::path::PathBuf| async move {
        let (key, _) =
            mesh_core::PeerKey::load_or_generate(&key_path, mesh_core::KeyType::Ed25519).unwrap();
        let mut c = config(Net::Tcp, vec![]);
        c.key = key;
        c.store_path = Some(store_path);
        Dht::start(c).await.unwrap()
    };
    let a = start(key_path.clone(), store_path.clone()).await;
    let first_id = a.peer_id();
    a.store(
        b"persisted".to_vec(),
        None,
        b"survives".to_vec(),
        in_secs(600),
    )
    .await
    .unwrap();
    a.store(
        b"dict".to_vec(),
        Some(b"x".to_vec()),
        b"1".to_vec(),
        in_secs(600),
    )
    .await
    .unwrap();
    a.shutdown().await;
    drop(a);

    let b = start(key_path, store_path).await;
    assert_eq!(b.peer_id(), first_id);
    assert_eq!(
        value_of(b.get(b"persisted".to_vec(), false).await.unwrap()),
        b"survives"
    );
    assert!(
        matches!(b.get(b"dict".to_vec(), false).await.unwrap(), Some(StoredValue::Dictionary(d)) if d.len() == 1)
    );
    b.shutdown().await;
}

/// A node that died leaves the others' routing tables as soon as a request
/// to it cannot be dialed, so later lookups stop waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_leaves_the_routing_table_after_a_failed_dial() {
    let nodes = network(6, Net::Tcp).await;
    let (dead, writer) = (&nodes[5], &nodes[0]);
    let victim = dead.peer_id();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !writer.routing_table().await.unwrap().contains(&victim) {
        assert!(std::time::Instant::now() < deadline, "victim never known");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dead.shutdown().await;

    // With 6 nodes and 5 replicas the victim is among the closest of almost
    // every key: the first stores name it unreachable, then it is gone.
    let mut removed_after = None;
    for i in 0..20 {
        let report = writer
            .store(
                format!("k{i}").into_bytes(),
                None,
                b"v".to_vec(),
                in_secs(60),
            )
            .await
            .unwrap();
        assert!(report.accepted >= 4, "{report:?}");
        if !writer.routing_table().await.unwrap().contains(&victim) {
            removed_after = Some(i);
            break;
        }
    }
    assert!(
        removed_after.is_some(),
        "the dead peer stayed in the routing table"
    );
    for i in 0..5 {
        let report = writer
            .store(
                format!("after{i}").into_bytes(),
                None,
                b"v".to_vec(),
                in_secs(60),
            )
            .await
            .unwrap();
        assert!(
            report.unreachable.iter().all(|(p, _)| *p != victim),
            "the dead peer was asked again: {report:?}"
        );
    }
    shutdown(&nodes[..5]).await;
}

/// A store file is input like any other: on restart its records pass the
/// node's validators again (here a rule added since they were written), and
/// a file that is not a database is moved aside instead of stopping the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_validates_its_file_and_survives_a_corrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store.redb");
    let (key, _) = mesh_core::PeerKey::load_or_generate(
        &dir.path().join("node.key"),
        mesh_core::KeyType::Ed25519,
    )
    .unwrap();
    let start = |forbid: bool| {
        let mut c = config(Net::Tcp, vec![]);
        c.key = key.clone();
        c.store_path = Some(store_path.clone());
        if forbid {
            c.validator
                .add(mesh_core::validator::PredicateValidator::new(
                    "no-forbidden",
                    |r, _| !r.key.starts_with(b"forbidden"),
                ));
        }
        Dht::start(c)
    };
    let a = start(false).await.unwrap();
    for (k, sk) in [
        ("kept", None),
        ("forbidden", None),
        ("dict", Some("x")),
        ("dict", Some("y")),
    ] {
        a.store(
            k.as_bytes().to_vec(),
            sk.map(|s: &str| s.as_bytes().to_vec()),
            b"v".to_vec(),
            in_secs(600),
        )
        .await
        .unwrap();
    }
    a.shutdown().await;
    drop(a);

    let b = start(true).await.unwrap();
    assert!(b.local(b"kept".to_vec()).await.unwrap().is_some());
    assert!(
        matches!(b.local(b"dict".to_vec()).await.unwrap(), Some(StoredValue::Dictionary(d)) if d.len() == 2)
    );
    assert_eq!(b.local(b"forbidden".to_vec()).await.unwrap(), None);
    b.shutdown().await;
    drop(b);

    std::fs::write(
        &store_path,
        b"this is not a redb file at all, not even close",
    )
    .unwrap();
    let c = start(false)
        .await
        .expect("a corrupted store file does not stop the node");
    assert_eq!(c.stats().await.unwrap().stored_entries, 0);
    let moved = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("store.redb.corrupt-")
        })
        .count();
    assert_eq!(moved, 1, "the corrupted file is kept aside");
    c.shutdown().await;
}

/// A dictionary larger than one message (40 subkeys of 60 KiB, 2.4 MB,
/// against 1 MiB messages) is read page by page: every subkey comes back,
/// through the replicas and through a client that holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictionary_larger_than_a_message_is_read_in_pages() {
    let nodes = network(4, Net::Tcp).await;
    let key = b"big-dictionary".to_vec();
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 60 * 1024];
    for i in 0..40 {
        let report = nodes[i % 4]
            .store(
                key.clone(),
                Some(format!("sub-{i:02}").into_bytes()),
                value(i),
                in_secs(600),
            )
            .await
            .unwrap();
        assert!(report.accepted >= 3, "{report:?}");
    }
    let client = {
        let c = config(Net::Tcp, vec![common::addr_of(&nodes[0], Net::Tcp).await]);
        let mut c = c;
        c.client_mode = true;
        Dht::start(c).await.unwrap()
    };
    for reader in [&nodes[3], &client] {
        for latest in [true, false] {
            let got = reader.get(key.clone(), latest).await.unwrap();
            let Some(StoredValue::Dictionary(d)) = got else {
                panic!("expected a dictionary, got {got:?}");
            };
            assert_eq!(
                d.len(),
                40,
                "latest={latest}: {:?}",
                d.keys().collect::<Vec<_>>()
            );
            for (i, (subkey, item)) in d.iter().enumerate() {
                assert_eq!(subkey, &format!("sub-{i:02}").into_bytes());
                assert_eq!(item.value, value(i));
            }
        }
    }
    client.shutdown().await;
    shutdown(&nodes).await;
}
