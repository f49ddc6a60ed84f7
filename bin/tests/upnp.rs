//! A node behind a router that offers UPnP port mapping (miniupnpd, Debian's
//! `miniupnpd-nftables`), in network namespaces this test creates: "the
//! internet" is a bridge on 11.22.33.0/24 (a public range, so the UPnP
//! client's check that the gateway sits on the public internet passes;
//! nothing leaves the namespaces, which have no route out), with two public
//! nodes (.1 and .2) and a router (.11) that hides a host on 10.0.9.0/24
//! behind nftables masquerade and a firewall that drops unsolicited inbound
//! packets, unless they match a mapping miniupnpd made (`ct status dnat`).
//!
//! The host runs with UPnP on (`ReachConfig::upnp`, `--upnp`): the router
//! forwards its port, the node announces the router's public address, and
//! AutoNAT finds it reachable, so it takes no relay slot. The second public
//! node then dials it directly at that address. Needs root, `ip`, `nft` and
//! `miniupnpd`; where namespaces cannot be made or miniupnpd is missing the
//! test says so and passes without running.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod netns;
use netns::{in_ns, logs, nft, ok, put, unavailable, wait_file, Net};

const PUBLIC: &str = "11.22.33";
const ROUTER_WAN: &str = "11.22.33.11";
const HOST: &str = "10.0.9.2";
/// Every process's log, for failure messages.
const ALL: [&str; 4] = ["p", "q", "h", "miniupnpd"];

fn spawn(net: &mut Net, ns: &str, role: &str, dir: &Path, boot: Option<&str>) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(std::env::current_exe().unwrap())
        .args(["upnp_node", "--exact", "--ignored", "--nocapture"])
        .env("MESH_UPNP_ROLE", role)
        .env("MESH_UPNP_DIR", dir)
        .env("RUST_LOG", "info,libp2p=warn")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{role}.log"))).unwrap());
    if let Some(b) = boot {
        cmd.env("MESH_UPNP_BOOT", b);
    }
    net.daemons.push(cmd.spawn().unwrap());
}

#[test]
fn a_node_behind_a_upnp_router_is_dialed_directly_at_the_mapped_address() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: network namespaces cannot be created here: {why}");
        return;
    }
    let Some(miniupnpd) = ["/usr/sbin/miniupnpd", "/sbin/miniupnpd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("SKIPPED: miniupnpd is not installed (Debian: miniupnpd-nftables)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let tag = std::process::id() % 100_000;
    let mut net = Net::default();
    let inet = format!("mui{tag}");
    net.bridge(&inet);
    let (p, q, router, host) = (
        format!("mup{tag}"),
        format!("muq{tag}"),
        format!("mur{tag}"),
        format!("muh{tag}"),
    );
    for ns in [&p, &q, &router, &host] {
        net.add(ns);
    }
    net.attach(&inet, &p, "vp", &format!("{PUBLIC}.1"));
    net.attach(&inet, &q, "vq", &format!("{PUBLIC}.2"));
    net.attach(&inet, &router, "vr", ROUTER_WAN);
    net.link(&router, "lan", &host, "eth0");
    ok(&[
        "ip",
        "-n",
        &router,
        "addr",
        "add",
        "10.0.9.1/24",
        "dev",
        "lan",
    ]);
    ok(&[
        "ip",
        "-n",
        &host,
        "addr",
        "add",
        &format!("{HOST}/24"),
        "dev",
        "eth0",
    ]);
    ok(&[
        "ip", "-n", &host, "route", "add", "default", "via", "10.0.9.1",
    ]);
    in_ns(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // Masquerade and a stateful firewall, as in the NAT test, plus: what a
    // UPnP mapping forwards (DNAT) passes. miniupnpd keeps its rules in its
    // own table, whose chains are made here.
    nft(
        &router,
        "table ip nat {\n  chain post {\n    type nat hook postrouting priority 100;\n    \
         oifname \"wan\" masquerade\n  }\n}\n\
         table inet fw {\n  chain forward {\n    type filter hook forward priority 0; policy drop;\n    \
         ct state established,related accept\n    ct status dnat accept\n    iifname \"lan\" accept\n  }\n  \
         chain input {\n    type filter hook input priority 0; policy drop;\n    \
         ct state established,related accept\n    iifname { \"lan\", \"lo\" } accept\n  }\n}\n\
         table inet miniupnpd {\n  chain forward {\n    type filter hook forward priority -5; policy accept;\n    \
         jump miniupnpd\n  }\n  chain miniupnpd {\n  }\n  \
         chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n    \
         jump prerouting_miniupnpd\n  }\n  \
         chain postrouting {\n    type nat hook postrouting priority 90; policy accept;\n    \
         jump postrouting_miniupnpd\n  }\n  \
         chain prerouting_miniupnpd {\n  }\n  chain postrouting_miniupnpd {\n  }\n}\n",
    );
    let conf = d.join("miniupnpd.conf");
    std::fs::write(
        &conf,
        "ext_ifname=wan\nlistening_ip=lan\nport=0\nenable_natpmp=yes\nenable_upnp=yes\n\
         secure_mode=yes\nsystem_uptime=yes\nuuid=6f1b1a4e-3c2d-4e5f-8a9b-0c1d2e3f4a5b\n\
         upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\n\
         upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
         upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
         allow 1024-65535 10.0.9.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
    )
    .unwrap();
    let daemon = Command::new("ip")
        .args(["netns", "exec", &router, miniupnpd, "-d", "-f"])
        .arg(&conf)
        .arg("-P")
        .arg(d.join("miniupnpd.pid"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("miniupnpd.log")).unwrap())
        .spawn()
        .unwrap();
    net.daemons.push(daemon);

    spawn(&mut net, &p, "p", &d, None);
    let boot = wait_file(&d.join("p.addr"), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the public node did not start: {}", logs(&d, &ALL)));
    let boot = boot.trim().to_string();
    spawn(&mut net, &host, "h", &d, Some(&boot));
    spawn(&mut net, &q, "q", &d, Some(&boot));
    let done = wait_file(&d.join("q.done"), Duration::from_secs(90));
    put(&d.join("stop"), "stop");
    let reach = wait_file(&d.join("h.reach"), Duration::from_secs(30));
    let (Some(done), Some(reach)) = (done, reach) else {
        panic!("the nodes did not finish: {}", logs(&d, &ALL));
    };
    assert!(
        reach.starts_with(&format!("/ip4/{ROUTER_WAN}/tcp/4001 public 0")),
        "the host announces the mapped address, AutoNAT finds it public, no relay slot: {reach}{}",
        logs(&d, &ALL)
    );
    eprintln!("{}", done.trim());
}

/// One node of the test above, inside its namespace; ignored otherwise.
#[test]
#[ignore = "run by a_node_behind_a_upnp_router_is_dialed_directly_at_the_mapped_address in a namespace"]
fn upnp_node() {
    let (Ok(role), Ok(dir)) = (
        std::env::var("MESH_UPNP_ROLE"),
        std::env::var("MESH_UPNP_DIR"),
    ) else {
        eprintln!("not started by the UPnP test: nothing to do");
        return;
    };
    let boot = std::env::var("MESH_UPNP_BOOT").ok();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(node::run(role, PathBuf::from(dir), boot));
}

mod node {
    use super::*;
    use mesh_core::{KeyType, PeerKey};
    use mesh_dht::{Dht, DhtConfig, NatStatus, PeerId};

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

    async fn wait_stop(dir: &Path) {
        let stop = dir.join("stop");
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(super) async fn run(role: String, dir: PathBuf, boot: Option<String>) {
        let mut config = DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
        config.refresh_period = Duration::from_secs(2);
        config.bootstrap_timeout = Duration::from_secs(30);
        config.initial_peers = boot.iter().map(|b| b.parse().unwrap()).collect();
        config.listen = vec![match role.as_str() {
            "p" => format!("/ip4/{PUBLIC}.1/tcp/31330"),
            "q" => format!("/ip4/{PUBLIC}.2/tcp/31330"),
            _ => format!("/ip4/{HOST}/tcp/4001"),
        }
        .parse()
        .unwrap()];
        config.reach.upnp = role == "h";
        // q only reads and dials (client mode: it enters no routing table,
        // so h never dials it first and the connection is q's own dial).
        config.client_mode = role == "q";
        let dht = Dht::start(config).await.expect("the node starts");
        match role.as_str() {
            "p" => {
                let addr = dht.listen_addrs().await.unwrap()[0].clone();
                put(&dir.join("p.addr"), &addr.to_string());
                wait_stop(&dir).await;
            }
            "h" => {
                let t0 = Instant::now();
                let mapped = until("a UPnP mapping", Duration::from_secs(60), || async {
                    let r = dht.reachability().await.ok()?;
                    r.external
                        .into_iter()
                        .find(|a| a.to_string().starts_with(&format!("/ip4/{ROUTER_WAN}/")))
                })
                .await;
                eprintln!(
                    "h: mapped {mapped} after {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
                put(&dir.join("h.id"), &dht.peer_id().to_string());
                wait_stop(&dir).await;
                let r = dht.reachability().await.unwrap();
                let nat = match r.nat {
                    NatStatus::Public(_) => "public",
                    NatStatus::Private => "private",
                    NatStatus::Unknown => "unknown",
                };
                put(
                    &dir.join("h.reach"),
                    &format!("{mapped} {nat} {}", r.relayed_at.len()),
                );
            }
            _ => {
                // q: find h through p and dial it, directly, at the mapped address.
                let h: PeerId = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || wait_file(&dir.join("h.id"), Duration::from_secs(75))
                })
                .await
                .unwrap()
                .expect("h was never mapped")
                .trim()
                .parse()
                .unwrap();
                let t0 = Instant::now();
                until("a connection to h", Duration::from_secs(45), || async {
                    dht.connect(h).await.ok()
                })
                .await;
                let conns = dht.connections().await.unwrap();
                let to_h: Vec<_> = conns.iter().filter(|c| c.peer == h).collect();
                assert!(
                    to_h.iter().any(|c| c.outbound
                        && !c.relayed
                        && c.address
                            .to_string()
                            .starts_with(&format!("/ip4/{ROUTER_WAN}/"))),
                    "q dialed h directly at the router's public address: {to_h:?}"
                );
                put(
                    &dir.join("q.done"),
                    &format!(
                        "q dialed h directly at {} after {:.1} s",
                        to_h[0].address,
                        t0.elapsed().as_secs_f64()
                    ),
                );
                wait_stop(&dir).await;
            }
        }
        dht.shutdown().await;
    }
}
