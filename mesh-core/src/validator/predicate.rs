//! Any closure over the record.

use std::any::Any;
use std::fmt;

use super::{Kind, RecordValidator, ValidationError};
use crate::record::Record;

/// The closure of a [`PredicateValidator`].
type Predicate = Box<dyn Fn(&Record, Kind) -> bool + Send + Sync>;

/// Accepts the records for which a closure returns `true`.
///
/// The closure sees the record as validators of higher priority left it
/// (with the default priority 0, after the signature was checked and
/// stripped) and whether it is being stored ([`Kind::Put`]) or read
/// ([`Kind::Get`]). A refusal is [`ValidationError::Predicate`] with the
/// validator's name. Predicate validators never merge: each one added to a
/// [`CompositeValidator`](super::CompositeValidator) runs on its own.
pub struct PredicateValidator {
    name: String,
    predicate: Predicate,
    priority: i32,
}

impl PredicateValidator {
    /// A validator named `name` (reported on refusal) accepting the records
    /// for which `f` returns `true`; priority 0.
    pub fn new(
        name: impl Into<String>,
        f: impl Fn(&Record, Kind) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            predicate: Box::new(f),
            priority: 0,
        }
    }

    /// Runs at priority `p` instead of 0 (validators of higher priority check
    /// first, and see the value before lower ones strip anything).
    pub fn with_priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }
}

impl fmt::Debug for PredicateValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PredicateValidator")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl RecordValidator for PredicateValidator {
    fn validate(&self, record: &Record, kind: Kind) -> Result<(), ValidationError> {
        if (self.predicate)(record, kind) {
            Ok(())
        } else {
            Err(ValidationError::Predicate(self.name.clone()))
        }
    }

    fn priority(&self) -> i32 {
        self.priority
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::record::Expiration;

    const EXP: Expiration = Expiration::from_millis(1_700_000_000_000);

    #[test]
    fn accepts_and_refuses_with_its_name() {
        let v = PredicateValidator::new("small values", |r: &Record, _| r.value.len() <= 4);
        assert_eq!(
            v.validate(&Record::new("k", "1234", EXP), Kind::Put),
            Ok(())
        );
        assert_eq!(
            v.validate(&Record::new("k", "12345", EXP), Kind::Put),
            Err(ValidationError::Predicate("small values".into()))
        );
        let err = v
            .validate(&Record::new("k", "12345", EXP), Kind::Get)
            .unwrap_err();
        assert_eq!(err.to_string(), "refused by predicate \"small values\"");
        // Nothing is added or removed.
        let r = Record::new("k", "v", EXP);
        assert_eq!(v.sign(&r), r.value);
        assert_eq!(v.strip(&r), r.value);
    }

    #[test]
    fn sees_the_kind() {
        let v = PredicateValidator::new("read-only", |_: &Record, kind| kind == Kind::Get);
        let r = Record::new("k", "v", EXP);
        assert_eq!(v.validate(&r, Kind::Get), Ok(()));
        assert_eq!(
            v.validate(&r, Kind::Put),
            Err(ValidationError::Predicate("read-only".into()))
        );
    }

    #[test]
    fn priority_and_no_merge() {
        let mut a = PredicateValidator::new("a", |_: &Record, _| true);
        assert_eq!(a.priority(), 0);
        let b = PredicateValidator::new("b", |_: &Record, _| false).with_priority(-5);
        assert_eq!(b.priority(), -5);
        assert!(!a.merge(&b));
        assert!(format!("{b:?}").contains("\"b\""));
    }

    /// Commit/reveal epoch windows: during epoch `e` (of `EPOCH` ms), commits
    /// for `e` are accepted only in the first half of the epoch and reveals of
    /// the commits of `e` only in the first tenth of epoch `e + 1`. Keys are
    /// `commit/<e>` and `reveal/<e>`; reads are always allowed.
    #[test]
    fn commit_reveal_epoch_windows() {
        const EPOCH: u64 = 100_000;
        let clock = Arc::new(AtomicU64::new(0));
        let now = clock.clone();
        let v = PredicateValidator::new("commit-reveal window", move |r: &Record, kind| {
            if kind == Kind::Get {
                return true;
            }
            let t = now.load(Ordering::SeqCst);
            let (epoch, offset) = (t / EPOCH, t % EPOCH);
            let Ok(key) = std::str::from_utf8(&r.key) else {
                return false;
            };
            let Some((phase, e)) = key.split_once('/') else {
                return false;
            };
            let Ok(e) = e.parse::<u64>() else {
                return false;
            };
            match phase {
                "commit" => e == epoch && offset < EPOCH / 2,
                "reveal" => e + 1 == epoch && offset < EPOCH / 10,
                _ => false,
            }
        });
        let at = |t: u64| clock.store(t, Ordering::SeqCst);
        let put = |key: &str| {
            v.validate(&Record::with_subkey(key, "peer", "x", EXP), Kind::Put)
                .is_ok()
        };

        // Epoch 7 runs from 700_000 to 800_000.
        at(700_000);
        assert!(put("commit/7"), "start of the epoch");
        assert!(!put("commit/6"), "a past epoch's commit");
        assert!(!put("commit/8"), "a future epoch's commit");
        assert!(!put("reveal/7"), "revealing during the commit phase");
        at(749_999);
        assert!(put("commit/7"), "last ms of the first half");
        at(750_000);
        assert!(!put("commit/7"), "second half: commits closed");
        assert!(!put("reveal/7"), "second half: reveals not open yet");
        at(800_000);
        assert!(put("reveal/7"), "first tenth of the next epoch");
        assert!(put("commit/8"), "the next epoch's commits open too");
        at(809_999);
        assert!(put("reveal/7"), "last ms of the reveal window");
        at(810_000);
        assert!(!put("reveal/7"), "reveal window closed");
        assert!(!put("reveal/8"));
        // Reads of anything pass at any time; garbage keys are refused.
        assert_eq!(
            v.validate(&Record::new("reveal/7", "x", EXP), Kind::Get),
            Ok(())
        );
        assert!(!put("commit/seven"));
        assert!(!put("vote/8"));
        assert_eq!(
            v.validate(&Record::new("commit", "x", EXP), Kind::Put),
            Err(ValidationError::Predicate("commit-reveal window".into()))
        );
    }
}
