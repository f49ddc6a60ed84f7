//! The node runtime: what a subnet gives, what it gets, and the parts wired.
//!
//! A [`Subnet`] gives its tonic services, its heartbeat payload and its
//! scoring hook; [`Runtime::start`] gives it a [`SubnetContext`] (the DHT,
//! an RPC client to any peer, its identity, a cancellation token) and runs
//! the DHT, the RPC server behind the authorizers, the heartbeats and — when
//! a chain is configured — the consensus loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use mesh_core::consensus::{ConsensusChain, Score};
use mesh_core::{CompositeValidator, PeerKey, SubnetId};
use mesh_dht::{Dht, DhtConfig, DhtError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthLayer, AuthMetrics, Authorizer};
use crate::consensus::{ConsensusLoop, ScoreFn};
use crate::heartbeat::{alive_peers, spawn_heartbeats, Heartbeat};
use crate::rpc::{connect_through, incoming, rpc_protocol, RpcError};
use crate::signature::{signed, SignResponsesLayer, SignedChannel};

/// What the runtime gives a subnet.
#[derive(Clone)]
pub struct SubnetContext {
    /// The node's DHT.
    pub dht: Dht,
    /// The node's identity.
    pub key: Arc<PeerKey>,
    /// The subnet, on chain and on the network (`/mesh/<subnet_id>/…`).
    pub subnet_id: SubnetId,
    /// Cancelled when the node shuts down.
    pub cancel: CancellationToken,
    /// The chain as the node sees it (epoch clock, its own node, elected
    /// validators, submissions), signing with the hotkey; `None` without a
    /// chain. A subnet that needs more holds its own `mesh_chain::ChainClient`.
    pub chain: Option<Arc<dyn ConsensusChain>>,
}

impl SubnetContext {
    /// The node's pubsub: signed, stake-gated topics of this subnet
    /// (`/mesh/<subnet>/<topic>` on the wire).
    pub fn pubsub(&self) -> mesh_dht::Pubsub {
        self.dht.pubsub()
    }

    /// A channel to the subnet's services on `peer` (see [`connect`]) that
    /// signs requests with the node's key and checks the answers are
    /// `peer`'s (see [`signed`]).
    pub fn client(&self, peer: PeerId) -> SignedChannel {
        let channel = connect_through(
            self.dht.clone(),
            peer,
            rpc_protocol(self.subnet_id),
            Duration::from_secs(10),
        );
        signed(channel, self.key.clone(), peer)
    }
}

/// Calls at once on one inbound RPC stream (one HTTP/2 connection); the
/// [`AuthLayer`]'s in-flight limit bounds them across all streams.
pub const RPC_STREAMS_PER_CONNECTION: u32 = 64;

/// A boxed future of a subnet hook.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An application running on mesh.
pub trait Subnet: Send + Sync + 'static {
    /// What each node publishes in its heartbeat (server info).
    type Info: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// The subnet's tonic services.
    fn routes(&self, ctx: &SubnetContext) -> tonic::service::Routes;

    /// Extra record rules for the subnet's DHT keys (schemas, predicates),
    /// added to every record check of this node. None by default.
    fn validator(&self) -> CompositeValidator {
        CompositeValidator::new()
    }

    /// This node's heartbeat payload, asked every update period.
    fn heartbeat(&self) -> Self::Info;

    /// Scores for the alive peers this epoch (consensus); peers left out score 0.
    fn score<'a>(
        &'a self,
        epoch: u32,
        alive: &'a [Heartbeat<Self::Info>],
    ) -> HookFuture<'a, Vec<(PeerId, u128)>>;

    /// Called once the node is up.
    fn start(&self, _ctx: SubnetContext) -> HookFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Called when the node shuts down.
    fn stop(&self) -> HookFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The chain side of a node, when it takes part in consensus.
#[derive(Clone)]
pub struct ChainHooks {
    /// The chain, signing with the node's hotkey. The subnet is the DHT's
    /// ([`DhtConfig::subnet_id`]).
    pub chain: Arc<dyn ConsensusChain>,
    /// How often the consensus loop looks at the chain (a fraction of a block time).
    pub poll: Duration,
    /// Share of an epoch within which a node attests ([`crate::consensus::ATTEST_WINDOW`]).
    pub attest_window: f64,
}

/// How to run a node.
pub struct RuntimeConfig {
    /// The DHT (identity, addresses, subnet name, stake gate).
    pub dht: DhtConfig,
    /// Heartbeat period (expiry is twice this).
    pub update_period: Duration,
    /// Authorizers in front of every RPC, in order. Responses are always
    /// signed and [`SubnetContext::client`] always signs requests; add a
    /// [`crate::SignatureAuthorizer`] here to require signed requests.
    pub authorizers: Vec<Arc<dyn Authorizer>>,
    /// Consensus with the chain; `None` for a node without chain.
    pub chain: Option<ChainHooks>,
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The DHT did not start.
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// The RPC server could not be set up.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// A running node. Dropping it stops everything at once (RPC server,
/// heartbeats, consensus, DHT) without the subnet's stop hook;
/// [`shutdown`](Self::shutdown) is the graceful path.
#[must_use = "dropping a Runtime stops the node"]
pub struct Runtime {
    ctx: SubnetContext,
    auth_metrics: AuthMetrics,
    tasks: Vec<JoinHandle<()>>,
    stop_hook: Option<Box<dyn FnOnce() -> HookFuture<'static, ()> + Send>>,
    /// Set once `shutdown` has finished.
    stopped: bool,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.ctx.cancel.cancel();
        for task in &self.tasks {
            task.abort();
        }
        // The subnet may hold clones of the DHT handle: stop the node itself.
        self.ctx.dht.close();
        tracing::info!("node runtime dropped: stopped");
    }
}

impl Runtime {
    /// Start the DHT, the RPC server, heartbeats and (with a chain) consensus.
    /// With [`DhtConfig::client_mode`](mesh_dht::DhtConfig::client_mode) only
    /// the DHT (and the subnet's own start hook): a client calls and reads
    /// but serves nothing, sends no heartbeat and takes no part in consensus.
    pub async fn start<S: Subnet>(
        config: RuntimeConfig,
        subnet: Arc<S>,
    ) -> Result<Self, RuntimeError> {
        let key = Arc::new(config.dht.key.clone());
        let subnet_id = config.dht.subnet_id;
        let mut dht_config = config.dht;
        let client_mode = dht_config.client_mode;
        dht_config.validator.add(subnet.validator());
        let dht = Dht::start(dht_config).await?;
        let cancel = CancellationToken::new();
        let ctx = SubnetContext {
            dht: dht.clone(),
            key: key.clone(),
            subnet_id,
            cancel: cancel.clone(),
            chain: config.chain.as_ref().map(|hooks| hooks.chain.clone()),
        };

        let layer = AuthLayer::new(config.authorizers);
        let auth_metrics = (*layer.metrics()).clone();
        auth_metrics.register(&mut dht.registry().lock().unwrap_or_else(|e| e.into_inner()));
        let mut tasks = Vec::new();
        if client_mode {
            // A client calls and reads; it serves nothing, sends no
            // heartbeat and takes no part in consensus.
            if config.chain.is_some() {
                tracing::warn!(
                    "client mode: the chain hooks are not used (a client does not attest)"
                );
            }
            subnet.start(ctx.clone()).await;
            tracing::info!(peer_id = %dht.peer_id(), %subnet_id, "node runtime started in client mode");
            let stopping = subnet.clone();
            return Ok(Self {
                ctx,
                auth_metrics,
                tasks,
                stopped: false,
                stop_hook: Some(Box::new(move || {
                    Box::pin(async move { stopping.stop().await })
                })),
            });
        }
        let connections = incoming(&mut dht.streams(), rpc_protocol(subnet_id))?;
        let routes = subnet.routes(&ctx);
        let signing_key = key.clone();
        let stop = cancel.clone();
        tasks.push(tokio::spawn(async move {
            // Each libp2p stream is one HTTP/2 connection: a few calls at
            // once on it, and pings that drop it when the caller is gone.
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(RPC_STREAMS_PER_CONNECTION))
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .layer(SignResponsesLayer::new(signing_key))
                .layer(layer)
                .add_routes(routes)
                .serve_with_incoming_shutdown(connections, stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("RPC server stopped: {e}");
            }
        }));

        let beating = subnet.clone();
        tasks.push(spawn_heartbeats(
            dht.clone(),
            key.public(),
            move || beating.heartbeat(),
            config.update_period,
            cancel.clone(),
        ));

        if let Some(hooks) = config.chain {
            let scorer = subnet.clone();
            let dht = dht.clone();
            let chain = hooks.chain.clone();
            let score: ScoreFn = Arc::new(move |epoch| {
                let (scorer, dht, chain) = (scorer.clone(), dht.clone(), chain.clone());
                Box::pin(async move {
                    let alive = alive_peers::<S::Info>(&dht).await.unwrap_or_default();
                    let mut scores = Vec::new();
                    for (peer, score) in scorer.score(epoch, &alive).await {
                        // Peers with no node on chain cannot be scored.
                        match chain.node_of(subnet_id, peer).await {
                            Ok(Some(node_id)) => scores.push(Score { node_id, score }),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(%peer, "consensus: cannot look up the node of a peer, leaving it out: {e}")
                            }
                        }
                    }
                    scores.sort();
                    scores.dedup_by_key(|s| s.node_id);
                    scores
                })
            });
            let consensus = ConsensusLoop::new(hooks.chain, subnet_id, score)
                .with_attest_window(hooks.attest_window);
            tasks.push(tokio::spawn(consensus.run(hooks.poll, cancel.clone())));
        }

        subnet.start(ctx.clone()).await;
        tracing::info!(peer_id = %dht.peer_id(), %subnet_id, "node runtime started");
        let stopping = subnet.clone();
        Ok(Self {
            ctx,
            auth_metrics,
            tasks,
            stopped: false,
            stop_hook: Some(Box::new(move || {
                Box::pin(async move { stopping.stop().await })
            })),
        })
    }

    /// What the subnet got.
    pub fn context(&self) -> &SubnetContext {
        &self.ctx
    }

    /// Calls the authorizers let through and refused (also on the DHT's
    /// metrics registry, which the binaries serve on `/metrics`).
    pub fn auth_metrics(&self) -> &AuthMetrics {
        &self.auth_metrics
    }

    /// Stop everything: the subnet's hook, heartbeats, consensus, RPC, DHT.
    pub async fn shutdown(mut self) {
        if let Some(hook) = self.stop_hook.take() {
            hook().await;
        }
        self.ctx.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.ctx.dht.shutdown().await;
        self.stopped = true;
        tracing::info!("node runtime stopped");
    }
}
