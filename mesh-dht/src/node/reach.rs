//! Reachability in the event loop: AutoNAT's verdict, relay slots, hole
//! punching, and the connections each peer is seen on (for address
//! hygiene). The rules are in `crate::reach`.
use super::*;
pub(super) use crate::reach::is_relayed as is_relayed_addr;
use crate::reach::{dialable, is_relayed, NatStatus, PeerConnection, ReachConfig, Reachability};
use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::swarm::ConnectionId;
use libp2p::{autonat, dcutr, relay};

/// How long a relay that refused or dropped a slot is left alone.
const RELAY_BACKOFF: Duration = Duration::from_secs(60);
/// Most connections tracked (more than the connection limits allow).
const MAX_TRACKED_CONNECTIONS: usize = 8192;
/// Most peers being connected to for callers at once.
const MAX_DIALING: usize = 1024;
/// Most relay-capable peers remembered.
const MAX_RELAY_CANDIDATES: usize = 64;

/// A relay slot asked for or held.
struct Slot {
    listener: ListenerId,
    circuit: Multiaddr,
    accepted: bool,
}

/// The event loop's reachability state.
pub(super) struct ReachState {
    pub(super) config: ReachConfig,
    nat: NatStatus,
    /// Initial peers: the first relays asked.
    initial: HashSet<PeerId>,
    /// Peers that offer relaying, with a direct address to reach them at.
    candidates: HashMap<PeerId, Multiaddr>,
    slots: HashMap<PeerId, Slot>,
    backoff: HashMap<PeerId, Instant>,
    /// Every open connection.
    pub(super) conns: HashMap<ConnectionId, PeerConnection>,
}

impl ReachState {
    pub(super) fn new(config: ReachConfig, initial: HashSet<PeerId>) -> Self {
        Self {
            config,
            nat: NatStatus::Unknown,
            initial,
            candidates: HashMap::new(),
            slots: HashMap::new(),
            backoff: HashMap::new(),
            conns: HashMap::new(),
        }
    }

    /// An address this node sees `peer` at (a direct one when there is).
    pub(super) fn seen_at(&self, peer: &PeerId) -> Option<&Multiaddr> {
        let mut found = None;
        for c in self.conns.values().filter(|c| c.peer == *peer) {
            if !c.relayed {
                return Some(&c.address);
            }
            found = Some(&c.address);
        }
        found
    }
}

impl EventLoop {
    /// The addresses of `peer` worth keeping, of those it or another node
    /// reported (see `crate::reach::dialable`).
    pub(super) fn dialable(&self, peer: &PeerId, reported: Vec<Multiaddr>) -> Vec<Multiaddr> {
        dialable(
            peer,
            reported,
            self.reach.seen_at(peer),
            self.reach.config.allow_private_addrs,
            self.reach.config.max_addrs_per_peer,
        )
    }

    pub(super) fn on_connection_established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        let (address, outbound) = match endpoint {
            ConnectedPoint::Dialer { address, .. } => (address.clone(), true),
            ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr.clone(), false),
        };
        let relayed = endpoint.is_relayed();
        if self.reach.conns.len() < MAX_TRACKED_CONNECTIONS {
            self.reach.conns.insert(
                id,
                PeerConnection {
                    peer,
                    address,
                    relayed,
                    outbound,
                },
            );
        }
    }

    pub(super) fn on_connection_closed(&mut self, id: ConnectionId) {
        self.reach.conns.remove(&id);
    }

    /// A peer told us (identify) what it runs: remember relays.
    pub(super) fn note_protocols(
        &mut self,
        peer: PeerId,
        protocols: &[StreamProtocol],
        addrs: &[Multiaddr],
    ) {
        if !protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.reach.candidates.remove(&peer);
            return;
        }
        let direct = addrs.iter().find(|a| !is_relayed(a)).cloned().or_else(|| {
            self.reach
                .conns
                .values()
                .find(|c| c.peer == peer && c.outbound && !c.relayed)
                .map(|c| c.address.clone())
        });
        if let Some(addr) = direct {
            if self.reach.candidates.len() < MAX_RELAY_CANDIDATES
                || self.reach.candidates.contains_key(&peer)
            {
                self.reach.candidates.insert(peer, addr);
            }
            self.maintain_relays();
        }
    }

    pub(super) fn on_autonat_event(&mut self, ev: autonat::Event) {
        let autonat::Event::StatusChanged { new, .. } = ev else {
            return;
        };
        let nat = match new {
            autonat::NatStatus::Public(addr) => NatStatus::Public(addr),
            autonat::NatStatus::Private => NatStatus::Private,
            autonat::NatStatus::Unknown => NatStatus::Unknown,
        };
        match &nat {
            NatStatus::Public(addr) => tracing::info!(%addr, "reachable at {addr}"),
            NatStatus::Private if self.reach.config.use_relay => tracing::info!(
                "not reachable from outside: using relays ({} at most)",
                self.reach.config.max_relays
            ),
            NatStatus::Private => tracing::warn!(
                "not reachable from outside, and relays are off: only nodes this one dials can reach it"
            ),
            NatStatus::Unknown => tracing::info!("reachability unknown: probing again"),
        }
        self.reach.nat = nat;
        self.set_reachability_metric();
        self.maintain_relays();
    }

    pub(super) fn on_upnp_event(&mut self, ev: libp2p::upnp::Event) {
        use libp2p::upnp::Event;
        match ev {
            // The behaviour confirms the address to the swarm itself:
            // identify announces it and AutoNAT checks it.
            Event::NewExternalAddr {
                local_addr,
                external_addr,
            } => {
                self.metrics.upnp_mappings.inc();
                tracing::info!(%external_addr, "UPnP: the gateway forwards {external_addr} to {local_addr}");
            }
            Event::ExpiredExternalAddr { external_addr, .. } => {
                self.metrics.upnp_mappings.dec();
                tracing::info!(%external_addr, "UPnP: the gateway's mapping of {external_addr} ended");
            }
            Event::GatewayNotFound => {
                tracing::warn!("UPnP: no gateway on the local network answered (is UPnP turned on in the router?)")
            }
            Event::NonRoutableGateway => tracing::warn!(
                "UPnP: the gateway's own external address is not public (a NAT behind a NAT): no ports mapped"
            ),
        }
    }

    fn set_reachability_metric(&self) {
        for label in ["public", "private", "unknown"] {
            let v = i64::from(self.reach.nat.label() == label);
            self.metrics
                .reachability
                .get_or_create(&vec![("status", label.to_string())])
                .set(v);
        }
        let held = self.reach.slots.values().filter(|s| s.accepted).count();
        self.metrics.relay_reservations.set(held as i64);
    }

    pub(super) fn on_relay_client_event(&mut self, ev: relay::client::Event) {
        match ev {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if let Some(slot) = self.reach.slots.get_mut(&relay_peer_id) {
                    slot.accepted = true;
                    if !renewal {
                        let circuit = slot.circuit.clone().with_p2p(self.local).expect("own id");
                        tracing::info!(%circuit, "not reachable from outside: using relay {relay_peer_id}, reachable at {circuit}");
                    }
                }
                self.set_reachability_metric();
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(%src_peer_id, "relayed connection in");
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                tracing::debug!(%relay_peer_id, "relayed connection out");
            }
        }
    }

    pub(super) fn on_relay_server_event(&mut self, ev: relay::Event) {
        match ev {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                tracing::debug!(%src_peer_id, "relay slot granted")
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => tracing::debug!(%src_peer_id, %dst_peer_id, "relaying a connection"),
            relay::Event::ReservationReqDenied { src_peer_id, .. }
                if !self.admission.admitted_now(&src_peer_id) =>
            {
                NodeMetrics::count(&self.metrics.refused_requests, "reason", "relay_unstaked");
                tracing::debug!(%src_peer_id, "relay slot refused: not staked");
            }
            relay::Event::ReservationReqDenied { src_peer_id, .. }
            | relay::Event::CircuitReqDenied { src_peer_id, .. } => {
                NodeMetrics::count(&self.metrics.refused_requests, "reason", "relay_limit");
                tracing::debug!(%src_peer_id, "relay request over the limits refused");
            }
            _ => {}
        }
    }

    pub(super) fn on_dcutr_event(&mut self, ev: dcutr::Event) {
        let peer = ev.remote_peer_id;
        match ev.result {
            Ok(_) => {
                NodeMetrics::count(&self.metrics.hole_punches, "result", "direct");
                tracing::info!(%peer, "direct connection after hole punching");
            }
            Err(e) => {
                NodeMetrics::count(&self.metrics.hole_punches, "result", "failed");
                tracing::debug!(%peer, "hole punching failed, staying relayed: {e}");
            }
        }
    }

    /// Whether `id` is the listener of a relay slot (asked for or held).
    pub(super) fn is_relay_slot(&self, id: ListenerId) -> bool {
        self.reach.slots.values().any(|s| s.listener == id)
    }

    /// A listener closed: if it was a relay slot, that relay is let go.
    pub(super) fn on_listener_closed(&mut self, id: ListenerId) {
        let gone: Vec<PeerId> = self
            .reach
            .slots
            .iter()
            .filter(|(_, s)| s.listener == id)
            .map(|(p, _)| *p)
            .collect();
        for relay in gone {
            self.reach.slots.remove(&relay);
            self.reach.backoff.insert(relay, Instant::now());
            tracing::info!(%relay, "relay slot lost");
        }
        if !self.reach.slots.is_empty() || self.reach.nat == NatStatus::Private {
            self.set_reachability_metric();
        }
    }

    /// Not reachable: hold slots on up to `max_relays` relays (initial
    /// peers first). Reachable: give them up.
    pub(super) fn maintain_relays(&mut self) {
        if self.client_mode || !self.reach.config.use_relay {
            return;
        }
        match self.reach.nat {
            NatStatus::Unknown => {}
            NatStatus::Public(_) => {
                for (relay, slot) in std::mem::take(&mut self.reach.slots) {
                    tracing::info!(%relay, "reachable directly: relay slot given up");
                    self.swarm.remove_listener(slot.listener);
                }
                self.set_reachability_metric();
            }
            NatStatus::Private => {
                let now = Instant::now();
                self.reach
                    .backoff
                    .retain(|_, at| now.duration_since(*at) < RELAY_BACKOFF);
                let mut picks: Vec<(PeerId, Multiaddr)> = Vec::new();
                let mut candidates: Vec<(&PeerId, &Multiaddr)> =
                    self.reach.candidates.iter().collect();
                // Initial peers first, then (auto relay) the others.
                candidates.sort_by_key(|(p, _)| (!self.reach.initial.contains(p), p.to_bytes()));
                for (peer, addr) in candidates {
                    if self.reach.slots.len() + picks.len() >= self.reach.config.max_relays {
                        break;
                    }
                    let initial = self.reach.initial.contains(peer);
                    if self.reach.slots.contains_key(peer)
                        || self.reach.backoff.contains_key(peer)
                        || (!initial && !self.reach.config.use_auto_relay)
                    {
                        continue;
                    }
                    // Beyond the initial peers, only peers the gate admits.
                    if !initial && self.admission.decide(*peer) != Decision::Admit {
                        continue;
                    }
                    picks.push((*peer, addr.clone()));
                }
                for (relay, addr) in picks {
                    let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
                    match self.swarm.listen_on(circuit.clone()) {
                        Ok(listener) => {
                            tracing::debug!(%circuit, "asking for a relay slot");
                            self.reach.slots.insert(
                                relay,
                                Slot {
                                    listener,
                                    circuit,
                                    accepted: false,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(%circuit, "cannot listen through the relay: {e}");
                            self.reach.backoff.insert(relay, now);
                        }
                    }
                }
            }
        }
    }

    pub(super) fn reachability(&self) -> Reachability {
        let relayed_at = self
            .reach
            .slots
            .values()
            .filter(|s| s.accepted)
            .map(|s| s.circuit.clone().with_p2p(self.local).expect("own id"))
            .collect();
        Reachability {
            nat: self.reach.nat.clone(),
            relayed_at,
            external: self.swarm.external_addresses().cloned().collect(),
        }
    }

    pub(super) fn connections(&self) -> Vec<PeerConnection> {
        self.reach.conns.values().cloned().collect()
    }

    /// [`Dht::connect`]: connected already, or look the peer up first.
    pub(super) fn connect(&mut self, peer: PeerId, reply: oneshot::Sender<Result<(), String>>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        if peer == self.local {
            let _ = reply.send(Err("that is this node".into()));
            return;
        }
        if self.dialing.len() >= MAX_DIALING && !self.dialing.contains_key(&peer) {
            let _ = reply.send(Err("too many connections being set up".into()));
            return;
        }
        let waiting = self.dialing.entry(peer).or_default();
        waiting.push(reply);
        if waiting.len() == 1 {
            let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            self.connects.insert(query, peer);
        }
    }

    /// The lookup of `peer` ended: dial what it found (and what the
    /// routing table knows).
    pub(super) fn dial_found(&mut self, peer: PeerId, found: Vec<Multiaddr>) {
        if self.swarm.is_connected(&peer) {
            self.connected(peer, Ok(()));
            return;
        }
        let mut addrs = dialable(
            &peer,
            found,
            None,
            true,
            self.reach.config.max_addrs_per_peer,
        );
        if let Some(known) = self.addr_book.get(&peer) {
            addrs.extend(known.iter().cloned());
        }
        if addrs.is_empty() {
            self.connected(peer, Err("no node knows an address of it".into()));
            return;
        }
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            self.connected(peer, Err(e.to_string()));
        }
    }

    /// A connection to `peer` came up, or dialing it failed: answer the
    /// callers of [`Dht::connect`] waiting on it.
    pub(super) fn connected(&mut self, peer: PeerId, result: Result<(), String>) {
        if let Some(waiting) = self.dialing.remove(&peer) {
            for reply in waiting {
                let _ = reply.send(result.clone());
            }
        }
    }
}
