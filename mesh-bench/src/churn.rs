//! `mesh-bench churn`: records under churn. N nodes in this process hold K
//! records; W waves each kill a quarter of the starting nodes. Measured:
//! how long the survivors take to put every record back on `replicas` live
//! nodes (kill → repaired), the repair traffic, reads during the churn
//! (right after each kill, before the repair), and what is readable after
//! the last wave.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::stream::{self, StreamExt};
use mesh_core::{Expiration, KeyType, PeerKey, StoredValue};
use mesh_dht::{Dht, DhtConfig, Multiaddr};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::{listen, percentile, print_report, round, rss_kb, start_with_addr, Transport};

#[derive(clap::Args, Debug)]
pub(crate) struct ChurnArgs {
    /// Number of DHT nodes at the start, each its own swarm and identity.
    #[arg(long, default_value_t = 32)]
    peers: usize,
    /// Number of records stored before the first wave.
    #[arg(long, default_value_t = 200)]
    keys: usize,
    /// Waves of kills; each kills a quarter of the starting nodes (at most
    /// three, so that a quarter survives).
    #[arg(long, default_value_t = 3)]
    waves: usize,
    /// Every node's refresh period in seconds: the repair runs once per
    /// period, and waves come three periods apart (or once repaired, if
    /// later).
    #[arg(long = "refresh-period", default_value_t = 1.0)]
    refresh_period: f64,
    /// Replicas per key.
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// Size of each value in bytes.
    #[arg(long = "value-bytes", default_value_t = 128)]
    value_bytes: usize,
    /// Transport between the nodes.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Give up on a wave's repair after this many seconds.
    ///
    /// A wave that kills `replicas` or more nodes at once can take every
    /// copy of a record (each with probability C(killed, replicas) /
    /// C(alive, replicas)): those are counted in `keys_lost`, and the repair
    /// time is that of the records that still have a copy.
    #[arg(long = "repair-timeout", default_value_t = 60.0)]
    repair_timeout: f64,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

async fn start(args: &ChurnArgs, initial: Vec<Multiaddr>) -> Result<(Dht, Multiaddr)> {
    let mut c = DhtConfig::new(PeerKey::generate(KeyType::Ed25519)?);
    c.subnet_id = mesh_dht::test_utils::TEST_SUBNET;
    c.listen = vec![listen(args.transport)];
    c.initial_peers = initial;
    c.replicas = args.replicas;
    c.refresh_period = Duration::from_secs_f64(args.refresh_period);
    c.request_timeout = Duration::from_secs(5);
    c.bootstrap_timeout = Duration::from_secs(60);
    // One process plays every peer: per-peer limits would throttle the benchmark, not a peer.
    c.rate_limit = None;
    c.max_connections = 4096;
    c.max_outbound = 4096;
    // Every peer shares 127.0.0.1: per-address limits would throttle the run.
    c.inbound = mesh_dht::InboundLimits {
        max_established: 4096,
        max_pending: 4096,
        max_pending_per_ip: 4096,
        max_established_per_ip: 4096,
        ..Default::default()
    };
    start_with_addr(c).await
}

/// For each key, how many of `nodes` hold its value themselves.
async fn copies(nodes: &[Dht], keys: &[Vec<u8>], value: &[u8]) -> Result<Vec<usize>> {
    let mut out = vec![0; keys.len()];
    for n in nodes {
        for (i, k) in keys.iter().enumerate() {
            if matches!(n.local(k.clone()).await?, Some(StoredValue::Regular(item)) if item.value == value)
            {
                out[i] += 1;
            }
        }
    }
    Ok(out)
}

async fn repair_bytes(nodes: &[Dht]) -> Result<u64> {
    let mut total = 0;
    for n in nodes {
        total += n.stats().await?.repair_bytes_sent;
    }
    Ok(total)
}

/// Reads every key once through random live nodes: latencies (ms) and
/// how many came back whole.
async fn read_all(nodes: &[Dht], keys: &[Vec<u8>], value: &[u8]) -> (Vec<f64>, usize) {
    let plan: Vec<(Dht, Vec<u8>)> = {
        let mut rng = rand::thread_rng();
        keys.iter()
            .map(|k| (nodes[rng.gen_range(0..nodes.len())].clone(), k.clone()))
            .collect()
    };
    let results: Vec<(f64, bool)> = stream::iter(plan)
        .map(|(dht, key)| async move {
            let t = Instant::now();
            let got = dht.get(key, false).await;
            let ok = matches!(got, Ok(Some(StoredValue::Regular(ref item))) if item.value == value);
            (t.elapsed().as_secs_f64() * 1e3, ok)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let ok = results.iter().filter(|r| r.1).count();
    (results.into_iter().map(|r| r.0).collect(), ok)
}

pub(crate) async fn bench_churn(args: ChurnArgs) -> Result<()> {
    if args.peers < 8 {
        bail!("--peers must be at least 8 (each wave kills a quarter of them)");
    }
    if args.keys == 0 || args.replicas == 0 {
        bail!("--keys and --replicas must be positive");
    }
    if args.waves > 3 {
        bail!("--waves is at most 3: each kills a quarter of the starting nodes");
    }
    if !(args.refresh_period.is_finite() && args.refresh_period > 0.0) {
        bail!("--refresh-period must be a positive number of seconds");
    }
    if !(args.repair_timeout.is_finite() && args.repair_timeout > 0.0) {
        bail!("--repair-timeout must be a positive number of seconds");
    }
    let period = Duration::from_secs_f64(args.refresh_period);

    let t0 = Instant::now();
    let mut nodes: Vec<(Dht, Multiaddr)> = vec![start(&args, vec![]).await?];
    while nodes.len() < args.peers {
        let initial = {
            let mut rng = rand::thread_rng();
            let mut peers: Vec<Multiaddr> = (0..2)
                .map(|_| nodes[rng.gen_range(0..nodes.len())].1.clone())
                .collect();
            peers.dedup();
            peers
        };
        nodes.push(start(&args, initial).await?);
        if nodes.len().is_multiple_of(16) {
            eprintln!(
                "[mesh-bench] {} of {} nodes up after {:.1} s",
                nodes.len(),
                args.peers,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let mut live: Vec<Dht> = nodes.into_iter().map(|(d, _)| d).collect();
    eprintln!("[mesh-bench] {} nodes up", live.len());
    // A refresh round fills the routing tables.
    tokio::time::sleep(period).await;

    let value = vec![b'x'; args.value_bytes];
    let expiration = Expiration::in_(Duration::from_secs(3600));
    let keys: Vec<Vec<u8>> = (0..args.keys)
        .map(|i| format!("churn-key-{i}").into_bytes())
        .collect();
    let mut stored = 0usize;
    for (i, k) in keys.iter().enumerate() {
        let r = live[i % live.len()]
            .store(k.clone(), None, value.clone(), expiration)
            .await?;
        if r.accepted > 0 {
            stored += 1;
        }
    }
    if stored < keys.len() {
        bail!("only {stored} of {} records were stored", keys.len());
    }
    eprintln!("[mesh-bench] {stored} records stored");
    // Start from a placed network: every record on `replicas` nodes.
    let placed = Instant::now();
    loop {
        let c = copies(&live, &keys, &value).await?;
        let short = c.iter().filter(|n| **n < args.replicas).count();
        if short == 0 {
            break;
        }
        if placed.elapsed().as_secs_f64() > args.repair_timeout {
            bail!(
                "{short} records never reached {} replicas (copies: {c:?})",
                args.replicas
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "[mesh-bench] every record on {} nodes after {:.2} s",
        args.replicas,
        placed.elapsed().as_secs_f64()
    );

    let quarter = args.peers / 4;
    let mut repair_s: Vec<f64> = Vec::new();
    let mut repair_total = 0u64;
    let mut churn_get_ms: Vec<f64> = Vec::new();
    let mut churn_ok = 0usize;
    let mut lost = 0usize;
    for wave in 0..args.waves {
        live.shuffle(&mut rand::thread_rng());
        let killed: Vec<Dht> = live.drain(..quarter).collect();
        let bytes_before = repair_bytes(&live).await?;
        let kill = Instant::now();
        for n in &killed {
            n.close();
        }
        for n in killed {
            n.shutdown().await;
        }
        // Reads while the network repairs.
        let (ms, ok) = read_all(&live, &keys, &value).await;
        churn_get_ms.extend(ms);
        churn_ok += ok;
        let want = args.replicas.min(live.len());
        let took = loop {
            let c = copies(&live, &keys, &value).await?;
            // A record with no live copy is gone for good (every node that
            // held it died in this wave); the others must be repaired.
            lost = lost.max(c.iter().filter(|n| **n == 0).count());
            if c.iter().all(|n| *n == 0 || *n >= want) {
                break Some(kill.elapsed().as_secs_f64());
            }
            if kill.elapsed().as_secs_f64() > args.repair_timeout {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        repair_total += repair_bytes(&live).await?.saturating_sub(bytes_before);
        match took {
            Some(s) => repair_s.push(s),
            None => eprintln!(
                "[mesh-bench] wave {wave}: records not back on {want} live nodes after {} s",
                args.repair_timeout
            ),
        }
        let mut routing = 0usize;
        for n in &live {
            routing += n.stats().await?.routing_table_size;
        }
        eprintln!(
            "[mesh-bench] wave {wave}: {} live, repaired in {:?} s, routing table {:.1} peers on average",
            live.len(),
            took.map(|s| round(s, 3)),
            routing as f64 / live.len() as f64
        );
        // The next wave comes three periods after this one (or once
        // repaired, if later).
        if let Some(left) = (3 * period).checked_sub(kill.elapsed()) {
            tokio::time::sleep(left).await;
        }
    }

    let (_, ok) = read_all(&live, &keys, &value).await;
    let recall_after_waves = ok as f64 / keys.len() as f64;
    let rss_mb = rss_kb("VmRSS:") as f64 / 1024.0;
    churn_get_ms.sort_by(f64::total_cmp);
    let reads = churn_get_ms.len().max(1) as f64;
    let repaired_all = repair_s.len() == args.waves;
    let out = serde_json::json!({
        "system": "mesh",
        "bench": "churn",
        "peers": args.peers,
        "keys": args.keys,
        "waves": args.waves,
        "killed_per_wave": quarter,
        "replicas": args.replicas,
        "refresh_period_s": args.refresh_period,
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "recall_after_waves": round(recall_after_waves, 4),
        "keys_lost": lost,
        "repaired_every_wave": repaired_all,
        "repair_s": repair_s.iter().copied().fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s)))).map(|s| round(s, 3)),
        "repair_s_per_wave": repair_s.iter().map(|s| round(*s, 3)).collect::<Vec<_>>(),
        "repair_bytes": repair_total,
        "get_p50_ms": round(percentile(&churn_get_ms, 0.50), 3),
        "get_p99_ms": round(percentile(&churn_get_ms, 0.99), 3),
        "get_recall_during_churn": round(churn_ok as f64 / reads, 4),
        "rss_mb": round(rss_mb, 1),
    });
    for d in &live {
        d.shutdown().await;
    }
    print_report(&out, args.json);
    Ok(())
}
