//! DHT records, what a key holds, and their merge rules (see `docs/architecture.md`, "Records").
//!
//! A [`Record`] is one write: `(key, subkey?, value, expiration)`. A key holds a
//! [`StoredValue`]: either one regular value or a dictionary of subkeys, each
//! with its own value and expiration. [`StoredValue::apply`] is the single
//! place where the rules live:
//!
//! - a write whose expiration is already past is refused;
//! - a value is replaced only by a strictly later expiration, or by one
//!   expiring at the same time whose value is greater (bytewise): two
//!   writes that tie never leave replicas disagreeing by arrival order;
//! - a subkey write over a regular value converts it into a dictionary only
//!   if it is newer than the regular value, or if the subkey carries an
//!   owner marker (a squatter's regular value never blocks owners);
//! - a regular write over a dictionary must be newer than every subkey, and
//!   is refused outright when a subkey carries an owner marker (`[owner:…]`):
//!   owners' entries (heartbeats, scores) can be replaced only by their
//!   owners, one subkey at a time, never wiped by someone else's value.
//!
//! Reads merge what several replicas returned with [`StoredValue::merge`],
//! which applies the same rules entry by entry.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_proto::dht as pb;

use crate::validator::has_owner_marker;

/// An absolute wall-clock time in milliseconds since the Unix epoch.
///
/// Expirations are absolute so that every replica agrees on which write is
/// newer; peers' clocks may disagree by a few seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Expiration(u64);

impl Expiration {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self(ms)
    }

    /// `ttl` from now.
    pub fn in_(ttl: Duration) -> Self {
        Self::now().saturating_add(ttl)
    }

    /// This time plus `d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_millis() as u64))
    }

    /// This time minus `d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d.as_millis() as u64))
    }
}

impl fmt::Display for Expiration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// One write to the DHT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The key, as the application names it (hashed only for routing).
    pub key: Vec<u8>,
    /// `Some` for one entry of a dictionary.
    pub subkey: Option<Vec<u8>>,
    /// The value (validators may append a signature to it).
    pub value: Vec<u8>,
    /// When the value stops being valid.
    pub expiration: Expiration,
}

impl Record {
    /// A regular (non-dictionary) record.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, expiration: Expiration) -> Self {
        Self {
            key: key.into(),
            subkey: None,
            value: value.into(),
            expiration,
        }
    }

    /// One subkey of a dictionary.
    pub fn with_subkey(
        key: impl Into<Vec<u8>>,
        subkey: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        expiration: Expiration,
    ) -> Self {
        Self {
            key: key.into(),
            subkey: Some(subkey.into()),
            value: value.into(),
            expiration,
        }
    }

    /// The record's size as it counts against the store's limits.
    pub fn size(&self) -> usize {
        self.key.len() + self.subkey.as_ref().map_or(0, Vec::len) + self.value.len()
    }
}

impl From<Record> for pb::Record {
    fn from(r: Record) -> Self {
        pb::Record {
            key: r.key,
            subkey: r.subkey,
            value: r.value,
            expiration_ms: r.expiration.as_millis(),
        }
    }
}

impl From<pb::Record> for Record {
    fn from(r: pb::Record) -> Self {
        Record {
            key: r.key,
            subkey: r.subkey,
            value: r.value,
            expiration: Expiration::from_millis(r.expiration_ms),
        }
    }
}

/// A value with its expiration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The value bytes.
    pub value: Vec<u8>,
    /// When it expires.
    pub expiration: Expiration,
}

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValue {
    /// One value.
    Regular(Item),
    /// Subkeys, each with its own value and expiration.
    Dictionary(BTreeMap<Vec<u8>, Item>),
}

/// Why a write was refused by the merge rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeRefusal {
    /// The write's expiration is already past.
    #[error("expiration {expiration} is already past (now {now})")]
    Expired {
        /// The write's expiration.
        expiration: Expiration,
        /// The refusing node's clock.
        now: Expiration,
    },
    /// Something at least as new is already stored.
    #[error("a value expiring at {stored} is stored; a write must expire strictly later than that (or at the same time with a greater value), this one expires at {expiration}")]
    NotNewer {
        /// The write's expiration.
        expiration: Expiration,
        /// The stored expiration it had to beat.
        stored: Expiration,
    },
    /// A regular write over a dictionary that holds owners' subkeys.
    #[error(
        "the key holds subkeys that belong to their owners; a regular value cannot replace them"
    )]
    Protected,
}

impl StoredValue {
    /// A stored value holding just this record.
    pub fn from_record(record: &Record) -> Self {
        let item = Item {
            value: record.value.clone(),
            expiration: record.expiration,
        };
        match &record.subkey {
            None => StoredValue::Regular(item),
            Some(sk) => StoredValue::Dictionary(BTreeMap::from([(sk.clone(), item)])),
        }
    }

    /// The latest expiration held (a dictionary's is its latest subkey's).
    pub fn expiration(&self) -> Expiration {
        match self {
            StoredValue::Regular(item) => item.expiration,
            StoredValue::Dictionary(d) => {
                d.values().map(|i| i.expiration).max().unwrap_or_default()
            }
        }
    }

    /// True when nothing is held (an empty dictionary).
    pub fn is_empty(&self) -> bool {
        matches!(self, StoredValue::Dictionary(d) if d.is_empty())
    }

    /// Every entry with its subkey (`None` for a regular value), subkeys in
    /// byte order.
    pub fn entries(&self) -> Box<dyn Iterator<Item = (Option<&[u8]>, &Item)> + '_> {
        match self {
            StoredValue::Regular(item) => Box::new(std::iter::once((None, item))),
            StoredValue::Dictionary(d) => {
                Box::new(d.iter().map(|(sk, item)| (Some(sk.as_slice()), item)))
            }
        }
    }

    /// Number of entries: 1 for a regular value, the subkey count for a dictionary.
    pub fn len(&self) -> usize {
        match self {
            StoredValue::Regular(_) => 1,
            StoredValue::Dictionary(d) => d.len(),
        }
    }

    /// Checks whether `record` may be applied to what is stored (`self`, or
    /// nothing) at time `now`, without changing anything.
    pub fn check(
        current: Option<&StoredValue>,
        record: &Record,
        now: Expiration,
    ) -> Result<(), MergeRefusal> {
        if record.expiration <= now {
            return Err(MergeRefusal::Expired {
                expiration: record.expiration,
                now,
            });
        }
        // What the write must beat: an expiration, and for a write over the
        // same entry its value (ties go to the greater value).
        let (stored, tie) = match (current, &record.subkey) {
            (None, _) => return Ok(()),
            (Some(StoredValue::Dictionary(d)), None) if d.keys().any(|sk| has_owner_marker(sk)) => {
                return Err(MergeRefusal::Protected)
            }
            // A regular write must be newer than the regular value or than
            // every subkey of a dictionary.
            (Some(StoredValue::Regular(item)), None) => (item.expiration, Some(&item.value)),
            (Some(cur), None) => (cur.expiration(), None),
            // An owner's subkey is never blocked by someone's regular value
            // (which could not replace it either way round).
            (Some(StoredValue::Regular(_)), Some(sk)) if has_owner_marker(sk) => return Ok(()),
            (Some(StoredValue::Regular(item)), Some(_)) => (item.expiration, None),
            (Some(StoredValue::Dictionary(d)), Some(sk)) => match d.get(sk) {
                Some(item) => (item.expiration, Some(&item.value)),
                None => return Ok(()),
            },
        };
        let wins_tie = record.expiration == stored && tie.is_some_and(|v| record.value > *v);
        if record.expiration > stored || wins_tie {
            Ok(())
        } else {
            Err(MergeRefusal::NotNewer {
                expiration: record.expiration,
                stored,
            })
        }
    }

    /// Applies `record` to `current` (creating it if `None`) under the merge
    /// rules. Returns what the write replaced, if anything: the old regular
    /// value, the old dictionary (when a regular write replaced it) or the
    /// old subkey item.
    pub fn apply(
        current: &mut Option<StoredValue>,
        record: &Record,
        now: Expiration,
    ) -> Result<Replaced, MergeRefusal> {
        Self::check(current.as_ref(), record, now)?;
        let item = Item {
            value: record.value.clone(),
            expiration: record.expiration,
        };
        let replaced = match (current.take(), &record.subkey) {
            (None, _) => {
                *current = Some(StoredValue::from_record(record));
                Replaced::Nothing
            }
            (Some(old), None) => {
                *current = Some(StoredValue::Regular(item));
                Replaced::Value(old)
            }
            (Some(StoredValue::Regular(old)), Some(sk)) => {
                *current = Some(StoredValue::Dictionary(BTreeMap::from([(
                    sk.clone(),
                    item,
                )])));
                Replaced::Value(StoredValue::Regular(old))
            }
            (Some(StoredValue::Dictionary(mut d)), Some(sk)) => {
                let old = d.insert(sk.clone(), item);
                *current = Some(StoredValue::Dictionary(d));
                match old {
                    Some(old) => Replaced::Subkey(old),
                    None => Replaced::Nothing,
                }
            }
        };
        Ok(replaced)
    }

    /// Merges what another replica returned into `self`, entry by entry under
    /// the same rules (expired entries dropped). Used by reads with `latest`.
    pub fn merge(current: &mut Option<StoredValue>, other: StoredValue, now: Expiration) {
        for record in other.into_records(Vec::new()) {
            // A refusal here just means we already hold something newer.
            let _ = Self::apply(current, &record, now);
        }
    }

    /// Drops entries whose expiration is at or before `now`. Returns true if
    /// nothing is left.
    pub fn drop_expired(&mut self, now: Expiration) -> bool {
        match self {
            StoredValue::Regular(item) => item.expiration <= now,
            StoredValue::Dictionary(d) => {
                d.retain(|_, i| i.expiration > now);
                d.is_empty()
            }
        }
    }

    /// The records this value is made of, under `key`.
    pub fn into_records(self, key: Vec<u8>) -> Vec<Record> {
        match self {
            StoredValue::Regular(item) => vec![Record {
                key,
                subkey: None,
                value: item.value,
                expiration: item.expiration,
            }],
            StoredValue::Dictionary(d) => d
                .into_iter()
                .map(|(sk, item)| Record {
                    key: key.clone(),
                    subkey: Some(sk),
                    value: item.value,
                    expiration: item.expiration,
                })
                .collect(),
        }
    }
}

/// What a successful [`StoredValue::apply`] replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// The key or subkey was new.
    Nothing,
    /// The whole previous value (regular, or a dictionary a regular write replaced,
    /// or a regular value a subkey write converted).
    Value(StoredValue),
    /// The previous item of the same subkey.
    Subkey(Item),
}

impl From<StoredValue> for pb::StoredValue {
    fn from(v: StoredValue) -> Self {
        let kind = match v {
            StoredValue::Regular(item) => pb::stored_value::Kind::Regular(pb::Item {
                value: item.value,
                expiration_ms: item.expiration.as_millis(),
            }),
            StoredValue::Dictionary(d) => pb::stored_value::Kind::Dictionary(pb::Dictionary {
                items: d
                    .into_iter()
                    .map(|(subkey, item)| pb::SubkeyItem {
                        subkey,
                        value: item.value,
                        expiration_ms: item.expiration.as_millis(),
                    })
                    .collect(),
            }),
        };
        pb::StoredValue { kind: Some(kind) }
    }
}

/// A stored value on the wire was malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed stored value: {0}")]
pub struct MalformedValue(pub &'static str);

impl TryFrom<pb::StoredValue> for StoredValue {
    type Error = MalformedValue;

    fn try_from(v: pb::StoredValue) -> Result<Self, Self::Error> {
        match v.kind {
            None => Err(MalformedValue("neither regular nor dictionary")),
            Some(pb::stored_value::Kind::Regular(item)) => Ok(StoredValue::Regular(Item {
                value: item.value,
                expiration: Expiration::from_millis(item.expiration_ms),
            })),
            Some(pb::stored_value::Kind::Dictionary(d)) => {
                let mut out = BTreeMap::new();
                for it in d.items {
                    let item = Item {
                        value: it.value,
                        expiration: Expiration::from_millis(it.expiration_ms),
                    };
                    if out.insert(it.subkey, item).is_some() {
                        return Err(MalformedValue("duplicate subkey in dictionary"));
                    }
                }
                Ok(StoredValue::Dictionary(out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Expiration = Expiration::from_millis(1_000_000);

    fn at(ms: u64) -> Expiration {
        Expiration::from_millis(ms)
    }

    fn put(cur: &mut Option<StoredValue>, r: Record) -> Result<Replaced, MergeRefusal> {
        StoredValue::apply(cur, &r, NOW)
    }

    #[test]
    fn expired_write_is_refused() {
        let mut cur = None;
        let err = put(&mut cur, Record::new("k", "v", NOW)).unwrap_err();
        assert!(matches!(err, MergeRefusal::Expired { .. }), "{err}");
        assert!(cur.is_none());
    }

    #[test]
    fn strictly_newer_wins_and_equal_or_older_is_refused() {
        let mut cur = None;
        put(&mut cur, Record::new("k", "v2", at(2_000_000))).unwrap();
        for same in ["v1", "v2"] {
            let eq = put(&mut cur, Record::new("k", same, at(2_000_000))).unwrap_err();
            assert_eq!(
                eq,
                MergeRefusal::NotNewer {
                    expiration: at(2_000_000),
                    stored: at(2_000_000)
                }
            );
        }
        // A tie goes to the greater value, whichever arrived first.
        put(&mut cur, Record::new("k", "v5", at(2_000_000))).unwrap();
        put(&mut cur, Record::new("k", "old", at(1_500_000))).unwrap_err();
        assert_eq!(
            cur.as_ref().unwrap(),
            &StoredValue::from_record(&Record::new("k", "v5", at(2_000_000)))
        );
        put(&mut cur, Record::new("k", "v3", at(2_000_001))).unwrap();
        match cur.unwrap() {
            StoredValue::Regular(i) => assert_eq!(i.value, b"v3"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subkeys_merge_independently() {
        let mut cur = None;
        put(&mut cur, Record::with_subkey("k", "a", "1", at(3_000_000))).unwrap();
        put(&mut cur, Record::with_subkey("k", "b", "2", at(2_000_000))).unwrap();
        // older write to `a` refused, `b` unaffected
        put(&mut cur, Record::with_subkey("k", "a", "x", at(2_500_000))).unwrap_err();
        put(&mut cur, Record::with_subkey("k", "b", "3", at(2_100_000))).unwrap();
        let v = cur.unwrap();
        assert_eq!(v.expiration(), at(3_000_000));
        let StoredValue::Dictionary(d) = v else {
            panic!()
        };
        assert_eq!(d[&b"a"[..]].value, b"1");
        assert_eq!(d[&b"b"[..]].value, b"3");
    }

    #[test]
    fn subkey_over_regular_converts_only_if_newer() {
        let mut cur = None;
        put(&mut cur, Record::new("k", "r", at(2_000_000))).unwrap();
        put(&mut cur, Record::with_subkey("k", "a", "1", at(2_000_000))).unwrap_err();
        assert!(matches!(cur, Some(StoredValue::Regular(_))));
        let replaced = put(&mut cur, Record::with_subkey("k", "a", "1", at(2_000_001))).unwrap();
        assert!(matches!(replaced, Replaced::Value(StoredValue::Regular(_))));
        assert!(matches!(cur, Some(StoredValue::Dictionary(ref d)) if d.len() == 1));
    }

    #[test]
    fn regular_over_dictionary_must_beat_every_subkey() {
        let mut cur = None;
        put(&mut cur, Record::with_subkey("k", "a", "1", at(2_000_000))).unwrap();
        put(&mut cur, Record::with_subkey("k", "b", "2", at(3_000_000))).unwrap();
        let err = put(&mut cur, Record::new("k", "r", at(2_500_000))).unwrap_err();
        assert_eq!(
            err,
            MergeRefusal::NotNewer {
                expiration: at(2_500_000),
                stored: at(3_000_000)
            }
        );
        put(&mut cur, Record::new("k", "r", at(3_000_001))).unwrap();
        assert!(matches!(cur, Some(StoredValue::Regular(_))));
    }

    #[test]
    fn owners_subkeys_are_never_wiped_by_a_regular_write() {
        // The heartbeat wipe: one regular write, however far ahead, would
        // replace every owner's entry.
        let mut cur = None;
        let owned = b"[owner:abc]".to_vec();
        put(
            &mut cur,
            Record::with_subkey("node", owned.clone(), "1", at(2_000_000)),
        )
        .unwrap();
        put(
            &mut cur,
            Record::with_subkey("node", "plain", "2", at(2_000_000)),
        )
        .unwrap();
        let err = put(&mut cur, Record::new("node", "wiped", at(u64::MAX))).unwrap_err();
        assert_eq!(err, MergeRefusal::Protected);
        let Some(StoredValue::Dictionary(d)) = &cur else {
            panic!("the dictionary stays: {cur:?}")
        };
        assert_eq!(d.len(), 2);
        // Reads merge under the same rule: a replica's regular value does
        // not hide the owners' entries either.
        let mut read = cur.clone();
        StoredValue::merge(
            &mut read,
            StoredValue::from_record(&Record::new("node", "wiped", at(u64::MAX))),
            NOW,
        );
        assert_eq!(read, cur);
        // Without owner markers the old rule holds: newer than every subkey wins.
        let mut plain = None;
        put(
            &mut plain,
            Record::with_subkey("k", "a", "1", at(2_000_000)),
        )
        .unwrap();
        put(&mut plain, Record::new("k", "r", at(2_000_001))).unwrap();
    }

    #[test]
    fn merge_takes_newest_per_subkey_and_drops_expired() {
        let mut a = None;
        put(&mut a, Record::with_subkey("k", "x", "a-x", at(2_000_000))).unwrap();
        put(&mut a, Record::with_subkey("k", "y", "a-y", at(3_000_000))).unwrap();
        let mut b = None;
        put(&mut b, Record::with_subkey("k", "x", "b-x", at(2_500_000))).unwrap();
        put(&mut b, Record::with_subkey("k", "y", "b-y", at(2_500_000))).unwrap();
        put(&mut b, Record::with_subkey("k", "z", "b-z", at(2_500_000))).unwrap();
        StoredValue::merge(&mut a, b.unwrap(), NOW);
        let StoredValue::Dictionary(d) = a.unwrap() else {
            panic!()
        };
        assert_eq!(d[&b"x"[..]].value, b"b-x");
        assert_eq!(d[&b"y"[..]].value, b"a-y");
        assert_eq!(d[&b"z"[..]].value, b"b-z");

        let mut v = StoredValue::Dictionary(d);
        assert!(!v.drop_expired(at(2_600_000)));
        assert_eq!(v.len(), 1);
        assert!(v.drop_expired(at(3_000_000)));
    }

    #[test]
    fn wire_roundtrip_and_malformed() {
        let mut cur = None;
        put(&mut cur, Record::with_subkey("k", "x", "1", at(2_000_000))).unwrap();
        let v = cur.unwrap();
        let wire: pb::StoredValue = v.clone().into();
        assert_eq!(StoredValue::try_from(wire).unwrap(), v);
        assert!(StoredValue::try_from(pb::StoredValue { kind: None }).is_err());
        let dup = pb::StoredValue {
            kind: Some(pb::stored_value::Kind::Dictionary(pb::Dictionary {
                items: vec![
                    pb::SubkeyItem {
                        subkey: b"a".to_vec(),
                        value: vec![],
                        expiration_ms: 5,
                    },
                    pb::SubkeyItem {
                        subkey: b"a".to_vec(),
                        value: vec![],
                        expiration_ms: 6,
                    },
                ],
            })),
        };
        assert!(StoredValue::try_from(dup).is_err());
    }
}
