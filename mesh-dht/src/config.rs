//! Configuration of a DHT node.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::Multiaddr;
use prometheus_client::registry::Registry;

use crate::admission::BanPolicy;
use crate::guard::InboundLimits;
use crate::pubsub::PubsubConfig;
use crate::reach::ReachConfig;
use mesh_core::{CompositeValidator, PeerKey, RateLimit, StakeGate, StoreLimits, SubnetId};

/// Everything a node needs to start. [`DhtConfig::new`] gives sane defaults.
#[derive(Debug)]
pub struct DhtConfig {
    /// The node's identity.
    pub key: PeerKey,
    /// Subnets never mix: protocols are `/mesh/<subnet_id>/...`.
    pub subnet_id: SubnetId,
    /// Addresses to listen on (TCP, QUIC `/udp/N/quic-v1`, or `/memory/N`).
    pub listen: Vec<Multiaddr>,
    /// Addresses to tell others about instead of the listen addresses.
    pub announce: Vec<Multiaddr>,
    /// Peers to join through, each ending in `/p2p/<PeerId>`. Start-up fails
    /// when none of them answers.
    pub initial_peers: Vec<Multiaddr>,
    /// A client stores and reads but serves nothing and enters no routing table.
    pub client_mode: bool,
    /// How often to drop expired records, repair replicas (re-store what
    /// the closest live peers lack), re-check stake and log stats; the
    /// routing table's far buckets are refreshed at the same pace, but at
    /// most once every 10 s.
    pub refresh_period: Duration,
    /// How many of the closest peers hold each key.
    pub replicas: usize,
    /// Most keys the repair visits in one refresh period: every period a
    /// node offers what it holds to the `replicas` closest live peers that
    /// lack it (in key order, resuming where it stopped).
    pub repair_keys_per_period: usize,
    /// Timeout of one request to one peer.
    pub request_timeout: Duration,
    /// How long to wait for the initial peers and the join lookup.
    pub bootstrap_timeout: Duration,
    /// Limits of the local store.
    pub limits: StoreLimits,
    /// Largest protocol message accepted or sent.
    pub max_message_bytes: usize,
    /// Per-peer rate limit on inbound record requests (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Keep records in this redb file across restarts.
    pub store_path: Option<PathBuf>,
    /// Validators every record must pass. A signature validator holding
    /// `key` is always added (it merges with one already present).
    pub validator: CompositeValidator,
    /// Close connections idle this long.
    pub idle_connection_timeout: Duration,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections this node dialed (inbound ones are
    /// bounded by [`InboundLimits::max_established`]), and as many again
    /// may be dialing at once.
    pub max_outbound: u32,
    /// Limits on connections others open: in total, in their handshake,
    /// per IP address, for peers not known staked, and a memory ceiling.
    pub inbound: InboundLimits,
    /// Admit only staked peers (`None`: everyone): only peers the gate
    /// admits enter the routing table, may store records here and have their
    /// pubsub messages delivered and forwarded. Reads stay open. A peer's
    /// answer is used for one refresh period, then asked again in the
    /// background; peers in the routing table are asked again every refresh
    /// period and dropped once the gate says no.
    pub stake_gate: Option<StakeGate>,
    /// Limits of the node's pubsub.
    pub pubsub: PubsubConfig,
    /// Behind NAT: AutoNAT probes, relay slots, serving as a relay, which
    /// peer addresses to keep (see [`crate::reach`]).
    pub reach: ReachConfig,
    /// When a peer that keeps sending invalid input (records the validators
    /// refuse, malformed requests, rejected pubsub messages) is blocked
    /// (`None`: never).
    pub bans: Option<BanPolicy>,
    /// The Prometheus registry the node's metrics (libp2p's, the DHT's,
    /// gossipsub's) join. The caller owns it: it may register its own
    /// metrics beside them and serve it (the binaries serve it on
    /// `/metrics`). A fresh registry by default.
    pub registry: Arc<Mutex<Registry>>,
}

impl DhtConfig {
    /// Defaults: subnet 0, no listen address, 5 replicas, 30 s refresh.
    pub fn new(key: PeerKey) -> Self {
        Self {
            key,
            subnet_id: SubnetId::default(),
            listen: Vec::new(),
            announce: Vec::new(),
            initial_peers: Vec::new(),
            client_mode: false,
            refresh_period: Duration::from_secs(30),
            replicas: 5,
            repair_keys_per_period: 20_000,
            request_timeout: Duration::from_secs(10),
            bootstrap_timeout: Duration::from_secs(15),
            limits: StoreLimits::default(),
            max_message_bytes: 1024 * 1024,
            rate_limit: Some(RateLimit::default()),
            store_path: None,
            validator: CompositeValidator::new(),
            idle_connection_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_outbound: 256,
            inbound: InboundLimits::default(),
            stake_gate: None,
            pubsub: PubsubConfig::default(),
            reach: ReachConfig::default(),
            bans: Some(BanPolicy::default()),
            registry: Arc::new(Mutex::new(Registry::default())),
        }
    }
}
