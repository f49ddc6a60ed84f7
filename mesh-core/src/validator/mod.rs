//! Record validators.
//!
//! A [`RecordValidator`] checks records on the way in ([`Kind::Put`]) and on
//! the way out of the DHT ([`Kind::Get`]), may sign a record before it is
//! stored and strip what it added before the application sees the value.
//! [`CompositeValidator`] runs several of them: `sign` in increasing
//! priority, `validate` and `strip` in decreasing priority, so the validator
//! that signs last is the first to check and strip its signature. Validators
//! of one kind merge (two schema validators become one holding both schemas).
//!
//! Built-in validators:
//! - [`SignatureValidator`]: owner markers, Ed25519 and RSA-PSS-SHA256 signatures;
//! - [`SchemaValidator`]: typed values per key (serde + `validator` rules);
//! - [`PredicateValidator`]: any closure over the record and the [`Kind`].

use std::any::Any;

use crate::record::Record;

mod composite;
mod predicate;
mod schema;
mod signature;

pub use composite::CompositeValidator;
pub use predicate::PredicateValidator;
pub use schema::{SchemaValidator, SubkeyRule};
pub(crate) use signature::has_owner_marker;
pub use signature::{owner_in_field, owner_marker, SignatureValidator};

/// The DHT key under which every node of a subnet publishes its heartbeat,
/// one owner-marked subkey per node. The framework reserves it.
pub const HEARTBEAT_KEY: &[u8] = b"node";

/// The rules of the keys the framework reserves, applied by every DHT node
/// whatever its subnet adds: [`HEARTBEAT_KEY`] holds owner-marked subkeys
/// only, so nobody writes a heartbeat in another node's name or a regular
/// value over everyone's.
pub fn framework_keys() -> SchemaValidator {
    SchemaValidator::new().with_rule(HEARTBEAT_KEY, SubkeyRule::RequireOwner)
}

/// Whether a record is being stored or was read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A record on its way out of the DHT (a read).
    Get,
    /// A record on its way into a store (a write).
    Put,
}

/// Why a validator refused a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The key or subkey names an owner but the value carries no signature.
    #[error("protected record carries no signature")]
    MissingSignature,
    /// More than one signature was found in the value.
    #[error("protected record carries {0} signatures; exactly one is allowed")]
    MultipleSignatures(usize),
    /// The signature does not verify against the owner's public key.
    #[error("signature does not verify against the owner's key")]
    BadSignature,
    /// The owner marker does not hold a valid public key.
    #[error("owner marker holds no valid public key: {0}")]
    BadOwnerMarker(String),
    /// Key and subkey name different owners (or one names several).
    #[error("key and subkey name different owners")]
    ConflictingOwners,
    /// The value does not match the key's schema.
    #[error("schema of key {key:?}: {reason}")]
    Schema {
        /// The key (lossy UTF-8).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A predicate validator refused the record.
    #[error("refused by predicate {0:?}")]
    Predicate(String),
    /// Any other refusal, with the validator's name.
    #[error("refused by {validator}: {reason}")]
    Other {
        /// The refusing validator.
        validator: String,
        /// Why.
        reason: String,
    },
}

/// A rule every record of the DHT obeys.
pub trait RecordValidator: Send + Sync + 'static {
    /// Checks `record` (whose value still carries whatever validators of
    /// higher priority added, minus what they stripped).
    fn validate(&self, record: &Record, kind: Kind) -> Result<(), ValidationError>;

    /// Returns the value to store for `record` (e.g. with a signature
    /// appended). The default stores the value unchanged.
    fn sign(&self, record: &Record) -> Vec<u8> {
        record.value.clone()
    }

    /// Returns the value without what [`sign`](Self::sign) added. The default
    /// returns it unchanged.
    fn strip(&self, record: &Record) -> Vec<u8> {
        record.value.clone()
    }

    /// Validators sign in increasing and validate/strip in decreasing priority.
    fn priority(&self) -> i32 {
        0
    }

    /// Merges `other` into `self` if both are of one kind and can be merged;
    /// returns whether it did.
    fn merge(&mut self, other: &dyn RecordValidator) -> bool {
        let _ = other;
        false
    }

    /// For [`merge`](Self::merge): downcasting.
    fn as_any(&self) -> &dyn Any;
}
