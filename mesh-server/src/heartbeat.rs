//! Heartbeats: every node says "I am alive, and this is what I serve".
//!
//! A heartbeat is a signed DHT record under [`HEARTBEAT_KEY`]: the subkey is
//! the node's owner marker (so only that node can write it — the DHT's
//! signature validator checks it on every replica), the value is the
//! subnet's typed server info as JSON, and it expires after two update
//! periods, so a node that stops publishing drops out on its own.
//! [`alive_peers`] reads them back, newest across replicas.

use std::time::Duration;

use libp2p::identity::PublicKey;
use libp2p::PeerId;
use mesh_core::validator::{owner_in_field, owner_marker};
use mesh_core::{Expiration, StoredValue};
use mesh_dht::{Dht, StoreReport};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The DHT key of a subnet's heartbeats (each subnet has its own DHT
/// protocol); every DHT node refuses records under it whose subkey names no
/// owner ([`mesh_core::validator::framework_keys`]).
pub use mesh_core::validator::HEARTBEAT_KEY;

/// One node's latest heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat<T> {
    /// Who published it (proven by its signature).
    pub peer_id: PeerId,
    /// The subnet's server info.
    pub info: T,
    /// When it lapses unless renewed.
    pub expiration: Expiration,
}

/// Why a heartbeat could not be published or read.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The info could not be written as JSON.
    #[error("heartbeat info is not serializable: {0}")]
    Encode(#[from] serde_json::Error),
    /// The DHT failed.
    #[error(transparent)]
    Dht(#[from] mesh_dht::DhtError),
}

/// Publish one heartbeat for `public`'s node (the DHT node must hold that key).
pub async fn publish<T: Serialize>(
    dht: &Dht,
    public: &PublicKey,
    info: &T,
    update_period: Duration,
) -> Result<StoreReport, HeartbeatError> {
    let value = serde_json::to_vec(info)?;
    let expiration = Expiration::in_(update_period * 2);
    Ok(dht
        .store(
            HEARTBEAT_KEY.to_vec(),
            Some(owner_marker(public)),
            value,
            expiration,
        )
        .await?)
}

/// Every live heartbeat whose info parses as `T` (others are skipped and
/// logged) and whose owner this node admits ([`Dht::is_admitted`]: with a
/// stake gate, staked owners only). A staked node may store heartbeats for
/// keys it made up (each is validly signed by its made-up owner); they do
/// not count, so discovery, routing by load and consensus scoring see
/// staked nodes only.
pub async fn alive_peers<T: DeserializeOwned>(
    dht: &Dht,
) -> Result<Vec<Heartbeat<T>>, HeartbeatError> {
    let Some(StoredValue::Dictionary(entries)) = dht.get(HEARTBEAT_KEY.to_vec(), true).await?
    else {
        return Ok(Vec::new());
    };
    // After the read: what expired while it ran is not alive.
    let now = Expiration::now();
    let mut alive = Vec::new();
    for (subkey, item) in entries {
        if item.expiration <= now {
            continue;
        }
        let Ok(Some(owner)) = owner_in_field(&subkey) else {
            tracing::debug!("heartbeat without an owner marker skipped");
            continue;
        };
        match serde_json::from_slice::<T>(&item.value) {
            Ok(info) => alive.push(Heartbeat {
                peer_id: owner.to_peer_id(),
                info,
                expiration: item.expiration,
            }),
            Err(e) => {
                tracing::debug!(peer = %owner.to_peer_id(), "heartbeat info does not parse: {e}");
            }
        }
    }
    let verdicts =
        futures::future::join_all(alive.iter().map(|h| dht.is_admitted(h.peer_id))).await;
    let mut admitted = Vec::with_capacity(alive.len());
    for (h, ok) in alive.into_iter().zip(verdicts) {
        if ok? {
            admitted.push(h);
        } else {
            tracing::debug!(peer = %h.peer_id, "heartbeat of an owner not staked here skipped");
        }
    }
    admitted.sort_by_key(|h| h.peer_id);
    Ok(admitted)
}

/// Publish `info()` every `update_period` until `cancel`; failures are logged
/// and retried at the next period.
pub fn spawn_heartbeats<T, F>(
    dht: Dht,
    public: PublicKey,
    info: F,
    update_period: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()>
where
    T: Serialize + Send + Sync + 'static,
    F: Fn() -> T + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(update_period);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match publish(&dht, &public, &info(), update_period).await {
                Ok(report) if report.accepted > 0 => {
                    tracing::debug!(accepted = report.accepted, "heartbeat published");
                }
                Ok(report) => tracing::warn!(?report, "heartbeat accepted by no replica"),
                Err(e) => tracing::warn!("heartbeat not published: {e}"),
            }
        }
    })
}
