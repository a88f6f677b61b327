//! Warnings about peers, authors, listeners and failed connections, aggregated so that a
//! repeated problem is said once: the first warning of a cause about a subject is said at once;
//! repeats within [`WINDOW`] are counted and said as one summary when the window ends ("… 13
//! more entries dated ahead of your clock from bob in the last 30 s", or a
//! [`Event::ConnectionFailed`] with its `count`). While repeats keep coming, one summary per
//! window. A connection that is made forgets the failures of its target, so the next one is said
//! at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::dial::ConnectFailure;
use crate::node::Event;

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
    /// A frame on a peer's lane stalled midway and the lane was dropped.
    Stalled,
    /// A peer speaks another protocol version and was disconnected.
    Incompatible,
    /// A peer proved membership of none of our rooms and was disconnected.
    NoSharedRoom,
    /// A listener failed (the subject is its address).
    Listening,
    /// A relay could not be reached or refused us (the subject is its address).
    Relay,
}

impl Cause {
    /// The repeats, in words, for a summary, and how the subject is named after them.
    fn repeats(self) -> (&'static str, &'static str) {
        match self {
            Cause::ClockAhead => ("entries dated ahead of your clock", "from"),
            Cause::Rejected => ("rejected entries", "from"),
            Cause::Misbehaved => ("disconnections for misbehaviour", "from"),
            Cause::Stalled => ("stalled lanes", "from"),
            Cause::Incompatible => ("connections of another protocol version", "from"),
            Cause::NoSharedRoom => ("connections sharing no room", "with"),
            Cause::Listening => ("errors", "listening on"),
            Cause::Relay => ("failures", "at relay"),
        }
    }
}

/// What a window counts: a warning, or failed connections for one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Warning(Cause),
    /// By [`ConnectFailure::code`].
    Failure(&'static str),
}

/// What a summary says: a warning's words, or the latest failure of a connection.
#[derive(Debug)]
enum Topic {
    Warning(Cause),
    Failure {
        incoming: bool,
        reason: ConnectFailure,
    },
}

impl Topic {
    fn kind(&self) -> Kind {
        match self {
            Topic::Warning(cause) => Kind::Warning(*cause),
            Topic::Failure { reason, .. } => Kind::Failure(reason.code()),
        }
    }
}

/// Repeats counted since a warning was last said.
#[derive(Debug)]
struct Window {
    since: Instant,
    more: u64,
    topic: Topic,
}

/// See the module docs. Holds at most [`MAX_OPEN`] windows.
#[derive(Debug)]
pub struct Warnings {
    open: HashMap<(String, Kind), Window>,
    /// How long repeats are counted before a summary ([`WINDOW`] unless configured).
    window: Duration,
}

impl Default for Warnings {
    fn default() -> Self {
        Self::new(WINDOW)
    }
}

impl Warnings {
    /// Warnings whose repeats are counted for `window` before a summary is said.
    pub fn new(window: Duration) -> Self {
        Warnings {
            open: HashMap::new(),
            window,
        }
    }

    /// `count` occurrences (at least one) of `cause` about `subject` (a name as shown):
    /// what to say now. `message` words the first one; it is not called for a repeat.
    pub fn report(
        &mut self,
        now: Instant,
        subject: &str,
        cause: Cause,
        count: u64,
        message: impl FnOnce() -> String,
    ) -> Vec<Event> {
        let Some(mut say) = self.note(now, subject, Topic::Warning(cause), count) else {
            return Vec::new();
        };
        say.push(Event::Warning { message: message() });
        say
    }

    /// A connection to or from `target` failed for `reason`: what to say now.
    pub fn report_failure(
        &mut self,
        now: Instant,
        target: &str,
        incoming: bool,
        reason: ConnectFailure,
    ) -> Vec<Event> {
        let topic = Topic::Failure {
            incoming,
            reason: reason.clone(),
        };
        let Some(mut say) = self.note(now, target, topic, 1) else {
            return Vec::new();
        };
        say.push(Event::ConnectionFailed {
            target: target.to_owned(),
            incoming,
            reason,
            count: 1,
        });
        say
    }

    /// A connection to or from `target` is up: its failures are forgotten, unsaid repeats
    /// included, so that its next failure is said at once.
    pub fn connected(&mut self, target: &str) {
        self.open
            .retain(|(subject, kind), _| subject != target || matches!(kind, Kind::Warning(_)));
    }

    /// Notes `count` occurrences of `topic` about `subject`: `None` for a repeat; else a window
    /// is opened, and the summaries of any closed early to make room are to be said first.
    fn note(
        &mut self,
        now: Instant,
        subject: &str,
        topic: Topic,
        count: u64,
    ) -> Option<Vec<Event>> {
        let key = (subject.to_owned(), topic.kind());
        if let Some(window) = self.open.get_mut(&key) {
            window.more += count.max(1);
            window.topic = topic;
            return None;
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
            say.extend(summary(&oldest.0, &window, now));
        }
        self.open.insert(
            key,
            Window {
                since: now,
                more: 0,
                topic,
            },
        );
        Some(say)
    }

    /// How many subjects other than `subject` have a window open for `cause` (say, how many
    /// other authors' clocks are ahead of ours right now).
    pub fn others_open(&self, cause: Cause, subject: &str) -> usize {
        self.open
            .keys()
            .filter(|(s, kind)| *kind == Kind::Warning(cause) && s != subject)
            .count()
    }

    /// Summaries of the windows that ended by `now`. A window without repeats closes, so the
    /// next warning of its kind is said at once; one with repeats is summed up and reopened.
    pub fn due(&mut self, now: Instant) -> Vec<Event> {
        let mut say = Vec::new();
        self.open.retain(|(subject, _), window| {
            if now.duration_since(window.since) < self.window {
                return true;
            }
            let Some(event) = summary(subject, window, now) else {
                return false;
            };
            say.push(event);
            window.since = now;
            window.more = 0;
            true
        });
        say
    }
}

/// The summary of a window's repeats, if it has any.
fn summary(subject: &str, window: &Window, now: Instant) -> Option<Event> {
    if window.more == 0 {
        return None;
    }
    Some(match &window.topic {
        Topic::Warning(cause) => {
            let (repeats, of) = cause.repeats();
            Event::Warning {
                message: format!(
                    "… {} more {repeats} {of} {subject} in the last {} s",
                    window.more,
                    now.duration_since(window.since).as_secs()
                ),
            }
        }
        Topic::Failure { incoming, reason } => Event::ConnectionFailed {
            target: subject.to_owned(),
            incoming: *incoming,
            reason: reason.clone(),
            count: window.more,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warnings' words (and any other event, debug-printed).
    fn words(said: Vec<Event>) -> Vec<String> {
        said.into_iter()
            .map(|event| match event {
                Event::Warning { message } => message,
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn failed(target: &str, reason: ConnectFailure, count: u64) -> Event {
        Event::ConnectionFailed {
            target: target.into(),
            incoming: false,
            reason,
            count,
        }
    }

    #[test]
    fn the_first_is_said_at_once_and_repeats_are_summed_up_once_per_window() {
        let mut warnings = Warnings::default();
        let start = Instant::now();
        let first = warnings.report(start, "bob", Cause::ClockAhead, 1, || "ahead".into());
        assert_eq!(words(first), ["ahead"]);
        for i in 1..14u64 {
            let at = start + Duration::from_millis(i * 100);
            let said = warnings.report(at, "bob", Cause::ClockAhead, 1, || unreachable!());
            assert!(said.is_empty());
        }
        assert!(warnings.due(start + WINDOW / 2).is_empty());
        assert_eq!(
            words(warnings.due(start + WINDOW)),
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
        assert_eq!(words(again), ["ahead again"]);
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
    fn a_failure_is_said_once_then_summed_up_with_a_count_and_at_once_after_a_connection() {
        use ConnectFailure::{Refused, TimedOut};
        let mut warnings = Warnings::default();
        let now = Instant::now();
        let redial = Duration::from_millis(500);
        assert_eq!(
            warnings.report_failure(now, "a", false, Refused),
            [failed("a", Refused, 1)]
        );
        assert!(
            warnings
                .report_failure(now + redial, "a", false, Refused)
                .is_empty()
        );
        assert_eq!(
            warnings.report_failure(now, "a", false, TimedOut),
            [failed("a", TimedOut, 1)],
            "another reason"
        );
        assert_eq!(
            warnings.report_failure(now, "b", false, Refused),
            [failed("b", Refused, 1)],
            "another target"
        );
        assert!(
            warnings
                .report_failure(now + WINDOW / 2, "a", false, Refused)
                .is_empty()
        );
        assert!(
            warnings
                .report_failure(now + WINDOW, "a", false, Refused)
                .is_empty()
        );
        assert_eq!(
            warnings.due(now + WINDOW),
            [failed("a", Refused, 3)],
            "summed up when the window ends, counting the unsaid ones"
        );
        // The summary gives the latest reason of its kind.
        let later = now + WINDOW + redial;
        let other = |words: &str| ConnectFailure::Other(words.into());
        assert_eq!(
            warnings.report_failure(later, "c", false, other("first")),
            [failed("c", other("first"), 1)]
        );
        assert!(
            warnings
                .report_failure(later, "c", false, other("latest"))
                .is_empty()
        );
        assert_eq!(
            warnings.due(later + WINDOW),
            [failed("c", other("latest"), 1)]
        );
        // A connection forgets a target's failures, unsaid ones included, not its warnings.
        let last = later + WINDOW;
        assert_eq!(warnings.report_failure(last, "a", false, Refused).len(), 1);
        assert!(
            warnings
                .report_failure(last, "a", false, Refused)
                .is_empty()
        );
        assert_eq!(
            warnings
                .report(last, "a", Cause::Misbehaved, 1, || "bad".into())
                .len(),
            1
        );
        warnings.connected("a");
        assert_eq!(
            warnings.report_failure(last, "a", false, Refused),
            [failed("a", Refused, 1)],
            "said at once after a connection"
        );
        assert!(
            warnings
                .report(last, "a", Cause::Misbehaved, 1, || unreachable!())
                .is_empty()
        );
        assert_eq!(
            words(warnings.due(last + WINDOW)),
            ["… 1 more disconnections for misbehaviour from a in the last 30 s"],
            "the forgotten failure is not summed up"
        );
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
            words(said),
            [
                "… 1 more disconnections for misbehaviour from peer 0 in the last 1 s",
                "new"
            ]
        );
    }

    #[test]
    fn failures_share_the_bound() {
        let mut warnings = Warnings::default();
        let now = Instant::now();
        let refused = ConnectFailure::Refused;
        for i in 0..MAX_OPEN {
            let target = i.to_string();
            let said = warnings.report_failure(now, &target, true, refused.clone());
            assert_eq!(said.len(), 1);
        }
        // Nothing is lost: one more target is said, a window without repeats makes room.
        let said = warnings.report_failure(now, "one more", false, refused.clone());
        assert_eq!(said, [failed("one more", refused.clone(), 1)]);
        assert_eq!(warnings.open.len(), MAX_OPEN);
        assert!(warnings.due(now + WINDOW).is_empty(), "no repeats");
        assert!(warnings.open.is_empty(), "quiet windows close");
        assert_eq!(
            warnings.report_failure(now + WINDOW, "one more", false, refused.clone()),
            [failed("one more", refused, 1)]
        );
        assert_eq!(warnings.open.len(), 1);
    }
}
