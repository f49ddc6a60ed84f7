//! Owner markers and record signatures.
//!
//! A key or subkey that contains an owner marker `[owner:<base64 public key>]`
//! makes the record *protected*: its value must end with exactly one
//! `[signature:<base64>]` made by that owner's key over the rest of the record
//! (see [`signing_message`]). Since nobody else holds the owner's private key,
//! nobody else can write a valid record under a key or subkey that names the
//! owner — in particular nobody can overwrite another owner's subkey.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libp2p_identity::PublicKey;

use super::{Kind, RecordValidator, ValidationError};
use crate::identity::{decode_public_key, encode_public_key, verify, PeerKey};
use crate::record::Record;

/// Start of an owner marker in a key or subkey.
pub(crate) const OWNER_PREFIX: &[u8] = b"[owner:";
/// Start of the signature at the end of a protected value.
pub(crate) const SIGNATURE_PREFIX: &[u8] = b"[signature:";
/// End of a marker or signature (not in the base64 alphabet).
const CLOSE: u8 = b']';
/// Domain separation for the signed message.
const DOMAIN_TAG: &[u8] = b"mesh-record-v1\0";

/// The owner marker naming `public`: `[owner:<base64 of the libp2p protobuf
/// encoding of the key>]` (standard alphabet, padded).
///
/// Put it in a key or a subkey to make records under it writable only by the
/// holder of the matching private key.
pub fn owner_marker(public: &PublicKey) -> Vec<u8> {
    let encoded = STANDARD.encode(encode_public_key(public));
    let mut marker = Vec::with_capacity(OWNER_PREFIX.len() + encoded.len() + 1);
    marker.extend_from_slice(OWNER_PREFIX);
    marker.extend_from_slice(encoded.as_bytes());
    marker.push(CLOSE);
    marker
}

/// The message an owner signs for `record`: a canonical, unambiguous encoding
/// of the record with `record.value` taken as the value *without* signature.
///
/// Layout: `b"mesh-record-v1\0"`, `u32`-BE length + key, one byte `0`
/// (no subkey) or `1` followed by `u32`-BE length + subkey, `u32`-BE length +
/// value, `u64`-BE expiration in milliseconds.
pub(crate) fn signing_message(record: &Record) -> Vec<u8> {
    signing_message_parts(
        &record.key,
        record.subkey.as_deref(),
        &record.value,
        record.expiration.as_millis(),
    )
}

fn signing_message_parts(
    key: &[u8],
    subkey: Option<&[u8]>,
    value: &[u8],
    expiration_ms: u64,
) -> Vec<u8> {
    fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
        // Keys and values are bounded far below 4 GiB by the store; saturate
        // rather than wrap so an absurd field cannot alias a shorter one.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(
        DOMAIN_TAG.len()
            + 4
            + key.len()
            + 1
            + 4
            + subkey.map_or(0, <[u8]>::len)
            + 4
            + value.len()
            + 8,
    );
    out.extend_from_slice(DOMAIN_TAG);
    put_len_prefixed(&mut out, key);
    match subkey {
        None => out.push(0),
        Some(subkey) => {
            out.push(1);
            put_len_prefixed(&mut out, subkey);
        }
    }
    put_len_prefixed(&mut out, value);
    out.extend_from_slice(&expiration_ms.to_be_bytes());
    out
}

/// First position of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Number of (non-overlapping) occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = haystack;
    while let Some(pos) = find(rest, needle) {
        n += 1;
        rest = &rest[pos + needle.len()..];
    }
    n
}

/// Whether `field` contains (the start of) an owner marker.
pub(crate) fn has_owner_marker(field: &[u8]) -> bool {
    find(field, OWNER_PREFIX).is_some()
}

/// Whether the record is protected: its key or subkey contains an owner marker.
fn is_protected(record: &Record) -> bool {
    has_owner_marker(&record.key) || record.subkey.as_deref().is_some_and(has_owner_marker)
}

/// The owner one field names: `None` without marker; every marker must hold
/// a valid key, and all markers of the field must name the same key.
fn owner_in(field: &[u8]) -> Result<Option<PublicKey>, ValidationError> {
    let mut owner: Option<PublicKey> = None;
    let mut rest = field;
    while let Some(pos) = find(rest, OWNER_PREFIX) {
        let after = &rest[pos + OWNER_PREFIX.len()..];
        let end = after.iter().position(|&b| b == CLOSE).ok_or_else(|| {
            ValidationError::BadOwnerMarker("unterminated owner marker (no `]`)".into())
        })?;
        let bytes = STANDARD
            .decode(&after[..end])
            .map_err(|e| ValidationError::BadOwnerMarker(format!("not standard base64: {e}")))?;
        let key = decode_public_key(&bytes)
            .map_err(|e| ValidationError::BadOwnerMarker(format!("not a public key: {e}")))?;
        match &owner {
            Some(known) if *known != key => return Err(ValidationError::ConflictingOwners),
            Some(_) => {}
            None => owner = Some(key),
        }
        rest = &after[end + 1..];
    }
    Ok(owner)
}

/// The owner that a key or subkey names with owner markers: `None` without
/// a marker; an error for a malformed marker or markers naming different keys.
pub fn owner_in_field(field: &[u8]) -> Result<Option<PublicKey>, ValidationError> {
    owner_in(field)
}

/// The owner a record names in its key and/or subkey (`None`: unprotected).
fn owner_of(record: &Record) -> Result<Option<PublicKey>, ValidationError> {
    let key_owner = owner_in(&record.key)?;
    let subkey_owner = match &record.subkey {
        Some(subkey) => owner_in(subkey)?,
        None => None,
    };
    match (key_owner, subkey_owner) {
        (Some(a), Some(b)) if a != b => Err(ValidationError::ConflictingOwners),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// Splits a protected value into (value without signature, signature bytes).
fn split_signature(value: &[u8]) -> Result<(&[u8], Vec<u8>), ValidationError> {
    match count(value, SIGNATURE_PREFIX) {
        0 => return Err(ValidationError::MissingSignature),
        1 => {}
        n => return Err(ValidationError::MultipleSignatures(n)),
    }
    let pos = find(value, SIGNATURE_PREFIX).ok_or(ValidationError::MissingSignature)?;
    let tail = &value[pos + SIGNATURE_PREFIX.len()..];
    // The signature must close the value: `[signature:<base64>]` and nothing after.
    let b64 = tail
        .strip_suffix(&[CLOSE])
        .ok_or(ValidationError::BadSignature)?;
    let signature = STANDARD
        .decode(b64)
        .map_err(|_| ValidationError::BadSignature)?;
    Ok((&value[..pos], signature))
}

/// The value without a trailing, well-formed `[signature:...]`, if it has one.
fn strip_trailing_signature(value: &[u8]) -> Option<&[u8]> {
    let pos = value
        .windows(SIGNATURE_PREFIX.len())
        .rposition(|w| w == SIGNATURE_PREFIX)?;
    let b64 = value[pos + SIGNATURE_PREFIX.len()..].strip_suffix(&[CLOSE])?;
    STANDARD.decode(b64).ok()?;
    Some(&value[..pos])
}

/// Checks owner markers and signatures; signs the records of its own key.
///
/// - Records whose key and subkey hold no owner marker pass untouched.
/// - A protected record must name one owner (else
///   [`ConflictingOwners`](ValidationError::ConflictingOwners)) with
///   well-formed markers (else [`BadOwnerMarker`](ValidationError::BadOwnerMarker)),
///   and its value must end with exactly one `[signature:<base64>]` (else
///   [`MissingSignature`](ValidationError::MissingSignature) or
///   [`MultipleSignatures`](ValidationError::MultipleSignatures)) that
///   verifies under the owner's key (else
///   [`BadSignature`](ValidationError::BadSignature)); Ed25519, or
///   RSA-PSS-SHA256 for RSA keys.
/// - The signed message is a canonical encoding of the record with the value
///   taken without its signature: `b"mesh-record-v1\0"`, `u32`-BE length +
///   key, `0` (no subkey) or `1` + `u32`-BE length + subkey, `u32`-BE length +
///   value, `u64`-BE expiration in milliseconds. Changing any of them,
///   including the expiration, invalidates the signature.
///
/// Priority 10: it signs after and checks/strips before the validators of
/// lower priority (such as [`SchemaValidator`](super::SchemaValidator)), which
/// therefore see the value without signature.
pub struct SignatureValidator {
    key: Option<Arc<PeerKey>>,
    /// Our public key and its marker, cached.
    ours: Option<(PublicKey, Vec<u8>)>,
}

impl SignatureValidator {
    /// The priority of every signature validator.
    const PRIORITY: i32 = 10;

    /// A validator that also signs the records whose key or subkey carries
    /// the owner marker of `key`.
    pub fn new(key: Arc<PeerKey>) -> Self {
        let public = key.public();
        let marker = owner_marker(&public);
        Self {
            key: Some(key),
            ours: Some((public, marker)),
        }
    }

    /// A validator that checks records but never signs.
    pub fn verify_only() -> Self {
        Self {
            key: None,
            ours: None,
        }
    }

    /// Our owner marker (to put in keys or subkeys we want to own), or `None`
    /// for a [`verify_only`](Self::verify_only) validator.
    pub fn marker(&self) -> Option<Vec<u8>> {
        self.ours.as_ref().map(|(_, marker)| marker.clone())
    }
}

impl fmt::Debug for SignatureValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureValidator")
            .field(
                "signer",
                &self.ours.as_ref().map(|(public, _)| public.to_peer_id()),
            )
            .finish()
    }
}

impl RecordValidator for SignatureValidator {
    fn validate(&self, record: &Record, _kind: Kind) -> Result<(), ValidationError> {
        if !is_protected(record) {
            return Ok(());
        }
        let owner = owner_of(record)?
            .ok_or_else(|| ValidationError::BadOwnerMarker("no owner marker".into()))?;
        let (body, signature) = split_signature(&record.value)?;
        let message = signing_message_parts(
            &record.key,
            record.subkey.as_deref(),
            body,
            record.expiration.as_millis(),
        );
        if verify(&owner, &message, &signature) {
            Ok(())
        } else {
            Err(ValidationError::BadSignature)
        }
    }

    fn sign(&self, record: &Record) -> Vec<u8> {
        let (Some(key), Some((public, _))) = (&self.key, &self.ours) else {
            return record.value.clone();
        };
        match owner_of(record) {
            Ok(Some(owner)) if owner == *public => {
                let signature = STANDARD.encode(key.sign(&signing_message(record)));
                let mut value = Vec::with_capacity(
                    record.value.len() + SIGNATURE_PREFIX.len() + signature.len() + 1,
                );
                value.extend_from_slice(&record.value);
                value.extend_from_slice(SIGNATURE_PREFIX);
                value.extend_from_slice(signature.as_bytes());
                value.push(CLOSE);
                value
            }
            _ => record.value.clone(),
        }
    }

    fn strip(&self, record: &Record) -> Vec<u8> {
        if !is_protected(record) {
            return record.value.clone();
        }
        strip_trailing_signature(&record.value)
            .unwrap_or(&record.value)
            .to_vec()
    }

    fn priority(&self) -> i32 {
        Self::PRIORITY
    }

    fn merge(&mut self, other: &dyn RecordValidator) -> bool {
        let Some(other) = other.as_any().downcast_ref::<SignatureValidator>() else {
            return false;
        };
        if self.key.is_none() && other.key.is_some() {
            self.key.clone_from(&other.key);
            self.ours.clone_from(&other.ours);
        }
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::KeyType;
    use crate::record::Expiration;

    const EXP: Expiration = Expiration::from_millis(1_700_000_000_000);

    fn key(kind: KeyType) -> Arc<PeerKey> {
        Arc::new(PeerKey::generate(kind).expect("key generation"))
    }

    fn validator(kind: KeyType) -> SignatureValidator {
        SignatureValidator::new(key(kind))
    }

    fn marker_of(v: &SignatureValidator) -> Vec<u8> {
        v.marker().expect("signing validator has a marker")
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// A record under `subkey` signed by `v`, with the signed value.
    fn signed(v: &SignatureValidator, record: Record) -> Record {
        let value = v.sign(&record);
        Record { value, ..record }
    }

    fn with_signature(value: &[u8], signature: &[u8]) -> Vec<u8> {
        cat(&[
            value,
            SIGNATURE_PREFIX,
            STANDARD.encode(signature).as_bytes(),
            b"]",
        ])
    }

    fn check(v: &SignatureValidator, record: &Record) -> Result<(), ValidationError> {
        let put = v.validate(record, Kind::Put);
        let get = v.validate(record, Kind::Get);
        assert_eq!(put, get, "Put and Get must agree");
        put
    }

    #[test]
    fn owner_marker_format() {
        let k = key(KeyType::Ed25519);
        let marker = owner_marker(&k.public());
        assert!(marker.starts_with(b"[owner:"));
        assert!(marker.ends_with(b"]"));
        let b64 = &marker[OWNER_PREFIX.len()..marker.len() - 1];
        let decoded = decode_public_key(&STANDARD.decode(b64).unwrap()).unwrap();
        assert_eq!(decoded, k.public());
        assert_eq!(SignatureValidator::new(k.clone()).marker(), Some(marker));
        assert_eq!(SignatureValidator::verify_only().marker(), None);
    }

    #[test]
    fn signing_message_layout_is_exact() {
        let r = Record::with_subkey(
            "ab",
            "c",
            "xyz",
            Expiration::from_millis(0x0102_0304_0506_0708),
        );
        let expected = cat(&[
            b"mesh-record-v1\0",
            &[0, 0, 0, 2],
            b"ab",
            &[1, 0, 0, 0, 1],
            b"c",
            &[0, 0, 0, 3],
            b"xyz",
            &[1, 2, 3, 4, 5, 6, 7, 8],
        ]);
        assert_eq!(signing_message(&r), expected);
        let r = Record::new("ab", "", Expiration::from_millis(1));
        let expected = cat(&[
            b"mesh-record-v1\0",
            &[0, 0, 0, 2],
            b"ab",
            &[0],
            &[0, 0, 0, 0],
            &[0, 0, 0, 0, 0, 0, 0, 1],
        ]);
        assert_eq!(signing_message(&r), expected);
    }

    #[test]
    fn signing_message_is_unambiguous() {
        let msgs = [
            signing_message(&Record::new("ab", "v", EXP)),
            signing_message(&Record::with_subkey("a", "b", "v", EXP)),
            signing_message(&Record::with_subkey("ab", "", "v", EXP)),
            signing_message(&Record::with_subkey("ab", "v", "", EXP)),
            signing_message(&Record::new("abv", "", EXP)),
            signing_message(&Record::new(
                "ab",
                "v",
                EXP.saturating_add(std::time::Duration::from_millis(1)),
            )),
        ];
        for (i, a) in msgs.iter().enumerate() {
            for b in &msgs[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn unprotected_records_pass_untouched() {
        let v = validator(KeyType::Ed25519);
        for r in [
            Record::new("plain", "value", EXP),
            Record::with_subkey("plain", "sub", "value", EXP),
            // Signature-looking text in an unprotected value is just data.
            Record::new("plain", "x[signature:AAAA][signature:", EXP),
            // `owner` without the marker syntax is no marker.
            Record::with_subkey("owner:", "[owner", "v", EXP),
        ] {
            assert_eq!(check(&v, &r), Ok(()));
            assert_eq!(v.sign(&r), r.value);
            assert_eq!(v.strip(&r), r.value);
            assert_eq!(check(&SignatureValidator::verify_only(), &r), Ok(()));
        }
    }

    fn roundtrip(kind: KeyType) {
        let v = validator(kind);
        let m = marker_of(&v);
        for r in [
            Record::with_subkey("peers", m.clone(), "hello", EXP),
            Record::new(cat(&[b"key/", &m]), "hello", EXP),
            Record::with_subkey(cat(&[b"key/", &m]), cat(&[&m, b"/again"]), "hello", EXP),
            Record::with_subkey("peers", m.clone(), "", EXP),
        ] {
            let s = signed(&v, r.clone());
            assert_ne!(s.value, r.value);
            assert!(s.value.starts_with(&r.value));
            assert!(s.value.ends_with(b"]"));
            assert_eq!(count(&s.value, SIGNATURE_PREFIX), 1);
            assert_eq!(check(&v, &s), Ok(()));
            // Anyone can verify.
            assert_eq!(check(&SignatureValidator::verify_only(), &s), Ok(()));
            assert_eq!(v.strip(&s), r.value);
            assert_eq!(SignatureValidator::verify_only().strip(&s), r.value);
        }
    }

    #[test]
    fn ed25519_sign_validate_strip_roundtrip() {
        roundtrip(KeyType::Ed25519);
    }

    #[test]
    fn rsa_sign_validate_strip_roundtrip() {
        roundtrip(KeyType::Rsa);
    }

    fn tampering_is_refused(kind: KeyType) {
        let v = validator(kind);
        let r = signed(
            &v,
            Record::with_subkey("peers", marker_of(&v), "value", EXP),
        );
        assert_eq!(check(&v, &r), Ok(()));

        // Tampered value, signature kept.
        let body = v.strip(&r);
        let sig = &r.value[body.len()..];
        let tampered = Record {
            value: cat(&[b"valuE", sig]),
            ..r.clone()
        };
        assert_eq!(check(&v, &tampered), Err(ValidationError::BadSignature));

        // Tampered expiration (a replay made to look newer).
        let later = Record {
            expiration: EXP.saturating_add(std::time::Duration::from_secs(60)),
            ..r.clone()
        };
        assert_eq!(check(&v, &later), Err(ValidationError::BadSignature));

        // Same signature moved to a different key.
        let moved = Record {
            key: b"other".to_vec(),
            ..r.clone()
        };
        assert_eq!(check(&v, &moved), Err(ValidationError::BadSignature));

        // Flipped bit in the signature.
        let mut raw = STANDARD
            .decode(&sig[SIGNATURE_PREFIX.len()..sig.len() - 1])
            .unwrap();
        raw[0] ^= 1;
        let flipped = Record {
            value: with_signature(&body, &raw),
            ..r.clone()
        };
        assert_eq!(check(&v, &flipped), Err(ValidationError::BadSignature));
    }

    #[test]
    fn ed25519_tampering_is_refused() {
        tampering_is_refused(KeyType::Ed25519);
    }

    #[test]
    fn rsa_tampering_is_refused() {
        tampering_is_refused(KeyType::Rsa);
    }

    /// Node B cannot produce a valid record for A's subkey.
    fn nobody_overwrites_another_owners_subkey(kind_a: KeyType, kind_b: KeyType) {
        let a = validator(kind_a);
        let b = validator(kind_b);
        let a_record = signed(
            &a,
            Record::with_subkey("peers", marker_of(&a), "A's value", EXP),
        );
        assert_eq!(check(&b, &a_record), Ok(()), "B accepts A's own record");

        let newer = EXP.saturating_add(std::time::Duration::from_secs(1));
        let b_attempt = Record::with_subkey("peers", marker_of(&a), "B's value", newer);

        // B's validator does not sign for A's marker ...
        assert_eq!(b.sign(&b_attempt), b_attempt.value);
        assert_eq!(
            check(&a, &b_attempt),
            Err(ValidationError::MissingSignature)
        );

        // ... and a signature B forges with its own key does not verify.
        let forged = Record {
            value: with_signature(
                &b_attempt.value,
                &b.key.as_ref().unwrap().sign(&signing_message(&b_attempt)),
            ),
            ..b_attempt.clone()
        };
        assert_eq!(check(&a, &forged), Err(ValidationError::BadSignature));
        assert_eq!(check(&b, &forged), Err(ValidationError::BadSignature));

        // Re-using A's signature over a different value ...
        let a_sig = &a_record.value[a.strip(&a_record).len()..];
        let reused_value = Record {
            value: cat(&[b"B's value", a_sig]),
            ..a_record.clone()
        };
        assert_eq!(check(&b, &reused_value), Err(ValidationError::BadSignature));
        // ... or a later expiration fails too.
        let reused_expiration = Record {
            expiration: newer,
            ..a_record.clone()
        };
        assert_eq!(
            check(&b, &reused_expiration),
            Err(ValidationError::BadSignature)
        );

        // B may write under its own marker, though.
        let own = signed(
            &b,
            Record::with_subkey("peers", marker_of(&b), "B's value", newer),
        );
        assert_eq!(check(&a, &own), Ok(()));
    }

    #[test]
    fn nobody_overwrites_another_owners_subkey_ed25519() {
        nobody_overwrites_another_owners_subkey(KeyType::Ed25519, KeyType::Ed25519);
    }

    #[test]
    fn nobody_overwrites_another_owners_subkey_rsa() {
        nobody_overwrites_another_owners_subkey(KeyType::Rsa, KeyType::Rsa);
        nobody_overwrites_another_owners_subkey(KeyType::Rsa, KeyType::Ed25519);
        nobody_overwrites_another_owners_subkey(KeyType::Ed25519, KeyType::Rsa);
    }

    #[test]
    fn missing_signature_is_refused() {
        let v = validator(KeyType::Ed25519);
        let r = Record::with_subkey("peers", marker_of(&v), "unsigned", EXP);
        assert_eq!(check(&v, &r), Err(ValidationError::MissingSignature));
        // verify_only never signs, so its output stays unsigned.
        let verifier = SignatureValidator::verify_only();
        assert_eq!(verifier.sign(&r), r.value);
        assert_eq!(check(&verifier, &r), Err(ValidationError::MissingSignature));
        // Nothing to strip.
        assert_eq!(v.strip(&r), r.value);
    }

    #[test]
    fn two_signatures_are_refused() {
        let v = validator(KeyType::Ed25519);
        let once = signed(
            &v,
            Record::with_subkey("peers", marker_of(&v), "value", EXP),
        );
        // Signing again appends a second signature (over a value holding the first).
        let twice = signed(&v, once.clone());
        assert_eq!(
            check(&v, &twice),
            Err(ValidationError::MultipleSignatures(2))
        );
        // A valid signature after some signature-looking text in the value too.
        let inner = Record::with_subkey("peers", marker_of(&v), "a[signature:", EXP);
        let inner = signed(&v, inner);
        assert_eq!(
            check(&v, &inner),
            Err(ValidationError::MultipleSignatures(2))
        );
        let three = Record {
            value: cat(&[&twice.value, b"[signature:AAAA]"]),
            ..twice
        };
        assert_eq!(
            check(&v, &three),
            Err(ValidationError::MultipleSignatures(3))
        );
    }

    #[test]
    fn malformed_signature_is_refused() {
        let v = validator(KeyType::Ed25519);
        let r = signed(
            &v,
            Record::with_subkey("peers", marker_of(&v), "value", EXP),
        );
        // Data after the signature: it no longer ends the value.
        let trailing = Record {
            value: cat(&[&r.value, b"x"]),
            ..r.clone()
        };
        assert_eq!(check(&v, &trailing), Err(ValidationError::BadSignature));
        assert_eq!(
            v.strip(&trailing),
            trailing.value,
            "only a trailing signature is stripped"
        );
        // Not base64.
        let garbage = Record {
            value: b"value[signature:!!not base64!!]".to_vec(),
            ..r.clone()
        };
        assert_eq!(check(&v, &garbage), Err(ValidationError::BadSignature));
        // Unterminated.
        let open = Record {
            value: b"value[signature:AAAA".to_vec(),
            ..r.clone()
        };
        assert_eq!(check(&v, &open), Err(ValidationError::BadSignature));
        // Empty signature.
        let empty = Record {
            value: b"value[signature:]".to_vec(),
            ..r
        };
        assert_eq!(check(&v, &empty), Err(ValidationError::BadSignature));
    }

    #[test]
    fn conflicting_owners_are_refused() {
        let a = validator(KeyType::Ed25519);
        let b = validator(KeyType::Ed25519);
        let (ma, mb) = (marker_of(&a), marker_of(&b));
        // Key names A, subkey names B: A's signature does not make it valid,
        // and A's validator does not even sign it.
        let r = Record::with_subkey(cat(&[b"k", &ma]), mb.clone(), "v", EXP);
        assert_eq!(a.sign(&r), r.value);
        let forced = Record {
            value: with_signature(
                &r.value,
                &a.key.as_ref().unwrap().sign(&signing_message(&r)),
            ),
            ..r.clone()
        };
        assert_eq!(check(&a, &forced), Err(ValidationError::ConflictingOwners));
        // One field naming two owners.
        let r = Record::with_subkey("k", cat(&[&ma, &mb]), "v", EXP);
        assert_eq!(check(&a, &r), Err(ValidationError::ConflictingOwners));
        let r = Record::new(cat(&[&ma, b"/", &mb]), "v", EXP);
        assert_eq!(check(&a, &r), Err(ValidationError::ConflictingOwners));
        // The same owner twice is fine.
        let r = signed(
            &a,
            Record::with_subkey(cat(&[b"k", &ma]), cat(&[&ma, &ma]), "v", EXP),
        );
        assert_eq!(check(&b, &r), Ok(()));
    }

    #[test]
    fn bad_owner_markers_are_refused() {
        let v = validator(KeyType::Ed25519);
        let not_a_key = cat(&[
            b"[owner:",
            STANDARD.encode(b"definitely not a key").as_bytes(),
            b"]",
        ]);
        for field in [
            b"[owner:".to_vec(),
            b"[owner:AAAA".to_vec(),
            b"[owner:!!!]".to_vec(),
            b"[owner:]".to_vec(),
            not_a_key,
        ] {
            let as_subkey = Record::with_subkey("k", field.clone(), "v[signature:AAAA]", EXP);
            assert!(
                matches!(
                    check(&v, &as_subkey),
                    Err(ValidationError::BadOwnerMarker(_))
                ),
                "{:?}",
                String::from_utf8_lossy(&field)
            );
            let as_key = Record::new(field.clone(), "v[signature:AAAA]", EXP);
            assert!(matches!(
                check(&v, &as_key),
                Err(ValidationError::BadOwnerMarker(_))
            ));
            // A good marker next to a bad one does not help.
            let mixed = Record::with_subkey(
                cat(&[&marker_of(&v), &field]),
                "s",
                "v[signature:AAAA]",
                EXP,
            );
            assert!(matches!(
                check(&v, &mixed),
                Err(ValidationError::BadOwnerMarker(_))
            ));
            // Never signed.
            assert_eq!(v.sign(&as_subkey), as_subkey.value);
        }
    }

    #[test]
    fn merge_keeps_ours_and_adopts_a_signing_key() {
        let a = validator(KeyType::Ed25519);
        let b = validator(KeyType::Ed25519);
        let mut verifier = SignatureValidator::verify_only();
        assert!(verifier.merge(&SignatureValidator::verify_only()));
        assert_eq!(verifier.marker(), None);
        assert!(verifier.merge(&a));
        assert_eq!(verifier.marker(), a.marker());
        let r = Record::with_subkey("peers", marker_of(&a), "v", EXP);
        // Now it signs with A's key (Ed25519 signatures are deterministic).
        assert_eq!(verifier.sign(&r), a.sign(&r));
        assert_eq!(check(&a, &signed(&verifier, r)), Ok(()));

        let mut ours = validator(KeyType::Ed25519);
        let marker = ours.marker();
        assert!(ours.merge(&b));
        assert_eq!(ours.marker(), marker, "keeps its own key");
        assert!(ours.merge(&SignatureValidator::verify_only()));
        assert_eq!(ours.marker(), marker);

        struct Other;
        impl RecordValidator for Other {
            fn validate(&self, _: &Record, _: Kind) -> Result<(), ValidationError> {
                Ok(())
            }
            fn as_any(&self) -> &dyn Any {
                self
            }
        }
        assert!(!ours.merge(&Other));
        assert_eq!(ours.priority(), 10);
    }
}
