//! The record protocol: serving stores and finds, and their answers.
use super::*;

/// Most records one store request may carry.
pub(super) const MAX_RECORDS_PER_REQUEST: usize = 64;

pub(super) fn refusal_code(r: &Refusal) -> (pb::Refusal, &'static str) {
    match r {
        Refusal::Merge(MergeRefusal::Expired { .. }) => (pb::Refusal::Expired, "expired"),
        Refusal::Merge(MergeRefusal::NotNewer { .. }) => (pb::Refusal::NotNewer, "not_newer"),
        Refusal::Merge(MergeRefusal::Protected) => (pb::Refusal::Protected, "protected"),
        Refusal::TooLarge { .. } | Refusal::KeyTooLarge { .. } => {
            (pb::Refusal::TooLarge, "too_large")
        }
        Refusal::TooFarAhead { .. } => (pb::Refusal::TooFarAhead, "too_far_ahead"),
        Refusal::TooManySubkeys { .. } => (pb::Refusal::TooManySubkeys, "too_many_subkeys"),
        Refusal::Invalid(_) => (pb::Refusal::Invalid, "invalid"),
        Refusal::QuotaExceeded { .. } => (pb::Refusal::QuotaExceeded, "quota_exceeded"),
        Refusal::BytesQuotaExceeded { .. } => (pb::Refusal::QuotaExceeded, "bytes_quota_exceeded"),
        Refusal::StoreFull { .. } => (pb::Refusal::StoreFull, "store_full"),
        Refusal::NotSaved(_) => (pb::Refusal::NotSaved, "not_saved"),
        _ => (pb::Refusal::Unspecified, "other"),
    }
}

impl EventLoop {
    // ---- the record protocol ---------------------------------------------

    pub(super) fn on_records_event(
        &mut self,
        ev: request_response::Event<pb::Request, pb::Response>,
    ) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_request(peer, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_response(request_id, peer, response),
            Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                // Dial failures are handled where the dial fails.
                if !matches!(error, request_response::OutboundFailure::DialFailure) {
                    self.no_answer(peer, &error.to_string());
                }
                if let Some(sent) = self.repair.syncs.remove(&request_id) {
                    tracing::debug!(%peer, "repair digest not delivered: {error}");
                    return self.on_sync_failed(sent);
                }
                if self.repair.stores.remove(&request_id) {
                    tracing::debug!(%peer, "repair records not delivered: {error}");
                    return;
                }
                if let Some((id, _)) = self.requests.remove(&request_id) {
                    if let Some(l) = self.lookups.get_mut(&id) {
                        l.pages.remove(&peer);
                        l.peers.set(&peer, PeerState::Failed);
                        l.report.unreachable.push((peer, error.to_string()));
                    }
                    self.advance(id);
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                NodeMetrics::count(&self.metrics.refused_requests, "reason", "inbound_failure");
                tracing::debug!(%peer, "inbound record request failed: {error}");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn rate_limited(&mut self, peer: PeerId) -> bool {
        let Some(limit) = self.rate_limit else {
            return false;
        };
        let now = Instant::now().into_std();
        !self
            .buckets
            .entry(peer)
            .or_insert_with(|| TokenBucket::full(limit, now))
            .try_take(limit, now)
    }

    pub(super) fn respond(
        &mut self,
        channel: ResponseChannel<pb::Response>,
        kind: pb::response::Kind,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .records
            .send_response(channel, pb::Response { kind: Some(kind) });
    }

    pub(super) fn error_response(
        code: pb::error_response::Code,
        message: impl Into<String>,
    ) -> pb::response::Kind {
        pb::response::Kind::Error(pb::ErrorResponse {
            code: code as i32,
            message: message.into(),
        })
    }

    pub(super) fn on_request(
        &mut self,
        peer: PeerId,
        request: pb::Request,
        channel: ResponseChannel<pb::Response>,
    ) {
        if let Some((left, strikes)) = self.bans.blocked_for(&peer) {
            NodeMetrics::count(&self.metrics.refused_requests, "reason", "blocked");
            let kind = Self::error_response(
                pb::error_response::Code::RateLimited,
                format!(
                    "blocked for {} s more after {strikes} violation(s): too much refused input",
                    left.as_secs().max(1)
                ),
            );
            return self.respond(channel, kind);
        }
        if self.rate_limited(peer) {
            NodeMetrics::count(&self.metrics.refused_requests, "reason", "rate_limited");
            let kind = Self::error_response(
                pb::error_response::Code::RateLimited,
                "rate limit exceeded; slow down",
            );
            return self.respond(channel, kind);
        }
        let kind = match request.kind {
            Some(pb::request::Kind::Store(store)) => {
                NodeMetrics::count(&self.metrics.inbound_requests, "kind", "store");
                return self.on_store(peer, store, channel);
            }
            Some(pb::request::Kind::Find(f)) => {
                NodeMetrics::count(&self.metrics.inbound_requests, "kind", "find");
                let value = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .get(&f.key, Expiration::now());
                let budget = find_page_budget(self.max_message_bytes);
                let (value, more) = match value {
                    Some(v) => find_page(v, f.after.as_deref(), budget),
                    None => (None, false),
                };
                pb::response::Kind::Find(pb::FindResponse {
                    value,
                    closer: self.closer_peers(&f.key, &peer),
                    more,
                })
            }
            Some(pb::request::Kind::Sync(sync)) => {
                NodeMetrics::count(&self.metrics.inbound_requests, "kind", "sync");
                self.sync_response(peer, sync)
            }
            None => {
                NodeMetrics::count(&self.metrics.refused_requests, "reason", "malformed");
                self.misbehaved(peer);
                Self::error_response(pb::error_response::Code::Malformed, "empty request")
            }
        };
        self.respond(channel, kind);
    }

    /// A store from an admitted peer: checked for shape here, then through
    /// the ingest pipeline (`ingest.rs`), which answers.
    pub(super) fn store_request(
        &mut self,
        peer: PeerId,
        s: pb::StoreRequest,
        channel: ResponseChannel<pb::Response>,
    ) {
        if s.records.is_empty() || s.records.len() > MAX_RECORDS_PER_REQUEST {
            self.misbehaved(peer);
            let kind = Self::error_response(
                pb::error_response::Code::Malformed,
                format!("a store carries 1 to {MAX_RECORDS_PER_REQUEST} records"),
            );
            return self.respond(channel, kind);
        }
        // A replica repairing names the publisher of each record; it is
        // believed for publishers the admission policy admits (quota stays
        // theirs), otherwise the record counts as the sender's own.
        if !s.publishers.is_empty() && s.publishers.len() != s.records.len() {
            self.misbehaved(peer);
            let kind = Self::error_response(
                pb::error_response::Code::Malformed,
                "a store names a publisher for every record or for none",
            );
            return self.respond(channel, kind);
        }
        let publishers: Vec<PeerId> = (0..s.records.len())
            .map(|i| {
                s.publishers
                    .get(i)
                    .and_then(|p| PeerId::from_bytes(p).ok())
                    .filter(|p| *p == peer || self.admission.decide(*p) == Decision::Admit)
                    .unwrap_or(peer)
            })
            .collect();
        let records = s
            .records
            .into_iter()
            .map(Record::from)
            .zip(publishers)
            .collect();
        self.ingest(peer, records, Some(channel));
    }

    // ---- admission ------------------------------------------------------------

    /// `peer` sent input that was refused as invalid (not merely stale):
    /// past the ban policy's limit it is blocked.
    pub(super) fn misbehaved(&mut self, peer: PeerId) {
        if self.bans.refused(peer).is_some() {
            self.metrics.peers_blocked.inc();
        }
    }

    /// A store request: admitted peers store, others are refused with the
    /// reason, unknown ones wait for the oracle.
    pub(super) fn on_store(
        &mut self,
        peer: PeerId,
        store: pb::StoreRequest,
        channel: ResponseChannel<pb::Response>,
    ) {
        let kind = match self.admission.decide(peer) {
            Decision::Admit => return self.store_request(peer, store, channel),
            Decision::Refuse => self.not_staked(peer, &store),
            Decision::Unknown => {
                let parked = Parked::Store {
                    peer,
                    store,
                    channel,
                };
                match self.admission.park(peer, parked) {
                    Ok(()) => return,
                    Err(Parked::Store { store, channel, .. }) => {
                        NodeMetrics::count(&self.metrics.refused_requests, "reason", "busy");
                        let kind = Self::error_response(
                            pb::error_response::Code::RateLimited,
                            "too many stake checks pending; try again",
                        );
                        drop(store);
                        return self.respond(channel, kind);
                    }
                    Err(_) => unreachable!("parked a store"),
                }
            }
        };
        self.respond(channel, kind);
    }

    pub(super) fn not_staked(
        &mut self,
        peer: PeerId,
        store: &pb::StoreRequest,
    ) -> pb::response::Kind {
        let gate = self.admission.gate().expect("refusals need a gate");
        let reason = format!(
            "publisher {peer} is not staked in subnet {} with class {} or above",
            gate.subnet_id, gate.min_class
        );
        NodeMetrics::count(&self.metrics.refused_requests, "reason", "not_staked");
        let results = store
            .records
            .iter()
            .map(|_| pb::StoreResult {
                accepted: false,
                refusal: pb::Refusal::NotStaked as i32,
                reason: reason.clone(),
            })
            .collect();
        pb::response::Kind::Store(pb::StoreResponse {
            results,
            closer: Vec::new(),
        })
    }

    /// Validates and stores one record published by `publisher`.
    ///
    /// The store's cheap checks (size, merge rules, quota) run before the
    /// validators so that stale or oversized records never cost a signature
    /// verification; `apply` repeats them, which is cheap. What changed is
    /// written by the writer thread, in order with inbound stores.
    pub(super) fn accept(&mut self, record: &Record, publisher: PeerId) -> Result<(), Refusal> {
        let now = Expiration::now();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let result = store
            .store()
            .check(record, &publisher, now)
            .and_then(|()| {
                self.validator
                    .validate(record, Kind::Put)
                    .map_err(Refusal::from)
            })
            .and_then(|()| store.apply(record, publisher, now));
        let label = match &result {
            Ok(_) => "accepted",
            Err(e) => refusal_code(e).1,
        };
        NodeMetrics::count(&self.metrics.store_results, "result", label);
        let changes = result?;
        self.persist_later(changes);
        Ok(())
    }

    pub(super) fn closer_peers(&mut self, key: &[u8], exclude: &PeerId) -> Vec<pb::Peer> {
        let peers = self.closest_local(key, self.replicas, Some(exclude));
        peers
            .into_iter()
            .map(|p| pb::Peer {
                peer_id: p.to_bytes(),
                addrs: self
                    .addr_book
                    .get(&p)
                    .map(|a| a.iter().take(8).map(|a| a.to_vec()).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    pub(super) fn on_response(
        &mut self,
        request_id: OutboundRequestId,
        peer: PeerId,
        response: pb::Response,
    ) {
        self.answered(peer);
        if let Some(sent) = self.repair.syncs.remove(&request_id) {
            match response.kind {
                Some(pb::response::Kind::Sync(s)) => self.on_sync_answer(sent, s.wanted),
                other => tracing::debug!(%peer, ?other, "repair digest not taken"),
            }
            return;
        }
        if self.repair.stores.remove(&request_id) {
            return;
        }
        let Some((id, _)) = self.requests.remove(&request_id) else {
            return;
        };
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        let closer = match response.kind {
            Some(pb::response::Kind::Store(s)) if matches!(l.op, Op::Store(_)) => {
                match s.results.first() {
                    Some(r) if r.accepted => l.report.accepted += 1,
                    Some(r) => l.report.refused.push(RemoteRefusal {
                        peer,
                        kind: pb::Refusal::try_from(r.refusal).unwrap_or_default().into(),
                        reason: r.reason.clone(),
                    }),
                    None => l
                        .report
                        .unreachable
                        .push((peer, "empty store response".into())),
                }
                l.peers.set(&peer, PeerState::Succeeded);
                s.closer
            }
            Some(pb::response::Kind::Find(f)) if matches!(l.op, Op::Find { .. }) => {
                let previous = l.pages.remove(&peer);
                let value = f.value.and_then(|v| StoredValue::try_from(v).ok());
                // The last subkey of this page, if it is a dictionary page
                // that moves forward (a peer that answers the same page
                // again, or pages without end, is not followed).
                let last = match &value {
                    Some(StoredValue::Dictionary(d)) => d.keys().next_back().cloned(),
                    _ => None,
                };
                let first_ok = match (&value, &previous) {
                    (Some(StoredValue::Dictionary(d)), Some((after, _))) => {
                        d.keys().next().is_some_and(|k| k > after)
                    }
                    (Some(StoredValue::Regular(_)), Some(_)) => false,
                    _ => true,
                };
                if first_ok {
                    if let Some(v) = value {
                        merge_valid(&self.validator, &mut l.found, &l.key, v);
                    }
                }
                let pages = previous.map_or(1, |(_, n)| n + 1);
                match last {
                    Some(after) if f.more && first_ok && pages < MAX_FIND_PAGES => {
                        // Ask the same peer for the next page.
                        let req = pb::Request {
                            kind: Some(pb::request::Kind::Find(pb::FindRequest {
                                key: l.key.clone(),
                                after: Some(after.clone()),
                            })),
                        };
                        l.pages.insert(peer, (after, pages));
                        let rid = self.swarm.behaviour_mut().records.send_request(&peer, req);
                        self.requests.insert(rid, (id, peer));
                    }
                    _ => l.peers.set(&peer, PeerState::Succeeded),
                }
                if pages > 1 {
                    // Closer peers came with the first page.
                    Vec::new()
                } else {
                    f.closer
                }
            }
            Some(pb::response::Kind::Error(e)) => {
                l.pages.remove(&peer);
                l.peers.set(&peer, PeerState::Failed);
                l.report
                    .unreachable
                    .push((peer, format!("refused the request: {}", e.message)));
                Vec::new()
            }
            _ => {
                l.pages.remove(&peer);
                l.peers.set(&peer, PeerState::Failed);
                l.report
                    .unreachable
                    .push((peer, "answered with the wrong message".into()));
                Vec::new()
            }
        };
        for p in closer.into_iter().take(2 * self.replicas) {
            let Ok(pid) = PeerId::from_bytes(&p.peer_id) else {
                continue;
            };
            if pid == self.local && self.client_mode {
                continue;
            }
            // Lookup candidates pass the stake gate like routing-table
            // inserts: an unstaked peer a careless or hostile node names is
            // never asked or stored to. An unknown one is asked about now
            // (decide starts the check) and joins later lookups once admitted.
            if pid != self.local && self.admission.decide(pid) != Decision::Admit {
                continue;
            }
            // A dial to it failed a moment ago: skip it.
            if self
                .unreachable
                .get(&pid)
                .is_some_and(|at| at.elapsed() < DEAD_PEER_MEMORY)
            {
                continue;
            }
            // Only addresses worth dialing, judged by how we see the peer
            // that named them (no private ranges from a public peer).
            let addrs = crate::reach::dialable(
                &pid,
                p.addrs
                    .into_iter()
                    .filter_map(|a| Multiaddr::try_from(a).ok()),
                self.reach.seen_at(&peer),
                self.reach.config.allow_private_addrs,
                self.reach.config.max_addrs_per_peer,
            );
            l.peers.add(pid, addrs);
        }
        self.advance(id);
    }
}

/// Most pages read from one peer for one Find (a peer that answers `more`
/// without end is not followed further).
pub(super) const MAX_FIND_PAGES: u32 = 1024;

/// Bytes of entries in one Find answer: the message size less room for the
/// closer peers and framing.
pub(super) fn find_page_budget(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_sub(16 * 1024)
        .max(max_message_bytes / 2)
}

/// One page of what a key holds, for a Find: a regular value whole; a
/// dictionary's subkeys after `after` (all of them without it), in byte
/// order, as many as fit in `budget` bytes but at least one. Returns the
/// page and whether subkeys follow it.
pub(super) fn find_page(
    value: StoredValue,
    after: Option<&[u8]>,
    budget: usize,
) -> (Option<pb::StoredValue>, bool) {
    use prost::Message as _;
    let dict = match value {
        StoredValue::Regular(_) if after.is_some() => return (None, false),
        StoredValue::Regular(_) => return (Some(value.into()), false),
        StoredValue::Dictionary(d) => d,
    };
    let mut items = Vec::new();
    let mut bytes = 0;
    let mut more = false;
    let start = match after {
        Some(a) => std::ops::Bound::Excluded(a.to_vec()),
        None => std::ops::Bound::Unbounded,
    };
    for (subkey, item) in dict.range((start, std::ops::Bound::Unbounded)) {
        let entry = pb::SubkeyItem {
            subkey: subkey.clone(),
            value: item.value.clone(),
            expiration_ms: item.expiration.as_millis(),
        };
        // Field tag, length prefix and the entry.
        let size = entry.encoded_len() + 8;
        if !items.is_empty() && bytes + size > budget {
            more = true;
            break;
        }
        bytes += size;
        items.push(entry);
    }
    if items.is_empty() {
        return (None, false);
    }
    let page = pb::StoredValue {
        kind: Some(pb::stored_value::Kind::Dictionary(pb::Dictionary { items })),
    };
    (Some(page), more)
}
