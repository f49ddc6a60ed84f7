//! An iterative lookup over the record protocol.
//!
//! A lookup starts from the closest peers in the local routing table (and the
//! local node itself when it serves), asks up to `replicas` of them at once,
//! and adds every closer peer the answers name. It ends when the `replicas`
//! closest peers that did not fail have all answered. In a network whose
//! routing tables have converged that is one round trip.

use std::collections::{BTreeMap, HashMap};

use libp2p::kad::{KBucketDistance, KBucketKey, RecordKey};
use libp2p::{Multiaddr, PeerId};

/// State of one candidate peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerState {
    NotContacted,
    Waiting,
    Succeeded,
    Failed,
}

#[derive(Debug)]
struct Candidate {
    peer: PeerId,
    state: PeerState,
}

/// The peer set of one lookup, ordered by XOR distance to the target.
#[derive(Debug)]
pub(crate) struct PeerSet {
    target: KBucketKey<RecordKey>,
    peers: BTreeMap<KBucketDistance, Candidate>,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    replicas: usize,
    max_contacted: usize,
    contacted: usize,
}

impl PeerSet {
    pub(crate) fn new(key: &[u8], replicas: usize) -> Self {
        Self {
            target: KBucketKey::new(RecordKey::new(&key)),
            peers: BTreeMap::new(),
            addrs: HashMap::new(),
            replicas: replicas.max(1),
            // Bounds the work of one lookup however many peers answers name.
            max_contacted: replicas.max(1) * 4 + 8,
            contacted: 0,
        }
    }

    /// Adds a candidate (ignored if already known).
    pub(crate) fn add(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let d = self.target.distance(&KBucketKey::from(peer));
        self.peers.entry(d).or_insert(Candidate {
            peer,
            state: PeerState::NotContacted,
        });
        if !addrs.is_empty() {
            self.addrs.entry(peer).or_default().extend(addrs);
        }
    }

    /// Addresses learned for `peer` from other peers' answers.
    pub(crate) fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.addrs.get(peer).cloned().unwrap_or_default()
    }

    pub(crate) fn set(&mut self, peer: &PeerId, state: PeerState) {
        let d = self.target.distance(&KBucketKey::from(*peer));
        if let Some(c) = self.peers.get_mut(&d) {
            c.state = state;
        }
    }

    /// Marks and returns the peers to contact now: those not yet contacted
    /// among the `replicas` closest that have not failed.
    pub(crate) fn next(&mut self) -> Vec<PeerId> {
        let mut out = Vec::new();
        let mut live = 0;
        for c in self.peers.values_mut() {
            if live >= self.replicas {
                break;
            }
            match c.state {
                PeerState::Failed => continue,
                PeerState::Succeeded | PeerState::Waiting => live += 1,
                PeerState::NotContacted => {
                    if self.contacted >= self.max_contacted {
                        break;
                    }
                    c.state = PeerState::Waiting;
                    self.contacted += 1;
                    out.push(c.peer);
                    live += 1;
                }
            }
        }
        out
    }

    /// True while some peer has not answered yet.
    pub(crate) fn in_flight(&self) -> bool {
        self.peers.values().any(|c| c.state == PeerState::Waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_closest_and_finishes_when_they_answered() {
        let mut set = PeerSet::new(b"key", 3);
        let peers: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        for p in &peers {
            set.add(*p, vec![]);
        }
        let first = set.next();
        assert_eq!(first.len(), 3);
        // The three chosen are the three closest of the ten.
        let target = KBucketKey::new(RecordKey::new(&b"key"));
        let mut by_d: Vec<_> = peers
            .iter()
            .map(|p| (target.distance(&KBucketKey::from(*p)), *p))
            .collect();
        by_d.sort();
        let closest: Vec<PeerId> = by_d.iter().take(3).map(|x| x.1).collect();
        assert_eq!(first, closest);
        assert!(
            set.next().is_empty(),
            "nothing more while they are in flight"
        );
        // One fails: the fourth closest is contacted instead.
        set.set(&first[0], PeerState::Failed);
        assert_eq!(set.next(), vec![by_d[3].1]);
        for p in &first[1..] {
            set.set(p, PeerState::Succeeded);
        }
        set.set(&by_d[3].1, PeerState::Succeeded);
        assert!(set.next().is_empty());
        assert!(!set.in_flight());
    }
}
