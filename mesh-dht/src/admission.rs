//! Stake admission inside the event loop: one verdict per peer, coalesced
//! oracle queries, bounded queues.
//!
//! Every gate of the node asks [`Admission::decide`]: routing-table inserts,
//! stores (the record protocol and kad's `PUT_VALUE`) and pubsub messages
//! (their author and the peer that forwarded them). A peer's verdict is kept
//! with the time the oracle gave it:
//!
//! - a fresh verdict (younger than the refresh period) answers at once;
//! - a stale one still answers at once, and the oracle is asked again in the
//!   background (stale-while-revalidate), so a busy peer never waits on the
//!   chain;
//! - with no verdict the caller parks its work here until the oracle answers.
//!
//! One query per peer is in flight at a time, however many stores or
//! messages wait on it, and at most [`MAX_CHECKS`] peers are being asked at
//! once. Answers come back on a bounded channel. The gate itself
//! ([`StakeGate::check`]) keeps a peer's last answer through an oracle
//! outage for its grace period; after that the peer is not admitted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use mesh_core::{Offences, StakeError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use mesh_core::StakeGate;

/// Most peers whose stake is being asked at once.
pub(crate) const MAX_CHECKS: usize = 1024;
/// Most pieces of work (stores, messages) parked waiting for verdicts.
pub(crate) const MAX_PARKED: usize = 4096;
/// An oracle query that takes longer than this counts as unanswered.
const ORACLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer to "may this peer do this now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Admit,
    Refuse,
    /// Not known yet: the oracle is being asked.
    Unknown,
}

/// An oracle answer, back in the event loop.
pub(crate) struct Answer {
    pub(crate) peer: PeerId,
    pub(crate) staked: Result<bool, StakeError>,
}

struct Verdict {
    admitted: bool,
    at: Instant,
}

/// The peers admitted right now, readable outside the event loop by parts
/// that must answer synchronously (the relay server's reservation check).
/// Kept by [`Admission`]: a peer is in it while its latest verdict admits it.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdmittedPeers(Arc<Mutex<HashSet<PeerId>>>);

impl AdmittedPeers {
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.lock().contains(peer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PeerId>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stake half of the node's admission policy (rate limits are
/// [`mesh_core::TokenBucket`]s kept beside the work they meter).
pub(crate) struct Admission<P> {
    gate: Option<StakeGate>,
    fresh_for: Duration,
    verdicts: HashMap<PeerId, Verdict>,
    checking: HashSet<PeerId>,
    parked: HashMap<PeerId, Vec<P>>,
    parked_count: usize,
    tx: mpsc::Sender<Answer>,
    rx: mpsc::Receiver<Answer>,
    cancel: CancellationToken,
    admitted: AdmittedPeers,
}

impl<P> Admission<P> {
    /// `fresh_for`: how long an answer is used without asking again.
    /// Oracle queries stop when `cancel` is cancelled.
    pub(crate) fn new(
        gate: Option<StakeGate>,
        fresh_for: Duration,
        cancel: CancellationToken,
        admitted: AdmittedPeers,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_CHECKS);
        Self {
            gate,
            fresh_for,
            verdicts: HashMap::new(),
            checking: HashSet::new(),
            parked: HashMap::new(),
            parked_count: 0,
            tx,
            rx,
            cancel,
            admitted,
        }
    }

    pub(crate) fn gate(&self) -> Option<&StakeGate> {
        self.gate.as_ref()
    }

    /// Whether `peer`'s latest verdict admits it (no oracle query).
    pub(crate) fn admitted_now(&self, peer: &PeerId) -> bool {
        self.gate.is_none() || self.admitted.contains(peer)
    }

    pub(crate) fn enabled(&self) -> bool {
        self.gate.is_some()
    }

    /// The current verdict on `peer`, asking the oracle when there is none
    /// or it is stale. Without a gate everyone is admitted.
    pub(crate) fn decide(&mut self, peer: PeerId) -> Decision {
        if self.gate.is_none() {
            return Decision::Admit;
        }
        let (decision, stale) = match self.verdicts.get(&peer) {
            Some(v) => (
                if v.admitted {
                    Decision::Admit
                } else {
                    Decision::Refuse
                },
                v.at.elapsed() >= self.fresh_for,
            ),
            None => (Decision::Unknown, true),
        };
        if stale {
            self.check(peer);
        }
        decision
    }

    /// Ask the oracle about `peer` now (once at a time per peer).
    pub(crate) fn check(&mut self, peer: PeerId) {
        let Some(gate) = self.gate.clone() else {
            return;
        };
        if self.checking.len() >= MAX_CHECKS || !self.checking.insert(peer) {
            return;
        }
        let tx = self.tx.clone();
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            let ask = gate.check(&peer);
            let staked = tokio::select! {
                r = tokio::time::timeout(ORACLE_TIMEOUT, ask) => r.unwrap_or_else(|_| {
                    // A hanging oracle is an outage too: the grace period applies.
                    gate.last_within_grace(&peer).ok_or_else(|| {
                        StakeError::Unavailable(format!("no answer within {ORACLE_TIMEOUT:?}"))
                    })
                }),
                _ = cancel.cancelled() => return,
            };
            let _ = tx.send(Answer { peer, staked }).await;
        });
    }

    /// The next oracle answer (never ends while `self` lives: it holds a sender).
    pub(crate) async fn answer(&mut self) -> Answer {
        self.rx.recv().await.expect("admission holds a sender")
    }

    /// Records an answer: whether `peer` is admitted, and the work parked on it.
    pub(crate) fn record(&mut self, answer: &Answer) -> (bool, Vec<P>) {
        let peer = answer.peer;
        self.checking.remove(&peer);
        let now = Instant::now();
        let previous = self.verdicts.get(&peer).map(|v| v.admitted);
        let admitted = match &answer.staked {
            Ok(staked) => *staked,
            // The gate already kept the last answer through the grace period.
            Err(e) => {
                tracing::warn!(%peer, "stake oracle did not answer, treating the peer as unstaked: {e}");
                false
            }
        };
        if !admitted && previous != Some(false) {
            tracing::info!(%peer, "peer is not staked in this subnet");
        }
        self.verdicts.insert(peer, Verdict { admitted, at: now });
        let mut set = self.admitted.lock();
        if admitted {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
        drop(set);
        (admitted, self.take_parked(&peer))
    }

    fn take_parked(&mut self, peer: &PeerId) -> Vec<P> {
        let parked = self.parked.remove(peer).unwrap_or_default();
        self.parked_count -= parked.len();
        parked
    }

    /// Keeps `work` until the oracle answers about `peer`; gives it back
    /// when too much work is parked already.
    pub(crate) fn park(&mut self, peer: PeerId, work: P) -> Result<(), P> {
        if self.parked_count >= MAX_PARKED {
            return Err(work);
        }
        self.check(peer);
        if !self.checking.contains(&peer) {
            // No query could be started: nothing would ever wake this work.
            return Err(work);
        }
        self.parked.entry(peer).or_default().push(work);
        self.parked_count += 1;
        Ok(())
    }

    /// Forgets the verdicts of peers `keep` says no to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&PeerId) -> bool) {
        self.verdicts.retain(|p, _| keep(p));
        let verdicts = &self.verdicts;
        self.admitted.lock().retain(|p| verdicts.contains_key(p));
    }
}

/// When a peer that keeps sending refused input is blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanPolicy {
    /// Refused inputs (records validators refuse, malformed requests, pubsub
    /// messages rejected for stake or by a validator) allowed per minute;
    /// one more blocks the peer.
    pub refusals_per_minute: u32,
    /// Block lengths for the first, second and further violations.
    pub blocks: Vec<Duration>,
}

impl Default for BanPolicy {
    /// 16 refusals a minute; blocks of 5 min, 1 h, 24 h (as the RPC rate limiter's).
    fn default() -> Self {
        Self {
            refusals_per_minute: 16,
            blocks: mesh_core::rate::escalating_blocks(),
        }
    }
}

struct Conduct {
    window: std::time::Instant,
    refusals: u32,
    offences: Offences,
}

/// Peers blocked for refused input: the misbehaviour half of admission.
pub(crate) struct Bans {
    policy: Option<BanPolicy>,
    peers: HashMap<PeerId, Conduct>,
}

impl Bans {
    pub(crate) fn new(policy: Option<BanPolicy>) -> Self {
        Self {
            policy,
            peers: HashMap::new(),
        }
    }

    /// How long `peer` stays blocked (`None`: it is not).
    pub(crate) fn blocked_for(&self, peer: &PeerId) -> Option<(Duration, usize)> {
        let c = self.peers.get(peer)?;
        let now = std::time::Instant::now();
        c.offences
            .blocked_for(now)
            .map(|d| (d, c.offences.strikes()))
    }

    /// Counts one refused input of `peer`; returns the block it earned, if
    /// this one crossed the limit.
    pub(crate) fn refused(&mut self, peer: PeerId) -> Option<Duration> {
        let policy = self.policy.as_ref()?;
        let now = std::time::Instant::now();
        let c = self.peers.entry(peer).or_insert(Conduct {
            window: now,
            refusals: 0,
            offences: Offences::default(),
        });
        if now.duration_since(c.window) >= Duration::from_secs(60) {
            c.window = now;
            c.refusals = 0;
        }
        c.refusals += 1;
        if c.refusals <= policy.refusals_per_minute {
            return None;
        }
        c.refusals = 0;
        c.window = now;
        let block = c.offences.strike(&policy.blocks, now);
        tracing::warn!(%peer, strikes = c.offences.strikes(), "peer keeps sending refused input: blocked for {block:?}");
        Some(block)
    }

    /// Forgets peers with no block and no refusals in the last minute.
    pub(crate) fn forget_idle(&mut self) {
        let now = std::time::Instant::now();
        self.peers.retain(|_, c| {
            c.offences.blocked_for(now).is_some()
                || now.duration_since(c.window) < Duration::from_secs(60)
                // Past offenders are remembered so that their next block is longer.
                || c.offences.strikes() > 0
        });
        if self.peers.len() > 100_000 {
            self.peers
                .retain(|_, c| c.offences.blocked_for(now).is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::stake::StakeFuture;
    use mesh_core::{NodeClass, StakeOracle, SubnetId};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Staked iff the first byte of the PeerId's multihash digest is even;
    /// counts its calls, answers after 50 ms, fails while `down` is set.
    struct Oracle {
        calls: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
        staked: PeerId,
    }

    impl StakeOracle for Oracle {
        fn is_staked<'a>(&'a self, _: SubnetId, peer: &'a PeerId, _: NodeClass) -> StakeFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.down.load(Ordering::SeqCst) {
                    return Err(StakeError::Unavailable("test outage".into()));
                }
                Ok(*peer == self.staked)
            })
        }
    }

    fn admission(oracle: Arc<Oracle>, grace: Duration) -> Admission<u32> {
        let gate = StakeGate::new(oracle, mesh_core::SubnetId::new(1), NodeClass::Registered)
            .with_grace(grace);
        Admission::new(
            Some(gate),
            Duration::from_millis(200),
            CancellationToken::new(),
            AdmittedPeers::default(),
        )
    }

    #[tokio::test]
    async fn queries_are_coalesced_and_parked_work_comes_back() {
        let staked = PeerId::random();
        let oracle = Arc::new(Oracle {
            calls: AtomicUsize::new(0),
            down: false.into(),
            staked,
        });
        let mut a = admission(oracle.clone(), Duration::ZERO);
        assert_eq!(a.decide(staked), Decision::Unknown);
        for work in 0..100 {
            a.park(staked, work).unwrap();
        }
        let answer = a.answer().await;
        assert_eq!(oracle.calls.load(Ordering::SeqCst), 1, "one query per peer");
        let (admitted, parked) = a.record(&answer);
        assert!(admitted);
        assert_eq!(parked, (0..100).collect::<Vec<_>>());
        assert_eq!(a.decide(staked), Decision::Admit);
        assert!(a.admitted.contains(&staked), "the shared set follows");
        // An unstaked peer is refused.
        let other = PeerId::random();
        a.decide(other);
        let answer = a.answer().await;
        assert!(!a.record(&answer).0);
        assert_eq!(a.decide(other), Decision::Refuse);
        assert!(!a.admitted.contains(&other));
        // Forgotten peers leave the shared set too.
        a.retain(|_| false);
        assert!(!a.admitted.contains(&staked));
    }

    #[tokio::test]
    async fn an_outage_keeps_the_last_answer_for_the_grace_period_only() {
        let staked = PeerId::random();
        let oracle = Arc::new(Oracle {
            calls: AtomicUsize::new(0),
            down: false.into(),
            staked,
        });
        let mut a = admission(oracle.clone(), Duration::from_millis(600));
        a.decide(staked);
        let answer = a.answer().await;
        a.record(&answer);
        oracle.down.store(true, Ordering::SeqCst);
        // Stale after 200 ms: answered from memory, asked again, the oracle fails.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(a.decide(staked), Decision::Admit);
        let answer = a.answer().await;
        assert!(
            matches!(answer.staked, Ok(true)),
            "the gate keeps the last answer within the grace period"
        );
        assert!(a.record(&answer).0);
        // Past the grace period the failure closes the gate.
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(a.decide(staked), Decision::Admit);
        let answer = a.answer().await;
        assert!(
            answer.staked.is_err(),
            "past the grace period the failure shows"
        );
        assert!(!a.record(&answer).0, "fails closed after the grace period");
        assert_eq!(a.decide(staked), Decision::Refuse);
        assert!(!a.admitted.contains(&staked), "and leaves the shared set");
    }

    #[test]
    fn refused_input_past_the_limit_blocks_for_longer_each_time() {
        let mut bans = Bans::new(Some(BanPolicy {
            refusals_per_minute: 3,
            blocks: vec![Duration::from_millis(50), Duration::from_secs(60)],
        }));
        let (peer, other) = (PeerId::random(), PeerId::random());
        for _ in 0..3 {
            assert_eq!(bans.refused(peer), None);
        }
        assert!(bans.blocked_for(&peer).is_none());
        assert_eq!(bans.refused(peer), Some(Duration::from_millis(50)));
        assert!(bans.blocked_for(&peer).is_some());
        assert!(bans.blocked_for(&other).is_none(), "only the offender");
        std::thread::sleep(Duration::from_millis(60));
        assert!(bans.blocked_for(&peer).is_none(), "the first block ran out");
        for _ in 0..3 {
            assert_eq!(bans.refused(peer), None);
        }
        assert_eq!(
            bans.refused(peer),
            Some(Duration::from_secs(60)),
            "longer the second time"
        );
        let (left, strikes) = bans.blocked_for(&peer).unwrap();
        assert!(left > Duration::from_secs(59) && strikes == 2);
        assert_eq!(
            Bans::new(None).refused(peer),
            None,
            "no policy: never blocked"
        );
    }

    #[tokio::test]
    async fn parking_is_bounded() {
        let oracle = Arc::new(Oracle {
            calls: AtomicUsize::new(0),
            down: false.into(),
            staked: PeerId::random(),
        });
        let mut a = admission(oracle, Duration::ZERO);
        let peer = PeerId::random();
        for work in 0..MAX_PARKED as u32 {
            a.park(peer, work).unwrap();
        }
        assert_eq!(a.park(peer, 0), Err(0), "full: the work comes back");
    }
}
