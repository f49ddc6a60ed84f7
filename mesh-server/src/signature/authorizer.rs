//! The server-side check of request envelopes: the `"signature"` authorizer.

use super::*;

/// Decoded public keys by their encoding, so that a peer's key is parsed
/// once, not on every call.
#[derive(Default)]
pub(super) struct KeyCache {
    keys: Mutex<HashMap<Vec<u8>, (PublicKey, PeerId)>>,
}

pub(super) const KEY_CACHE_ENTRIES: usize = 4_096;

impl KeyCache {
    pub(super) fn get(&self, envelope: &Envelope) -> Result<(PublicKey, PeerId), EnvelopeError> {
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
pub(super) fn client_keys() -> &'static KeyCache {
    static KEYS: std::sync::OnceLock<KeyCache> = std::sync::OnceLock::new();
    KEYS.get_or_init(KeyCache::default)
}

pub(super) fn skew_reason(now_ms: u64, timestamp_ms: u64, max_skew: Duration) -> Option<String> {
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
pub(super) struct Seen {
    set: HashSet<u128>,
    order: VecDeque<(Instant, u128, PeerId)>,
    per_signer: HashMap<PeerId, usize>,
}

impl Seen {
    fn evict(&mut self, now: Instant) {
        while let Some(&(until, id, signer)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.set.remove(&id);
            if let Some(n) = self.per_signer.get_mut(&signer) {
                *n -= 1;
                if *n == 0 {
                    self.per_signer.remove(&signer);
                }
            }
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
    max_nonces_per_signer: usize,
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
            max_nonces_per_signer: DEFAULT_MAX_NONCES_PER_SIGNER,
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

    /// Remember at most this many nonces of one signer (default 20,000):
    /// past it the signer's calls are refused until its old nonces expire,
    /// and nobody else's are.
    pub fn with_max_nonces_per_signer(mut self, max: usize) -> Self {
        self.max_nonces_per_signer = max.max(1);
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
        let own = seen.per_signer.get(&signer).copied().unwrap_or(0);
        if own >= self.max_nonces_per_signer {
            return Err(Refusal::new(
                Code::ResourceExhausted,
                format!(
                    "{signer} made {own} requests within {} s already (its quota of nonces), try again later",
                    (self.max_skew * 2).as_secs()
                ),
            ));
        }
        if !seen.set.insert(id) {
            return Err(replayed());
        }
        *seen.per_signer.entry(signer).or_default() += 1;
        seen.order.push_back((now + self.max_skew * 2, id, signer));
        Ok(())
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
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
