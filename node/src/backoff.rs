//! The wait between redials: it doubles with each dial, up to a limit, and starts over once a
//! connection is made. Used for `--peer` targets ([`Redialer`](crate::dial::Redialer)) and for
//! peers found on the LAN ([`Discovery`](crate::discovery::Discovery)). Deterministic: it
//! hands out durations; the caller adds them to its own `now`.

use std::time::Duration;

/// A wait from `min` that doubles each time it is taken, up to `max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The wait [`Backoff::next`] gives next.
    current: Duration,
}

impl Backoff {
    /// A backoff whose first wait is `min` and whose longest is `max` (at least `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The wait before the next try; the one after it is twice as long, at most `max`.
    pub fn next(&mut self) -> Duration {
        let wait = self.current;
        self.current = wait.saturating_mul(2).min(self.max);
        wait
    }

    /// Starts over from `min` (a connection was made).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_up_to_the_limit_and_a_reset_starts_over() {
        let mut backoff = Backoff::new(500 * MS, 3000 * MS);
        let waits: Vec<Duration> = (0..6).map(|_| backoff.next()).collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 3000, 3000, 3000].map(|ms| ms * MS),
            "doubles, capped at the limit"
        );
        backoff.reset();
        assert_eq!(backoff.next(), 500 * MS);
        assert_eq!(backoff.next(), 1000 * MS);
    }

    #[test]
    fn a_limit_below_the_first_wait_is_the_first_wait() {
        let mut backoff = Backoff::new(500 * MS, 100 * MS);
        assert_eq!(backoff.next(), 500 * MS);
        assert_eq!(backoff.next(), 500 * MS);
    }

    #[test]
    fn a_huge_limit_saturates_instead_of_overflowing() {
        let mut backoff = Backoff::new(Duration::MAX / 2 + MS, Duration::MAX);
        backoff.next();
        assert_eq!(backoff.next(), Duration::MAX);
        assert_eq!(backoff.next(), Duration::MAX);
    }
}
