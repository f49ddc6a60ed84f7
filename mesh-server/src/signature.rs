//! Signed envelopes on requests and responses: the signature authorizer.
//!
//! Noise already authenticates the transport: a handler knows which PeerId
//! is on the other end of the libp2p stream ([`crate::rpc::caller`]). The
//! envelope adds what the transport does not give, like the Python mesh's
//! signature authorizer does:
//!
//! - **replay protection**: every request carries a fresh 16-byte nonce; a
//!   server refuses a nonce it has seen from the same signer;
//! - **freshness**: the envelope's timestamp must be within 60 s
//!   (configurable) of the server's clock, which also bounds how long nonces
//!   must be remembered;
//! - **target binding**: a request names the PeerId of the server it is for,
//!   so a request cannot be replayed to another service key;
//! - **end-to-end signed responses**: the server signs what it answered,
//!   bound to the request's nonce and to the caller, so a client can prove
//!   (and keep) what a peer said.
//!
//! # The envelope
//!
//! Carried in the gRPC binary metadata header `mesh-signature-bin` (base64,
//! as gRPC does for `-bin` headers), as a fixed, length-checked layout:
//!
//! ```text
//! version     u8      = 1
//! key_len     u16 BE  (at most 1024), then the signer's public key in
//!                     libp2p's protobuf encoding (Ed25519 or RSA)
//! timestamp   u64 BE  unix milliseconds
//! nonce       16 bytes
//! target_len  u8      (at most 128), then the target PeerId's bytes
//! sig_len     u16 BE  (at most 1024), then the signature
//! ```
//!
//! The signature ([`mesh_core::PeerKey::sign`]: Ed25519, or RSA-PSS over
//! SHA-256) covers
//!
//! ```text
//! domain ‖ 0x00 ‖ u32 BE path length ‖ path ‖ u8 target length ‖ target
//!        ‖ u64 BE timestamp ‖ nonce ‖ SHA-256(body)
//! ```
//!
//! - requests: domain `mesh/rpc/request/1`, the method path, the server's
//!   PeerId as target, and the full gRPC-framed request body;
//! - responses: domain `mesh/rpc/response/1`, the method path, the
//!   *caller's* PeerId as target, the *request's* nonce (binding the answer
//!   to the question) and the full gRPC-framed response body. The response
//!   envelope goes in the gRPC trailers, so server streams stay streams; a
//!   trailers-only response (a refusal, an error) carries it in its headers,
//!   over an empty body.
//!
//! # Parts
//!
//! - [`SignatureAuthorizer`]: the server-side check, an [`Authorizer`] named
//!   `"signature"` that composes in an [`crate::AuthLayer`] with the others
//!   (its refusals read `signature: …` and are counted in
//!   [`crate::auth::AuthMetrics`]);
//! - [`SignResponsesLayer`]: signs every response of a server; put it
//!   outside the `AuthLayer` so refusals are signed too;
//! - [`signed`] / [`SignedChannel`]: the client side, a channel that signs
//!   requests and verifies responses, for generated clients
//!   (`EchoClient::new(signed(channel, key, peer))`). A response whose
//!   signature is missing or wrong fails with `Code::Unauthenticated`,
//!   `signature: response …`.
//!
//! Requests are buffered to be hashed (at most 4 MiB by default): unary and
//! server-streaming calls work as usual, a client-streaming call sends its
//! messages when its stream ends. Server-stream messages reach the caller as
//! they arrive; the stream's end (its trailers) is where a bad signature
//! shows, as the stream's last item, an error. A unary reply is only
//! returned once its signature is checked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use libp2p::PeerId;
use mesh_core::{PeerKey, PublicKey};
use sha2::{Digest, Sha256};
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::auth::{AuthFuture, Authorizer, CallInfo, Refusal, DEFAULT_MAX_BODY_BYTES};
use crate::rpc::Caller;

/// The gRPC metadata header that carries the envelope.
pub const SIGNATURE_HEADER: &str = "mesh-signature-bin";
/// Domain tag of request signatures.
pub const REQUEST_DOMAIN: &[u8] = b"mesh/rpc/request/1";
/// Domain tag of response signatures.
pub const RESPONSE_DOMAIN: &[u8] = b"mesh/rpc/response/1";
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 16;
/// Clock skew accepted by default: 60 s either way.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(60);
/// Nonces remembered at most by default (each for twice the skew window).
pub const DEFAULT_MAX_NONCES: usize = 1_000_000;

const VERSION: u8 = 1;
const MAX_KEY_LEN: usize = 1024;
const MAX_TARGET_LEN: usize = 128;
const MAX_SIGNATURE_LEN: usize = 1024;
const GRPC_STATUS: &str = "grpc-status";

/// A request's nonce.
pub type Nonce = [u8; NONCE_LEN];

/// A boxed error, what [`SignedChannel`] fails with (a [`Status`] inside).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Milliseconds since the unix epoch, by this machine's clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// SHA-256 of a body.
pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// No `mesh-signature-bin` header.
    #[error("no {SIGNATURE_HEADER} envelope")]
    Missing,
    /// The header is not base64.
    #[error("the {SIGNATURE_HEADER} header is not base64")]
    NotBase64,
    /// An envelope format this node does not know.
    #[error("envelope version {0} (this node reads version 1)")]
    Version(u8),
    /// The bytes end inside a field.
    #[error("envelope truncated in its {field}: {needed} bytes needed, {left} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// A field is longer than the format allows.
    #[error("envelope {field} of {len} bytes (at most {max})")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// Bytes after the signature.
    #[error("{0} bytes after the envelope's signature")]
    Trailing(usize),
    /// The target is not a PeerId.
    #[error("envelope target is not a PeerId: {0}")]
    Target(String),
    /// The signer's key is not an Ed25519 or RSA libp2p public key.
    #[error("envelope key: {0}")]
    Key(String),
}

/// A signed envelope: who signed, when, which nonce, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The signer's public key, libp2p protobuf encoding.
    pub public_key: Vec<u8>,
    /// When it was signed, unix milliseconds.
    pub timestamp_ms: u64,
    /// The request's nonce (a response repeats its request's).
    pub nonce: Nonce,
    /// The server (requests) or the caller (responses).
    pub target: PeerId,
    /// The signature over the message described in the module docs.
    pub signature: Vec<u8>,
}

/// The signed message: domain, path, target, timestamp, nonce, body hash.
fn signed_message(
    domain: &[u8],
    path: &str,
    target: &PeerId,
    timestamp_ms: u64,
    nonce: &Nonce,
    body_hash: &[u8; 32],
) -> Vec<u8> {
    let target = target.to_bytes();
    let mut m = Vec::with_capacity(domain.len() + path.len() + target.len() + 64);
    m.extend_from_slice(domain);
    m.push(0);
    m.extend_from_slice(&u32::try_from(path.len()).unwrap_or(u32::MAX).to_be_bytes());
    m.extend_from_slice(path.as_bytes());
    m.push(u8::try_from(target.len()).unwrap_or(u8::MAX));
    m.extend_from_slice(&target);
    m.extend_from_slice(&timestamp_ms.to_be_bytes());
    m.extend_from_slice(nonce);
    m.extend_from_slice(body_hash);
    m
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EnvelopeError> {
        if self.0.len() < n {
            return Err(EnvelopeError::Truncated {
                field,
                needed: n,
                left: self.0.len(),
            });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, EnvelopeError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<usize, EnvelopeError> {
        let b = self.take(2, field)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn sized(
        &mut self,
        len: usize,
        max: usize,
        field: &'static str,
    ) -> Result<&'a [u8], EnvelopeError> {
        if len > max {
            return Err(EnvelopeError::TooLong { field, len, max });
        }
        self.take(len, field)
    }
}

impl Envelope {
    /// Signs a request for `target` over the gRPC-framed `body`.
    pub fn sign_request(
        signer: &EnvelopeSigner,
        path: &str,
        target: PeerId,
        timestamp_ms: u64,
        nonce: Nonce,
        body: &[u8],
    ) -> Self {
        signer.sign(
            REQUEST_DOMAIN,
            path,
            target,
            timestamp_ms,
            nonce,
            &body_hash(body),
        )
    }

    /// Signs a response to `caller`'s request with `nonce`, over a body
    /// whose SHA-256 is `body_hash`.
    pub fn sign_response(
        signer: &EnvelopeSigner,
        path: &str,
        caller: PeerId,
        timestamp_ms: u64,
        nonce: Nonce,
        body_hash: &[u8; 32],
    ) -> Self {
        signer.sign(
            RESPONSE_DOMAIN,
            path,
            caller,
            timestamp_ms,
            nonce,
            body_hash,
        )
    }

    /// Whether the signature is `public`'s over a request to `path` with
    /// this `body`.
    pub fn verify_request(&self, public: &PublicKey, path: &str, body: &[u8]) -> bool {
        self.verify(REQUEST_DOMAIN, public, path, &body_hash(body))
    }

    /// Whether the signature is `public`'s over a response to `path` whose
    /// body hashes to `body_hash`.
    pub fn verify_response(&self, public: &PublicKey, path: &str, body_hash: &[u8; 32]) -> bool {
        self.verify(RESPONSE_DOMAIN, public, path, body_hash)
    }

    fn verify(&self, domain: &[u8], public: &PublicKey, path: &str, hash: &[u8; 32]) -> bool {
        let message = signed_message(
            domain,
            path,
            &self.target,
            self.timestamp_ms,
            &self.nonce,
            hash,
        );
        mesh_core::identity::verify(public, &message, &self.signature)
    }

    /// The signer's public key, decoded (Ed25519 or RSA only).
    pub fn public_key(&self) -> Result<PublicKey, EnvelopeError> {
        mesh_core::identity::decode_public_key(&self.public_key)
            .map_err(|e| EnvelopeError::Key(e.to_string()))
    }

    /// The layout described in the module docs.
    ///
    /// # Panics
    ///
    /// When the key or signature is 64 KiB or more, or the target's bytes
    /// 256 or more (never for Ed25519 and RSA keys and PeerIds).
    pub fn encode(&self) -> Vec<u8> {
        let target = self.target.to_bytes();
        let mut out = Vec::with_capacity(
            1 + 2 + self.public_key.len() + 8 + NONCE_LEN + 1 + target.len() + 2 + 128,
        );
        out.push(VERSION);
        let key_len = u16::try_from(self.public_key.len()).expect("a key under 64 KiB");
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.push(u8::try_from(target.len()).expect("a PeerId under 256 bytes"));
        out.extend_from_slice(&target);
        let sig_len = u16::try_from(self.signature.len()).expect("a signature under 64 KiB");
        out.extend_from_slice(&sig_len.to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Reads [`Envelope::encode`]'s layout; every length is checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut r = Reader(bytes);
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(EnvelopeError::Version(version));
        }
        let key_len = r.u16("key length")?;
        let public_key = r.sized(key_len, MAX_KEY_LEN, "key")?.to_vec();
        let timestamp = r.take(8, "timestamp")?;
        let timestamp_ms = u64::from_be_bytes(timestamp.try_into().expect("8 bytes"));
        let nonce: Nonce = r.take(NONCE_LEN, "nonce")?.try_into().expect("16 bytes");
        let target_len = usize::from(r.u8("target length")?);
        let target = r.sized(target_len, MAX_TARGET_LEN, "target")?;
        let target =
            PeerId::from_bytes(target).map_err(|e| EnvelopeError::Target(e.to_string()))?;
        let sig_len = r.u16("signature length")?;
        let signature = r.sized(sig_len, MAX_SIGNATURE_LEN, "signature")?.to_vec();
        if !r.0.is_empty() {
            return Err(EnvelopeError::Trailing(r.0.len()));
        }
        Ok(Self {
            public_key,
            timestamp_ms,
            nonce,
            target,
            signature,
        })
    }

    /// The value of a `mesh-signature-bin` header (unpadded base64).
    pub fn to_header_value(&self) -> HeaderValue {
        let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.encode());
        HeaderValue::from_str(&text).expect("base64 is a valid header value")
    }

    /// Reads the envelope from `mesh-signature-bin` in headers or trailers
    /// (base64, padded or not).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, EnvelopeError> {
        let value = headers
            .get(SIGNATURE_HEADER)
            .ok_or(EnvelopeError::Missing)?;
        let bytes = BASE64
            .decode(value.as_bytes())
            .map_err(|_| EnvelopeError::NotBase64)?;
        Self::decode(&bytes)
    }
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A key that signs envelopes, with its public key encoded once.
#[derive(Clone)]
pub struct EnvelopeSigner {
    key: Arc<PeerKey>,
    public_key: Arc<[u8]>,
    peer_id: PeerId,
}

impl std::fmt::Debug for EnvelopeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeSigner")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl EnvelopeSigner {
    /// Signs with `key`.
    pub fn new(key: Arc<PeerKey>) -> Self {
        let public = key.public();
        Self {
            public_key: public.encode_protobuf().into(),
            peer_id: public.to_peer_id(),
            key,
        }
    }

    /// The signer's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    fn sign(
        &self,
        domain: &[u8],
        path: &str,
        target: PeerId,
        timestamp_ms: u64,
        nonce: Nonce,
        hash: &[u8; 32],
    ) -> Envelope {
        let message = signed_message(domain, path, &target, timestamp_ms, &nonce, hash);
        Envelope {
            public_key: self.public_key.to_vec(),
            timestamp_ms,
            nonce,
            target,
            signature: self.key.sign(&message),
        }
    }
}

/// Decoded public keys by their encoding, so that a peer's key is parsed
/// once, not on every call.
#[derive(Default)]
struct KeyCache {
    keys: Mutex<HashMap<Vec<u8>, (PublicKey, PeerId)>>,
}

const KEY_CACHE_ENTRIES: usize = 4_096;

impl KeyCache {
    fn get(&self, envelope: &Envelope) -> Result<(PublicKey, PeerId), EnvelopeError> {
        if let Some(found) = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&envelope.public_key)
        {
            return Ok(found.clone());
        }
        let public = envelope.public_key()?;
        let entry = (public.clone(), public.to_peer_id());
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= KEY_CACHE_ENTRIES {
            keys.clear();
        }
        keys.insert(envelope.public_key.clone(), entry.clone());
        Ok(entry)
    }
}

/// The client side's shared cache (channels are often made per call).
fn client_keys() -> &'static KeyCache {
    static KEYS: std::sync::OnceLock<KeyCache> = std::sync::OnceLock::new();
    KEYS.get_or_init(KeyCache::default)
}

fn skew_reason(now_ms: u64, timestamp_ms: u64, max_skew: Duration) -> Option<String> {
    let skew = i128::from(timestamp_ms) - i128::from(now_ms);
    let max = i128::try_from(max_skew.as_millis()).unwrap_or(i128::MAX);
    (skew.abs() > max).then(|| {
        let (secs, way) = if skew > 0 {
            (skew as f64 / 1e3, "ahead of")
        } else {
            (-skew as f64 / 1e3, "behind")
        };
        format!(
            "timestamp {secs:.1} s {way} this node's clock (at most {} s allowed)",
            max_skew.as_secs_f64()
        )
    })
}

#[derive(Default)]
struct Seen {
    set: HashSet<u128>,
    order: VecDeque<(Instant, u128)>,
}

impl Seen {
    fn evict(&mut self, now: Instant) {
        while let Some(&(until, id)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.set.remove(&id);
        }
    }
}

/// Checks request envelopes (module docs): the `"signature"` authorizer.
///
/// Refuses, with `Code::Unauthenticated` unless said otherwise, a call
/// - without a well-formed envelope;
/// - whose envelope key is not the Noise-authenticated caller's (someone
///   else's envelope, replayed);
/// - aimed at another PeerId than this server's;
/// - whose timestamp is more than the allowed skew (60 s) from this clock;
/// - whose signature does not match the path and the exact body (tampered);
/// - whose nonce the signer already used (replayed);
/// - with a body over the [`crate::AuthLayer`]'s limit (`ResourceExhausted`).
///
/// Nonces of verified requests are remembered for twice the skew window
/// (a request older than that is refused as stale anyway), at most
/// `max_nonces` of them; when that many calls came within the window, new
/// ones are refused with `ResourceExhausted` until old ones expire.
pub struct SignatureAuthorizer {
    local: PeerId,
    max_skew: Duration,
    max_nonces: usize,
    seen: Mutex<Seen>,
    keys: KeyCache,
}

impl SignatureAuthorizer {
    /// Checks requests to the server `local` (this node's PeerId).
    pub fn new(local: PeerId) -> Self {
        Self {
            local,
            max_skew: DEFAULT_MAX_SKEW,
            max_nonces: DEFAULT_MAX_NONCES,
            seen: Mutex::default(),
            keys: KeyCache::default(),
        }
    }

    /// Accept timestamps within `max_skew` of this clock (default 60 s).
    pub fn with_max_skew(mut self, max_skew: Duration) -> Self {
        self.max_skew = max_skew;
        self
    }

    /// Remember at most this many nonces (default 1,000,000).
    pub fn with_max_nonces(mut self, max_nonces: usize) -> Self {
        self.max_nonces = max_nonces.max(1);
        self
    }

    /// Nonces remembered now.
    pub fn remembered_nonces(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    fn nonce_id(signer: &PeerId, nonce: &Nonce) -> u128 {
        let mut h = Sha256::new();
        h.update(signer.to_bytes());
        h.update(nonce);
        let digest = h.finalize();
        u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
    }

    /// Checks `call` at `now_ms` (unix ms) and `now` (for nonce expiry).
    pub fn check(&self, call: &CallInfo, now_ms: u64, now: Instant) -> Result<(), Refusal> {
        let unauthenticated = |reason: String| Refusal::new(Code::Unauthenticated, reason);
        let envelope = match Envelope::from_headers(&call.headers) {
            Ok(e) => e,
            Err(EnvelopeError::Missing) => {
                return Err(unauthenticated(format!(
                    "the call has no {SIGNATURE_HEADER} envelope (unsigned request)"
                )))
            }
            Err(e) => return Err(unauthenticated(format!("malformed envelope: {e}"))),
        };
        let caller = call
            .caller
            .ok_or_else(|| unauthenticated("the caller has no PeerId".into()))?;
        let (public, signer) = self
            .keys
            .get(&envelope)
            .map_err(|e| unauthenticated(format!("malformed envelope: {e}")))?;
        if signer != caller {
            return Err(unauthenticated(format!(
                "the envelope is signed by {signer}, not by the caller {caller}"
            )));
        }
        if envelope.target != self.local {
            return Err(unauthenticated(format!(
                "the envelope is for {}, not for this server {}",
                envelope.target, self.local
            )));
        }
        if let Some(reason) = skew_reason(now_ms, envelope.timestamp_ms, self.max_skew) {
            return Err(unauthenticated(format!("stale envelope: {reason}")));
        }
        let id = Self::nonce_id(&signer, &envelope.nonce);
        let replayed = || {
            unauthenticated(format!(
                "nonce {} of {signer} was already used (replayed request)",
                hex(&envelope.nonce)
            ))
        };
        if self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .contains(&id)
        {
            return Err(replayed());
        }
        let body = call.body.as_deref().ok_or_else(|| {
            Refusal::new(
                Code::Internal,
                "the request body was not buffered for checking",
            )
        })?;
        if !envelope.verify_request(&public, &call.path, body) {
            return Err(unauthenticated(format!(
                "the signature of {signer} does not match the request \
                 (tampered body, path or envelope)"
            )));
        }
        // Only verified nonces are remembered: garbage cannot burn them.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.evict(now);
        if seen.set.len() >= self.max_nonces {
            return Err(Refusal::new(
                Code::ResourceExhausted,
                format!(
                    "{} requests within {} s already: too many nonces to remember, try again later",
                    self.max_nonces,
                    (self.max_skew * 2).as_secs()
                ),
            ));
        }
        if !seen.set.insert(id) {
            return Err(replayed());
        }
        seen.order.push_back((now + self.max_skew * 2, id));
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Authorizer for SignatureAuthorizer {
    fn name(&self) -> &'static str {
        "signature"
    }

    fn needs_body(&self) -> bool {
        true
    }

    fn authorize<'a>(&'a self, call: &'a CallInfo) -> AuthFuture<'a> {
        let verdict = self.check(call, unix_ms(), Instant::now());
        Box::pin(std::future::ready(verdict))
    }
}

// ---------------------------------------------------------------------------
// Server: signing responses.

/// Signs every response of a server (module docs). Put it outside the
/// [`crate::AuthLayer`] (`.layer(SignResponsesLayer::new(key)).layer(auth)`)
/// so that refusals are signed too.
#[derive(Clone, Debug)]
pub struct SignResponsesLayer {
    signer: EnvelopeSigner,
}

impl SignResponsesLayer {
    /// Sign with the server's key.
    pub fn new(key: Arc<PeerKey>) -> Self {
        Self {
            signer: EnvelopeSigner::new(key),
        }
    }
}

impl<S> tower::Layer<S> for SignResponsesLayer {
    type Service = SignResponses<S>;

    fn layer(&self, inner: S) -> SignResponses<S> {
        SignResponses {
            inner,
            signer: self.signer.clone(),
        }
    }
}

/// The service [`SignResponsesLayer`] makes.
#[derive(Clone, Debug)]
pub struct SignResponses<S> {
    inner: S,
    signer: EnvelopeSigner,
}

/// What a response signature binds to.
#[derive(Clone, Debug)]
struct ResponseBinding {
    path: String,
    nonce: Nonce,
    caller: PeerId,
}

impl<S, B, RB> tower::Service<http::Request<B>> for SignResponses<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: HttpBody<Data = Bytes>,
{
    type Response = http::Response<SignedBody<RB>>;
    type Error = S::Error;
    type Future = SignResponsesFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Unsigned requests get signed answers too, bound to a zero nonce.
        // Without a libp2p caller there is nobody to bind the answer to.
        let binding = request
            .extensions()
            .get::<Caller>()
            .map(|c| ResponseBinding {
                path: request.uri().path().to_owned(),
                nonce: Envelope::from_headers(request.headers())
                    .map(|e| e.nonce)
                    .unwrap_or_default(),
                caller: c.peer_id,
            });
        SignResponsesFuture {
            inner: self.inner.call(request),
            signing: binding.map(|b| (self.signer.clone(), b)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`SignResponses`].
    pub struct SignResponsesFuture<F> {
        #[pin]
        inner: F,
        signing: Option<(EnvelopeSigner, ResponseBinding)>,
    }
}

impl<F, RB, E> Future for SignResponsesFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    RB: HttpBody<Data = Bytes>,
{
    type Output = Result<http::Response<SignedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let Some((signer, binding)) = this.signing.take() else {
            return Poll::Ready(Ok(response.map(|inner| SignedBody {
                inner,
                pending: None,
            })));
        };
        let (mut parts, inner) = response.into_parts();
        if parts.headers.contains_key(GRPC_STATUS) {
            // Trailers-only: the status is in the headers, and so is the signature.
            let envelope = Envelope::sign_response(
                &signer,
                &binding.path,
                binding.caller,
                unix_ms(),
                binding.nonce,
                &body_hash(&[]),
            );
            parts
                .headers
                .insert(SIGNATURE_HEADER, envelope.to_header_value());
            let body = SignedBody {
                inner,
                pending: None,
            };
            return Poll::Ready(Ok(http::Response::from_parts(parts, body)));
        }
        let pending = Some(Box::new(PendingSignature {
            signer,
            binding,
            hasher: Sha256::new(),
        }));
        Poll::Ready(Ok(http::Response::from_parts(
            parts,
            SignedBody { inner, pending },
        )))
    }
}

struct PendingSignature {
    signer: EnvelopeSigner,
    binding: ResponseBinding,
    hasher: Sha256,
}

impl PendingSignature {
    fn envelope(self) -> HeaderValue {
        let hash: [u8; 32] = self.hasher.finalize().into();
        Envelope::sign_response(
            &self.signer,
            &self.binding.path,
            self.binding.caller,
            unix_ms(),
            self.binding.nonce,
            &hash,
        )
        .to_header_value()
    }
}

pin_project_lite::pin_project! {
    /// A response body that hashes its data as it streams and signs it in
    /// the trailers.
    pub struct SignedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Box<PendingSignature>>,
    }
}

impl<B> HttpBody for SignedBody<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let Some(pending) = this.pending.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    pending.hasher.update(data);
                    return Poll::Ready(Some(Ok(frame)));
                }
                match frame.into_trailers() {
                    Ok(mut trailers) => {
                        let pending = this.pending.take().expect("pending");
                        trailers.insert(SIGNATURE_HEADER, pending.envelope());
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                // The body ended without trailers: send the signature in some.
                let pending = this.pending.take().expect("pending");
                let mut trailers = HeaderMap::new();
                trailers.insert(SIGNATURE_HEADER, pending.envelope());
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------------------
// Client: signing requests, verifying responses.

/// A channel to `target` that signs requests with `key` and verifies the
/// responses are `target`'s (module docs). Use it as a generated client's
/// channel: `EchoClient::new(signed(channel, key, peer))`.
pub fn signed(channel: Channel, key: Arc<PeerKey>, target: PeerId) -> SignedChannel {
    SignedChannel {
        inner: channel,
        signer: EnvelopeSigner::new(key),
        target,
        max_skew: DEFAULT_MAX_SKEW,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
    }
}

/// See [`signed`].
#[derive(Clone, Debug)]
pub struct SignedChannel {
    inner: Channel,
    signer: EnvelopeSigner,
    target: PeerId,
    max_skew: Duration,
    max_body_bytes: usize,
}

impl SignedChannel {
    /// Accept response timestamps within `max_skew` of this clock (60 s).
    pub fn with_max_skew(mut self, max_skew: Duration) -> Self {
        self.max_skew = max_skew;
        self
    }

    /// Refuse to send request bodies over this many bytes (4 MiB).
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// The peer this channel calls.
    pub fn target(&self) -> PeerId {
        self.target
    }
}

/// What a response must be signed over.
#[derive(Clone, Debug)]
struct Expected {
    path: String,
    nonce: Nonce,
    server: PeerId,
    me: PeerId,
    max_skew: Duration,
}

fn response_refusal(reason: impl std::fmt::Display) -> Status {
    Status::unauthenticated(format!("signature: response {reason}"))
}

impl Expected {
    /// Checks the response envelope in `map` (headers or trailers).
    fn check(&self, map: &HeaderMap, body_hash: &[u8; 32], now_ms: u64) -> Result<(), Status> {
        let envelope = match Envelope::from_headers(map) {
            Ok(e) => e,
            Err(EnvelopeError::Missing) => {
                return Err(response_refusal(format!(
                    "from {} carries no {SIGNATURE_HEADER} envelope (unsigned)",
                    self.server
                )))
            }
            Err(e) => return Err(response_refusal(format!("envelope is malformed: {e}"))),
        };
        let (public, signer) = client_keys()
            .get(&envelope)
            .map_err(|e| response_refusal(format!("envelope is malformed: {e}")))?;
        if signer != self.server {
            return Err(response_refusal(format!(
                "is signed by {signer}, not by the called peer {}",
                self.server
            )));
        }
        if envelope.target != self.me {
            return Err(response_refusal(format!(
                "is for {}, not for this caller {}",
                envelope.target, self.me
            )));
        }
        if envelope.nonce != self.nonce {
            return Err(response_refusal(
                "answers another request (its nonce is not this request's)",
            ));
        }
        if let Some(reason) = skew_reason(now_ms, envelope.timestamp_ms, self.max_skew) {
            return Err(response_refusal(format!("envelope is stale: {reason}")));
        }
        if !envelope.verify_response(&public, &self.path, body_hash) {
            return Err(response_refusal(format!(
                "signature of {signer} does not match what arrived (tampered response)"
            )));
        }
        Ok(())
    }
}

async fn buffer_body(body: Body, max: usize) -> Result<Bytes, Status> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                Err(Status::resource_exhausted(format!(
                    "signature: request body over {max} bytes"
                )))
            } else {
                Err(Status::from_error(e))
            }
        }
    }
}

impl tower::Service<http::Request<Body>> for SignedChannel {
    type Response = http::Response<VerifiedBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The ready channel goes with this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let signer = self.signer.clone();
        let (target, max_skew, max_body) = (self.target, self.max_skew, self.max_body_bytes);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let bytes = buffer_body(body, max_body).await?;
            let path = parts.uri.path().to_owned();
            let nonce: Nonce = rand::random();
            let envelope = Envelope::sign_request(&signer, &path, target, unix_ms(), nonce, &bytes);
            parts
                .headers
                .insert(SIGNATURE_HEADER, envelope.to_header_value());
            let request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
            let response = tower::Service::call(&mut inner, request).await?;
            let expected = Expected {
                path,
                nonce,
                server: target,
                me: signer.peer_id(),
                max_skew,
            };
            let (parts, inner) = response.into_parts();
            if parts.headers.contains_key(GRPC_STATUS) {
                // Trailers-only: signed in the headers, over an empty body.
                if let Err(refusal) = expected.check(&parts.headers, &body_hash(&[]), unix_ms()) {
                    let said = tonic::Status::from_header_map(&parts.headers)
                        .map(|s| format!(" (it said {:?}: {})", s.code(), s.message()))
                        .unwrap_or_default();
                    return Err(Box::new(Status::new(
                        refusal.code(),
                        format!("{}{said}", refusal.message()),
                    )) as BoxError);
                }
                return Ok(http::Response::from_parts(
                    parts,
                    VerifiedBody { inner, check: None },
                ));
            }
            let check = Some(Box::new(ResponseCheck {
                expected,
                hasher: Sha256::new(),
            }));
            Ok(http::Response::from_parts(
                parts,
                VerifiedBody { inner, check },
            ))
        })
    }
}

struct ResponseCheck {
    expected: Expected,
    hasher: Sha256,
}

/// A response body whose trailers must carry a valid signature of its data;
/// otherwise it ends with a `Code::Unauthenticated` error.
pub struct VerifiedBody {
    inner: Body,
    check: Option<Box<ResponseCheck>>,
}

impl std::fmt::Debug for VerifiedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedBody")
            .field("checked", &self.check.is_none())
            .finish_non_exhaustive()
    }
}

impl HttpBody for VerifiedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(check) = this.check.as_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    check.hasher.update(data);
                    return Poll::Ready(Some(Ok(frame)));
                }
                let Some(trailers) = frame.trailers_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let check = this.check.take().expect("check");
                let hash: [u8; 32] = check.hasher.finalize().into();
                match check.expected.check(trailers, &hash, unix_ms()) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(status) => Poll::Ready(Some(Err(status))),
                }
            }
            Some(Err(status)) => Poll::Ready(Some(Err(status))),
            None => {
                this.check = None;
                Poll::Ready(Some(Err(response_refusal(
                    "ended without trailers to carry its signature",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.check.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::KeyType;

    fn signer(kind: KeyType) -> EnvelopeSigner {
        EnvelopeSigner::new(Arc::new(PeerKey::generate(kind).unwrap()))
    }

    fn request_envelope(s: &EnvelopeSigner, target: PeerId, body: &[u8]) -> Envelope {
        Envelope::sign_request(s, "/mesh.echo.Echo/Say", target, unix_ms(), [7; 16], body)
    }

    #[test]
    fn envelopes_round_trip_and_verify_with_ed25519_and_rsa() {
        for kind in [KeyType::Ed25519, KeyType::Rsa] {
            let s = signer(kind);
            let target = PeerId::random();
            let e = request_envelope(&s, target, b"body");
            let decoded = Envelope::decode(&e.encode()).unwrap();
            assert_eq!(decoded, e, "{kind}");
            let mut headers = HeaderMap::new();
            headers.insert(SIGNATURE_HEADER, e.to_header_value());
            assert_eq!(Envelope::from_headers(&headers).unwrap(), e);
            let public = decoded.public_key().unwrap();
            assert_eq!(public.to_peer_id(), s.peer_id());
            assert!(decoded.verify_request(&public, "/mesh.echo.Echo/Say", b"body"));
            assert!(!decoded.verify_request(&public, "/mesh.echo.Echo/Say", b"bodz"));
            assert!(!decoded.verify_request(&public, "/mesh.echo.Echo/Count", b"body"));
            // A request signature is no response signature.
            assert!(!decoded.verify_response(&public, "/mesh.echo.Echo/Say", &body_hash(b"body")));
            let mut later = decoded.clone();
            later.timestamp_ms += 1;
            assert!(!later.verify_request(&public, "/mesh.echo.Echo/Say", b"body"));
            let mut elsewhere = decoded;
            elsewhere.target = PeerId::random();
            assert!(!elsewhere.verify_request(&public, "/mesh.echo.Echo/Say", b"body"));
        }
    }

    #[test]
    fn malformed_envelopes_give_typed_errors() {
        let s = signer(KeyType::Ed25519);
        let bytes = request_envelope(&s, PeerId::random(), b"x").encode();
        assert!(matches!(
            Envelope::decode(&[]),
            Err(EnvelopeError::Truncated {
                field: "version",
                ..
            })
        ));
        // Every strict prefix is truncated, never a panic or a success.
        for n in 0..bytes.len() {
            assert!(
                matches!(
                    Envelope::decode(&bytes[..n]),
                    Err(EnvelopeError::Truncated { .. })
                ),
                "prefix of {n} bytes: {:?}",
                Envelope::decode(&bytes[..n])
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Envelope::decode(&longer), Err(EnvelopeError::Trailing(1)));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(Envelope::decode(&v2), Err(EnvelopeError::Version(2)));

        // An oversized key is refused before it is read.
        let mut big = request_envelope(&s, PeerId::random(), b"x");
        big.public_key = vec![1; 2_000];
        assert_eq!(
            Envelope::decode(&big.encode()),
            Err(EnvelopeError::TooLong {
                field: "key",
                len: 2_000,
                max: MAX_KEY_LEN
            })
        );
        let mut big_sig = request_envelope(&s, PeerId::random(), b"x");
        big_sig.signature = vec![1; 1_025];
        assert!(matches!(
            Envelope::decode(&big_sig.encode()),
            Err(EnvelopeError::TooLong {
                field: "signature",
                ..
            })
        ));
        // Garbage where the key should be decodes, but is no key.
        let mut garbage = request_envelope(&s, PeerId::random(), b"x");
        garbage.public_key = vec![0xff; 40];
        let decoded = Envelope::decode(&garbage.encode()).unwrap();
        assert!(matches!(decoded.public_key(), Err(EnvelopeError::Key(_))));
        // A target that is no PeerId.
        let mut bad_target = bytes.clone();
        let key_len = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
        let target_at = 3 + key_len + 8 + NONCE_LEN + 1;
        bad_target[target_at] = 0x77;
        assert!(matches!(
            Envelope::decode(&bad_target),
            Err(EnvelopeError::Target(_))
        ));
        // Headers: missing, not base64, random bytes.
        let mut headers = HeaderMap::new();
        assert_eq!(
            Envelope::from_headers(&headers),
            Err(EnvelopeError::Missing)
        );
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_static("***"));
        assert_eq!(
            Envelope::from_headers(&headers),
            Err(EnvelopeError::NotBase64)
        );
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_static("AAAA"));
        assert!(Envelope::from_headers(&headers).is_err());
        // Padded base64 (what other gRPC stacks may send) is read too.
        let padded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&padded).unwrap());
        assert!(Envelope::from_headers(&headers).is_ok());
    }

    fn call(caller: PeerId, envelope: &Envelope, body: &[u8]) -> CallInfo {
        let mut call = CallInfo::new(Some(caller), "/mesh.echo.Echo/Say");
        call.headers
            .insert(SIGNATURE_HEADER, envelope.to_header_value());
        call.body = Some(Bytes::copy_from_slice(body));
        call
    }

    #[test]
    fn the_authorizer_checks_each_part_and_forgets_expired_nonces() {
        for kind in [KeyType::Ed25519, KeyType::Rsa] {
            let client = signer(kind);
            let server = PeerId::random();
            let auth = SignatureAuthorizer::new(server).with_max_nonces(2);
            let t0 = Instant::now();
            let e = request_envelope(&client, server, b"body");
            let now = e.timestamp_ms;
            auth.check(&call(client.peer_id(), &e, b"body"), now, t0)
                .unwrap();
            let replay = auth
                .check(&call(client.peer_id(), &e, b"body"), now, t0)
                .unwrap_err();
            assert!(replay.reason.contains("replayed"), "{replay:?}");
            // Tampered: not remembered, so the genuine body still passes once.
            let fresh = Envelope::sign_request(
                &client,
                "/mesh.echo.Echo/Say",
                server,
                now,
                [8; 16],
                b"body",
            );
            let tampered = auth
                .check(&call(client.peer_id(), &fresh, b"bodY"), now, t0)
                .unwrap_err();
            assert!(tampered.reason.contains("does not match"), "{tampered:?}");
            auth.check(&call(client.peer_id(), &fresh, b"body"), now, t0)
                .unwrap();
            assert_eq!(auth.remembered_nonces(), 2);
            // Full: refused until the first ones expire (2 × 60 s).
            let third = Envelope::sign_request(
                &client,
                "/mesh.echo.Echo/Say",
                server,
                now,
                [9; 16],
                b"body",
            );
            let full = auth
                .check(&call(client.peer_id(), &third, b"body"), now, t0)
                .unwrap_err();
            assert_eq!(full.code, Code::ResourceExhausted, "{full:?}");
            auth.check(
                &call(client.peer_id(), &third, b"body"),
                now,
                t0 + Duration::from_secs(121),
            )
            .unwrap();
            assert_eq!(auth.remembered_nonces(), 1);
        }
    }

    #[test]
    fn the_authorizer_refuses_other_callers_targets_and_stale_clocks() {
        let client = signer(KeyType::Ed25519);
        let server = PeerId::random();
        let auth = SignatureAuthorizer::new(server);
        let t0 = Instant::now();
        let now = unix_ms();
        let path = "/mesh.echo.Echo/Say";
        let at = |skew_ms: i64, nonce: u8| {
            let ts = now.checked_add_signed(skew_ms).unwrap();
            Envelope::sign_request(&client, path, server, ts, [nonce; 16], b"b")
        };
        let refused =
            |e: &Envelope, caller: PeerId| auth.check(&call(caller, e, b"b"), now, t0).unwrap_err();
        let other = refused(&at(0, 1), PeerId::random());
        assert!(other.reason.contains("not by the caller"), "{other:?}");
        let elsewhere = Envelope::sign_request(&client, path, PeerId::random(), now, [2; 16], b"b");
        let r = refused(&elsewhere, client.peer_id());
        assert!(r.reason.contains("not for this server"), "{r:?}");
        for skew in [-61_000, 61_000] {
            let r = refused(&at(skew, 3), client.peer_id());
            assert!(
                r.reason.starts_with("stale envelope: timestamp 61.0 s"),
                "{r:?}"
            );
        }
        for (skew, nonce) in [(-30_000, 4), (30_000, 5), (60_000, 6)] {
            auth.check(&call(client.peer_id(), &at(skew, nonce), b"b"), now, t0)
                .unwrap();
        }
        let mut no_caller = call(client.peer_id(), &at(0, 7), b"b");
        no_caller.caller = None;
        assert!(auth.check(&no_caller, now, t0).is_err());
        assert!(auth
            .check(&CallInfo::new(Some(client.peer_id()), path), now, t0)
            .unwrap_err()
            .reason
            .contains("unsigned"));
    }

    fn expected(server: &EnvelopeSigner, me: PeerId) -> Expected {
        Expected {
            path: "/mesh.echo.Echo/Count".into(),
            nonce: [3; 16],
            server: server.peer_id(),
            me,
            max_skew: DEFAULT_MAX_SKEW,
        }
    }

    /// A response body of `data` then `trailers`, through [`VerifiedBody`].
    async fn verified(
        expected: Expected,
        data: &[&[u8]],
        trailers: HeaderMap,
    ) -> Result<(), Status> {
        let mut frames: Vec<Result<Frame<Bytes>, Status>> = data
            .iter()
            .map(|d| Ok(Frame::data(Bytes::copy_from_slice(d))))
            .collect();
        frames.push(Ok(Frame::trailers(trailers)));
        let inner = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )));
        let body = VerifiedBody {
            inner,
            check: Some(Box::new(ResponseCheck {
                expected,
                hasher: Sha256::new(),
            })),
        };
        body.collect().await.map(|_| ())
    }

    fn trailers(envelope: &Envelope) -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert(SIGNATURE_HEADER, envelope.to_header_value());
        t
    }

    #[tokio::test]
    async fn forged_response_trailers_are_detected() {
        for kind in [KeyType::Ed25519, KeyType::Rsa] {
            let server = signer(kind);
            let me = PeerId::random();
            let data: [&[u8]; 2] = [b"\0\0\0\0\x02\x08\x01", b"\0\0\0\0\x02\x08\x02"];
            let whole: Vec<u8> = data.concat();
            let sign = |s: &EnvelopeSigner, to: PeerId, nonce: Nonce, body: &[u8]| {
                Envelope::sign_response(
                    s,
                    "/mesh.echo.Echo/Count",
                    to,
                    unix_ms(),
                    nonce,
                    &body_hash(body),
                )
            };
            let good = sign(&server, me, [3; 16], &whole);
            verified(expected(&server, me), &data, trailers(&good))
                .await
                .unwrap();
            // The data changed on the way.
            let status = verified(
                expected(&server, me),
                &[data[0], b"\0\0\0\0\x02\x08\x09"],
                trailers(&good),
            )
            .await
            .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
            assert!(
                status.message().starts_with("signature: response "),
                "{status:?}"
            );
            assert!(status.message().contains("tampered"), "{status:?}");
            // Signed by someone else, for someone else, for another request.
            let other = signer(KeyType::Ed25519);
            for (forged, what) in [
                (sign(&other, me, [3; 16], &whole), "not by the called peer"),
                (
                    sign(&server, PeerId::random(), [3; 16], &whole),
                    "not for this caller",
                ),
                (
                    sign(&server, me, [4; 16], &whole),
                    "answers another request",
                ),
            ] {
                let status = verified(expected(&server, me), &data, trailers(&forged))
                    .await
                    .unwrap_err();
                assert!(status.message().contains(what), "{what}: {status:?}");
            }
            // Stale.
            let old = Envelope::sign_response(
                &server,
                "/mesh.echo.Echo/Count",
                me,
                unix_ms() - 61_000,
                [3; 16],
                &body_hash(&whole),
            );
            let status = verified(expected(&server, me), &data, trailers(&old))
                .await
                .unwrap_err();
            assert!(status.message().contains("stale"), "{status:?}");
            // No signature at all.
            let mut unsigned = HeaderMap::new();
            unsigned.insert("grpc-status", HeaderValue::from_static("0"));
            let status = verified(expected(&server, me), &data, unsigned)
                .await
                .unwrap_err();
            assert!(status.message().contains("unsigned"), "{status:?}");
        }
    }

    #[tokio::test]
    async fn responses_are_signed_in_trailers_or_in_trailers_only_headers() {
        let server = signer(KeyType::Ed25519);
        let me = PeerId::random();
        let binding = ResponseBinding {
            path: "/mesh.echo.Echo/Count".into(),
            nonce: [3; 16],
            caller: me,
        };
        let data: Vec<Result<Frame<Bytes>, Status>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ];
        // The inner body ends without trailers: the signature comes in some.
        let body = SignedBody {
            inner: http_body_util::StreamBody::new(futures::stream::iter(data)),
            pending: Some(Box::new(PendingSignature {
                signer: server.clone(),
                binding,
                hasher: Sha256::new(),
            })),
        };
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"abcd"));
        expected(&server, me)
            .check(&trailers, &body_hash(b"abcd"), unix_ms())
            .unwrap();
        assert!(expected(&server, me)
            .check(&trailers, &body_hash(b"abce"), unix_ms())
            .is_err());
    }
}
