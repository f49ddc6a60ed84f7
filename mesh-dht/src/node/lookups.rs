//! Lookups over the record protocol: start, advance, the local step, finish.
use super::*;

impl EventLoop {
    /// The `n` peers of the routing table closest to `key`, nearest first.
    pub(super) fn closest_local(
        &mut self,
        key: &[u8],
        n: usize,
        exclude: Option<&PeerId>,
    ) -> Vec<PeerId> {
        let routing = self.routing_snapshot();
        let target = KBucketKey::new(RecordKey::new(&key));
        let mut by_distance: Vec<_> = routing
            .iter()
            .filter(|k| Some(k.preimage()) != exclude)
            .map(|k| (target.distance(k), *k.preimage()))
            .collect();
        if by_distance.len() > n {
            by_distance.select_nth_unstable_by(n, |a, b| a.0.cmp(&b.0));
            by_distance.truncate(n);
        }
        by_distance.sort_unstable_by_key(|a| a.0);
        by_distance.into_iter().map(|(_, p)| p).collect()
    }

    // ---- lookups ----------------------------------------------------------

    pub(super) fn start_lookup(&mut self, key: Vec<u8>, op: Op, reply: Reply) {
        let mut peers = PeerSet::new(&key, self.replicas);
        let local = self.closest_local(&key, self.replicas * 2, None);
        for p in local {
            peers.add(p, Vec::new());
        }
        if !self.client_mode {
            peers.add(self.local, Vec::new());
        }
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.lookups.insert(
            id,
            Lookup {
                key,
                peers,
                op,
                report: StoreReport::default(),
                found: None,
                reply,
                pages: HashMap::new(),
            },
        );
        self.advance(id);
    }

    pub(super) fn advance(&mut self, id: u64) {
        loop {
            let Some(l) = self.lookups.get_mut(&id) else {
                return;
            };
            if matches!(l.op, Op::Find { latest: false }) && l.found.is_some() && l.pages.is_empty()
            {
                return self.finish(id);
            }
            let next = l.peers.next();
            if next.is_empty() {
                if !l.peers.in_flight() {
                    self.finish(id);
                }
                return;
            }
            let mut local = false;
            for p in next {
                if p == self.local {
                    local = true;
                    continue;
                }
                let req = l.request();
                let addrs = l.peers.addrs(&p);
                let rr = &mut self.swarm.behaviour_mut().records;
                let rid = if addrs.is_empty() {
                    rr.send_request(&p, req)
                } else {
                    rr.send_request_with_addresses(&p, req, addrs)
                };
                self.requests.insert(rid, (id, p));
            }
            if !local {
                return;
            }
            self.local_step(id);
        }
    }

    pub(super) fn local_step(&mut self, id: u64) {
        let Some(mut l) = self.lookups.remove(&id) else {
            return;
        };
        match &l.op {
            Op::Store(record) => match self.accept(record, self.local) {
                Ok(()) => l.report.accepted += 1,
                Err(e) => l.report.refused.push(RemoteRefusal {
                    peer: self.local,
                    kind: refusal_code(&e).0.into(),
                    reason: e.to_string(),
                }),
            },
            Op::Find { .. } => {
                let v = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .get(&l.key, Expiration::now());
                if let Some(v) = v {
                    merge_valid(&self.validator, &mut l.found, &l.key, v);
                }
            }
        }
        l.peers.set(&self.local, PeerState::Succeeded);
        self.lookups.insert(id, l);
    }

    pub(super) fn finish(&mut self, id: u64) {
        let Some(l) = self.lookups.remove(&id) else {
            return;
        };
        // Answers still in flight for this lookup are dropped when they arrive.
        self.requests.retain(|_, (lid, _)| *lid != id);
        match l.reply {
            Reply::Store(tx) => {
                let _ = tx.send(l.report);
            }
            Reply::Find(tx) => {
                let value = l.found.map(|v| strip(&self.validator, &l.key, v));
                let _ = tx.send(value);
            }
        }
    }
}

/// Merges the entries of `value` that pass `Get` validation into `acc`.
pub(super) fn merge_valid(
    validator: &CompositeValidator,
    acc: &mut Option<StoredValue>,
    key: &[u8],
    value: StoredValue,
) {
    let now = Expiration::now();
    for r in value.into_records(key.to_vec()) {
        if r.expiration <= now {
            continue;
        }
        match validator.validate(&r, Kind::Get) {
            Ok(()) => {
                let _ = StoredValue::apply(acc, &r, now);
            }
            Err(e) => tracing::debug!("dropping an invalid entry read from the DHT: {e}"),
        }
    }
}

/// Removes what validators added (signatures) from every entry.
pub(super) fn strip(validator: &CompositeValidator, key: &[u8], value: StoredValue) -> StoredValue {
    let mut out = None;
    for mut r in value.into_records(key.to_vec()) {
        r.value = validator.strip(&r);
        let _ = StoredValue::apply(&mut out, &r, Expiration::from_millis(0));
    }
    out.expect("a found value has at least one entry")
}
