//! Pubsub messages in the event loop: rate, stake, the subnet's validators.
use super::*;

impl EventLoop {
    // ---- pubsub ----------------------------------------------------------------

    pub(super) fn on_pubsub_event(&mut self, ev: gossipsub::Event) {
        match ev {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let m = Inbound {
                    forwarder: propagation_source,
                    id: message_id,
                    message,
                };
                let Some(gs) = self.swarm.behaviour_mut().pubsub.as_mut() else {
                    return;
                };
                if self.pubsub.within_rate(gs, &m) {
                    self.check_message(m);
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                tracing::debug!(%peer_id, %topic, "peer subscribed");
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                tracing::debug!(%peer_id, %topic, "peer unsubscribed");
            }
            gossipsub::Event::SlowPeer { peer_id, .. } => {
                tracing::debug!(%peer_id, "pubsub peer is not reading its messages in time");
            }
            gossipsub::Event::GossipsubNotSupported { .. } => {}
        }
    }

    /// The author's stake (parking the message while the oracle is asked),
    /// then the topic's validators.
    ///
    /// Validity is a property of the message, not of the path it took: a
    /// message signed by a staked author is accepted whoever relayed it.
    /// gossipsub drops every later copy of a message id it has seen, so
    /// rejecting a good message because its first copy came through an
    /// unstaked reader would let any reader censor honest messages by
    /// relaying them first. An unstaked author's message is rejected (its
    /// forwarder penalised) when the forwarder is the author or is unstaked
    /// itself, and dropped without penalty when a staked forwarder relayed
    /// it (nodes may disagree on stake for a while).
    pub(super) fn check_message(&mut self, m: Inbound) {
        let Some(gs) = self.swarm.behaviour_mut().pubsub.as_mut() else {
            return;
        };
        if self.bans.blocked_for(&m.forwarder).is_some() {
            return self.pubsub.ignore(gs, m, "blocked");
        }
        let Some(author) = m.message.source else {
            // Strict validation never lets an unsigned message through;
            // validate_and_deliver rejects it if one does.
            return self.deliver(m);
        };
        if author == self.local {
            return self.deliver(m);
        }
        // Whose stake decides: the author's; when the author is refused, the
        // forwarder's (is it to blame?).
        let peer = match self.admission.decide(author) {
            Decision::Admit => return self.deliver(m),
            Decision::Unknown => author,
            Decision::Refuse if m.forwarder == author => {
                return self.refuse_message(m);
            }
            Decision::Refuse => match self.admission.decide(m.forwarder) {
                Decision::Admit => {
                    let gs = self.swarm.behaviour_mut().pubsub.as_mut().expect("checked");
                    return self.pubsub.ignore(gs, m, "not_staked");
                }
                Decision::Refuse => return self.refuse_message(m),
                Decision::Unknown => m.forwarder,
            },
        };
        let gs = self.swarm.behaviour_mut().pubsub.as_mut().expect("checked");
        if let Err(Parked::Message(m)) = self.admission.park(peer, Parked::Message(m)) {
            self.pubsub.ignore(gs, m, "admission_busy");
        }
    }

    /// An unstaked author's message sent or relayed by an unstaked peer:
    /// rejected, the sender penalised.
    fn refuse_message(&mut self, m: Inbound) {
        let forwarder = m.forwarder;
        let gs = self.swarm.behaviour_mut().pubsub.as_mut().expect("checked");
        self.pubsub.refuse_unstaked(gs, m);
        self.misbehaved(forwarder);
    }

    /// The topic's validators, then forwarding and delivery.
    fn deliver(&mut self, m: Inbound) {
        let forwarder = m.forwarder;
        let gs = self.swarm.behaviour_mut().pubsub.as_mut().expect("checked");
        if self.pubsub.validate_and_deliver(gs, m) == Verdict::Reject {
            self.misbehaved(forwarder);
        }
    }
}
