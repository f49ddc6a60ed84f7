//! Test utilities (feature `test-utils`): a staked inference server as
//! `mesh-server` runs one, in this process.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::{NodeClass, PeerKey, StakeGate, StakeOracle, SubnetId};
use mesh_dht::{DhtConfig, Multiaddr};
use mesh_server::{Runtime, RuntimeConfig, RuntimeError, StakeAuthorizer};

use crate::InferenceSubnet;

/// Starts `subnet` on a node of `subnet_id` with `key`, on 127.0.0.1: the
/// stake gate on its DHT and the rate-limit, stake and signature
/// authorizers in front of its RPC (as `mesh-server` orders them), over
/// `oracle`; heartbeats every 500 ms; joined through `initial_peers`.
pub async fn staked_server(
    key: PeerKey,
    subnet_id: SubnetId,
    oracle: Arc<dyn StakeOracle>,
    initial_peers: Vec<Multiaddr>,
    subnet: InferenceSubnet,
) -> Result<Runtime, RuntimeError> {
    let gate = StakeGate::new(oracle, subnet_id, NodeClass::Registered);
    let mut dht = DhtConfig::new(key.clone());
    dht.subnet_id = subnet_id;
    dht.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid address")];
    dht.initial_peers = initial_peers;
    dht.bootstrap_timeout = Duration::from_secs(10);
    dht.stake_gate = Some(gate.clone());
    let authorizers =
        mesh_server::standard_authorizers(key.peer_id(), Some(StakeAuthorizer::from_gate(gate)));
    let config = RuntimeConfig {
        dht,
        update_period: Duration::from_millis(500),
        authorizers,
        chain: None,
    };
    Runtime::start(config, Arc::new(subnet)).await
}
