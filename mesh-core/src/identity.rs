//! Peer keys: generation, key files, PeerIds, signing and verification.
//!
//! # Key files
//!
//! A key file holds libp2p's protobuf `PrivateKey` message
//! (`required KeyType Type = 1; required bytes Data = 2;`), the format
//! go-libp2p and the Python Hypertensor mesh (hivemind and py-libp2p based)
//! write, so their key files load here with the same PeerId:
//!
//! - **Ed25519** (`Type = 1`): `Data` is the 32-byte seed followed by the
//!   32-byte public key (64 bytes, what go-libp2p and the hivemind-based
//!   Hypertensor mesh write, and what this module writes). A bare 32-byte
//!   seed (what py-libp2p writes) and the legacy 96-byte
//!   `seed ‖ public ‖ public` form are accepted on reading.
//! - **RSA** (`Type = 0`): `Data` is the PKCS#1 `RSAPrivateKey` DER. Keys of
//!   2048 to 4096 bits with a public exponent of at least 65537 are accepted
//!   (what libp2p's handshake implementation supports); new keys have 2048
//!   bits.
//!
//! Secp256k1 and ECDSA keys are refused with [`KeyError::UnsupportedKeyType`].
//! Files are created with mode `0600`, and never overwritten unless asked.
//!
//! # PeerIds
//!
//! The PeerId is the multihash of the protobuf `PublicKey`: the identity
//! multihash for Ed25519 (`12D3KooW…`), sha2-256 for RSA (`Qm…`), whose
//! `Data` is the X.509 `SubjectPublicKeyInfo` DER — exactly as go-libp2p
//! derives it.
//!
//! # Signatures
//!
//! [`PeerKey::sign`] signs with Ed25519, or for RSA with RSASSA-PSS over
//! SHA-256 (MGF1-SHA-256, 32-byte salt). [`verify`] accepts Ed25519, and for
//! RSA both the 32-byte salt and the maximal salt length that the Python
//! hivemind/Hypertensor mesh uses (`padding.PSS.MAX_LENGTH`, 222 bytes for
//! a 2048-bit key). Signatures are raw bytes here; hivemind transports them
//! base64-encoded, which is the caller's business.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p_identity::{ed25519, Keypair, PeerId, PublicKey};
use mesh_proto::crypto as pb;
use prost::Message;
use rand::rngs::OsRng;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::EncodePrivateKey;
use rsa::pss;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Size of newly generated RSA keys, in bits.
const RSA_BITS: usize = 2048;
/// Smallest RSA modulus libp2p's key pairs accept, in bits.
const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus libp2p's key pairs accept, in bits.
const RSA_MAX_BITS: usize = 4096;
/// Salt length of the PSS signatures this module makes (the SHA-256 size).
const PSS_SALT_LEN: usize = 32;
/// Largest key file read; real key files are below 4 KiB.
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// The kind of a peer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// Ed25519, the default: small keys and `12D3KooW…` PeerIds.
    #[default]
    Ed25519,
    /// RSA (2048-bit when generated), with `Qm…` PeerIds.
    Rsa,
}

impl KeyType {
    /// The lower-case name: `"ed25519"` or `"rsa"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa => "rsa",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    /// Parses `"ed25519"` or `"rsa"`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.eq_ignore_ascii_case("ed25519") {
            Ok(KeyType::Ed25519)
        } else if trimmed.eq_ignore_ascii_case("rsa") {
            Ok(KeyType::Rsa)
        } else {
            Err(KeyError::UnsupportedKeyType(format!(
                "{s:?} (expected \"ed25519\" or \"rsa\")"
            )))
        }
    }
}

/// Why a key could not be made, read, written or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("key file {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The key file exists already and overwriting it was not asked for.
    #[error("key file {} exists already; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    /// The bytes are not a libp2p protobuf `PrivateKey` this module can read.
    #[error("not a libp2p private key: {0}")]
    Malformed(String),
    /// The bytes are not a libp2p protobuf `PublicKey` this module can read.
    #[error("not a libp2p public key: {0}")]
    MalformedPublicKey(String),
    /// A well-formed key of a type mesh does not use (Secp256k1, ECDSA,
    /// RSA outside 2048..=4096 bits), or an unknown key type name.
    #[error("unsupported key type: {0}; mesh uses Ed25519 or RSA (2048 to 4096 bits) keys")]
    UnsupportedKeyType(String),
    /// Generating a key failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

impl KeyError {
    fn malformed(reason: impl Into<String>) -> Self {
        KeyError::Malformed(reason.into())
    }

    fn io(path: &Path, source: io::Error) -> Self {
        KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Adds the file name to a decoding error, so that a person can tell
    /// which file is wrong.
    fn in_file(self, path: &Path) -> Self {
        match self {
            KeyError::Malformed(reason) => {
                KeyError::Malformed(format!("{}: {reason}", path.display()))
            }
            KeyError::UnsupportedKeyType(kind) => {
                KeyError::UnsupportedKeyType(format!("{kind} (in {})", path.display()))
            }
            other => other,
        }
    }
}

/// The private half that signs: libp2p's Ed25519 key pair, or the `rsa`
/// crate's key for RSA-PSS (libp2p's RSA key pair only signs PKCS#1 v1.5).
#[derive(Clone)]
enum Signer {
    Ed25519(Box<ed25519::Keypair>),
    Rsa(Box<RsaPrivateKey>),
}

/// A peer's private key: its identity on the DHT, the key of its libp2p
/// handshakes, and the key that signs its records.
///
/// `Debug` prints the key type and PeerId, never secret material.
#[derive(Clone)]
pub struct PeerKey {
    keypair: Keypair,
    signer: Signer,
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerKey")
            .field("key_type", &self.key_type())
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

impl PeerKey {
    /// Generates a new key: Ed25519, or a 2048-bit RSA key.
    pub fn generate(kind: KeyType) -> Result<Self, KeyError> {
        match kind {
            KeyType::Ed25519 => Ok(Self::from_ed25519(ed25519::Keypair::generate())),
            KeyType::Rsa => {
                let key = RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                    .map_err(|e| KeyError::Generate(format!("RSA-{RSA_BITS}: {e}")))?;
                Self::from_rsa(key)
            }
        }
    }

    fn from_ed25519(pair: ed25519::Keypair) -> Self {
        PeerKey {
            keypair: Keypair::from(pair.clone()),
            signer: Signer::Ed25519(Box::new(pair)),
        }
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<Self, KeyError> {
        let bits = key.n().bits();
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(KeyError::UnsupportedKeyType(format!(
                "RSA-{bits} (libp2p accepts 2048 to 4096 bits)"
            )));
        }
        if key.e() < &rsa::BigUint::from(65_537u32) {
            return Err(KeyError::UnsupportedKeyType(format!(
                "RSA with public exponent {} (libp2p needs at least 65537)",
                key.e()
            )));
        }
        let pkcs8 = key.to_pkcs8_der().map_err(|e| {
            KeyError::malformed(format!("RSA key cannot be re-encoded as PKCS#8: {e}"))
        })?;
        let mut der = Zeroizing::new(pkcs8.as_bytes().to_vec());
        drop(pkcs8);
        let keypair = Keypair::rsa_from_pkcs8(&mut der)
            .map_err(|e| KeyError::malformed(format!("RSA key refused by libp2p: {e}")))?;
        Ok(PeerKey {
            keypair,
            signer: Signer::Rsa(Box::new(key)),
        })
    }

    /// Decodes libp2p's protobuf `PrivateKey` encoding (the key file format).
    pub fn from_protobuf(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::malformed("empty (0 bytes)"));
        }
        let mut message = pb::PrivateKey::decode(bytes)
            .map_err(|e| KeyError::malformed(format!("not a protobuf PrivateKey message ({e})")))?;
        let data = Zeroizing::new(std::mem::take(&mut message.data));
        let key_type = message.r#type;
        match pb::KeyType::try_from(key_type) {
            Ok(pb::KeyType::Ed25519) => Self::ed25519_from_data(data),
            Ok(pb::KeyType::Rsa) => Self::rsa_from_data(&data),
            Ok(pb::KeyType::Secp256k1) => Err(KeyError::UnsupportedKeyType("Secp256k1".into())),
            Ok(pb::KeyType::Ecdsa) => Err(KeyError::UnsupportedKeyType("ECDSA".into())),
            Err(_) => Err(KeyError::malformed(format!(
                "unknown key type number {key_type}"
            ))),
        }
    }

    fn ed25519_from_data(mut data: Zeroizing<Vec<u8>>) -> Result<Self, KeyError> {
        match data.len() {
            0 => Err(KeyError::malformed("Ed25519 key without key data")),
            32 => {
                // A bare seed, as py-libp2p writes it.
                let secret = ed25519::SecretKey::try_from_bytes(&mut data[..])
                    .map_err(|e| KeyError::malformed(format!("Ed25519 seed: {e}")))?;
                Ok(Self::from_ed25519(ed25519::Keypair::from(secret)))
            }
            64 => Self::ed25519_from_pair(&mut data[..]),
            96 => {
                // Legacy go-libp2p form: seed ‖ public ‖ public.
                if data[32..64] != data[64..96] {
                    return Err(KeyError::malformed(
                        "legacy 96-byte Ed25519 key whose two public key copies differ",
                    ));
                }
                Self::ed25519_from_pair(&mut data[..64])
            }
            n => Err(KeyError::malformed(format!(
                "Ed25519 key data is {n} bytes; expected 64 (seed and public key) or 32 (seed)"
            ))),
        }
    }

    fn ed25519_from_pair(bytes: &mut [u8]) -> Result<Self, KeyError> {
        let pair = ed25519::Keypair::try_from_bytes(bytes).map_err(|_| {
            KeyError::malformed("Ed25519 key whose public half does not belong to its seed")
        })?;
        Ok(Self::from_ed25519(pair))
    }

    fn rsa_from_data(data: &[u8]) -> Result<Self, KeyError> {
        if data.is_empty() {
            return Err(KeyError::malformed(
                "RSA key without key data (or a file that is not a key)",
            ));
        }
        let key = RsaPrivateKey::from_pkcs1_der(data).map_err(|e| {
            KeyError::malformed(format!(
                "RSA key data is not PKCS#1 RSAPrivateKey DER ({e})"
            ))
        })?;
        Self::from_rsa(key)
    }

    /// Encodes the key as libp2p's protobuf `PrivateKey`: what
    /// [`write_file`](Self::write_file) writes.
    pub fn to_protobuf(&self) -> Zeroizing<Vec<u8>> {
        let (key_type, data) = match &self.signer {
            Signer::Ed25519(pair) => {
                let mut bytes = pair.to_bytes();
                let data = Zeroizing::new(bytes.to_vec());
                bytes.zeroize();
                (pb::KeyType::Ed25519, data)
            }
            Signer::Rsa(key) => {
                let der = key
                    .to_pkcs1_der()
                    .expect("PKCS#1 encoding of a valid RSA key cannot fail");
                (pb::KeyType::Rsa, Zeroizing::new(der.as_bytes().to_vec()))
            }
        };
        let mut message = pb::PrivateKey {
            r#type: key_type as i32,
            data: data.to_vec(),
        };
        drop(data);
        let mut out = Zeroizing::new(Vec::with_capacity(message.encoded_len()));
        message
            .encode(&mut *out)
            .expect("the buffer has the capacity of the message");
        message.data.zeroize();
        out
    }

    /// Reads a key file.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let mut file = File::open(path).map_err(|e| KeyError::io(path, e))?;
        let len = file.metadata().map_err(|e| KeyError::io(path, e))?.len();
        if len > MAX_KEY_FILE_LEN {
            return Err(KeyError::malformed(format!(
                "{}: {len} bytes is far too large for a key",
                path.display()
            )));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(len as usize + 1));
        io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| KeyError::io(path, e))?;
        Self::from_protobuf(&bytes).map_err(|e| e.in_file(path))
    }

    /// Writes the key file with mode `0600` (set at creation: the secret is
    /// never readable by others, not even briefly).
    ///
    /// An existing file is refused with [`KeyError::Exists`] unless
    /// `overwrite`; then it is replaced atomically (a new file is written
    /// next to it and renamed over it).
    pub fn write_file(&self, path: &Path, overwrite: bool) -> Result<(), KeyError> {
        let bytes = self.to_protobuf();
        if !overwrite {
            let file = open_private(path).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
                _ => KeyError::io(path, e),
            })?;
            return fill(file, &bytes).map_err(|e| {
                let _ = fs::remove_file(path);
                KeyError::io(path, e)
            });
        }
        let tmp = temp_path(path);
        let file = open_private(&tmp).map_err(|e| KeyError::io(&tmp, e))?;
        fill(file, &bytes)
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                KeyError::io(path, e)
            })
    }

    /// Reads the key file at `path`, or, when there is none, generates a key
    /// of `kind` and writes it there. Returns the key and whether it was
    /// created. An existing file is used whatever its type.
    pub fn load_or_generate(path: &Path, kind: KeyType) -> Result<(Self, bool), KeyError> {
        match Self::read_file(path) {
            Ok(key) => return Ok((key, false)),
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = Self::generate(kind)?;
        match key.write_file(path, false) {
            Ok(()) => Ok((key, true)),
            // Somebody else created it meanwhile: use theirs.
            Err(KeyError::Exists(_)) => Ok((Self::read_file(path)?, false)),
            Err(e) => Err(e),
        }
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match self.signer {
            Signer::Ed25519(_) => KeyType::Ed25519,
            Signer::Rsa(_) => KeyType::Rsa,
        }
    }

    /// The PeerId, as go-libp2p derives it.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.keypair.public()
    }

    /// libp2p's key pair: what the swarm's handshakes (noise) use.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Signs `msg`: Ed25519, or RSA-PSS with SHA-256 (MGF1-SHA-256, 32-byte
    /// salt). [`verify`] checks it.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Ed25519(pair) => pair.sign(msg),
            Signer::Rsa(key) => {
                let signer =
                    pss::SigningKey::<Sha256>::new_with_salt_len((**key).clone(), PSS_SALT_LEN);
                // Cannot fail: keys have at least 2048 bits, far more than a
                // SHA-256 digest and 32 bytes of salt need.
                signer.sign_with_rng(&mut OsRng, msg).to_vec()
            }
        }
    }
}

/// Opens a new file for writing with mode `0600`, refusing an existing one.
fn open_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn fill(mut file: File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

/// A fresh name next to `path` for writing a replacement of it.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "key".into(), |n| n.to_string_lossy().into_owned());
    let nonce: u64 = rand::random();
    path.with_file_name(format!(".{name}.{}.{nonce:016x}.tmp", std::process::id()))
}

/// Verifies `sig` over `msg`: Ed25519, or RSA-PSS with SHA-256 and MGF1-SHA-256
/// with a salt of 32 bytes or of the maximal length (what the Python
/// hivemind/Hypertensor mesh signs with). Anything else, including other
/// key types and garbage, is `false`.
pub fn verify(public: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    if let Ok(key) = public.clone().try_into_ed25519() {
        return key.verify(msg, sig);
    }
    let Ok(key) = public.clone().try_into_rsa() else {
        return false;
    };
    let Ok(key) = RsaPublicKey::from_pkcs1_der(&key.encode_pkcs1()) else {
        return false;
    };
    let Ok(signature) = pss::Signature::try_from(sig) else {
        return false;
    };
    // emLen - hLen - 2, with emLen = ceil((modBits - 1) / 8) (RFC 8017 §9.1.1).
    let em_len = key.n().bits().saturating_sub(1).div_ceil(8);
    let max_salt = em_len.saturating_sub(32 + 2);
    [PSS_SALT_LEN, max_salt].iter().any(|&salt_len| {
        pss::VerifyingKey::<Sha256>::new_with_salt_len(key.clone(), salt_len)
            .verify(msg, &signature)
            .is_ok()
    })
}

/// Encodes a public key as libp2p's protobuf `PublicKey` (what PeerIds hash).
pub fn encode_public_key(public: &PublicKey) -> Vec<u8> {
    public.encode_protobuf()
}

/// Decodes libp2p's protobuf `PublicKey`; only Ed25519 and RSA keys.
pub fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, KeyError> {
    if bytes.is_empty() {
        return Err(KeyError::MalformedPublicKey("empty (0 bytes)".into()));
    }
    let message = pb::PublicKey::decode(bytes).map_err(|e| {
        KeyError::MalformedPublicKey(format!("not a protobuf PublicKey message ({e})"))
    })?;
    match pb::KeyType::try_from(message.r#type) {
        Ok(pb::KeyType::Ed25519 | pb::KeyType::Rsa) => {}
        Ok(pb::KeyType::Secp256k1) => return Err(KeyError::UnsupportedKeyType("Secp256k1".into())),
        Ok(pb::KeyType::Ecdsa) => return Err(KeyError::UnsupportedKeyType("ECDSA".into())),
        Err(_) => {
            return Err(KeyError::MalformedPublicKey(format!(
                "unknown key type number {}",
                message.r#type
            )))
        }
    }
    PublicKey::try_decode_protobuf(bytes).map_err(|e| KeyError::MalformedPublicKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workspace's key fixtures (see `tests/fixtures/README.md`).
    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/",
                $name
            ))
            .as_slice()
        };
    }

    fn fixture_str(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap().trim()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn assert_malformed(result: Result<PeerKey, KeyError>) -> String {
        match result {
            Err(e @ KeyError::Malformed(_)) => e.to_string(),
            other => panic!("expected KeyError::Malformed, got {other:?}"),
        }
    }

    fn assert_unsupported(result: Result<PeerKey, KeyError>) -> String {
        match result {
            Err(e @ KeyError::UnsupportedKeyType(_)) => e.to_string(),
            other => panic!("expected KeyError::UnsupportedKeyType, got {other:?}"),
        }
    }

    #[test]
    fn key_type_parses_and_displays() {
        assert_eq!("ed25519".parse::<KeyType>().unwrap(), KeyType::Ed25519);
        assert_eq!("Ed25519".parse::<KeyType>().unwrap(), KeyType::Ed25519);
        assert_eq!("RSA".parse::<KeyType>().unwrap(), KeyType::Rsa);
        assert_eq!(KeyType::default(), KeyType::Ed25519);
        assert_eq!(KeyType::Rsa.to_string(), "rsa");
        assert_eq!(KeyType::Ed25519.to_string(), "ed25519");
        let err = "secp256k1".parse::<KeyType>().unwrap_err();
        assert!(matches!(err, KeyError::UnsupportedKeyType(_)));
        assert!(err.to_string().contains("secp256k1"), "{err}");
    }

    fn file_roundtrip(kind: KeyType) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = PeerKey::generate(kind).unwrap();
        assert_eq!(key.key_type(), kind);
        key.write_file(&path, false).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);

        let read = PeerKey::read_file(&path).unwrap();
        assert_eq!(read.key_type(), kind);
        assert_eq!(read.peer_id(), key.peer_id());
        assert_eq!(read.public(), key.public());
        assert_eq!(*read.to_protobuf(), *key.to_protobuf());

        // Refuses to overwrite; the file is unchanged.
        let other = PeerKey::generate(kind).unwrap();
        match other.write_file(&path, false) {
            Err(KeyError::Exists(p)) => assert_eq!(p, path),
            r => panic!("expected Exists, got {r:?}"),
        }
        assert_eq!(PeerKey::read_file(&path).unwrap().peer_id(), key.peer_id());

        // Overwrites when asked; still 0600, even over a looser file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        }
        other.write_file(&path, true).unwrap();
        assert_eq!(
            PeerKey::read_file(&path).unwrap().peer_id(),
            other.peer_id()
        );
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn ed25519_file_roundtrip() {
        file_roundtrip(KeyType::Ed25519);
    }

    #[test]
    fn rsa_file_roundtrip() {
        file_roundtrip(KeyType::Rsa);
    }

    #[test]
    fn ed25519_writes_64_bytes_like_go_libp2p() {
        let key = PeerKey::generate(KeyType::Ed25519).unwrap();
        let bytes = key.to_protobuf();
        assert_eq!(&bytes[..4], &[0x08, 0x01, 0x12, 0x40]);
        assert_eq!(bytes.len(), 68);
        assert!(key.peer_id().to_base58().starts_with("12D3KooW"));
    }

    #[test]
    fn rsa_writes_type_zero_and_pkcs1() {
        let key = PeerKey::generate(KeyType::Rsa).unwrap();
        let bytes = key.to_protobuf();
        // Type = RSA (0) is written on the wire, then Data = PKCS#1 DER.
        assert_eq!(&bytes[..3], &[0x08, 0x00, 0x12]);
        let message = pb::PrivateKey::decode(&bytes[..]).unwrap();
        RsaPrivateKey::from_pkcs1_der(&message.data).unwrap();
        assert!(key.peer_id().to_base58().starts_with("Qm"));
        assert_eq!(key.public().key_type(), libp2p_identity::KeyType::RSA);
    }

    #[test]
    fn load_or_generate_creates_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let (first, created) = PeerKey::load_or_generate(&path, KeyType::Ed25519).unwrap();
        assert!(created);
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let (second, created) = PeerKey::load_or_generate(&path, KeyType::Rsa).unwrap();
        assert!(!created);
        assert_eq!(second.peer_id(), first.peer_id());
        assert_eq!(second.key_type(), KeyType::Ed25519);

        fs::write(&path, b"garbage").unwrap();
        assert_malformed(PeerKey::load_or_generate(&path, KeyType::Ed25519).map(|(k, _)| k));
    }

    #[test]
    fn debug_prints_no_secret() {
        let key = PeerKey::from_protobuf(fixture!("go_libp2p_ed25519_client.key")).unwrap();
        let debug = format!("{key:?}");
        assert!(
            debug.contains("12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"),
            "{debug}"
        );
        assert!(!debug.to_lowercase().contains("7e0830617c"), "{debug}");
        let clone = key.clone();
        assert_eq!(clone.peer_id(), key.peer_id());
    }

    fn sign_verify(kind: KeyType) {
        let key = PeerKey::generate(kind).unwrap();
        let other = PeerKey::generate(kind).unwrap();
        let msg = b"mesh record to sign";
        let sig = key.sign(msg);
        assert!(verify(&key.public(), msg, &sig));
        // Through the protobuf public key encoding, as validators see it.
        let public = decode_public_key(&encode_public_key(&key.public())).unwrap();
        assert_eq!(public, key.public());
        assert!(verify(&public, msg, &sig));

        assert!(
            !verify(&key.public(), b"mesh record to sigN", &sig),
            "tampered message"
        );
        let mut bad = sig.clone();
        bad[sig.len() / 2] ^= 0x01;
        assert!(!verify(&key.public(), msg, &bad), "tampered signature");
        assert!(!verify(&other.public(), msg, &sig), "another key");
        assert!(!verify(&key.public(), msg, &[]));
        assert!(!verify(&key.public(), msg, &[0u8; 1]));
        assert!(!verify(&key.public(), msg, &vec![0xffu8; 1024]));
        assert!(!verify(&key.public(), msg, &sig[..sig.len() - 1]));
    }

    #[test]
    fn ed25519_sign_verify() {
        sign_verify(KeyType::Ed25519);
    }

    #[test]
    fn rsa_sign_verify() {
        sign_verify(KeyType::Rsa);
    }

    #[test]
    fn rsa_signatures_are_pss_sha256() {
        let key = PeerKey::generate(KeyType::Rsa).unwrap();
        let Signer::Rsa(private) = &key.signer else {
            unreachable!()
        };
        let msg = b"salt lengths";
        let public = RsaPublicKey::from(&**private);

        // Ours: salt 32.
        let sig = pss::Signature::try_from(&key.sign(msg)[..]).unwrap();
        pss::VerifyingKey::<Sha256>::new_with_salt_len(public.clone(), 32)
            .verify(msg, &sig)
            .unwrap();

        // Maximal salt (hivemind's PSS.MAX_LENGTH): 256 - 32 - 2 = 222.
        let max = pss::SigningKey::<Sha256>::new_with_salt_len((**private).clone(), 222)
            .sign_with_rng(&mut OsRng, msg);
        assert!(verify(&key.public(), msg, &max.to_vec()));

        // Other salt lengths and PKCS#1 v1.5 are refused.
        let salt20 = pss::SigningKey::<Sha256>::new_with_salt_len((**private).clone(), 20)
            .sign_with_rng(&mut OsRng, msg);
        assert!(!verify(&key.public(), msg, &salt20.to_vec()));
        let v15 = key.keypair().sign(msg).unwrap();
        assert!(!verify(&key.public(), msg, &v15));
    }

    #[test]
    fn garbage_is_malformed() {
        let msg = assert_malformed(PeerKey::from_protobuf(b""));
        assert!(msg.contains("empty"), "{msg}");
        let msg = assert_malformed(PeerKey::from_protobuf(b"this is not a key at all"));
        assert!(msg.starts_with("not a libp2p private key"), "{msg}");
        assert_malformed(PeerKey::from_protobuf(&[0xff; 100]));
        assert_malformed(PeerKey::from_protobuf(
            b"-----BEGIN PRIVATE KEY-----\nMIIE\n",
        ));

        let ed = fixture!("go_libp2p_ed25519_client.key");
        let rsa = fixture!("go_libp2p_rsa2048.key");
        for cut in [1, 2, 3, 4, 20, ed.len() - 1] {
            assert_malformed(PeerKey::from_protobuf(&ed[..cut]));
        }
        for cut in [2, 3, 4, 100, rsa.len() / 2, rsa.len() - 1] {
            assert_malformed(PeerKey::from_protobuf(&rsa[..cut]));
        }

        // Ed25519 data of a wrong size, or whose public half is wrong.
        let mut wrong = vec![0x08, 0x01, 0x12, 33];
        wrong.extend([7u8; 33]);
        let msg = assert_malformed(PeerKey::from_protobuf(&wrong));
        assert!(msg.contains("33 bytes"), "{msg}");
        let mut mismatched = ed.to_vec();
        *mismatched.last_mut().unwrap() ^= 1;
        assert_malformed(PeerKey::from_protobuf(&mismatched));

        // RSA type with non-PKCS#1 data; an unknown type number.
        assert_malformed(PeerKey::from_protobuf(&[0x08, 0x00, 0x12, 0x03, 1, 2, 3]));
        assert_malformed(PeerKey::from_protobuf(&[0x08, 0x09, 0x12, 0x01, 0x00]));
    }

    #[test]
    fn other_key_types_are_unsupported() {
        // rust-libp2p's / the libp2p specs' Secp256k1 and ECDSA test vectors.
        let secp = hex("0802122053DADF1D5A164D6B4ACDB15E24AA4C5B1D3461BDBD42ABEDB0A4404D56CED8FB");
        let msg = assert_unsupported(PeerKey::from_protobuf(&secp));
        assert!(msg.contains("Secp256k1"), "{msg}");
        let ecdsa = hex(concat!(
            "08031279307702010104203E5B1FE9712E6C314942A750BD67485DE3C1EFE85B1BFB520AE8F9AE3DFA4A4CA00A06082A8648CE3D",
            "030107A14403420004DE3D300FA36AE0E8F5D530899D83ABAB44ABF3161F162A4BC901D8E6ECDA020E8B6D5F8DA30525E71D68",
            "51510C098E5C47C646A597FB4DCEC034E9F77C409E62"
        ));
        assert!(assert_unsupported(PeerKey::from_protobuf(&ecdsa)).contains("ECDSA"));
        let secp_pub =
            hex("08021221037777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99");
        assert!(matches!(
            decode_public_key(&secp_pub),
            Err(KeyError::UnsupportedKeyType(_))
        ));

        // A 1024-bit RSA key is well formed but unusable with libp2p.
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let der = small.to_pkcs1_der().unwrap();
        let file = pb::PrivateKey {
            r#type: 0,
            data: der.as_bytes().to_vec(),
        }
        .encode_to_vec();
        assert!(assert_unsupported(PeerKey::from_protobuf(&file)).contains("RSA-1024"));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        match PeerKey::read_file(&missing) {
            Err(KeyError::Io { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            r => panic!("expected Io, got {r:?}"),
        }
        let empty = dir.path().join("empty.key");
        fs::write(&empty, b"").unwrap();
        let msg = assert_malformed(PeerKey::read_file(&empty));
        assert!(
            msg.contains("empty.key") && msg.contains("empty (0 bytes)"),
            "{msg}"
        );
        let text = dir.path().join("text.key");
        fs::write(&text, b"hello world\n").unwrap();
        assert!(assert_malformed(PeerKey::read_file(&text)).contains("text.key"));

        // Writing into a missing directory is an Io error naming the file.
        let nowhere = dir.path().join("no/such/dir/k.key");
        let key = PeerKey::generate(KeyType::Ed25519).unwrap();
        assert!(matches!(
            key.write_file(&nowhere, false),
            Err(KeyError::Io { .. })
        ));
        assert!(matches!(
            key.write_file(&nowhere, true),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn malformed_public_keys_are_refused() {
        assert!(matches!(
            decode_public_key(b""),
            Err(KeyError::MalformedPublicKey(_))
        ));
        assert!(matches!(
            decode_public_key(b"garbage!"),
            Err(KeyError::MalformedPublicKey(_))
        ));
        assert!(matches!(
            decode_public_key(&[0x08, 0x01, 0x12, 0x02, 1, 2]),
            Err(KeyError::MalformedPublicKey(_))
        ));
        assert!(matches!(
            decode_public_key(&[0x08, 0x00, 0x12, 0x02, 1, 2]),
            Err(KeyError::MalformedPublicKey(_))
        ));
    }

    // ---- Interoperability fixtures -------------------------------------

    /// go-libp2p's published Ed25519 test vectors (p2p/http/auth,
    /// `TestWalkthroughInSpec`): key files, PeerIds and deterministic
    /// signatures, byte for byte.
    #[test]
    fn go_libp2p_ed25519_vectors() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE;

        let client = PeerKey::from_protobuf(fixture!("go_libp2p_ed25519_client.key")).unwrap();
        assert_eq!(client.key_type(), KeyType::Ed25519);
        assert_eq!(
            client.peer_id().to_base58(),
            "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
        );
        assert_eq!(
            *client.to_protobuf(),
            fixture!("go_libp2p_ed25519_client.key")
        );
        // The public key protobuf of the libp2p specs' / rust-libp2p's vector.
        assert_eq!(
            encode_public_key(&client.public()),
            hex("080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
        );
        let msg = b"libp2p-PeerID=challenge-client=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\x16hostname=\"example.com\"";
        let expected = b64
            .decode("F5OBYbbMXoIVJNWrW0UANi7rrbj4GCB6kcEceQjajLTMvC-_jpBF9MFlxiaNYXOEiPQqeo_S56YUSNinwl0ZCQ==")
            .unwrap();
        assert_eq!(client.sign(msg), expected);
        assert!(verify(&client.public(), msg, &expected));

        let zero = PeerKey::from_protobuf(fixture!("go_libp2p_ed25519_zero.key")).unwrap();
        assert_eq!(
            zero.peer_id().to_base58(),
            "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
        );
        let msg = b"libp2p-PeerID=challenge-server=BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=\x3bclient=12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq\x16hostname=\"example.com\"";
        let expected = b64
            .decode("btLFqW200aDTQqpkKetJJje7V-iDknXygFqPsfiegNsboXeYDiQ6Rqcpezz1wfr8j9h83QkN9z78cAWzKzV_AQ==")
            .unwrap();
        assert_eq!(zero.sign(msg), expected);
        assert!(verify(&zero.public(), msg, &expected));

        // The same key as a bare seed (py-libp2p) or in the legacy 96-byte
        // form has the same PeerId.
        let data = &fixture!("go_libp2p_ed25519_client.key")[4..];
        let mut seed_only = vec![0x08, 0x01, 0x12, 0x20];
        seed_only.extend_from_slice(&data[..32]);
        assert_eq!(
            PeerKey::from_protobuf(&seed_only).unwrap().peer_id(),
            client.peer_id()
        );
        let mut legacy = vec![0x08, 0x01, 0x12, 0x60];
        legacy.extend_from_slice(data);
        legacy.extend_from_slice(&data[32..]);
        assert_eq!(
            PeerKey::from_protobuf(&legacy).unwrap().peer_id(),
            client.peer_id()
        );
        legacy[4 + 95] ^= 1;
        assert_malformed(PeerKey::from_protobuf(&legacy));
    }

    /// go-libp2p's RSA-2048 key of `core/peer/peer_test.go` with its PeerId.
    #[test]
    fn go_libp2p_rsa_vector() {
        let bytes = fixture!("go_libp2p_rsa2048.key");
        let key = PeerKey::from_protobuf(bytes).unwrap();
        assert_eq!(key.key_type(), KeyType::Rsa);
        assert_eq!(
            key.peer_id().to_base58(),
            "QmcJeseojbPW9hSejUM1sQ1a2QmbrryPK4Z8pWbRUPaYEn"
        );
        assert_eq!(key.peer_id(), key.keypair().public().to_peer_id());
        // Written back byte for byte as go-libp2p wrote it.
        assert_eq!(*key.to_protobuf(), bytes);
        let sig = key.sign(b"hello");
        assert!(verify(&key.public(), b"hello", &sig));
    }

    /// The RSA-4096 test vector of rust-libp2p (`identity/src/keypair.rs`):
    /// private key protobuf to public key protobuf (SPKI DER).
    #[test]
    fn rust_libp2p_rsa4096_vector() {
        let key = PeerKey::from_protobuf(fixture!("rust_libp2p_rsa4096.key")).unwrap();
        let public = fixture!("rust_libp2p_rsa4096.pub");
        assert_eq!(encode_public_key(&key.public()), public);
        assert_eq!(decode_public_key(public).unwrap(), key.public());
        assert_eq!(*key.to_protobuf(), fixture!("rust_libp2p_rsa4096.key"));
        let sig = key.sign(b"4096");
        assert_eq!(sig.len(), 512);
        assert!(verify(&key.public(), b"4096", &sig));
    }

    /// A key file written as the Python hivemind/Hypertensor mesh writes it
    /// (`scripts/make_key_fixtures.py`, with `cryptography`): PeerId computed
    /// independently in Python, and Python's RSA-PSS signatures.
    #[test]
    fn hivemind_rsa_fixture() {
        let key = PeerKey::from_protobuf(fixture!("hivemind_rsa.key")).unwrap();
        assert_eq!(key.key_type(), KeyType::Rsa);
        assert_eq!(
            key.peer_id().to_base58(),
            fixture_str(fixture!("hivemind_rsa.peer_id"))
        );
        assert_eq!(*key.to_protobuf(), fixture!("hivemind_rsa.key"));
        let public = decode_public_key(fixture!("hivemind_rsa.pub")).unwrap();
        assert_eq!(public, key.public());

        let msg = fixture!("hivemind_message.txt");
        let max = fixture!("hivemind_rsa.pss_max.sig");
        let salt32 = fixture!("hivemind_rsa.pss32.sig");
        assert!(
            verify(&key.public(), msg, max),
            "PSS MAX_LENGTH signature from Python"
        );
        assert!(
            verify(&key.public(), msg, salt32),
            "PSS salt-32 signature from Python"
        );
        assert!(!verify(&key.public(), b"another message", max));
        let mut bad = max.to_vec();
        bad[0] ^= 0x80;
        assert!(!verify(&key.public(), msg, &bad));
    }

    /// Ed25519 key files as the Hypertensor meshes write them: seed ‖ public
    /// (hivemind-based `keygen`) and the bare seed (py-libp2p based).
    #[test]
    fn hypertensor_ed25519_fixtures() {
        let expected = fixture_str(fixture!("hivemind_ed25519.peer_id"));
        let pair = PeerKey::from_protobuf(fixture!("hivemind_ed25519.key")).unwrap();
        let seed = PeerKey::from_protobuf(fixture!("py_libp2p_ed25519_seed.key")).unwrap();
        assert_eq!(pair.peer_id().to_base58(), expected);
        assert_eq!(seed.peer_id().to_base58(), expected);
        assert_eq!(*pair.to_protobuf(), fixture!("hivemind_ed25519.key"));
        // Written in the 64-byte form even when read from a bare seed.
        assert_eq!(*seed.to_protobuf(), fixture!("hivemind_ed25519.key"));

        let msg = fixture!("hivemind_message.txt");
        let sig = fixture!("hivemind_ed25519.sig");
        assert!(verify(&pair.public(), msg, sig));
        assert_eq!(pair.sign(msg), sig);
    }
}
