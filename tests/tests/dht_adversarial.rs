//! Bad input from the network: forged owners, garbage and oversized
//! messages, floods, and records slipped in through kad's own PUT_VALUE.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::raw::RawPeer;
use common::{addr_of, config, in_secs, network, shutdown, Net};
use mesh_core::validator::{owner_marker, SignatureValidator};
use mesh_core::{CompositeValidator, Expiration, KeyType, PeerKey, Record, StoredValue};
use mesh_dht::{Dht, DhtError, RateLimit};
use mesh_proto::dht as pb;

fn store_req(r: Record) -> pb::Request {
    pb::Request {
        kind: Some(pb::request::Kind::Store(pb::StoreRequest {
            records: vec![r.into()],
            ..Default::default()
        })),
    }
}

fn find_req(key: &[u8]) -> pb::Request {
    pb::Request {
        kind: Some(pb::request::Kind::Find(pb::FindRequest {
            key: key.to_vec(),
            after: None,
        })),
    }
}

fn store_result(resp: pb::Response) -> pb::StoreResult {
    match resp.kind {
        Some(pb::response::Kind::Store(s)) => s.results.into_iter().next().expect("one result"),
        other => panic!("expected a store response, got {other:?}"),
    }
}

fn dict_value(v: Option<StoredValue>, subkey: &[u8]) -> Vec<u8> {
    match v {
        Some(StoredValue::Dictionary(d)) => d.get(subkey).expect("subkey present").value.clone(),
        other => panic!("expected a dictionary, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_subkey_cannot_be_overwritten_even_after_the_owner_left() {
    let servers = network(4, Net::Tcp).await;
    let join = vec![addr_of(&servers[0], Net::Tcp).await];
    let owner_key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let mut c = config(Net::Tcp, join.clone());
    c.key = owner_key.clone();
    let owner = Dht::start(c).await.unwrap();
    let other = Dht::start(config(Net::Tcp, join)).await.unwrap();

    let key = b"heartbeats".to_vec();
    let subkey = owner_marker(&owner_key.public());
    let t = in_secs(300);
    let r = owner
        .store(key.clone(), Some(subkey.clone()), b"alive".to_vec(), t)
        .await
        .unwrap();
    // At least the 5 closest (a lookup that meets closer peers late stores
    // to them too).
    assert!(r.accepted >= 5 && r.refused.is_empty(), "{r:?}");

    // Through the API, another node cannot even produce such a record.
    let later = t.saturating_add(Duration::from_secs(60));
    let err = other
        .store(key.clone(), Some(subkey.clone()), b"evil".to_vec(), later)
        .await
        .unwrap_err();
    assert!(matches!(err, DhtError::Invalid(_)), "{err}");

    // Forgeries sent straight to the replicas: a signature by someone else,
    // and the owner's real signature reused with a later expiration.
    let mut by_other = Record::with_subkey(key.clone(), subkey.clone(), b"evil".to_vec(), later);
    by_other.value = [b"evil".as_slice(), b"[signature:", &[b'A'; 88], b"]"].concat();
    let owner_signs =
        CompositeValidator::new().with(SignatureValidator::new(Arc::new(owner_key.clone())));
    let mut replayed = owner_signs.sign(Record::with_subkey(
        key.clone(),
        subkey.clone(),
        b"alive".to_vec(),
        t,
    ));
    replayed.expiration = later;
    let mut reworded = owner_signs.sign(Record::with_subkey(
        key.clone(),
        subkey.clone(),
        b"alive".to_vec(),
        later,
    ));
    reworded.value = [b"evil".as_slice(), &reworded.value[5..]].concat();

    let mut raw = RawPeer::new(mesh_dht::test_utils::TEST_SUBNET);
    for round in ["owner online", "owner offline"] {
        if round == "owner offline" {
            owner.shutdown().await;
        }
        for s in &servers {
            let addr = addr_of(s, Net::Tcp).await;
            for forged in [&by_other, &replayed, &reworded] {
                let res = store_result(
                    raw.request(s.peer_id(), addr.clone(), store_req(forged.clone()))
                        .await,
                );
                assert!(!res.accepted, "{round}: {} accepted a forgery", s.peer_id());
                assert_eq!(
                    res.refusal,
                    pb::Refusal::Invalid as i32,
                    "{round}: {}",
                    res.reason
                );
            }
        }
        let got = other.get(key.clone(), true).await.unwrap();
        assert_eq!(
            dict_value(got, &subkey),
            b"alive",
            "{round}: the owner's value survives"
        );
    }
    other.shutdown().await;
    shutdown(&servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_messages_are_refused_while_the_node_keeps_serving() {
    let nodes = network(3, Net::Tcp).await;
    let target = &nodes[0];
    let addr = addr_of(target, Net::Tcp).await;
    let mut raw = RawPeer::new(mesh_dht::test_utils::TEST_SUBNET);

    let no_valid_answer = |r: Result<Vec<u8>, String>| match r {
        Err(_) => true,
        Ok(bytes) => bytes.is_empty(),
    };
    // Undecodable protobuf in a well-formed frame.
    let garbage = [&7u32.to_be_bytes()[..], &[0xff; 7]].concat();
    assert!(no_valid_answer(
        raw.send(target.peer_id(), addr.clone(), garbage).await
    ));
    // Random bytes with a nonsense length.
    let noise: Vec<u8> = (0..1000).map(|_| rand::random::<u8>()).collect();
    assert!(no_valid_answer(
        raw.send(target.peer_id(), addr.clone(), noise).await
    ));
    // A frame announcing 100 MB: refused before it is read.
    let huge = [&(100u32 << 20).to_be_bytes()[..], &[0u8; 1024]].concat();
    assert!(no_valid_answer(
        raw.send(target.peer_id(), addr.clone(), huge).await
    ));

    // Well-formed but meaningless requests get a typed error.
    let resp = raw
        .request(target.peer_id(), addr.clone(), pb::Request { kind: None })
        .await;
    assert!(
        matches!(resp.kind, Some(pb::response::Kind::Error(ref e)) if e.code == pb::error_response::Code::Malformed as i32),
        "{resp:?}"
    );
    let many = pb::Request {
        kind: Some(pb::request::Kind::Store(pb::StoreRequest {
            records: (0..65)
                .map(|i| Record::new(format!("k{i}"), "v", in_secs(60)).into())
                .collect(),
            ..Default::default()
        })),
    };
    let resp = raw.request(target.peer_id(), addr.clone(), many).await;
    assert!(
        matches!(resp.kind, Some(pb::response::Kind::Error(ref e)) if e.code == pb::error_response::Code::Malformed as i32),
        "{resp:?}"
    );
    assert_eq!(
        target.stats().await.unwrap().stored_entries,
        0,
        "nothing of the bad input was stored"
    );

    // An oversized record in a valid message is refused with the reason.
    let big = Record::new("big", vec![1u8; 200_000], in_secs(60));
    let res = store_result(
        raw.request(target.peer_id(), addr.clone(), store_req(big))
            .await,
    );
    assert!(!res.accepted);
    assert_eq!(res.refusal, pb::Refusal::TooLarge as i32, "{}", res.reason);

    // The node still serves everyone, the raw peer included.
    let r = nodes[1]
        .store(b"after".to_vec(), None, b"fine".to_vec(), in_secs(60))
        .await
        .unwrap();
    assert_eq!(r.accepted, 3, "{r:?}");
    let resp = raw
        .request(target.peer_id(), addr.clone(), find_req(b"after"))
        .await;
    match resp.kind {
        Some(pb::response::Kind::Find(f)) => assert!(f.value.is_some()),
        other => panic!("{other:?}"),
    }
    shutdown(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_rate_limited_and_then_served_again() {
    let mut c = config(Net::Tcp, vec![]);
    c.rate_limit = Some(RateLimit {
        per_second: 2.0,
        burst: 3.0,
    });
    let node = Dht::start(c).await.unwrap();
    let addr = addr_of(&node, Net::Tcp).await;
    let mut raw = RawPeer::new(mesh_dht::test_utils::TEST_SUBNET);
    let limited = |r: &pb::Response| matches!(r.kind, Some(pb::response::Kind::Error(ref e)) if e.code == pb::error_response::Code::RateLimited as i32);
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..8 {
        let r = raw
            .request(node.peer_id(), addr.clone(), find_req(b"x"))
            .await;
        if limited(&r) {
            refused += 1;
        } else {
            assert!(matches!(r.kind, Some(pb::response::Kind::Find(_))), "{r:?}");
            served += 1;
        }
    }
    assert!(
        (3..=5).contains(&served),
        "burst of 3 plus a little refill, got {served}"
    );
    assert!(refused >= 3, "the flood is refused, got {refused}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = raw
        .request(node.peer_id(), addr.clone(), find_req(b"x"))
        .await;
    assert!(
        matches!(r.kind, Some(pb::response::Kind::Find(_))),
        "served again after the refill: {r:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_through_kad_put_value_obey_the_same_rules() {
    let node = Dht::start(config(Net::Tcp, vec![])).await.unwrap();
    let addr = addr_of(&node, Net::Tcp).await;
    let mut raw = RawPeer::new(mesh_dht::test_utils::TEST_SUBNET);
    let encode = |v: StoredValue| prost::Message::encode_to_vec(&pb::StoredValue::from(v));
    let regular =
        |value: &str, exp: Expiration| StoredValue::from_record(&Record::new("", value, exp));

    let t = in_secs(300);
    raw.kad_put(
        node.peer_id(),
        addr.clone(),
        b"kad-key",
        encode(regular("via kad", t)),
    )
    .await;
    // older, expired, garbage and forged writes
    raw.kad_put(
        node.peer_id(),
        addr.clone(),
        b"kad-key",
        encode(regular("older", in_secs(100))),
    )
    .await;
    let past = Expiration::now().saturating_sub(Duration::from_secs(1));
    raw.kad_put(
        node.peer_id(),
        addr.clone(),
        b"kad-expired",
        encode(regular("late", past)),
    )
    .await;
    raw.kad_put(node.peer_id(), addr.clone(), b"kad-garbage", vec![0xff; 64])
        .await;
    let victim = PeerKey::generate(KeyType::Ed25519).unwrap();
    let forged = StoredValue::from_record(&Record::with_subkey(
        "",
        owner_marker(&victim.public()),
        "forged[signature:AAAA]",
        t,
    ));
    raw.kad_put(node.peer_id(), addr.clone(), b"kad-owned", encode(forged))
        .await;

    match node.get(b"kad-key".to_vec(), false).await.unwrap() {
        Some(StoredValue::Regular(item)) => assert_eq!(item.value, b"via kad"),
        other => panic!("{other:?}"),
    }
    for k in ["kad-expired", "kad-garbage", "kad-owned"] {
        assert_eq!(
            node.get(k.as_bytes().to_vec(), false).await.unwrap(),
            None,
            "{k} must not be stored"
        );
    }
    assert_eq!(node.stats().await.unwrap().stored_entries, 1);
    node.shutdown().await;
}

/// kad's `PUT_VALUE` takes the record protocol's rate limit and its cap on
/// entries per request: a flood of puts stores the burst and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kad_put_value_flood_is_rate_limited_like_the_record_protocol() {
    let mut c = config(Net::Tcp, vec![]);
    c.rate_limit = Some(RateLimit {
        per_second: 0.5,
        burst: 3.0,
    });
    let node = Dht::start(c).await.unwrap();
    let addr = addr_of(&node, Net::Tcp).await;
    let mut raw = RawPeer::new(mesh_dht::test_utils::TEST_SUBNET);
    let encode = |v: StoredValue| prost::Message::encode_to_vec(&pb::StoredValue::from(v));
    for i in 0..12 {
        let value = StoredValue::from_record(&Record::new("", format!("v{i}"), in_secs(300)));
        raw.kad_put(
            node.peer_id(),
            addr.clone(),
            format!("flood-{i}").as_bytes(),
            encode(value),
        )
        .await;
    }
    // One dictionary of more entries than one request may carry.
    let mut big = None;
    for i in 0..(65 * 2) {
        let r = Record::with_subkey("", format!("s{i:03}"), "v", in_secs(300));
        StoredValue::apply(&mut big, &r, Expiration::now()).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    raw.kad_put(
        node.peer_id(),
        addr.clone(),
        b"too-many",
        encode(big.unwrap()),
    )
    .await;
    let stats = node.stats().await.unwrap();
    assert!(
        (3..=5).contains(&stats.stored_entries),
        "a burst of 3 (and what refilled) out of 12 puts, got {}",
        stats.stored_entries
    );
    assert_eq!(node.get(b"too-many".to_vec(), false).await.unwrap(), None);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_sending_forgeries_is_blocked_and_others_are_served() {
    let mut c = config(Net::Tcp, vec![]);
    c.bans = Some(mesh_dht::BanPolicy {
        refusals_per_minute: 5,
        blocks: vec![Duration::from_secs(2), Duration::from_secs(60)],
    });
    let node = Dht::start(c).await.unwrap();
    let addr = addr_of(&node, Net::Tcp).await;
    let mut raw = RawPeer::new(mesh_dht::test_utils::TEST_SUBNET);
    let forgery = |i: u32| {
        let owner = PeerKey::generate(KeyType::Ed25519).unwrap();
        let mut r = Record::with_subkey(
            b"roster".to_vec(),
            owner_marker(&owner.public()),
            Vec::new(),
            in_secs(60),
        );
        r.value = [
            format!("evil-{i}").as_bytes(),
            b"[signature:",
            &[b'A'; 88],
            b"]",
        ]
        .concat();
        r
    };
    let blocked = |r: &pb::Response| matches!(r.kind, Some(pb::response::Kind::Error(ref e)) if e.code == pb::error_response::Code::RateLimited as i32 && e.message.contains("blocked"));

    // Five forgeries a minute are refused one by one, with the reason.
    for i in 0..5 {
        let res = store_result(
            raw.request(node.peer_id(), addr.clone(), store_req(forgery(i)))
                .await,
        );
        assert!(!res.accepted);
        assert_eq!(res.refusal, pb::Refusal::Invalid as i32, "{}", res.reason);
    }
    let r = raw
        .request(node.peer_id(), addr.clone(), find_req(b"roster"))
        .await;
    assert!(
        matches!(r.kind, Some(pb::response::Kind::Find(_))),
        "still served: {r:?}"
    );
    // The sixth blocks the peer: even its reads are refused, with how long.
    let res = store_result(
        raw.request(node.peer_id(), addr.clone(), store_req(forgery(5)))
            .await,
    );
    assert!(!res.accepted);
    let r = raw
        .request(node.peer_id(), addr.clone(), find_req(b"roster"))
        .await;
    assert!(blocked(&r), "{r:?}");

    // Everyone else is served meanwhile, and nothing forged was stored.
    let other = Dht::start(config(Net::Tcp, vec![addr.clone()]))
        .await
        .unwrap();
    let report = other
        .store(b"honest".to_vec(), None, b"v".to_vec(), in_secs(60))
        .await
        .unwrap();
    assert_eq!(report.accepted, 2, "{report:?}");
    assert!(node.get(b"roster".to_vec(), false).await.unwrap().is_none());

    // The block ends (2 s here); the next one is longer (60 s).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = raw
        .request(node.peer_id(), addr.clone(), find_req(b"roster"))
        .await;
    assert!(
        matches!(r.kind, Some(pb::response::Kind::Find(_))),
        "served again: {r:?}"
    );
    for i in 10..16 {
        raw.request(node.peer_id(), addr.clone(), store_req(forgery(i)))
            .await;
    }
    let r = raw
        .request(node.peer_id(), addr.clone(), find_req(b"roster"))
        .await;
    match &r.kind {
        Some(pb::response::Kind::Error(e)) => {
            assert!(e.message.contains("after 2 violation"), "{}", e.message)
        }
        other => panic!("blocked again: {other:?}"),
    }
    other.shutdown().await;
    node.shutdown().await;
}

/// A staked node that runs no stake gate keeps an unstaked peer in its
/// routing table and names it in its answers. A gated node's lookup never
/// asks that peer, so nothing is stored on it, while the staked peer and the
/// node itself take the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_skip_the_unstaked_peers_a_careless_node_names() {
    let keys: Vec<PeerKey> = (0..2)
        .map(|_| PeerKey::generate(KeyType::Ed25519).unwrap())
        .collect();
    let gate = mesh_dht::test_utils::FixedOracle::new(keys.iter().map(|k| k.peer_id())).gate();
    let mut keys = keys.into_iter();
    // The careless staked node (no gate) and the unstaked peer it admits.
    let mut c = config(Net::Tcp, vec![]);
    c.key = keys.next().unwrap();
    let careless = Dht::start(c).await.unwrap();
    let careless_addr = addr_of(&careless, Net::Tcp).await;
    let unstaked = Dht::start(config(Net::Tcp, vec![careless_addr.clone()]))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !careless
        .routing_table()
        .await
        .unwrap()
        .contains(&unstaked.peer_id())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the careless node admits the unstaked one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The gated node joins through the careless one only.
    let mut c = config(Net::Tcp, vec![careless_addr]);
    c.key = keys.next().unwrap();
    c.stake_gate = Some(gate);
    let gated = Dht::start(c).await.unwrap();
    assert!(!gated
        .routing_table()
        .await
        .unwrap()
        .contains(&unstaked.peer_id()));

    for i in 0..5 {
        let report = gated
            .store(
                format!("k{i}").into_bytes(),
                None,
                b"v".to_vec(),
                in_secs(60),
            )
            .await
            .unwrap();
        assert_eq!(
            report.accepted, 2,
            "the gated node and the careless one: {report:?}"
        );
    }
    assert_eq!(
        unstaked.stats().await.unwrap().stored_keys,
        0,
        "nothing was stored on the unstaked peer"
    );
    assert_eq!(careless.stats().await.unwrap().stored_keys, 5);
    shutdown(&[gated, careless, unstaked]).await;
}

/// The heartbeat wipe, squatting with far-future expirations, huge keys and
/// provider records, against nodes without a stake gate (as a bootnode
/// runs): each is refused with its reason on every replica, and the honest
/// heartbeats stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipes_squatters_huge_keys_and_provider_records_are_refused() {
    use mesh_dht::RefusalKind;
    use mesh_server::heartbeat::{alive_peers, publish, HEARTBEAT_KEY};

    let servers = network(4, Net::Tcp).await;
    let join = vec![addr_of(&servers[0], Net::Tcp).await];
    let mut honest = Vec::new();
    for _ in 0..2 {
        let key = PeerKey::generate(KeyType::Ed25519).unwrap();
        let mut c = config(Net::Tcp, join.clone());
        c.key = key.clone();
        let node = Dht::start(c).await.unwrap();
        let report = publish(
            &node,
            &key.public(),
            &serde_json::json!({ "serving": true }),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert!(report.accepted >= 3, "{report:?}");
        honest.push((key, node));
    }
    let attacker = Dht::start(config(Net::Tcp, join)).await.unwrap();
    let alive = |node: &Dht| {
        let node = node.clone();
        async move {
            alive_peers::<serde_json::Value>(&node)
                .await
                .unwrap()
                .into_iter()
                .map(|h| h.peer_id)
                .collect::<Vec<_>>()
        }
    };
    let mut want: Vec<_> = honest.iter().map(|(k, _)| k.peer_id()).collect();
    want.sort();
    assert_eq!(alive(&attacker).await, want);

    // 1. The wipe: a regular value over the heartbeat dictionary, far ahead
    // (within the maximum TTL). Through the API it never leaves the node...
    let wipe = Record::new(HEARTBEAT_KEY, "wiped", in_secs(23 * 3600));
    let err = attacker.store_record(wipe.clone()).await.unwrap_err();
    assert!(matches!(err, DhtError::Invalid(_)), "{err}");
    // ...and sent raw, through the record protocol and through kad's own
    // PUT_VALUE, every replica refuses it.
    let mut raw = RawPeer::new(mesh_dht::test_utils::TEST_SUBNET);
    let encoded =
        prost::Message::encode_to_vec(&pb::StoredValue::from(StoredValue::from_record(&wipe)));
    for s in &servers {
        let addr = addr_of(s, Net::Tcp).await;
        let res = store_result(
            raw.request(s.peer_id(), addr.clone(), store_req(wipe.clone()))
                .await,
        );
        assert!(!res.accepted, "{} accepted the wipe", s.peer_id());
        assert!(
            res.refusal == pb::Refusal::Protected as i32
                || res.refusal == pb::Refusal::Invalid as i32,
            "{}: {}",
            s.peer_id(),
            res.reason
        );
        raw.kad_put(s.peer_id(), addr, HEARTBEAT_KEY, encoded.clone())
            .await;
    }
    assert_eq!(alive(&attacker).await, want, "heartbeats survive the wipe");
    assert_eq!(alive(&honest[0].1).await, want);

    // 2. Squatting: an expiration ten years ahead is refused everywhere,
    // with the reason.
    let squat = Expiration::now().saturating_add(Duration::from_secs(10 * 365 * 24 * 3600));
    let report = attacker
        .store(b"squat".to_vec(), None, b"mine".to_vec(), squat)
        .await
        .unwrap();
    assert_eq!(report.accepted, 0, "{report:?}");
    assert!(report.refused.len() >= 3, "{report:?}");
    for r in &report.refused {
        assert_eq!(r.kind, RefusalKind::TooFarAhead, "{r:?}");
        assert!(r.reason.contains("ahead"), "{}", r.reason);
    }

    // 3. A key of 4 KiB: refused as too large, naming the key.
    let report = attacker
        .store(vec![b'k'; 4096], None, b"v".to_vec(), in_secs(60))
        .await
        .unwrap();
    assert_eq!(report.accepted, 0, "{report:?}");
    assert!(!report.refused.is_empty(), "{report:?}");
    for r in &report.refused {
        assert_eq!(r.kind, RefusalKind::TooLarge, "{r:?}");
        assert!(r.reason.contains("key"), "{}", r.reason);
    }

    // 4. Provider records are refused: nothing is stored, nothing served.
    let target = &servers[1];
    let addr = addr_of(target, Net::Tcp).await;
    let before = target.stats().await.unwrap().stored_entries;
    for i in 0..50u32 {
        raw.kad_add_provider(target.peer_id(), addr.clone(), format!("p{i}").as_bytes())
            .await;
    }
    assert_eq!(
        raw.kad_get_providers(target.peer_id(), addr, b"p7").await,
        0,
        "no provider record is kept"
    );
    assert_eq!(target.stats().await.unwrap().stored_entries, before);

    // The nodes keep serving honest writes.
    let report = honest[1]
        .1
        .store(b"after".to_vec(), None, b"ok".to_vec(), in_secs(60))
        .await
        .unwrap();
    assert!(report.accepted >= 3, "{report:?}");
    attacker.shutdown().await;
    for (_, n) in &honest {
        n.shutdown().await;
    }
    shutdown(&servers).await;
}

/// The repair's messages are input like any other: digests are bounded and
/// answered by the merge rules, repair stores are checked record by record
/// and cannot overwrite anything newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_digests_and_stores_are_checked_like_any_other_input() {
    let nodes = network(3, Net::Tcp).await;
    let target = &nodes[0];
    let addr = addr_of(target, Net::Tcp).await;
    let mut raw = RawPeer::new(mesh_dht::test_utils::TEST_SUBNET);
    let exp = in_secs(600);
    let r = nodes[1]
        .store(b"held".to_vec(), None, b"honest".to_vec(), exp)
        .await
        .unwrap();
    assert_eq!(r.accepted, 3, "{r:?}");
    let malformed = |r: &pb::Response| matches!(r.kind, Some(pb::response::Kind::Error(ref e)) if e.code == pb::error_response::Code::Malformed as i32);

    let sync = |keys: Vec<pb::KeyDigest>| pb::Request {
        kind: Some(pb::request::Kind::Sync(pb::SyncRequest { keys })),
    };
    let digest = |key: &[u8], ms: u64| pb::KeyDigest {
        key: key.to_vec(),
        entries: vec![pb::EntryDigest {
            subkey: None,
            expiration_ms: ms,
        }],
    };
    let ms = exp.as_millis();
    let resp = raw
        .request(
            target.peer_id(),
            addr.clone(),
            sync(vec![
                digest(b"held", ms),
                digest(b"held", ms + 1000),
                digest(b"missing", ms),
            ]),
        )
        .await;
    match resp.kind {
        Some(pb::response::Kind::Sync(s)) => assert_eq!(s.wanted, vec![1, 2]),
        other => panic!("{other:?}"),
    }
    // A digest over the entry limit is refused.
    let flood = (0..5000)
        .map(|i| digest(format!("k{i}").as_bytes(), ms))
        .collect();
    let resp = raw
        .request(target.peer_id(), addr.clone(), sync(flood))
        .await;
    assert!(malformed(&resp), "{resp:?}");

    // Publishers named for some records only: refused whole.
    let two = pb::Request {
        kind: Some(pb::request::Kind::Store(pb::StoreRequest {
            records: vec![
                Record::new("r1", "v", exp).into(),
                Record::new("r2", "v", exp).into(),
            ],
            publishers: vec![nodes[1].peer_id().to_bytes()],
        })),
    };
    let resp = raw.request(target.peer_id(), addr.clone(), two).await;
    assert!(malformed(&resp), "{resp:?}");

    // A "repair" of an older copy, and of a record no validator accepts
    // (the heartbeat key without an owner-marked subkey), changes nothing.
    let repair = |r: Record| pb::Request {
        kind: Some(pb::request::Kind::Store(pb::StoreRequest {
            records: vec![r.into()],
            publishers: vec![nodes[1].peer_id().to_bytes()],
        })),
    };
    let older = Record::new("held", "forged", in_secs(300));
    let res = store_result(
        raw.request(target.peer_id(), addr.clone(), repair(older))
            .await,
    );
    assert_eq!(res.refusal, pb::Refusal::NotNewer as i32, "{}", res.reason);
    let wipe = Record::new(mesh_core::validator::HEARTBEAT_KEY, "wiped", in_secs(300));
    let res = store_result(
        raw.request(target.peer_id(), addr.clone(), repair(wipe))
            .await,
    );
    assert!(!res.accepted, "{}", res.reason);
    match target.local(b"held".to_vec()).await.unwrap() {
        Some(StoredValue::Regular(item)) => assert_eq!(item.value, b"honest"),
        other => panic!("{other:?}"),
    }
    shutdown(&nodes).await;
}
