//! Per-peer rate limits: one token-bucket type for every gate.
//!
//! A [`RateLimit`] is a sustained rate and a burst; a [`TokenBucket`] holds
//! one peer's tokens under it. The DHT's record protocol and pubsub take one
//! token per inbound request or message; a peer whose bucket is empty is
//! refused until it refills. [`Offences`] turns repeated violations into
//! blocks that grow with each one (the RPC rate limiter's 5 min, 1 h, 24 h).

use std::time::{Duration, Instant};

/// A token-bucket limit: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed in a burst.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 200.0,
            burst: 400.0,
        }
    }
}

/// One peer's tokens under a [`RateLimit`]. A new bucket is full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            last: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.last = now;
    }

    /// Takes one token if there is one; `false` means "over the limit".
    pub fn try_take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely by `now` (it can be forgotten).
    pub fn is_full(&self, limit: RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * limit.per_second >= limit.burst
    }
}

/// Blocks of 5 min, 1 h and 24 h for a first, second and further violation
/// (the Python mesh's RPC rate limiter's).
pub fn escalating_blocks() -> Vec<Duration> {
    vec![
        Duration::from_secs(300),
        Duration::from_secs(3_600),
        Duration::from_secs(86_400),
    ]
}

/// One peer's violations and the block they earned: the n-th violation
/// blocks for the n-th of a list of periods (the last one repeating).
#[derive(Debug, Clone, Copy, Default)]
pub struct Offences {
    strikes: usize,
    blocked_until: Option<Instant>,
}

impl Offences {
    /// How long the peer stays blocked after `now` (`None`: not blocked).
    pub fn blocked_for(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until.duration_since(now))
    }

    /// Whether a block ran out by `now` (and is cleared); the strikes stay.
    pub fn lift_expired(&mut self, now: Instant) -> bool {
        match self.blocked_until {
            Some(until) if until <= now => {
                self.blocked_until = None;
                true
            }
            _ => false,
        }
    }

    /// Counts one violation at `now`: the peer is blocked for the period of
    /// this strike (`blocks[strikes - 1]`, or the last of `blocks`), returned.
    pub fn strike(&mut self, blocks: &[Duration], now: Instant) -> Duration {
        self.strikes += 1;
        let block = blocks
            .get(self.strikes - 1)
            .or(blocks.last())
            .copied()
            .unwrap_or(Duration::ZERO);
        self.blocked_until = Some(now + block);
        block
    }

    /// Violations so far.
    pub fn strikes(&self) -> usize {
        self.strikes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_grow_with_each_violation() {
        let blocks = [Duration::from_secs(5), Duration::from_secs(60)];
        let t0 = Instant::now();
        let mut o = Offences::default();
        assert_eq!(o.blocked_for(t0), None);
        assert_eq!(o.strike(&blocks, t0), Duration::from_secs(5));
        assert_eq!(
            o.blocked_for(t0 + Duration::from_secs(1)),
            Some(Duration::from_secs(4))
        );
        assert!(!o.lift_expired(t0 + Duration::from_secs(1)));
        assert!(o.lift_expired(t0 + Duration::from_secs(5)));
        assert_eq!(
            o.strike(&blocks, t0 + Duration::from_secs(6)),
            Duration::from_secs(60)
        );
        assert_eq!(
            o.strike(&blocks, t0 + Duration::from_secs(70)),
            Duration::from_secs(60),
            "the last repeats"
        );
        assert_eq!(o.strikes(), 3);
    }

    #[test]
    fn burst_then_sustained_rate() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(limit, t0);
        assert!(b.try_take(limit, t0));
        assert!(b.try_take(limit, t0));
        assert!(b.try_take(limit, t0));
        assert!(!b.try_take(limit, t0), "the burst is used up");
        assert!(!b.is_full(limit, t0));
        // 10/s: one token back after 100 ms, not before.
        assert!(!b.try_take(limit, t0 + Duration::from_millis(50)));
        assert!(b.try_take(limit, t0 + Duration::from_millis(160)));
        assert!(!b.try_take(limit, t0 + Duration::from_millis(160)));
        // Refilled, but never past the burst.
        let later = t0 + Duration::from_secs(10);
        assert!(b.is_full(limit, later));
        for _ in 0..3 {
            assert!(b.try_take(limit, later));
        }
        assert!(!b.try_take(limit, later));
    }
}
