//! The node: swarm, event loop and the cloneable [`Dht`] handle.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, KBucketKey, RecordKey};
use libp2p::metrics::Recorder;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, gossipsub, identify, noise, ping, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use mesh_core::validator::SignatureValidator;
use mesh_core::{
    CompositeValidator, Expiration, Kind, MergeRefusal, RateLimit, Record, Refusal, StoredValue,
    TokenBucket,
};
use mesh_proto::dht as pb;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Answer, Decision};
use crate::codec::RecordCodec;
use crate::config::DhtConfig;
use crate::kad_store::KadStore;
use crate::lookup::{PeerSet, PeerState};
use crate::metrics::NodeMetrics;
use crate::persist::Persist;
use crate::pubsub::{self, Inbound, Pubsub, PubsubCommand, PubsubState};
use crate::DhtError;

/// Most records one store request may carry.
const MAX_RECORDS_PER_REQUEST: usize = 64;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    kad: kad::Behaviour<KadStore>,
    records: request_response::Behaviour<RecordCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// Pubsub for the subnet's applications.
    pubsub: gossipsub::Behaviour,
    /// Raw streams for protocols built on top (the RPC of `mesh-server`).
    streams: libp2p_stream::Behaviour,
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
            pb::Refusal::Unspecified => Self::Other,
        }
    }
}

fn refusal_code(r: &Refusal) -> (pb::Refusal, &'static str) {
    match r {
        Refusal::Merge(MergeRefusal::Expired { .. }) => (pb::Refusal::Expired, "expired"),
        Refusal::Merge(MergeRefusal::NotNewer { .. }) => (pb::Refusal::NotNewer, "not_newer"),
        Refusal::TooLarge { .. } => (pb::Refusal::TooLarge, "too_large"),
        Refusal::Invalid(_) => (pb::Refusal::Invalid, "invalid"),
        Refusal::QuotaExceeded { .. } => (pb::Refusal::QuotaExceeded, "quota_exceeded"),
        Refusal::StoreFull { .. } => (pb::Refusal::StoreFull, "store_full"),
        _ => (pb::Refusal::Unspecified, "other"),
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
}

pub(crate) enum Command {
    Store {
        record: Record,
        reply: oneshot::Sender<StoreReport>,
    },
    Get {
        key: Vec<u8>,
        latest: bool,
        reply: oneshot::Sender<Option<StoredValue>>,
    },
    Stats(oneshot::Sender<DhtStats>),
    RoutingTable(oneshot::Sender<Vec<PeerId>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Pubsub(PubsubCommand),
}

struct Inner {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    streams: libp2p_stream::Control,
    validator: Arc<CompositeValidator>,
    registry: Arc<Mutex<Registry>>,
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

fn split_p2p(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, a)),
        _ => None,
    }
}

fn valid_subnet_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Dht {
    /// Starts a node: listens, dials the initial peers and joins.
    ///
    /// Returns once the node listens on every address and, when initial
    /// peers are given, at least one of them answered and the join lookup
    /// (of this node's own PeerId) finished. Fails with [`DhtError::NoInitialPeerAnswered`]
    /// when none of them answers within `bootstrap_timeout`.
    pub async fn start(config: DhtConfig) -> Result<Dht, DhtError> {
        if !valid_subnet_id(&config.subnet_id) {
            return Err(DhtError::Transport(format!(
                "subnet id {:?} must be 1-64 characters of [A-Za-z0-9._-]",
                config.subnet_id
            )));
        }
        let mut initial = Vec::new();
        for addr in &config.initial_peers {
            let Some((peer, base)) = split_p2p(addr) else {
                return Err(DhtError::BadInitialPeer {
                    addr: addr.to_string(),
                    reason: "must end with /p2p/<PeerId>".into(),
                });
            };
            if peer == config.key.peer_id() {
                return Err(DhtError::BadInitialPeer {
                    addr: addr.to_string(),
                    reason: "that is this node's own PeerId".into(),
                });
            }
            initial.push((peer, base, addr.clone()));
        }

        let local = config.key.peer_id();
        let persist = config
            .store_path
            .as_deref()
            .map(Persist::open)
            .transpose()?;
        let store = KadStore::new(local, config.limits, persist)?;
        let mut validator = config.validator;
        validator.add(SignatureValidator::new(Arc::new(config.key.clone())));
        let validator = Arc::new(validator);

        let kad_protocol =
            StreamProtocol::try_from_owned(format!("/mesh/{}/kad/1.0.0", config.subnet_id))
                .map_err(|e| DhtError::Transport(e.to_string()))?;
        let records_protocol =
            StreamProtocol::try_from_owned(format!("/mesh/{}/records/1.0.0", config.subnet_id))
                .map_err(|e| DhtError::Transport(e.to_string()))?;

        let mut kcfg = kad::Config::new(kad_protocol.clone());
        kcfg.set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_kbucket_inserts(kad::BucketInserts::Manual)
            .set_replication_interval(None)
            .set_publication_interval(None)
            .set_provider_publication_interval(None)
            .set_record_ttl(None)
            .set_periodic_bootstrap_interval(None)
            .set_automatic_bootstrap_throttle(None)
            .set_max_packet_size(config.max_message_bytes)
            .set_query_timeout(config.bootstrap_timeout);
        let mut kad = kad::Behaviour::with_config(local, store, kcfg);
        kad.set_mode(Some(if config.client_mode {
            kad::Mode::Client
        } else {
            kad::Mode::Server
        }));

        let support = if config.client_mode {
            ProtocolSupport::Outbound
        } else {
            ProtocolSupport::Full
        };
        let records = request_response::Behaviour::with_codec(
            RecordCodec {
                max_bytes: config.max_message_bytes,
            },
            [(records_protocol, support)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(256),
        );
        let identify = identify::Behaviour::new(
            identify::Config::new(
                format!("/mesh/{}/1.0.0", config.subnet_id),
                config.key.public(),
            )
            .with_agent_version(format!("mesh-dht/{}", env!("CARGO_PKG_VERSION")))
            .with_hide_listen_addrs(!config.announce.is_empty()),
        );
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(4))
                .with_max_pending_incoming(Some(256)),
        );
        let mut registry = Registry::default();
        let pubsub = pubsub::behaviour(
            config.key.keypair(),
            &config.pubsub,
            &config.subnet_id,
            &mut registry,
        )
        .map_err(DhtError::Transport)?;
        let streams = libp2p_stream::Behaviour::new();
        let stream_control = streams.new_control();
        let behaviour = Behaviour {
            limits,
            kad,
            records,
            identify,
            ping: ping::Behaviour::default(),
            pubsub,
            streams,
        };

        let idle = config.idle_connection_timeout;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.key.keypair().clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| DhtError::Transport(e.to_string()))?
            .with_quic()
            .with_other_transport(|key| {
                let noise = noise::Config::new(key)
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
                Ok(MemoryTransport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default()))
            })
            .map_err(|e| DhtError::Transport(e.to_string()))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| DhtError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();

        let metrics = NodeMetrics::new(&mut registry);
        let pubsub = PubsubState::new(
            local,
            config.subnet_id.clone(),
            config.pubsub.clone(),
            &mut registry,
        );

        let mut listeners = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| DhtError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            listeners.insert(id);
        }
        for addr in &config.announce {
            swarm.add_external_address(addr.clone());
        }
        let mut addr_book: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        let mut pending_initial = HashMap::new();
        for (peer, base, full) in &initial {
            // With a stake gate, initial peers enter the routing table like
            // any other: after identify, once the oracle says they are staked.
            if config.stake_gate.is_none() {
                swarm.behaviour_mut().kad.add_address(peer, base.clone());
            }
            addr_book.entry(*peer).or_default().push(base.clone());
            pending_initial.insert(*peer, full.clone());
            if let Err(e) = swarm.dial(full.clone()) {
                tracing::warn!(%full, "cannot dial initial peer: {e}");
            }
        }

        let (tx, rx) = mpsc::channel(1024);
        let (ready_tx, ready_rx) = oneshot::channel();
        let cancel = CancellationToken::new();
        let event_loop = EventLoop {
            swarm,
            commands: rx,
            cancel: cancel.clone(),
            local,
            client_mode: config.client_mode,
            kad_protocol,
            validator: validator.clone(),
            replicas: config.replicas.max(1),
            refresh_period: config.refresh_period,
            rate_limit: config.rate_limit,
            buckets: HashMap::new(),
            pubsub,
            addr_book,
            routing: None,
            listen_addrs: Vec::new(),
            lookups: HashMap::new(),
            requests: HashMap::new(),
            next_lookup: 0,
            metrics,
            admission: Admission::new(
                config.stake_gate.clone(),
                config.refresh_period,
                cancel.child_token(),
            ),
            awaiting: HashMap::new(),
            startup: Some(Startup {
                listeners,
                pending_initial,
                failed_initial: Vec::new(),
                connected: initial.is_empty(),
                needs_join: !initial.is_empty(),
                awaiting_verdict: config.stake_gate.is_some() && !initial.is_empty(),
                join: None,
                deadline: Instant::now() + config.bootstrap_timeout,
                timeout: config.bootstrap_timeout,
                ready: ready_tx,
            }),
        };
        let task = tokio::spawn(event_loop.run());
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                cancel.cancel();
                let _ = task.await;
                return Err(e);
            }
            Err(_) => return Err(DhtError::Stopped),
        }
        Ok(Dht {
            inner: Arc::new(Inner {
                tx,
                peer_id: local,
                streams: stream_control,
                validator,
                registry: Arc::new(Mutex::new(registry)),
                cancel,
                task: Mutex::new(Some(task)),
            }),
        })
    }

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

    /// The validators this node applies (to sign or check records yourself).
    pub fn validator(&self) -> &CompositeValidator {
        &self.inner.validator
    }

    /// The Prometheus registry holding libp2p's and the node's metrics.
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

    /// A snapshot of the node's routing table and store sizes.
    pub async fn stats(&self) -> Result<DhtStats, DhtError> {
        self.ask(Command::Stats).await
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
}

impl Lookup {
    fn request(&self) -> pb::Request {
        let kind = match &self.op {
            Op::Store(r) => pb::request::Kind::Store(pb::StoreRequest {
                records: vec![r.clone().into()],
            }),
            Op::Find { .. } => pb::request::Kind::Find(pb::FindRequest {
                key: self.key.clone(),
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
}

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
    /// Addresses of peers waiting for the oracle before entering the table.
    awaiting: HashMap<PeerId, Vec<Multiaddr>>,
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
                (topic, id) = self.pubsub.next_closed() => {
                    self.pubsub.on_closed(&mut self.swarm.behaviour_mut().pubsub, topic, id);
                }
                _ = refresh.tick() => self.refresh(),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.startup_timed_out();
                }
                _ = self.cancel.cancelled() => break,
            }
        }
        tracing::info!(peer_id = %self.local, "DHT node stopped");
    }

    // ---- start-up -------------------------------------------------------

    fn check_ready(&mut self) {
        let Some(s) = &mut self.startup else { return };
        if !s.listeners.is_empty() {
            return;
        }
        if !s.connected {
            if s.pending_initial.is_empty() {
                let tried = std::mem::take(&mut s.failed_initial);
                let timeout_s = s.timeout.as_secs_f64();
                self.finish_startup(Err(DhtError::NoInitialPeerAnswered { tried, timeout_s }));
            }
            return;
        }
        if s.needs_join {
            if s.awaiting_verdict {
                return;
            }
            s.needs_join = false;
            let local = self.local;
            let id = self.swarm.behaviour_mut().kad.get_closest_peers(local);
            if let Some(s) = &mut self.startup {
                s.join = Some(id);
            }
            return;
        }
        if s.join.is_none() {
            self.finish_startup(Ok(()));
        }
    }

    fn startup_timed_out(&mut self) {
        let Some(s) = &mut self.startup else { return };
        if !s.listeners.is_empty() {
            self.finish_startup(Err(DhtError::Transport(
                "listeners did not start in time".into(),
            )));
        } else if !s.connected {
            let mut tried = std::mem::take(&mut s.failed_initial);
            tried.extend(
                s.pending_initial
                    .values()
                    .map(|a| (a.clone(), "no answer".to_string())),
            );
            let timeout_s = s.timeout.as_secs_f64();
            self.finish_startup(Err(DhtError::NoInitialPeerAnswered { tried, timeout_s }));
        } else {
            tracing::warn!(
                "the join lookup did not finish in time; continuing with the peers found so far"
            );
            self.finish_startup(Ok(()));
        }
    }

    fn finish_startup(&mut self, result: Result<(), DhtError>) {
        if let Some(s) = self.startup.take() {
            if result.is_ok() {
                let rt = self.routing_table().len();
                tracing::info!(peer_id = %self.local, routing_table = rt, "DHT node ready");
            }
            let _ = s.ready.send(result);
        }
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
                    if info.protocols.contains(&self.kad_protocol) {
                        match self.admission.decide(peer_id) {
                            Decision::Admit => {
                                for addr in info.listen_addrs {
                                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                                }
                            }
                            Decision::Unknown => self
                                .awaiting
                                .entry(peer_id)
                                .or_default()
                                .extend(info.listen_addrs),
                            Decision::Refuse => {}
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ev)) => self.metrics.libp2p.record(&ev),
            SwarmEvent::Behaviour(BehaviourEvent::Pubsub(ev)) => {
                self.metrics.libp2p.record(&ev);
                self.on_pubsub_event(ev);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Limits(v)) => match v {},
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
                addresses,
                reason: Err(e),
                ..
            } => tracing::error!(?addresses, "listener closed: {e}"),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if let Some(s) = &mut self.startup {
                    if s.pending_initial.remove(&peer_id).is_some() {
                        s.connected = true;
                        tracing::info!(%peer_id, "connected to initial peer");
                    }
                }
                self.check_ready();
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
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

    fn on_kad_event(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::RoutingUpdated {
                peer,
                addresses,
                old_peer,
                ..
            } => {
                self.routing = None;
                self.addr_book
                    .insert(peer, addresses.iter().cloned().collect());
                if let Some(old) = old_peer {
                    self.addr_book.remove(&old);
                }
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
                if self.admission.decide(source) != Decision::Admit {
                    NodeMetrics::count(&self.metrics.refused_requests, "reason", "not_staked");
                    tracing::debug!(%source, "kad PUT_VALUE from a peer not known staked refused");
                    return;
                }
                let decoded = prost::Message::decode(record.value.as_slice())
                    .ok()
                    .and_then(|v: pb::StoredValue| StoredValue::try_from(v).ok());
                match decoded {
                    Some(value) => {
                        for r in value.into_records(record.key.to_vec()) {
                            if let Err(e) = self.accept(&r, source) {
                                tracing::debug!(%source, "kad PUT_VALUE refused: {e}");
                            }
                        }
                    }
                    None => {
                        NodeMetrics::count(&self.metrics.refused_requests, "reason", "malformed");
                        tracing::debug!(%source, "kad PUT_VALUE with a malformed value refused");
                    }
                }
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } if record.addresses.len() <= 16 => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider(record);
            }
            _ => {}
        }
    }

    // ---- the record protocol ---------------------------------------------

    fn on_records_event(&mut self, ev: request_response::Event<pb::Request, pb::Response>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_request(peer, request, channel),
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_response(request_id, peer, response),
            Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                if let Some((id, _)) = self.requests.remove(&request_id) {
                    if let Some(l) = self.lookups.get_mut(&id) {
                        l.peers.set(&peer, PeerState::Failed);
                        l.report.unreachable.push((peer, error.to_string()));
                    }
                    self.advance(id);
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                NodeMetrics::count(&self.metrics.refused_requests, "reason", "inbound_failure");
                tracing::debug!(%peer, "inbound record request failed: {error}");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn rate_limited(&mut self, peer: PeerId) -> bool {
        let Some(limit) = self.rate_limit else {
            return false;
        };
        let now = Instant::now().into_std();
        !self
            .buckets
            .entry(peer)
            .or_insert_with(|| TokenBucket::full(limit, now))
            .try_take(limit, now)
    }

    fn respond(&mut self, channel: ResponseChannel<pb::Response>, kind: pb::response::Kind) {
        let _ = self
            .swarm
            .behaviour_mut()
            .records
            .send_response(channel, pb::Response { kind: Some(kind) });
    }

    fn error_response(
        code: pb::error_response::Code,
        message: impl Into<String>,
    ) -> pb::response::Kind {
        pb::response::Kind::Error(pb::ErrorResponse {
            code: code as i32,
            message: message.into(),
        })
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request: pb::Request,
        channel: ResponseChannel<pb::Response>,
    ) {
        if self.rate_limited(peer) {
            NodeMetrics::count(&self.metrics.refused_requests, "reason", "rate_limited");
            let kind = Self::error_response(
                pb::error_response::Code::RateLimited,
                "rate limit exceeded; slow down",
            );
            return self.respond(channel, kind);
        }
        let kind = match request.kind {
            Some(pb::request::Kind::Store(store)) => {
                NodeMetrics::count(&self.metrics.inbound_requests, "kind", "store");
                return self.on_store(peer, store, channel);
            }
            Some(pb::request::Kind::Find(f)) => {
                NodeMetrics::count(&self.metrics.inbound_requests, "kind", "find");
                let value = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .get(&f.key, Expiration::now())
                    .map(pb::StoredValue::from);
                pb::response::Kind::Find(pb::FindResponse {
                    value,
                    closer: self.closer_peers(&f.key, &peer),
                })
            }
            None => {
                NodeMetrics::count(&self.metrics.refused_requests, "reason", "malformed");
                Self::error_response(pb::error_response::Code::Malformed, "empty request")
            }
        };
        self.respond(channel, kind);
    }

    fn store_response(&mut self, peer: PeerId, s: pb::StoreRequest) -> pb::response::Kind {
        if s.records.is_empty() || s.records.len() > MAX_RECORDS_PER_REQUEST {
            return Self::error_response(
                pb::error_response::Code::Malformed,
                format!("a store carries 1 to {MAX_RECORDS_PER_REQUEST} records"),
            );
        }
        let key = s.records[0].key.clone();
        let results = s
            .records
            .into_iter()
            .map(|r| match self.accept(&Record::from(r), peer) {
                Ok(()) => pb::StoreResult {
                    accepted: true,
                    ..Default::default()
                },
                Err(e) => pb::StoreResult {
                    accepted: false,
                    refusal: refusal_code(&e).0 as i32,
                    reason: e.to_string(),
                },
            })
            .collect();
        pb::response::Kind::Store(pb::StoreResponse {
            results,
            closer: self.closer_peers(&key, &peer),
        })
    }

    // ---- admission ------------------------------------------------------------

    /// A store request: admitted peers store, others are refused with the
    /// reason, unknown ones wait for the oracle.
    fn on_store(
        &mut self,
        peer: PeerId,
        store: pb::StoreRequest,
        channel: ResponseChannel<pb::Response>,
    ) {
        let kind = match self.admission.decide(peer) {
            Decision::Admit => self.store_response(peer, store),
            Decision::Refuse => self.not_staked(peer, &store),
            Decision::Unknown => {
                let parked = Parked::Store {
                    peer,
                    store,
                    channel,
                };
                match self.admission.park(peer, parked) {
                    Ok(()) => return,
                    Err(Parked::Store { store, channel, .. }) => {
                        NodeMetrics::count(&self.metrics.refused_requests, "reason", "busy");
                        let kind = Self::error_response(
                            pb::error_response::Code::RateLimited,
                            "too many stake checks pending; try again",
                        );
                        drop(store);
                        return self.respond(channel, kind);
                    }
                    Err(Parked::Message(_)) => unreachable!("parked a store"),
                }
            }
        };
        self.respond(channel, kind);
    }

    fn not_staked(&mut self, peer: PeerId, store: &pb::StoreRequest) -> pb::response::Kind {
        let gate = self.admission.gate().expect("refusals need a gate");
        let reason = format!(
            "publisher {peer} is not staked in subnet {} with class {} or above",
            gate.subnet_id, gate.min_class
        );
        NodeMetrics::count(&self.metrics.refused_requests, "reason", "not_staked");
        let results = store
            .records
            .iter()
            .map(|_| pb::StoreResult {
                accepted: false,
                refusal: pb::Refusal::NotStaked as i32,
                reason: reason.clone(),
            })
            .collect();
        pb::response::Kind::Store(pb::StoreResponse {
            results,
            closer: Vec::new(),
        })
    }

    /// The oracle answered about a peer: update the routing table and run
    /// the work that waited for it.
    fn on_answer(&mut self, answer: Answer) {
        let peer = answer.peer;
        let (admitted, parked) = self.admission.record(&answer);
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
            }
        }
        self.check_ready();
    }

    // ---- pubsub ----------------------------------------------------------------

    fn on_pubsub_event(&mut self, ev: gossipsub::Event) {
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
                if self
                    .pubsub
                    .within_rate(&mut self.swarm.behaviour_mut().pubsub, &m)
                {
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
    fn check_message(&mut self, m: Inbound) {
        let gs = &mut self.swarm.behaviour_mut().pubsub;
        let author = m.message.source;
        for peer in std::iter::once(m.forwarder).chain(author) {
            if peer == self.local {
                continue;
            }
            match self.admission.decide(peer) {
                Decision::Admit => {}
                Decision::Refuse => return self.pubsub.refuse_unstaked(gs, m),
                Decision::Unknown => {
                    if let Err(Parked::Message(m)) = self.admission.park(peer, Parked::Message(m)) {
                        self.pubsub.ignore(gs, m, "admission_busy");
                    }
                    return;
                }
            }
        }
        self.pubsub.validate_and_deliver(gs, m);
    }

    /// Validates and stores one record published by `publisher`.
    ///
    /// The store's cheap checks (size, merge rules, quota) run before the
    /// validators so that stale or oversized records never cost a signature
    /// verification; `put` repeats them, which is cheap.
    fn accept(&mut self, record: &Record, publisher: PeerId) -> Result<(), Refusal> {
        let now = Expiration::now();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let result = store
            .store()
            .check(record, &publisher, now)
            .and_then(|()| {
                self.validator
                    .validate(record, Kind::Put)
                    .map_err(Refusal::from)
            })
            .and_then(|()| store.put(record, publisher, now));
        let label = match &result {
            Ok(()) => "accepted",
            Err(e) => refusal_code(e).1,
        };
        NodeMetrics::count(&self.metrics.store_results, "result", label);
        result
    }

    /// The `n` peers of the routing table closest to `key`, nearest first.
    fn closest_local(&mut self, key: &[u8], n: usize, exclude: Option<&PeerId>) -> Vec<PeerId> {
        let routing = self.routing_snapshot();
        let target = KBucketKey::new(RecordKey::new(&key));
        let mut by_distance: Vec<_> = routing
            .iter()
            .filter(|k| Some(k.preimage()) != exclude)
            .map(|k| (target.distance(k), *k.preimage()))
            .collect();
        if by_distance.len() > n {
            by_distance.select_nth_unstable_by(n, |a, b| a.0.cmp(&b.0));
            by_distance.truncate(n);
        }
        by_distance.sort_unstable_by_key(|a| a.0);
        by_distance.into_iter().map(|(_, p)| p).collect()
    }

    fn closer_peers(&mut self, key: &[u8], exclude: &PeerId) -> Vec<pb::Peer> {
        let peers = self.closest_local(key, self.replicas, Some(exclude));
        peers
            .into_iter()
            .map(|p| pb::Peer {
                peer_id: p.to_bytes(),
                addrs: self
                    .addr_book
                    .get(&p)
                    .map(|a| a.iter().take(8).map(|a| a.to_vec()).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn on_response(&mut self, request_id: OutboundRequestId, peer: PeerId, response: pb::Response) {
        let Some((id, _)) = self.requests.remove(&request_id) else {
            return;
        };
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        let closer = match response.kind {
            Some(pb::response::Kind::Store(s)) if matches!(l.op, Op::Store(_)) => {
                match s.results.first() {
                    Some(r) if r.accepted => l.report.accepted += 1,
                    Some(r) => l.report.refused.push(RemoteRefusal {
                        peer,
                        kind: pb::Refusal::try_from(r.refusal).unwrap_or_default().into(),
                        reason: r.reason.clone(),
                    }),
                    None => l
                        .report
                        .unreachable
                        .push((peer, "empty store response".into())),
                }
                l.peers.set(&peer, PeerState::Succeeded);
                s.closer
            }
            Some(pb::response::Kind::Find(f)) if matches!(l.op, Op::Find { .. }) => {
                if let Some(v) = f.value.and_then(|v| StoredValue::try_from(v).ok()) {
                    merge_valid(&self.validator, &mut l.found, &l.key, v);
                }
                l.peers.set(&peer, PeerState::Succeeded);
                f.closer
            }
            Some(pb::response::Kind::Error(e)) => {
                l.peers.set(&peer, PeerState::Failed);
                l.report
                    .unreachable
                    .push((peer, format!("refused the request: {}", e.message)));
                Vec::new()
            }
            _ => {
                l.peers.set(&peer, PeerState::Failed);
                l.report
                    .unreachable
                    .push((peer, "answered with the wrong message".into()));
                Vec::new()
            }
        };
        for p in closer.into_iter().take(2 * self.replicas) {
            let Ok(pid) = PeerId::from_bytes(&p.peer_id) else {
                continue;
            };
            if pid == self.local && self.client_mode {
                continue;
            }
            let addrs = p
                .addrs
                .into_iter()
                .filter_map(|a| Multiaddr::try_from(a).ok())
                .collect();
            l.peers.add(pid, addrs);
        }
        self.advance(id);
    }

    // ---- lookups ----------------------------------------------------------

    fn start_lookup(&mut self, key: Vec<u8>, op: Op, reply: Reply) {
        let mut peers = PeerSet::new(&key, self.replicas);
        let local = self.closest_local(&key, self.replicas * 2, None);
        for p in local {
            peers.add(p, Vec::new());
        }
        if !self.client_mode {
            peers.add(self.local, Vec::new());
        }
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.lookups.insert(
            id,
            Lookup {
                key,
                peers,
                op,
                report: StoreReport::default(),
                found: None,
                reply,
            },
        );
        self.advance(id);
    }

    fn advance(&mut self, id: u64) {
        loop {
            let Some(l) = self.lookups.get_mut(&id) else {
                return;
            };
            if matches!(l.op, Op::Find { latest: false }) && l.found.is_some() {
                return self.finish(id);
            }
            let next = l.peers.next();
            if next.is_empty() {
                if !l.peers.in_flight() {
                    self.finish(id);
                }
                return;
            }
            let mut local = false;
            for p in next {
                if p == self.local {
                    local = true;
                    continue;
                }
                let req = l.request();
                let addrs = l.peers.addrs(&p);
                let rr = &mut self.swarm.behaviour_mut().records;
                let rid = if addrs.is_empty() {
                    rr.send_request(&p, req)
                } else {
                    rr.send_request_with_addresses(&p, req, addrs)
                };
                self.requests.insert(rid, (id, p));
            }
            if !local {
                return;
            }
            self.local_step(id);
        }
    }

    fn local_step(&mut self, id: u64) {
        let Some(mut l) = self.lookups.remove(&id) else {
            return;
        };
        match &l.op {
            Op::Store(record) => match self.accept(record, self.local) {
                Ok(()) => l.report.accepted += 1,
                Err(e) => l.report.refused.push(RemoteRefusal {
                    peer: self.local,
                    kind: refusal_code(&e).0.into(),
                    reason: e.to_string(),
                }),
            },
            Op::Find { .. } => {
                let v = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .get(&l.key, Expiration::now());
                if let Some(v) = v {
                    merge_valid(&self.validator, &mut l.found, &l.key, v);
                }
            }
        }
        l.peers.set(&self.local, PeerState::Succeeded);
        self.lookups.insert(id, l);
    }

    fn finish(&mut self, id: u64) {
        let Some(l) = self.lookups.remove(&id) else {
            return;
        };
        // Answers still in flight for this lookup are dropped when they arrive.
        self.requests.retain(|_, (lid, _)| *lid != id);
        match l.reply {
            Reply::Store(tx) => {
                let _ = tx.send(l.report);
            }
            Reply::Find(tx) => {
                let value = l.found.map(|v| strip(&self.validator, &l.key, v));
                let _ = tx.send(value);
            }
        }
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
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::RoutingTable(reply) => {
                let _ = reply.send(self.routing_table());
            }
            Command::Pubsub(cmd) => self
                .pubsub
                .on_command(&mut self.swarm.behaviour_mut().pubsub, cmd),
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
        DhtStats {
            routing_table_size: self.routing_table().len(),
            connected_peers: self.swarm.connected_peers().count(),
            stored_keys,
            stored_entries,
        }
    }

    fn refresh(&mut self) {
        self.swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .remove_expired(Expiration::now());
        if let Some(limit) = self.rate_limit {
            // Forget peers whose bucket has refilled.
            let now = Instant::now().into_std();
            self.buckets.retain(|_, b| !b.is_full(limit, now));
        }
        self.pubsub.refresh();
        if self.admission.enabled() {
            // Peers lose stake: ask again about everyone in the table (the
            // oracle's cache keeps this cheap) and forget peers we no longer see.
            for peer in self.routing_table() {
                self.admission.check(peer);
            }
            let swarm = &self.swarm;
            self.admission.retain(|peer| swarm.is_connected(peer));
        }
        let stats = self.stats();
        if stats.routing_table_size > 0 {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        self.metrics
            .routing_table_peers
            .set(stats.routing_table_size as i64);
        self.metrics.stored_entries.set(stats.stored_entries as i64);
        self.metrics.stored_keys.set(stats.stored_keys as i64);
        tracing::info!(
            routing_table = stats.routing_table_size,
            connected = stats.connected_peers,
            stored_keys = stats.stored_keys,
            stored_entries = stats.stored_entries,
            "refresh"
        );
    }
}

/// Merges the entries of `value` that pass `Get` validation into `acc`.
fn merge_valid(
    validator: &CompositeValidator,
    acc: &mut Option<StoredValue>,
    key: &[u8],
    value: StoredValue,
) {
    let now = Expiration::now();
    for r in value.into_records(key.to_vec()) {
        if r.expiration <= now {
            continue;
        }
        match validator.validate(&r, Kind::Get) {
            Ok(()) => {
                let _ = StoredValue::apply(acc, &r, now);
            }
            Err(e) => tracing::debug!("dropping an invalid entry read from the DHT: {e}"),
        }
    }
}

/// Removes what validators added (signatures) from every entry.
fn strip(validator: &CompositeValidator, key: &[u8], value: StoredValue) -> StoredValue {
    let mut out = None;
    for mut r in value.into_records(key.to_vec()) {
        r.value = validator.strip(&r);
        let _ = StoredValue::apply(&mut out, &r, Expiration::from_millis(0));
    }
    out.expect("a found value has at least one entry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_ids() {
        assert!(valid_subnet_id("1"));
        assert!(valid_subnet_id("my-subnet.v2"));
        assert!(!valid_subnet_id(""));
        assert!(!valid_subnet_id("a/b"));
        assert!(!valid_subnet_id(&"x".repeat(65)));
    }

    #[test]
    fn p2p_suffix_is_split() {
        let peer = PeerId::random();
        let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        let (p, base) = split_p2p(&a).unwrap();
        assert_eq!(p, peer);
        assert_eq!(base, "/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap());
        assert!(split_p2p(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()).is_none());
    }
}
