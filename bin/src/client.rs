//! How a client-mode node joins a subnet: the flags `mesh-infer` and
//! `mesh-gateway` share.

use std::path::PathBuf;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mesh_core::{CachedStakeOracle, KeyType, NodeClass, PeerKey, StakeGate, SubnetId};
use mesh_dht::{Dht, DhtConfig, Multiaddr};

use crate::secs;

/// Joining a subnet as a client (never in routing tables, dials out only).
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    /// Peers to join through, each a multiaddr ending in /p2p/<PeerId>.
    #[arg(long = "initial_peers", alias = "initial-peers", num_args = 1.., value_name = "MULTIADDR", required = true)]
    pub initial_peers: Vec<Multiaddr>,
    /// The subnet's id on chain (its DHT and RPC protocols are /mesh/<subnet_id>/…).
    #[arg(long = "subnet_id", alias = "subnet-id", default_value = "0")]
    pub subnet_id: SubnetId,
    /// The client's key file; in a staked subnet its PeerId must be a
    /// registered node's client PeerId. Without it a fresh identity is used.
    #[arg(long = "identity_path", alias = "identity-path", value_name = "PATH")]
    pub identity_path: Option<PathBuf>,
    /// Seconds to wait for the initial peers.
    #[arg(
        long = "bootstrap_timeout",
        alias = "bootstrap-timeout",
        default_value_t = 15.0
    )]
    pub bootstrap_timeout: f64,
    /// The chain's RPC endpoint (e.g. ws://127.0.0.1:9944). With it, the
    /// client checks stake as servers do: only staked servers' heartbeats
    /// count and only staked peers are asked, so an unstaked peer cannot
    /// steer requests with made-up heartbeats. Without it (a subnet with no
    /// chain) every heartbeat counts.
    #[arg(long = "rpc_url", alias = "rpc-url", value_name = "URL")]
    pub rpc_url: Option<String>,
}

impl JoinArgs {
    /// The key from --identity_path, or a fresh one.
    pub fn key(&self) -> Result<PeerKey> {
        match &self.identity_path {
            Some(path) => PeerKey::read_file(path)
                .with_context(|| format!("reading the client key {}", path.display())),
            None => Ok(PeerKey::generate(KeyType::Ed25519)?),
        }
    }

    /// Joins the subnet's DHT in client mode with `key`.
    pub async fn join(&self, key: PeerKey) -> Result<Dht> {
        let mut config = DhtConfig::new(key);
        config.subnet_id = self.subnet_id;
        config.client_mode = true;
        config.initial_peers = self.initial_peers.clone();
        config.bootstrap_timeout = secs(self.bootstrap_timeout, "--bootstrap_timeout")?;
        match &self.rpc_url {
            Some(url) => {
                let chain = mesh_chain::ChainClient::connect(url)
                    .await
                    .with_context(|| format!("cannot reach the chain at {url}"))?;
                // Answers cached for 30 s: a client runs briefly or reads
                // rarely; servers follow blocks for faster updates.
                let oracle = CachedStakeOracle::new(
                    mesh_chain::ChainStakeOracle::new(chain),
                    Duration::from_secs(30),
                );
                config.stake_gate = Some(StakeGate::new(
                    Arc::new(oracle),
                    self.subnet_id,
                    NodeClass::Registered,
                ));
            }
            None => tracing::warn!(
                "no --rpc_url: heartbeats are not checked against stake (right for a subnet without a chain)"
            ),
        }
        Dht::start(config).await.context("joining the DHT")
    }
}
