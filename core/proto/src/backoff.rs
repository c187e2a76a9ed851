//! The one backoff policy of every retry loop that waits between attempts: exponential, from a
//! floor, doubling up to a cap.
//!
//! [`Backoff`] only computes delays; it never sleeps and never reads a clock, so the caller
//! sleeps on whatever clock it uses (tokio's in async code, a stored `Instant` in a compute
//! loop), and it is tested without waiting. Who retries what:
//!
//! | loop | floor | cap | reset |
//! | --- | --- | --- | --- |
//! | worker connect to the dispatcher (`worker/src/control.rs`) | 50 ms | 1 s | — (deadline) |
//! | client connect to the dispatcher (`client/src/lib.rs`) | 50 ms | 500 ms | — (deadline) |
//! | client fetch of a split (`client/src/fetch.rs`) | 20 ms | 100 ms | on a successful fetch |
//! | worker production after a transient error (`worker/src/engine.rs`) | 200 ms | 5 s | on a produced chunk |
//! | dispatcher journal write after a failed write (`dispatcher/src/durable.rs`) | 100 ms | 2 s | per batch |
//! | status stream reconnect (`core/cluster/src/follow.rs`; dashboard, scenario waits) | 250 ms / 100 ms | 4 s / 100 ms | on a status |

use std::time::Duration;

/// Exponential backoff: the first delay is the floor, each next one doubles, none exceeds the
/// cap. [`Backoff::reset`] starts again from the floor (after a success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    floor: Duration,
    cap: Duration,
    next: Duration,
    attempts: u32,
}

impl Backoff {
    /// Delays from `floor`, doubling up to `cap` (a cap below the floor is raised to it).
    pub const fn new(floor: Duration, cap: Duration) -> Backoff {
        let cap = if cap.as_nanos() < floor.as_nanos() {
            floor
        } else {
            cap
        };
        Backoff {
            floor,
            cap,
            next: floor,
            attempts: 0,
        }
    }

    /// The delay to wait now; the one after it is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.cap);
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    /// The delay [`next_delay`](Backoff::next_delay) would return, without taking it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Like [`next_delay`](Backoff::next_delay), but only if waiting it still ends before a
    /// deadline `remaining` away: `None` means give up now (nothing is taken).
    pub fn next_delay_within(&mut self, remaining: Duration) -> Option<Duration> {
        (self.next < remaining).then(|| self.next_delay())
    }

    /// Starts again from the floor (after a success).
    pub fn reset(&mut self) {
        self.next = self.floor;
        self.attempts = 0;
    }

    /// Delays taken since the start or the last [`reset`](Backoff::reset): the failures in a
    /// row, for logs.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn take(backoff: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect()
    }

    #[test]
    fn doubles_from_the_floor_up_to_the_cap() {
        assert_eq!(
            take(&mut Backoff::new(ms(50), ms(1000)), 7),
            [50, 100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(
            take(&mut Backoff::new(ms(20), ms(100)), 5),
            [20, 40, 80, 100, 100]
        );
        // The worker's production retry: 100 ms · 2^n for n = 1.., up to 5 s.
        assert_eq!(
            take(&mut Backoff::new(ms(200), Duration::from_secs(5)), 8),
            [200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
    }

    #[test]
    fn reset_starts_again_from_the_floor_and_counts_attempts() {
        let mut backoff = Backoff::new(ms(100), ms(2000));
        assert_eq!(backoff.attempts(), 0);
        assert_eq!(take(&mut backoff, 3), [100, 200, 400]);
        assert_eq!((backoff.attempts(), backoff.peek()), (3, ms(800)));
        backoff.reset();
        assert_eq!((backoff.attempts(), backoff.peek()), (0, ms(100)));
        assert_eq!(take(&mut backoff, 2), [100, 200]);
    }

    #[test]
    fn a_delay_that_would_end_at_or_past_the_deadline_is_not_taken() {
        let mut backoff = Backoff::new(ms(50), ms(500));
        assert_eq!(backoff.next_delay_within(ms(51)), Some(ms(50)));
        assert_eq!(backoff.next_delay_within(ms(100)), None);
        assert_eq!(backoff.peek(), ms(100), "a refused delay is not taken");
        assert_eq!(backoff.next_delay_within(Duration::ZERO), None);
        assert_eq!(backoff.next_delay_within(ms(101)), Some(ms(100)));
    }

    #[test]
    fn a_cap_below_the_floor_and_huge_delays_do_not_overflow() {
        assert_eq!(take(&mut Backoff::new(ms(300), ms(100)), 2), [300, 300]);
        let mut huge = Backoff::new(Duration::MAX / 2 + ms(1), Duration::MAX);
        huge.next_delay();
        assert_eq!(huge.next_delay(), Duration::MAX);
    }
}
