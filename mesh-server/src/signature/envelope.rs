//! The envelope: its layout, encoding, signing and checks.

use super::*;

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
/// Nonces one signer may have remembered at once by default: a signer that
/// calls faster than that over the remembering window is refused, so no one
/// peer fills the shared cache (the rate limit cuts it far earlier).
pub const DEFAULT_MAX_NONCES_PER_SIGNER: usize = 20_000;

pub(super) const VERSION: u8 = 1;
pub(super) const MAX_KEY_LEN: usize = 1024;
pub(super) const MAX_TARGET_LEN: usize = 128;
pub(super) const MAX_SIGNATURE_LEN: usize = 1024;
pub(super) const GRPC_STATUS: &str = "grpc-status";

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
pub(super) fn signed_message(
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

pub(super) struct Reader<'a>(&'a [u8]);

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

pub(super) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
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
