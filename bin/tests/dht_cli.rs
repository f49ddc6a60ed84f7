//! The `mesh-dht` binary end to end: two daemons find each other, the client
//! subcommands store and read, metrics are served, SIGTERM shuts down
//! cleanly, and a restart keeps the PeerId.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mesh-dht");

struct Daemon {
    child: Child,
    addrs: Vec<String>,
    peer_id: String,
    stderr: mpsc::Receiver<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str]) -> Daemon {
    spawn_in("42", args)
}

/// A daemon of subnet `subnet`.
fn spawn_in(subnet: &str, args: &[&str]) -> Daemon {
    let mut child = Command::new(BIN)
        .args([
            "--host_maddrs",
            "/ip4/127.0.0.1/tcp/0",
            "--refresh_period",
            "1",
            "--subnet_id",
            subnet,
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (err_tx, err_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the daemon prints its addresses");
    assert!(first.starts_with("mesh-dht "), "{first}");
    let peer_id = first.split_whitespace().nth(1).unwrap().to_string();
    let mut addrs = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        if let Some(a) = line.trim().strip_prefix("--initial_peers ") {
            assert!(a.ends_with(&format!("/p2p/{peer_id}")), "{a}");
            addrs.push(a.to_string());
        }
    }
    assert!(!addrs.is_empty());
    Daemon {
        child,
        addrs,
        peer_id,
        stderr: err_rx,
    }
}

impl Daemon {
    fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status =
            wait_timeout(&mut self.child, Duration::from_secs(10)).expect("exits after SIGTERM");
        assert!(status.success(), "clean exit after SIGTERM: {status}");
        self.stderr.try_iter().collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn wait_timeout(child: &mut Child, d: Duration) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn client(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--subnet_id", "42"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn two_daemons_find_each_other_and_the_client_stores_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let boot_key = dir.path().join("boot.key");
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let boot = spawn(&[
        "--identity_path",
        boot_key.to_str().unwrap(),
        "--metrics",
        &metrics,
    ]);
    assert!(Path::new(&boot_key).exists(), "identity file created");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&boot_key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let second = spawn(&["--initial_peers", &boot.addrs[0]]);

    let out = client(&[
        "store",
        "--initial_peers",
        &boot.addrs[0],
        "greeting",
        "hello mesh",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("stored on 2 replicas"),
        "{}",
        text(&out.stdout)
    );

    // Read through the *second* daemon: it found the bootnode and holds a replica.
    let out = client(&["get", "--initial_peers", &second.addrs[0], "greeting"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "hello mesh");

    let out = client(&[
        "store",
        "--initial_peers",
        &second.addrs[0],
        "--subkey",
        "alice",
        "roster",
        "present",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = client(&[
        "get",
        "--initial_peers",
        &boot.addrs[0],
        "--latest",
        "--json",
        "roster",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dictionary"]["alice"]["value"], "present", "{v}");

    let out = client(&["get", "--initial_peers", &boot.addrs[0], "no-such-key"]);
    fails_with(&out, "not found");

    // Metrics: our own and libp2p's.
    std::thread::sleep(Duration::from_millis(1500));
    let m = scrape(metrics_port);
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(
        m.contains("mesh_dht_store_results_total{result=\"accepted\"}"),
        "{m}"
    );
    assert!(m.contains("mesh_dht_routing_table_peers 1"), "{m}");
    assert!(m.contains("libp2p_"), "{m}");

    let boot_id = boot.peer_id.clone();
    let second_logs = second.terminate();
    let boot_logs = boot.terminate();
    assert!(
        boot_logs
            .iter()
            .any(|l| l.contains("refresh") && l.contains("routing_table=1")),
        "{boot_logs:?}"
    );
    assert!(
        boot_logs.iter().any(|l| l.contains("shutting down")),
        "{boot_logs:?}"
    );
    assert!(
        second_logs
            .iter()
            .any(|l| l.contains("connected to initial peer")),
        "{second_logs:?}"
    );

    // Same identity file, same PeerId.
    let again = spawn(&["--identity_path", boot_key.to_str().unwrap()]);
    assert_eq!(again.peer_id, boot_id);
    again.terminate();
}

/// Asserts a command failed and said `msg` on stderr.
fn fails_with(out: &Output, msg: &str) {
    assert!(!out.status.success(), "expected a failure");
    assert!(text(&out.stderr).contains(msg), "{}", text(&out.stderr));
}

#[test]
fn wrong_arguments_fail_with_a_clear_message() {
    let out = client(&["get", "greeting"]);
    fails_with(&out, "--initial_peers is required");

    let out = client(&["get", "--initial_peers", "/ip4/127.0.0.1/tcp/1", "k"]);
    fails_with(&out, "/p2p/<PeerId>");

    let out = client(&["get", "--initial_peers", "not-a-multiaddr", "k"]);
    fails_with(&out, "invalid value");

    // A subnet is named by its chain id, nothing else.
    let out = Command::new(BIN)
        .args([
            "--subnet_id",
            "my-subnet",
            "--host_maddrs",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    fails_with(&out, "a subnet id is the chain's number for the subnet");

    let out = Command::new(BIN)
        .args([
            "--refresh_period",
            "0",
            "--host_maddrs",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    fails_with(&out, "--refresh_period must be a positive number");

    let out = Command::new(BIN)
        .args([
            "--max_ttl",
            "1e300",
            "--host_maddrs",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    fails_with(&out, "--max_ttl is too large");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, b"not a key").unwrap();
    let out = Command::new(BIN)
        .args([
            "--identity_path",
            bad.to_str().unwrap(),
            "--host_maddrs",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    fails_with(&out, "identity file");
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        b"not a key",
        "a bad identity file is never overwritten"
    );

    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = text(&out.stdout);
    for flag in [
        "--host_maddrs",
        "--announce_maddrs",
        "--initial_peers",
        "--identity_path",
        "--refresh_period",
        "--subnet_id",
        "--store_path",
        "--metrics",
        "--max_ttl",
        "--public_ip",
        "--use_relay",
        "--use_auto_relay",
        "--relay_server",
        "--allow_private_addrs",
        "--upnp",
    ] {
        assert!(help.contains(flag), "--help lists {flag}");
    }

    let out = Command::new(BIN)
        .args(["--port", "4444", "--host_maddrs", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    fails_with(&out, "--public_ip");
    let out = Command::new(BIN)
        .args([
            "--public_ip",
            "198.51.100.7",
            "--host_maddrs",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    fails_with(&out, "--public_ip needs --port");
    let out = Command::new(BIN)
        .args([
            "--use_relay",
            "maybe",
            "--host_maddrs",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    fails_with(&out, "invalid value 'maybe'");
}

#[test]
fn a_public_ip_is_announced_and_reachability_is_logged() {
    let boot = spawn(&["--public_ip", "198.51.100.7", "--port", "4444"]);
    let id = &boot.peer_id;
    for want in [
        format!("/ip4/198.51.100.7/tcp/4444/p2p/{id}"),
        format!("/ip4/198.51.100.7/udp/4444/quic-v1/p2p/{id}"),
    ] {
        assert!(boot.addrs.contains(&want), "{want} in {:?}", boot.addrs);
    }
    // The second node's AutoNAT probe goes through the bootnode, which dials
    // it back on loopback: it learns it is reachable and says so.
    let local: Vec<String> = boot
        .addrs
        .iter()
        .filter(|a| a.starts_with("/ip4/127.0.0.1/"))
        .cloned()
        .collect();
    let second = spawn(&[
        "--initial_peers",
        &local[0],
        "--use_relay",
        "false",
        "--relay_server",
        "false",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Ok(line) = second.stderr.recv_timeout(Duration::from_millis(200)) {
            if line.contains("reachable at /ip4/127.0.0.1/") {
                drop(second);
                return;
            }
            seen.push(line);
        }
    }
    panic!("no \"reachable at\" in the log:\n{}", seen.join("\n"));
}

/// A daemon that freezes (SIGSTOP: its connections stay open, nothing
/// answers) leaves a peer's routing table after two unanswered requests,
/// so lookups stop waiting on it; thawed (SIGCONT), it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_daemon_leaves_the_routing_table_and_comes_back_when_thawed() {
    use mesh_core::{Expiration, KeyType, PeerKey, SubnetId};
    use mesh_dht::{Dht, DhtConfig, PeerId};

    let mut c = DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
    c.subnet_id = SubnetId::new(42);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.refresh_period = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(2);
    let w = Dht::start(c).await.unwrap();
    let w_addr = w.listen_addrs().await.unwrap()[0].to_string();
    let frozen = tokio::task::spawn_blocking(move || spawn(&["--initial_peers", &w_addr]))
        .await
        .unwrap();
    let fid: PeerId = frozen.peer_id.parse().unwrap();
    let in_table = |w: Dht| async move { w.routing_table().await.unwrap().contains(&fid) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !in_table(w.clone()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never joined"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pid = frozen.child.id() as libc::pid_t;
    // SAFETY: signals to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let mut removed_after = None;
    for i in 0..5 {
        let report = w
            .store(
                format!("k{i}").into_bytes(),
                None,
                b"v".to_vec(),
                Expiration::in_(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert!(report.accepted >= 1, "{report:?}");
        if !in_table(w.clone()).await {
            removed_after = Some(i + 1);
            break;
        }
    }
    let stores = removed_after.expect("the frozen daemon stayed in the routing table");
    assert!(stores <= 2, "removed after {stores} unanswered stores");

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !in_table(w.clone()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the thawed daemon never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::spawn_blocking(move || frozen.terminate())
        .await
        .unwrap();
    w.shutdown().await;
}

/// Churn with real processes: ten `mesh-dht` daemons, each with a store
/// file; 40 records written; six daemons SIGKILLed in three waves of two,
/// three refresh periods apart. Every record is still readable, and a
/// killed daemon restarted with its `--store_path` and key comes back with
/// its records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_daemons_killed_in_waves_and_a_restart_keeps_its_store() {
    use mesh_core::{Expiration, KeyType, PeerKey, StoredValue, SubnetId};
    use mesh_dht::{Dht, DhtConfig};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let args = |i: usize, boot: Option<&str>| -> Vec<String> {
        let mut a = vec![
            "--identity_path".to_string(),
            d.join(format!("{i}.key")).display().to_string(),
            "--store_path".to_string(),
            d.join(format!("{i}.redb")).display().to_string(),
        ];
        if let Some(b) = boot {
            a.extend(["--initial_peers".to_string(), b.to_string()]);
        }
        a
    };
    let start = |a: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            spawn(&refs)
        })
    };
    let first = start(args(0, None)).await.unwrap();
    let boot = first.addrs[0].clone();
    let mut daemons = vec![Some(first)];
    for i in 1..10 {
        daemons.push(Some(start(args(i, Some(&boot))).await.unwrap()));
    }
    let initial: Vec<mesh_dht::Multiaddr> = daemons
        .iter()
        .flatten()
        .map(|d| d.addrs[0].parse().unwrap())
        .collect();
    let mut c = DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
    c.subnet_id = SubnetId::new(42);
    c.client_mode = true;
    c.initial_peers = initial;
    c.request_timeout = Duration::from_secs(3);
    let client = Dht::start(c).await.unwrap();
    // The daemons find each other (a refresh or two).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..40 {
        let report = client
            .store(
                format!("churn-{i}").into_bytes(),
                None,
                format!("v{i}").into_bytes(),
                Expiration::in_(Duration::from_secs(600)),
            )
            .await
            .unwrap();
        assert!(report.accepted >= 3, "churn-{i}: {report:?}");
    }

    // Waves: daemons 2..8, two at a time, SIGKILL (no goodbye, no flush).
    let mut killed = Vec::new();
    for wave in [[2, 3], [4, 5], [6, 7]] {
        for i in wave {
            let mut d = daemons[i].take().unwrap();
            d.child.kill().unwrap();
            d.child.wait().unwrap();
            killed.push(i);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut missing = Vec::new();
    for i in 0..40 {
        let got = client
            .get(format!("churn-{i}").into_bytes(), true)
            .await
            .unwrap();
        match got {
            Some(StoredValue::Regular(v)) if v.value == format!("v{i}").into_bytes() => {}
            other => missing.push((i, other)),
        }
    }
    assert!(
        missing.is_empty(),
        "records lost after killing {killed:?}: {missing:?}"
    );

    // A killed daemon comes back with its file.
    let back = start(args(2, Some(&boot))).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let loaded = loop {
        let line = back
            .stderr
            .recv_timeout(Duration::from_secs(10))
            .expect("the restarted daemon logs");
        if line.contains("restored persisted records") {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "no restore logged");
    };
    let n: usize = loaded
        .split("loaded=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(n > 0, "the restarted daemon kept its records: {loaded}");
    client.shutdown().await;
    drop(back);
    drop(daemons);
}

/// `mesh-dht --rpc_url`: a bootnode with the stake gate takes stores from
/// staked nodes and refuses those of a peer the chain does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootnode_with_a_chain_refuses_stores_of_unstaked_peers() {
    use mesh_chain::devnode::{register_dev_node, DevNode};
    use mesh_chain::{ChainClient, SignerSource};
    use mesh_core::{Expiration, KeyType, PeerKey};
    use mesh_dht::{Dht, DhtConfig, RefusalKind};

    let chain = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let client = ChainClient::connect(chain.url()).await.unwrap();
    let alice = SignerSource::Phrase("//Alice".into()).keypair().unwrap();
    let subnet_id = client.create_subnet(&alice, "boot", true).await.unwrap();
    let staked = PeerKey::generate(KeyType::Ed25519).unwrap();
    let bob = SignerSource::Phrase("//Bob".into()).keypair().unwrap();
    register_dev_node(&client, &alice, subnet_id, &bob, staked.peer_id())
        .await
        .unwrap();

    let (subnet, url) = (subnet_id.to_string(), chain.url().to_string());
    let boot = tokio::task::spawn_blocking(move || spawn_in(&subnet, &["--rpc_url", &url]))
        .await
        .unwrap();
    let boot_id: mesh_dht::PeerId = boot.peer_id.parse().unwrap();
    let store_through = |key: PeerKey, what: &'static str| {
        let addr = boot.addrs[0].parse().unwrap();
        async move {
            let mut c = DhtConfig::new(key);
            c.subnet_id = subnet_id;
            c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
            c.initial_peers = vec![addr];
            let node = Dht::start(c).await.unwrap();
            let report = node
                .store(
                    what.as_bytes().to_vec(),
                    None,
                    b"v".to_vec(),
                    Expiration::in_(Duration::from_secs(60)),
                )
                .await
                .unwrap();
            node.shutdown().await;
            report
        }
    };
    let report = store_through(staked, "from-staked").await;
    assert!(
        report.refused.iter().all(|r| r.peer != boot_id) && report.accepted >= 2,
        "the bootnode takes a staked node's store: {report:?}"
    );
    let report = store_through(
        PeerKey::generate(KeyType::Ed25519).unwrap(),
        "from-stranger",
    )
    .await;
    let refusal = report
        .refused
        .iter()
        .find(|r| r.peer == boot_id)
        .unwrap_or_else(|| panic!("the bootnode refuses a stranger: {report:?}"));
    assert_eq!(refusal.kind, RefusalKind::NotStaked, "{refusal:?}");
    tokio::task::spawn_blocking(move || boot.terminate())
        .await
        .unwrap();
}
