//! The rules an entry must pass before it is stored.
//!
//! Storage calls [`check_next`] for an entry that would extend a log, and [`check_known`] for
//! one at a seq the log already holds. Both are pure: they look only at the room and the
//! entries given.

use crate::clock;
use crate::entry::{Author, Body, DecodeError, Entry, FORMAT_BEFORE_ROOMS, KeyError, VerifyError};
use crate::limits::{MAX_CLOCK, MAX_CLOCK_AHEAD_MS};
use crate::room::RoomId;

/// Why an entry was refused. Each variant is one way an entry can be wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidationError {
    /// The bytes are not a well-formed entry.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The entry is signed by another author than the log it was offered for.
    #[error("entry by {found:?} offered for the log of {expected:?}")]
    WrongAuthor {
        /// The log's author.
        expected: Author,
        /// The entry's author.
        found: Author,
    },
    /// The entry's seq is beyond the next one: entries in between are missing.
    #[error("gap: expected seq {expected}, got {found}")]
    Gap {
        /// The seq the log needs next.
        expected: u64,
        /// The seq offered.
        found: u64,
    },
    /// `prev` is not the hash of the log's last entry (or is present at seq 1).
    #[error("seq {seq} does not link to the previous entry")]
    WrongPrev {
        /// The offending entry's seq.
        seq: u64,
    },
    /// The entry names another room than the store's (an entry is only ever stored in the
    /// room it names), or it is a format 1 entry (written before rooms, naming none) where the
    /// log already holds a format 2 one: format 1 entries are accepted only as a log's prefix.
    #[error("seq {seq} belongs to another room")]
    WrongRoom {
        /// The offending entry's seq.
        seq: u64,
    },
    /// Seq 1 must be a profile entry.
    #[error("the first entry of a log must be a profile")]
    FirstNotProfile,
    /// The clock is beyond [`MAX_CLOCK`].
    #[error("seq {seq} has an absurd clock")]
    ClockTooLarge {
        /// The offending entry's seq.
        seq: u64,
    },
    /// The clock must grow along a log.
    #[error("seq {seq} has a clock no larger than its predecessor's")]
    ClockNotIncreasing {
        /// The offending entry's seq.
        seq: u64,
    },
    /// The author's key cannot sign: not a curve point, not canonically encoded, or of small
    /// order. No entry of that log is valid.
    #[error("the author's key {0}")]
    BadAuthorKey(KeyError),
    /// The signature does not verify (strictly) against the author's key.
    #[error("seq {seq} has an invalid signature")]
    BadSignature {
        /// The offending entry's seq.
        seq: u64,
    },
    /// A second, different, validly signed entry at a seq the log already holds.
    #[error("fork: two different signed entries at seq {seq}")]
    Fork {
        /// The seq with two entries.
        seq: u64,
    },
    /// The author forked before; nothing more is accepted from them.
    #[error("the author forked their log; no further entries are accepted")]
    AuthorFrozen,
}

/// Whether `entry` is dated more than [`MAX_CLOCK_AHEAD_MS`] after `now_ms` (the receiver's
/// wall time): its timestamp, or for a format 2 entry its clock's milliseconds. Not an error,
/// only worth a warning (the entry is ordered by its clock like any other).
pub fn is_far_future(entry: &Entry, now_ms: u64) -> bool {
    dated_ahead_ms(entry, now_ms) > MAX_CLOCK_AHEAD_MS
}

/// How far ahead of `now_ms` `entry` is dated, in ms (0 if not ahead): the later of its
/// timestamp and, for a format 2 entry, its clock's milliseconds.
pub fn dated_ahead_ms(entry: &Entry, now_ms: u64) -> u64 {
    let clock_ms = entry.room().map_or(0, |_| clock::ms_of(entry.clock()));
    entry.timestamp().max(clock_ms).saturating_sub(now_ms)
}

/// Checks that `entry` may be stored in `room`'s log of its author, given `held`: the entry
/// the log holds at the entry's seq, else the log's last entry (`None` for an empty log).
/// A format 2 entry must name `room`; a format 1 entry (which names none) is accepted only
/// while the log holds no format 2 entry at or before its seq (formats never go back in a log,
/// so `held` tells). Either way [`ValidationError::WrongRoom`].
pub fn check_room(
    room: RoomId,
    held: Option<&Entry>,
    entry: &Entry,
) -> Result<(), ValidationError> {
    let belongs = match entry.room() {
        Some(named) => named == room,
        None => held.is_none_or(|held| held.format() == FORMAT_BEFORE_ROOMS),
    };
    if belongs {
        Ok(())
    } else {
        Err(ValidationError::WrongRoom { seq: entry.seq() })
    }
}

/// Checks that `entry` is the valid next entry of `author`'s log in `room`, whose last entry
/// is `last`.
///
/// The signature is checked last, as it is the expensive part.
pub fn check_next(
    room: RoomId,
    author: Author,
    last: Option<&Entry>,
    entry: &Entry,
) -> Result<(), ValidationError> {
    check_link(room, author, last, entry)?;
    check_signature(entry)
}

/// Rule 6 of docs/protocol.md, 6.2: the author's key can sign, and the signature verifies
/// strictly.
fn check_signature(entry: &Entry) -> Result<(), ValidationError> {
    entry.verify().map_err(|e| match e {
        VerifyError::Key(key) => ValidationError::BadAuthorKey(key),
        VerifyError::Signature => ValidationError::BadSignature { seq: entry.seq() },
    })
}

/// Every rule of [`check_next`] but the signature.
///
/// For a contiguous run of entries this is enough for all but the newest: each entry's `prev`
/// is the hash of the whole envelope before it, signature included, so one valid signature on
/// the newest entry vouches, through the hash chain, for every byte of the run below it. See
/// [`newest_vouches_for_run`].
pub fn check_link(
    room: RoomId,
    author: Author,
    last: Option<&Entry>,
    entry: &Entry,
) -> Result<(), ValidationError> {
    if entry.author() != author {
        return Err(ValidationError::WrongAuthor {
            expected: author,
            found: entry.author(),
        });
    }
    check_room(room, last, entry)?;
    let expected = last.map_or(1, |last| last.seq() + 1);
    if entry.seq() != expected {
        return Err(ValidationError::Gap {
            expected,
            found: entry.seq(),
        });
    }
    if entry.prev() != last.map(Entry::hash) {
        return Err(ValidationError::WrongPrev { seq: entry.seq() });
    }
    match last {
        None if !matches!(entry.body(), Body::Profile { .. }) => {
            return Err(ValidationError::FirstNotProfile);
        }
        Some(last) if entry.clock() <= last.clock() => {
            return Err(ValidationError::ClockNotIncreasing { seq: entry.seq() });
        }
        _ => {}
    }
    if entry.clock() > MAX_CLOCK {
        return Err(ValidationError::ClockTooLarge { seq: entry.seq() });
    }
    Ok(())
}

/// For a run that passed [`check_link`] entry by entry: how many of its entries are vouched
/// for by signatures. Checks the newest signature first (one verification for an honest run);
/// a key that cannot sign refuses the whole run (all its entries share the author); only if
/// the newest signature fails are the entries checked one by one, and the count of the valid
/// prefix returned with the error for the first bad one.
pub fn newest_vouches_for_run(run: &[Entry]) -> (usize, Option<ValidationError>) {
    let Some(newest) = run.last() else {
        return (0, None);
    };
    match check_signature(newest) {
        Ok(()) => (run.len(), None),
        Err(bad_key @ ValidationError::BadAuthorKey(_)) => (0, Some(bad_key)),
        Err(_) => {
            let valid = run
                .iter()
                .take_while(|entry| entry.signature_is_valid())
                .count();
            (
                valid,
                Some(ValidationError::BadSignature {
                    seq: run[valid].seq(),
                }),
            )
        }
    }
}

/// Compares `entry` with `stored`, the entry `room`'s log already holds at the same seq:
/// `Ok` for the same entry (a duplicate, to be ignored), [`ValidationError::Fork`] for a
/// different validly signed one of this room. An entry of another room, or a format 1 entry
/// where a format 2 one is held, is [`ValidationError::WrongRoom`], never a fork: it is not a
/// second entry of this log.
pub fn check_known(room: RoomId, stored: &Entry, entry: &Entry) -> Result<(), ValidationError> {
    if stored.author() != entry.author() {
        return Err(ValidationError::WrongAuthor {
            expected: stored.author(),
            found: entry.author(),
        });
    }
    if stored.hash() == entry.hash() {
        return Ok(());
    }
    check_room(room, Some(stored), entry)?;
    check_signature(entry)?;
    Err(ValidationError::Fork { seq: entry.seq() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Draft, Hash, SigningKey};

    fn room() -> RoomId {
        RoomId::from_bytes([0xee; 32])
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn entry(key: &SigningKey, seq: u64, prev: Option<Hash>, clock: u64, body: Body) -> Entry {
        Entry::sign(
            key,
            Draft {
                room: room(),
                seq,
                prev,
                timestamp: 1,
                clock,
                body,
            },
        )
        .unwrap()
    }

    fn profile(key: &SigningKey) -> Entry {
        entry(
            key,
            1,
            None,
            1,
            Body::Profile {
                name: "alice".into(),
            },
        )
    }

    fn text_after(key: &SigningKey, last: &Entry, text: &str) -> Entry {
        let body = Body::Text { text: text.into() };
        entry(
            key,
            last.seq() + 1,
            Some(last.hash()),
            last.clock() + 1,
            body,
        )
    }

    #[test]
    fn valid_chain_passes() {
        let k = key(1);
        let first = profile(&k);
        let second = text_after(&k, &first, "hi");
        check_next(room(), Author::of(&k), None, &first).unwrap();
        check_next(room(), Author::of(&k), Some(&first), &second).unwrap();
    }

    #[test]
    fn gap_is_rejected() {
        let k = key(1);
        let first = profile(&k);
        let second = text_after(&k, &first, "a");
        let third = text_after(&k, &second, "b");
        assert_eq!(
            check_next(room(), Author::of(&k), Some(&first), &third),
            Err(ValidationError::Gap {
                expected: 2,
                found: 3
            })
        );
    }

    #[test]
    fn wrong_prev_is_rejected() {
        let k = key(1);
        let first = profile(&k);
        let bad = entry(
            &k,
            2,
            Some(Hash::of(b"elsewhere")),
            2,
            Body::Text { text: "x".into() },
        );
        assert_eq!(
            check_next(room(), Author::of(&k), Some(&first), &bad),
            Err(ValidationError::WrongPrev { seq: 2 })
        );
        let prev_at_one = entry(
            &k,
            1,
            Some(Hash::of(b"x")),
            1,
            Body::Profile { name: "a".into() },
        );
        assert_eq!(
            check_next(room(), Author::of(&k), None, &prev_at_one),
            Err(ValidationError::WrongPrev { seq: 1 })
        );
    }

    #[test]
    fn wrong_author_is_rejected() {
        let first = profile(&key(2));
        assert!(matches!(
            check_next(room(), Author::of(&key(1)), None, &first),
            Err(ValidationError::WrongAuthor { .. })
        ));
    }

    #[test]
    fn first_entry_must_be_a_profile() {
        let k = key(1);
        let first = entry(&k, 1, None, 1, Body::Text { text: "hi".into() });
        assert_eq!(
            check_next(room(), Author::of(&k), None, &first),
            Err(ValidationError::FirstNotProfile)
        );
    }

    #[test]
    fn clock_must_grow() {
        let k = key(1);
        let first = entry(&k, 1, None, 5, Body::Profile { name: "a".into() });
        let second = entry(
            &k,
            2,
            Some(first.hash()),
            5,
            Body::Text { text: "x".into() },
        );
        assert_eq!(
            check_next(room(), Author::of(&k), Some(&first), &second),
            Err(ValidationError::ClockNotIncreasing { seq: 2 })
        );
    }

    #[test]
    fn absurd_clock_is_rejected() {
        let k = key(1);
        let first = entry(
            &k,
            1,
            None,
            MAX_CLOCK + 1,
            Body::Profile { name: "a".into() },
        );
        assert_eq!(
            check_next(room(), Author::of(&k), None, &first),
            Err(ValidationError::ClockTooLarge { seq: 1 })
        );
    }

    #[test]
    fn bad_signature_is_rejected() {
        // Same author field, signed by someone else: build it by swapping the key bytes in.
        let honest = profile(&key(1));
        let forged_bytes = {
            let forger = profile(&key(2));
            let mut bytes = forger.envelope().to_vec();
            let at = bytes
                .windows(32)
                .position(|w| w == Author::of(&key(2)).as_bytes())
                .unwrap();
            bytes[at..at + 32].copy_from_slice(Author::of(&key(1)).as_bytes());
            bytes
        };
        let forged = Entry::decode(forged_bytes.into()).unwrap();
        assert_eq!(forged.author(), honest.author());
        assert_eq!(
            check_next(room(), Author::of(&key(1)), None, &forged),
            Err(ValidationError::BadSignature { seq: 1 })
        );
    }

    #[test]
    fn one_signature_vouches_for_a_run_and_a_bad_one_is_found() {
        let k = key(1);
        let first = profile(&k);
        let second = text_after(&k, &first, "a");
        let third = text_after(&k, &second, "b");
        let run = vec![first.clone(), second.clone(), third.clone()];
        assert_eq!(newest_vouches_for_run(&run), (3, None));
        // Same author field, another key's signature on the newest: only the prefix stands.
        let forged = {
            let other = SigningKey::from_bytes(&[9; 32]);
            let fake = Entry::sign(
                &other,
                Draft {
                    room: room(),
                    seq: 3,
                    prev: Some(second.hash()),
                    timestamp: 1,
                    clock: 3,
                    body: Body::Text { text: "x".into() },
                },
            )
            .unwrap();
            let mut bytes = fake.envelope().to_vec();
            let at = bytes
                .windows(32)
                .position(|w| w == Author::of(&other).as_bytes())
                .unwrap();
            bytes[at..at + 32].copy_from_slice(Author::of(&k).as_bytes());
            Entry::decode(bytes.into()).unwrap()
        };
        check_link(room(), Author::of(&k), Some(&second), &forged).unwrap();
        assert_eq!(
            newest_vouches_for_run(&[first, second, forged]),
            (2, Some(ValidationError::BadSignature { seq: 3 }))
        );
    }

    #[test]
    fn far_future_timestamps_are_flagged_not_refused() {
        let k = key(1);
        let now = 1_700_000_000_000;
        let dated = |timestamp| {
            Entry::sign(
                &k,
                Draft {
                    room: room(),
                    seq: 1,
                    prev: None,
                    timestamp,
                    clock: 1,
                    body: Body::Profile { name: "a".into() },
                },
            )
            .unwrap()
        };
        assert!(!is_far_future(&dated(now + MAX_CLOCK_AHEAD_MS), now));
        assert!(is_far_future(&dated(now + MAX_CLOCK_AHEAD_MS + 1), now));
        assert!(!is_far_future(&dated(0), now), "the past is not flagged");
        assert!(
            !is_far_future(&dated(u64::MAX), u64::MAX - 1),
            "no overflow"
        );
        check_next(room(), Author::of(&k), None, &dated(u64::MAX)).unwrap();
    }

    #[test]
    fn a_far_future_clock_is_flagged_for_format_2_only() {
        let k = key(1);
        let now = 1_764_000_000_000;
        let clocked = |ms: u64| {
            Entry::sign(
                &k,
                Draft {
                    room: room(),
                    seq: 1,
                    prev: None,
                    timestamp: now,
                    clock: clock::at_ms(ms) + 5,
                    body: Body::Profile { name: "a".into() },
                },
            )
            .unwrap()
        };
        assert!(!is_far_future(&clocked(now + MAX_CLOCK_AHEAD_MS), now));
        assert!(is_far_future(&clocked(now + MAX_CLOCK_AHEAD_MS + 1), now));
        check_next(room(), Author::of(&k), None, &clocked(now + 86_400_000)).unwrap();
        // A format 1 clock is a lamport counter, not a time: never flagged by its size.
        let old =
            crate::entry::sign_format_1(&k, 1, None, u64::from(u32::MAX) << 20, &profile_body());
        assert!(!is_far_future(&old, 1_700_000_000_000));
    }

    fn profile_body() -> Body {
        Body::Profile {
            name: "alice".into(),
        }
    }

    #[test]
    fn an_entry_of_another_room_is_refused_both_ways() {
        let k = key(1);
        let other = RoomId::from_bytes([0x0e; 32]);
        let first = profile(&k);
        let second = text_after(&k, &first, "hi");
        // Ours offered to another room's log: refused at seq 1 and after.
        assert_eq!(
            check_next(other, Author::of(&k), None, &first),
            Err(ValidationError::WrongRoom { seq: 1 })
        );
        // Another room's entries offered to ours.
        let theirs = Entry::sign(
            &k,
            Draft {
                room: other,
                seq: 2,
                prev: Some(first.hash()),
                timestamp: 1,
                clock: 2,
                body: Body::Text { text: "x".into() },
            },
        )
        .unwrap();
        assert_eq!(
            check_next(room(), Author::of(&k), Some(&first), &theirs),
            Err(ValidationError::WrongRoom { seq: 2 })
        );
        // At a seq held: not a fork (the author's log in the other room is another log).
        assert_eq!(
            check_known(room(), &second, &theirs),
            Err(ValidationError::WrongRoom { seq: 2 })
        );
        assert_eq!(
            check_known(room(), &second, &text_after(&k, &first, "fork")),
            Err(ValidationError::Fork { seq: 2 })
        );
    }

    #[test]
    fn format_1_is_accepted_only_as_a_logs_prefix() {
        use crate::entry::sign_format_1;
        let k = key(1);
        let old_first = sign_format_1(&k, 1, None, 1, &profile_body());
        let hi = Body::Text { text: "hi".into() };
        let old_second = sign_format_1(&k, 2, Some(old_first.hash()), 2, &hi);
        // Format 1 in any room, while the log holds only format 1.
        for in_room in [room(), RoomId::from_bytes([0x0e; 32])] {
            check_next(in_room, Author::of(&k), None, &old_first).unwrap();
            check_next(in_room, Author::of(&k), Some(&old_first), &old_second).unwrap();
        }
        // Format 2 goes on top of format 1, its clock above the lamport.
        let new_third = text_after(&k, &old_second, "now");
        check_next(room(), Author::of(&k), Some(&old_second), &new_third).unwrap();
        // Format 1 after format 2: refused, whether it extends the log or sits at a held seq.
        let new_first = profile(&k);
        let old_after = sign_format_1(&k, 2, Some(new_first.hash()), 2, &hi);
        assert_eq!(
            check_next(room(), Author::of(&k), Some(&new_first), &old_after),
            Err(ValidationError::WrongRoom { seq: 2 })
        );
        assert_eq!(
            check_known(room(), &new_first, &old_first),
            Err(ValidationError::WrongRoom { seq: 1 })
        );
        // Two format 1 entries at one seq are a fork, as before rooms.
        let old_other = sign_format_1(&k, 2, Some(old_first.hash()), 3, &hi);
        assert_eq!(
            check_known(room(), &old_second, &old_other),
            Err(ValidationError::Fork { seq: 2 })
        );
    }

    #[test]
    fn duplicate_is_accepted_and_fork_detected() {
        let k = key(1);
        let first = profile(&k);
        let a = text_after(&k, &first, "one");
        let b = text_after(&k, &first, "two");
        assert_eq!(check_known(room(), &a, &a.clone()), Ok(()));
        assert_eq!(
            check_known(room(), &a, &b),
            Err(ValidationError::Fork { seq: 2 })
        );
    }
}
