//! `mesh-server` and `mesh devnet` as a user runs them: real processes on
//! loopback, the real dev chain where a chain is involved.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_chain::devnode::{register_dev_node, register_dev_node_with_client, DevNode};
use mesh_chain::{ChainClient, SignerSource};
use mesh_core::{KeyType, PeerId, PeerKey};
use mesh_dht::{Dht, DhtConfig, Multiaddr};
use mesh_server::signature::signed;
use mesh_subnet_echo::proto::echo_client::EchoClient;
use mesh_subnet_echo::proto::SayRequest;

const SERVER: &str = env!("CARGO_BIN_EXE_mesh-server");
const MESH: &str = env!("CARGO_BIN_EXE_mesh");
const MESH_DHT: &str = env!("CARGO_BIN_EXE_mesh-dht");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("PHRASE")
        .env_remove("PRIVATE_KEY")
        .env_remove("MESH_KEY_FILE")
        .env_remove("MESH_RPC_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs `args` and expects a failure whose stderr contains `want`.
fn fails_with(args: &[&str], want: &str) {
    let out = run(SERVER, args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail; stderr: {err}");
    assert!(
        err.contains(want),
        "{args:?}: want {want:?} in stderr: {err}"
    );
}

/// A running process whose output lines are collected.
struct Proc {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Proc {
        stdout: lines(child.stdout.take().unwrap()),
        stderr: lines(child.stderr.take().unwrap()),
        child,
    }
}

impl Proc {
    /// Output lines until one contains `want` (all of them, that one last).
    fn until(&self, want: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .stdout
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    let hit = line.contains(want);
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if left > Duration::ZERO => {}
                Err(_) => {
                    let err: Vec<String> = self.stderr.try_iter().collect();
                    panic!(
                        "no line with {want:?} within {limit:?}; stdout: {seen:#?}\nstderr (last): {:#?}",
                        &err[err.len().saturating_sub(40)..]
                    );
                }
            }
        }
    }

    /// Send `signal`, expect a clean exit within `limit`; returns the stderr lines.
    fn stop(mut self, signal: libc::c_int, limit: Duration) -> Vec<String> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let err: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "clean exit: {status}; stderr: {err:#?}");
        err
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mesh-server` prints `mesh-server <PeerId> …` and then its addresses.
fn started(proc: &Proc) -> (PeerId, Multiaddr) {
    let out = proc.until("--initial_peers", Duration::from_secs(60));
    let head = out
        .iter()
        .find(|l| l.starts_with("mesh-server "))
        .expect("a start line");
    let peer: PeerId = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let addr = out
        .last()
        .unwrap()
        .trim()
        .strip_prefix("--initial_peers ")
        .unwrap()
        .parse()
        .unwrap();
    (peer, addr)
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn help_explains_the_flags() {
    let out = run(SERVER, &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--subnet ",
        "--subnet_id",
        "--subnet_node_id",
        "--host_maddrs",
        "--announce_maddrs",
        "--initial_peers",
        "--new_swarm",
        "--identity_path",
        "--update_period",
        "--rpc_url",
        "--phrase",
        "--private_key",
        "--key_file",
        "--metrics",
        "--log_json",
        "--no_chain",
        "--client_mode",
        "--relay_server",
        "--public_ip",
        "--use_relay",
        "--use_auto_relay",
        "--allow_private_addrs",
        "--upnp",
        // The inference subnet's own flags, under their own heading.
        "Inference subnet (--subnet inference)",
        "--model",
        "--backend",
        "--max_batch",
        "--embed_model",
    ] {
        assert!(help.contains(flag), "--help names {flag}: {help}");
    }
    let out = run(MESH, &["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("devnet"));
    let out = run(MESH, &["devnet", "--help"]);
    assert!(text(&out.stdout).contains("--nodes"));
}

#[test]
fn wrong_arguments_fail_clearly() {
    let unreachable = format!("ws://127.0.0.1:{}", free_port());
    let local = ["--host_maddrs", "/ip4/127.0.0.1/tcp/0"];
    fails_with(&["--no_chain"], "--initial_peers");
    fails_with(&["--subnet", "nope", "--no_chain", "--new_swarm"], "nope");
    // Each subnet's flags belong to it.
    fails_with(
        &[
            "--no_chain",
            "--new_swarm",
            "--max_batch",
            "4",
            "--model",
            "m.gguf",
        ],
        "--model, --max_batch belong to --subnet inference, not --subnet echo",
    );
    fails_with(
        &["--no_chain", "--new_swarm", "--subnet_id", "seven"],
        "a subnet id is the chain's number",
    );
    fails_with(
        &["--new_swarm", "--initial_peers", "/ip4/127.0.0.1/tcp/1"],
        "cannot be used with",
    );
    fails_with(
        &["--no_chain", "--new_swarm", "--attest_window", "2"],
        "--attest_window",
    );
    fails_with(
        &["--no_chain", "--new_swarm", "--update_period", "0"],
        "--update_period must be a positive number",
    );
    fails_with(
        &["--new_swarm", "--phrase", "//Bob"],
        "--subnet_id is required",
    );
    fails_with(
        &["--new_swarm", "--subnet_id", "1", "--rpc_url", &unreachable],
        "--phrase",
    );
    let mut args = vec![
        "--new_swarm",
        "--subnet_id",
        "1",
        "--phrase",
        "//Bob",
        "--rpc_url",
        &unreachable,
    ];
    args.extend(local);
    fails_with(&args, "cannot reach the chain");
    fails_with(&["--new_swarm", "--initial_peers"], "--initial_peers");
    fails_with(
        &[
            "--no_chain",
            "--new_swarm",
            "--client_mode",
            "--relay_server",
        ],
        "cannot be used with",
    );
}

/// Two servers without a chain: they serve RPC (a client node calls both),
/// serve metrics, stop cleanly on SIGTERM, and a restart keeps the PeerId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_serve_rpc_and_metrics_stop_cleanly_and_restart_with_their_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (a_key, b_key) = (dir.path().join("a.key"), dir.path().join("b.key"));
    let metrics = format!("127.0.0.1:{}", free_port());
    let base = |key: &Path| {
        vec![
            "--no_chain".to_owned(),
            "--host_maddrs".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
            "--update_period".into(),
            "1".into(),
            "--identity_path".into(),
            key.display().to_string(),
        ]
    };
    let mut a_args = base(&a_key);
    a_args.extend(["--new_swarm".into(), "--metrics".into(), metrics.clone()]);
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = spawn(SERVER, &a_refs, &[]);
    let (a_id, a_addr) = started(&a);
    assert!(a_key.exists(), "the identity file was written");

    let mut b_args = base(&b_key);
    b_args.extend(["--initial_peers".into(), a_addr.to_string()]);
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let b = spawn(SERVER, &b_refs, &[]);
    let (b_id, _) = started(&b);

    // A client-mode node calls both servers' echo service, signing its calls.
    let client_key = Arc::new(PeerKey::generate(KeyType::Ed25519).unwrap());
    let mut config = DhtConfig::new((*client_key).clone());
    config.subnet_id = mesh_core::SubnetId::default();
    config.client_mode = true;
    config.initial_peers = vec![a_addr.clone()];
    let client = Dht::start(config).await.unwrap();
    for peer in [a_id, b_id] {
        let channel = mesh_server::connect(
            client.streams(),
            peer,
            mesh_server::rpc_protocol(mesh_core::SubnetId::default()),
            Duration::from_secs(10),
        );
        let ping = || SayRequest {
            text: "ping".into(),
            delay_ms: 0,
        };
        let refused = EchoClient::new(channel.clone())
            .say(ping())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().starts_with("signature: "), "{refused:?}");
        let reply = EchoClient::new(signed(channel, client_key.clone(), peer))
            .say(ping())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.caller, client.peer_id().to_base58());
    }
    client.shutdown().await;

    let scraped = http_get(&metrics, "/metrics");
    assert!(
        scraped.contains("mesh_dht_routing_table_peers"),
        "{scraped}"
    );
    // a refused the unsigned call and let the signed one through.
    assert!(
        scraped.contains("mesh_rpc_calls_refused_total{authorizer=\"signature\"} 1"),
        "{scraped}"
    );
    assert!(
        scraped.contains("mesh_rpc_calls_allowed_total 1"),
        "{scraped}"
    );

    // `--client_mode`: joins, says it serves nothing, stops cleanly.
    let c_args = [
        "--no_chain",
        "--client_mode",
        "--host_maddrs",
        "/ip4/127.0.0.1/tcp/0",
        "--initial_peers",
        &a_addr.to_string(),
    ]
    .map(String::from);
    let c_refs: Vec<&str> = c_args.iter().map(String::as_str).collect();
    let c = spawn(SERVER, &c_refs, &[]);
    c.until("in client mode", Duration::from_secs(30));
    let logs = c.stop(libc::SIGTERM, Duration::from_secs(15));
    assert!(
        logs.iter()
            .any(|l| l.contains("node runtime started in client mode")),
        "{logs:#?}"
    );

    let logs = b.stop(libc::SIGTERM, Duration::from_secs(15));
    assert!(
        logs.iter().any(|l| l.contains("node runtime stopped")),
        "{logs:#?}"
    );
    let b = spawn(SERVER, &b_refs, &[]);
    let (again, _) = started(&b);
    assert_eq!(again, b_id, "same identity after a restart");
    b.stop(libc::SIGINT, Duration::from_secs(15));
    a.stop(libc::SIGTERM, Duration::from_secs(15));
}

/// With a chain: a server whose identity is not the PeerId its hotkey's node
/// was registered with refuses to start, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_identity_than_registered_refuses_to_start() {
    let chain = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let signer = |uri: &str| SignerSource::Phrase(uri.into()).keypair().unwrap();
    let subnet_id = client
        .create_subnet(&signer("//Alice"), "cli", true)
        .await
        .unwrap();
    let registered = PeerId::random();
    let id = register_dev_node(
        &client,
        &signer("//Alice"),
        subnet_id,
        &signer("//Bob"),
        registered,
    )
    .await
    .unwrap();
    let subnet = subnet_id.to_string();
    let other = (id + 1).to_string();
    let base = [
        "--new_swarm",
        "--host_maddrs",
        "/ip4/127.0.0.1/tcp/0",
        "--subnet_id",
        &subnet,
        "--rpc_url",
        chain.url(),
        "--phrase",
        "//Bob",
    ];
    fails_with(&base, &format!("registered with PeerId {registered}"));
    let mut wrong_id = base.to_vec();
    wrong_id.extend(["--subnet_node_id", &other]);
    fails_with(&wrong_id, "is not this hotkey's node");
}

/// The README's first command: a whole local subnet, up, in consensus, and
/// stopped cleanly by Ctrl-C.
#[test]
fn devnet_runs_a_subnet_to_consensus_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();
    let devnet = spawn(
        MESH,
        &[
            "devnet",
            "--nodes",
            "3",
            "--base_port",
            "0",
            "--chain_rpc_port",
            "0",
            "--block_millis",
            "300",
            "--update_period",
            "1",
            "--timeout",
            "180",
            "--dir",
            &dir_arg,
        ],
        &[],
    );
    let out = devnet.until("devnet ready", Duration::from_secs(200));
    let text = out.join("\n");
    assert!(text.contains("all 3 nodes are up"), "{text}");
    let landed = out
        .iter()
        .find(|l| l.starts_with("first consensus landed"))
        .expect("the consensus line");
    assert!(landed.contains("scores for 3 node(s)"), "{landed}");
    // An unstaked client that stores through the bootnode is refused by
    // every replica, the bootnode included (it runs the stake gate too).
    let boot = out
        .iter()
        .find_map(|l| l.strip_prefix("bootnode: "))
        .expect("the bootnode line")
        .to_string();
    let subnet = out
        .iter()
        .find_map(|l| l.strip_prefix("subnet ")?.split(' ').next())
        .expect("the subnet line")
        .to_string();
    let boot_id = boot.rsplit('/').next().unwrap().to_string();
    let stored = run(
        MESH_DHT,
        &[
            "store",
            "--subnet_id",
            &subnet,
            "--initial_peers",
            &boot,
            "squat",
            "here",
        ],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&stored.stdout),
        String::from_utf8_lossy(&stored.stderr)
    );
    assert!(!stored.status.success(), "{said}");
    assert!(said.contains("stored on 0 replicas"), "{said}");
    assert!(
        said.contains(&format!("refused by {boot_id}")) && said.contains("not staked"),
        "the bootnode refuses an unstaked writer: {said}"
    );
    devnet.stop(libc::SIGINT, Duration::from_secs(60));
    for i in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("logs/node-{i}.log"))).unwrap();
        assert!(log.contains("node runtime started"), "node {i}: {log}");
        assert!(
            log.contains("node runtime stopped"),
            "node {i} stopped cleanly: {log}"
        );
        assert!(dir.path().join(format!("keys/node-{i}.key")).exists());
    }
}

/// The inference subnet from the command line: a staked `mesh-server
/// --subnet inference` with the real model, and `mesh-infer` (with the
/// registered client key) streaming its answer to stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_infer_streams_from_a_staked_inference_server() {
    let chain = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let signer = |uri: &str| SignerSource::Phrase(uri.into()).keypair().unwrap();
    let alice = signer("//Alice");
    let subnet_id = client
        .create_subnet(&alice, "inference", true)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server_key, client_key) = (dir.path().join("server.key"), dir.path().join("client.key"));
    let server = PeerKey::generate(KeyType::Ed25519).unwrap();
    let asker = PeerKey::generate(KeyType::Ed25519).unwrap();
    server.write_file(&server_key, false).unwrap();
    asker.write_file(&client_key, false).unwrap();
    register_dev_node_with_client(
        &client,
        &alice,
        subnet_id,
        &signer("//Bob"),
        server.peer_id(),
        asker.peer_id(),
    )
    .await
    .unwrap();

    let subnet = subnet_id.to_string();
    let key_arg = server_key.display().to_string();
    let proc = spawn(
        SERVER,
        &[
            "--subnet",
            "inference",
            "--subnet_id",
            &subnet,
            "--new_swarm",
            "--host_maddrs",
            "/ip4/127.0.0.1/tcp/0",
            "--identity_path",
            &key_arg,
            "--rpc_url",
            chain.url(),
            "--update_period",
            "1",
            "--max_batch",
            "2",
        ],
        &[("PHRASE", "//Bob")],
    );
    let (peer, addr) = started(&proc);
    assert_eq!(peer, server.peer_id());
    // Its first heartbeat is in the DHT right after the start.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // With --rpc_url the client checks stake itself: the staked server's
    // heartbeat counts (an unstaked peer's would not).
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-infer"))
        .args(["--initial_peers", &addr.to_string(), "--subnet_id", &subnet])
        .args(["--rpc_url", chain.url()])
        .arg("--identity_path")
        .arg(&client_key)
        .args(["--max_tokens", "12", "What is the capital of France?"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "mesh-infer: {stderr}");
    assert!(
        !stderr.contains("not checked against stake"),
        "with --rpc_url stake is checked: {stderr}"
    );
    assert!(
        !stdout.trim().is_empty(),
        "an answer on stdout; stderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("served by {peer}")),
        "stderr names the server: {stderr}"
    );

    // A key that is nobody's client is refused, clearly.
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-infer"))
        .args(["--initial_peers", &addr.to_string(), "--subnet_id", &subnet])
        .args(["--max_tokens", "4", "hello"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("stake: ") && stderr.contains("not staked"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no --rpc_url: heartbeats are not checked against stake"),
        "without --rpc_url the client says it trusts every heartbeat: {stderr}"
    );
    proc.stop(libc::SIGTERM, Duration::from_secs(20));
}

/// `mesh devnet --subnet inference`: staked SmolLM2 servers and the
/// gateway; a chat completion through the printed address answers.
#[test]
fn devnet_serves_the_model_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();
    let devnet = spawn(
        MESH,
        &[
            "devnet",
            "--subnet",
            "inference",
            "--nodes",
            "2",
            "--base_port",
            "0",
            "--chain_rpc_port",
            "0",
            "--gateway_port",
            "0",
            "--block_millis",
            "300",
            "--update_period",
            "1",
            "--timeout",
            "180",
            "--dir",
            &dir_arg,
        ],
        &[],
    );
    let out = devnet.until("devnet ready", Duration::from_secs(200));
    let text = out.join("\n");
    assert!(text.contains("all 2 nodes are up"), "{text}");
    let gateway = out
        .iter()
        .find_map(|l| l.strip_prefix("gateway: http://"))
        .and_then(|l| l.split('/').next())
        .unwrap_or_else(|| panic!("the gateway's address: {text}"))
        .to_string();
    assert!(text.contains("curl http://"), "{text}");
    let body = r#"{"model": "Smollm2 135M 8k Lc100K Mix1 Ep2", "max_tokens": 16, "temperature": 0, "messages": [{"role": "user", "content": "What is the capital of France?"}]}"#;
    let mut stream = TcpStream::connect(&gateway).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {gateway}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Paris"), "{answer}");
    assert!(
        http_get(&gateway, "/v1/models").contains("all-MiniLM-L6-v2"),
        "node 1 embeds"
    );
    devnet.stop(libc::SIGINT, Duration::from_secs(60));
}
