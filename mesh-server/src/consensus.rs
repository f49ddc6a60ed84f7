//! The per-epoch consensus loop (see `docs/architecture.md`, "Consensus").
//!
//! Each epoch, once the subnet is active and this node is at least `Idle`:
//! score the alive peers through the subnet's hook; if this node is the
//! elected validator, propose those scores (unless a submission exists);
//! otherwise, if it is a `Validator`, attest the submission only when its
//! own scores match it exactly and less than 15 % of the epoch has passed.
//! It acts at most once per epoch, and retries chain errors with backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::consensus::{ChainCallError, ConsensusChain, Score};
use mesh_core::{NodeClass, SubnetId};
use tokio_util::sync::CancellationToken;

/// Share of an epoch after which a node no longer attests.
pub const ATTEST_WINDOW: f64 = 0.15;

/// The subnet's scoring hook: the scores this node would submit for an epoch.
pub type ScoreFn =
    Arc<dyn Fn(u32) -> Pin<Box<dyn Future<Output = Vec<Score>> + Send>> + Send + Sync>;

/// What one step of the loop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The subnet is not active or this node is below `Idle`.
    Waiting(&'static str),
    /// Already acted this epoch.
    Done(u32),
    /// Proposed the epoch's scores.
    Proposed(u32),
    /// Attested the epoch's submission.
    Attested(u32),
    /// Elected, but a submission already existed.
    SubmissionExists(u32),
    /// Not attesting: why.
    Skipped(u32, &'static str),
}

/// The loop's state: the last epoch it acted in.
pub struct ConsensusLoop {
    chain: Arc<dyn ConsensusChain>,
    subnet_id: SubnetId,
    score: ScoreFn,
    last_acted: Option<u32>,
    attest_window: f64,
}

impl ConsensusLoop {
    /// A loop for `subnet_id` over `chain`, scoring with `score`.
    pub fn new(chain: Arc<dyn ConsensusChain>, subnet_id: SubnetId, score: ScoreFn) -> Self {
        Self {
            chain,
            subnet_id,
            score,
            last_acted: None,
            attest_window: ATTEST_WINDOW,
        }
    }

    /// Attest only before this share of the epoch has passed (default 0.15).
    pub fn with_attest_window(mut self, window: f64) -> Self {
        self.attest_window = window;
        self
    }

    /// One look at the chain, acting when it is time.
    pub async fn step(&mut self) -> Result<Step, ChainCallError> {
        let Some(clock) = self.chain.clock(self.subnet_id).await? else {
            return Ok(Step::Waiting("the subnet is not active"));
        };
        let epoch = clock.epoch;
        if self.last_acted == Some(epoch) {
            return Ok(Step::Done(epoch));
        }
        let Some((me, class)) = self.chain.own_node(self.subnet_id).await? else {
            return Ok(Step::Waiting("this node is not registered"));
        };
        if class < NodeClass::Idle {
            return Ok(Step::Waiting("this node is below Idle"));
        }
        let elected = self.chain.elected_validator(self.subnet_id, epoch).await?;
        let submission = self.chain.submission(self.subnet_id, epoch).await?;
        if elected == Some(me) {
            if submission.is_some() {
                self.last_acted = Some(epoch);
                return Ok(Step::SubmissionExists(epoch));
            }
            let scores = (self.score)(epoch).await;
            self.chain.propose(self.subnet_id, scores).await?;
            self.last_acted = Some(epoch);
            tracing::info!(
                subnet_id = %self.subnet_id,
                epoch,
                "proposed the epoch's attestation"
            );
            return Ok(Step::Proposed(epoch));
        }
        if class < NodeClass::Validator {
            return Ok(Step::Skipped(epoch, "not a validator"));
        }
        let Some(submission) = submission else {
            return Ok(Step::Skipped(epoch, "no submission yet"));
        };
        if submission.attested_by.contains(&me) {
            self.last_acted = Some(epoch);
            return Ok(Step::Done(epoch));
        }
        if clock.progress() >= self.attest_window {
            self.last_acted = Some(epoch);
            return Ok(Step::Skipped(epoch, "too late in the epoch"));
        }
        let mut ours = (self.score)(epoch).await;
        let mut theirs = submission.scores.clone();
        ours.sort();
        theirs.sort();
        if ours != theirs {
            self.last_acted = Some(epoch);
            tracing::info!(
                subnet_id = %self.subnet_id,
                epoch,
                "scores differ from the submission: not attesting"
            );
            return Ok(Step::Skipped(epoch, "scores differ"));
        }
        self.chain.attest(self.subnet_id).await?;
        self.last_acted = Some(epoch);
        tracing::info!(subnet_id = %self.subnet_id, epoch, "attested");
        Ok(Step::Attested(epoch))
    }

    /// Step every `poll` until `cancel`; chain errors are logged and retried
    /// with backoff (up to 30 s).
    pub async fn run(mut self, poll: Duration, cancel: CancellationToken) {
        let mut backoff = poll;
        loop {
            // A step waits on the chain: shutdown must not wait for it (a
            // chain that went away keeps the client reconnecting).
            let step = tokio::select! {
                _ = cancel.cancelled() => return,
                step = self.step() => step,
            };
            let wait = match step {
                Ok(step) => {
                    tracing::debug!(?step, "consensus step");
                    backoff = poll;
                    poll
                }
                Err(e) => {
                    tracing::warn!(
                        subnet_id = %self.subnet_id,
                        "consensus: chain error, retrying in {backoff:?}: {e}"
                    );
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    wait
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::consensus::{ChainFuture, EpochClock, NodeId, Submission};
    use std::sync::Mutex;

    /// A test double of the chain: one subnet, scripted state, calls recorded.
    #[derive(Default)]
    struct Script {
        clock: Mutex<Option<EpochClock>>,
        me: Mutex<Option<(NodeId, NodeClass)>>,
        elected: Mutex<Option<NodeId>>,
        submission: Mutex<Option<Submission>>,
        calls: Mutex<Vec<String>>,
    }

    impl ConsensusChain for Script {
        fn clock(&self, _: SubnetId) -> ChainFuture<'_, Option<EpochClock>> {
            Box::pin(async move { Ok(*self.clock.lock().unwrap()) })
        }
        fn own_node(&self, _: SubnetId) -> ChainFuture<'_, Option<(NodeId, NodeClass)>> {
            Box::pin(async move { Ok(*self.me.lock().unwrap()) })
        }
        fn elected_validator(&self, _: SubnetId, _: u32) -> ChainFuture<'_, Option<NodeId>> {
            Box::pin(async move { Ok(*self.elected.lock().unwrap()) })
        }
        fn node_of(&self, _: SubnetId, _: mesh_core::PeerId) -> ChainFuture<'_, Option<NodeId>> {
            // The loop scores through its ScoreFn; it never maps PeerIds itself.
            Box::pin(async move { Ok(None) })
        }
        fn submission(&self, _: SubnetId, _: u32) -> ChainFuture<'_, Option<Submission>> {
            Box::pin(async move { Ok(self.submission.lock().unwrap().clone()) })
        }
        fn propose(&self, _: SubnetId, scores: Vec<Score>) -> ChainFuture<'_, ()> {
            Box::pin(async move {
                self.calls
                    .lock()
                    .unwrap()
                    .push(format!("propose {}", scores.len()));
                Ok(())
            })
        }
        fn attest(&self, _: SubnetId) -> ChainFuture<'_, ()> {
            Box::pin(async move {
                self.calls.lock().unwrap().push("attest".into());
                Ok(())
            })
        }
    }

    fn scores(values: &[(u32, u128)]) -> Vec<Score> {
        values
            .iter()
            .map(|&(node_id, score)| Score { node_id, score })
            .collect()
    }

    fn scorer(values: &'static [(u32, u128)]) -> ScoreFn {
        Arc::new(move |_| Box::pin(async move { scores(values) }))
    }

    fn clock(epoch: u32, blocks_into_epoch: u32) -> Option<EpochClock> {
        Some(EpochClock {
            epoch,
            blocks_into_epoch,
            epoch_length: 100,
        })
    }

    fn run(chain: &Arc<Script>, l: &mut ConsensusLoop) -> Step {
        let _ = chain;
        futures::executor::block_on(l.step()).unwrap()
    }

    #[test]
    fn waits_for_an_active_subnet_and_idle_class() {
        let chain = Arc::new(Script::default());
        let mut l = ConsensusLoop::new(chain.clone(), SubnetId::new(1), scorer(&[]));
        assert_eq!(
            run(&chain, &mut l),
            Step::Waiting("the subnet is not active")
        );
        *chain.clock.lock().unwrap() = clock(3, 0);
        assert_eq!(
            run(&chain, &mut l),
            Step::Waiting("this node is not registered")
        );
        *chain.me.lock().unwrap() = Some((1, NodeClass::Registered));
        assert_eq!(
            run(&chain, &mut l),
            Step::Waiting("this node is below Idle")
        );
        assert!(chain.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn the_elected_validator_proposes_once_and_never_over_a_submission() {
        let chain = Arc::new(Script::default());
        *chain.clock.lock().unwrap() = clock(3, 0);
        *chain.me.lock().unwrap() = Some((1, NodeClass::Validator));
        *chain.elected.lock().unwrap() = Some(1);
        let mut l = ConsensusLoop::new(chain.clone(), SubnetId::new(1), scorer(&[(1, 5), (2, 7)]));
        assert_eq!(run(&chain, &mut l), Step::Proposed(3));
        assert_eq!(run(&chain, &mut l), Step::Done(3), "never twice");
        *chain.clock.lock().unwrap() = clock(4, 0);
        *chain.submission.lock().unwrap() = Some(Submission {
            validator: 1,
            scores: scores(&[(1, 5)]),
            attested_by: vec![1],
        });
        assert_eq!(run(&chain, &mut l), Step::SubmissionExists(4));
        assert_eq!(*chain.calls.lock().unwrap(), vec!["propose 2".to_string()]);
    }

    #[test]
    fn others_attest_only_matching_scores_early_enough_once() {
        let chain = Arc::new(Script::default());
        *chain.me.lock().unwrap() = Some((2, NodeClass::Validator));
        *chain.elected.lock().unwrap() = Some(1);
        let submitted = Submission {
            validator: 1,
            scores: scores(&[(2, 7), (1, 5)]),
            attested_by: vec![1],
        };
        let mut l = ConsensusLoop::new(chain.clone(), SubnetId::new(1), scorer(&[(1, 5), (2, 7)]));

        *chain.clock.lock().unwrap() = clock(3, 0);
        assert_eq!(run(&chain, &mut l), Step::Skipped(3, "no submission yet"));
        *chain.submission.lock().unwrap() = Some(submitted.clone());
        assert_eq!(
            run(&chain, &mut l),
            Step::Attested(3),
            "same scores in another order"
        );
        assert_eq!(run(&chain, &mut l), Step::Done(3));

        *chain.clock.lock().unwrap() = clock(4, 20);
        assert_eq!(
            run(&chain, &mut l),
            Step::Skipped(4, "too late in the epoch")
        );

        let mut differ =
            ConsensusLoop::new(chain.clone(), SubnetId::new(1), scorer(&[(1, 5), (2, 8)]));
        *chain.clock.lock().unwrap() = clock(5, 1);
        assert_eq!(run(&chain, &mut differ), Step::Skipped(5, "scores differ"));

        *chain.me.lock().unwrap() = Some((2, NodeClass::Included));
        let mut included =
            ConsensusLoop::new(chain.clone(), SubnetId::new(1), scorer(&[(1, 5), (2, 7)]));
        assert_eq!(
            run(&chain, &mut included),
            Step::Skipped(5, "not a validator")
        );
        assert_eq!(*chain.calls.lock().unwrap(), vec!["attest".to_string()]);
    }
}
