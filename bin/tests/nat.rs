//! Nodes behind NAT, across real NATs built in network namespaces this test
//! creates: "the internet" is a bridge on 198.51.100.0/24; a public
//! bootnode (a relay) sits on it at .1; four routers (.11 to .14) each
//! hide one host on a private 10.0.N.0/24 behind nftables masquerade and a
//! stateful firewall that drops unsolicited inbound packets. Routers 1, 2
//! and 4 keep ports (hole punching can work); router 3 remaps them at
//! random (a "hard" NAT: it cannot).
//!
//! Every node is this test binary run again inside its namespace (the
//! ignored `nat_node`). The subnet is staked: the bootnode starts the
//! project's dev chain in its namespace (reachable from the NAT'd hosts at
//! 198.51.100.1:9944), registers the four NAT'd nodes (the bootnode's
//! PeerId as node a's bootnode), and runs a relay that gives slots to
//! staked peers only. The nodes host the echo subnet on mesh's runtime with
//! the stake gate, the stake authorizer and consensus. The driver, behind
//! router 1:
//! - finds itself not reachable (AutoNAT) and takes a relay slot;
//! - reads the records the nodes behind routers 2 and 3 stored, and they
//!   read its own;
//! - calls the nodes behind routers 2 and 4 over RPC through the relay, and
//!   sees each connection upgraded to a direct, hole-punched one: b listens
//!   on QUIC only, d on TCP only, so one hole is punched for each transport;
//! - calls the node behind the hard NAT, which stays on the relay, and
//!   measures the relay's throughput for an RPC stream;
//! - sees both nodes' heartbeats, and a consensus round on the chain that
//!   all four NAT'd nodes attested, with a score for each;
//! - with 10 % of the packets dropped by nftables on every router, calls and
//!   records still succeed.
//!
//! An unstaked node behind router 1 asks the relay for a slot and is
//! refused. Then the test checks that no node's routing table holds a
//! private (10.x) address or the unstaked node. Needs root, `ip` (iproute2),
//! `nft` (nftables) and the dev chain's node; where namespaces cannot be
//! created the test says so and passes without running.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod netns;
use mesh_dht::Multiaddr;
use netns::{counted, in_ns, logs, nft, ok, put, unavailable, wait_file, Net};

const LOSS_PERCENT: u32 = 10;
const BOOT_IP: &str = "198.51.100.1";
/// Where the bootnode exposes the chain's RPC to the other namespaces.
const CHAIN_PORT: u16 = 9944;
/// The NAT'd nodes and the hotkeys their subnet nodes are registered with.
/// Every process's log, for failure messages.
const ALL: [&str; 6] = ["a", "b", "c", "d", "x", "boot"];
const NODES: [(&str, &str); 4] = [
    ("a", "//Bob"),
    ("b", "//Charlie"),
    ("c", "//Dave"),
    ("d", "//Eve"),
];

fn wan_ip(router: usize) -> String {
    format!("198.51.100.{}", 10 + router)
}

fn lan_ip(router: usize) -> String {
    format!("10.0.{router}.2")
}

struct Topology {
    net: Net,
    boot: String,
    routers: Vec<String>,
    hosts: Vec<String>,
}

/// The bridge, the public host, and four routers each with a host behind.
fn build() -> Topology {
    let tag = std::process::id() % 100_000;
    let mut net = Net::default();
    let inet = format!("mni{tag}");
    net.bridge(&inet);
    let boot = format!("mnp{tag}");
    net.add(&boot);
    net.attach(&inet, &boot, "vp", BOOT_IP);
    let (mut routers, mut hosts) = (Vec::new(), Vec::new());
    for r in 1..=4 {
        let (router, host) = (format!("mnr{tag}x{r}"), format!("mnh{tag}x{r}"));
        net.add(&router);
        net.add(&host);
        net.attach(&inet, &router, &format!("vr{r}"), &wan_ip(r));
        net.link(&router, "lan", &host, "eth0");
        let gw = format!("10.0.{r}.1");
        ok(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gw}/24"),
            "dev",
            "lan",
        ]);
        ok(&[
            "ip",
            "-n",
            &host,
            "addr",
            "add",
            &format!("{}/24", lan_ip(r)),
            "dev",
            "eth0",
        ]);
        ok(&["ip", "-n", &host, "route", "add", "default", "via", &gw]);
        in_ns(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Router 3 maps every connection to a random port: what a peer
        // learns of its address is useless to anyone else.
        let masquerade = if r == 3 {
            "masquerade random"
        } else {
            "masquerade"
        };
        nft(
            &router,
            &format!(
                "table ip nat {{\n  chain post {{\n    type nat hook postrouting priority 100;\n    \
                 oifname \"wan\" {masquerade}\n  }}\n}}\n\
                 table inet fw {{\n  chain forward {{\n    type filter hook forward priority 0; policy drop;\n    \
                 ct state established,related accept\n    iifname \"lan\" accept\n  }}\n  \
                 chain input {{\n    type filter hook input priority 0; policy drop;\n    \
                 ct state established,related accept\n    iifname {{ \"lan\", \"lo\" }} accept\n  }}\n}}\n"
            ),
        );
        routers.push(router);
        hosts.push(host);
    }
    Topology {
        net,
        boot,
        routers,
        hosts,
    }
}

/// The bootnode's line: the subnet and its TCP and QUIC addresses.
struct Boot {
    subnet: String,
    tcp: String,
    quic: String,
}

impl Boot {
    fn parse(line: &str) -> Self {
        let mut words = line.split_whitespace().map(str::to_string);
        let mut next = || words.next().expect("subnet, TCP and QUIC address");
        Boot {
            subnet: next(),
            tcp: next(),
            quic: next(),
        }
    }

    /// What a node is given: the subnet, then its initial peers.
    fn over(&self, tcp: bool, quic: bool) -> String {
        let mut line = self.subnet.clone();
        for (on, addr) in [(tcp, &self.tcp), (quic, &self.quic)] {
            if on {
                line = format!("{line} {addr}");
            }
        }
        line
    }
}

/// Starts `nat_node` as `role` in namespace `ns`, listening on `listen`
/// (addresses separated by spaces), given `boot` (the subnet and initial
/// peers, from [`Boot::over`]).
fn spawn(
    net: &mut Net,
    ns: &str,
    role: &str,
    name: &str,
    listen: &str,
    dir: &Path,
    boot: Option<&str>,
) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(std::env::current_exe().unwrap())
        .args(["nat_node", "--exact", "--ignored", "--nocapture"])
        .env("MESH_NAT_ROLE", role)
        .env("MESH_NAT_NAME", name)
        .env("MESH_NAT_LISTEN", listen)
        .env("MESH_NAT_DIR", dir)
        .env("RUST_LOG", "info,libp2p=warn")
        .env("RUST_BACKTRACE", "0")
        // The bootnode starts the dev chain: where the binary is.
        .env(
            mesh_chain::devnode::NODE_ENV,
            mesh_chain::devnode::find_node_binary().unwrap(),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    if let Some(boot) = boot {
        cmd.env("MESH_NAT_BOOT", boot);
    }
    net.daemons.push(cmd.spawn().unwrap());
}

#[test]
fn nodes_behind_nat_reach_each_other_through_a_relay_and_hole_punching() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: network namespaces cannot be created here: {why}");
        return;
    }
    mesh_chain::devnode::find_node_binary()
        .expect("the dev chain's node (run scripts/build-chain.sh first)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let mut topo = build();
    let boot_ns = topo.boot.clone();
    spawn(
        &mut topo.net,
        &boot_ns,
        "boot",
        "boot",
        &format!("/ip4/{BOOT_IP}/tcp/31330 /ip4/{BOOT_IP}/udp/31330/quic-v1"),
        &d,
        None,
    );
    // The bootnode starts the chain and registers the nodes first.
    let boot = wait_file(&d.join("boot.addr"), Duration::from_secs(180))
        .unwrap_or_else(|| panic!("the bootnode did not start: {}", logs(&d, &["boot"])));
    let boot = Boot::parse(&boot);
    // b speaks QUIC only (its hole punch with a is over QUIC), c TCP only.
    let b_listen = format!("/ip4/{}/udp/4001/quic-v1", lan_ip(2));
    spawn(
        &mut topo.net,
        &topo.hosts[1].clone(),
        "peer",
        "b",
        &b_listen,
        &d,
        Some(&boot.over(false, true)),
    );
    let c_listen = format!("/ip4/{}/tcp/4001", lan_ip(3));
    spawn(
        &mut topo.net,
        &topo.hosts[2].clone(),
        "peer",
        "c",
        &c_listen,
        &d,
        Some(&boot.over(true, false)),
    );
    let d_listen = format!("/ip4/{}/tcp/4001", lan_ip(4));
    spawn(
        &mut topo.net,
        &topo.hosts[3].clone(),
        "peer",
        "d",
        &d_listen,
        &d,
        Some(&boot.over(true, false)),
    );
    // Not staked, behind router 1 beside the driver.
    let host = topo.hosts[0].clone();
    spawn(
        &mut topo.net,
        &host,
        "outsider",
        "x",
        &format!("/ip4/{}/tcp/4002", lan_ip(1)),
        &d,
        Some(&boot.over(true, false)),
    );
    // The driver, behind router 1, runs to the end.
    let started = Instant::now();
    spawn(
        &mut topo.net,
        &host,
        "driver",
        "a",
        &format!(
            "/ip4/{ip}/tcp/4001 /ip4/{ip}/udp/4001/quic-v1",
            ip = lan_ip(1)
        ),
        &d,
        Some(&boot.over(true, true)),
    );
    // When it asks, drop packets on every router.
    let deadline = Instant::now() + Duration::from_secs(150);
    while !d.join("want-loss").exists() {
        let driver = topo.net.daemons.last_mut().unwrap();
        if Instant::now() > deadline || driver.try_wait().unwrap().is_some() {
            panic!(
                "the driver did not get to the lossy part: {}",
                logs(&d, &ALL)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let lossy = format!(
        "table inet lossy {{\n  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    \
         numgen random mod 100 < {LOSS_PERCENT} counter drop\n  }}\n  \
         chain input {{\n    type filter hook input priority -10; policy accept;\n    \
         numgen random mod 100 < {LOSS_PERCENT} drop\n  }}\n}}\n"
    );
    for r in &topo.routers {
        nft(r, &lossy);
    }
    put(&d.join("loss-on"), "on");
    let done = wait_file(&d.join("a.done"), Duration::from_secs(60));
    put(&d.join("stop"), "stop");
    let driver = topo.net.daemons.last_mut().unwrap();
    let status = driver.wait().unwrap();
    assert!(
        status.success() && done.is_some(),
        "the driver failed: {}",
        logs(&d, &ALL)
    );
    // The others write their routing tables when told to stop.
    let outsider = wait_file(&d.join("x.id"), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the unstaked node did not start: {}", logs(&d, &["x"])));
    let outsider = outsider.trim();
    for name in ["boot", "b", "c", "d"] {
        let table = wait_file(&d.join(format!("{name}.routing")), Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{name} wrote no routing table: {}", logs(&d, &[name])));
        assert!(
            !table.contains("/ip4/10."),
            "{name}'s routing table holds a private address:\n{table}"
        );
        assert!(
            !table.contains(outsider),
            "{name}'s routing table holds the unstaked node:\n{table}"
        );
        assert!(
            table.lines().count() >= 2,
            "{name}'s routing table is nearly empty:\n{table}"
        );
    }
    // The unstaked node asked the relay for a slot and was refused.
    let reach = wait_file(&d.join("x.reach"), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the unstaked node wrote nothing: {}", logs(&d, &["x"])));
    assert!(
        reach.starts_with("private 0"),
        "the unstaked node is not reachable and holds no relay slot: {reach}"
    );
    let metrics = wait_file(&d.join("boot.metrics"), Duration::from_secs(30)).unwrap();
    let refused = metrics
        .lines()
        .find(|l| l.contains("refused_requests") && l.contains("reason=\"relay_unstaked\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        refused >= 1.0,
        "the relay refused the unstaked node's slot: {refused}\n{metrics}"
    );
    for (i, r) in topo.routers.iter().enumerate() {
        assert!(
            counted(r, "lossy") > 0,
            "router {} dropped nothing: is the rule in place?",
            i + 1
        );
    }
    eprintln!(
        "{}\n(whole run {:.1} s)",
        done.unwrap().trim(),
        started.elapsed().as_secs_f64()
    );
}

/// One node of the test above, inside its namespace; ignored otherwise.
#[test]
#[ignore = "run by nodes_behind_nat_reach_each_other_through_a_relay_and_hole_punching in a namespace"]
fn nat_node() {
    let (Ok(role), Ok(name), Ok(listen), Ok(dir)) = (
        std::env::var("MESH_NAT_ROLE"),
        std::env::var("MESH_NAT_NAME"),
        std::env::var("MESH_NAT_LISTEN"),
        std::env::var("MESH_NAT_DIR"),
    ) else {
        eprintln!("not started by the NAT test: nothing to do");
        return;
    };
    let listen: Vec<Multiaddr> = listen
        .split_whitespace()
        .map(|a| a.parse().unwrap())
        .collect();
    // The subnet, then the initial peers.
    let boot = std::env::var("MESH_NAT_BOOT").ok().map(|line| {
        let mut words = line.split_whitespace();
        let subnet = mesh_core::SubnetId::new(words.next().unwrap().parse().unwrap());
        let initial: Vec<Multiaddr> = words.map(|a| a.parse().unwrap()).collect();
        (subnet, initial)
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = PathBuf::from(dir);
    match (role.as_str(), boot) {
        ("boot", _) => rt.block_on(node::boot(listen, dir)),
        ("outsider", Some((_, initial))) => rt.block_on(node::outsider(listen, dir, initial)),
        (_, Some((subnet, initial))) => {
            rt.block_on(node::run(role, name, listen, dir, initial, subnet))
        }
        _ => panic!("{role}: no bootnode given"),
    }
}

mod node {
    use super::*;
    use mesh_chain::devnode::{DevNode, DevNodeOptions};
    use mesh_chain::{
        chain_stake_oracle, Amount, ChainClient, HotkeyChain, Keypair, RegisterNode, SignerSource,
    };
    use mesh_core::consensus::ConsensusChain;
    use mesh_core::{Expiration, KeyType, NodeClass, PeerKey, StakeGate, StoredValue, SubnetId};
    use mesh_dht::{Dht, DhtConfig, PeerId, RelayLimits};
    use mesh_server::heartbeat::alive_peers;
    use mesh_server::{ChainHooks, Runtime, RuntimeConfig, StakeAuthorizer};
    use mesh_subnet_echo::proto::echo_client::EchoClient;
    use mesh_subnet_echo::proto::SayRequest;
    use mesh_subnet_echo::{EchoInfo, EchoSubnet, ALIVE_SCORE};
    use std::sync::Arc;
    use tokio::net::{TcpListener, TcpStream};

    fn signer(uri: &str) -> Keypair {
        SignerSource::Phrase(uri.into()).keypair().unwrap()
    }

    fn chain_url() -> String {
        format!("ws://{BOOT_IP}:{CHAIN_PORT}")
    }

    async fn wait_stop(dir: &Path) {
        let stop = dir.join("stop");
        let deadline = Instant::now() + Duration::from_secs(300);
        while !stop.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The public host: the dev chain (its RPC forwarded to the bridge),
    /// the subnet and its four nodes registered, and a staked-only relay.
    pub(super) async fn boot(listen: Vec<Multiaddr>, dir: PathBuf) {
        let chain = DevNode::start_with(DevNodeOptions {
            block_millis: 300,
            ..Default::default()
        })
        .expect("the dev chain starts");
        let proxy = TcpListener::bind((BOOT_IP, CHAIN_PORT)).await.unwrap();
        let rpc_port = chain.rpc_port();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = proxy.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(("127.0.0.1", rpc_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        let client = ChainClient::connect(chain.url()).await.unwrap();
        let alice = signer("//Alice");
        let subnet_id = client.create_subnet(&alice, "nat", true).await.unwrap();
        let boot_key = PeerKey::generate(KeyType::Ed25519).unwrap();
        for (name, hotkey) in NODES {
            let key = PeerKey::generate(KeyType::Ed25519).unwrap();
            key.write_file(&dir.join(format!("{name}.key")), true)
                .unwrap();
            let registration = RegisterNode {
                subnet_id,
                hotkey: signer(hotkey).public_key().to_account_id(),
                peer_id: key.peer_id(),
                // The bootnode is staked as node a's.
                bootnode_peer_id: if name == "a" {
                    boot_key.peer_id()
                } else {
                    PeerId::random()
                },
                client_peer_id: PeerId::random(),
                bootnode: None,
                delegate_reward_rate: 0,
                stake_to_be_added: Amount::tokens(100),
                unique: None,
                non_unique: None,
                max_burn_amount: Amount::tokens(1),
            };
            let id = client.register_node(&alice, &registration).await.unwrap();
            client.activate_node(&alice, subnet_id, id).await.unwrap();
        }
        let oracle = chain_stake_oracle(client.clone(), Duration::from_secs(300));
        let mut config = DhtConfig::new(boot_key);
        config.subnet_id = subnet_id;
        config.listen = listen;
        config.refresh_period = Duration::from_secs(2);
        config.reach.relay_server = Some(RelayLimits::default());
        config.stake_gate = Some(StakeGate::new(
            oracle.oracle(),
            subnet_id,
            NodeClass::Registered,
        ));
        let registry = config.registry.clone();
        let dht = Dht::start(config).await.expect("the bootnode starts");
        let addrs = dht.listen_addrs().await.unwrap();
        let pick = |quic: bool| {
            addrs
                .iter()
                .find(|a| a.to_string().contains("/quic-v1") == quic)
                .expect("the bootnode listens on TCP and QUIC")
                .to_string()
        };
        put(
            &dir.join("boot.addr"),
            &format!("{subnet_id} {} {}", pick(false), pick(true)),
        );
        wait_stop(&dir).await;
        write_routing(&dht, &dir, "boot").await;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry.lock().unwrap()).unwrap();
        put(&dir.join("boot.metrics"), &text);
        dht.shutdown().await;
    }

    /// An unstaked node behind NAT: it asks the relay for a slot, which is
    /// refused; at stop it writes its reachability ("<nat> <slots>").
    pub(super) async fn outsider(listen: Vec<Multiaddr>, dir: PathBuf, initial: Vec<Multiaddr>) {
        let mut config = DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
        config.listen = listen;
        config.initial_peers = initial;
        config.refresh_period = Duration::from_secs(2);
        config.bootstrap_timeout = Duration::from_secs(30);
        let dht = Dht::start(config).await.expect("the unstaked node starts");
        put(&dir.join("x.id"), &dht.peer_id().to_string());
        wait_stop(&dir).await;
        let reach = dht.reachability().await.unwrap();
        let nat = match reach.nat {
            mesh_dht::NatStatus::Private => "private",
            mesh_dht::NatStatus::Public(_) => "public",
            mesh_dht::NatStatus::Unknown => "unknown",
        };
        put(
            &dir.join("x.reach"),
            &format!("{nat} {}", reach.relayed_at.len()),
        );
        dht.shutdown().await;
    }

    async fn until<T, F: std::future::Future<Output = Option<T>>>(
        what: &str,
        within: Duration,
        mut probe: impl FnMut() -> F,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn read(dht: &Dht, key: &str) -> Option<String> {
        match dht.get(key.as_bytes().to_vec(), true).await.ok()? {
            Some(StoredValue::Regular(v)) => String::from_utf8(v.value).ok(),
            _ => None,
        }
    }

    async fn store(dht: &Dht, key: &str, value: &str) -> usize {
        dht.store(
            key.as_bytes().to_vec(),
            None,
            value.as_bytes().to_vec(),
            Expiration::in_(Duration::from_secs(600)),
        )
        .await
        .map(|r| r.accepted)
        .unwrap_or(0)
    }

    async fn write_routing(dht: &Dht, dir: &Path, name: &str) {
        let table = dht.routing_addresses().await.unwrap();
        let text: Vec<String> = table
            .iter()
            .map(|(p, addrs)| {
                let a: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                format!("{p} {}", a.join(" "))
            })
            .collect();
        put(
            &dir.join(format!("{name}.routing")),
            &format!("{name}\n{}", text.join("\n")),
        );
    }

    pub(super) async fn run(
        role: String,
        name: String,
        listen: Vec<Multiaddr>,
        dir: PathBuf,
        initial: Vec<Multiaddr>,
        subnet_id: SubnetId,
    ) {
        let key = PeerKey::read_file(&dir.join(format!("{name}.key"))).unwrap();
        let hotkey = NODES.iter().find(|(n, _)| *n == name).unwrap().1;
        let client = ChainClient::connect(&chain_url()).await.unwrap();
        let oracle = chain_stake_oracle(client.clone(), Duration::from_secs(300));
        let gate = StakeGate::new(oracle.oracle(), subnet_id, NodeClass::Registered);
        let local = key.peer_id();
        let mut dht = DhtConfig::new(key);
        dht.subnet_id = subnet_id;
        dht.listen = listen;
        dht.initial_peers = initial;
        dht.refresh_period = Duration::from_secs(2);
        dht.bootstrap_timeout = Duration::from_secs(30);
        dht.stake_gate = Some(gate.clone());
        let node = Runtime::start(
            RuntimeConfig {
                dht,
                update_period: Duration::from_secs(1),
                authorizers: mesh_server::standard_authorizers(
                    local,
                    Some(StakeAuthorizer::from_gate(gate)),
                ),
                chain: Some(ChainHooks {
                    chain: Arc::new(HotkeyChain::new(client.clone(), signer(hotkey))),
                    poll: Duration::from_millis(100),
                    attest_window: 0.5,
                }),
            },
            Arc::new(EchoSubnet::new()),
        )
        .await
        .expect("the node starts");
        let ctx = node.context().clone();
        let dht = ctx.dht.clone();
        let stop = dir.join("stop");

        // Behind NAT: AutoNAT says so, and a relay slot is taken.
        let t0 = Instant::now();
        let circuit = until("a relay slot", Duration::from_secs(90), || async {
            let r = dht.reachability().await.ok()?;
            r.relayed_at.first().cloned()
        })
        .await;
        let slot_after = t0.elapsed();
        eprintln!(
            "{name}: relay slot after {:.1} s: {circuit}",
            slot_after.as_secs_f64()
        );
        assert!(
            !circuit.to_string().contains("/ip4/10."),
            "the circuit address is the relay's: {circuit}"
        );
        put(&dir.join(format!("{name}.id")), &dht.peer_id().to_string());
        let key = format!("from-{name}");
        until("our record stored", Duration::from_secs(30), || async {
            (store(&dht, &key, &name).await >= 2).then_some(())
        })
        .await;

        if role == "peer" {
            // Read the driver's record once it is there, then wait.
            let a_done = dir.join(format!("{name}.saw-a"));
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.exists() && Instant::now() < deadline {
                if !a_done.exists() && read(&dht, "from-a").await.as_deref() == Some("a") {
                    put(&a_done, "a");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            write_routing(&dht, &dir, &name).await;
            node.shutdown().await;
            return;
        }

        // The driver.
        let peer_id = |n: &str| -> PeerId {
            wait_file(&dir.join(format!("{n}.id")), Duration::from_secs(120))
                .unwrap_or_else(|| panic!("{n} never took a relay slot"))
                .trim()
                .parse()
                .unwrap()
        };
        let (b, c, d) = (peer_id("b"), peer_id("c"), peer_id("d"));
        for (n, key) in [("b", "from-b"), ("c", "from-c"), ("d", "from-d")] {
            let got = until(
                &format!("{n}'s record"),
                Duration::from_secs(30),
                || async { read(&dht, key).await },
            )
            .await;
            assert_eq!(got, n);
        }

        let say = |peer: PeerId, text: String| {
            let mut echo = EchoClient::new(ctx.client(peer));
            async move {
                echo.say(SayRequest { text, delay_ms: 0 })
                    .await
                    .map(|r| r.into_inner().text)
            }
        };
        let links = |peer: PeerId| {
            let dht = dht.clone();
            async move {
                let conns = dht.connections().await.unwrap();
                let of: Vec<_> = conns.into_iter().filter(|c| c.peer == peer).collect();
                (of.iter().any(|c| c.relayed), of.iter().any(|c| !c.relayed))
            }
        };

        // B: first through the relay, then directly after hole punching.
        // (Its relay address reaches the bootnode's table a moment after
        // its slot: retry the lookup until then.)
        let connect = |peer: PeerId| {
            let dht = dht.clone();
            async move {
                until(
                    &format!("a connection to {peer}"),
                    Duration::from_secs(30),
                    || async {
                        match dht.connect(peer).await {
                            Ok(()) => Some(()),
                            Err(e) => {
                                eprintln!("a: {e}");
                                None
                            }
                        }
                    },
                )
                .await
            }
        };
        // First through the relay, then directly after hole punching, on
        // the one transport the peer listens on. Returns the time from the
        // first connection to the direct one.
        let punched = |peer: PeerId, transport: &'static str| {
            let (connect, say, links, dht) = (&connect, &say, &links, dht.clone());
            async move {
                let t_call = Instant::now();
                connect(peer).await;
                let first = say(peer, "through the relay".into())
                    .await
                    .expect("a call through the relay");
                assert_eq!(first, "through the relay");
                let (relayed, _) = links(peer).await;
                assert!(relayed, "the first connection runs through the relay");
                until(
                    &format!("a direct connection to {peer}"),
                    Duration::from_secs(30),
                    || async { links(peer).await.1.then_some(()) },
                )
                .await;
                let took = t_call.elapsed();
                let direct: Vec<String> = dht
                    .connections()
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|c| c.peer == peer && !c.relayed)
                    .map(|c| c.address.to_string())
                    .collect();
                let is_quic = |a: &String| a.contains("/quic-v1");
                assert!(
                    direct.iter().any(|a| if transport == "quic" {
                        is_quic(a)
                    } else {
                        !is_quic(a)
                    }),
                    "the direct connection to {peer} is {transport}: {direct:?}"
                );
                let back = say(peer, "direct".into()).await.expect("a direct call");
                assert_eq!(back, "direct");
                took
            }
        };
        let to_direct_quic = punched(b, "quic").await;
        let to_direct_tcp = punched(d, "tcp").await;

        // C, behind the hard NAT: relayed, and it stays so.
        connect(c).await;
        let got = say(c, "hard nat".into()).await.expect("call to c");
        assert_eq!(got, "hard nat");
        tokio::time::sleep(Duration::from_secs(8)).await;
        let (relayed, direct) = links(c).await;
        assert!(
            relayed && !direct,
            "c stays on the relay (relayed {relayed}, direct {direct})"
        );
        // The relay's throughput for an RPC stream: 16 echoes of 256 KiB.
        let chunk = "x".repeat(256 * 1024);
        let t = Instant::now();
        for _ in 0..16 {
            let back = say(c, chunk.clone()).await.expect("big call to c");
            assert_eq!(back.len(), chunk.len());
        }
        let relay_mib_s = (2.0 * 16.0 * 0.25) / t.elapsed().as_secs_f64();

        // Heartbeats of the others, read through the DHT.
        until(
            "b's, c's and d's heartbeats",
            Duration::from_secs(30),
            || async {
                let alive = alive_peers::<EchoInfo>(&dht).await.ok()?;
                let ids: Vec<PeerId> = alive.iter().map(|h| h.peer_id).collect();
                [b, c, d].iter().all(|p| ids.contains(p)).then_some(())
            },
        )
        .await;
        // Consensus with the NAT'd nodes: the elected one proposed scores from
        // the heartbeats it read through the DHT, all three attested.
        let reader = HotkeyChain::new(client.clone(), signer(hotkey));
        let t_consensus = Instant::now();
        let (epoch, submission) = until(
            "a fully attested consensus round",
            Duration::from_secs(120),
            || async {
                let now = client.epoch_info(subnet_id).await.ok()?.epoch;
                for e in (now.saturating_sub(3)..now).rev() {
                    if let Ok(Some(s)) = reader.submission(subnet_id, e).await {
                        if s.attested_by.len() == NODES.len() {
                            return Some((e, s));
                        }
                    }
                }
                None
            },
        )
        .await;
        assert_eq!(
            client.elected_validator(subnet_id, epoch).await.unwrap(),
            Some(submission.validator),
            "the elected node proposed"
        );
        let scores: Vec<u128> = submission.scores.iter().map(|s| s.score).collect();
        assert_eq!(
            scores,
            vec![ALIVE_SCORE; NODES.len()],
            "a score for each NAT'd node: {submission:?}"
        );
        let consensus_after = t_consensus.elapsed();
        for n in ["b", "c", "d"] {
            wait_file(&dir.join(format!("{n}.saw-a")), Duration::from_secs(60))
                .unwrap_or_else(|| panic!("{n} never read a's record"));
        }
        let table = dht.routing_addresses().await.unwrap();
        for (p, addrs) in &table {
            for a in addrs {
                assert!(
                    !a.to_string().starts_with("/ip4/10."),
                    "a's routing table holds a private address of {p}: {a}"
                );
            }
        }

        // Now over lossy links.
        put(&dir.join("want-loss"), "please");
        wait_file(&dir.join("loss-on"), Duration::from_secs(60)).expect("loss turned on");
        let mut calls = 0;
        for i in 0..20 {
            for peer in [b, c, d] {
                let text = format!("lossy {i}");
                let back = say(peer, text.clone()).await;
                assert_eq!(back.expect("a call over lossy links"), text);
                calls += 1;
            }
        }
        for i in 0..5 {
            let key = format!("lossy-{i}");
            assert!(store(&dht, &key, "v").await >= 2, "{key} stored");
            assert_eq!(read(&dht, &key).await.as_deref(), Some("v"), "{key} read");
        }
        // A peer this node already talked to (DHT traffic) may be direct
        // before the first call.
        let took = |t: Duration| {
            if t < Duration::from_millis(50) {
                "already direct".to_string()
            } else {
                format!("{:.2} s", t.as_secs_f64())
            }
        };
        put(
            &dir.join("a.done"),
            &format!(
                "relay slot after {:.1} s; first call to direct hole-punched connection: {} \
                 (QUIC), {} (TCP); relay RPC throughput {relay_mib_s:.1} MiB/s; consensus \
                 of epoch {epoch} attested by {} NAT'd nodes (waited {:.1} s); \
                 {calls} calls and 5 records over {LOSS_PERCENT} % loss",
                slot_after.as_secs_f64(),
                took(to_direct_quic),
                took(to_direct_tcp),
                NODES.len(),
                consensus_after.as_secs_f64(),
            ),
        );
        node.shutdown().await;
    }
}
