//! # mesh-subnet-echo
//!
//! The reference subnet: the smallest application that uses every part of
//! the runtime, written only against `mesh-server`'s public API. Tests, the
//! docs and `mesh devnet` run it.
//!
//! - **Service**: `mesh.echo.Echo` ([`service`], `proto/echo.proto`): `Say`
//!   echoes a text with the caller's PeerId, `Count` streams numbers.
//! - **Heartbeat**: [`EchoInfo`], the server's version and how many calls
//!   it has served.
//! - **Score**: every peer with a live heartbeat scores [`ALIVE_SCORE`];
//!   nodes whose heartbeat lapsed are left out. Every honest node computes
//!   the same scores from the same heartbeats, so validators attest.
//!
//! ```no_run
//! # async fn demo(config: mesh_server::RuntimeConfig) -> Result<(), mesh_server::RuntimeError> {
//! use std::sync::Arc;
//! let node = mesh_server::Runtime::start(config, Arc::new(mesh_subnet_echo::EchoSubnet::new())).await?;
//! // ... serve until asked to stop ...
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use libp2p::PeerId;
use mesh_server::heartbeat::Heartbeat;
use mesh_server::runtime::HookFuture;
use mesh_server::{Subnet, SubnetContext};
use proto::echo_server::EchoServer;
use serde::{Deserialize, Serialize};

pub mod service;

pub use service::{proto, EchoService};

/// The name `mesh-server --subnet` knows this subnet by.
pub const NAME: &str = "echo";

/// The score of a peer whose heartbeat is alive (1.0 with 18 decimals).
pub const ALIVE_SCORE: u128 = 1_000_000_000_000_000_000;

/// What an echo server publishes in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoInfo {
    /// The server's software version.
    pub version: String,
    /// Calls served since it started.
    pub served: u64,
}

/// The echo subnet.
#[derive(Debug, Clone, Default)]
pub struct EchoSubnet {
    service: EchoService,
}

impl EchoSubnet {
    /// A fresh echo subnet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The service it serves (clones share its counters).
    pub fn service(&self) -> &EchoService {
        &self.service
    }
}

impl Subnet for EchoSubnet {
    type Info = EchoInfo;

    fn routes(&self, _ctx: &SubnetContext) -> tonic::service::Routes {
        tonic::service::Routes::new(EchoServer::new(self.service.clone()))
    }

    fn heartbeat(&self) -> EchoInfo {
        EchoInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            served: self.service.served(),
        }
    }

    fn score<'a>(
        &'a self,
        _epoch: u32,
        alive: &'a [Heartbeat<EchoInfo>],
    ) -> HookFuture<'a, Vec<(PeerId, u128)>> {
        Box::pin(async move { scores(alive) })
    }
}

/// [`ALIVE_SCORE`] for every peer with a heartbeat, each once.
pub fn scores(alive: &[Heartbeat<EchoInfo>]) -> Vec<(PeerId, u128)> {
    let mut peers: Vec<PeerId> = alive.iter().map(|h| h.peer_id).collect();
    peers.sort();
    peers.dedup();
    peers.into_iter().map(|p| (p, ALIVE_SCORE)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alive_peer_scores_once() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let beat = |peer_id| Heartbeat {
            peer_id,
            info: EchoInfo {
                version: "1".into(),
                served: 0,
            },
            expiration: mesh_core::Expiration::in_(std::time::Duration::from_secs(60)),
        };
        let got = scores(&[beat(a), beat(b), beat(a)]);
        let mut want = vec![(a, ALIVE_SCORE), (b, ALIVE_SCORE)];
        want.sort();
        assert_eq!(got, want);
        assert!(scores(&[]).is_empty());
    }
}
