//! Over a lossy network: five `mesh-dht` daemons, each in a network
//! namespace this test creates (veth pairs on a bridge, addresses in
//! 198.51.100.0/24, which exist only inside them), with nftables dropping
//! 15 % of the packets every host receives. A client in a sixth namespace
//! (this test binary, run again there) stores 24 records through them and
//! reads every one back: recall 1.0.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); where namespaces
//! cannot be created the test says so and passes without running.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod netns;
use netns::{nft, sh, unavailable, Net};
use std::time::{Duration, Instant};

const MESH_DHT: &str = env!("CARGO_BIN_EXE_mesh-dht");
const HOSTS: usize = 5;
const KEYS: usize = 24;
const LOSS_PERCENT: u32 = 15;

fn host_ip(i: usize) -> String {
    format!("198.51.100.{}", 10 + i)
}

/// The bridge and `hosts` namespaces, each host on the bridge with a
/// lossy input chain.
fn build(hosts: usize) -> Net {
    let tag = std::process::id() % 100_000;
    let bridge = format!("mlb{tag}");
    let mut net = Net::default();
    net.bridge(&bridge);
    let rules = format!(
        "table inet lossy {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         numgen random mod 100 < {LOSS_PERCENT} counter drop\n  }}\n}}\n"
    );
    for i in 0..hosts {
        let host = format!("mlh{tag}x{i}");
        net.add(&host);
        net.attach(&bridge, &host, &format!("vb{i}"), &host_ip(i));
        nft(&host, &rules);
    }
    net
}

/// Starts `mesh-dht` in host `i`; returns its address on the bridge.
fn daemon(net: &mut Net, i: usize, initial: Option<&str>) -> String {
    let host = net.names[1 + i].clone();
    let listen = format!("/ip4/{}/tcp/31330", host_ip(i));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host, MESH_DHT, "--host_maddrs", &listen])
        .args(["--subnet_id", "7", "--refresh_period", "5"])
        .args(["--bootstrap_timeout", "60"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(boot) = initial {
        cmd.args(["--initial_peers", boot]);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    net.daemons.push(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.trim().strip_prefix("--initial_peers ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| panic!("mesh-dht in host {i} did not start"))
}

fn dropped_packets(net: &Net, host: usize) -> u64 {
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        &net.names[1 + host],
        "nft",
        "list",
        "ruleset",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn records_survive_a_network_that_drops_packets() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: network namespaces cannot be created here: {why}");
        return;
    }
    let mut net = build(HOSTS + 1);
    let boot = daemon(&mut net, 0, None);
    for i in 1..HOSTS {
        daemon(&mut net, i, Some(&boot));
    }
    // The client: this test binary again, in the last namespace.
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &net.names[HOSTS + 1]])
        .arg(std::env::current_exe().unwrap())
        .args(["lossy_client", "--exact", "--ignored", "--nocapture"])
        .env("MESH_LOSSY_BOOT", &boot)
        .env(
            "MESH_LOSSY_LISTEN",
            format!("/ip4/{}/tcp/0", host_ip(HOSTS)),
        )
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the client failed: {said}");
    assert!(
        said.contains(&format!("recall {KEYS}/{KEYS}")),
        "not every record came back: {said}"
    );
    // It was lossy: every host dropped packets.
    for i in 0..=HOSTS {
        let dropped = dropped_packets(&net, i);
        assert!(
            dropped > 0,
            "host {i} dropped nothing: is the rule in place?"
        );
    }
    eprintln!(
        "{KEYS} records stored and read back over {LOSS_PERCENT} % loss in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Run by the test above inside its client namespace; ignored otherwise.
#[test]
#[ignore = "run by records_survive_a_network_that_drops_packets inside a namespace"]
fn lossy_client() {
    let (Ok(boot), Ok(listen)) = (
        std::env::var("MESH_LOSSY_BOOT"),
        std::env::var("MESH_LOSSY_LISTEN"),
    ) else {
        eprintln!("not started by records_survive_a_network_that_drops_packets: nothing to do");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        use mesh_core::{Expiration, KeyType, PeerKey, StoredValue, SubnetId};
        let mut c = mesh_dht::DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
        c.subnet_id = SubnetId::new(7);
        c.client_mode = true;
        c.listen = vec![listen.parse().unwrap()];
        c.initial_peers = vec![boot.parse().unwrap()];
        c.bootstrap_timeout = Duration::from_secs(60);
        let dht = mesh_dht::Dht::start(c).await.expect("the client joins");
        for k in 0..KEYS {
            let report = dht
                .store(
                    format!("key-{k}").into_bytes(),
                    None,
                    format!("value-{k}").into_bytes(),
                    Expiration::in_(Duration::from_secs(600)),
                )
                .await
                .unwrap();
            assert!(report.accepted >= 3, "key-{k}: {report:?}");
        }
        let mut found = 0;
        for k in 0..KEYS {
            let got = dht
                .get(format!("key-{k}").into_bytes(), true)
                .await
                .unwrap();
            match got {
                Some(StoredValue::Regular(item))
                    if item.value == format!("value-{k}").into_bytes() =>
                {
                    found += 1
                }
                other => eprintln!("key-{k}: {other:?}"),
            }
        }
        println!("recall {found}/{KEYS}");
        dht.shutdown().await;
    });
}
