//! Prometheus metrics of a node (on the registry its caller passed in).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The node's own metrics (libp2p's are registered beside them).
pub(crate) struct NodeMetrics {
    pub(crate) libp2p: libp2p::metrics::Metrics,
    /// Inbound record-protocol requests by kind (`store`, `find`).
    pub(crate) inbound_requests: Family<Labels, Counter>,
    /// Outcome of every record offered to the local store, by result.
    pub(crate) store_results: Family<Labels, Counter>,
    /// Inbound requests refused before handling, by reason.
    pub(crate) refused_requests: Family<Labels, Counter>,
    /// Inbound connections refused, by reason.
    pub(crate) connections_denied: Family<Labels, Counter>,
    /// Peers blocked for refused input (each block counts once).
    pub(crate) peers_blocked: Counter,
    /// Peers dropped from the routing table because they could not be dialed.
    pub(crate) dead_peers_removed: Counter,
    /// Bytes of repair requests sent, by kind (`digest`, `records`).
    pub(crate) repair_bytes: Family<Labels, Counter>,
    /// Entries the repair sent to replicas that lacked them.
    pub(crate) repair_entries_sent: Counter,
    pub(crate) routing_table_peers: Gauge,
    pub(crate) stored_entries: Gauge,
    pub(crate) stored_keys: Gauge,
    /// 1 for the node's AutoNAT verdict (`public`, `private`, `unknown`), 0 for the others.
    pub(crate) reachability: Family<Labels, Gauge>,
    /// Relay slots this node holds.
    pub(crate) relay_reservations: Gauge,
    /// Hole punches (DCUtR) by result (`direct`, `failed`).
    pub(crate) hole_punches: Family<Labels, Counter>,
    /// Addresses the local gateway forwards to this node (UPnP).
    pub(crate) upnp_mappings: Gauge,
}

impl NodeMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let libp2p = libp2p::metrics::Metrics::new(registry);
        let sub = registry.sub_registry_with_prefix("mesh_dht");
        let m = Self {
            libp2p,
            inbound_requests: Family::default(),
            store_results: Family::default(),
            refused_requests: Family::default(),
            connections_denied: Family::default(),
            peers_blocked: Counter::default(),
            dead_peers_removed: Counter::default(),
            repair_bytes: Family::default(),
            repair_entries_sent: Counter::default(),
            routing_table_peers: Gauge::default(),
            stored_entries: Gauge::default(),
            stored_keys: Gauge::default(),
            reachability: Family::default(),
            relay_reservations: Gauge::default(),
            hole_punches: Family::default(),
            upnp_mappings: Gauge::default(),
        };
        sub.register(
            "inbound_requests",
            "Inbound record requests by kind",
            m.inbound_requests.clone(),
        );
        sub.register(
            "store_results",
            "Records offered to the local store, by result",
            m.store_results.clone(),
        );
        sub.register(
            "refused_requests",
            "Inbound requests refused before handling, by reason",
            m.refused_requests.clone(),
        );
        sub.register(
            "connections_denied",
            "Inbound connections refused (handshakes per IP, unadmitted budget, memory, connection limits), by reason",
            m.connections_denied.clone(),
        );
        sub.register(
            "peers_blocked",
            "Peers blocked for sending too much refused input",
            m.peers_blocked.clone(),
        );
        sub.register(
            "dead_peers_removed",
            "Peers dropped from the routing table after a dial to them failed",
            m.dead_peers_removed.clone(),
        );
        sub.register(
            "repair_bytes",
            "Bytes of repair requests sent, by kind (digest, records)",
            m.repair_bytes.clone(),
        );
        sub.register(
            "repair_entries_sent",
            "Entries the repair sent to replicas that lacked them",
            m.repair_entries_sent.clone(),
        );
        sub.register(
            "routing_table_peers",
            "Peers in the routing table",
            m.routing_table_peers.clone(),
        );
        sub.register(
            "stored_entries",
            "Entries (values and subkeys) in the local store",
            m.stored_entries.clone(),
        );
        sub.register(
            "stored_keys",
            "Keys in the local store",
            m.stored_keys.clone(),
        );
        sub.register(
            "reachability",
            "1 for the node's AutoNAT verdict (public, private, unknown), 0 for the others",
            m.reachability.clone(),
        );
        sub.register(
            "relay_reservations",
            "Relay slots this node holds (it is reachable through them)",
            m.relay_reservations.clone(),
        );
        sub.register(
            "hole_punches",
            "Relayed connections upgraded to direct ones by hole punching, by result (direct, failed)",
            m.hole_punches.clone(),
        );
        sub.register(
            "upnp_mappings",
            "Public addresses the local gateway forwards to this node (UPnP)",
            m.upnp_mappings.clone(),
        );
        m
    }

    pub(crate) fn count(family: &Family<Labels, Counter>, label: &'static str, value: &str) {
        family
            .get_or_create(&vec![(label, value.to_string())])
            .inc();
    }
}
