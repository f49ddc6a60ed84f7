//! Several validators run as one.

use std::any::Any;
use std::fmt;

use super::{Kind, RecordValidator, ValidationError};
use crate::record::Record;

/// Runs several [`RecordValidator`]s as one.
///
/// Validators are kept ordered by [`priority`](RecordValidator::priority)
/// (validators of equal priority in the order they were added):
///
/// - [`sign`](Self::sign) runs them in increasing priority, each one signing
///   the value the previous one produced;
/// - [`validate`](Self::validate) and [`strip`](Self::strip) run them in
///   decreasing priority, each one seeing the value with what validators of
///   higher priority added already stripped.
///
/// So the validator that signs last checks and strips its signature first,
/// and e.g. a [`SchemaValidator`](super::SchemaValidator) (priority 0) sees
/// the bare value under a [`SignatureValidator`](super::SignatureValidator)
/// (priority 10).
///
/// Adding a validator first offers it to those already present
/// ([`merge`](RecordValidator::merge)): two schema validators become one
/// holding both schemas. Adding a `CompositeValidator` adds its validators
/// one by one.
///
/// It is `Send + Sync`, to be shared behind an `Arc`, and is itself a
/// [`RecordValidator`] (priority: the highest of its validators; it never
/// merges).
#[derive(Default)]
pub struct CompositeValidator {
    /// In increasing priority.
    validators: Vec<Box<dyn RecordValidator>>,
}

impl CompositeValidator {
    /// An empty composite, which accepts everything and changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `v`: merges it into a validator already present if one accepts
    /// it, else inserts it by priority (after those of equal priority).
    pub fn add(&mut self, v: impl RecordValidator) {
        if (&v as &dyn Any).is::<CompositeValidator>() {
            let any: Box<dyn Any> = Box::new(v);
            if let Ok(composite) = any.downcast::<CompositeValidator>() {
                for inner in composite.validators {
                    self.add_boxed(inner);
                }
            }
            return;
        }
        if self
            .validators
            .iter_mut()
            .any(|existing| existing.merge(&v))
        {
            return;
        }
        self.insert(Box::new(v));
    }

    /// [`add`](Self::add), builder style.
    pub fn with(mut self, v: impl RecordValidator) -> Self {
        self.add(v);
        self
    }

    fn add_boxed(&mut self, v: Box<dyn RecordValidator>) {
        if self
            .validators
            .iter_mut()
            .any(|existing| existing.merge(v.as_ref()))
        {
            return;
        }
        self.insert(v);
    }

    fn insert(&mut self, v: Box<dyn RecordValidator>) {
        let p = v.priority();
        let at = self.validators.partition_point(|x| x.priority() <= p);
        self.validators.insert(at, v);
    }

    /// Checks `record` with every validator, in decreasing priority; each
    /// sees the value with what the previous ones added stripped. The first
    /// refusal is returned.
    pub fn validate(&self, record: &Record, kind: Kind) -> Result<(), ValidationError> {
        let mut current: Option<Record> = None;
        let last = self.validators.len().saturating_sub(1);
        for (i, v) in self.validators.iter().rev().enumerate() {
            let r = current.as_ref().unwrap_or(record);
            v.validate(r, kind)?;
            if i < last {
                let stripped = v.strip(r);
                match &mut current {
                    Some(c) => c.value = stripped,
                    None => {
                        current = Some(Record {
                            value: stripped,
                            ..record.clone()
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// Returns `record` with the value to store: every validator signs, in
    /// increasing priority, the value the previous one returned.
    pub fn sign(&self, mut record: Record) -> Record {
        for v in &self.validators {
            record.value = v.sign(&record);
        }
        record
    }

    /// The value as the application wrote it: what every validator added
    /// stripped, in decreasing priority.
    pub fn strip(&self, record: &Record) -> Vec<u8> {
        let mut current = record.clone();
        for v in self.validators.iter().rev() {
            current.value = v.strip(&current);
        }
        current.value
    }

    /// The number of validators (after merging).
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Whether there are no validators.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }
}

impl fmt::Debug for CompositeValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let priorities: Vec<i32> = self.validators.iter().map(|v| v.priority()).collect();
        f.debug_struct("CompositeValidator")
            .field("priorities", &priorities)
            .finish_non_exhaustive()
    }
}

impl RecordValidator for CompositeValidator {
    fn validate(&self, record: &Record, kind: Kind) -> Result<(), ValidationError> {
        CompositeValidator::validate(self, record, kind)
    }

    fn sign(&self, record: &Record) -> Vec<u8> {
        CompositeValidator::sign(self, record.clone()).value
    }

    fn strip(&self, record: &Record) -> Vec<u8> {
        CompositeValidator::strip(self, record)
    }

    fn priority(&self) -> i32 {
        self.validators.last().map_or(0, |v| v.priority())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde::Deserialize;
    use validator::Validate;

    use super::*;
    use crate::identity::{KeyType, PeerKey};
    use crate::record::Expiration;
    use crate::validator::{
        owner_marker, PredicateValidator, SchemaValidator, SignatureValidator, SubkeyRule,
    };

    const EXP: Expiration = Expiration::from_millis(1_700_000_000_000);

    #[derive(Debug, Deserialize, Validate)]
    #[serde(deny_unknown_fields)]
    struct Score {
        #[validate(range(min = 0.0, max = 1.0))]
        score: f64,
    }

    /// Appends `[tag]` on sign, checks and strips it; logs what it saw.
    struct Tagger {
        tag: &'static str,
        priority: i32,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Tagger {
        fn suffix(&self) -> Vec<u8> {
            format!("[{}]", self.tag).into_bytes()
        }
        fn note(&self, what: &str, r: &Record) {
            let line = format!("{} {what} {}", self.tag, String::from_utf8_lossy(&r.value));
            self.log.lock().unwrap().push(line);
        }
    }

    impl RecordValidator for Tagger {
        fn validate(&self, r: &Record, _: Kind) -> Result<(), ValidationError> {
            self.note("validate", r);
            if r.value.ends_with(&self.suffix()) {
                Ok(())
            } else {
                Err(ValidationError::Other {
                    validator: self.tag.into(),
                    reason: "tag missing".into(),
                })
            }
        }
        fn sign(&self, r: &Record) -> Vec<u8> {
            self.note("sign", r);
            [&r.value[..], &self.suffix()].concat()
        }
        fn strip(&self, r: &Record) -> Vec<u8> {
            self.note("strip", r);
            r.value
                .strip_suffix(&self.suffix()[..])
                .unwrap_or(&r.value)
                .to_vec()
        }
        fn priority(&self) -> i32 {
            self.priority
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn take(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    #[test]
    fn is_send_sync_and_shareable() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<CompositeValidator>();
        let shared: Arc<dyn RecordValidator> = Arc::new(CompositeValidator::new());
        assert_eq!(
            shared.validate(&Record::new("k", "v", EXP), Kind::Put),
            Ok(())
        );
    }

    #[test]
    fn empty_accepts_everything_and_changes_nothing() {
        let c = CompositeValidator::new();
        assert!(c.is_empty());
        assert_eq!(c.len(), 0);
        let r = Record::with_subkey("k", "s", "v", EXP);
        assert_eq!(c.validate(&r, Kind::Put), Ok(()));
        assert_eq!(c.sign(r.clone()), r);
        assert_eq!(c.strip(&r), r.value);
        assert_eq!(RecordValidator::priority(&c), 0);
    }

    #[test]
    fn ordering_of_sign_validate_strip() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let t = |tag, priority| Tagger {
            tag,
            priority,
            log: log.clone(),
        };
        // Added out of order on purpose; "b1" and "b2" share a priority.
        let c = CompositeValidator::new()
            .with(t("c", 20))
            .with(t("a", -1))
            .with(t("b1", 5))
            .with(t("b2", 5));
        assert_eq!(c.len(), 4);

        let signed = c.sign(Record::new("k", "v", EXP));
        assert_eq!(signed.value, b"v[a][b1][b2][c]");
        assert_eq!(
            take(&log),
            [
                "a sign v",
                "b1 sign v[a]",
                "b2 sign v[a][b1]",
                "c sign v[a][b1][b2]"
            ]
        );

        assert_eq!(c.validate(&signed, Kind::Get), Ok(()));
        assert_eq!(
            take(&log),
            [
                "c validate v[a][b1][b2][c]",
                "c strip v[a][b1][b2][c]",
                "b2 validate v[a][b1][b2]",
                "b2 strip v[a][b1][b2]",
                "b1 validate v[a][b1]",
                "b1 strip v[a][b1]",
                "a validate v[a]",
            ]
        );

        assert_eq!(c.strip(&signed), b"v");
        assert_eq!(
            take(&log),
            [
                "c strip v[a][b1][b2][c]",
                "b2 strip v[a][b1][b2]",
                "b1 strip v[a][b1]",
                "a strip v[a]"
            ]
        );

        // The first refusal stops the chain: the highest priority checks first.
        let unsigned = Record::new("k", "v[a][b1][b2]", EXP);
        assert_eq!(
            c.validate(&unsigned, Kind::Put),
            Err(ValidationError::Other {
                validator: "c".into(),
                reason: "tag missing".into()
            })
        );
        assert_eq!(take(&log), ["c validate v[a][b1][b2]"]);

        // As a RecordValidator itself.
        assert_eq!(RecordValidator::priority(&c), 20);
        assert_eq!(
            RecordValidator::sign(&c, &Record::new("k", "v", EXP)),
            b"v[a][b1][b2][c]"
        );
        assert_eq!(RecordValidator::strip(&c, &signed), b"v");
        assert_eq!(RecordValidator::validate(&c, &signed, Kind::Put), Ok(()));
        let mut c2 = CompositeValidator::new();
        assert!(!RecordValidator::merge(&mut c2, &c));
    }

    #[test]
    fn validators_of_one_kind_merge() {
        let a = Arc::new(PeerKey::generate(KeyType::Ed25519).unwrap());
        let mut c = CompositeValidator::new();
        c.add(SignatureValidator::verify_only());
        c.add(SchemaValidator::new().with_key::<Score>("scores", SubkeyRule::Any));
        c.add(SchemaValidator::new().with_key::<Score>("other", SubkeyRule::Any));
        c.add(SignatureValidator::new(a.clone()));
        c.add(PredicateValidator::new("p1", |_: &Record, _| true));
        c.add(PredicateValidator::new("p2", |_: &Record, _| true));
        // One signature validator (which adopted A's key), one schema, two predicates.
        assert_eq!(c.len(), 4);
        let r = Record::with_subkey("scores", owner_marker(&a.public()), r#"{"score":0.5}"#, EXP);
        let signed = c.sign(r.clone());
        assert_ne!(
            signed.value, r.value,
            "the merged verify-only validator signs with A's key now"
        );
        assert_eq!(c.validate(&signed, Kind::Put), Ok(()));
        // Both schemas are there.
        assert!(c
            .validate(&Record::new("other", "{}", EXP), Kind::Put)
            .is_err());

        // Adding a composite adds (and merges) its members.
        let inner = CompositeValidator::new()
            .with(SchemaValidator::new().strict())
            .with(PredicateValidator::new("p3", |_: &Record, _| true));
        c.add(inner);
        assert_eq!(c.len(), 5);
        let err = c.validate(&Record::new("unknown", "{}", EXP), Kind::Put);
        assert!(
            matches!(err, Err(ValidationError::Schema { .. })),
            "{err:?}"
        );
    }

    /// Signature + Schema: sign → validate → strip, the schema seeing the
    /// value without its signature; then every refusal through the composite.
    fn signature_and_schema(kind: KeyType) {
        let key = Arc::new(PeerKey::generate(kind).unwrap());
        let marker = owner_marker(&key.public());
        let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let spy = seen.clone();
        let c = CompositeValidator::new()
            .with(
                SchemaValidator::new()
                    .with_key::<Score>("scores", SubkeyRule::RequireOwner)
                    .strict(),
            )
            .with(SignatureValidator::new(key.clone()))
            .with(PredicateValidator::new("spy", move |r: &Record, _| {
                spy.lock().unwrap().push(r.value.clone());
                true
            }));

        let r = Record::with_subkey("scores", marker.clone(), r#"{"score":0.25}"#, EXP);
        let signed = c.sign(r.clone());
        assert!(signed.value.starts_with(&r.value));
        assert!(signed.value.ends_with(b"]"));
        assert_ne!(signed.value, r.value);
        // Signed JSON is no longer JSON: the schema alone would refuse it ...
        let schema_alone =
            SchemaValidator::new().with_key::<Score>("scores", SubkeyRule::RequireOwner);
        assert!(schema_alone.validate(&signed, Kind::Put).is_err());
        // ... but in the composite it sees the value without signature.
        assert_eq!(c.validate(&signed, Kind::Put), Ok(()));
        assert_eq!(c.validate(&signed, Kind::Get), Ok(()));
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [r.value.clone(), r.value.clone()]
        );
        assert_eq!(c.strip(&signed), r.value);

        // A verify-only node accepts it too.
        let reader = CompositeValidator::new()
            .with(SignatureValidator::verify_only())
            .with(SchemaValidator::new().with_key::<Score>("scores", SubkeyRule::RequireOwner));
        assert_eq!(
            reader.sign(r.clone()),
            r,
            "a verify-only node signs nothing"
        );
        assert_eq!(reader.validate(&signed, Kind::Get), Ok(()));

        // Unsigned.
        assert_eq!(
            c.validate(&r, Kind::Put),
            Err(ValidationError::MissingSignature)
        );
        // Tampered value (signature kept) — refused by the signature, before the schema.
        let sig = &signed.value[r.value.len()..];
        let tampered = Record {
            value: [&br#"{"score":0.26}"#[..], sig].concat(),
            ..signed.clone()
        };
        assert_eq!(
            c.validate(&tampered, Kind::Put),
            Err(ValidationError::BadSignature)
        );
        // Validly signed but against the schema (range rule).
        let out_of_range = c.sign(Record::with_subkey(
            "scores",
            marker.clone(),
            r#"{"score":2.0}"#,
            EXP,
        ));
        assert!(matches!(
            c.validate(&out_of_range, Kind::Put),
            Err(ValidationError::Schema { ref key, .. }) if key == "scores"
        ));
        // Validly signed but the wrong type.
        let wrong_type = c.sign(Record::with_subkey(
            "scores",
            marker.clone(),
            r#"{"score":"0.5"}"#,
            EXP,
        ));
        assert!(matches!(
            c.validate(&wrong_type, Kind::Put),
            Err(ValidationError::Schema { .. })
        ));
        // The subkey names no owner: nothing is signed, the schema refuses.
        let no_owner = c.sign(Record::with_subkey("scores", "me", r#"{"score":0.5}"#, EXP));
        assert_eq!(no_owner.value, br#"{"score":0.5}"#);
        assert!(matches!(
            c.validate(&no_owner, Kind::Put),
            Err(ValidationError::Schema { .. })
        ));
        // Strict: unknown key.
        assert!(matches!(
            c.validate(&Record::new("nope", "{}", EXP), Kind::Put),
            Err(ValidationError::Schema { .. })
        ));
    }

    #[test]
    fn signature_and_schema_ed25519() {
        signature_and_schema(KeyType::Ed25519);
    }

    #[test]
    fn signature_and_schema_rsa() {
        signature_and_schema(KeyType::Rsa);
    }

    #[test]
    fn predicate_refusal_through_the_composite() {
        let c = CompositeValidator::new()
            .with(PredicateValidator::new("no puts", |_: &Record, kind| {
                kind == Kind::Get
            }))
            .with(PredicateValidator::new("never", |_: &Record, _| false).with_priority(-1));
        let r = Record::new("k", "v", EXP);
        assert_eq!(
            c.validate(&r, Kind::Put),
            Err(ValidationError::Predicate("no puts".into()))
        );
        assert_eq!(
            c.validate(&r, Kind::Get),
            Err(ValidationError::Predicate("never".into()))
        );
        assert!(format!("{c:?}").contains("[-1, 0]"));
    }
}
