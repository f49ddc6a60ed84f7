//! A bounded in-memory record store applying the merge rules.
//!
//! [`Store`] holds what each key holds ([`StoredValue`]) and enforces the
//! limits of a record store: a maximum value size, a maximum size of key and
//! subkey, a maximum expiration (no record may squat a key for longer than
//! `max_ttl`), a maximum number of subkeys per key, a maximum number of
//! entries (a regular value or one subkey counts as one entry) and of bytes,
//! and per-publisher quotas of entries and bytes. Expired entries are
//! dropped.
//!
//! Eviction is fair between publishers: when the store is full, room is
//! made by evicting the earliest-expiring entry of the publisher that holds
//! the most bytes, so one publisher can only push out its own entries or
//! those of publishers holding more than it does, never a smaller one's.
//! A write is refused (`StoreFull`) when its own publisher holds the most
//! and this record would be its earliest-expiring entry.
//!
//! It does not run validators: the DHT validates a record before it offers
//! it here.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use libp2p_identity::PeerId;

use crate::record::{Expiration, MergeRefusal, Record, Replaced, StoredValue};
use crate::validator::ValidationError;

/// Slack allowed on [`StoreLimits::max_ttl`] for writers whose clocks run
/// ahead of this node's (peers may disagree by a few seconds).
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Limits of a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest value accepted, in bytes (signature included).
    pub max_value_bytes: usize,
    /// Largest key and subkey together, in bytes.
    pub max_key_bytes: usize,
    /// Longest a record may live: an expiration later than now + `max_ttl`
    /// (+ [`CLOCK_SKEW`]) is refused, so nobody squats a key for good.
    pub max_ttl: Duration,
    /// Most subkeys one key's dictionary may hold.
    pub max_subkeys: usize,
    /// Most entries held; the earliest-expiring is evicted to make room.
    pub max_records: usize,
    /// Most entries one publisher may hold in this store.
    pub max_per_publisher: usize,
    /// Most bytes held, each entry charged its key, subkey and value plus
    /// [`ENTRY_OVERHEAD`].
    pub max_bytes: usize,
    /// Most bytes one publisher may hold in this store (charged the same).
    pub max_bytes_per_publisher: usize,
}

/// Bytes charged for each entry beyond its key, subkey and value: what the
/// store's indexes cost, so that many tiny entries are not free.
pub const ENTRY_OVERHEAD: usize = 128;

/// The bytes an entry is charged against [`StoreLimits::max_bytes`].
pub fn charged_bytes(key: &[u8], subkey: Option<&[u8]>, value_len: usize) -> usize {
    key.len() + subkey.map_or(0, <[u8]>::len) + value_len + ENTRY_OVERHEAD
}

impl Default for StoreLimits {
    /// Values of 64 KiB, keys and subkeys of 1 KiB together, a day's TTL,
    /// 1,024 subkeys a key, 100,000 entries and 1 GiB, of which 10,000
    /// entries and 128 MiB a publisher.
    fn default() -> Self {
        Self {
            max_value_bytes: 64 * 1024,
            max_key_bytes: 1024,
            max_ttl: Duration::from_secs(24 * 3600),
            max_subkeys: 1024,
            max_records: 100_000,
            max_per_publisher: 10_000,
            max_bytes: 1 << 30,
            max_bytes_per_publisher: 128 << 20,
        }
    }
}

/// Why a store refused a record. Every refusal travels back to the writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Expired, or not newer than what is stored.
    #[error(transparent)]
    Merge(#[from] MergeRefusal),
    /// The value is larger than the store accepts.
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Key and subkey together are larger than the store accepts.
    #[error("key and subkey of {size} bytes exceed the limit of {max} bytes")]
    KeyTooLarge {
        /// Their size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The expiration is further ahead than the store's maximum TTL.
    #[error(
        "expiration {expiration} is more than {max_ttl:?} ahead (latest accepted now: {latest})"
    )]
    TooFarAhead {
        /// The write's expiration.
        expiration: Expiration,
        /// The maximum TTL.
        max_ttl: Duration,
        /// The latest expiration accepted at the refusing node's clock.
        latest: Expiration,
    },
    /// The key's dictionary already holds the most subkeys allowed.
    #[error("the key already holds {max} subkeys (the limit); this write would add one")]
    TooManySubkeys {
        /// The limit.
        max: usize,
    },
    /// A validator refused the record.
    #[error("invalid record: {0}")]
    Invalid(#[from] ValidationError),
    /// The publisher already holds its quota of entries here.
    #[error("publisher {publisher} already holds {max} entries here (its quota)")]
    QuotaExceeded {
        /// The publisher.
        publisher: PeerId,
        /// The quota.
        max: usize,
    },
    /// This write would take the publisher past its quota of bytes here.
    #[error("publisher {publisher} would hold {bytes} bytes here, over its quota of {max} bytes")]
    BytesQuotaExceeded {
        /// The publisher.
        publisher: PeerId,
        /// What it would hold with this write.
        bytes: usize,
        /// The quota.
        max: usize,
    },
    /// The record could not be saved to the node's disk (it was not kept).
    #[error("the record could not be saved: {0}")]
    NotSaved(String),
    /// The store is full, this record's publisher holds the most, and all
    /// its other entries expire later than this one.
    #[error("store is full ({max} entries at most), this publisher holds the most bytes here and its other entries expire later than this one")]
    StoreFull {
        /// The capacity.
        max: usize,
    },
}

/// One entry's place in the expiration index.
type EntryRef = (Expiration, Vec<u8>, Option<Vec<u8>>);

#[derive(Debug)]
struct Slot {
    value: StoredValue,
    /// Publisher of each entry: `None` for the regular value, `Some(subkey)`.
    publishers: HashMap<Option<Vec<u8>>, PeerId>,
}

/// What one publisher holds.
#[derive(Debug, Default)]
struct Holding {
    bytes: usize,
    /// Its entries, earliest-expiring first.
    entries: BTreeSet<EntryRef>,
}

/// A bounded record store. See the module docs.
#[derive(Debug, Default)]
pub struct Store {
    limits: StoreLimits,
    slots: HashMap<Vec<u8>, Slot>,
    by_expiration: BTreeSet<EntryRef>,
    per_publisher: HashMap<PeerId, Holding>,
    bytes: usize,
}

impl Store {
    /// An empty store with these limits.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Number of entries held (regular values plus subkeys), expired ones
    /// included until [`remove_expired`](Self::remove_expired) runs.
    pub fn len(&self) -> usize {
        self.by_expiration.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by_expiration.is_empty()
    }

    /// Number of keys held.
    pub fn key_count(&self) -> usize {
        self.slots.len()
    }

    /// Entries held for `publisher`.
    pub fn publisher_count(&self, publisher: &PeerId) -> usize {
        self.per_publisher
            .get(publisher)
            .map_or(0, |h| h.entries.len())
    }

    /// Bytes held for `publisher` ([`charged_bytes`] of its entries).
    pub fn publisher_bytes(&self, publisher: &PeerId) -> usize {
        self.per_publisher.get(publisher).map_or(0, |h| h.bytes)
    }

    /// Bytes held ([`charged_bytes`] of every entry).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `writer`, counted as holding `writer_bytes`, holds at least
    /// as many bytes as every other publisher (eviction then starts with it).
    fn is_largest(&self, writer: &PeerId, writer_bytes: usize) -> bool {
        self.per_publisher
            .iter()
            .all(|(p, h)| p == writer || h.bytes <= writer_bytes)
    }

    /// Checks a record against the limits and merge rules without storing it.
    pub fn check(
        &self,
        record: &Record,
        publisher: &PeerId,
        now: Expiration,
    ) -> Result<(), Refusal> {
        if record.value.len() > self.limits.max_value_bytes {
            return Err(Refusal::TooLarge {
                size: record.value.len(),
                max: self.limits.max_value_bytes,
            });
        }
        let key_bytes = record.key.len() + record.subkey.as_ref().map_or(0, Vec::len);
        if key_bytes > self.limits.max_key_bytes {
            return Err(Refusal::KeyTooLarge {
                size: key_bytes,
                max: self.limits.max_key_bytes,
            });
        }
        let latest = now.saturating_add(self.limits.max_ttl + CLOCK_SKEW);
        if record.expiration > latest {
            return Err(Refusal::TooFarAhead {
                expiration: record.expiration,
                max_ttl: self.limits.max_ttl,
                latest,
            });
        }
        let slot = self.slots.get(&record.key);
        StoredValue::check(slot.map(|s| &s.value), record, now)?;
        if let (Some(StoredValue::Dictionary(d)), Some(sk)) =
            (slot.map(|s| &s.value), &record.subkey)
        {
            if !d.contains_key(sk) && d.len() >= self.limits.max_subkeys {
                return Err(Refusal::TooManySubkeys {
                    max: self.limits.max_subkeys,
                });
            }
        }

        // Entries this write removes, and whose they are.
        let mut removed_total = 0usize;
        let mut removed_own = 0usize;
        let mut removed_bytes = 0usize;
        let mut removed_own_bytes = 0usize;
        let mut gone: Vec<EntryRef> = Vec::new();
        if let Some(slot) = slot {
            for (sk, item) in slot.value.entries() {
                let replaced = match (&slot.value, &record.subkey) {
                    (StoredValue::Dictionary(_), Some(new)) => sk == Some(new.as_slice()),
                    // A regular write replaces everything; a subkey write
                    // converts (and so replaces) a regular value.
                    _ => true,
                };
                if !replaced {
                    continue;
                }
                let size = charged_bytes(&record.key, sk, item.value.len());
                removed_total += 1;
                removed_bytes += size;
                let owner = slot.publishers.get(&sk.map(<[u8]>::to_vec));
                if owner == Some(publisher) {
                    removed_own += 1;
                    removed_own_bytes += size;
                    gone.push((item.expiration, record.key.clone(), sk.map(<[u8]>::to_vec)));
                }
            }
        }
        if self.publisher_count(publisher) + 1 - removed_own > self.limits.max_per_publisher {
            return Err(Refusal::QuotaExceeded {
                publisher: *publisher,
                max: self.limits.max_per_publisher,
            });
        }
        let size = charged_bytes(&record.key, record.subkey.as_deref(), record.value.len());
        let own_bytes = self.publisher_bytes(publisher) + size - removed_own_bytes;
        if own_bytes > self.limits.max_bytes_per_publisher {
            return Err(Refusal::BytesQuotaExceeded {
                publisher: *publisher,
                bytes: own_bytes,
                max: self.limits.max_bytes_per_publisher,
            });
        }
        let full = self.len() + 1 - removed_total > self.limits.max_records
            || self.bytes + size - removed_bytes > self.limits.max_bytes;
        if full && self.is_largest(publisher, own_bytes) {
            // Room would be made from this publisher's own entries: its
            // earliest-expiring one goes, and if that is this record, the
            // record is refused.
            let earliest = self
                .per_publisher
                .get(publisher)
                .and_then(|h| h.entries.iter().find(|e| !gone.contains(e)))
                .map(|e| e.0);
            if earliest.is_none_or(|e| e >= record.expiration) {
                return Err(Refusal::StoreFull {
                    max: self.limits.max_records,
                });
            }
        }
        Ok(())
    }

    /// Stores `record` published by `publisher`. On success returns the other
    /// keys whose contents changed because entries were evicted to make room.
    pub fn put(
        &mut self,
        record: &Record,
        publisher: PeerId,
        now: Expiration,
    ) -> Result<Vec<Vec<u8>>, Refusal> {
        self.check(record, &publisher, now)?;
        let mut current = self.slots.remove(&record.key);
        let mut value = current.as_ref().map(|s| s.value.clone());
        let replaced = match StoredValue::apply(&mut value, record, now) {
            Ok(r) => r,
            Err(e) => {
                // check() passed, so this cannot happen; keep the data anyway.
                if let Some(slot) = current {
                    self.slots.insert(record.key.clone(), slot);
                }
                return Err(e.into());
            }
        };
        let mut publishers = current.take().map(|s| s.publishers).unwrap_or_default();
        match replaced {
            Replaced::Nothing => {}
            Replaced::Subkey(old) => {
                self.unindex(
                    &record.key,
                    record.subkey.clone(),
                    old.expiration,
                    old.value.len(),
                    &mut publishers,
                );
            }
            Replaced::Value(old) => {
                for old_rec in old.into_records(record.key.clone()) {
                    self.unindex(
                        &record.key,
                        old_rec.subkey,
                        old_rec.expiration,
                        old_rec.value.len(),
                        &mut publishers,
                    );
                }
            }
        }
        publishers.insert(record.subkey.clone(), publisher);
        let entry: EntryRef = (record.expiration, record.key.clone(), record.subkey.clone());
        let size = charged_bytes(&record.key, record.subkey.as_deref(), record.value.len());
        let holding = self.per_publisher.entry(publisher).or_default();
        holding.bytes += size;
        holding.entries.insert(entry.clone());
        self.bytes += size;
        self.by_expiration.insert(entry.clone());
        self.slots.insert(
            record.key.clone(),
            Slot {
                value: value.expect("apply always leaves a value"),
                publishers,
            },
        );

        // Make room, fairly: the earliest-expiring entry of whoever holds
        // the most bytes (never the entry just written).
        let mut touched = Vec::new();
        while self.len() > self.limits.max_records || self.bytes > self.limits.max_bytes {
            let Some(victim) = self.eviction_victim(&publisher, &entry) else {
                break;
            };
            self.remove_entry(&victim);
            if victim.1 != record.key {
                touched.push(victim.1);
            }
        }
        Ok(touched)
    }

    /// The entry to evict next: the earliest-expiring of the publisher
    /// holding the most bytes (on a tie `writer`, then the one whose entry
    /// expires first), `keep` excepted.
    fn eviction_victim(&self, writer: &PeerId, keep: &EntryRef) -> Option<EntryRef> {
        let mut holders: Vec<(&PeerId, &Holding)> = self.per_publisher.iter().collect();
        holders.sort_unstable_by(|a, b| {
            b.1.bytes
                .cmp(&a.1.bytes)
                .then_with(|| (b.0 == writer).cmp(&(a.0 == writer)))
                .then_with(|| a.1.entries.first().cmp(&b.1.entries.first()))
        });
        holders
            .into_iter()
            .find_map(|(_, h)| h.entries.iter().find(|e| *e != keep).cloned())
    }

    fn unindex(
        &mut self,
        key: &[u8],
        subkey: Option<Vec<u8>>,
        expiration: Expiration,
        value_len: usize,
        publishers: &mut HashMap<Option<Vec<u8>>, PeerId>,
    ) {
        let size = charged_bytes(key, subkey.as_deref(), value_len);
        let entry = (expiration, key.to_vec(), subkey);
        if let Some(p) = publishers.remove(&entry.2) {
            self.dec_publisher(&p, &entry, size);
        }
        self.by_expiration.remove(&entry);
    }

    fn dec_publisher(&mut self, p: &PeerId, entry: &EntryRef, size: usize) {
        self.bytes = self.bytes.saturating_sub(size);
        if let Some(h) = self.per_publisher.get_mut(p) {
            h.entries.remove(entry);
            h.bytes = h.bytes.saturating_sub(size);
            if h.entries.is_empty() {
                self.per_publisher.remove(p);
            }
        }
    }

    fn remove_entry(&mut self, entry: &EntryRef) {
        let (_, key, subkey) = entry;
        self.by_expiration.remove(entry);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let publisher = slot.publishers.remove(subkey);
        let (empty, value_len) = match (&mut slot.value, subkey) {
            (StoredValue::Dictionary(d), Some(sk)) => {
                let len = d.remove(sk).map_or(0, |i| i.value.len());
                (d.is_empty(), len)
            }
            (StoredValue::Regular(i), _) => (true, i.value.len()),
            _ => (true, 0),
        };
        if empty {
            self.slots.remove(key);
        }
        if let Some(p) = publisher {
            let size = charged_bytes(key, subkey.as_deref(), value_len);
            self.dec_publisher(&p, entry, size);
        }
    }

    /// What `key` holds at `now` (expired entries left out).
    pub fn get(&self, key: &[u8], now: Expiration) -> Option<StoredValue> {
        let mut value = self.slots.get(key)?.value.clone();
        if value.drop_expired(now) {
            None
        } else {
            Some(value)
        }
    }

    /// Every key with what it holds and each entry's publisher, for
    /// persistence. Expired entries are included.
    pub fn entries(&self) -> impl Iterator<Item = (Record, PeerId)> + '_ {
        self.slots.keys().flat_map(|key| self.key_entries(key))
    }

    /// The entries of one key with their publishers (empty if none).
    pub fn key_entries(&self, key: &[u8]) -> Vec<(Record, PeerId)> {
        match self.slots.get(key) {
            None => Vec::new(),
            Some(slot) => slot
                .value
                .clone()
                .into_records(key.to_vec())
                .into_iter()
                .map(|r| {
                    let p = slot.publishers[&r.subkey];
                    (r, p)
                })
                .collect(),
        }
    }

    /// Drops everything `key` holds.
    pub fn remove_key(&mut self, key: &[u8]) {
        for (record, _) in self.key_entries(key) {
            self.remove_entry(&(record.expiration, record.key, record.subkey));
        }
    }

    /// Number of entries `key` holds (expired ones included).
    pub fn entry_count(&self, key: &[u8]) -> usize {
        self.slots.get(key).map_or(0, |s| s.value.len())
    }

    /// Every key held, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.slots.keys().map(Vec::as_slice)
    }

    /// What `key` holds at `now` as (subkey, expiration) pairs: the digest a
    /// replica sends so that its peers can say what they lack.
    pub fn digest(&self, key: &[u8], now: Expiration) -> Vec<(Option<Vec<u8>>, Expiration)> {
        match self.slots.get(key).map(|s| &s.value) {
            None => Vec::new(),
            Some(StoredValue::Regular(item)) if item.expiration > now => {
                vec![(None, item.expiration)]
            }
            Some(StoredValue::Regular(_)) => Vec::new(),
            Some(StoredValue::Dictionary(d)) => d
                .iter()
                .filter(|(_, item)| item.expiration > now)
                .map(|(sk, item)| (Some(sk.clone()), item.expiration))
                .collect(),
        }
    }

    /// Whether an entry of `key` (at `subkey`) expiring at `expiration`
    /// would be newer here than what is held: the merge rules would take it.
    pub fn wants(
        &self,
        key: &[u8],
        subkey: Option<&[u8]>,
        expiration: Expiration,
        now: Expiration,
    ) -> bool {
        let probe = Record {
            key: key.to_vec(),
            subkey: subkey.map(<[u8]>::to_vec),
            value: Vec::new(),
            expiration,
        };
        StoredValue::check(self.slots.get(key).map(|s| &s.value), &probe, now).is_ok()
    }

    /// One entry of `key` (the regular value for `subkey == None`) with its
    /// publisher, if held and live at `now`.
    pub fn entry(
        &self,
        key: &[u8],
        subkey: Option<&[u8]>,
        now: Expiration,
    ) -> Option<(Record, PeerId)> {
        let slot = self.slots.get(key)?;
        let item = match (&slot.value, subkey) {
            (StoredValue::Regular(item), None) => item,
            (StoredValue::Dictionary(d), Some(sk)) => d.get(sk)?,
            _ => return None,
        };
        if item.expiration <= now {
            return None;
        }
        let subkey = subkey.map(<[u8]>::to_vec);
        let publisher = *slot.publishers.get(&subkey)?;
        Some((
            Record {
                key: key.to_vec(),
                subkey,
                value: item.value.clone(),
                expiration: item.expiration,
            },
            publisher,
        ))
    }

    /// Drops every entry expired at `now`; returns the keys that changed.
    pub fn remove_expired(&mut self, now: Expiration) -> Vec<Vec<u8>> {
        let mut touched = Vec::new();
        while let Some(first) = self.by_expiration.first().cloned() {
            if first.0 > now {
                break;
            }
            self.remove_entry(&first);
            if touched.last() != Some(&first.1) {
                touched.push(first.1);
            }
        }
        touched.dedup();
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Expiration = Expiration::from_millis(1_000_000);

    fn at(ms: u64) -> Expiration {
        Expiration::from_millis(ms)
    }

    fn limits(max_records: usize, max_per_publisher: usize) -> StoreLimits {
        StoreLimits {
            max_value_bytes: 16,
            max_key_bytes: 64,
            max_ttl: Duration::from_secs(3600),
            max_subkeys: 100,
            max_records,
            max_per_publisher,
            max_bytes: usize::MAX,
            max_bytes_per_publisher: usize::MAX,
        }
    }

    #[test]
    fn huge_keys_far_future_expirations_and_subkey_floods_are_refused() {
        let mut s = Store::new(StoreLimits {
            max_key_bytes: 8,
            max_subkeys: 3,
            ..limits(100, 100)
        });
        let p = PeerId::random();
        let soon = at(2_000_000);
        // Key and subkey count together.
        let err = s
            .put(&Record::with_subkey("kkkk", "sssss", "v", soon), p, NOW)
            .unwrap_err();
        assert_eq!(err, Refusal::KeyTooLarge { size: 9, max: 8 });
        s.put(&Record::with_subkey("kkkk", "ssss", "v", soon), p, NOW)
            .unwrap();
        // An hour (plus the clock skew) is the longest a record may live.
        let limit = NOW.saturating_add(Duration::from_secs(3600) + CLOCK_SKEW);
        let err = s
            .put(
                &Record::new("far", "v", limit.saturating_add(Duration::from_millis(1))),
                p,
                NOW,
            )
            .unwrap_err();
        assert!(
            matches!(err, Refusal::TooFarAhead { latest, .. } if latest == limit),
            "{err}"
        );
        assert!(err.to_string().contains("ahead"), "{err}");
        let err = s
            .put(&Record::new("far", "v", at(u64::MAX)), p, NOW)
            .unwrap_err();
        assert!(matches!(err, Refusal::TooFarAhead { .. }), "{err}");
        s.put(&Record::new("far", "v", limit), p, NOW).unwrap();
        // Three subkeys a key: a fourth is refused, rewriting one is not.
        for sk in ["a", "b", "c"] {
            s.put(&Record::with_subkey("d", sk, "v", soon), p, NOW)
                .unwrap();
        }
        let err = s
            .put(&Record::with_subkey("d", "z", "v", soon), p, NOW)
            .unwrap_err();
        assert_eq!(err, Refusal::TooManySubkeys { max: 3 });
        s.put(&Record::with_subkey("d", "a", "w", at(2_100_000)), p, NOW)
            .unwrap();
        assert_eq!(s.get(b"d", NOW).unwrap().len(), 3);
    }

    #[test]
    fn digests_name_live_entries_and_wants_follows_the_merge_rules() {
        let mut s = Store::new(limits(100, 100));
        let (p, q) = (PeerId::random(), PeerId::random());
        s.put(&Record::new("r", "v", at(2_000_000)), p, NOW)
            .unwrap();
        s.put(&Record::with_subkey("d", "a", "v", at(2_000_000)), p, NOW)
            .unwrap();
        s.put(&Record::with_subkey("d", "b", "v", at(1_500_000)), q, NOW)
            .unwrap();
        assert_eq!(s.digest(b"r", NOW), vec![(None, at(2_000_000))]);
        assert_eq!(
            s.digest(b"d", NOW),
            vec![
                (Some(b"a".to_vec()), at(2_000_000)),
                (Some(b"b".to_vec()), at(1_500_000))
            ]
        );
        // Expired entries are in no digest.
        assert_eq!(s.digest(b"d", at(1_600_000)).len(), 1);
        assert!(s.digest(b"missing", NOW).is_empty());
        // Wanted: only what is missing or newer than what is held.
        assert!(s.wants(b"missing", None, at(2_000_000), NOW));
        assert!(!s.wants(b"r", None, at(2_000_000), NOW));
        assert!(s.wants(b"r", None, at(2_000_001), NOW));
        assert!(!s.wants(b"d", Some(b"b"), at(1_500_000), NOW));
        assert!(s.wants(b"d", Some(b"c"), at(1_100_000), NOW));
        assert!(!s.wants(b"d", Some(b"c"), at(900_000), NOW), "expired");
        // Entries come back with their publishers.
        let (r, who) = s.entry(b"d", Some(b"b"), NOW).unwrap();
        assert_eq!((r.value.as_slice(), who), (&b"v"[..], q));
        assert!(s.entry(b"d", None, NOW).is_none());
        assert!(s.entry(b"d", Some(b"b"), at(1_600_000)).is_none());
        let mut keys: Vec<_> = s.keys().collect();
        keys.sort();
        assert_eq!(keys, vec![&b"d"[..], &b"r"[..]]);
    }

    #[test]
    fn oversized_value_refused() {
        let mut s = Store::new(limits(10, 10));
        let p = PeerId::random();
        let err = s
            .put(&Record::new("k", vec![0u8; 17], at(2_000_000)), p, NOW)
            .unwrap_err();
        assert_eq!(err, Refusal::TooLarge { size: 17, max: 16 });
        assert!(s.is_empty());
        s.put(&Record::new("k", vec![0u8; 16], at(2_000_000)), p, NOW)
            .unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn refusals_keep_existing_data() {
        let mut s = Store::new(limits(10, 10));
        let p = PeerId::random();
        s.put(&Record::new("k", "v1", at(2_000_000)), p, NOW)
            .unwrap();
        let err = s
            .put(&Record::new("k", "v0", at(1_900_000)), p, NOW)
            .unwrap_err();
        assert!(
            matches!(err, Refusal::Merge(MergeRefusal::NotNewer { .. })),
            "{err}"
        );
        let err = s.put(&Record::new("k", "v0", NOW), p, NOW).unwrap_err();
        assert!(
            matches!(err, Refusal::Merge(MergeRefusal::Expired { .. })),
            "{err}"
        );
        assert_eq!(
            s.get(b"k", NOW),
            Some(StoredValue::from_record(&Record::new(
                "k",
                "v1",
                at(2_000_000)
            )))
        );
    }

    #[test]
    fn earliest_expiring_is_evicted_first() {
        let mut s = Store::new(limits(3, 10));
        let p = PeerId::random();
        s.put(&Record::new("a", "1", at(2_000_000)), p, NOW)
            .unwrap();
        s.put(&Record::with_subkey("b", "x", "1", at(1_500_000)), p, NOW)
            .unwrap();
        s.put(&Record::with_subkey("b", "y", "1", at(3_000_000)), p, NOW)
            .unwrap();
        let touched = s
            .put(&Record::new("c", "1", at(2_500_000)), p, NOW)
            .unwrap();
        assert_eq!(touched, vec![b"b".to_vec()]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(b"b", NOW).unwrap().len(), 1);
        // a record that would itself be the earliest is refused
        let err = s
            .put(&Record::new("d", "1", at(1_100_000)), p, NOW)
            .unwrap_err();
        assert_eq!(err, Refusal::StoreFull { max: 3 });
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn publisher_quota_counts_entries_and_replacements() {
        let mut s = Store::new(limits(100, 2));
        let (p, q) = (PeerId::random(), PeerId::random());
        s.put(&Record::with_subkey("k", "1", "v", at(2_000_000)), p, NOW)
            .unwrap();
        s.put(&Record::with_subkey("k", "2", "v", at(2_000_000)), p, NOW)
            .unwrap();
        let err = s
            .put(&Record::with_subkey("k", "3", "v", at(2_000_000)), p, NOW)
            .unwrap_err();
        assert!(
            matches!(err, Refusal::QuotaExceeded { max: 2, .. }),
            "{err}"
        );
        // replacing one's own entry does not grow the count
        s.put(&Record::with_subkey("k", "2", "w", at(2_100_000)), p, NOW)
            .unwrap();
        assert_eq!(s.publisher_count(&p), 2);
        // another publisher is unaffected
        s.put(&Record::with_subkey("k", "3", "v", at(2_000_000)), q, NOW)
            .unwrap();
        // a regular write replacing the dictionary frees p's entries
        s.put(&Record::new("k", "r", at(3_000_000)), q, NOW)
            .unwrap();
        assert_eq!(s.publisher_count(&p), 0);
        assert_eq!(s.publisher_count(&q), 1);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn expired_entries_are_dropped() {
        let mut s = Store::new(limits(10, 10));
        let p = PeerId::random();
        s.put(&Record::with_subkey("k", "a", "1", at(1_100_000)), p, NOW)
            .unwrap();
        s.put(&Record::with_subkey("k", "b", "1", at(1_200_000)), p, NOW)
            .unwrap();
        s.put(&Record::new("j", "1", at(1_100_000)), p, NOW)
            .unwrap();
        assert_eq!(s.get(b"k", at(1_150_000)).unwrap().len(), 1);
        let mut touched = s.remove_expired(at(1_100_000));
        touched.sort();
        assert_eq!(touched, vec![b"j".to_vec(), b"k".to_vec()]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.key_count(), 1);
        assert_eq!(s.publisher_count(&p), 1);
        assert!(s.get(b"k", at(1_200_000)).is_none());
    }

    #[test]
    fn entries_report_publishers() {
        let mut s = Store::new(limits(10, 10));
        let (p, q) = (PeerId::random(), PeerId::random());
        s.put(&Record::with_subkey("k", "a", "1", at(2_000_000)), p, NOW)
            .unwrap();
        s.put(&Record::with_subkey("k", "b", "1", at(2_000_000)), q, NOW)
            .unwrap();
        let mut e: Vec<_> = s
            .key_entries(b"k")
            .into_iter()
            .map(|(r, p)| (r.subkey.unwrap(), p))
            .collect();
        e.sort();
        assert_eq!(e, vec![(b"a".to_vec(), p), (b"b".to_vec(), q)]);
        assert_eq!(s.entries().count(), 2);
    }

    #[test]
    fn a_publisher_cannot_push_out_those_holding_less() {
        let mut s = Store::new(limits(4, 10));
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        s.put(&Record::new("a1", "v", at(2_000_000)), a, NOW)
            .unwrap();
        s.put(&Record::new("a2", "v", at(2_100_000)), a, NOW)
            .unwrap();
        s.put(&Record::new("b1", "v", at(1_500_000)), b, NOW)
            .unwrap();
        s.put(&Record::new("b2", "v", at(1_600_000)), b, NOW)
            .unwrap();
        // Full. A writes more: its own earliest goes, not B's (which
        // expire earlier, and went first under earliest-expiring eviction).
        let touched = s
            .put(&Record::new("a3", "v", at(3_000_000)), a, NOW)
            .unwrap();
        assert_eq!(touched, vec![b"a1".to_vec()]);
        assert_eq!((s.publisher_count(&a), s.publisher_count(&b)), (2, 2));
        // B writes more: now it would hold the most, so its own earliest goes.
        let touched = s
            .put(&Record::new("b3", "v", at(1_700_000)), b, NOW)
            .unwrap();
        assert_eq!(touched, vec![b"b1".to_vec()]);
        // A newcomer gets in even with the earliest expiration of all, at
        // the expense of a larger holder.
        s.put(&Record::new("c1", "v", at(1_100_000)), c, NOW)
            .unwrap();
        assert_eq!(s.publisher_count(&c), 1);
        assert_eq!(s.len(), 4);
        // A and B held as much; B's entry expired first.
        assert_eq!((s.publisher_count(&a), s.publisher_count(&b)), (2, 1));
        // The largest holder writing what would be its earliest entry is refused.
        let err = s
            .put(&Record::new("a0", "v", at(1_050_000)), a, NOW)
            .unwrap_err();
        assert_eq!(err, Refusal::StoreFull { max: 4 });
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn bytes_are_bounded_per_publisher_and_in_total() {
        let one = charged_bytes(b"k1", None, 10);
        let mut s = Store::new(StoreLimits {
            max_bytes: 4 * one,
            max_bytes_per_publisher: 3 * one,
            ..limits(100, 100)
        });
        let (a, b) = (PeerId::random(), PeerId::random());
        for i in 1..=3 {
            s.put(
                &Record::new(format!("k{i}"), [0u8; 10], at(2_000_000 + i)),
                a,
                NOW,
            )
            .unwrap();
        }
        assert_eq!(s.publisher_bytes(&a), 3 * one);
        let err = s
            .put(&Record::new("k4", [0u8; 10], at(2_000_000)), a, NOW)
            .unwrap_err();
        assert_eq!(
            err,
            Refusal::BytesQuotaExceeded {
                publisher: a,
                bytes: 4 * one,
                max: 3 * one
            }
        );
        assert!(err.to_string().contains("quota"), "{err}");
        // Replacing one's own entry with one as large fits.
        s.put(&Record::new("k3", [1u8; 10], at(2_500_000)), a, NOW)
            .unwrap();
        assert_eq!(s.publisher_bytes(&a), 3 * one);
        // B fills the rest; past the total, A (holding the most) pays.
        s.put(&Record::new("j1", [0u8; 10], at(1_200_000)), b, NOW)
            .unwrap();
        assert_eq!(s.bytes(), 4 * one);
        let touched = s
            .put(&Record::new("j2", [0u8; 10], at(1_300_000)), b, NOW)
            .unwrap();
        assert_eq!(touched, vec![b"k1".to_vec()], "A held the most bytes");
        assert_eq!(s.bytes(), 4 * one);
        assert_eq!(
            (s.publisher_bytes(&a), s.publisher_bytes(&b)),
            (2 * one, 2 * one)
        );
        // Expiry and removal give the bytes back.
        s.remove_expired(at(1_350_000));
        assert_eq!(s.publisher_bytes(&b), 0);
        s.remove_key(b"k3");
        assert_eq!(s.bytes(), one);
    }
}
