//! Building the swarm and starting the node.
use super::*;
use crate::guard::MemoryLimit;

fn split_p2p(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(peer)) => Some((peer, a)),
        _ => None,
    }
}

impl Dht {
    /// Starts a node: listens, dials the initial peers and joins.
    ///
    /// Returns once the node listens on every address and, when initial
    /// peers are given, at least one of them answered and the join lookup
    /// (of this node's own PeerId) finished. Fails with [`DhtError::NoInitialPeerAnswered`]
    /// when none of them answers within `bootstrap_timeout`.
    pub async fn start(config: DhtConfig) -> Result<Dht, DhtError> {
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
            .map(|path| Persist::open(path).map(Arc::new))
            .transpose()?;
        let mut validator = config.validator;
        validator.add(SignatureValidator::new(Arc::new(config.key.clone())));
        validator.add(mesh_core::validator::framework_keys());
        let validator = Arc::new(validator);
        let store = KadStore::new(config.limits, persist, &validator)?;
        let file = store.persist().cloned();

        let kad_protocol = StreamProtocol::try_from_owned(config.subnet_id.protocol("kad/1.0.0"))
            .map_err(|e| DhtError::Transport(e.to_string()))?;
        let records_protocol =
            StreamProtocol::try_from_owned(config.subnet_id.protocol("records/1.0.0"))
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
            identify::Config::new(config.subnet_id.protocol("1.0.0"), config.key.public())
                .with_agent_version(format!("mesh-dht/{}", env!("CARGO_PKG_VERSION")))
                .with_hide_listen_addrs(!config.announce.is_empty()),
        );
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_incoming(Some(config.inbound.max_established))
                .with_max_established_outgoing(Some(config.max_outbound))
                .with_max_pending_outgoing(Some(config.max_outbound))
                .with_max_established_per_peer(Some(4))
                .with_max_pending_incoming(Some(config.inbound.max_pending)),
        );
        let memory = config.inbound.max_memory.map(|m| match m {
            MemoryLimit::Bytes(b) => memory_connection_limits::Behaviour::with_max_bytes(b),
            MemoryLimit::FractionOfSystem(f) => {
                memory_connection_limits::Behaviour::with_max_percentage(f)
            }
        });
        let guard = Guard::new(config.inbound.clone(), config.stake_gate.is_some());
        let shared_registry = config.registry.clone();
        // Held only while metrics register, never across an await.
        let registry = || shared_registry.lock().unwrap_or_else(|e| e.into_inner());
        let pubsub = if config.pubsub.enabled {
            let behaviour = pubsub::behaviour(
                config.key.keypair(),
                &config.pubsub,
                config.subnet_id,
                &mut registry(),
            );
            Some(behaviour.map_err(DhtError::Transport)?)
        } else {
            None
        };
        // Who the stake gate admits, shared with the relay server: with a
        // gate, relay slots go to staked peers only.
        let admitted = AdmittedPeers::default();
        let relay_server = match (&config.reach.relay_server, config.client_mode) {
            (Some(limits), false) => {
                let staked_only = config.stake_gate.is_some().then(|| admitted.clone());
                Some(relay::Behaviour::new(local, limits.to_config(staked_only)))
            }
            _ => None,
        };
        let autonat = (config.reach.autonat && !config.client_mode).then(|| {
            // Probes start one refresh period in (at most 15 s) and retry as
            // often while the verdict is open. Dial-backs go only to the
            // IP the prober is seen at, so private ones are fine (a LAN).
            let period = config.refresh_period;
            autonat::Behaviour::new(
                local,
                autonat::Config {
                    timeout: Duration::from_secs(15),
                    boot_delay: period.min(Duration::from_secs(15)),
                    retry_interval: (period * 2).min(Duration::from_secs(90)),
                    throttle_server_period: (period * 2).min(Duration::from_secs(90)),
                    only_global_ips: false,
                    ..Default::default()
                },
            )
        });
        let streams = libp2p_stream::Behaviour::new();
        let stream_control = streams.new_control();
        let behaviour = |relay_client| Behaviour {
            limits,
            memory: memory.into(),
            guard,
            kad,
            records,
            identify,
            ping: ping::Behaviour::default(),
            pubsub: pubsub.into(),
            streams,
            relay: relay_server.into(),
            relay_client,
            dcutr: dcutr::Behaviour::new(local),
            autonat: autonat.into(),
            upnp: (config.reach.upnp && !config.client_mode)
                .then(libp2p::upnp::tokio::Behaviour::default)
                .into(),
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
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| DhtError::Transport(e.to_string()))?
            .with_behaviour(|_, relay_client| behaviour(relay_client))
            .map_err(|e| DhtError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();

        let metrics = NodeMetrics::new(&mut registry());
        let pubsub = PubsubState::new(
            local,
            config.subnet_id,
            config.pubsub.clone(),
            &mut registry(),
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
            max_message_bytes: config.max_message_bytes,
            repair_keys_per_period: config.repair_keys_per_period.max(1),
            repair: Default::default(),
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
                admitted,
            ),
            bans: Bans::new(config.bans.clone()),
            awaiting: HashMap::new(),
            unreachable: HashMap::new(),
            strikes: HashMap::new(),
            redialed: HashSet::new(),
            last_bootstrap: None,
            initial: initial.clone(),
            rejoining: false,
            ingest: ingest::Ingest::start(validator.clone(), file, cancel.child_token())?,
            reach: reach::ReachState::new(
                config.reach.clone(),
                initial.iter().map(|(p, _, _)| *p).collect(),
            ),
            connects: HashMap::new(),
            dialing: HashMap::new(),
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
                registry: shared_registry,
                subnet_id: config.subnet_id,
                cancel,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
