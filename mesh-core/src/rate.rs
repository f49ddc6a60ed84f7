//! Per-peer rate limits: one token-bucket type for every gate.
//!
//! A [`RateLimit`] is a sustained rate and a burst; a [`TokenBucket`] holds
//! one peer's tokens under it. The DHT's record protocol and pubsub take one
//! token per inbound request or message; a peer whose bucket is empty is
//! refused until it refills.

use std::time::Instant;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
