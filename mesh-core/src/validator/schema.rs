//! Typed values per key.
//!
//! Values are JSON. Each key may carry a schema: a Rust type that the value
//! must deserialize into with `serde_json` (which never coerces: `"1"` is not
//! `1`) and whose [`validator::Validate`] rules it must then satisfy, plus a
//! [`SubkeyRule`] saying whether records of the key are regular values,
//! dictionary entries, or entries whose subkey names an owner.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use super::signature::has_owner_marker;
use super::{Kind, RecordValidator, ValidationError};
use crate::record::Record;

/// What a key's records may do with subkeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SubkeyRule {
    /// Regular values and dictionary entries alike.
    #[default]
    Any,
    /// Regular values only: a record with a subkey is refused.
    Forbidden,
    /// Dictionary entries only: a record without a subkey is refused.
    Required,
    /// Dictionary entries whose subkey contains an owner marker (`[owner:`),
    /// so that each entry is writable by its owner only (the
    /// [`SignatureValidator`](super::SignatureValidator) checks the signature).
    RequireOwner,
}

impl SubkeyRule {
    /// Why `subkey` breaks the rule, if it does.
    fn check(self, subkey: Option<&[u8]>) -> Result<(), &'static str> {
        match (self, subkey) {
            (SubkeyRule::Any, _)
            | (SubkeyRule::Forbidden, None)
            | (SubkeyRule::Required, Some(_)) => Ok(()),
            (SubkeyRule::Forbidden, Some(_)) => {
                Err("subkeys are forbidden for this key (regular values only)")
            }
            (SubkeyRule::Required | SubkeyRule::RequireOwner, None) => {
                Err("a subkey is required for this key (dictionary entries only)")
            }
            (SubkeyRule::RequireOwner, Some(subkey)) => {
                if has_owner_marker(subkey) {
                    Ok(())
                } else {
                    Err("the subkey must contain an owner marker `[owner:...]`")
                }
            }
        }
    }
}

/// A type-erased value check: JSON bytes in, a readable reason out.
type Check = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// One schema registered for a key.
#[derive(Clone)]
struct KeySchema {
    rule: SubkeyRule,
    type_name: &'static str,
    check: Check,
}

/// Checks that values are JSON of the type registered for their key.
///
/// ```
/// use mesh_core::validator::{SchemaValidator, SubkeyRule};
/// #[derive(serde::Deserialize, validator::Validate)]
/// struct Score {
///     #[validate(range(min = 0.0, max = 1.0))]
///     score: f64,
/// }
/// let schema = SchemaValidator::new()
///     .with_key::<Score>("scores", SubkeyRule::RequireOwner)
///     .strict();
/// # let _ = schema;
/// ```
///
/// - A key may carry several schemas (by registering it twice, or by merging
///   two validators that both know it): a value must then satisfy all of them.
/// - Keys without a schema pass, unless the validator is [`strict`](Self::strict).
/// - Unknown JSON fields are ignored unless the type says
///   `#[serde(deny_unknown_fields)]`.
///
/// Priority 0: it runs after the [`SignatureValidator`](super::SignatureValidator)
/// checked and stripped the signature, so it sees the bare JSON value. The
/// same rules apply to [`Kind::Put`] and [`Kind::Get`].
#[derive(Clone, Default)]
pub struct SchemaValidator {
    keys: BTreeMap<Vec<u8>, Vec<KeySchema>>,
    strict: bool,
}

impl SchemaValidator {
    /// A validator without schemas that lets every key pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `T` as the schema of `key`: values must be JSON that
    /// deserializes into `T` and passes `T`'s `validator` rules, and
    /// subkeys must obey `rule`.
    pub fn with_key<T>(mut self, key: impl Into<Vec<u8>>, rule: SubkeyRule) -> Self
    where
        T: DeserializeOwned + Validate + 'static,
    {
        let type_name = short_type_name::<T>();
        let check: Check = Arc::new(move |bytes: &[u8]| {
            let value: T = serde_json::from_slice(bytes)
                .map_err(|e| format!("value is not a valid {type_name}: {e}"))?;
            value
                .validate()
                .map_err(|e| format!("value breaks the rules of {type_name}: {}", describe(&e)))
        });
        self.keys.entry(key.into()).or_default().push(KeySchema {
            rule,
            type_name,
            check,
        });
        self
    }

    /// Registers a subkey rule for `key` alone, whatever its values are
    /// (they need not be JSON).
    pub fn with_rule(mut self, key: impl Into<Vec<u8>>, rule: SubkeyRule) -> Self {
        self.keys.entry(key.into()).or_default().push(KeySchema {
            rule,
            type_name: "any value",
            check: Arc::new(|_: &[u8]| Ok(())),
        });
        self
    }

    /// Refuses records of keys that have no schema.
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }
}

/// `a::b::Foo<c::Bar>` → `Foo<c::Bar>`: enough to name the type in errors.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let head = full.split('<').next().unwrap_or(full);
    match head.rfind("::") {
        Some(pos) => &full[pos + 2..],
        None => full,
    }
}

/// `validator`'s errors on one line, in a deterministic order (its own
/// `Display` iterates hash maps): `a.b: range (max = 1, value = 2); c: ...`.
fn describe(errors: &ValidationErrors) -> String {
    let mut out = Vec::new();
    describe_into(errors, "", &mut out);
    out.join("; ")
}

fn describe_into(errors: &ValidationErrors, prefix: &str, out: &mut Vec<String>) {
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (field, kind) in fields {
        let path = format!("{prefix}{field}");
        match kind {
            ValidationErrorsKind::Struct(inner) => describe_into(inner, &format!("{path}."), out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    describe_into(inner, &format!("{path}[{index}]."), out);
                }
            }
            ValidationErrorsKind::Field(errs) => {
                for err in errs {
                    let what = match &err.message {
                        Some(message) => message.to_string(),
                        None => {
                            let mut params: Vec<_> = err.params.iter().collect();
                            params.sort_by(|a, b| a.0.cmp(b.0));
                            let params: Vec<_> =
                                params.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                            if params.is_empty() {
                                err.code.to_string()
                            } else {
                                format!("{} ({})", err.code, params.join(", "))
                            }
                        }
                    };
                    out.push(format!("{path}: {what}"));
                }
            }
        }
    }
}

impl fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys = f.debug_map();
        for (key, schemas) in &self.keys {
            let described: Vec<_> = schemas.iter().map(|s| (s.type_name, s.rule)).collect();
            keys.entry(&String::from_utf8_lossy(key), &described);
        }
        keys.finish()?;
        if self.strict {
            f.write_str(" (strict)")?;
        }
        Ok(())
    }
}

impl RecordValidator for SchemaValidator {
    fn validate(&self, record: &Record, _kind: Kind) -> Result<(), ValidationError> {
        let refuse = |reason: String| ValidationError::Schema {
            key: String::from_utf8_lossy(&record.key).into_owned(),
            reason,
        };
        let Some(schemas) = self.keys.get(&record.key) else {
            return if self.strict {
                Err(refuse(
                    "no schema is registered for this key (strict schema)".into(),
                ))
            } else {
                Ok(())
            };
        };
        for schema in schemas {
            schema
                .rule
                .check(record.subkey.as_deref())
                .map_err(|reason| refuse(reason.into()))?;
            (schema.check)(&record.value).map_err(refuse)?;
        }
        Ok(())
    }

    fn priority(&self) -> i32 {
        0
    }

    fn merge(&mut self, other: &dyn RecordValidator) -> bool {
        let Some(other) = other.as_any().downcast_ref::<SchemaValidator>() else {
            return false;
        };
        for (key, schemas) in &other.keys {
            self.keys
                .entry(key.clone())
                .or_default()
                .extend(schemas.iter().cloned());
        }
        self.strict |= other.strict;
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::record::Expiration;

    const EXP: Expiration = Expiration::from_millis(1_700_000_000_000);

    #[derive(Debug, Deserialize, Validate)]
    struct Peer {
        #[validate(range(min = 1, max = 65535))]
        port: u32,
        #[validate(length(min = 1, max = 16))]
        name: String,
    }

    #[derive(Debug, Deserialize, Validate)]
    #[serde(deny_unknown_fields)]
    struct Score {
        #[validate(range(min = 0.0, max = 1.0))]
        score: f64,
    }

    fn refusal(r: Result<(), ValidationError>) -> String {
        match r {
            Err(ValidationError::Schema { reason, .. }) => reason,
            other => panic!("expected a schema refusal, got {other:?}"),
        }
    }

    fn check(v: &SchemaValidator, r: &Record) -> Result<(), ValidationError> {
        let put = v.validate(r, Kind::Put);
        assert_eq!(put, v.validate(r, Kind::Get));
        put
    }

    fn peers() -> SchemaValidator {
        SchemaValidator::new().with_key::<Peer>("peers", SubkeyRule::Any)
    }

    #[test]
    fn valid_values_pass() {
        let v = peers();
        assert_eq!(
            check(
                &v,
                &Record::new("peers", r#"{"port": 8080, "name": "a"}"#, EXP)
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &v,
                &Record::with_subkey("peers", "x", r#"{"port":1,"name":"b","extra":true}"#, EXP)
            ),
            Ok(())
        );
        // Signing and stripping are the identity.
        let r = Record::new("peers", "anything", EXP);
        assert_eq!(v.sign(&r), r.value);
        assert_eq!(v.strip(&r), r.value);
        assert_eq!(v.priority(), 0);
    }

    #[test]
    fn no_silent_coercion() {
        let v = peers();
        let err = check(
            &v,
            &Record::new("peers", r#"{"port": "8080", "name": "a"}"#, EXP),
        );
        let reason = refusal(err);
        assert!(reason.contains("Peer"), "{reason}");
        assert!(reason.contains("invalid type"), "{reason}");
        // A float is not an integer, a number is not a string.
        refusal(check(
            &v,
            &Record::new("peers", r#"{"port": 8080.5, "name": "a"}"#, EXP),
        ));
        refusal(check(
            &v,
            &Record::new("peers", r#"{"port": 8080, "name": 1}"#, EXP),
        ));
    }

    #[test]
    fn schema_type_mismatch_and_malformed_json_are_refused() {
        let v = peers();
        for bad in [
            &br#"{"name": "a"}"#[..], // missing field
            br#"[8080, "a"]x"#,       // trailing garbage
            br#"not json"#,
            br#"null"#,
            b"",
            br#""{\"port\":1,\"name\":\"a\"}""#, // a JSON string holding JSON
        ] {
            let err = check(&v, &Record::new("peers", bad, EXP));
            assert!(
                matches!(&err, Err(ValidationError::Schema { key, .. }) if key == "peers"),
                "{err:?}"
            );
        }
        let v = SchemaValidator::new().with_key::<Score>("scores", SubkeyRule::Any);
        let reason = refusal(check(
            &v,
            &Record::new("scores", r#"{"score": 0.5, "x": 1}"#, EXP),
        ));
        assert!(reason.contains("unknown field"), "{reason}");
    }

    #[test]
    fn validator_range_and_length_rules_are_enforced() {
        let v = peers();
        let r = refusal(check(
            &v,
            &Record::new("peers", r#"{"port": 0, "name": "a"}"#, EXP),
        ));
        assert!(r.contains("port") && r.contains("range"), "{r}");
        let r = refusal(check(
            &v,
            &Record::new("peers", r#"{"port": 70000, "name": "a"}"#, EXP),
        ));
        assert!(r.contains("port"), "{r}");
        let r = refusal(check(
            &v,
            &Record::new("peers", r#"{"port": 1, "name": ""}"#, EXP),
        ));
        assert!(r.contains("name") && r.contains("length"), "{r}");
        let v = SchemaValidator::new().with_key::<Score>("scores", SubkeyRule::Any);
        refusal(check(&v, &Record::new("scores", r#"{"score": 1.5}"#, EXP)));
        assert_eq!(
            check(&v, &Record::new("scores", r#"{"score": 1.0}"#, EXP)),
            Ok(())
        );
        // The error displays readably.
        let err = check(&v, &Record::new("scores", r#"{"score": -1}"#, EXP)).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("schema of key \"scores\": value breaks the rules of Score"),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "{shown}");
        // Every broken rule, in a stable order, with its parameters.
        let v = peers();
        let r = refusal(check(
            &v,
            &Record::new("peers", r#"{"port": 0, "name": ""}"#, EXP),
        ));
        assert_eq!(
            r,
            r#"value breaks the rules of Peer: name: length (max = 16, min = 1, value = ""); port: range (max = 65535, min = 1, value = 0)"#
        );
    }

    #[test]
    fn keys_without_schema_pass_unless_strict() {
        let v = peers();
        assert_eq!(
            check(&v, &Record::new("other", "not json at all", EXP)),
            Ok(())
        );
        let v = peers().strict();
        let r = refusal(check(&v, &Record::new("other", "{}", EXP)));
        assert!(r.contains("no schema"), "{r}");
        assert_eq!(
            check(
                &v,
                &Record::new("peers", r#"{"port": 1, "name": "a"}"#, EXP)
            ),
            Ok(())
        );
        // Key names are bytes, matched exactly.
        refusal(check(
            &v,
            &Record::new("peers ", r#"{"port": 1, "name": "a"}"#, EXP),
        ));
    }

    #[test]
    fn subkey_rules() {
        let value = r#"{"score": 0.5}"#;
        let owner_subkey = b"[owner:whatever the signature validator checks]".to_vec();
        let cases: [(SubkeyRule, [bool; 3]); 4] = [
            // (no subkey, plain subkey, owner subkey) accepted?
            (SubkeyRule::Any, [true, true, true]),
            (SubkeyRule::Forbidden, [true, false, false]),
            (SubkeyRule::Required, [false, true, true]),
            (SubkeyRule::RequireOwner, [false, false, true]),
        ];
        for (rule, expected) in cases {
            let v = SchemaValidator::new().with_key::<Score>("scores", rule);
            let records = [
                Record::new("scores", value, EXP),
                Record::with_subkey("scores", "plain", value, EXP),
                Record::with_subkey("scores", owner_subkey.clone(), value, EXP),
            ];
            for (record, ok) in records.iter().zip(expected) {
                let got = check(&v, record);
                assert_eq!(got.is_ok(), ok, "{rule:?} {record:?}: {got:?}");
            }
        }
        let v = SchemaValidator::new().with_key::<Score>("scores", SubkeyRule::RequireOwner);
        let r = refusal(check(
            &v,
            &Record::with_subkey("scores", "plain", value, EXP),
        ));
        assert!(r.contains("owner marker"), "{r}");
        // The subkey rule is checked even when the value is fine, and the value
        // even when the subkey is fine.
        refusal(check(
            &v,
            &Record::with_subkey("scores", owner_subkey, "{}", EXP),
        ));
    }

    #[test]
    fn merge_unions_keys_and_strictness() {
        let mut a = peers();
        let b = SchemaValidator::new()
            .with_key::<Score>("scores", SubkeyRule::Forbidden)
            .strict();
        assert!(a.merge(&b));
        assert_eq!(
            check(
                &a,
                &Record::new("peers", r#"{"port": 1, "name": "a"}"#, EXP)
            ),
            Ok(())
        );
        assert_eq!(
            check(&a, &Record::new("scores", r#"{"score": 0.1}"#, EXP)),
            Ok(())
        );
        refusal(check(&a, &Record::new("scores", r#"{"score": 2}"#, EXP)));
        refusal(check(&a, &Record::new("unknown", "{}", EXP)));

        // Two schemas for one key: both must hold.
        #[derive(Deserialize, Validate)]
        struct LowScore {
            #[validate(range(max = 0.5))]
            score: f64,
        }
        assert!(a.merge(&SchemaValidator::new().with_key::<LowScore>("scores", SubkeyRule::Any)));
        assert_eq!(
            check(&a, &Record::new("scores", r#"{"score": 0.4}"#, EXP)),
            Ok(())
        );
        refusal(check(&a, &Record::new("scores", r#"{"score": 0.6}"#, EXP)));
        refusal(check(
            &a,
            &Record::with_subkey("scores", "s", r#"{"score": 0.4}"#, EXP),
        ));

        struct Other;
        impl RecordValidator for Other {
            fn validate(&self, _: &Record, _: Kind) -> Result<(), ValidationError> {
                Ok(())
            }
            fn as_any(&self) -> &dyn Any {
                self
            }
        }
        assert!(!a.merge(&Other));
        assert!(format!("{a:?}").contains("LowScore"));
    }

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name::<Peer>(), "Peer");
        assert_eq!(
            short_type_name::<Vec<Peer>>(),
            "Vec<mesh_core::validator::schema::tests::Peer>"
        );
    }
}
