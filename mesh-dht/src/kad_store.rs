//! The record store kad owns: mesh's bounded [`Store`] with dictionaries and
//! merge rules, and optional persistence. Provider records are refused: mesh
//! never uses them, and an unbounded side store anyone can fill is a target.
//!
//! kad reads it directly for inbound `GET_VALUE` (the value is the key's
//! [`pb::StoredValue`]); writes never go through kad's `put`, because record
//! filtering (`StoreInserts::FilterBoth`) hands every inbound record to the
//! event loop, which validates it and calls [`KadStore::put`].

use std::borrow::Cow;
use std::time::{Duration, Instant};

use libp2p::kad::store::{self, RecordStore};
use libp2p::kad::{ProviderRecord, Record as KadRecord, RecordKey};
use libp2p::PeerId;
use mesh_core::{Expiration, Record, Refusal, Store, StoreLimits, StoredValue};
use mesh_proto::dht as pb;
use prost::Message;

use crate::persist::Persist;
use crate::DhtError;

pub(crate) struct KadStore {
    records: Store,
    persist: Option<Persist>,
}

impl KadStore {
    pub(crate) fn new(limits: StoreLimits, persist: Option<Persist>) -> Result<Self, DhtError> {
        let mut records = Store::new(limits);
        if let Some(p) = &persist {
            let now = Expiration::now();
            let (mut loaded, mut dropped) = (0usize, 0usize);
            for (record, publisher) in p.load()? {
                match records.put(&record, publisher, now) {
                    Ok(_) => loaded += 1,
                    Err(_) => dropped += 1,
                }
            }
            tracing::info!(
                loaded,
                dropped_expired = dropped,
                "restored persisted records"
            );
        }
        Ok(Self { records, persist })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.records
    }

    /// Applies a validated record; persists what changed.
    pub(crate) fn put(
        &mut self,
        record: &Record,
        publisher: PeerId,
        now: Expiration,
    ) -> Result<(), Refusal> {
        let mut touched = self.records.put(record, publisher, now)?;
        touched.push(record.key.clone());
        self.persist(touched);
        Ok(())
    }

    pub(crate) fn get(&self, key: &[u8], now: Expiration) -> Option<StoredValue> {
        self.records.get(key, now)
    }

    pub(crate) fn remove_expired(&mut self, now: Expiration) {
        let touched = self.records.remove_expired(now);
        self.persist(touched);
    }

    fn persist(&self, keys: Vec<Vec<u8>>) {
        let Some(p) = &self.persist else { return };
        let rows: Vec<_> = keys
            .into_iter()
            .map(|k| {
                let entries = self.records.key_entries(&k);
                (k, entries)
            })
            .collect();
        if let Err(e) = p.write(&rows) {
            tracing::error!("{e}");
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
