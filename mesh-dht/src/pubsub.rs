//! Pubsub for subnets: gossipsub on the node's swarm, behind admission.
//!
//! Topics are namespaced per subnet: an application's topic `ledger` is
//! `/mesh/<subnet_id>/ledger` on the wire, so subnets never mix. Messages
//! are signed by their author (gossipsub's strict signed mode: unsigned or
//! badly signed messages are dropped before anything else sees them) and a
//! message's id is the SHA-256 of its author, topic and bytes, so a message
//! that arrives over several paths is delivered once.
//!
//! A message is forwarded and delivered only after the node has validated
//! it, in this order:
//! 1. the peer that forwarded it is within its per-peer rate limit;
//! 2. with a stake gate, its author is staked (an unknown author's message
//!    waits for the oracle's answer);
//! 3. every validator subscribed to the topic accepts it.
//!
//! A staked author's message is valid whoever relayed it: gossipsub keeps
//! only the first copy of a message id, so refusing a good message because
//! an unstaked reader relayed it first would let any reader censor it.
//!
//! A message refused by a validator, or an unstaked author's message sent
//! by the author or relayed by another unstaked peer, is *rejected*: it goes
//! no further and gossipsub's score of the peer that sent it drops (to the
//! gossip threshold after one such message, graylisted after three). A
//! staked peer that relays an author this node refuses is not penalised
//! (nodes may disagree on stake for a while): the message is dropped.
//! Messages over the rate limit are *ignored*: dropped without penalty.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream};
use libp2p::gossipsub::{self, MessageAcceptance, TopicHash};
use libp2p::PeerId;
use mesh_core::{RateLimit, SubnetId, TokenBucket};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::node::Command;
use crate::Dht;

/// Limits of a node's pubsub.
#[derive(Debug, Clone)]
pub struct PubsubConfig {
    /// Run gossipsub at all. A node without it cannot publish, subscribe or
    /// relay messages for others; turn it off only for nodes that serve the
    /// DHT alone.
    pub enabled: bool,
    /// Largest message accepted or published (bytes of application data).
    pub max_message_bytes: usize,
    /// Per-peer limit on messages a peer forwards to us (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Messages buffered per subscription; when a subscriber falls this far
    /// behind, newer messages for it are dropped (and counted).
    pub queue_len: usize,
    /// How often gossipsub maintains its meshes and gossips.
    pub heartbeat_interval: Duration,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_message_bytes: 256 * 1024,
            rate_limit: Some(RateLimit {
                per_second: 1000.0,
                burst: 2000.0,
            }),
            queue_len: 1024,
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// A subnet's topic: 1–128 characters of `[A-Za-z0-9._/-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// The topic called `name` in this subnet.
    pub fn new(name: impl Into<String>) -> Result<Self, PubsubError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if ok {
            Ok(Self(name))
        } else {
            Err(PubsubError::BadTopic(name))
        }
    }

    /// The application's name of the topic.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The topic on the wire: `/mesh/<subnet_id>/<name>`.
    pub(crate) fn wire(&self, subnet_id: SubnetId) -> gossipsub::IdentTopic {
        gossipsub::IdentTopic::new(subnet_id.protocol(&self.0))
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message's id: the SHA-256 of its author, wire topic and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    fn of(author: Option<&PeerId>, topic: &TopicHash, data: &[u8]) -> Self {
        let mut h = Sha256::new();
        let author = author.map(|a| a.to_bytes()).unwrap_or_default();
        for part in [&author[..], topic.as_str().as_bytes(), data] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Self(h.finalize().into())
    }
}

/// A message delivered to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubMessage {
    /// The topic it was published on.
    pub topic: Topic,
    /// Who published (and signed) it.
    pub author: PeerId,
    /// The peer it reached us through (the author itself on the first hop).
    pub forwarder: PeerId,
    /// Its id (a content hash).
    pub id: MessageId,
    /// The application's bytes.
    pub data: Vec<u8>,
}

/// What a subnet's validator says of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it here and forward it.
    Accept,
    /// Invalid: drop it and penalise the peer that sent it.
    Reject,
    /// Drop it without penalty (e.g. stale but honest).
    Ignore,
}

/// A subnet's check of the messages of a topic. It runs on the node's event
/// loop for every message before it is forwarded, so it must be quick.
pub type MessageValidator = Arc<dyn Fn(&PubsubMessage) -> Verdict + Send + Sync>;

/// Errors of pubsub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubsubError {
    /// The topic name is not 1–128 characters of `[A-Za-z0-9._/-]`.
    #[error("topic {0:?} must be 1-128 characters of [A-Za-z0-9._/-]")]
    BadTopic(String),
    /// The message is larger than the node accepts.
    #[error("message of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit ([`PubsubConfig::max_message_bytes`]).
        max: usize,
    },
    /// No connected peer subscribes to the topic yet.
    #[error("no connected peer subscribes to topic {0} yet")]
    NoPeers(Topic),
    /// This node published the same bytes on this topic already (ids are content hashes).
    #[error("the same message was published already")]
    Duplicate,
    /// Every peer's send queue is full.
    #[error("every peer's send queue is full; slow down")]
    QueuesFull,
    /// gossipsub refused for another reason.
    #[error("pubsub: {0}")]
    Other(String),
    /// The node runs without pubsub ([`PubsubConfig::enabled`]).
    #[error("pubsub is turned off on this node")]
    Disabled,
    /// The node has shut down.
    #[error("the node has stopped")]
    Stopped,
}

/// A stream of a topic's messages. Dropping it unsubscribes (once no other
/// subscription of this node holds the topic).
#[derive(Debug)]
pub struct Subscription {
    topic: Topic,
    rx: mpsc::Receiver<PubsubMessage>,
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The next message; `None` once the node has stopped.
    pub async fn recv(&mut self) -> Option<PubsubMessage> {
        self.rx.recv().await
    }
}

impl Stream for Subscription {
    type Item = PubsubMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The pubsub of a node: [`Dht::pubsub`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pubsub {
    dht: Dht,
}

impl Pubsub {
    pub(crate) fn new(dht: Dht) -> Self {
        Self { dht }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> PubsubCommand,
    ) -> Result<T, PubsubError> {
        self.dht
            .ask(|reply| Command::Pubsub(make(reply)))
            .await
            .map_err(|_| PubsubError::Stopped)
    }

    /// Subscribes to `topic`: every message published on it from now on
    /// that passes admission reaches the returned stream once. A node does
    /// not receive its own messages.
    pub async fn subscribe(&self, topic: &Topic) -> Result<Subscription, PubsubError> {
        self.subscribe_inner(topic, None).await
    }

    /// [`subscribe`](Self::subscribe) with a validator that every message of
    /// the topic must pass before this node delivers or forwards it. Several
    /// subscriptions may each bring one: all must accept.
    pub async fn subscribe_validated(
        &self,
        topic: &Topic,
        validator: MessageValidator,
    ) -> Result<Subscription, PubsubError> {
        self.subscribe_inner(topic, Some(validator)).await
    }

    async fn subscribe_inner(
        &self,
        topic: &Topic,
        validator: Option<MessageValidator>,
    ) -> Result<Subscription, PubsubError> {
        let topic = topic.clone();
        let rx = self
            .ask(|reply| PubsubCommand::Subscribe {
                topic: topic.clone(),
                validator,
                reply,
            })
            .await??;
        Ok(Subscription { topic, rx })
    }

    /// Publishes `data` on `topic`, signed by this node. Fails with
    /// [`PubsubError::NoPeers`] while no connected peer subscribes to it.
    pub async fn publish(&self, topic: &Topic, data: Vec<u8>) -> Result<MessageId, PubsubError> {
        let topic = topic.clone();
        self.ask(|reply| PubsubCommand::Publish { topic, data, reply })
            .await?
    }

    /// The connected peers that subscribe to `topic`.
    pub async fn peers(&self, topic: &Topic) -> Result<Vec<PeerId>, PubsubError> {
        let topic = topic.clone();
        self.ask(|reply| PubsubCommand::Peers { topic, reply })
            .await
    }

    /// gossipsub's score of a connected peer (negative after it sent invalid messages).
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, PubsubError> {
        self.ask(|reply| PubsubCommand::Score { peer, reply }).await
    }
}

pub(crate) enum PubsubCommand {
    Subscribe {
        topic: Topic,
        validator: Option<MessageValidator>,
        reply: oneshot::Sender<Result<mpsc::Receiver<PubsubMessage>, PubsubError>>,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<MessageId, PubsubError>>,
    },
    Peers {
        topic: Topic,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Score {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
}

impl PubsubCommand {
    /// Answers the command on a node without pubsub.
    pub(crate) fn refuse_disabled(self) {
        match self {
            PubsubCommand::Subscribe { reply, .. } => {
                let _ = reply.send(Err(PubsubError::Disabled));
            }
            PubsubCommand::Publish { reply, .. } => {
                let _ = reply.send(Err(PubsubError::Disabled));
            }
            PubsubCommand::Peers { reply, .. } => {
                let _ = reply.send(Vec::new());
            }
            PubsubCommand::Score { reply, .. } => {
                let _ = reply.send(None);
            }
        }
    }
}

/// Builds the gossipsub behaviour: signed strict mode, content-hash ids,
/// validation by the application before forwarding, peer scoring, metrics on
/// `registry`.
pub(crate) fn behaviour(
    key: &libp2p::identity::Keypair,
    config: &PubsubConfig,
    subnet_id: SubnetId,
    registry: &mut Registry,
) -> Result<gossipsub::Behaviour, String> {
    let gcfg = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::new(&MessageId::of(m.source.as_ref(), &m.topic, &m.data).0)
        })
        // Signature, topic and framing on top of the application's bytes.
        .max_transmit_size(config.max_message_bytes + 4096)
        .heartbeat_interval(config.heartbeat_interval)
        // To the mesh only, not to every connected subscriber: each message
        // reaches a node about mesh_n times instead of once per connection,
        // and every copy costs a signature check before it is deduplicated.
        .flood_publish(false)
        .protocol_id_prefix(subnet_id.protocol("meshsub"))
        .build()
        .map_err(|e| e.to_string())?;
    let mut behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gcfg)?
            .with_metrics(
                registry.sub_registry_with_prefix("gossipsub"),
                gossipsub::MetricsConfig::default(),
            );
    let params = gossipsub::PeerScoreParams {
        // Stake is the defence against many identities on one host; test
        // networks and devnets run every node on 127.0.0.1.
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    behaviour.with_peer_score(params, gossipsub::PeerScoreThresholds::default())?;
    Ok(behaviour)
}

/// Score parameters of every topic: invalid messages cost a lot and are
/// remembered for about ten minutes (one puts a peer at the gossip
/// threshold, three graylist it); quiet topics cost nothing (no
/// mesh-delivery quota, which would prune honest peers of a topic that
/// carries a message a minute); time in the mesh earns a little.
fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            600,
        )),
        ..Default::default()
    }
}

struct TopicState {
    topic: Topic,
    subscribers: Vec<(u64, mpsc::Sender<PubsubMessage>)>,
    validators: Vec<(u64, MessageValidator)>,
}

type Closed = Pin<Box<dyn std::future::Future<Output = (TopicHash, u64)> + Send>>;

/// A message waiting for its checks.
pub(crate) struct Inbound {
    pub(crate) forwarder: PeerId,
    pub(crate) id: gossipsub::MessageId,
    pub(crate) message: gossipsub::Message,
}

/// The pubsub's state in the event loop: local subscriptions, validators,
/// rate limits and counters.
pub(crate) struct PubsubState {
    local: PeerId,
    subnet_id: SubnetId,
    config: PubsubConfig,
    topics: HashMap<TopicHash, TopicState>,
    closed: FuturesUnordered<Closed>,
    next_id: u64,
    buckets: HashMap<PeerId, TokenBucket>,
    messages: Family<Vec<(&'static str, String)>, Counter>,
}

impl PubsubState {
    pub(crate) fn new(
        local: PeerId,
        subnet_id: SubnetId,
        config: PubsubConfig,
        registry: &mut Registry,
    ) -> Self {
        let messages = Family::default();
        registry.sub_registry_with_prefix("mesh_pubsub").register(
            "messages",
            "Inbound pubsub messages by outcome (delivered, not_staked, rejected, ignored, rate_limited, blocked, admission_busy, queue_full, not_subscribed)",
            messages.clone(),
        );
        Self {
            local,
            subnet_id,
            config,
            topics: HashMap::new(),
            closed: FuturesUnordered::new(),
            next_id: 0,
            buckets: HashMap::new(),
            messages,
        }
    }

    pub(crate) fn count(&self, outcome: &str) {
        self.count_n(outcome, 1);
    }

    fn count_n(&self, outcome: &str, n: u64) {
        self.messages
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc_by(n);
    }

    /// The next subscription whose stream was dropped (pending forever when none).
    pub(crate) async fn next_closed(&mut self) -> (TopicHash, u64) {
        if self.closed.is_empty() {
            return std::future::pending().await;
        }
        futures::StreamExt::select_next_some(&mut self.closed).await
    }

    pub(crate) fn on_command(&mut self, gs: &mut gossipsub::Behaviour, cmd: PubsubCommand) {
        match cmd {
            PubsubCommand::Subscribe {
                topic,
                validator,
                reply,
            } => {
                let _ = reply.send(self.subscribe(gs, topic, validator));
            }
            PubsubCommand::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(gs, &topic, data));
            }
            PubsubCommand::Peers { topic, reply } => {
                let hash = topic.wire(self.subnet_id).hash();
                let peers = gs
                    .all_peers()
                    .filter(|(_, topics)| topics.contains(&&hash))
                    .map(|(p, _)| *p)
                    .collect();
                let _ = reply.send(peers);
            }
            PubsubCommand::Score { peer, reply } => {
                let _ = reply.send(gs.peer_score(&peer));
            }
        }
    }

    fn subscribe(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        topic: Topic,
        validator: Option<MessageValidator>,
    ) -> Result<mpsc::Receiver<PubsubMessage>, PubsubError> {
        let wire = topic.wire(self.subnet_id);
        let hash = wire.hash();
        if !self.topics.contains_key(&hash) {
            gs.subscribe(&wire)
                .map_err(|e| PubsubError::Other(e.to_string()))?;
            let _ = gs.set_topic_params(wire, topic_score_params());
            tracing::debug!(%topic, "subscribed");
        }
        let state = self
            .topics
            .entry(hash.clone())
            .or_insert_with(|| TopicState {
                topic,
                subscribers: Vec::new(),
                validators: Vec::new(),
            });
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::channel(self.config.queue_len.max(1));
        let watch = tx.clone();
        self.closed.push(
            async move {
                watch.closed().await;
                (hash, id)
            }
            .boxed(),
        );
        state.subscribers.push((id, tx));
        if let Some(v) = validator {
            state.validators.push((id, v));
        }
        Ok(rx)
    }

    /// A subscription's stream was dropped: forget it, and leave the topic
    /// when it was the last.
    pub(crate) fn on_closed(&mut self, gs: &mut gossipsub::Behaviour, hash: TopicHash, id: u64) {
        let Some(state) = self.topics.get_mut(&hash) else {
            return;
        };
        state.subscribers.retain(|(i, _)| *i != id);
        state.validators.retain(|(i, _)| *i != id);
        if state.subscribers.is_empty() {
            let state = self.topics.remove(&hash).expect("present");
            gs.unsubscribe(&state.topic.wire(self.subnet_id));
            tracing::debug!(topic = %state.topic, "unsubscribed");
        }
    }

    fn publish(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        topic: &Topic,
        data: Vec<u8>,
    ) -> Result<MessageId, PubsubError> {
        if data.len() > self.config.max_message_bytes {
            return Err(PubsubError::TooLarge {
                size: data.len(),
                max: self.config.max_message_bytes,
            });
        }
        let wire = topic.wire(self.subnet_id);
        let id = MessageId::of(Some(&self.local), &wire.hash(), &data);
        match gs.publish(wire, data) {
            Ok(_) => Ok(id),
            Err(gossipsub::PublishError::Duplicate) => Err(PubsubError::Duplicate),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(PubsubError::NoPeers(topic.clone()))
            }
            Err(gossipsub::PublishError::AllQueuesFull(_)) => Err(PubsubError::QueuesFull),
            Err(gossipsub::PublishError::MessageTooLarge) => Err(PubsubError::TooLarge {
                size: 0,
                max: self.config.max_message_bytes,
            }),
            Err(e) => Err(PubsubError::Other(e.to_string())),
        }
    }

    /// Step 1 of the checks: the forwarder's rate limit. `false`: ignored.
    pub(crate) fn within_rate(&mut self, gs: &mut gossipsub::Behaviour, m: &Inbound) -> bool {
        let Some(limit) = self.config.rate_limit else {
            return true;
        };
        let now = Instant::now().into_std();
        let ok = self
            .buckets
            .entry(m.forwarder)
            .or_insert_with(|| TokenBucket::full(limit, now))
            .try_take(limit, now);
        if !ok {
            self.count("rate_limited");
            gs.report_message_validation_result(&m.id, &m.forwarder, MessageAcceptance::Ignore);
        }
        ok
    }

    /// Refuses a message for stake: rejected, the forwarder penalised.
    pub(crate) fn refuse_unstaked(&mut self, gs: &mut gossipsub::Behaviour, m: Inbound) {
        self.count("not_staked");
        tracing::debug!(author = ?m.message.source, forwarder = %m.forwarder, "pubsub message from an unstaked peer rejected");
        gs.report_message_validation_result(&m.id, &m.forwarder, MessageAcceptance::Reject);
    }

    /// Drops a message without penalty (its forwarder is blocked, the
    /// admission queue is full, or a staked forwarder relayed an unstaked author).
    pub(crate) fn ignore(&mut self, gs: &mut gossipsub::Behaviour, m: Inbound, outcome: &str) {
        self.count(outcome);
        gs.report_message_validation_result(&m.id, &m.forwarder, MessageAcceptance::Ignore);
    }

    /// Step 3: the topic's validators; then forward and deliver. Returns
    /// the verdict.
    pub(crate) fn validate_and_deliver(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        m: Inbound,
    ) -> Verdict {
        let Some(state) = self.topics.get_mut(&m.message.topic) else {
            // Unsubscribed while the message waited.
            self.count("not_subscribed");
            gs.report_message_validation_result(&m.id, &m.forwarder, MessageAcceptance::Ignore);
            return Verdict::Ignore;
        };
        let Some(author) = m.message.source else {
            self.count("rejected");
            gs.report_message_validation_result(&m.id, &m.forwarder, MessageAcceptance::Reject);
            return Verdict::Reject;
        };
        let message = PubsubMessage {
            topic: state.topic.clone(),
            author,
            forwarder: m.forwarder,
            id: MessageId::of(Some(&author), &m.message.topic, &m.message.data),
            data: m.message.data,
        };
        let mut verdict = Verdict::Accept;
        for (_, v) in &state.validators {
            match v(&message) {
                Verdict::Accept => {}
                Verdict::Ignore => verdict = Verdict::Ignore,
                Verdict::Reject => {
                    verdict = Verdict::Reject;
                    break;
                }
            }
        }
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        gs.report_message_validation_result(&m.id, &m.forwarder, acceptance);
        match verdict {
            Verdict::Accept => {}
            Verdict::Reject => {
                tracing::debug!(topic = %message.topic, %author, forwarder = %m.forwarder, "pubsub message rejected by the subnet's validator");
                self.count("rejected");
                return verdict;
            }
            Verdict::Ignore => {
                self.count("ignored");
                return verdict;
            }
        }
        let mut full = 0;
        for (_, tx) in &state.subscribers {
            if tx.try_send(message.clone()).is_err() {
                full += 1;
            }
        }
        self.count("delivered");
        if full > 0 {
            self.count_n("queue_full", full);
        }
        Verdict::Accept
    }

    /// Forget the buckets of peers that are full again.
    pub(crate) fn refresh(&mut self) {
        if let Some(limit) = self.config.rate_limit {
            let now = Instant::now().into_std();
            self.buckets.retain(|_, b| !b.is_full(limit, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(Topic::new("ledger").is_ok());
        assert!(Topic::new("market/bids.v1").is_ok());
        assert!(matches!(Topic::new(""), Err(PubsubError::BadTopic(_))));
        assert!(Topic::new("a b").is_err());
        assert!(Topic::new("x".repeat(129)).is_err());
        let t = Topic::new("ledger").unwrap();
        assert_eq!(t.wire(SubnetId::new(7)).hash().as_str(), "/mesh/7/ledger");
        assert_ne!(
            t.wire(SubnetId::new(7)).hash(),
            t.wire(SubnetId::new(8)).hash(),
            "subnets never mix"
        );
    }

    #[test]
    fn ids_hash_author_topic_and_data() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Topic::new("t").unwrap().wire(SubnetId::new(1)).hash();
        let u = Topic::new("u").unwrap().wire(SubnetId::new(1)).hash();
        let id = MessageId::of(Some(&a), &t, b"x");
        assert_eq!(id, MessageId::of(Some(&a), &t, b"x"));
        assert_ne!(id, MessageId::of(Some(&b), &t, b"x"));
        assert_ne!(id, MessageId::of(Some(&a), &u, b"x"));
        assert_ne!(id, MessageId::of(Some(&a), &t, b"y"));
    }
}
