//! The hybrid logical clock that orders entries across authors (docs/protocol.md).
//!
//! A clock is `ms << 16 | counter`: wall-clock milliseconds since the Unix epoch in the high
//! bits, a counter in the low [`COUNTER_BITS`]. A node's next clock is the largest of its wall
//! time, one more than its own last clock, and one more than the largest clock it has seen —
//! but it follows a seen clock only up to [`MAX_CLOCK_AHEAD_MS`] ahead of its wall time, so an
//! entry with an absurd clock cannot drag everyone's next entries into the far future. A node
//! that writes before its first sync thus sorts at its wall time, after older history, and a
//! reply still sorts after what it answers.
//!
//! Format 1 entries (before rooms) carried a pure lamport clock: small numbers, so the whole
//! pre-rooms history sorts before every format 2 entry.

use crate::limits::{MAX_CLOCK, MAX_CLOCK_AHEAD_MS};

/// Bits of a clock below its milliseconds: the counter of entries within one millisecond.
pub const COUNTER_BITS: u32 = 16;

/// The clock at the start of millisecond `ms` (counter 0), saturating at [`MAX_CLOCK`].
pub fn at_ms(ms: u64) -> u64 {
    ms.checked_shl(COUNTER_BITS)
        .filter(|clock| clock >> COUNTER_BITS == ms)
        .map_or(MAX_CLOCK, |clock| clock.min(MAX_CLOCK))
}

/// The milliseconds part of `clock`.
pub fn ms_of(clock: u64) -> u64 {
    clock >> COUNTER_BITS
}

/// The clock of a node's next own entry, given its wall time `now_ms`, its own log's last
/// clock `last_own` (0 for a new log) and the largest clock it has seen `max_seen`:
/// `max(now_ms << 16, last_own + 1, min(max_seen, (now_ms + MAX_CLOCK_AHEAD_MS) << 16) + 1)`.
/// Always above `last_own` (clocks strictly increase in a log).
pub fn next(now_ms: u64, last_own: u64, max_seen: u64) -> u64 {
    let followed = max_seen.min(at_ms(now_ms.saturating_add(MAX_CLOCK_AHEAD_MS)));
    at_ms(now_ms)
        .max(last_own.saturating_add(1))
        .max(followed.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_000_000_000;

    #[test]
    fn a_first_entry_sorts_at_its_wall_time_after_older_history() {
        // Older history: written 6 minutes ago, and a lamport-era (format 1) clock.
        let older = at_ms(NOW - 6 * 60 * 1000) + 3;
        let late_joiner = next(NOW, 0, 0);
        assert_eq!(late_joiner, NOW << COUNTER_BITS);
        assert!(late_joiner > older);
        assert!(late_joiner > 1 << 40, "above every format 1 lamport");
        // Having seen that history changes nothing: wall time is ahead of it.
        assert_eq!(next(NOW, 0, older), late_joiner);
    }

    #[test]
    fn clocks_strictly_increase_in_a_log_even_when_wall_time_stalls_or_goes_back() {
        let mut last = 0;
        for now in [NOW, NOW, NOW, NOW - 5000, NOW + 1] {
            let clock = next(now, last, last);
            assert!(clock > last);
            last = clock;
        }
        assert_eq!(ms_of(last), NOW + 1);
    }

    #[test]
    fn a_reply_sorts_after_what_it_answers_from_a_clock_a_little_ahead() {
        let ahead = at_ms(NOW + 2000) + 7;
        assert_eq!(next(NOW, 0, ahead), ahead + 1);
    }

    #[test]
    fn a_far_future_clock_is_followed_no_further_than_ten_minutes() {
        let bound = at_ms(NOW + MAX_CLOCK_AHEAD_MS);
        for absurd in [bound + 1, at_ms(NOW + 86_400_000), MAX_CLOCK] {
            assert_eq!(next(NOW, 0, absurd), bound + 1);
        }
        // Its own log's clock is never gone back on, however far ahead.
        assert_eq!(next(NOW, MAX_CLOCK - 1, 0), MAX_CLOCK);
    }

    #[test]
    fn absurd_wall_times_saturate() {
        assert_eq!(at_ms(u64::MAX), MAX_CLOCK);
        assert_eq!(at_ms(MAX_CLOCK), MAX_CLOCK);
        assert_eq!(ms_of(at_ms(NOW) + 5), NOW);
    }
}
