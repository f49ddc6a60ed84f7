//! Inbound records off the event loop. A store (the record protocol's, a
//! replica's repair, kad's `PUT_VALUE`) takes three steps:
//!
//! 1. on the loop: admission, rate limit, the request's shape and the
//!    store's cheap checks (size, expiry, merge order, quota); what passes
//!    is queued for validation, or the store is refused as busy when the
//!    queue is full (backpressure: the sender is told to slow down);
//! 2. off the loop: the validators (signatures) on a blocking worker, one
//!    job at a time per node;
//! 3. on the loop again: the merge into the in-memory store; with a file,
//!    the rows it changed go to the writer thread, which commits as many
//!    queued jobs as it has in one transaction, and only then is the
//!    storer answered. A failed commit refuses the job's records
//!    ([`Refusal::NotSaved`]) and puts the keys back to what the file
//!    holds.
//!
//! A slot on the writer's queue is taken before a job is validated, so a
//! validated job never waits for room.
use super::*;
use crate::persist::{Change, WriteJob, Written};
use mesh_core::validator::Kind;
use tokio::sync::mpsc::OwnedPermit;

/// Stores waiting for validation, per node.
pub(super) const VALIDATION_QUEUE: usize = 64;
/// Validated stores waiting for the writer, per node.
pub(super) const WRITE_QUEUE: usize = 64;

/// One inbound store on its way through the pipeline.
pub(super) struct Pending {
    /// Who sent it.
    peer: PeerId,
    /// The key of its first record (for the closer peers of the answer).
    key: Vec<u8>,
    /// Where to answer (`None`: kad's `PUT_VALUE`, which gets no answer).
    channel: Option<ResponseChannel<pb::Response>>,
    /// One result per record, filled as the steps decide.
    results: Vec<Option<Result<(), Refusal>>>,
    /// The records still to validate and apply, with their index and publisher.
    todo: Vec<(usize, Record, PeerId)>,
    /// The writer's slot, taken up front (with a file).
    slot: Option<OwnedPermit<WriteJob<Option<Pending>>>>,
}

/// A job back from validation: each record's verdict.
pub(super) struct Validated {
    pending: Pending,
    verdicts: Vec<Result<(), Refusal>>,
}

/// The queues between the loop, the validation worker and the writer.
pub(super) struct Ingest {
    validate: mpsc::Sender<Pending>,
    pub(super) validated: mpsc::Receiver<Validated>,
    write: Option<mpsc::Sender<WriteJob<Option<Pending>>>>,
    pub(super) written: mpsc::Receiver<Written<Option<Pending>>>,
    /// Resolves when the writer thread has let go of the file.
    writer_exited: Option<oneshot::Receiver<()>>,
}

impl Ingest {
    /// Starts the validation worker (a task that stops with `cancel`) and,
    /// with a file, the writer thread.
    pub(super) fn start(
        validator: Arc<CompositeValidator>,
        persist: Option<Arc<Persist>>,
        cancel: CancellationToken,
    ) -> Result<Self, DhtError> {
        let (validate, mut jobs) = mpsc::channel::<Pending>(VALIDATION_QUEUE);
        let (validated_tx, validated) = mpsc::channel(VALIDATION_QUEUE);
        tokio::spawn(async move {
            loop {
                let job = tokio::select! {
                    job = jobs.recv() => job,
                    _ = cancel.cancelled() => None,
                };
                let Some(mut pending) = job else { break };
                let v = validator.clone();
                let todo = std::mem::take(&mut pending.todo);
                let checked = tokio::task::spawn_blocking(move || {
                    let verdicts = todo
                        .iter()
                        .map(|(_, r, _)| v.validate(r, Kind::Put).map_err(Refusal::from))
                        .collect::<Vec<_>>();
                    (todo, verdicts)
                })
                .await;
                let Ok((todo, verdicts)) = checked else { break };
                pending.todo = todo;
                if validated_tx
                    .send(Validated { pending, verdicts })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let (written_tx, written) = mpsc::channel(WRITE_QUEUE);
        let (write, writer_exited) = match persist {
            Some(persist) => {
                let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                let exited = crate::persist::spawn_writer(persist, rx, written_tx)
                    .map_err(|e| DhtError::Persistence(format!("starting the writer: {e}")))?;
                (Some(tx), Some(exited))
            }
            None => (None, None),
        };
        Ok(Self {
            validate,
            validated,
            write,
            written,
            writer_exited,
        })
    }

    /// At shutdown: lets the writer finish what it holds and waits until
    /// it has closed the file. Jobs it hands back are dropped (their
    /// storers get no answer, as with any request cut off by a shutdown).
    pub(super) async fn close(&mut self) {
        // Every sender of the writer's queue goes: ours, and the slots held
        // by jobs waiting here (the validation worker drops its own when it
        // finds its way back closed).
        self.write = None;
        self.validated.close();
        while self.validated.try_recv().is_ok() {}
        self.written.close();
        while self.written.try_recv().is_ok() {}
        if let Some(exited) = self.writer_exited.take() {
            let _ = exited.await;
        }
    }
}

impl EventLoop {
    /// Step 1 for `records` (already shaped and admitted): cheap checks
    /// now, the rest queued for validation. Answers at once when nothing is
    /// left to validate or the queues are full.
    pub(super) fn ingest(
        &mut self,
        peer: PeerId,
        records: Vec<(Record, PeerId)>,
        channel: Option<ResponseChannel<pb::Response>>,
    ) {
        let now = Expiration::now();
        let key = records
            .first()
            .map(|(r, _)| r.key.clone())
            .unwrap_or_default();
        let mut results = Vec::with_capacity(records.len());
        let mut todo = Vec::new();
        let store = self.swarm.behaviour_mut().kad.store_mut().store();
        for (i, (record, publisher)) in records.into_iter().enumerate() {
            match store.check(&record, &publisher, now) {
                Ok(()) => {
                    results.push(None);
                    todo.push((i, record, publisher));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut pending = Pending {
            peer,
            key,
            channel,
            results,
            todo,
            slot: None,
        };
        if pending.todo.is_empty() {
            return self.answer_store(pending);
        }
        // Room in both queues, or the whole store is refused as busy.
        let slot = match &self.ingest.write {
            Some(tx) => match tx.clone().try_reserve_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return self.busy(pending, "the store file's writer"),
            },
            None => None,
        };
        pending.slot = slot;
        match self.ingest.validate.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p)) => {
                self.busy(p, "validation")
            }
        }
    }

    /// Refuses what is left of `pending` because a queue is full.
    fn busy(&mut self, mut pending: Pending, queue: &str) {
        NodeMetrics::count(&self.metrics.refused_requests, "reason", "busy");
        tracing::debug!(peer = %pending.peer, "store refused: {queue} is behind");
        if let Some(channel) = pending.channel.take() {
            let kind = Self::error_response(
                pb::error_response::Code::RateLimited,
                format!("busy: {queue} is behind; try again"),
            );
            self.respond(channel, kind);
        }
    }

    /// Step 3: merge what the validators passed; write it, or answer.
    pub(super) fn on_validated(&mut self, v: Validated) {
        let Validated {
            mut pending,
            verdicts,
        } = v;
        let now = Expiration::now();
        let mut changes: Vec<Change> = Vec::new();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let mut invalid = false;
        for ((i, record, publisher), verdict) in pending.todo.drain(..).zip(verdicts) {
            let result = verdict.and_then(|()| store.apply(&record, publisher, now));
            match result {
                Ok(mut c) => {
                    changes.append(&mut c);
                    pending.results[i] = Some(Ok(()));
                }
                Err(e) => {
                    invalid |= matches!(e, Refusal::Invalid(_));
                    pending.results[i] = Some(Err(e));
                }
            }
        }
        if invalid {
            self.misbehaved(pending.peer);
        }
        match pending.slot.take() {
            Some(slot) if !changes.is_empty() => {
                slot.send(WriteJob {
                    changes,
                    token: Some(pending),
                });
            }
            _ => self.answer_store(pending),
        }
    }

    /// The writer is done with a job: answer, after putting the keys back
    /// to what the file holds if the commit failed.
    pub(super) fn on_written(&mut self, w: Written<Option<Pending>>) {
        let Written { token, result } = w;
        if let Err(failed) = &result {
            self.swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .restore(&failed.keys);
        }
        let Some(mut pending) = token else { return };
        if let Err(failed) = result {
            for r in pending.results.iter_mut() {
                if matches!(r, Some(Ok(()))) {
                    *r = Some(Err(Refusal::NotSaved(failed.error.clone())));
                }
            }
        }
        self.answer_store(pending);
    }

    /// Hands rows the loop changed itself (the node's own stores, expiry)
    /// to the writer, behind the inbound stores already queued; when its
    /// queue is full they are written here and now.
    pub(super) fn persist_later(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let Some(tx) = &self.ingest.write else {
            return;
        };
        let job = WriteJob {
            changes,
            token: None,
        };
        if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            tx.try_send(job)
        {
            let store = self.swarm.behaviour_mut().kad.store_mut();
            if let Err(e) = store.write_now(&job.changes) {
                tracing::error!("writing to the store file: {e}");
                let keys: Vec<Vec<u8>> = job.changes.iter().map(|c| c.key().to_vec()).collect();
                store.restore(&keys);
            }
        }
    }

    /// Counts the results and answers the storer.
    fn answer_store(&mut self, pending: Pending) {
        let results: Vec<pb::StoreResult> = pending
            .results
            .into_iter()
            .map(|r| {
                let r = r.unwrap_or_else(|| Err(Refusal::NotSaved("not processed".into())));
                let label = match &r {
                    Ok(()) => "accepted",
                    Err(e) => refusal_code(e).1,
                };
                NodeMetrics::count(&self.metrics.store_results, "result", label);
                match r {
                    Ok(()) => pb::StoreResult {
                        accepted: true,
                        ..Default::default()
                    },
                    Err(e) => pb::StoreResult {
                        accepted: false,
                        refusal: refusal_code(&e).0 as i32,
                        reason: e.to_string(),
                    },
                }
            })
            .collect();
        if let Some(channel) = pending.channel {
            let kind = pb::response::Kind::Store(pb::StoreResponse {
                results,
                closer: self.closer_peers(&pending.key, &pending.peer),
            });
            self.respond(channel, kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::{addr, config, TEST_SUBNET};
    use crate::{Dht, RefusalKind};
    use mesh_core::{Expiration, KeyType, PeerKey, StoredValue};
    use std::time::Duration;

    fn key() -> PeerKey {
        PeerKey::generate(KeyType::Ed25519).unwrap()
    }

    async fn local(dht: &Dht, k: &str) -> Option<Vec<u8>> {
        match dht.local(k.as_bytes().to_vec()).await.unwrap() {
            Some(StoredValue::Regular(v)) => Some(v.value),
            _ => None,
        }
    }

    /// A replica whose file cannot be written refuses the store with the
    /// reason, keeps nothing it could not save, and takes the record again
    /// once the file works; what it answered "accepted" survives a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_refuses_the_store_and_keeps_nothing_unsaved() {
        let dir = tempfile::tempdir().unwrap();
        let a_key = key();
        let mut c = config(TEST_SUBNET, a_key.clone(), vec![]);
        c.store_path = Some(dir.path().join("a.redb"));
        let a = Dht::start(c).await.unwrap();
        let b = Dht::start(config(TEST_SUBNET, key(), vec![addr(&a).await]))
            .await
            .unwrap();
        let expires = Expiration::in_(Duration::from_secs(600));

        a.ask(|reply| super::Command::FailWrites { on: true, reply })
            .await
            .unwrap();
        let report = b
            .store(b"k".to_vec(), None, b"v1".to_vec(), expires)
            .await
            .unwrap();
        let refusal = report
            .refused
            .iter()
            .find(|r| r.peer == a.peer_id())
            .unwrap_or_else(|| panic!("a refuses: {report:?}"));
        assert_eq!(refusal.kind, RefusalKind::NotSaved, "{refusal:?}");
        assert!(refusal.reason.contains("writes fail"), "{refusal:?}");
        assert_eq!(local(&a, "k").await, None, "nothing unsaved is kept");

        a.ask(|reply| super::Command::FailWrites { on: false, reply })
            .await
            .unwrap();
        let report = b
            .store(b"k".to_vec(), None, b"v2".to_vec(), expires)
            .await
            .unwrap();
        assert!(
            report.refused.iter().all(|r| r.peer != a.peer_id()),
            "{report:?}"
        );
        assert_eq!(local(&a, "k").await.as_deref(), Some(&b"v2"[..]));
        b.shutdown().await;
        a.shutdown().await;

        // The file is free at once and holds what was accepted.
        let mut c = config(TEST_SUBNET, a_key, vec![]);
        c.store_path = Some(dir.path().join("a.redb"));
        let a = Dht::start(c)
            .await
            .expect("the file is free after shutdown");
        assert_eq!(local(&a, "k").await.as_deref(), Some(&b"v2"[..]));
        a.shutdown().await;
    }
}
