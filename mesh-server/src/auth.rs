//! Authorizers: checks that run before a handler sees a request.
//!
//! An [`Authorizer`] looks at the call (caller PeerId, method path, request
//! headers and, when it asks for it with [`Authorizer::needs_body`], the
//! buffered request body) and either lets it through or refuses it with a
//! gRPC status. [`AuthLayer`]
//! runs a list of them, in order, as a tower layer on a tonic server
//! (`Server::builder().layer(AuthLayer::new(...))`) or around one service.
//! A refused call gets a status whose message names the authorizer and the
//! reason (`"stake: peer … is not staked in subnet 3 …"`), and is counted.
//!
//! Provided: [`StakeAuthorizer`] (the caller must be staked, via a
//! [`StakeOracle`]) and [`RateLimitAuthorizer`] (per-peer burst and sustained
//! limits with escalating blocks, the Python mesh's numbers by default);
//! [`crate::signature::SignatureAuthorizer`] (signed envelopes: replay,
//! freshness, target, tampering).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use libp2p::PeerId;
use mesh_core::{NodeClass, Offences, RateLimit, StakeGate, StakeOracle, SubnetId, TokenBucket};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tonic::body::Body;
use tonic::{Code, Status};

use crate::rpc::Caller;

/// What an authorizer sees of a call.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The caller, when the call came over a libp2p stream.
    pub caller: Option<PeerId>,
    /// `/<package>.<Service>/<Method>`.
    pub path: String,
    /// The request's headers (gRPC metadata).
    pub headers: http::HeaderMap,
    /// The whole request body as sent (gRPC-framed), once an authorizer
    /// that [needs it](Authorizer::needs_body) is reached; `None` before.
    pub body: Option<Bytes>,
}

impl CallInfo {
    /// A call of `path` by `caller`, without headers or body.
    pub fn new(caller: Option<PeerId>, path: impl Into<String>) -> Self {
        Self {
            caller,
            path: path.into(),
            headers: http::HeaderMap::new(),
            body: None,
        }
    }
}

/// Why an authorizer refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The gRPC code the caller gets.
    pub code: Code,
    /// Why, for the caller and the logs.
    pub reason: String,
}

impl Refusal {
    /// A refusal with `code` and `reason`.
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// The future an authorizer returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// A check that runs before a handler.
pub trait Authorizer: Send + Sync + 'static {
    /// Short name used in statuses and metrics (`"stake"`, `"rate_limit"`).
    fn name(&self) -> &'static str;
    /// Whether this authorizer reads [`CallInfo::body`]: the layer then
    /// buffers the request body (up to its limit) before asking it.
    fn needs_body(&self) -> bool {
        false
    }
    /// Let the call through, or refuse it.
    fn authorize<'a>(&'a self, call: &'a CallInfo) -> AuthFuture<'a>;
}

type AuthorizerLabel = Vec<(&'static str, String)>;

/// Calls let through and refused per authorizer. Prometheus counters
/// (`mesh_rpc_calls_allowed_total`, `mesh_rpc_calls_refused_total{authorizer}`)
/// once [`AuthMetrics::register`]ed; clones share the counts.
#[derive(Debug, Default, Clone)]
pub struct AuthMetrics {
    refused: Family<AuthorizerLabel, Counter>,
    allowed: Counter,
}

impl AuthMetrics {
    /// Calls refused by the authorizer named `name`.
    pub fn refused(&self, name: &str) -> u64 {
        // Look the label up without creating it: a name never seen is 0.
        let label = vec![("authorizer", name.to_owned())];
        self.refused.get(&label).map_or(0, |c| c.get())
    }

    /// Calls every authorizer let through.
    pub fn allowed(&self) -> u64 {
        self.allowed.get()
    }

    /// Serve the counters from `registry` (prefix `mesh_rpc`).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("mesh_rpc");
        sub.register(
            "calls_allowed",
            "RPC calls every authorizer let through",
            self.allowed.clone(),
        );
        sub.register(
            "calls_refused",
            "RPC calls refused, by the authorizer that refused them",
            self.refused.clone(),
        );
    }

    fn refuse(&self, name: &'static str) {
        self.refused
            .get_or_create(&vec![("authorizer", name.to_owned())])
            .inc();
    }
}

/// Largest request body buffered for an authorizer that reads it: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How long a body an authorizer reads may take to arrive: 10 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most calls in the authorizers and handlers at once: 256.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Marks a response the [`AuthLayer`] made itself (a refusal): the
/// [`crate::SignResponsesLayer`] leaves it unsigned, so a caller that is
/// refused costs the server no signature.
#[derive(Debug, Clone, Copy)]
pub struct AuthRefusal;

/// Runs authorizers, in order, before the wrapped service.
///
/// The request body is buffered (at most [`AuthLayer::with_max_body_bytes`],
/// 4 MiB by default) only when the first authorizer that
/// [needs it](Authorizer::needs_body) is reached; a larger body is refused
/// with `Code::ResourceExhausted`, and a body that does not arrive within
/// [`AuthLayer::with_body_timeout`] (10 s) with `Code::DeadlineExceeded`,
/// both named after that authorizer. At most
/// [`AuthLayer::with_max_in_flight`] calls (256) are in the authorizers and
/// handlers at once; past that a call is refused at once with
/// `Code::ResourceExhausted` (`"in_flight: …"`), so slow callers cannot
/// queue up work without bound. Refusals are marked [`AuthRefusal`] and
/// go out unsigned.
#[derive(Clone)]
pub struct AuthLayer {
    authorizers: Arc<Vec<Arc<dyn Authorizer>>>,
    metrics: Arc<AuthMetrics>,
    max_body_bytes: usize,
    body_timeout: Duration,
    max_in_flight: usize,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl AuthLayer {
    /// A layer running `authorizers` in order; the first refusal wins.
    pub fn new(authorizers: Vec<Arc<dyn Authorizer>>) -> Self {
        Self {
            authorizers: Arc::new(authorizers),
            metrics: Arc::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            in_flight: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_IN_FLIGHT)),
        }
    }

    /// Buffer request bodies of at most this many bytes (default 4 MiB).
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// Refuse a call whose body (read for an authorizer) takes longer than
    /// this to arrive (default 10 s).
    pub fn with_body_timeout(mut self, body_timeout: Duration) -> Self {
        self.body_timeout = body_timeout;
        self
    }

    /// Most calls in the authorizers and handlers at once (default 256):
    /// until a handler returns its response; a streamed response's body
    /// is not counted.
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self.in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
        self
    }

    /// Allowed and refused counts.
    pub fn metrics(&self) -> Arc<AuthMetrics> {
        self.metrics.clone()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

async fn buffer(body: Body, max: usize, timeout: Duration) -> Result<Bytes, Refusal> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| {
            Refusal::new(
                Code::DeadlineExceeded,
                format!(
                    "the request body did not arrive within {:.1} s",
                    timeout.as_secs_f64()
                ),
            )
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Refusal::new(
            Code::ResourceExhausted,
            format!("the request body is over {max} bytes"),
        )),
        Err(e) => Err(Refusal::new(
            Code::InvalidArgument,
            format!("cannot read the request body: {e}"),
        )),
    }
}

impl<S, RB> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The ready inner service goes with this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let refuse = |name: &'static str,
                          caller: Option<PeerId>,
                          path: &str,
                          refusal: Refusal| {
                tracing::info!(?caller, %path, authorizer = name, reason = %refusal.reason, "call refused");
                layer.metrics.refuse(name);
                let status = Status::new(refusal.code, format!("{name}: {}", refusal.reason));
                let mut response = status.into_http::<RB>();
                response.extensions_mut().insert(AuthRefusal);
                response
            };
            let Ok(_permit) = layer.in_flight.clone().try_acquire_owned() else {
                let caller = request.extensions().get::<Caller>().map(|c| c.peer_id);
                let refusal = Refusal::new(
                    Code::ResourceExhausted,
                    format!(
                        "the server is busy: {} calls in flight",
                        layer.max_in_flight
                    ),
                );
                return Ok(refuse("in_flight", caller, request.uri().path(), refusal));
            };
            let (mut parts, mut body) = request.into_parts();
            // The headers are lent to the authorizers, and given back.
            let mut call = CallInfo {
                caller: parts.extensions.get::<Caller>().map(|c| c.peer_id),
                path: parts.uri.path().to_owned(),
                headers: std::mem::take(&mut parts.headers),
                body: None,
            };
            for authorizer in layer.authorizers.iter() {
                let mut verdict = Ok(());
                if authorizer.needs_body() && call.body.is_none() {
                    let taken = std::mem::take(&mut body);
                    match buffer(taken, layer.max_body_bytes, layer.body_timeout).await {
                        Ok(bytes) => {
                            body = Body::new(Full::new(bytes.clone()));
                            call.body = Some(bytes);
                        }
                        Err(refusal) => verdict = Err(refusal),
                    }
                }
                if verdict.is_ok() {
                    verdict = authorizer.authorize(&call).await;
                }
                if let Err(refusal) = verdict {
                    return Ok(refuse(authorizer.name(), call.caller, &call.path, refusal));
                }
            }
            layer.metrics.allowed.inc();
            parts.headers = call.headers;
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// Refuses callers that are not staked in the subnet: the node's one
/// [`StakeGate`] (see `docs/architecture.md`, "Admission"). Give it a cached
/// oracle (`mesh_chain::chain_stake_oracle`): it is asked on every call.
pub struct StakeAuthorizer {
    gate: StakeGate,
}

impl StakeAuthorizer {
    /// Callers must be staked in `subnet_id` with at least `min_class`.
    pub fn new(oracle: Arc<dyn StakeOracle>, subnet_id: SubnetId, min_class: NodeClass) -> Self {
        Self::from_gate(StakeGate::new(oracle, subnet_id, min_class))
    }

    /// Callers must pass `gate` (share it with the DHT's `stake_gate`, so
    /// both keep the same last answers through an oracle outage).
    pub fn from_gate(gate: StakeGate) -> Self {
        Self { gate }
    }
}

impl Authorizer for StakeAuthorizer {
    fn name(&self) -> &'static str {
        "stake"
    }

    fn authorize<'a>(&'a self, call: &'a CallInfo) -> AuthFuture<'a> {
        Box::pin(async move {
            let peer = call
                .caller
                .ok_or_else(|| Refusal::new(Code::Unauthenticated, "the caller has no PeerId"))?;
            match self.gate.check(&peer).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Refusal::new(
                    Code::PermissionDenied,
                    format!(
                        "peer {peer} is not staked in subnet {} with class {} or above",
                        self.gate.subnet_id, self.gate.min_class
                    ),
                )),
                Err(e) => Err(Refusal::new(
                    Code::Unavailable,
                    format!("cannot check the stake of {peer}: {e}"),
                )),
            }
        })
    }
}

/// Per-peer limits of [`RateLimitAuthorizer`].
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// Sustained calls per second (token refill rate).
    pub per_second: f64,
    /// Calls allowed at once (token bucket size).
    pub burst: f64,
    /// Calls per minute.
    pub per_minute: u32,
    /// Calls per hour.
    pub per_hour: u32,
    /// Block lengths for the first, second and further violations.
    pub blocks: Vec<Duration>,
}

impl Default for RateLimits {
    /// The Python mesh's: 10/s, burst 20, 100/min, 1000/h; blocks of 5 min,
    /// 1 h, 24 h.
    fn default() -> Self {
        Self {
            per_second: 10.0,
            burst: 20.0,
            per_minute: 100,
            per_hour: 1_000,
            blocks: mesh_core::rate::escalating_blocks(),
        }
    }
}

#[derive(Debug)]
struct PeerUse {
    bucket: TokenBucket,
    last: Instant,
    minute: (Instant, u32),
    hour: (Instant, u32),
    offences: Offences,
}

/// Per-peer burst and sustained limits; each violation blocks the peer, for
/// longer each time.
pub struct RateLimitAuthorizer {
    limits: RateLimits,
    peers: Mutex<HashMap<PeerId, PeerUse>>,
}

impl RateLimitAuthorizer {
    /// An authorizer with these limits.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Count one call of `peer` at `now`.
    pub fn check(&self, peer: PeerId, now: Instant) -> Result<(), Refusal> {
        let limits = &self.limits;
        let bucket = RateLimit {
            per_second: limits.per_second,
            burst: limits.burst,
        };
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() > 100_000 {
            // Forget peers that are neither blocked nor recently seen.
            peers.retain(|_, u| {
                u.offences.blocked_for(now).is_some()
                    || now.duration_since(u.last) < Duration::from_secs(3_600)
            });
        }
        let usage = peers.entry(peer).or_insert_with(|| PeerUse {
            bucket: TokenBucket::full(bucket, now),
            last: now,
            minute: (now, 0),
            hour: (now, 0),
            offences: Offences::default(),
        });
        if let Some(left) = usage.offences.blocked_for(now) {
            return Err(Refusal::new(
                Code::ResourceExhausted,
                format!(
                    "peer {peer} is blocked for {} s more after {} violation(s)",
                    left.as_secs().max(1),
                    usage.offences.strikes()
                ),
            ));
        }
        if usage.offences.lift_expired(now) {
            usage.bucket = TokenBucket::full(bucket, now);
        }
        usage.last = now;
        if now.duration_since(usage.minute.0) >= Duration::from_secs(60) {
            usage.minute = (now, 0);
        }
        if now.duration_since(usage.hour.0) >= Duration::from_secs(3_600) {
            usage.hour = (now, 0);
        }
        // A violation blocks the peer and refills its bucket when the block
        // ends, so a token taken by a call refused for its minute or hour
        // count is never missed.
        let violation = if !usage.bucket.try_take(bucket, now) {
            Some(format!(
                "more than {} calls at once or {}/s",
                limits.burst, limits.per_second
            ))
        } else if usage.minute.1 >= limits.per_minute {
            Some(format!("more than {} calls a minute", limits.per_minute))
        } else if usage.hour.1 >= limits.per_hour {
            Some(format!("more than {} calls an hour", limits.per_hour))
        } else {
            None
        };
        if let Some(what) = violation {
            let block = usage.offences.strike(&limits.blocks, now);
            return Err(Refusal::new(
                Code::ResourceExhausted,
                format!(
                    "peer {peer} made {what}: blocked for {} s (violation {})",
                    block.as_secs(),
                    usage.offences.strikes()
                ),
            ));
        }
        usage.minute.1 += 1;
        usage.hour.1 += 1;
        Ok(())
    }
}

impl Authorizer for RateLimitAuthorizer {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn authorize<'a>(&'a self, call: &'a CallInfo) -> AuthFuture<'a> {
        Box::pin(async move {
            let peer = call
                .caller
                .ok_or_else(|| Refusal::new(Code::Unauthenticated, "the caller has no PeerId"))?;
            self.check(peer, Instant::now())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RateLimits {
        RateLimits {
            per_second: 10.0,
            burst: 20.0,
            per_minute: 100,
            per_hour: 1_000,
            blocks: vec![
                Duration::from_secs(300),
                Duration::from_secs(3_600),
                Duration::from_secs(86_400),
            ],
        }
    }

    #[test]
    fn bursts_then_blocks_that_escalate() {
        let limiter = RateLimitAuthorizer::new(limits());
        let peer = PeerId::random();
        let t0 = Instant::now();
        for _ in 0..20 {
            limiter.check(peer, t0).unwrap();
        }
        let refusal = limiter.check(peer, t0).unwrap_err();
        assert_eq!(refusal.code, Code::ResourceExhausted);
        assert!(
            refusal.reason.contains("blocked for 300 s (violation 1)"),
            "{}",
            refusal.reason
        );
        // Still blocked 4 minutes later, free after 5.
        assert!(limiter.check(peer, t0 + Duration::from_secs(240)).is_err());
        let t1 = t0 + Duration::from_secs(301);
        for _ in 0..20 {
            limiter.check(peer, t1).unwrap();
        }
        let refusal = limiter.check(peer, t1).unwrap_err();
        assert!(
            refusal.reason.contains("blocked for 3600 s (violation 2)"),
            "{}",
            refusal.reason
        );
        let t2 = t1 + Duration::from_secs(3_601);
        for _ in 0..20 {
            limiter.check(peer, t2).unwrap();
        }
        let refusal = limiter.check(peer, t2).unwrap_err();
        assert!(
            refusal.reason.contains("blocked for 86400 s (violation 3)"),
            "{}",
            refusal.reason
        );
        // Other peers are not affected.
        limiter.check(PeerId::random(), t2).unwrap();
    }

    #[test]
    fn sustained_rate_and_minute_limit() {
        let limiter = RateLimitAuthorizer::new(limits());
        let peer = PeerId::random();
        let t0 = Instant::now();
        // 10/s for 10 s stays within the bucket but hits 100 a minute.
        let mut refused_at = None;
        for i in 0..120u64 {
            if limiter
                .check(peer, t0 + Duration::from_millis(100 * i))
                .is_err()
            {
                refused_at = Some(i);
                break;
            }
        }
        assert_eq!(
            refused_at,
            Some(100),
            "the 101st call in a minute is refused"
        );
    }

    #[test]
    fn hour_limit() {
        let mut l = limits();
        l.per_minute = 10_000;
        let limiter = RateLimitAuthorizer::new(l);
        let peer = PeerId::random();
        let t0 = Instant::now();
        let mut refused_at = None;
        for i in 0..1_100u64 {
            if limiter
                .check(peer, t0 + Duration::from_millis(200 * i))
                .is_err()
            {
                refused_at = Some(i);
                break;
            }
        }
        assert_eq!(refused_at, Some(1_000));
    }
}
