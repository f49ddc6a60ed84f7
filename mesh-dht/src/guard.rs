//! The inbound connection guard: no single IP address and no crowd of peers
//! that are not known to be staked can take every connection slot.
//!
//! Two budgets, both checked when a connection is offered, before it costs
//! more than a socket:
//! - connections still in their handshake (TCP accepted, Noise not done),
//!   per remote IP address: a host that opens hundreds of silent or
//!   garbage-sending sockets holds at most `max_pending_per_ip` handshake
//!   slots (16 by default), and the rest stay free for everyone else;
//! - with a stake gate, established inbound connections of peers the gate
//!   has not admitted (unstaked clients, peers whose answer is not known
//!   yet), per IP address, and in two totals: peers known unstaked (reads
//!   stay open to them, so they are not refused outright) and peers whose
//!   answer is not known yet (the node asks the oracle the moment they
//!   connect). When the answer says unstaked and the unstaked budget is
//!   spent, the peer's connections are closed. Staked peers bypass both, so
//!   a crowd of free PeerIds leaves the other slots to staked nodes.
//!
//! Totals (pending and established inbound, established overall, per peer)
//! are `libp2p::connection_limits`'s, and process memory is
//! `libp2p::memory_connection_limits`'s; this behaviour only adds what those
//! cannot see (addresses and admission).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Limits on the connections other peers open to this node.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundLimits {
    /// Most established inbound connections; the rest of
    /// [`DhtConfig::max_connections`](crate::DhtConfig::max_connections)
    /// stays free for the node's own dials.
    pub max_established: u32,
    /// Most inbound connections still in their handshake.
    pub max_pending: u32,
    /// Most inbound connections in their handshake from one IP address.
    pub max_pending_per_ip: u32,
    /// Most established inbound connections from one IP address, staked
    /// peers or not (a host behind a NAT shared by many nodes needs more).
    pub max_established_per_ip: u32,
    /// With a stake gate: most established inbound connections of peers the
    /// gate refused (unstaked clients may still read). When the answer that
    /// a connected peer is unstaked arrives past this budget, its
    /// connections are closed.
    pub max_unadmitted: u32,
    /// With a stake gate: most established inbound connections of peers
    /// whose answer is not known yet (each is asked about at once).
    pub max_unknown: u32,
    /// With a stake gate: most established inbound connections of peers the
    /// gate has not admitted, from one IP address.
    pub max_unadmitted_per_ip: u32,
    /// Refuse new connections, inbound and outbound, while the process uses
    /// more memory than this (`None`: no limit).
    pub max_memory: Option<MemoryLimit>,
}

impl Default for InboundLimits {
    /// 768 established (of 1,024), 128 handshaking, 16 handshaking and 128
    /// established per IP;
    /// with a stake gate 256 unstaked, 64 not known yet, 32 of both per
    /// IP; no new connections
    /// while the process uses more than 90 % of the system's memory.
    fn default() -> Self {
        Self {
            max_established: 768,
            max_pending: 128,
            max_pending_per_ip: 16,
            max_established_per_ip: 128,
            max_unadmitted: 256,
            max_unknown: 64,
            max_unadmitted_per_ip: 32,
            max_memory: Some(MemoryLimit::FractionOfSystem(0.9)),
        }
    }
}

/// A memory ceiling past which no new connection is accepted or dialed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    /// Bytes of physical memory used by this process.
    Bytes(usize),
    /// A fraction (0 to 1) of the system's physical memory.
    FractionOfSystem(f64),
}

/// Why the guard refused a connection (carried in the swarm's
/// `ListenError::Denied`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// Too many connections in their handshake from this IP address.
    PendingPerIp(IpAddr),
    /// Too many connections of unstaked peers.
    Unadmitted,
    /// Too many connections of peers whose stake is not known yet.
    Unknown,
    /// Too many connections of peers not known staked from this IP address.
    UnadmittedPerIp(IpAddr),
    /// Too many established connections from this IP address.
    EstablishedPerIp(IpAddr),
}

impl Denied {
    /// The metric label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Denied::PendingPerIp(_) => "handshakes_per_ip",
            Denied::Unadmitted => "unadmitted",
            Denied::Unknown => "unknown",
            Denied::UnadmittedPerIp(_) => "unadmitted_per_ip",
            Denied::EstablishedPerIp(_) => "established_per_ip",
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::PendingPerIp(ip) => {
                write!(f, "too many connections in their handshake from {ip}")
            }
            Denied::Unadmitted => f.write_str("too many connections of unstaked peers"),
            Denied::Unknown => {
                f.write_str("too many connections of peers whose stake is not known yet")
            }
            Denied::UnadmittedPerIp(ip) => {
                write!(
                    f,
                    "too many connections of peers not known staked from {ip}"
                )
            }
            Denied::EstablishedPerIp(ip) => {
                write!(f, "too many established connections from {ip}")
            }
        }
    }
}

impl std::error::Error for Denied {}

/// What the guard tells the node.
#[derive(Debug)]
pub(crate) enum GuardEvent {
    /// A peer whose stake is not known connected: ask the oracle.
    Unknown(PeerId),
}

/// Most answers remembered about peers that are not connected.
const MAX_REMEMBERED: usize = 8192;

/// Most peers waiting to be reported ([`GuardEvent::Unknown`]).
const MAX_REPORTS: usize = 256;

pub(crate) struct Guard {
    limits: InboundLimits,
    /// Whether a stake gate decides admission (otherwise everyone is admitted).
    gated: bool,
    pending: HashMap<ConnectionId, IpAddr>,
    pending_per_ip: HashMap<IpAddr, u32>,
    /// Established inbound connections: peer and remote IP.
    inbound: HashMap<ConnectionId, (PeerId, Option<IpAddr>)>,
    /// Peers the gate admitted (kept as long as the node's admission keeps
    /// their answer).
    admitted: HashSet<PeerId>,
    /// Peers the gate refused (known unstaked: not reported again).
    refused: HashSet<PeerId>,
    reports: VecDeque<PeerId>,
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Guard {
    pub(crate) fn new(limits: InboundLimits, gated: bool) -> Self {
        Self {
            limits,
            gated,
            pending: HashMap::new(),
            pending_per_ip: HashMap::new(),
            inbound: HashMap::new(),
            admitted: HashSet::new(),
            refused: HashSet::new(),
            reports: VecDeque::new(),
        }
    }

    /// The gate answered about `peer`. Returns `true` when the peer is
    /// unstaked and its connections go past the unadmitted budget: the
    /// node closes them.
    pub(crate) fn set_admitted(&mut self, peer: PeerId, admitted: bool) -> bool {
        if admitted {
            self.refused.remove(&peer);
            self.admitted.insert(peer);
            return false;
        }
        self.admitted.remove(&peer);
        self.refused.insert(peer);
        self.gated
            && self.inbound.values().any(|(p, _)| *p == peer)
            && self.unadmitted(None).0 > self.limits.max_unadmitted
    }

    /// Bound what is remembered: past [`MAX_REMEMBERED`] answers, only
    /// those of peers `keep` names (the connected ones). Staked peers are
    /// otherwise remembered after they disconnect, so that they get back in
    /// during a flood.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&PeerId) -> bool) {
        if self.admitted.len() + self.refused.len() > MAX_REMEMBERED {
            self.admitted.retain(&mut keep);
            self.refused.retain(&mut keep);
        }
    }

    fn end_pending(&mut self, id: &ConnectionId) {
        if let Some(ip) = self.pending.remove(id) {
            if let Some(n) = self.pending_per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.pending_per_ip.remove(&ip);
                }
            }
        }
    }

    /// Established inbound connections of peers not admitted: known
    /// unstaked, not known yet, and those from `ip` (either).
    fn unadmitted(&self, ip: Option<IpAddr>) -> (u32, u32, u32) {
        let (mut refused, mut unknown, mut same_ip) = (0, 0, 0);
        for (p, i) in self.inbound.values() {
            if self.admitted.contains(p) {
                continue;
            }
            if self.refused.contains(p) {
                refused += 1;
            } else {
                unknown += 1;
            }
            if ip.is_some() && *i == ip {
                same_ip += 1;
            }
        }
        (refused, unknown, same_ip)
    }

    fn check_unadmitted(&mut self, peer: PeerId, ip: Option<IpAddr>) -> Result<(), Denied> {
        if !self.gated || self.admitted.contains(&peer) {
            return Ok(());
        }
        let (refused, unknown, same_ip) = self.unadmitted(ip);
        let known_unstaked = self.refused.contains(&peer);
        if known_unstaked && refused >= self.limits.max_unadmitted {
            return Err(Denied::Unadmitted);
        }
        if !known_unstaked && unknown >= self.limits.max_unknown {
            return Err(Denied::Unknown);
        }
        if let Some(ip) = ip {
            if same_ip >= self.limits.max_unadmitted_per_ip {
                return Err(Denied::UnadmittedPerIp(ip));
            }
        }
        if !known_unstaked && self.reports.len() < MAX_REPORTS {
            // Ask about it now, not when it first sends something.
            self.reports.push_back(peer);
        }
        Ok(())
    }
}

impl NetworkBehaviour for Guard {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = GuardEvent;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        let n = self.pending_per_ip.entry(ip).or_default();
        if *n >= self.limits.max_pending_per_ip {
            return Err(ConnectionDenied::new(Denied::PendingPerIp(ip)));
        }
        *n += 1;
        self.pending.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.end_pending(&id);
        let ip = ip_of(remote);
        if let Some(ip) = ip {
            let same = self
                .inbound
                .values()
                .filter(|(_, i)| *i == Some(ip))
                .count();
            if same >= self.limits.max_established_per_ip as usize {
                return Err(ConnectionDenied::new(Denied::EstablishedPerIp(ip)));
            }
        }
        self.check_unadmitted(peer, ip)
            .map_err(ConnectionDenied::new)?;
        self.inbound.insert(id, (peer, ip));
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                // Also when another behaviour refused it once established.
                self.end_pending(&connection_id);
                self.inbound.remove(&connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.inbound.remove(&connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let never: Infallible = event;
        match never {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<GuardEvent, THandlerInEvent<Self>>> {
        match self.reports.pop_front() {
            Some(peer) => Poll::Ready(ToSwarm::GenerateEvent(GuardEvent::Unknown(peer))),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn handshakes_are_capped_per_address_and_freed_when_they_end() {
        let mut g = Guard::new(
            InboundLimits {
                max_pending_per_ip: 2,
                ..InboundLimits::default()
            },
            false,
        );
        let local = addr("/ip4/127.0.0.1/tcp/1");
        let flood = addr("/ip4/10.0.0.9/tcp/5000");
        let honest = addr("/ip4/10.0.0.1/tcp/5000");
        let ids: Vec<_> = (0..3)
            .map(|_| ConnectionId::new_unchecked(rand_id()))
            .collect();
        assert!(g
            .handle_pending_inbound_connection(ids[0], &local, &flood)
            .is_ok());
        assert!(g
            .handle_pending_inbound_connection(ids[1], &local, &flood)
            .is_ok());
        let err = g
            .handle_pending_inbound_connection(ids[2], &local, &flood)
            .unwrap_err();
        assert!(why(&err).contains("10.0.0.9"), "{err}");
        // Another address is not affected.
        let other = ConnectionId::new_unchecked(rand_id());
        assert!(g
            .handle_pending_inbound_connection(other, &local, &honest)
            .is_ok());
        // A handshake that ends (failed or established) frees its slot.
        g.end_pending(&ids[0]);
        assert!(g
            .handle_pending_inbound_connection(ids[2], &local, &flood)
            .is_ok());
        // The memory transport has no address: not counted.
        let mem = addr("/memory/7");
        for _ in 0..10 {
            let id = ConnectionId::new_unchecked(rand_id());
            assert!(g
                .handle_pending_inbound_connection(id, &local, &mem)
                .is_ok());
        }
    }

    #[test]
    fn peers_not_known_staked_share_budgets_that_staked_peers_bypass() {
        let mut g = Guard::new(
            InboundLimits {
                max_unadmitted: 2,
                max_unknown: 2,
                max_unadmitted_per_ip: 3,
                ..InboundLimits::default()
            },
            true,
        );
        let local = addr("/ip4/127.0.0.1/tcp/1");
        let a = addr("/ip4/10.0.0.9/tcp/5000");
        let b = addr("/ip4/10.0.0.8/tcp/5000");
        let connect = |g: &mut Guard, peer: PeerId, remote: &Multiaddr| {
            let id = ConnectionId::new_unchecked(rand_id());
            g.handle_established_inbound_connection(id, peer, &local, remote)
                .map(|_| id)
        };
        let s: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        // Two not known yet: in, and reported so the node asks about them.
        connect(&mut g, s[0], &a).unwrap();
        connect(&mut g, s[1], &a).unwrap();
        assert_eq!(
            g.reports.iter().copied().collect::<Vec<_>>(),
            vec![s[0], s[1]]
        );
        let err = connect(&mut g, s[2], &b).unwrap_err();
        assert!(why(&err).contains("not known yet"), "{err}");
        // Answered unstaked: they move to the unstaked budget (not past it).
        assert!(!g.set_admitted(s[0], false));
        assert!(!g.set_admitted(s[1], false));
        connect(&mut g, s[2], &b).unwrap();
        // A third unstaked one goes past it: the node closes it.
        assert!(g.set_admitted(s[2], false));
        // A peer known unstaked is refused while the budget is spent.
        assert!(
            !g.set_admitted(s[3], false),
            "not connected: nothing to close"
        );
        let err = connect(&mut g, s[3], &b).unwrap_err();
        assert!(why(&err).contains("unstaked peers"), "{err}");
        // Per address: 10.0.0.9 holds two, the limit is three.
        connect(&mut g, s[4], &a).unwrap();
        let err = connect(&mut g, s[5], &a).unwrap_err();
        assert!(why(&err).contains("from 10.0.0.9"), "{err}");
        // A staked peer gets in whatever the budgets.
        let staked = PeerId::random();
        g.set_admitted(staked, true);
        connect(&mut g, staked, &a).unwrap();
        // Without a gate nobody is counted.
        let mut open = Guard::new(
            InboundLimits {
                max_unadmitted: 0,
                max_unknown: 0,
                max_unadmitted_per_ip: 0,
                ..InboundLimits::default()
            },
            false,
        );
        connect(&mut open, PeerId::random(), &a).unwrap();
    }

    fn why(err: &ConnectionDenied) -> String {
        err.downcast_ref::<Denied>()
            .expect("the guard's refusal")
            .to_string()
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1_000_000);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
