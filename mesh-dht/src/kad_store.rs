//! The record store kad owns: mesh's bounded [`Store`] with dictionaries and
//! merge rules, and optional persistence. Provider records are refused: mesh
//! never uses them, and an unbounded side store anyone can fill is a target.
//!
//! kad reads it directly for inbound `GET_VALUE` (the value is the key's
//! [`pb::StoredValue`]); writes never go through kad's `put`, because record
//! filtering (`StoreInserts::FilterBoth`) hands every inbound record to the
//! event loop, which validates it and calls [`KadStore::apply`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::kad::store::{self, RecordStore};
use libp2p::kad::{ProviderRecord, Record as KadRecord, RecordKey};
use libp2p::PeerId;
use mesh_core::{
    CompositeValidator, Expiration, Kind, Record, Refusal, Store, StoreLimits, StoredValue,
};
use mesh_proto::dht as pb;
use prost::Message;

use crate::persist::{Change, Persist};
use crate::DhtError;

pub(crate) struct KadStore {
    records: Store,
    persist: Option<Arc<Persist>>,
}

impl KadStore {
    /// A store with these limits; with `persist`, what the file holds is
    /// loaded, every record checked by `validator` again (a file is input
    /// like any other: edited, or written under other rules).
    pub(crate) fn new(
        limits: StoreLimits,
        persist: Option<Arc<Persist>>,
        validator: &CompositeValidator,
    ) -> Result<Self, DhtError> {
        let mut records = Store::new(limits);
        if let Some(p) = &persist {
            let now = Expiration::now();
            let (mut loaded, mut dropped, mut invalid) = (0usize, 0usize, 0usize);
            let mut drop_keys = Vec::new();
            for (record, publisher) in p.load()? {
                if let Err(e) = validator.validate(&record, Kind::Put) {
                    tracing::warn!(key = %String::from_utf8_lossy(&record.key), "persisted record refused by the validators: {e}");
                    invalid += 1;
                    drop_keys.push(record.key);
                    continue;
                }
                match records.put(&record, publisher, now) {
                    Ok(_) => loaded += 1,
                    Err(_) => dropped += 1,
                }
            }
            if invalid > 0 {
                // The file keeps only what the store holds.
                drop_keys.dedup();
                let changes: Vec<Change> = drop_keys
                    .into_iter()
                    .map(|k| {
                        let entries = records.key_entries(&k);
                        Change::Key(k, entries)
                    })
                    .collect();
                p.write(&changes)?;
            }
            tracing::info!(
                loaded,
                dropped_expired = dropped,
                dropped_invalid = invalid,
                "restored persisted records"
            );
        }
        Ok(Self { records, persist })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.records
    }

    /// The file, when the store persists.
    pub(crate) fn persist(&self) -> Option<&Arc<Persist>> {
        self.persist.as_ref()
    }

    /// Applies a validated record in memory and returns the rows to write
    /// (none without a file); the caller writes them (the writer thread)
    /// and calls [`KadStore::restore`] if that fails.
    pub(crate) fn apply(
        &mut self,
        record: &Record,
        publisher: PeerId,
        now: Expiration,
    ) -> Result<Vec<Change>, Refusal> {
        if self.persist.is_none() {
            self.records.put(record, publisher, now)?;
            return Ok(Vec::new());
        }
        let before = self.records.key_entries(&record.key);
        let touched = self.records.put(record, publisher, now)?;
        // A subkey written into a dictionary that lost nothing else is one
        // row; anything else rewrites the key.
        let replaced_subkey = before
            .iter()
            .any(|(r, _)| r.subkey.is_some() && r.subkey == record.subkey);
        let one_row = record.subkey.is_some()
            && before.iter().all(|(r, _)| r.subkey.is_some())
            && self.records.entry_count(&record.key)
                == before.len() + usize::from(!replaced_subkey);
        let mut changes = Vec::with_capacity(touched.len() + 1);
        if one_row {
            changes.push(Change::Entry(record.clone(), publisher));
        } else {
            changes.push(Change::Key(
                record.key.clone(),
                self.records.key_entries(&record.key),
            ));
        }
        for k in touched {
            let entries = self.records.key_entries(&k);
            changes.push(Change::Key(k, entries));
        }
        Ok(changes)
    }

    /// A write of `keys` failed: each goes back to what the file holds.
    pub(crate) fn restore(&mut self, keys: &[Vec<u8>]) {
        let Some(persist) = &self.persist else { return };
        let now = Expiration::now();
        for key in keys {
            self.records.remove_key(key);
            match persist.load_key(key) {
                Ok(entries) => {
                    for (r, p) in entries {
                        let _ = self.records.put(&r, p, now);
                    }
                }
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(key),
                    "cannot read the key back after a failed write: {e}"
                ),
            }
        }
    }

    pub(crate) fn get(&self, key: &[u8], now: Expiration) -> Option<StoredValue> {
        self.records.get(key, now)
    }

    /// Drops expired entries; returns the rows to write (none without a file).
    pub(crate) fn remove_expired(&mut self, now: Expiration) -> Vec<Change> {
        let touched = self.records.remove_expired(now);
        if self.persist.is_none() {
            return Vec::new();
        }
        touched
            .into_iter()
            .map(|k| {
                let entries = self.records.key_entries(&k);
                Change::Key(k, entries)
            })
            .collect()
    }

    /// Writes `changes` now, on the caller's thread (when the writer's
    /// queue is full).
    pub(crate) fn write_now(&self, changes: &[Change]) -> Result<(), DhtError> {
        match &self.persist {
            Some(p) => p.write(changes),
            None => Ok(()),
        }
    }
}

impl RecordStore for KadStore {
    type RecordsIter<'a> = std::iter::Empty<Cow<'a, KadRecord>>;
    type ProvidedIter<'a> = std::iter::Empty<Cow<'a, ProviderRecord>>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, KadRecord>> {
        let now = Expiration::now();
        let value = self.records.get(k.as_ref(), now)?;
        let ttl = Duration::from_millis(
            value
                .expiration()
                .as_millis()
                .saturating_sub(now.as_millis()),
        );
        Some(Cow::Owned(KadRecord {
            key: k.clone(),
            value: pb::StoredValue::from(value).encode_to_vec(),
            publisher: None,
            expires: Some(Instant::now() + ttl),
        }))
    }

    fn put(&mut self, _: KadRecord) -> store::Result<()> {
        // Only reached for kad's own local `put_record`, which mesh never
        // calls: writes go through the record protocol.
        Err(store::Error::MaxRecords)
    }

    fn remove(&mut self, _: &RecordKey) {}

    /// Empty: records are republished by their publishers, never by kad
    /// (its replication and publication intervals are disabled).
    fn records(&self) -> Self::RecordsIter<'_> {
        std::iter::empty()
    }

    /// Refused: mesh keeps no provider records (the event loop drops
    /// inbound `ADD_PROVIDER` before it gets here).
    fn add_provider(&mut self, _: ProviderRecord) -> store::Result<()> {
        Err(store::Error::MaxProvidedKeys)
    }

    fn providers(&self, _: &RecordKey) -> Vec<ProviderRecord> {
        Vec::new()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        std::iter::empty()
    }

    fn remove_provider(&mut self, _: &RecordKey, _: &PeerId) {}
}
