//! Backpressure: how many engine commands a partition leader accepts at once.
//!
//! An AIMD limit, as Zeebe's default: every reply released within `request_timeout_ms` of its
//! command's arrival lets the limit grow by one (when at least half of it is in use); a slower
//! reply, or a command dropped without a reply, shrinks it by `backoff_ratio`. A command that
//! would exceed the limit is refused at once (the gateway answers `RESOURCE_EXHAUSTED`), except
//! job completions and failures: they finish work already in the system, so refusing them would
//! only make things worse.
//!
//! The configuration's `backpressure.*` keys (see [`crate::config::BackpressureConfig`]) become
//! a [`LimiterConfig`]: `backpressure.enabled: false` keeps the limiter counting (for the
//! metrics) but refusing nothing, and `algorithm: fixed` is an AIMD limit pinned to one value.

use std::cell::Cell;

/// A partition's limiter: what [`AimdLimiter::new`] takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// False: every command is admitted; commands in flight are still counted and the limit
    /// still moves, so the metrics show what the limit would be.
    pub enabled: bool,
    /// The limit and how it moves.
    pub aimd: AimdConfig,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            aimd: AimdConfig::default(),
        }
    }
}

/// Zeebe's AIMD defaults. [`AimdLimiter::new`] asserts `1 <= min_limit <= initial_limit <=
/// max_limit` and `0 < backoff_ratio < 1`; the configuration checks the same before start-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdConfig {
    /// Commands in flight allowed at start.
    pub initial_limit: u32,
    /// The limit never shrinks below this.
    pub min_limit: u32,
    /// The limit never grows above this.
    pub max_limit: u32,
    /// A reply slower than this counts as a drop.
    pub request_timeout_ms: u64,
    /// What the limit is multiplied by on a drop.
    pub backoff_ratio: f64,
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            initial_limit: 100,
            min_limit: 1,
            max_limit: 1000,
            request_timeout_ms: 200,
            backoff_ratio: 0.9,
        }
    }
}

impl AimdConfig {
    /// A limit that never moves: `backpressure.algorithm: fixed`.
    #[must_use]
    pub fn fixed(limit: u32) -> Self {
        Self {
            initial_limit: limit,
            min_limit: limit,
            max_limit: limit,
            ..Self::default()
        }
    }
}

/// The limiter of one partition (single-threaded: it lives on the partition's shard).
#[derive(Debug)]
pub struct AimdLimiter {
    config: AimdConfig,
    /// `backpressure.enabled`: false refuses nothing.
    enabled: bool,
    limit: Cell<f64>,
    in_flight: Cell<u32>,
    /// Commands refused because the limit was reached.
    refused: Cell<u64>,
}

impl AimdLimiter {
    #[must_use]
    pub fn new(config: LimiterConfig) -> Self {
        let LimiterConfig {
            enabled,
            aimd: config,
        } = config;
        assert!(config.min_limit >= 1 && config.min_limit <= config.initial_limit);
        assert!(config.initial_limit <= config.max_limit);
        assert!(config.backoff_ratio > 0.0 && config.backoff_ratio < 1.0);
        Self {
            limit: Cell::new(f64::from(config.initial_limit)),
            config,
            enabled,
            in_flight: Cell::new(0),
            refused: Cell::new(0),
        }
    }

    /// Takes a slot for a command; false when the limit is reached (the command is refused).
    /// `exempt` commands (job completions and failures) always get one, and so does every
    /// command when backpressure is disabled.
    pub fn try_acquire(&self, exempt: bool) -> bool {
        if self.enabled && !exempt && f64::from(self.in_flight.get()) >= self.limit.get().floor() {
            self.refused.set(self.refused.get() + 1);
            return false;
        }
        self.in_flight.set(self.in_flight.get() + 1);
        true
    }

    /// Gives a slot back: `latency_ms` from arrival to reply, or `None` when the command was
    /// dropped without a reply (leadership lost, shutdown).
    pub fn release(&self, latency_ms: Option<u64>) {
        let in_flight = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(in_flight);
        let limit = self.limit.get();
        let next = match latency_ms {
            Some(ms) if ms <= self.config.request_timeout_ms => {
                if f64::from(in_flight + 1) * 2.0 >= limit {
                    limit + 1.0
                } else {
                    limit
                }
            }
            _ => limit * self.config.backoff_ratio,
        };
        self.limit.set(next.clamp(
            f64::from(self.config.min_limit),
            f64::from(self.config.max_limit),
        ));
    }

    /// The current limit.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to min_limit..=max_limit, both u32"
    )]
    pub fn limit(&self) -> u32 {
        self.limit.get().floor() as u32
    }

    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    #[must_use]
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: AimdConfig = AimdConfig {
        initial_limit: 4,
        min_limit: 2,
        max_limit: 6,
        request_timeout_ms: 100,
        backoff_ratio: 0.5,
    };

    fn small() -> AimdLimiter {
        AimdLimiter::new(LimiterConfig {
            enabled: true,
            aimd: SMALL,
        })
    }

    #[test]
    fn refuses_above_the_limit_but_admits_exempt_commands() {
        let limiter = small();
        for _ in 0..4 {
            assert!(limiter.try_acquire(false));
        }
        assert!(!limiter.try_acquire(false), "the fifth is refused");
        assert_eq!(limiter.refused(), 1);
        assert!(limiter.try_acquire(true), "a job completion always gets in");
        assert_eq!(limiter.in_flight(), 5);
    }

    #[test]
    fn fast_replies_grow_the_limit_up_to_its_maximum() {
        let limiter = small();
        for _ in 0..20 {
            for _ in 0..limiter.limit() {
                assert!(limiter.try_acquire(false));
            }
            while limiter.in_flight() > 0 {
                limiter.release(Some(5));
            }
        }
        assert_eq!(limiter.limit(), 6);
    }

    #[test]
    fn slow_replies_and_drops_shrink_it_down_to_its_minimum() {
        let limiter = small();
        assert!(limiter.try_acquire(false));
        limiter.release(Some(500));
        assert_eq!(limiter.limit(), 2, "4 * 0.5");
        assert!(limiter.try_acquire(false));
        limiter.release(None);
        assert_eq!(limiter.limit(), 2, "never below the minimum");
    }

    #[test]
    fn an_idle_partition_does_not_grow_its_limit() {
        let limiter = small();
        // One command at a time uses a quarter of the limit: no reason to raise it.
        for _ in 0..10 {
            assert!(limiter.try_acquire(false));
            limiter.release(Some(1));
        }
        assert_eq!(limiter.limit(), 4);
    }

    #[test]
    fn a_disabled_limiter_refuses_nothing_but_still_counts() {
        let limiter = AimdLimiter::new(LimiterConfig {
            enabled: false,
            aimd: SMALL,
        });
        for _ in 0..100 {
            assert!(limiter.try_acquire(false));
        }
        assert_eq!(limiter.in_flight(), 100);
        assert_eq!(limiter.refused(), 0);
        limiter.release(Some(500));
        assert_eq!(limiter.limit(), 2, "the limit still moves, for the metrics");
        assert!(limiter.try_acquire(false));
    }

    #[test]
    fn a_fixed_limit_never_moves() {
        let limiter = AimdLimiter::new(LimiterConfig {
            enabled: true,
            aimd: AimdConfig::fixed(3),
        });
        for _ in 0..3 {
            assert!(limiter.try_acquire(false));
        }
        assert!(!limiter.try_acquire(false));
        limiter.release(None);
        limiter.release(Some(1));
        limiter.release(Some(1));
        assert_eq!(limiter.limit(), 3);
    }
}
