//! Reachability: nodes behind NAT. What a node learns about whether others
//! can dial it (AutoNAT), the relays it holds a slot on, hole punching
//! (DCUtR), and which of a peer's addresses are worth keeping.
//!
//! The rules:
//! - A node probes its addresses with AutoNAT (peers dial it back from a
//!   fresh port). Public: it is reachable and its confirmed address is
//!   announced. Private: when [`ReachConfig::use_relay`] is on it reserves a
//!   slot on up to [`ReachConfig::max_relays`] relays (initial peers first,
//!   then, with [`ReachConfig::use_auto_relay`], peers from its routing
//!   table) and announces the circuit addresses `…/p2p/<relay>/p2p-circuit`.
//! - A connection that came through a relay is upgraded to a direct one
//!   by DCUtR (TCP simultaneous open, QUIC hole punching) when both NATs
//!   allow it; otherwise it stays relayed.
//! - Address hygiene: a peer's self-reported addresses enter the routing
//!   table only when they are of at least the scope of the connection we
//!   see it on (a peer reached over a public address contributes no
//!   loopback or private-range addresses, unless
//!   [`ReachConfig::allow_private_addrs`] says the subnet runs on a LAN),
//!   and at most [`ReachConfig::max_addrs_per_peer`] of them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Reachability settings of a node. [`ReachConfig::default`] is what a
/// server wants: probe, use relays when not reachable, serve no relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachConfig {
    /// Serve as a relay for nodes that cannot be dialed, with these limits
    /// (`None`: do not relay). Bootnodes relay by default.
    pub relay_server: Option<RelayLimits>,
    /// Probe this node's reachability with AutoNAT and answer other
    /// nodes' probes.
    pub autonat: bool,
    /// When the node is not reachable, reserve a slot on relays among its
    /// initial peers and announce the circuit addresses.
    pub use_relay: bool,
    /// Also look for relays among the peers of the routing table.
    pub use_auto_relay: bool,
    /// Most relays to hold a slot on at once.
    pub max_relays: usize,
    /// Keep private-range addresses peers report even when they are
    /// reached over a public address (a subnet on one LAN).
    pub allow_private_addrs: bool,
    /// Most addresses kept for one peer.
    pub max_addrs_per_peer: usize,
    /// Ask the local gateway (UPnP IGD) to forward this node's listening
    /// ports, and announce the public address it maps. Off by default: a
    /// gateway with UPnP opens ports without the operator's word.
    pub upnp: bool,
}

impl Default for ReachConfig {
    fn default() -> Self {
        Self {
            relay_server: None,
            autonat: true,
            use_relay: true,
            use_auto_relay: true,
            max_relays: 2,
            allow_private_addrs: false,
            max_addrs_per_peer: 8,
            upnp: false,
        }
    }
}

/// Limits of a relay server. The defaults suit RPC traffic (libp2p's own
/// default of 2 minutes and 128 KiB a circuit cuts long calls off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Most nodes holding a slot at once.
    pub max_reservations: usize,
    /// Most slots one node may hold.
    pub max_reservations_per_peer: usize,
    /// How long a slot lasts before the node renews it.
    pub reservation_duration: Duration,
    /// Most relayed connections at once.
    pub max_circuits: usize,
    /// Most relayed connections to or from one node.
    pub max_circuits_per_peer: usize,
    /// How long one relayed connection may last (it is re-opened after).
    pub max_circuit_duration: Duration,
    /// Most bytes one relayed connection may carry, both ways together.
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 256,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 128,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(3600),
            max_circuit_bytes: 1 << 30,
        }
    }
}

impl RelayLimits {
    /// libp2p's relay configuration. With `staked_only`, slots go only to
    /// peers the stake gate admits right now (a peer whose stake is not
    /// known yet is refused and asks again later); circuits to those peers
    /// may come from anyone, as their RPC authorizers decide who is served.
    pub(crate) fn to_config(
        self,
        staked_only: Option<crate::admission::AdmittedPeers>,
    ) -> libp2p::relay::Config {
        let mut config = libp2p::relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            ..Default::default()
        };
        if let Some(admitted) = staked_only {
            config.reservation_rate_limiters.insert(
                0,
                Box::new(move |peer: PeerId, _: &Multiaddr, _: std::time::Instant| {
                    admitted.contains(&peer)
                }),
            );
        }
        config
    }
}

/// Whether other nodes can dial this one, as AutoNAT found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatStatus {
    /// Not probed yet, or the probes disagree.
    Unknown,
    /// Others dialed this node back at this address.
    Public(Multiaddr),
    /// Others could not dial this node back.
    Private,
}

impl NatStatus {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            NatStatus::Unknown => "unknown",
            NatStatus::Public(_) => "public",
            NatStatus::Private => "private",
        }
    }
}

/// What a node knows about its reachability ([`crate::Dht::reachability`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// AutoNAT's verdict.
    pub nat: NatStatus,
    /// Circuit addresses of the relay slots this node holds.
    pub relayed_at: Vec<Multiaddr>,
    /// The addresses other nodes learn of it: confirmed external and
    /// announced addresses and relay circuits.
    pub external: Vec<Multiaddr>,
}

/// One open connection ([`crate::Dht::connections`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConnection {
    /// The other end.
    pub peer: PeerId,
    /// Its address as this node sees it.
    pub address: Multiaddr,
    /// It runs through a relay (`/p2p-circuit`), not directly.
    pub relayed: bool,
    /// This node opened it.
    pub outbound: bool,
}

/// How far an address is meant to be reachable from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scope {
    /// This machine only.
    Loopback,
    /// A private network (RFC 1918, shared address space, link-local, ULA).
    Private,
    /// Anywhere (public IPs, DNS names, in-memory test transports).
    Public,
}

fn scope_v4(ip: Ipv4Addr) -> Scope {
    let o = ip.octets();
    if ip.is_loopback() || ip.is_unspecified() {
        Scope::Loopback
    } else if ip.is_private() || ip.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Scope::Private
    } else {
        Scope::Public
    }
}

fn scope_v6(ip: Ipv6Addr) -> Scope {
    let first = ip.segments()[0];
    if ip.is_loopback() || ip.is_unspecified() {
        Scope::Loopback
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
        Scope::Private
    } else if let Some(v4) = ip.to_ipv4_mapped() {
        scope_v4(v4)
    } else {
        Scope::Public
    }
}

/// The scope of an address: that of its first IP (for a circuit address,
/// the relay's), public when it has none (DNS, memory).
pub(crate) fn scope(addr: &Multiaddr) -> Scope {
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) => return scope_v4(ip),
            Protocol::Ip6(ip) => return scope_v6(ip),
            _ => {}
        }
    }
    Scope::Public
}

/// Whether the address runs through a relay.
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// The addresses of `peer` worth keeping, of those it reported, when we see
/// it at `via`: not unspecified, none of a narrower scope than `via` (unless
/// `allow_private` and it is private), a circuit address only when it ends
/// in `peer`, without the trailing `/p2p/<peer>`, at most `max` of them,
/// circuit and public ones first.
pub(crate) fn dialable(
    peer: &PeerId,
    reported: impl IntoIterator<Item = Multiaddr>,
    via: Option<&Multiaddr>,
    allow_private: bool,
    max: usize,
) -> Vec<Multiaddr> {
    let floor = via.map_or(Scope::Loopback, scope);
    let mut keep: Vec<Multiaddr> = Vec::new();
    for mut addr in reported {
        if let Some(Protocol::P2p(id)) = addr.iter().last() {
            if id != *peer {
                continue;
            }
            addr.pop();
        }
        let unspecified = addr.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        });
        // A circuit address ends in `/p2p-circuit`; anything after it is
        // somebody else's.
        if unspecified || (is_relayed(&addr) && addr.iter().last() != Some(Protocol::P2pCircuit)) {
            continue;
        }
        let s = scope(&addr);
        let ok = s >= floor || (allow_private && s == Scope::Private);
        if ok && !keep.contains(&addr) {
            keep.push(addr);
        }
    }
    // Widest scope first; relayed last among equals (a direct address is
    // the better dial).
    keep.sort_by_key(|a| (std::cmp::Reverse(scope(a)), is_relayed(a)));
    keep.truncate(max);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn scopes() {
        assert_eq!(scope(&a("/ip4/127.0.0.1/tcp/1")), Scope::Loopback);
        assert_eq!(scope(&a("/ip4/10.0.1.2/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/192.168.1.2/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/100.64.0.1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/169.254.0.1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/198.51.100.1/tcp/1")), Scope::Public);
        assert_eq!(scope(&a("/ip6/::1/tcp/1")), Scope::Loopback);
        assert_eq!(scope(&a("/ip6/fd00::1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip6/fe80::1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip6/2001:db8::1/tcp/1")), Scope::Public);
        assert_eq!(scope(&a("/dns4/example.com/tcp/1")), Scope::Public);
        assert_eq!(scope(&a("/memory/5")), Scope::Public);
    }

    #[test]
    fn a_peer_seen_at_a_public_address_keeps_only_public_and_circuit_ones() {
        let peer = PeerId::random();
        let relay = PeerId::random();
        let circuit = format!("/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit");
        let reported = vec![
            a("/ip4/10.0.1.2/tcp/4001"),
            a("/ip4/127.0.0.1/tcp/4001"),
            a("/ip4/0.0.0.0/tcp/4001"),
            a(&format!("{circuit}/p2p/{peer}")),
            a("/ip4/198.51.100.11/tcp/4001"),
        ];
        let via = a("/ip4/198.51.100.11/tcp/4001");
        let kept = dialable(&peer, reported.clone(), Some(&via), false, 8);
        assert_eq!(kept, vec![a("/ip4/198.51.100.11/tcp/4001"), a(&circuit)]);
        // On a LAN the private one is kept too; loopback never from afar.
        let lan = dialable(&peer, reported.clone(), Some(&via), true, 8);
        assert!(lan.contains(&a("/ip4/10.0.1.2/tcp/4001")));
        assert!(!lan.contains(&a("/ip4/127.0.0.1/tcp/4001")));
        // Seen over loopback (one machine), everything specified is kept.
        let local = dialable(&peer, reported, Some(&a("/ip4/127.0.0.1/tcp/9")), false, 8);
        assert_eq!(local.len(), 4);
        assert_eq!(local[0], a("/ip4/198.51.100.11/tcp/4001"));
    }

    #[test]
    fn addresses_of_someone_else_and_beyond_the_cap_are_dropped() {
        let peer = PeerId::random();
        let other = PeerId::random();
        let reported = (0..20)
            .map(|i| a(&format!("/ip4/198.51.100.{i}/tcp/1")))
            .chain([
                a(&format!("/ip4/198.51.100.99/tcp/1/p2p/{other}")),
                a(&format!(
                    "/ip4/198.51.100.1/tcp/1/p2p/{other}/p2p-circuit/p2p/{other}"
                )),
            ]);
        let kept = dialable(&peer, reported, None, false, 8);
        assert_eq!(kept.len(), 8);
        assert!(kept
            .iter()
            .all(|k| !k.to_string().contains(&other.to_string())));
    }
}
