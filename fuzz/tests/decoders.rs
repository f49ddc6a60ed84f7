//! Every fuzz target, on stable: valid seeds, their mutations (bit flips,
//! truncations, splices, length fields set to extremes) and random bytes,
//! a bounded number of each. 0 panics; a panic prints the input in hex.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use mesh_core::{Expiration, KeyType, PeerKey, Record};
use mesh_proto::dht as pb;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inputs per target (and at most this long per target).
const INPUTS: usize = 200_000;
const TIME: Duration = Duration::from_secs(20);

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..6) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !v.is_empty() => v.truncate(rng.gen_range(0..v.len())),
            2 => {
                let at = rng.gen_range(0..=v.len());
                let junk: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                v.splice(at..at, junk);
            }
            3 if v.len() >= 4 => {
                // A length or count field set to an extreme.
                let i = rng.gen_range(0..v.len() - 3);
                let x: [u8; 4] =
                    [[0xff; 4], [0x7f, 0xff, 0xff, 0xff], [0; 4], [0x80; 4]][rng.gen_range(0..4)];
                v[i..i + 4].copy_from_slice(&x);
            }
            4 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = [0, 0xff, 0x80, 0x7f][rng.gen_range(0..4)];
            }
            _ => {
                let i = rng.gen_range(0..=v.len());
                v.truncate(i);
                v.extend_from_slice(&seed[..seed.len().min(rng.gen_range(0..64))]);
            }
        }
    }
    v
}

/// The run's seed: `MESH_FUZZ_SEED` to replay one, else a new one each run
/// (so the suite covers new inputs every time); printed either way.
fn run_seed() -> u64 {
    match std::env::var("MESH_FUZZ_SEED") {
        Ok(s) => s.parse().expect("MESH_FUZZ_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x6d65_7368, |d| d.as_nanos() as u64),
    }
}

fn fuzz(name: &str, target: fn(&[u8]), seeds: &[Vec<u8>]) {
    let run = run_seed();
    let mut rng = StdRng::seed_from_u64(run);
    let start = Instant::now();
    for seed in seeds {
        target(seed);
    }
    let mut ran = 0;
    while ran < INPUTS && start.elapsed() < TIME {
        let input = if ran % 4 == 0 || seeds.is_empty() {
            let n = rng.gen_range(0..512);
            (0..n).map(|_| rng.gen()).collect()
        } else {
            let seed = rng.gen_range(0..seeds.len());
            mutate(&mut rng, &seeds[seed])
        };
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{name} panicked on input {hex} (MESH_FUZZ_SEED={run})");
        }
        ran += 1;
    }
    eprintln!(
        "{name}: {ran} inputs in {:?}, no panic (MESH_FUZZ_SEED={run})",
        start.elapsed()
    );
}

fn exp() -> Expiration {
    Expiration::from_millis(1_800_000_060_000)
}

#[test]
fn record_messages() {
    let records = vec![
        Record::new("k", "v", exp()).into(),
        Record::with_subkey("d", "s", "w", exp()).into(),
    ];
    let seeds = vec![
        pb::Request {
            kind: Some(pb::request::Kind::Store(pb::StoreRequest {
                records: records.clone(),
                publishers: vec![mesh_core::PeerId::random().to_bytes(); 2],
            })),
        }
        .encode_to_vec(),
        pb::Request {
            kind: Some(pb::request::Kind::Sync(pb::SyncRequest {
                keys: vec![pb::KeyDigest {
                    key: b"k".to_vec(),
                    entries: vec![pb::EntryDigest {
                        subkey: Some(b"s".to_vec()),
                        expiration_ms: exp().as_millis(),
                    }],
                }],
            })),
        }
        .encode_to_vec(),
        pb::Response {
            kind: Some(pb::response::Kind::Find(pb::FindResponse {
                value: Some(pb::StoredValue::from(mesh_core::StoredValue::from_record(
                    &Record::with_subkey("d", "s", "w", exp()),
                ))),
                closer: vec![pb::Peer {
                    peer_id: mesh_core::PeerId::random().to_bytes(),
                    addrs: vec![b"\x04\x7f\x00\x00\x01\x06\x00\x01".to_vec()],
                }],
                more: true,
            })),
        }
        .encode_to_vec(),
        pb::Persisted {
            records,
            publishers: vec![mesh_core::PeerId::random().to_bytes(); 2],
        }
        .encode_to_vec(),
    ];
    fuzz("record_messages", mesh_fuzz::record_messages, &seeds);
}

#[test]
fn signed_records() {
    let key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let mut v = mesh_core::CompositeValidator::new();
    v.add(mesh_core::validator::SignatureValidator::new(
        std::sync::Arc::new(key.clone()),
    ));
    let marker = mesh_core::validator::owner_marker(&key.public());
    let signed = v.sign(Record {
        key: mesh_core::validator::HEARTBEAT_KEY.to_vec(),
        subkey: Some(marker),
        value: b"{\"load\":1}".to_vec(),
        expiration: exp(),
    });
    let seeds = vec![
        pb::Record::from(signed.clone()).encode_to_vec(),
        pb::Record::from(Record::new("plain", "v", exp())).encode_to_vec(),
        [
            signed.key.clone(),
            signed.subkey.clone().unwrap(),
            signed.value.clone(),
        ]
        .concat(),
    ];
    fuzz("signed_records", mesh_fuzz::signed_records, &seeds);
}

#[test]
fn rpc_envelope() {
    let key = std::sync::Arc::new(PeerKey::generate(KeyType::Ed25519).unwrap());
    let signer = mesh_server::signature::EnvelopeSigner::new(key);
    let env = mesh_server::signature::Envelope::sign_request(
        &signer,
        "/echo.Echo/Say",
        mesh_core::PeerId::random(),
        1_800_000_000_000,
        [7; 16],
        b"body",
    );
    fuzz("rpc_envelope", mesh_fuzz::rpc_envelope, &[env.encode()]);
}

#[test]
fn heartbeat_info() {
    let key = PeerKey::generate(KeyType::Ed25519).unwrap();
    let seeds = vec![
        mesh_core::validator::owner_marker(&key.public()),
        br#"{"model":"smollm2","load":0.5,"max_batch":8,"max_context":2048,"embeddings":false}"#
            .to_vec(),
    ];
    fuzz("heartbeat_info", mesh_fuzz::heartbeat_info, &seeds);
}

#[test]
fn key_file() {
    let ed = PeerKey::generate(KeyType::Ed25519).unwrap();
    let seeds = vec![ed.to_protobuf().to_vec(), ed.public().encode_protobuf()];
    fuzz("key_file", mesh_fuzz::key_file, &seeds);
}

/// A small but complete GGUF file: metadata of several types (a string
/// array among them), one F32 tensor, aligned data.
fn tiny_gguf() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut f = b"GGUF".to_vec();
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&1u64.to_le_bytes()); // tensors
    f.extend_from_slice(&3u64.to_le_bytes()); // metadata entries
    string(&mut f, "general.architecture");
    f.extend_from_slice(&8u32.to_le_bytes());
    string(&mut f, "llama");
    string(&mut f, "general.alignment");
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&32u32.to_le_bytes());
    string(&mut f, "tokenizer.ggml.tokens");
    f.extend_from_slice(&9u32.to_le_bytes());
    f.extend_from_slice(&8u32.to_le_bytes()); // array of strings
    f.extend_from_slice(&2u64.to_le_bytes());
    string(&mut f, "a");
    string(&mut f, "b");
    string(&mut f, "t");
    f.extend_from_slice(&1u32.to_le_bytes()); // dimensions
    f.extend_from_slice(&4u64.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes()); // F32
    f.extend_from_slice(&0u64.to_le_bytes()); // offset
    while !f.len().is_multiple_of(32) {
        f.push(0);
    }
    for x in [1.0f32, 2.0, 3.0, 4.0] {
        f.extend_from_slice(&x.to_le_bytes());
    }
    f
}

#[test]
fn gguf() {
    let tiny = tiny_gguf();
    assert!(
        mesh_inference::gguf::GgufFile::parse(tiny.clone()).is_ok(),
        "the seed is a valid GGUF file"
    );
    fuzz("gguf", mesh_fuzz::gguf, &[tiny]);
}
