//! Fuzz targets: every decoder that sees bytes from the network or from a
//! file, each as a function that must never panic, whatever the input.
//!
//! - [`record_messages`]: the record protocol's requests and responses (and
//!   the store file's rows), decoded, converted and offered to a store;
//! - [`signed_records`]: records through the signature validator and the
//!   framework's key rules (owner markers, value ‖ signature);
//! - [`rpc_envelope`]: the signed RPC envelope, decoded and verified;
//! - [`heartbeat_info`]: the heartbeat subkey's owner marker and the
//!   inference subnet's heartbeat info;
//! - [`key_file`]: key files and encoded public keys;
//! - [`gguf`]: a GGUF model file's header, tensor table and tokenizer.
//!
//! `cargo fuzz` drives them from `fuzz/libfuzzer` (a nightly toolchain:
//! `cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer record_messages` from the
//! repository root); the
//! test suite (`fuzz/tests/decoders.rs`) feeds each one random and mutated
//! inputs on stable, so every CI run fuzzes too, briefly.

use std::sync::{Arc, OnceLock};

use mesh_core::validator::{framework_keys, owner_in_field, SignatureValidator};
use mesh_core::{
    CompositeValidator, Expiration, KeyType, Kind, PeerId, PeerKey, Record, Store, StoreLimits,
    StoredValue,
};
use mesh_proto::dht as pb;
use prost::Message;

/// A fixed "now" so that runs are reproducible.
const NOW: Expiration = Expiration::from_millis(1_800_000_000_000);

fn small_store() -> Store {
    Store::new(StoreLimits {
        max_records: 64,
        max_per_publisher: 32,
        max_subkeys: 16,
        ..StoreLimits::default()
    })
}

/// Offers decoded records to a small store and reads back what it holds.
fn exercise(records: impl IntoIterator<Item = Record>) {
    let mut store = small_store();
    let publisher = PeerId::from_bytes(&[0, 2, 8, 1]).unwrap_or(PeerId::random());
    for r in records.into_iter().take(128) {
        let _ = store.check(&r, &publisher, NOW);
        let _ = store.put(&r, publisher, NOW);
        let _ = store.wants(&r.key, r.subkey.as_deref(), r.expiration, NOW);
        let _ = store.digest(&r.key, NOW);
        let _ = store.get(&r.key, NOW);
    }
    store.remove_expired(NOW);
}

/// The record protocol's messages and the store file's rows.
pub fn record_messages(data: &[u8]) {
    if let Ok(req) = pb::Request::decode(data) {
        match req.kind {
            Some(pb::request::Kind::Store(s)) => {
                for p in &s.publishers {
                    let _ = PeerId::from_bytes(p);
                }
                exercise(s.records.into_iter().map(Record::from));
            }
            Some(pb::request::Kind::Sync(s)) => {
                let store = small_store();
                for k in s.keys.iter().take(64) {
                    for e in k.entries.iter().take(64) {
                        let exp = Expiration::from_millis(e.expiration_ms);
                        let _ = store.wants(&k.key, e.subkey.as_deref(), exp, NOW);
                    }
                }
            }
            Some(pb::request::Kind::Find(_)) | None => {}
        }
    }
    if let Ok(resp) = pb::Response::decode(data) {
        if let Some(pb::response::Kind::Find(f)) = resp.kind {
            if let Some(v) = f.value.and_then(|v| StoredValue::try_from(v).ok()) {
                let mut merged = None;
                StoredValue::merge(&mut merged, v.clone(), NOW);
                exercise(v.into_records(b"k".to_vec()));
            }
            for p in f.closer {
                let _ = PeerId::from_bytes(&p.peer_id);
            }
        }
    }
    if let Ok(p) = pb::Persisted::decode(data) {
        exercise(p.records.into_iter().map(Record::from));
    }
}

fn validator() -> &'static CompositeValidator {
    static V: OnceLock<CompositeValidator> = OnceLock::new();
    V.get_or_init(|| {
        let key = PeerKey::generate(KeyType::Ed25519).expect("a key");
        let mut v = CompositeValidator::new();
        v.add(SignatureValidator::new(Arc::new(key)));
        v.add(framework_keys());
        v
    })
}

/// Records through the signature validator and the framework's key rules.
/// The input is a protobuf `Record`; when it does not decode, its bytes are
/// cut into key, subkey and value around owner-marker-looking prefixes.
pub fn signed_records(data: &[u8]) {
    let record = match pb::Record::decode(data) {
        Ok(r) => Record::from(r),
        Err(_) => {
            let third = data.len() / 3;
            let (a, rest) = data.split_at(third);
            let (b, c) = rest.split_at(third);
            let mut subkey = b"[owner:".to_vec();
            subkey.extend_from_slice(b);
            Record {
                key: a.to_vec(),
                subkey: Some(subkey),
                value: c.to_vec(),
                expiration: NOW,
            }
        }
    };
    let _ = owner_in_field(&record.key);
    if let Some(sk) = &record.subkey {
        let _ = owner_in_field(sk);
    }
    let v = validator();
    for kind in [Kind::Put, Kind::Get] {
        if v.validate(&record, kind).is_ok() {
            let _ = v.strip(&record);
        }
    }
}

/// The signed RPC envelope (a request header), decoded and verified.
pub fn rpc_envelope(data: &[u8]) {
    if let Ok(env) = mesh_server::signature::Envelope::decode(data) {
        if let Ok(public) = env.public_key() {
            let _ = env.verify_request(&public, "/echo.Echo/Say", data);
            let _ = env.verify_response(&public, "/echo.Echo/Say", &[0; 32]);
        }
        let again = mesh_server::signature::Envelope::decode(&env.encode());
        assert!(again.is_ok(), "an envelope that decoded re-encodes");
    }
}

/// The heartbeat subkey's owner marker and the inference subnet's info.
pub fn heartbeat_info(data: &[u8]) {
    let _ = owner_in_field(data);
    let _ = serde_json::from_slice::<mesh_subnet_inference::InferenceInfo>(data);
}

/// Key files (libp2p's protobuf `PrivateKey`) and encoded public keys.
pub fn key_file(data: &[u8]) {
    if let Ok(key) = PeerKey::from_protobuf(data) {
        let sig = key.sign(b"fuzz");
        assert!(mesh_core::identity::verify(&key.public(), b"fuzz", &sig));
    }
    let _ = mesh_core::identity::decode_public_key(data);
}

/// A GGUF model file: header, metadata, tensor table, tokenizer, tensors.
pub fn gguf(data: &[u8]) {
    let Ok(f) = mesh_inference::gguf::GgufFile::parse(data.to_vec()) else {
        return;
    };
    for t in f.tensors.iter().take(16) {
        let _ = f.raw(t);
    }
    let _ = mesh_inference::tokenizer::Tokenizer::from_gguf(&f);
}
