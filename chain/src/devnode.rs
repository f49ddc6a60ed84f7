//! Start and stop a local `mesh-chain-node --dev` for tests and demos.
//!
//! [`DevNode::start`] runs the binary with temporary state, free ports and
//! fast blocks, waits until its JSON-RPC server is up and hands back the
//! `ws://` URL. The process is killed when the [`DevNode`] is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Environment variable naming the `mesh-chain-node` binary to start.
pub const NODE_ENV: &str = "MESH_CHAIN_NODE";

/// Why a dev node did not start.
#[derive(Debug, thiserror::Error)]
pub enum DevNodeError {
    /// The binary is not built.
    #[error(
        "mesh-chain-node not found (looked at {looked}); build it with scripts/build-chain.sh \
         or point {NODE_ENV} at it"
    )]
    NotBuilt {
        /// The places looked at.
        looked: String,
    },
    /// The process could not be spawned.
    #[error("could not start {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It exited or said nothing about its RPC server in time.
    #[error(
        "mesh-chain-node did not open its RPC server within {timeout:?}; its last output:\n{log}"
    )]
    NoRpc {
        /// How long we waited.
        timeout: Duration,
        /// Its last lines of output.
        log: String,
    },
}

/// Options of a dev node.
#[derive(Debug, Clone)]
pub struct DevNodeOptions {
    /// Milliseconds between blocks (default 250: an epoch of 10 blocks is 2.5 s).
    pub block_millis: u64,
    /// How long to wait for the RPC server (default 120 s).
    pub start_timeout: Duration,
    /// The binary; found by [`find_node_binary`] when `None`.
    pub binary: Option<PathBuf>,
    /// The RPC port; a free one when `None`.
    pub rpc_port: Option<u16>,
    /// Keep the chain's state here (so a restart continues the same chain);
    /// a temporary directory removed on exit when `None`.
    pub base_path: Option<PathBuf>,
}

impl Default for DevNodeOptions {
    fn default() -> Self {
        Self {
            block_millis: 250,
            start_timeout: Duration::from_secs(120),
            binary: None,
            rpc_port: None,
            base_path: None,
        }
    }
}

/// A running `mesh-chain-node --dev --tmp`; killed on drop.
pub struct DevNode {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl DevNode {
    /// Start a node with default options.
    pub fn start() -> Result<Self, DevNodeError> {
        Self::start_with(DevNodeOptions::default())
    }

    /// Start a node.
    pub fn start_with(options: DevNodeOptions) -> Result<Self, DevNodeError> {
        let binary = match options.binary {
            Some(path) => path,
            None => find_node_binary()?,
        };
        let mut child = Command::new(&binary)
            .args(["--dev", "--port", "0", "--no-prometheus"])
            .args(["--rpc-port", &options.rpc_port.unwrap_or(0).to_string()])
            .args(match &options.base_path {
                Some(path) => vec!["--base-path".to_owned(), path.display().to_string()],
                None => vec!["--tmp".to_owned()],
            })
            .args(["--no-telemetry", "--no-mdns", "--block-millis"])
            .arg(options.block_millis.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DevNodeError::Spawn {
                path: binary.clone(),
                source,
            })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = rpc_addr(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() > 2_000 {
                    log.drain(..1_000);
                }
                log.push(line);
            }
        });
        let deadline = Instant::now() + options.start_timeout;
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(addr) => break Some(addr),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                        break None;
                    }
                }
            }
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            let lines = log.lock().unwrap_or_else(|e| e.into_inner());
            let tail = lines
                .iter()
                .rev()
                .take(30)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(DevNodeError::NoRpc {
                timeout: options.start_timeout,
                log: tail,
            });
        };
        Ok(Self {
            child,
            url: format!("ws://{addr}"),
            log,
        })
    }

    /// The node's JSON-RPC URL (`ws://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The RPC port.
    pub fn rpc_port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The node's output so far (at most the last ~2,000 lines).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Running JSON-RPC server: addr=127.0.0.1:9944,` → `127.0.0.1:9944`.
fn rpc_addr(line: &str) -> Option<String> {
    let rest = line.split("Running JSON-RPC server: addr=").nth(1)?;
    let addr = rest.split([',', ' ']).next()?.trim();
    (!addr.is_empty()).then(|| addr.to_owned())
}

/// Register `peer_id` as a node of `subnet_id` on a dev chain: `hotkey`'s
/// node, paid by `coldkey`, with 100 tokens of stake and random bootnode and
/// client PeerIds. Returns the new node id. For tests and demos.
pub async fn register_dev_node(
    client: &crate::ChainClient,
    coldkey: &crate::Keypair,
    subnet_id: mesh_core::SubnetId,
    hotkey: &crate::Keypair,
    peer_id: mesh_core::PeerId,
) -> Result<u32, crate::ChainError> {
    let client_peer_id = mesh_core::PeerId::random();
    register_dev_node_with_client(client, coldkey, subnet_id, hotkey, peer_id, client_peer_id).await
}

/// [`register_dev_node`] with the node's client PeerId given: the key its
/// operator's clients (e.g. `mesh-infer`) call the subnet with.
pub async fn register_dev_node_with_client(
    client: &crate::ChainClient,
    coldkey: &crate::Keypair,
    subnet_id: mesh_core::SubnetId,
    hotkey: &crate::Keypair,
    peer_id: mesh_core::PeerId,
    client_peer_id: mesh_core::PeerId,
) -> Result<u32, crate::ChainError> {
    let registration = crate::RegisterNode {
        subnet_id,
        hotkey: hotkey.public_key().to_account_id(),
        peer_id,
        bootnode_peer_id: mesh_core::PeerId::random(),
        client_peer_id,
        bootnode: None,
        delegate_reward_rate: 0,
        stake_to_be_added: crate::Amount::tokens(100),
        unique: None,
        non_unique: None,
        max_burn_amount: crate::Amount::tokens(1),
    };
    client.register_node(coldkey, &registration).await
}

/// Where the node binary is: `$MESH_CHAIN_NODE`, else
/// `$CARGO_TARGET_DIR/release/mesh-chain-node`, else
/// `chain/substrate/target/release/mesh-chain-node` in this repository.
pub fn find_node_binary() -> Result<PathBuf, DevNodeError> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os(NODE_ENV) {
        candidates.push(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(Path::new(&dir).join("release/mesh-chain-node"));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("substrate/target/release/mesh-chain-node"),
    );
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cache/mesh-target/release/mesh-chain-node"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| DevNodeError::NotBuilt {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rpc_address_in_the_log_line() {
        let line = "2026-11-22 06:00:00 Running JSON-RPC server: addr=127.0.0.1:41234,";
        assert_eq!(rpc_addr(line).as_deref(), Some("127.0.0.1:41234"));
        let two = "Running JSON-RPC server: addr=127.0.0.1:9944, [::1]:9944";
        assert_eq!(rpc_addr(two).as_deref(), Some("127.0.0.1:9944"));
        assert_eq!(rpc_addr("Idle (0 peers)"), None);
    }
}
