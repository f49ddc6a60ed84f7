//! Property tests of the merge rules: any order and any duplication of the
//! same writes ends in the same stored state, in a bounded [`Store`] as in
//! the bare rules, and merging replicas' answers in any order reads the same.
//!
//! Each key keeps one shape, as applications use them: regular values, a
//! dictionary of plain subkeys, or a dictionary of owners' subkeys (with
//! regular writes over it that are always refused). Expirations collide on
//! purpose: a tie goes to the greater value.

use std::time::Duration;

use mesh_core::validator::owner_marker;
use mesh_core::{Expiration, KeyType, PeerId, PeerKey, Record, Store, StoreLimits, StoredValue};
use proptest::prelude::*;

const NOW: Expiration = Expiration::from_millis(1_000_000);

fn owners() -> [Vec<u8>; 2] {
    use std::sync::OnceLock;
    static OWNERS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    OWNERS
        .get_or_init(|| {
            let key = || PeerKey::generate(KeyType::Ed25519).unwrap();
            [owner_marker(&key().public()), owner_marker(&key().public())]
        })
        .clone()
}

/// One write: which key (0 regular, 1 plain dictionary, 2 owners'
/// dictionary), which subkey, which value, expiring when (0: already past).
fn write() -> impl Strategy<Value = Record> {
    (0u8..3, 0usize..3, 0u8..3, 0u64..6, any::<bool>()).prop_map(
        |(key, sk, value, exp, regular)| {
            let expiration = Expiration::from_millis(NOW.as_millis() + exp * 1000);
            let value = vec![b'a' + value; 1 + usize::from(value)];
            match key {
                0 => Record::new("regular", value, expiration),
                1 => Record::with_subkey("plain", ["x", "y", "z"][sk], value, expiration),
                // Owners' subkeys, and now and then a regular write over them.
                _ if regular => Record::new("owned", value, expiration),
                _ => {
                    let mut subkey = owners()[sk % 2].clone();
                    subkey.extend_from_slice(if sk == 2 { b"b" } else { b"a" });
                    Record {
                        key: b"owned".to_vec(),
                        subkey: Some(subkey),
                        value,
                        expiration,
                    }
                }
            }
        },
    )
}

fn limits() -> StoreLimits {
    StoreLimits {
        max_ttl: Duration::from_secs(3600),
        ..StoreLimits::default()
    }
}

fn store_state(writes: &[Record], publisher: PeerId) -> Vec<Option<StoredValue>> {
    let mut s = Store::new(limits());
    for w in writes {
        let _ = s.put(w, publisher, NOW);
    }
    ["regular", "plain", "owned"]
        .iter()
        .map(|k| s.get(k.as_bytes(), NOW))
        .collect()
}

fn rules_state(writes: &[Record]) -> Vec<Option<StoredValue>> {
    ["regular", "plain", "owned"]
        .iter()
        .map(|k| {
            let mut cur = None;
            for w in writes.iter().filter(|w| w.key == k.as_bytes()) {
                let _ = StoredValue::apply(&mut cur, w, NOW);
            }
            cur
        })
        .collect()
}

/// `writes`, shuffled, with some of them repeated.
fn reordered(writes: Vec<Record>) -> impl Strategy<Value = Vec<Record>> {
    let n = writes.len();
    (
        Just(writes),
        proptest::collection::vec(0..n.max(1), 0..n + 1),
    )
        .prop_flat_map(|(w, dups)| {
            let mut all = w.clone();
            all.extend(dups.into_iter().filter_map(|i| w.get(i).cloned()));
            Just(all).prop_shuffle()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_order_and_duplication_ends_in_the_same_state(
        (writes, other) in proptest::collection::vec(write(), 0..24)
            .prop_flat_map(|w| (Just(w.clone()), reordered(w)))
    ) {
        let p = PeerId::random();
        prop_assert_eq!(store_state(&writes, p), store_state(&other, p));
        prop_assert_eq!(rules_state(&writes), rules_state(&other));
        // The store applies exactly the rules.
        prop_assert_eq!(store_state(&writes, p), rules_state(&writes));
    }

    #[test]
    fn replicas_holding_parts_of_the_writes_read_the_same_in_any_order(
        writes in proptest::collection::vec(write(), 0..24),
        split in proptest::collection::vec(0usize..3, 24),
        order in Just(vec![0usize, 1, 2]).prop_shuffle(),
    ) {
        // Three replicas, each saw some of the writes.
        let mut replicas: [Vec<Record>; 3] = Default::default();
        for (w, r) in writes.iter().zip(&split) {
            replicas[*r].push(w.clone());
        }
        let states: Vec<_> = replicas.iter().map(|r| rules_state(r)).collect();
        let read = |order: &[usize]| -> Vec<Option<StoredValue>> {
            (0..3)
                .map(|k| {
                    let mut cur = None;
                    for r in order {
                        if let Some(v) = states[*r][k].clone() {
                            StoredValue::merge(&mut cur, v, NOW);
                        }
                    }
                    cur
                })
                .collect()
        };
        prop_assert_eq!(read(&[0, 1, 2]), read(&order));
    }
}
