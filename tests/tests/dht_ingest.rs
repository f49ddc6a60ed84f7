//! Inbound records are validated off the node's event loop, behind a
//! bounded queue: a slow validator (a subnet's own rule, say, or a flood of
//! records that cost a signature check each) neither stalls the node nor
//! piles up without end; past the queue the sender is told the node is busy.

mod common;

use std::any::Any;
use std::time::{Duration, Instant};

use common::{addr_of, in_secs, Net};
use mesh_core::validator::{Kind, RecordValidator, ValidationError};
use mesh_core::{Record, StoredValue};
use mesh_dht::Dht;

/// Takes a second to check a record under `slow/`, 30 ms under `queue/`.
struct Sluggish;

impl RecordValidator for Sluggish {
    fn validate(&self, record: &Record, _: Kind) -> Result<(), ValidationError> {
        if record.key.starts_with(b"slow/") {
            std::thread::sleep(Duration::from_secs(1));
        } else if record.key.starts_with(b"queue/") {
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

async fn holds(dht: &Dht, key: &str) -> bool {
    matches!(
        dht.local(key.as_bytes().to_vec()).await,
        Ok(Some(StoredValue::Regular(_)))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_validator_neither_stalls_the_node_nor_queues_without_end() {
    let mut c = common::config(Net::Tcp, vec![]);
    c.validator.add(Sluggish);
    c.rate_limit = None;
    let a = Dht::start(c).await.unwrap();
    let b = Dht::start(common::config(Net::Tcp, vec![addr_of(&a, Net::Tcp).await]))
        .await
        .unwrap();

    // Three records of a second each to check (within the storer's 5 s
    // request timeout): the node keeps answering its own API (every
    // command goes through the event loop) at once.
    let writes: Vec<_> = (0..3)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                b.store(
                    format!("slow/{i}").into_bytes(),
                    None,
                    b"v".to_vec(),
                    in_secs(600),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..15 {
        let t = Instant::now();
        a.stats().await.unwrap();
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_millis(300),
        "the event loop answered within {slowest:?} while validating"
    );
    for w in writes {
        let report = w.await.unwrap();
        assert!(
            report.refused.iter().all(|r| r.peer != a.peer_id())
                && report.unreachable.iter().all(|(p, _)| *p != a.peer_id()),
            "a took it: {report:?}"
        );
    }
    for i in 0..3 {
        assert!(holds(&a, &format!("slow/{i}")).await, "slow/{i} stored");
    }

    // A burst larger than the queue: what fits is stored, the rest is
    // answered "busy" (the storer sees it among the peers it could not
    // use), and nothing is refused for any other reason.
    let writes: Vec<_> = (0..160)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let report = b
                    .store(
                        format!("queue/{i}").into_bytes(),
                        None,
                        b"v".to_vec(),
                        in_secs(600),
                    )
                    .await
                    .unwrap();
                (i, report)
            })
        })
        .collect();
    let (mut busy, mut stored) = (0, Vec::new());
    for w in writes {
        let (i, report) = w.await.unwrap();
        assert!(
            report.refused.iter().all(|r| r.peer != a.peer_id()),
            "{report:?}"
        );
        match report.unreachable.iter().find(|(p, _)| *p == a.peer_id()) {
            Some((_, why)) => {
                assert!(why.contains("busy"), "{why}");
                busy += 1;
            }
            None => stored.push(i),
        }
    }
    assert!(busy > 0, "a burst past the queue meets a busy node");
    assert!(
        stored.len() >= 64,
        "at least a queue's worth is stored: {}",
        stored.len()
    );
    for i in stored {
        assert!(holds(&a, &format!("queue/{i}")).await, "queue/{i} stored");
    }
    b.shutdown().await;
    a.shutdown().await;
}
