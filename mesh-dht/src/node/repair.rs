//! Re-replication (anti-entropy): records outlive the nodes that hold them.
//!
//! Once per refresh period every serving node walks (a bounded slice of) the
//! keys it holds. For each key it works out the `replicas` peers closest to
//! it among its live routing table and itself, and offers each of them a
//! digest of what it holds: (subkey, expiration) pairs, no values. The peer
//! answers which entries it lacks or holds older (the merge rules decide),
//! and only those are sent, with the publisher each was stored for. Nothing
//! newer is ever overwritten: the receiver runs the usual checks and
//! validators on every record.
//!
//! - A node that newly became one of the closest to a key is offered its
//!   records at the next pass (Kademlia's hand-off to joining nodes).
//! - A peer that answered "nothing wanted" for a key is not asked again
//!   while our entries of that key stay the same and its connection stays
//!   up, so a quiet network costs no repair traffic.
//! - A digest that cannot be delivered (the peer died: its dial fails, and
//!   the dial error drops it from the routing table) is offered at once to
//!   the key's next closest peers, so a dead replica is replaced within the
//!   pass that found it dead, not one period later.
//!
//! Work is bounded: at most [`DhtConfig::repair_keys_per_period`] keys a
//! pass (in key order, resuming where the last pass stopped), at most
//! [`MAX_SYNC_ENTRIES`] entries and half a message per digest request.
use std::hash::{DefaultHasher, Hash, Hasher};

use super::*;

/// Most entries one digest request names.
pub(crate) const MAX_SYNC_ENTRIES: usize = 4096;
/// Most peer/key confirmations remembered (cleared when exceeded).
const MAX_CONFIRMED: usize = 500_000;

/// A request of the repair in flight.
pub(super) struct Sent {
    peer: PeerId,
    /// The keys a digest named, with their fingerprints.
    keys: Vec<(Vec<u8>, u64)>,
    /// The digest's entries, flattened: (index into `keys`, subkey).
    entries: Vec<(usize, Option<Vec<u8>>)>,
    /// Offer the keys to other replicas if this request fails.
    retry: bool,
}

/// The repair's state in the event loop.
#[derive(Default)]
pub(super) struct Repair {
    /// The last key the previous pass visited.
    cursor: Option<Vec<u8>>,
    /// Per peer: keys it holds at least what we held, and the fingerprint of
    /// what we held then.
    confirmed: HashMap<PeerId, HashMap<Vec<u8>, u64>>,
    confirmed_len: usize,
    pub(super) syncs: HashMap<OutboundRequestId, Sent>,
    pub(super) stores: HashSet<OutboundRequestId>,
}

impl Repair {
    fn confirm(&mut self, peer: PeerId, key: Vec<u8>, fingerprint: u64) {
        if self.confirmed_len >= MAX_CONFIRMED {
            self.confirmed.clear();
            self.confirmed_len = 0;
        }
        if self
            .confirmed
            .entry(peer)
            .or_default()
            .insert(key, fingerprint)
            .is_none()
        {
            self.confirmed_len += 1;
        }
    }

    fn is_confirmed(&self, peer: &PeerId, key: &[u8], fingerprint: u64) -> bool {
        self.confirmed
            .get(peer)
            .and_then(|keys| keys.get(key))
            .is_some_and(|f| *f == fingerprint)
    }

    /// `peer` disconnected or died: what it held may be gone.
    pub(super) fn forget(&mut self, peer: &PeerId) {
        if let Some(keys) = self.confirmed.remove(peer) {
            self.confirmed_len -= keys.len();
        }
    }
}

/// Digests to send, per peer.
type Batches = HashMap<PeerId, Vec<(Vec<u8>, u64, Vec<(Option<Vec<u8>>, Expiration)>)>>;

fn fingerprint(digest: &[(Option<Vec<u8>>, Expiration)]) -> u64 {
    let mut h = DefaultHasher::new();
    for (sk, exp) in digest {
        sk.hash(&mut h);
        exp.as_millis().hash(&mut h);
    }
    h.finish()
}

impl EventLoop {
    /// One pass of the repair (at most once per refresh period).
    pub(super) fn repair_pass(&mut self) {
        if self.client_mode {
            return;
        }
        let now = Expiration::now();
        let keys: Vec<Vec<u8>> = {
            let store = self.swarm.behaviour_mut().kad.store_mut().store();
            let mut all: Vec<&[u8]> = store.keys().collect();
            all.sort_unstable();
            let start = match &self.repair.cursor {
                Some(c) => all.partition_point(|k| *k <= c.as_slice()),
                None => 0,
            };
            let n = all.len().min(self.repair_keys_per_period);
            all.iter()
                .cycle()
                .skip(start)
                .take(n)
                .map(|k| k.to_vec())
                .collect()
        };
        let Some(last) = keys.last() else {
            return;
        };
        self.repair.cursor = Some(last.clone());
        let mut batches = Batches::new();
        for key in keys {
            self.plan_key(key, now, &mut batches, None);
        }
        self.send_digests(batches, true);
    }

    /// The peers that should hold `key` besides this node: the `replicas`
    /// closest among the routing table and this node, this node left out.
    fn replica_peers(&mut self, key: &[u8]) -> Vec<PeerId> {
        let mut peers = self.closest_local(key, self.replicas, None);
        let target = KBucketKey::new(RecordKey::new(&key));
        let own = target.distance(&KBucketKey::from(self.local));
        let closer = peers
            .iter()
            .filter(|p| target.distance(&KBucketKey::from(**p)) < own)
            .count();
        if closer < self.replicas {
            peers.truncate(self.replicas - 1);
        }
        peers
    }

    /// Adds `key`'s digest to the batch of every replica that may lack it.
    fn plan_key(
        &mut self,
        key: Vec<u8>,
        now: Expiration,
        batches: &mut Batches,
        skip: Option<PeerId>,
    ) {
        let digest = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .store()
            .digest(&key, now);
        if digest.is_empty() {
            return;
        }
        let fp = fingerprint(&digest);
        for peer in self.replica_peers(&key) {
            if Some(peer) == skip || self.repair.is_confirmed(&peer, &key, fp) {
                continue;
            }
            batches
                .entry(peer)
                .or_default()
                .push((key.clone(), fp, digest.clone()));
        }
    }

    fn send_digests(&mut self, batches: Batches, retry: bool) {
        let max_bytes = self.max_message_bytes / 2;
        for (peer, keys) in batches {
            let mut sent = Sent {
                peer,
                keys: Vec::new(),
                entries: Vec::new(),
                retry,
            };
            let mut request = pb::SyncRequest::default();
            let mut bytes = 0usize;
            for (key, fp, digest) in keys {
                let size = key.len()
                    + digest
                        .iter()
                        .map(|(sk, _)| sk.as_ref().map_or(0, Vec::len) + 16)
                        .sum::<usize>()
                    + 8;
                if !sent.keys.is_empty()
                    && (bytes + size > max_bytes
                        || sent.entries.len() + digest.len() > MAX_SYNC_ENTRIES)
                {
                    self.send_digest(std::mem::take(&mut request), sent);
                    sent = Sent {
                        peer,
                        keys: Vec::new(),
                        entries: Vec::new(),
                        retry,
                    };
                    bytes = 0;
                }
                bytes += size;
                let index = sent.keys.len();
                request.keys.push(pb::KeyDigest {
                    key: key.clone(),
                    entries: digest
                        .iter()
                        .map(|(sk, exp)| pb::EntryDigest {
                            subkey: sk.clone(),
                            expiration_ms: exp.as_millis(),
                        })
                        .collect(),
                });
                sent.entries
                    .extend(digest.into_iter().map(|(sk, _)| (index, sk)));
                sent.keys.push((key, fp));
            }
            if !sent.keys.is_empty() {
                self.send_digest(request, sent);
            }
        }
    }

    fn send_digest(&mut self, request: pb::SyncRequest, sent: Sent) {
        let request = pb::Request {
            kind: Some(pb::request::Kind::Sync(request)),
        };
        self.metrics
            .repair_bytes
            .get_or_create(&vec![("kind", "digest".to_string())])
            .inc_by(prost::Message::encoded_len(&request) as u64);
        let id = self
            .swarm
            .behaviour_mut()
            .records
            .send_request(&sent.peer, request);
        self.repair.syncs.insert(id, sent);
    }

    /// A peer answered a digest: confirm the keys it wants nothing of, send
    /// the entries it wants.
    pub(super) fn on_sync_answer(&mut self, sent: Sent, wanted: Vec<u32>) {
        let now = Expiration::now();
        let mut wanted_keys = vec![false; sent.keys.len()];
        let mut records = Vec::new();
        let mut publishers = Vec::new();
        for i in wanted {
            let Some((k, subkey)) = sent.entries.get(i as usize) else {
                continue;
            };
            wanted_keys[*k] = true;
            let key = &sent.keys[*k].0;
            let store = self.swarm.behaviour_mut().kad.store_mut().store();
            if let Some((record, publisher)) = store.entry(key, subkey.as_deref(), now) {
                records.push(pb::Record::from(record));
                publishers.push(publisher.to_bytes());
            }
        }
        for ((key, fp), wanted) in sent.keys.into_iter().zip(wanted_keys) {
            if !wanted {
                self.repair.confirm(sent.peer, key, fp);
            }
        }
        // Chunks a store request accepts: at most MAX_RECORDS_PER_REQUEST
        // records and under the message size.
        let max_bytes = self.max_message_bytes * 3 / 4;
        let mut chunk = pb::StoreRequest::default();
        let mut bytes = 0usize;
        for (record, publisher) in records.into_iter().zip(publishers) {
            let size = prost::Message::encoded_len(&record) + publisher.len() + 8;
            if !chunk.records.is_empty()
                && (bytes + size > max_bytes || chunk.records.len() >= MAX_RECORDS_PER_REQUEST)
            {
                self.send_repair_store(sent.peer, std::mem::take(&mut chunk));
                bytes = 0;
            }
            bytes += size;
            chunk.records.push(record);
            chunk.publishers.push(publisher);
        }
        if !chunk.records.is_empty() {
            self.send_repair_store(sent.peer, chunk);
        }
    }

    fn send_repair_store(&mut self, peer: PeerId, store: pb::StoreRequest) {
        let n = store.records.len() as u64;
        let request = pb::Request {
            kind: Some(pb::request::Kind::Store(store)),
        };
        self.metrics
            .repair_bytes
            .get_or_create(&vec![("kind", "records".to_string())])
            .inc_by(prost::Message::encoded_len(&request) as u64);
        self.metrics.repair_entries_sent.inc_by(n);
        let id = self
            .swarm
            .behaviour_mut()
            .records
            .send_request(&peer, request);
        self.repair.stores.insert(id);
    }

    /// A digest could not be delivered: offer its keys to the other
    /// replicas (the dead peer has left the routing table by now when its
    /// dial failed), once.
    pub(super) fn on_sync_failed(&mut self, sent: Sent) {
        if !sent.retry {
            return;
        }
        let now = Expiration::now();
        let mut batches = Batches::new();
        for (key, _) in sent.keys {
            self.plan_key(key, now, &mut batches, Some(sent.peer));
        }
        self.send_digests(batches, false);
    }

    /// Serves a digest: the indices of the entries this node would take.
    pub(super) fn sync_response(
        &mut self,
        peer: PeerId,
        sync: pb::SyncRequest,
    ) -> pb::response::Kind {
        let total: usize = sync.keys.iter().map(|k| k.entries.len()).sum();
        if total > MAX_SYNC_ENTRIES {
            self.misbehaved(peer);
            return Self::error_response(
                pb::error_response::Code::Malformed,
                format!("a digest names at most {MAX_SYNC_ENTRIES} entries"),
            );
        }
        if self.admission.decide(peer) != Decision::Admit {
            NodeMetrics::count(&self.metrics.refused_requests, "reason", "not_staked");
            return Self::error_response(
                pb::error_response::Code::NotServing,
                "repair is taken from staked peers only",
            );
        }
        let now = Expiration::now();
        let store = self.swarm.behaviour_mut().kad.store_mut().store();
        let mut wanted = Vec::new();
        let mut index = 0u32;
        for k in &sync.keys {
            for e in &k.entries {
                let exp = Expiration::from_millis(e.expiration_ms);
                if store.wants(&k.key, e.subkey.as_deref(), exp, now) {
                    wanted.push(index);
                }
                index += 1;
            }
        }
        pb::response::Kind::Sync(pb::SyncResponse { wanted })
    }
}
