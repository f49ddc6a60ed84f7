//! Stake-gated admission: the [`StakeOracle`] question and its cache.
//!
//! "Is this PeerId staked in subnet S with at least class C?" is asked by the
//! DHT before a peer enters the routing table, by the stake validator on
//! Puts and by the RPC stake authorizer. The chain answers it (the
//! chain-backed oracle lives in `mesh-chain`); [`CachedStakeOracle`] keeps
//! answers — positive and negative — for a configurable time (300 s by
//! default, as the Python mesh does) so the chain is asked once per peer and
//! period, and can be told to forget a subnet when the chain reports a change.

use libp2p_identity::PeerId;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::subnet::SubnetId;

/// Classes of subnet nodes on chain, ordered: `>=` means "at least".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeClass {
    /// Taken out of the subnet by its owner.
    Deactivated = 0,
    /// Registered and staked, not activated.
    Registered = 1,
    /// Activated, waiting for its first full epoch.
    Idle = 2,
    /// Part of consensus data.
    Included = 3,
    /// May propose and attest.
    Validator = 4,
}

impl NodeClass {
    /// All classes, lowest first.
    pub const ALL: [NodeClass; 5] = [
        NodeClass::Deactivated,
        NodeClass::Registered,
        NodeClass::Idle,
        NodeClass::Included,
        NodeClass::Validator,
    ];

    /// The class's number on chain (`0..=4`).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The class for its number on chain.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    fn name(self) -> &'static str {
        match self {
            NodeClass::Deactivated => "deactivated",
            NodeClass::Registered => "registered",
            NodeClass::Idle => "idle",
            NodeClass::Included => "included",
            NodeClass::Validator => "validator",
        }
    }
}

impl fmt::Display for NodeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A node class name that is not one of `deactivated`, `registered`, `idle`,
/// `included`, `validator`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown node class {0:?}: expected deactivated, registered, idle, included or validator")]
pub struct UnknownNodeClass(pub String);

impl FromStr for NodeClass {
    type Err = UnknownNodeClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|c| c.name() == lower)
            .ok_or_else(|| UnknownNodeClass(s.to_owned()))
    }
}

/// Why an oracle could not answer. Not an answer: callers decide whether to
/// fail open or closed (mesh fails closed: an unanswered peer is not admitted).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StakeError {
    /// The chain could not be reached or did not answer in time.
    #[error("stake oracle unavailable: {0}")]
    Unavailable(String),
    /// The chain answered something that could not be understood.
    #[error("stake oracle got an invalid answer: {0}")]
    InvalidAnswer(String),
}

/// The future an oracle returns.
pub type StakeFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, StakeError>> + Send + 'a>>;

/// Answers whether a peer is staked in a subnet with at least a class.
pub trait StakeOracle: Send + Sync {
    /// `Ok(true)` when `peer_id` is the peer, bootnode or client PeerId of a
    /// node of `subnet_id` with class `>= min_class` and at least the minimum stake.
    fn is_staked<'a>(
        &'a self,
        subnet_id: SubnetId,
        peer_id: &'a PeerId,
        min_class: NodeClass,
    ) -> StakeFuture<'a>;
}

impl<O: StakeOracle + ?Sized> StakeOracle for std::sync::Arc<O> {
    fn is_staked<'a>(
        &'a self,
        subnet_id: SubnetId,
        peer_id: &'a PeerId,
        min_class: NodeClass,
    ) -> StakeFuture<'a> {
        (**self).is_staked(subnet_id, peer_id, min_class)
    }
}

/// The stake rule of a subnet, shared by every gate of a node (the DHT's
/// routing table, stores and pubsub; the RPC stake authorizer): peers must be
/// staked in `subnet_id` with at least `min_class`.
///
/// [`StakeGate::check`] asks the oracle and remembers each peer's last
/// answer: when the oracle fails (the chain is unreachable), the last answer
/// stands for `grace` after it was given, so an outage shorter than that
/// refuses nobody who was admitted before it. After that, or with no answer
/// to fall back on, the failure is returned and gates fail closed. Clones
/// share the memory.
#[derive(Clone)]
pub struct StakeGate {
    /// Who answers; give it a cached oracle (e.g. `mesh_chain::chain_stake_oracle`).
    pub oracle: Arc<dyn StakeOracle>,
    /// The subnet on chain.
    pub subnet_id: SubnetId,
    /// The least class admitted.
    pub min_class: NodeClass,
    /// How long a peer's last answer stands while the oracle fails.
    pub grace: Duration,
    last: Arc<Mutex<HashMap<PeerId, (bool, Instant)>>>,
}

impl fmt::Debug for StakeGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StakeGate")
            .field("subnet_id", &self.subnet_id)
            .field("min_class", &self.min_class)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// Most last answers a [`StakeGate`] remembers.
const GATE_MEMORY: usize = 100_000;

impl StakeGate {
    /// Five minutes.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

    /// A gate with the default grace period.
    pub fn new(oracle: Arc<dyn StakeOracle>, subnet_id: SubnetId, min_class: NodeClass) -> Self {
        Self {
            oracle,
            subnet_id,
            min_class,
            grace: Self::DEFAULT_GRACE,
            last: Arc::default(),
        }
    }

    /// The same gate with another grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Whether `peer` is admitted: the oracle's answer, or during an oracle
    /// outage the peer's last answer if it is younger than the grace period.
    pub async fn check(&self, peer: &PeerId) -> Result<bool, StakeError> {
        let answer = self
            .oracle
            .is_staked(self.subnet_id, peer, self.min_class)
            .await;
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(staked) => {
                if last.len() >= GATE_MEMORY && !last.contains_key(peer) {
                    let grace = self.grace;
                    last.retain(|_, (_, at)| now.duration_since(*at) < grace);
                    if last.len() >= GATE_MEMORY {
                        last.clear();
                    }
                }
                last.insert(*peer, (staked, now));
                Ok(staked)
            }
            Err(e) => {
                drop(last);
                self.last_within_grace(peer).ok_or(e)
            }
        }
    }

    /// The peer's last answer if it is younger than the grace period: what
    /// stands while the oracle fails (or, for a caller that gave up waiting
    /// on it, while it hangs).
    pub fn last_within_grace(&self, peer: &PeerId) -> Option<bool> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(peer) {
            Some(&(staked, at)) if at.elapsed() < self.grace => Some(staked),
            _ => None,
        }
    }
}

/// How long answers are trusted when nobody says otherwise: 300 s.
pub const DEFAULT_STAKE_TTL: Duration = Duration::from_secs(300);

type CacheKey = (SubnetId, PeerId, NodeClass);

/// A [`StakeOracle`] that remembers answers of another for `ttl`.
///
/// Errors are never cached. At most `max_entries` answers are kept; past that
/// expired ones are dropped first, then the oldest.
pub struct CachedStakeOracle<O> {
    inner: O,
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<CacheKey, (bool, Instant)>>,
}

impl<O: StakeOracle> CachedStakeOracle<O> {
    /// Cache `inner`'s answers for `ttl`.
    pub fn new(inner: O, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            max_entries: 100_000,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Keep at most this many answers (default 100,000).
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries.max(1);
        self
    }

    /// The oracle asked on a miss.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// How long answers are trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Forget every answer about `subnet_id` (the chain reported a change).
    pub fn invalidate_subnet(&self, subnet_id: SubnetId) {
        self.lock().retain(|(subnet, _, _), _| *subnet != subnet_id);
    }

    /// Forget everything.
    pub fn invalidate_all(&self) {
        self.lock().clear();
    }

    /// Number of answers held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, (bool, Instant)>> {
        // A panic while holding the lock leaves a plain map behind: still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, key: &CacheKey) -> Option<bool> {
        let entries = self.lock();
        let (answer, at) = entries.get(key)?;
        (at.elapsed() < self.ttl).then_some(*answer)
    }

    fn remember(&self, key: CacheKey, answer: bool) {
        let mut entries = self.lock();
        if entries.len() >= self.max_entries {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            while entries.len() >= self.max_entries {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (answer, Instant::now()));
    }
}

impl<O: StakeOracle> StakeOracle for CachedStakeOracle<O> {
    fn is_staked<'a>(
        &'a self,
        subnet_id: SubnetId,
        peer_id: &'a PeerId,
        min_class: NodeClass,
    ) -> StakeFuture<'a> {
        Box::pin(async move {
            let key = (subnet_id, *peer_id, min_class);
            if let Some(answer) = self.cached(&key) {
                return Ok(answer);
            }
            let answer = self.inner.is_staked(subnet_id, peer_id, min_class).await?;
            self.remember(key, answer);
            Ok(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    const S1: SubnetId = SubnetId::new(1);
    const S2: SubnetId = SubnetId::new(2);
    #[test]
    fn a_gate_keeps_the_last_answer_through_an_outage_for_the_grace_period() {
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Flaky(AtomicBool, PeerId);
        impl StakeOracle for Flaky {
            fn is_staked<'a>(
                &'a self,
                _: SubnetId,
                p: &'a PeerId,
                _: NodeClass,
            ) -> StakeFuture<'a> {
                let down = self.0.load(Ordering::SeqCst);
                let staked = *p == self.1;
                Box::pin(async move {
                    if down {
                        Err(StakeError::Unavailable("outage".into()))
                    } else {
                        Ok(staked)
                    }
                })
            }
        }
        let (staked, other, never) = (PeerId::random(), PeerId::random(), PeerId::random());
        let oracle = Arc::new(Flaky(AtomicBool::new(false), staked));
        let gate = StakeGate::new(oracle.clone(), S1, NodeClass::Registered)
            .with_grace(Duration::from_millis(200));
        let check = |p: PeerId| futures::executor::block_on(gate.check(&p));
        assert!(check(staked).unwrap());
        assert!(!check(other).unwrap());
        oracle.0.store(true, Ordering::SeqCst);
        assert!(check(staked).unwrap(), "the last answer stands");
        assert!(!check(other).unwrap(), "for refusals too");
        assert!(check(never).is_err(), "nothing to fall back on");
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            check(staked).is_err(),
            "past the grace period the failure shows"
        );
    }

    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A test double: a fixed set of staked peers, counting questions.
    #[derive(Default)]
    struct Fixed {
        staked: Mutex<HashSet<(SubnetId, PeerId)>>,
        asked: AtomicUsize,
        fail: Mutex<bool>,
    }

    impl StakeOracle for Fixed {
        fn is_staked<'a>(
            &'a self,
            subnet: SubnetId,
            peer: &'a PeerId,
            _: NodeClass,
        ) -> StakeFuture<'a> {
            Box::pin(async move {
                self.asked.fetch_add(1, Ordering::SeqCst);
                if *self.fail.lock().unwrap() {
                    return Err(StakeError::Unavailable("down".into()));
                }
                Ok(self.staked.lock().unwrap().contains(&(subnet, *peer)))
            })
        }
    }

    fn ask(oracle: &impl StakeOracle, subnet: SubnetId, peer: &PeerId) -> Result<bool, StakeError> {
        futures::executor::block_on(oracle.is_staked(subnet, peer, NodeClass::Registered))
    }

    #[test]
    fn positive_and_negative_answers_are_cached_until_the_ttl() {
        let inner = Arc::new(Fixed::default());
        let (staked, stranger) = (PeerId::random(), PeerId::random());
        inner.staked.lock().unwrap().insert((S1, staked));
        let cache = CachedStakeOracle::new(inner.clone(), Duration::from_millis(200));
        for _ in 0..3 {
            assert!(ask(&cache, S1, &staked).unwrap());
            assert!(!ask(&cache, S1, &stranger).unwrap());
        }
        assert_eq!(
            inner.asked.load(Ordering::SeqCst),
            2,
            "one question per peer"
        );
        // The chain changes; the cache keeps its answer until the TTL ends.
        inner.staked.lock().unwrap().clear();
        assert!(ask(&cache, S1, &staked).unwrap());
        std::thread::sleep(Duration::from_millis(250));
        assert!(!ask(&cache, S1, &staked).unwrap());
        assert_eq!(inner.asked.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn invalidating_a_subnet_forgets_only_that_subnet() {
        let inner = Arc::new(Fixed::default());
        let peer = PeerId::random();
        inner
            .staked
            .lock()
            .unwrap()
            .extend([(S1, peer), (S2, peer)]);
        let cache = CachedStakeOracle::new(inner.clone(), DEFAULT_STAKE_TTL);
        assert!(ask(&cache, S1, &peer).unwrap());
        assert!(ask(&cache, S2, &peer).unwrap());
        inner.staked.lock().unwrap().clear();
        cache.invalidate_subnet(S1);
        assert!(!ask(&cache, S1, &peer).unwrap(), "subnet 1 asked again");
        assert!(ask(&cache, S2, &peer).unwrap(), "subnet 2 still cached");
        cache.invalidate_all();
        assert!(!ask(&cache, S2, &peer).unwrap());
    }

    #[test]
    fn errors_are_not_cached() {
        let inner = Arc::new(Fixed::default());
        let peer = PeerId::random();
        *inner.fail.lock().unwrap() = true;
        let cache = CachedStakeOracle::new(inner.clone(), DEFAULT_STAKE_TTL);
        assert!(matches!(
            ask(&cache, S1, &peer),
            Err(StakeError::Unavailable(_))
        ));
        *inner.fail.lock().unwrap() = false;
        assert!(!ask(&cache, S1, &peer).unwrap());
        assert_eq!(inner.asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_cache_is_bounded() {
        let inner = Arc::new(Fixed::default());
        let cache = CachedStakeOracle::new(inner, DEFAULT_STAKE_TTL).with_max_entries(10);
        for _ in 0..50 {
            ask(&cache, S1, &PeerId::random()).unwrap();
        }
        assert_eq!(cache.len(), 10);
    }

    #[test]
    fn node_classes_parse_order_and_number() {
        assert!(NodeClass::Validator > NodeClass::Included);
        assert!(NodeClass::Idle > NodeClass::Registered);
        assert_eq!(
            "Validator".parse::<NodeClass>().unwrap(),
            NodeClass::Validator
        );
        assert_eq!("idle".parse::<NodeClass>().unwrap().as_u8(), 2);
        assert_eq!(NodeClass::from_u8(3), Some(NodeClass::Included));
        assert_eq!(NodeClass::from_u8(5), None);
        let err = "boss".parse::<NodeClass>().unwrap_err();
        assert!(err.to_string().contains("boss"), "{err}");
    }
}
