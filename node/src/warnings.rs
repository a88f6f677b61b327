//! Warnings about peers and authors, aggregated so that a repeated problem is said once: the
//! first warning of a cause about a subject is said at once; repeats within [`WINDOW`] are
//! counted and said as one summary when the window ends ("… 13 more entries dated ahead of your
//! clock from bob in the last 30 s"). While repeats keep coming, one summary per window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long repeats of a warning are counted before a summary is said.
pub const WINDOW: Duration = Duration::from_secs(30);
/// The most (subject, cause) pairs counted at once; beyond, the oldest is summed up early.
const MAX_OPEN: usize = 256;

/// What a warning is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// An author's entries are dated ahead of our clock.
    ClockAhead,
    /// A peer relayed entries that were rejected (not misbehaviour: the author's doing).
    Rejected,
    /// A peer sent what no honest peer sends and was disconnected.
    Misbehaved,
    /// A peer's push stream stalled mid-frame and was dropped.
    Stalled,
    /// A peer refused one of our requests.
    Refused,
}

impl Cause {
    /// The repeats, in words, for a summary.
    fn repeats(self) -> &'static str {
        match self {
            Cause::ClockAhead => "entries dated ahead of your clock",
            Cause::Rejected => "rejected entries",
            Cause::Misbehaved => "disconnections for misbehaviour",
            Cause::Stalled => "stalled push streams",
            Cause::Refused => "refused requests",
        }
    }
}

/// Repeats counted since a warning was last said.
#[derive(Debug)]
struct Window {
    since: Instant,
    more: u64,
}

/// See the module docs. Holds at most [`MAX_OPEN`] windows.
#[derive(Debug, Default)]
pub struct Warnings {
    open: HashMap<(String, Cause), Window>,
}

impl Warnings {
    /// `count` occurrences (at least one) of `cause` about `subject` (a name as shown):
    /// what to say now. `message` words the first one; it is not called for a repeat.
    pub fn report(
        &mut self,
        now: Instant,
        subject: &str,
        cause: Cause,
        count: u64,
        message: impl FnOnce() -> String,
    ) -> Vec<String> {
        let key = (subject.to_owned(), cause);
        if let Some(window) = self.open.get_mut(&key) {
            window.more += count.max(1);
            return Vec::new();
        }
        let mut say = Vec::new();
        if self.open.len() >= MAX_OPEN {
            say = self.due(now);
        }
        if self.open.len() >= MAX_OPEN
            && let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, window)| window.since)
                .map(|(key, _)| key.clone())
            && let Some(window) = self.open.remove(&oldest)
        {
            say.extend(summary(&oldest, &window, now));
        }
        self.open.insert(
            key,
            Window {
                since: now,
                more: 0,
            },
        );
        say.push(message());
        say
    }

    /// How many subjects other than `subject` have a window open for `cause` (say, how many
    /// other authors' clocks are ahead of ours right now).
    pub fn others_open(&self, cause: Cause, subject: &str) -> usize {
        self.open
            .keys()
            .filter(|(s, c)| *c == cause && s != subject)
            .count()
    }

    /// Summaries of the windows that ended by `now`. A window without repeats closes, so the
    /// next warning of its kind is said at once; one with repeats is summed up and reopened.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut say = Vec::new();
        self.open.retain(|key, window| {
            if now.duration_since(window.since) < WINDOW {
                return true;
            }
            let Some(line) = summary(key, window, now) else {
                return false;
            };
            say.push(line);
            *window = Window {
                since: now,
                more: 0,
            };
            true
        });
        say
    }
}

fn summary((subject, cause): &(String, Cause), window: &Window, now: Instant) -> Option<String> {
    (window.more > 0).then(|| {
        format!(
            "… {} more {} from {subject} in the last {} s",
            window.more,
            cause.repeats(),
            now.duration_since(window.since).as_secs()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_said_at_once_and_repeats_are_summed_up_once_per_window() {
        let mut warnings = Warnings::default();
        let start = Instant::now();
        let first = warnings.report(start, "bob", Cause::ClockAhead, 1, || "ahead".into());
        assert_eq!(first, ["ahead"]);
        for i in 1..14u64 {
            let at = start + Duration::from_millis(i * 100);
            let said = warnings.report(at, "bob", Cause::ClockAhead, 1, || unreachable!());
            assert!(said.is_empty());
        }
        assert!(warnings.due(start + WINDOW / 2).is_empty());
        assert_eq!(
            warnings.due(start + WINDOW),
            ["… 13 more entries dated ahead of your clock from bob in the last 30 s"]
        );
        // Repeats in the next window: one more summary; then quiet, the window closes.
        warnings.report(
            start + WINDOW * 3 / 2,
            "bob",
            Cause::ClockAhead,
            5,
            || unreachable!(),
        );
        assert_eq!(warnings.due(start + WINDOW * 2).len(), 1);
        assert!(warnings.due(start + WINDOW * 3).is_empty());
        assert_eq!(warnings.others_open(Cause::ClockAhead, "carol"), 0);
        let again = warnings.report(start + WINDOW * 3, "bob", Cause::ClockAhead, 1, || {
            "ahead again".into()
        });
        assert_eq!(again, ["ahead again"]);
    }

    #[test]
    fn subjects_and_causes_are_counted_apart() {
        let mut warnings = Warnings::default();
        let now = Instant::now();
        assert_eq!(
            warnings
                .report(now, "bob", Cause::ClockAhead, 1, || "a".into())
                .len(),
            1
        );
        assert_eq!(
            warnings
                .report(now, "carol", Cause::ClockAhead, 1, || "b".into())
                .len(),
            1
        );
        assert_eq!(
            warnings
                .report(now, "bob", Cause::Rejected, 1, || "c".into())
                .len(),
            1
        );
        assert_eq!(warnings.others_open(Cause::ClockAhead, "bob"), 1);
        assert_eq!(warnings.others_open(Cause::ClockAhead, "dana"), 2);
    }

    #[test]
    fn the_state_is_bounded() {
        let mut warnings = Warnings::default();
        let start = Instant::now();
        for i in 0..MAX_OPEN as u64 {
            let at = start + Duration::from_millis(i);
            warnings.report(at, &format!("peer {i}"), Cause::Misbehaved, 1, || {
                "x".into()
            });
            warnings.report(at, &format!("peer {i}"), Cause::Misbehaved, 1, || {
                "x".into()
            });
        }
        // One more subject: the oldest window is summed up early to make room.
        let said = warnings.report(
            start + Duration::from_secs(1),
            "newcomer",
            Cause::Misbehaved,
            1,
            || "new".into(),
        );
        assert_eq!(warnings.open.len(), MAX_OPEN);
        assert_eq!(
            said,
            [
                "… 1 more disconnections for misbehaviour from peer 0 in the last 1 s",
                "new"
            ]
        );
    }
}
