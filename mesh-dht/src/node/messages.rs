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

    /// Stake of the forwarder and the author (parking the message while the
    /// oracle is asked), then the topic's validators.
    pub(super) fn check_message(&mut self, m: Inbound) {
        let Some(gs) = self.swarm.behaviour_mut().pubsub.as_mut() else {
            return;
        };
        if self.bans.blocked_for(&m.forwarder).is_some() {
            return self.pubsub.ignore(gs, m, "blocked");
        }
        let author = m.message.source;
        for peer in std::iter::once(m.forwarder).chain(author) {
            if peer == self.local {
                continue;
            }
            match self.admission.decide(peer) {
                Decision::Admit => {}
                Decision::Refuse if peer == m.forwarder => {
                    // The sender itself is unstaked: rejected and penalised.
                    let forwarder = m.forwarder;
                    self.pubsub.refuse_unstaked(gs, m);
                    return self.misbehaved(forwarder);
                }
                Decision::Refuse => {
                    // A staked forwarder relayed an author we refuse (nodes
                    // may disagree on stake for a while): dropped, and the
                    // forwarder is not penalised.
                    return self.pubsub.ignore(gs, m, "not_staked");
                }
                Decision::Unknown => {
                    if let Err(Parked::Message(m)) = self.admission.park(peer, Parked::Message(m)) {
                        self.pubsub.ignore(gs, m, "admission_busy");
                    }
                    return;
                }
            }
        }
        let forwarder = m.forwarder;
        if self.pubsub.validate_and_deliver(gs, m) == Verdict::Reject {
            self.misbehaved(forwarder);
        }
    }
}
