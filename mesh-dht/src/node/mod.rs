//! The node: the cloneable [`Dht`] handle and the event loop that owns the
//! swarm. The loop only dispatches; each concern has its own module:
//! [`start`] builds the swarm, [`startup`] waits for listeners, initial
//! peers and the join, [`records`] serves the record protocol, [`lookups`]
//! runs lookups, [`messages`] checks pubsub messages; admission and pubsub
//! state live in `crate::admission` and `crate::pubsub`.

mod ingest;
mod lookups;
mod messages;
mod reach;
mod records;
mod repair;
mod start;
mod startup;

use lookups::{merge_valid, strip};
use records::{refusal_code, MAX_RECORDS_PER_REQUEST};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::kad::{self, KBucketKey, RecordKey};
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, memory_connection_limits, noise, ping,
    relay, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use mesh_core::validator::SignatureValidator;
use mesh_core::{
    CompositeValidator, Expiration, Kind, MergeRefusal, RateLimit, Record, Refusal, StoredValue,
    SubnetId, TokenBucket,
};
use mesh_proto::dht as pb;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, AdmittedPeers, Answer, Bans, Decision};
use crate::codec::RecordCodec;
use crate::config::DhtConfig;
use crate::guard::{Guard, GuardEvent};
use crate::kad_store::KadStore;
use crate::lookup::{PeerSet, PeerState};
use crate::metrics::NodeMetrics;
use crate::persist::Persist;
use crate::pubsub::{self, Inbound, Pubsub, PubsubCommand, PubsubState, Verdict};
use crate::DhtError;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    /// Refuses new connections while the process uses too much memory.
    memory: Toggle<memory_connection_limits::Behaviour>,
    /// Per-address handshakes and the budget of peers not known staked.
    guard: Guard,
    kad: kad::Behaviour<KadStore>,
    records: request_response::Behaviour<RecordCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// Pubsub for the subnet's applications (absent when turned off).
    pubsub: Toggle<gossipsub::Behaviour>,
    /// Raw streams for protocols built on top (the RPC of `mesh-server`).
    streams: libp2p_stream::Behaviour,
    /// Relaying for nodes that cannot be dialed (when this node serves it).
    relay: Toggle<relay::Behaviour>,
    /// Slots on relays, and connections through them.
    relay_client: relay::client::Behaviour,
    /// Upgrading relayed connections to direct ones (hole punching).
    dcutr: dcutr::Behaviour,
    /// Whether others can dial this node (absent in client mode).
    autonat: Toggle<autonat::Behaviour>,
    /// Port mappings on the local gateway (UPnP IGD; when turned on).
    upnp: Toggle<libp2p::upnp::tokio::Behaviour>,
}

/// Why one replica refused a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRefusal {
    /// The refusing peer (the local node for its own store).
    pub peer: PeerId,
    /// The kind of refusal.
    pub kind: RefusalKind,
    /// The replica's explanation.
    pub reason: String,
}

/// The kinds of refusal a replica reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalKind {
    /// The expiration is already past.
    Expired,
    /// Something at least as new is stored.
    NotNewer,
    /// The value is too large.
    TooLarge,
    /// A validator refused it.
    Invalid,
    /// The publisher's quota is used up.
    QuotaExceeded,
    /// The store is full of later-expiring entries.
    StoreFull,
    /// The publisher is not staked in the subnet.
    NotStaked,
    /// The expiration is further ahead than the maximum TTL.
    TooFarAhead,
    /// A regular write over a dictionary of owners' subkeys.
    Protected,
    /// The key holds the most subkeys allowed.
    TooManySubkeys,
    /// The replica could not save it to its disk.
    NotSaved,
    /// Anything else.
    Other,
}

impl From<pb::Refusal> for RefusalKind {
    fn from(r: pb::Refusal) -> Self {
        match r {
            pb::Refusal::Expired => Self::Expired,
            pb::Refusal::NotNewer => Self::NotNewer,
            pb::Refusal::TooLarge => Self::TooLarge,
            pb::Refusal::Invalid => Self::Invalid,
            pb::Refusal::QuotaExceeded => Self::QuotaExceeded,
            pb::Refusal::StoreFull => Self::StoreFull,
            pb::Refusal::NotStaked => Self::NotStaked,
            pb::Refusal::TooFarAhead => Self::TooFarAhead,
            pb::Refusal::Protected => Self::Protected,
            pb::Refusal::TooManySubkeys => Self::TooManySubkeys,
            pb::Refusal::NotSaved => Self::NotSaved,
            pb::Refusal::Unspecified => Self::Other,
        }
    }
}

/// The outcome of [`Dht::store`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// Replicas (the local node included) that accepted the record.
    pub accepted: usize,
    /// Replicas that refused it, with their reasons.
    pub refused: Vec<RemoteRefusal>,
    /// Peers that could not be asked (unreachable, timed out, rate limited).
    pub unreachable: Vec<(PeerId, String)>,
}

/// A snapshot of a node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtStats {
    /// Peers in the routing table.
    pub routing_table_size: usize,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Keys in the local store.
    pub stored_keys: usize,
    /// Entries (values and subkeys) in the local store.
    pub stored_entries: usize,
    /// Bytes of repair requests (digests and records) sent so far.
    pub repair_bytes_sent: u64,
    /// Entries sent to other replicas by the repair so far.
    pub repair_entries_sent: u64,
}

pub(crate) enum Command {
    /// Tests: make the store file's writes fail, or work again.
    #[cfg(test)]
    FailWrites {
        on: bool,
        reply: oneshot::Sender<()>,
    },
    Store {
        record: Record,
        reply: oneshot::Sender<StoreReport>,
    },
    Get {
        key: Vec<u8>,
        latest: bool,
        reply: oneshot::Sender<Option<StoredValue>>,
    },
    Local {
        key: Vec<u8>,
        reply: oneshot::Sender<Option<StoredValue>>,
    },
    Stats(oneshot::Sender<DhtStats>),
    Admitted {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    RoutingTable(oneshot::Sender<Vec<PeerId>>),
    /// Every address the routing table holds, by peer.
    RoutingAddrs(oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>),
    Reachability(oneshot::Sender<crate::reach::Reachability>),
    Connect {
        peer: PeerId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Connections(oneshot::Sender<Vec<crate::reach::PeerConnection>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Pubsub(PubsubCommand),
}

struct Inner {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    streams: libp2p_stream::Control,
    validator: Arc<CompositeValidator>,
    registry: Arc<Mutex<Registry>>,
    subnet_id: SubnetId,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to a running DHT node. Cheap to clone; the node stops when every
/// handle is dropped or [`shutdown`](Self::shutdown) is called.
#[derive(Clone)]
pub struct Dht {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dht")
            .field("peer_id", &self.inner.peer_id)
            .finish()
    }
}

impl Dht {
    /// Open and accept raw libp2p streams on this node's swarm, for
    /// protocols built on top of the DHT (e.g. `mesh-server`'s RPC). Streams
    /// share the node's connections, identity and transports.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.inner.streams.clone()
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The subnet this node is in ([`DhtConfig::subnet_id`]).
    pub fn subnet_id(&self) -> SubnetId {
        self.inner.subnet_id
    }

    /// The validators this node applies (to sign or check records yourself).
    pub fn validator(&self) -> &CompositeValidator {
        &self.inner.validator
    }

    /// The Prometheus registry holding libp2p's and the node's metrics: the
    /// one passed in [`DhtConfig::registry`].
    pub fn registry(&self) -> Arc<Mutex<Registry>> {
        self.inner.registry.clone()
    }

    /// The node's pubsub: signed, stake-gated topics of this subnet.
    pub fn pubsub(&self) -> Pubsub {
        Pubsub::new(self.clone())
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Stores `value` under `key` (and `subkey`, for one entry of a
    /// dictionary) until `expiration`, on the closest replicas.
    ///
    /// The record is signed by the node's validators first (when its key or
    /// subkey carries this node's owner marker) and checked locally: a record
    /// our own validators refuse is an error and is never sent. Refusals by
    /// replicas (older than what they hold, expired, over quota, …) come back
    /// in the report with their reasons.
    pub async fn store(
        &self,
        key: Vec<u8>,
        subkey: Option<Vec<u8>>,
        value: Vec<u8>,
        expiration: Expiration,
    ) -> Result<StoreReport, DhtError> {
        self.store_record(Record {
            key,
            subkey,
            value,
            expiration,
        })
        .await
    }

    /// [`store`](Self::store) taking a whole [`Record`].
    pub async fn store_record(&self, record: Record) -> Result<StoreReport, DhtError> {
        let record = self.inner.validator.sign(record);
        self.inner.validator.validate(&record, Kind::Put)?;
        self.ask(|reply| Command::Store { record, reply }).await
    }

    /// Reads `key`: the newest valid value found, with validators' additions
    /// (signatures) stripped. Without `latest` the first valid answer wins
    /// (the local store first); with `latest` every closest replica is asked
    /// and dictionaries are merged subkey by subkey.
    pub async fn get(&self, key: Vec<u8>, latest: bool) -> Result<Option<StoredValue>, DhtError> {
        self.ask(|reply| Command::Get { key, latest, reply }).await
    }

    /// What this node itself holds under `key` (no lookup; validators'
    /// additions stripped): to see where a record lives.
    pub async fn local(&self, key: Vec<u8>) -> Result<Option<StoredValue>, DhtError> {
        self.ask(|reply| Command::Local { key, reply }).await
    }

    /// Whether this node's admission policy admits `peer`: with a stake
    /// gate, whether it is staked (asking the oracle and waiting for its
    /// answer when the peer is not known yet); without one, always. Readers
    /// of records that anyone staked may write on others' behalf (the
    /// heartbeats' owners) filter with it.
    pub async fn is_admitted(&self, peer: PeerId) -> Result<bool, DhtError> {
        self.ask(|reply| Command::Admitted { peer, reply }).await
    }

    /// A snapshot of the node's routing table and store sizes.
    pub async fn stats(&self) -> Result<DhtStats, DhtError> {
        self.ask(Command::Stats).await
    }

    /// Every address the routing table holds, by peer.
    pub async fn routing_addresses(&self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, DhtError> {
        self.ask(Command::RoutingAddrs).await
    }

    /// Whether other nodes can dial this one, the relay slots it holds and
    /// the addresses others learn of it.
    pub async fn reachability(&self) -> Result<crate::reach::Reachability, DhtError> {
        self.ask(Command::Reachability).await
    }

    /// Makes sure this node has a connection to `peer`: at once when it has
    /// one; otherwise it looks the peer up (its addresses, relay circuits
    /// included, come from the nodes closest to it) and dials it. A node
    /// behind NAT is reached through its relay, and the connection is then
    /// upgraded to a direct one by hole punching where the NATs allow.
    pub async fn connect(&self, peer: PeerId) -> Result<(), DhtError> {
        self.ask(|reply| Command::Connect { peer, reply })
            .await?
            .map_err(|reason| DhtError::Unreachable { peer, reason })
    }

    /// The node's open connections, direct or through a relay.
    pub async fn connections(&self) -> Result<Vec<crate::reach::PeerConnection>, DhtError> {
        self.ask(Command::Connections).await
    }

    /// The peers in this node's routing table.
    pub async fn routing_table(&self) -> Result<Vec<PeerId>, DhtError> {
        self.ask(Command::RoutingTable).await
    }

    /// The addresses others can dial, each ending in `/p2p/<PeerId>`.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, DhtError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Stops the node without waiting: its event loop ends, its connections
    /// close, and every handle's calls fail with [`DhtError::Stopped`].
    pub fn close(&self) {
        self.inner.cancel.cancel();
    }

    /// Stops the node and waits for its event loop to finish.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let task = self.inner.task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct Startup {
    listeners: HashSet<libp2p::core::transport::ListenerId>,
    pending_initial: HashMap<PeerId, Multiaddr>,
    failed_initial: Vec<(Multiaddr, String)>,
    connected: bool,
    needs_join: bool,
    /// With a stake gate: no routing entry exists before the oracle's first
    /// answer, so the join waits for it.
    awaiting_verdict: bool,
    /// The join lookup in flight.
    join: Option<kad::QueryId>,
    deadline: Instant,
    timeout: Duration,
    ready: oneshot::Sender<Result<(), DhtError>>,
}

enum Op {
    Store(Record),
    Find { latest: bool },
}

enum Reply {
    Store(oneshot::Sender<StoreReport>),
    Find(oneshot::Sender<Option<StoredValue>>),
}

struct Lookup {
    key: Vec<u8>,
    peers: PeerSet,
    op: Op,
    report: StoreReport,
    found: Option<StoredValue>,
    reply: Reply,
    /// Peers whose dictionary is being read page by page: the last subkey
    /// asked after, and how many pages came so far.
    pages: HashMap<PeerId, (Vec<u8>, u32)>,
}

impl Lookup {
    fn request(&self) -> pb::Request {
        let kind = match &self.op {
            Op::Store(r) => pb::request::Kind::Store(pb::StoreRequest {
                records: vec![r.clone().into()],
                publishers: Vec::new(),
            }),
            Op::Find { .. } => pb::request::Kind::Find(pb::FindRequest {
                key: self.key.clone(),
                after: None,
            }),
        };
        pb::Request { kind: Some(kind) }
    }
}

/// Work waiting for the stake oracle's answer about a peer.
enum Parked {
    Store {
        peer: PeerId,
        store: pb::StoreRequest,
        channel: ResponseChannel<pb::Response>,
    },
    Message(Inbound),
    /// A caller waiting for the verdict ([`Dht::is_admitted`]).
    Verdict(oneshot::Sender<bool>),
}

/// The routing table's far buckets are refreshed (kad's bootstrap) at most
/// this often, however short the refresh period: with a period of a second
/// (for a fast repair) every node's bootstrap each second floods kad.
const MIN_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(10);

/// How long a peer that could not be dialed stays out of lookups.
const DEAD_PEER_MEMORY: Duration = Duration::from_secs(60);

/// Unanswered requests or pings in a row after which a connected peer is
/// treated as dead.
const STRIKES_TO_REMOVE: u8 = 2;
/// Most peers remembered as unreachable (the oldest are forgotten first).
const MAX_UNREACHABLE: usize = 4096;

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    local: PeerId,
    client_mode: bool,
    kad_protocol: StreamProtocol,
    validator: Arc<CompositeValidator>,
    replicas: usize,
    refresh_period: Duration,
    max_message_bytes: usize,
    repair_keys_per_period: usize,
    repair: repair::Repair,
    rate_limit: Option<RateLimit>,
    buckets: HashMap<PeerId, TokenBucket>,
    pubsub: PubsubState,
    addr_book: HashMap<PeerId, Vec<Multiaddr>>,
    /// Snapshot of the routing table, rebuilt after kad reports a change:
    /// kad's own closest-peer iterator copies whole buckets on every call.
    routing: Option<Vec<KBucketKey<PeerId>>>,
    listen_addrs: Vec<Multiaddr>,
    lookups: HashMap<u64, Lookup>,
    requests: HashMap<OutboundRequestId, (u64, PeerId)>,
    next_lookup: u64,
    metrics: NodeMetrics,
    startup: Option<Startup>,
    admission: Admission<Parked>,
    bans: Bans,
    /// Addresses of peers waiting for the oracle before entering the table.
    awaiting: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers a dial could not reach, and when: left out of lookups for
    /// [`DEAD_PEER_MEMORY`] even when other nodes still name them.
    unreachable: HashMap<PeerId, std::time::Instant>,
    /// Requests and pings in a row a connected peer left unanswered.
    strikes: HashMap<PeerId, u8>,
    /// Peers redialed from a fresh port after a port collision (once each
    /// until they connect).
    redialed: HashSet<PeerId>,
    /// When kad's bootstrap last ran.
    last_bootstrap: Option<Instant>,
    /// The initial peers: PeerId, address without and with `/p2p/`.
    initial: Vec<(PeerId, Multiaddr, Multiaddr)>,
    /// Inbound records on their way through validation and the writer.
    ingest: ingest::Ingest,
    /// The routing table was empty and the initial peers were asked again:
    /// the first peer to enter it starts a join.
    rejoining: bool,
    /// Reachability: NAT verdict, relay slots, connections.
    reach: reach::ReachState,
    /// Lookups of peers to connect to ([`Dht::connect`]).
    connects: HashMap<kad::QueryId, PeerId>,
    /// Callers waiting for a connection to a peer.
    dialing: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
}

impl EventLoop {
    async fn run(mut self) {
        let mut refresh =
            tokio::time::interval_at(Instant::now() + self.refresh_period, self.refresh_period);
        loop {
            let deadline = self.startup.as_ref().map(|s| s.deadline);
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv(), if self.startup.is_none() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                answer = self.admission.answer() => self.on_answer(answer),
                Some(v) = self.ingest.validated.recv() => self.on_validated(v),
                Some(w) = self.ingest.written.recv() => self.on_written(w),
                (topic, id) = self.pubsub.next_closed() => {
                    if let Some(gs) = self.swarm.behaviour_mut().pubsub.as_mut() {
                        self.pubsub.on_closed(gs, topic, id);
                    }
                }
                _ = refresh.tick() => self.refresh(),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.startup_timed_out();
                }
                _ = self.cancel.cancelled() => break,
            }
        }
        // The KadStore's handle on the file goes with the swarm; the writer's
        // goes here, so the file is free once the node has stopped.
        self.ingest.close().await;
        tracing::info!(peer_id = %self.local, "DHT node stopped");
    }

    // ---- swarm events ---------------------------------------------------

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.libp2p.record(&event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => {
                self.metrics.libp2p.record(&ev);
                self.on_kad_event(ev);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Records(ev)) => self.on_records_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(ev)) => {
                self.metrics.libp2p.record(&ev);
                if let identify::Event::Received { peer_id, info, .. } = ev {
                    // Only addresses worth dialing enter the routing table.
                    let addrs = self.dialable(&peer_id, info.listen_addrs);
                    self.note_protocols(peer_id, &info.protocols, &addrs);
                    if info.protocols.contains(&self.kad_protocol) {
                        match self.admission.decide(peer_id) {
                            Decision::Admit => {
                                for addr in addrs {
                                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                                }
                            }
                            Decision::Unknown => {
                                let waiting = self.awaiting.entry(peer_id).or_default();
                                waiting.clear();
                                waiting.extend(addrs);
                            }
                            Decision::Refuse => {}
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ev)) => {
                self.metrics.libp2p.record(&ev);
                match &ev.result {
                    Ok(_) => self.answered(ev.peer),
                    Err(e) => self.no_answer(ev.peer, &format!("ping: {e}")),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Pubsub(ev)) => {
                self.metrics.libp2p.record(&ev);
                self.on_pubsub_event(ev);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(ev)) => self.on_autonat_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(ev)) => self.on_upnp_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(ev)) => {
                self.on_relay_client_event(ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(ev)) => {
                self.metrics.libp2p.record(&ev);
                self.on_relay_server_event(ev);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(ev)) => {
                self.metrics.libp2p.record(&ev);
                self.on_dcutr_event(ev);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::debug!(%address, "external address confirmed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Limits(v)) => match v {},
            SwarmEvent::Behaviour(BehaviourEvent::Memory(v)) => match v {},
            SwarmEvent::Behaviour(BehaviourEvent::Guard(GuardEvent::Unknown(peer))) => {
                // A peer whose stake is not known connected: ask now (the
                // answer comes to on_answer), or pass on a known one.
                match self.admission.decide(peer) {
                    Decision::Admit => self.guard_verdict(peer, true),
                    Decision::Refuse => self.guard_verdict(peer, false),
                    Decision::Unknown => {}
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error: libp2p::swarm::ListenError::Denied { cause },
                ..
            } => {
                let guard = cause.downcast_ref::<crate::guard::Denied>();
                let reason = if let Some(d) = guard {
                    d.reason()
                } else if cause
                    .downcast_ref::<memory_connection_limits::MemoryUsageLimitExceeded>()
                    .is_some()
                {
                    "memory"
                } else if cause
                    .downcast_ref::<connection_limits::Exceeded>()
                    .is_some()
                {
                    "connection_limits"
                } else {
                    "other"
                };
                NodeMetrics::count(&self.metrics.connections_denied, "reason", reason);
                match guard {
                    Some(d) => {
                        tracing::debug!(%send_back_addr, reason, "inbound connection refused: {d}")
                    }
                    None => {
                        tracing::debug!(%send_back_addr, reason, "inbound connection refused: {cause:?}")
                    }
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let full = address.with_p2p(self.local).expect("our own PeerId");
                tracing::info!(%full, "listening");
                self.listen_addrs.push(full);
                if let Some(s) = &mut self.startup {
                    s.listeners.remove(&listener_id);
                }
                self.check_ready();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with_p2p(self.local).expect("our own PeerId");
                self.listen_addrs.retain(|a| *a != full);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                if let Err(e) = reason {
                    if self.is_relay_slot(listener_id)
                        || addresses.iter().any(reach::is_relayed_addr)
                    {
                        tracing::warn!(?addresses, "relay slot refused or closed by the relay (with a stake gate, relays give slots to staked nodes only): {e}");
                    } else {
                        tracing::error!(?addresses, "listener closed: {e}");
                    }
                }
                self.on_listener_closed(listener_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.on_connection_established(peer_id, connection_id, &endpoint);
                self.unreachable.remove(&peer_id);
                self.redialed.remove(&peer_id);
                self.connected(peer_id, Ok(()));
                if let Some(s) = &mut self.startup {
                    if s.pending_initial.remove(&peer_id).is_some() {
                        s.connected = true;
                        tracing::info!(%peer_id, "connected to initial peer");
                    }
                }
                self.check_ready();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.on_connection_closed(connection_id);
                if num_established == 0 {
                    // What the repair knew it held may be gone with it.
                    self.repair.forget(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if self.redial_from_new_port(peer, &error) => {}
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                // Every address failed at the transport, or someone else
                // answered: the peer is gone (a dial refused by our own
                // connection limits says nothing about it).
                if matches!(
                    error,
                    libp2p::swarm::DialError::Transport(_)
                        | libp2p::swarm::DialError::WrongPeerId { .. }
                ) {
                    self.peer_unreachable(peer);
                }
                if !self.connects.values().any(|p| *p == peer) {
                    self.connected(peer, Err(error.to_string()));
                }
                if let Some(s) = &mut self.startup {
                    if let Some(addr) = s.pending_initial.remove(&peer) {
                        tracing::warn!(%addr, "initial peer did not answer: {error}");
                        s.failed_initial.push((addr, error.to_string()));
                    }
                }
                self.check_ready();
            }
            _ => {}
        }
    }

    /// A TCP dial from the listening port (kept for hole punching) can
    /// collide with an earlier connection between the same two ports still
    /// in TIME_WAIT ("Address already in use"): such a dial is tried once
    /// more from a fresh port instead of counting the peer unreachable.
    /// Returns whether it redialed.
    fn redial_from_new_port(&mut self, peer: PeerId, error: &libp2p::swarm::DialError) -> bool {
        let libp2p::swarm::DialError::Transport(failed) = error else {
            return false;
        };
        // The io error sits somewhere down the transport's error chain.
        fn addr_in_use(e: &(dyn std::error::Error + 'static)) -> bool {
            let mut cur = Some(e);
            while let Some(err) = cur {
                let io = err.downcast_ref::<std::io::Error>();
                if io.is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
                    || err.to_string().contains("os error 98")
                {
                    return true;
                }
                cur = err.source();
            }
            false
        }
        let in_use: Vec<Multiaddr> = failed
            .iter()
            .filter(|(_, e)| addr_in_use(e))
            .map(|(a, _)| a.clone())
            .collect();
        if in_use.is_empty() {
            return false;
        }
        if self.redialed.len() >= 1024 {
            self.redialed.clear();
        }
        if !self.redialed.insert(peer) {
            return false;
        }
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(in_use)
            .allocate_new_port()
            .build();
        tracing::debug!(%peer, "dial from the listening port collided; dialing from a fresh port");
        self.swarm.dial(opts).is_ok()
    }

    /// `peer` answered: its strikes are forgiven.
    pub(super) fn answered(&mut self, peer: PeerId) {
        self.strikes.remove(&peer);
    }

    /// A connected `peer` left a request or a ping unanswered (a frozen or
    /// overloaded process keeps its connections open). After
    /// [`STRIKES_TO_REMOVE`] in a row it is treated as dead: out of the
    /// routing table and of lookups, and disconnected, so that if it
    /// recovers it comes back through a fresh connection and identify.
    pub(super) fn no_answer(&mut self, peer: PeerId, why: &str) {
        let strikes = self.strikes.entry(peer).or_insert(0);
        *strikes += 1;
        if *strikes < STRIKES_TO_REMOVE {
            return;
        }
        self.strikes.remove(&peer);
        tracing::info!(%peer, "not answering ({why}): removed from the routing table and disconnected");
        self.peer_unreachable(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// A dial to `peer` failed: it leaves the routing table now, and
    /// lookups skip it for [`DEAD_PEER_MEMORY`] even when other nodes still
    /// name it, so they stop waiting on it (kad alone keeps a dead peer
    /// until its bucket overflows). It comes back when it connects again.
    fn peer_unreachable(&mut self, peer: PeerId) {
        let now = std::time::Instant::now();
        if self.unreachable.len() >= MAX_UNREACHABLE {
            self.unreachable
                .retain(|_, at| now.duration_since(*at) < DEAD_PEER_MEMORY);
            if self.unreachable.len() >= MAX_UNREACHABLE {
                self.unreachable.clear();
            }
        }
        self.unreachable.insert(peer, now);
        self.repair.forget(&peer);
        if self.swarm.behaviour_mut().kad.remove_peer(&peer).is_some() {
            self.routing = None;
            self.metrics.dead_peers_removed.inc();
            tracing::debug!(%peer, "unreachable: removed from the routing table");
        }
    }

    fn on_kad_event(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::RoutingUpdated {
                peer,
                addresses,
                old_peer,
                is_new_peer,
                ..
            } => {
                self.routing = None;
                if is_new_peer && std::mem::take(&mut self.rejoining) {
                    tracing::info!(%peer, "routing table no longer empty: joining again");
                    self.last_bootstrap = Some(Instant::now());
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                self.addr_book
                    .insert(peer, addresses.iter().cloned().collect());
                if let Some(old) = old_peer {
                    self.addr_book.remove(&old);
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            } if step.last && self.connects.contains_key(&id) => {
                let peer = self.connects.remove(&id).expect("checked");
                let found = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                let addrs = found
                    .into_iter()
                    .filter(|p| p.peer_id == peer)
                    .flat_map(|p| p.addrs)
                    .collect();
                self.dial_found(peer, addrs);
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::Bootstrap(_) | kad::QueryResult::GetClosestPeers(_),
                step,
                ..
            } if step.last => {
                if let Some(s) = &mut self.startup {
                    if s.join == Some(id) {
                        s.join = None;
                    }
                }
                self.check_ready();
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                // A record written through kad's own PUT_VALUE: same rules.
                if self.bans.blocked_for(&source).is_some() {
                    NodeMetrics::count(&self.metrics.refused_requests, "reason", "blocked");
                    return;
                }
                if self.rate_limited(source) {
                    NodeMetrics::count(&self.metrics.refused_requests, "reason", "rate_limited");
                    tracing::debug!(%source, "kad PUT_VALUE over the rate limit refused");
                    return;
                }
                if self.admission.decide(source) != Decision::Admit {
                    NodeMetrics::count(&self.metrics.refused_requests, "reason", "not_staked");
                    tracing::debug!(%source, "kad PUT_VALUE from a peer not known staked refused");
                    return;
                }
                let decoded = prost::Message::decode(record.value.as_slice())
                    .ok()
                    .and_then(|v: pb::StoredValue| StoredValue::try_from(v).ok());
                match decoded {
                    Some(value) if value.len() > MAX_RECORDS_PER_REQUEST => {
                        // As many entries as one record-protocol store, no more.
                        NodeMetrics::count(
                            &self.metrics.refused_requests,
                            "reason",
                            "too_many_records",
                        );
                        tracing::debug!(%source, entries = value.len(), "kad PUT_VALUE with too many entries refused");
                        self.misbehaved(source);
                    }
                    Some(value) => {
                        // Through the same pipeline as the record protocol
                        // (kad answers the sender itself; nothing waits here).
                        let records = value
                            .into_records(record.key.to_vec())
                            .into_iter()
                            .map(|r| (r, source))
                            .collect();
                        self.ingest(source, records, None);
                    }
                    None => {
                        NodeMetrics::count(&self.metrics.refused_requests, "reason", "malformed");
                        tracing::debug!(%source, "kad PUT_VALUE with a malformed value refused");
                        self.misbehaved(source);
                    }
                }
            }
            kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { .. },
            } => {
                // mesh keeps no provider records: refused, never stored.
                NodeMetrics::count(&self.metrics.refused_requests, "reason", "provider_record");
            }
            _ => {}
        }
    }

    /// Tell the connection guard the gate's answer about `peer`; close the
    /// connections of an unstaked peer past the unstaked budget.
    fn guard_verdict(&mut self, peer: PeerId, admitted: bool) {
        if self
            .swarm
            .behaviour_mut()
            .guard
            .set_admitted(peer, admitted)
        {
            NodeMetrics::count(&self.metrics.connections_denied, "reason", "unadmitted");
            tracing::debug!(%peer, "unstaked, past the budget of unstaked connections: disconnected");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// The oracle answered about a peer: update the routing table and run
    /// the work that waited for it.
    fn on_answer(&mut self, answer: Answer) {
        let peer = answer.peer;
        let (admitted, parked) = self.admission.record(&answer);
        self.guard_verdict(peer, admitted);
        if let Some(s) = &mut self.startup {
            s.awaiting_verdict = false;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        if admitted {
            if let Some(addrs) = self.awaiting.remove(&peer) {
                for addr in addrs {
                    kad.add_address(&peer, addr);
                }
                tracing::debug!(%peer, "staked: admitted to the routing table");
            }
        } else {
            self.awaiting.remove(&peer);
            if kad.remove_peer(&peer).is_some() {
                self.routing = None;
                self.addr_book.remove(&peer);
                tracing::info!(%peer, "no longer staked: dropped from the routing table");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
        for work in parked {
            match work {
                Parked::Store {
                    peer,
                    store,
                    channel,
                } => self.on_store(peer, store, channel),
                Parked::Message(m) => self.check_message(m),
                Parked::Verdict(reply) => {
                    let _ = reply.send(admitted);
                }
            }
        }
        self.check_ready();
    }

    // ---- commands -----------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Store { record, reply } => {
                let key = record.key.clone();
                self.start_lookup(key, Op::Store(record), Reply::Store(reply));
            }
            Command::Get { key, latest, reply } => {
                if !latest {
                    let local = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .get(&key, Expiration::now());
                    if let Some(v) = local {
                        let mut found = None;
                        merge_valid(&self.validator, &mut found, &key, v);
                        if let Some(v) = found {
                            let _ = reply.send(Some(strip(&self.validator, &key, v)));
                            return;
                        }
                    }
                }
                self.start_lookup(key, Op::Find { latest }, Reply::Find(reply));
            }
            Command::Local { key, reply } => {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let value = store
                    .get(&key, Expiration::now())
                    .map(|v| strip(&self.validator, &key, v));
                let _ = reply.send(value);
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            #[cfg(test)]
            Command::FailWrites { on, reply } => {
                if let Some(p) = self.swarm.behaviour_mut().kad.store_mut().persist() {
                    p.fail_writes.store(on, std::sync::atomic::Ordering::SeqCst);
                }
                let _ = reply.send(());
            }
            Command::Admitted { peer, reply } => match self.admission.decide(peer) {
                Decision::Admit => {
                    let _ = reply.send(true);
                }
                Decision::Refuse => {
                    let _ = reply.send(false);
                }
                Decision::Unknown => {
                    if let Err(Parked::Verdict(reply)) =
                        self.admission.park(peer, Parked::Verdict(reply))
                    {
                        // Too much waits on the oracle: not known staked.
                        let _ = reply.send(false);
                    }
                }
            },
            Command::RoutingTable(reply) => {
                let _ = reply.send(self.routing_table());
            }
            Command::RoutingAddrs(reply) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let table = kad
                    .kbuckets()
                    .flat_map(|b| {
                        b.iter()
                            .map(|e| {
                                (
                                    *e.node.key.preimage(),
                                    e.node.value.iter().cloned().collect(),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let _ = reply.send(table);
            }
            Command::Reachability(reply) => {
                let _ = reply.send(self.reachability());
            }
            Command::Connect { peer, reply } => self.connect(peer, reply),
            Command::Connections(reply) => {
                let _ = reply.send(self.connections());
            }
            Command::Pubsub(cmd) => match self.swarm.behaviour_mut().pubsub.as_mut() {
                Some(gs) => self.pubsub.on_command(gs, cmd),
                None => cmd.refuse_disabled(),
            },
            Command::ListenAddrs(reply) => {
                let mut addrs: Vec<Multiaddr> = self
                    .swarm
                    .external_addresses()
                    .map(|a| a.clone().with_p2p(self.local).expect("own id"))
                    .collect();
                addrs.extend(self.listen_addrs.iter().cloned());
                addrs.dedup();
                let _ = reply.send(addrs);
            }
        }
    }

    /// The routing table, from the snapshot. kad removes an entry only
    /// through `remove_peer`/`remove_address` (never called here) or by an
    /// eviction it reports as `RoutingUpdated`, which drops the snapshot.
    fn routing_snapshot(&mut self) -> &[KBucketKey<PeerId>] {
        let kad = &mut self.swarm.behaviour_mut().kad;
        self.routing.get_or_insert_with(|| {
            kad.kbuckets()
                .flat_map(|b| b.iter().map(|e| *e.node.key).collect::<Vec<_>>())
                .collect()
        })
    }

    fn routing_table(&mut self) -> Vec<PeerId> {
        self.routing_snapshot()
            .iter()
            .map(|k| *k.preimage())
            .collect()
    }

    fn stats(&mut self) -> DhtStats {
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let (stored_keys, stored_entries) = (store.store().key_count(), store.store().len());
        let repair_bytes_sent = ["digest", "records"]
            .iter()
            .map(|k| {
                self.metrics
                    .repair_bytes
                    .get_or_create(&vec![("kind", k.to_string())])
                    .get()
            })
            .sum();
        DhtStats {
            routing_table_size: self.routing_table().len(),
            connected_peers: self.swarm.connected_peers().count(),
            stored_keys,
            stored_entries,
            repair_bytes_sent,
            repair_entries_sent: self.metrics.repair_entries_sent.get(),
        }
    }

    fn refresh(&mut self) {
        let expired = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .remove_expired(Expiration::now());
        self.persist_later(expired);
        if let Some(limit) = self.rate_limit {
            // Forget peers whose bucket has refilled.
            let now = Instant::now().into_std();
            self.buckets.retain(|_, b| !b.is_full(limit, now));
        }
        self.pubsub.refresh();
        self.bans.forget_idle();
        {
            let swarm = &self.swarm;
            self.strikes.retain(|p, _| swarm.is_connected(p));
        }
        if self.admission.enabled() {
            // Peers lose stake: ask again about everyone in the table (the
            // oracle's cache keeps this cheap) and forget peers we no longer see.
            for peer in self.routing_table() {
                self.admission.check(peer);
            }
            let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
            self.admission.retain(|peer| connected.contains(peer));
            self.swarm
                .behaviour_mut()
                .guard
                .retain(|peer| connected.contains(peer));
        }
        let stats = self.stats();
        let interval = self.refresh_period.max(MIN_BOOTSTRAP_INTERVAL);
        if stats.routing_table_size > 0
            && self
                .last_bootstrap
                .is_none_or(|at| at.elapsed() >= interval)
        {
            self.last_bootstrap = Some(Instant::now());
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        if stats.routing_table_size == 0 && self.startup.is_none() {
            self.rejoin();
        }
        self.metrics
            .routing_table_peers
            .set(stats.routing_table_size as i64);
        self.metrics.stored_entries.set(stats.stored_entries as i64);
        self.metrics.stored_keys.set(stats.stored_keys as i64);
        self.repair_pass();
        self.maintain_relays();
        tracing::info!(
            routing_table = stats.routing_table_size,
            connected = stats.connected_peers,
            stored_keys = stats.stored_keys,
            stored_entries = stats.stored_entries,
            "refresh"
        );
    }
}
