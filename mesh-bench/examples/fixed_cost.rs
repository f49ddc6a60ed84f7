//! Measures the memory a DHT node costs before it has any connection.
use mesh_core::{KeyType, PeerKey};
use mesh_dht::{Dht, DhtConfig};

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let before = rss();
    let mut nodes = Vec::new();
    for _ in 0..n {
        let mut c = DhtConfig::new(PeerKey::generate(KeyType::Ed25519).unwrap());
        c.listen = vec![format!("/memory/{}", rand::random::<u64>())
            .parse()
            .unwrap()];
        nodes.push(Dht::start(c).await.unwrap());
    }
    let after = rss();
    println!(
        "{n} idle nodes: {:.1} KB each",
        (after - before) as f64 / n as f64
    );
}
