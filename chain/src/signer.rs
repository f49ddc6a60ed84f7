//! Signers: the sr25519 keys that sign transactions.
//!
//! A signer comes from exactly one of: a secret URI or mnemonic phrase
//! (`//Alice`, `"word … word"`, `"word … word//hard/soft///password"`), a
//! 32-byte secret seed in hex, or a file holding either. The same sources can
//! be given as the environment variables [`PHRASE_ENV`], [`PRIVATE_KEY_ENV`],
//! [`KEY_FILE_ENV`], so secrets need not appear on a command line. Which key
//! signs what: the *coldkey* registers, stakes and activates (it can stay
//! off the node machine); the *hotkey* only signs attestations.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use subxt_signer::sr25519::Keypair;
use subxt_signer::SecretUri;

/// Environment variable with a secret URI or mnemonic.
pub const PHRASE_ENV: &str = "PHRASE";
/// Environment variable with a 32-byte hex secret seed.
pub const PRIVATE_KEY_ENV: &str = "PRIVATE_KEY";
/// Environment variable naming a file that holds a phrase or hex seed.
pub const KEY_FILE_ENV: &str = "MESH_KEY_FILE";

/// Where a signing key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SignerSource {
    /// A secret URI or BIP-39 mnemonic (optionally with derivation and password).
    Phrase(String),
    /// A 32-byte secret seed, hex (with or without `0x`).
    PrivateKey(String),
    /// A file holding a phrase or a hex seed.
    File(PathBuf),
}

impl std::fmt::Debug for SignerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignerSource::Phrase(_) => f.write_str("Phrase(<secret>)"),
            SignerSource::PrivateKey(_) => f.write_str("PrivateKey(<secret>)"),
            SignerSource::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

/// Why no signer could be made. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// Nothing given.
    #[error(
        "no signer: give --phrase, --private_key or --key_file (or set {PHRASE_ENV}, \
         {PRIVATE_KEY_ENV} or {KEY_FILE_ENV})"
    )]
    Missing,
    /// More than one given.
    #[error("give only one of --phrase, --private_key and --key_file")]
    Ambiguous,
    /// Not a secret URI or mnemonic.
    #[error("the phrase is not a valid secret URI or mnemonic: {0}")]
    BadPhrase(String),
    /// Not 32 bytes of hex.
    #[error("the private key must be 32 bytes of hex (64 hex digits, optional 0x)")]
    BadPrivateKey,
    /// The key file could not be read.
    #[error("cannot read key file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl SignerSource {
    /// The one source among the three options (already merged with their
    /// environment variables by the caller, e.g. clap's `env`).
    pub fn from_options(
        phrase: Option<String>,
        private_key: Option<String>,
        key_file: Option<PathBuf>,
    ) -> Result<Self, SignerError> {
        match (phrase, private_key, key_file) {
            (Some(p), None, None) => Ok(SignerSource::Phrase(p)),
            (None, Some(k), None) => Ok(SignerSource::PrivateKey(k)),
            (None, None, Some(f)) => Ok(SignerSource::File(f)),
            (None, None, None) => Err(SignerError::Missing),
            _ => Err(SignerError::Ambiguous),
        }
    }

    /// The keypair.
    pub fn keypair(&self) -> Result<Keypair, SignerError> {
        match self {
            SignerSource::Phrase(phrase) => from_phrase(phrase),
            SignerSource::PrivateKey(hex) => from_hex_seed(hex),
            SignerSource::File(path) => from_file(path),
        }
    }
}

fn from_phrase(phrase: &str) -> Result<Keypair, SignerError> {
    let uri =
        SecretUri::from_str(phrase.trim()).map_err(|e| SignerError::BadPhrase(e.to_string()))?;
    Keypair::from_uri(&uri).map_err(|e| SignerError::BadPhrase(e.to_string()))
}

fn from_hex_seed(hex: &str) -> Result<Keypair, SignerError> {
    let hex = hex.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    if hex.len() != 64 {
        return Err(SignerError::BadPrivateKey);
    }
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| SignerError::BadPrivateKey)?;
    }
    Keypair::from_secret_key(seed).map_err(|_| SignerError::BadPrivateKey)
}

fn from_file(path: &Path) -> Result<Keypair, SignerError> {
    let content = std::fs::read_to_string(path).map_err(|e| SignerError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let content = content.trim();
    let hex = content.strip_prefix("0x").unwrap_or(content);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        from_hex_seed(content)
    } else {
        from_phrase(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    // The dev phrase's seed (Substrate's DEV_PHRASE, no derivation).
    const DEV_PHRASE: &str =
        "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

    fn ss58(source: SignerSource) -> String {
        source
            .keypair()
            .unwrap()
            .public_key()
            .to_account_id()
            .to_string()
    }

    #[test]
    fn phrases_uris_seeds_and_files_give_the_same_keys() {
        assert_eq!(ss58(SignerSource::Phrase("//Alice".into())), ALICE_SS58);
        assert_eq!(
            ss58(SignerSource::Phrase(format!("{DEV_PHRASE}//Alice"))),
            ALICE_SS58
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("coldkey");
        std::fs::write(&file, "//Alice\n").unwrap();
        assert_eq!(ss58(SignerSource::File(file.clone())), ALICE_SS58);
        let seed = "0x".to_owned() + &"ab".repeat(32);
        let from_hex = ss58(SignerSource::PrivateKey(seed.clone()));
        std::fs::write(&file, &seed).unwrap();
        assert_eq!(ss58(SignerSource::File(file)), from_hex);
        assert_eq!(
            ss58(SignerSource::PrivateKey(seed[2..].to_owned())),
            from_hex
        );
    }

    #[test]
    fn bad_sources_are_refused_without_echoing_secrets() {
        assert!(matches!(
            SignerSource::from_options(None, None, None),
            Err(SignerError::Missing)
        ));
        assert!(matches!(
            SignerSource::from_options(Some("//Alice".into()), Some("00".into()), None),
            Err(SignerError::Ambiguous)
        ));
        let err = SignerSource::PrivateKey("0x1234".into())
            .keypair()
            .unwrap_err();
        assert!(matches!(err, SignerError::BadPrivateKey));
        let err = SignerSource::PrivateKey("zz".repeat(32))
            .keypair()
            .unwrap_err();
        assert!(matches!(err, SignerError::BadPrivateKey));
        let err = SignerSource::Phrase("not a mnemonic at all".into())
            .keypair()
            .unwrap_err();
        assert!(matches!(err, SignerError::BadPhrase(_)));
        assert!(!err.to_string().contains("mnemonic at all"), "{err}");
        let err = SignerSource::File("/nonexistent/key".into())
            .keypair()
            .unwrap_err();
        assert!(matches!(err, SignerError::File { .. }));
        assert_eq!(
            format!("{:?}", SignerSource::Phrase("//Alice".into())),
            "Phrase(<secret>)"
        );
    }
}
