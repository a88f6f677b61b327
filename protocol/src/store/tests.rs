use super::*;
use crate::entry::Hash;
use crate::entry::sign_format_1;
use crate::limits::{MAX_CLOCK_AHEAD_MS, MAX_TEXT_BYTES};

fn room() -> RoomId {
    RoomId::from_bytes([0xee; 32])
}

fn other_room() -> RoomId {
    RoomId::from_bytes([0x0e; 32])
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn text(text: &str) -> Body {
    Body::Text { text: text.into() }
}

/// A valid log of `n` entries for `key` (a profile, then texts), made without a store.
fn log(key: &SigningKey, n: u64) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for seq in 1..=n {
        let body = match seq {
            1 => Body::Profile {
                name: "alice".into(),
            },
            _ => text(&format!("line {seq}")),
        };
        out.push(next(key, out.last(), body));
    }
    out
}

/// The entry after `last` (or the first one) in `key`'s log.
fn next(key: &SigningKey, last: Option<&Entry>, body: Body) -> Entry {
    let draft = Draft {
        room: room(),
        seq: last.map_or(0, Entry::seq) + 1,
        prev: last.map(Entry::hash),
        timestamp: 7,
        clock: last.map_or(0, Entry::clock) + 1,
        body,
    };
    Entry::sign(key, draft).unwrap()
}

fn envelopes(entries: &[Entry]) -> Vec<Bytes> {
    entries.iter().map(|e| e.envelope().clone()).collect()
}

/// `entry` with its author field replaced by `author`: decodes, but the signature is not
/// `author`'s.
fn with_author(entry: &Entry, author: [u8; 32]) -> Entry {
    let mut bytes = entry.envelope().to_vec();
    let signer = entry.author();
    let at = bytes
        .windows(32)
        .position(|w| w == signer.as_bytes())
        .unwrap();
    bytes[at..at + 32].copy_from_slice(&author);
    Entry::decode(bytes.into()).unwrap()
}

/// `key`'s entry after `last`, signed by another key.
fn forged_after(key: &SigningKey, last: &Entry) -> Entry {
    let mut fake = next(&self::key(99), Some(last), text("forged"));
    fake = with_author(&fake, *Author::of(key).as_bytes());
    assert_eq!(fake.prev(), Some(last.hash()));
    fake
}

#[test]
fn a_log_is_stored_and_read_back() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 5);
    let mut store = MemoryStore::new(room());
    let inserted = store.insert(author, envelopes(&entries));
    assert_eq!(inserted.stored, entries);
    assert_eq!(inserted.held_through, 5);
    assert_eq!((inserted.duplicates, inserted.rejected), (0, None));
    assert_eq!(store.len(), 5);
    assert!(!store.is_empty());
    assert_eq!(store.head_seq(&author), 5);
    assert_eq!(store.max_clock(), 5);
    assert_eq!(
        store.heads(),
        vec![HeadInfo {
            author,
            seq: 5,
            hash: entries[4].hash()
        }]
    );
    assert_eq!(store.entry(&author, 3).unwrap(), Some(entries[2].clone()));
    assert_eq!(store.entry(&author, 0).unwrap(), None);
    assert_eq!(store.entry(&author, 6).unwrap(), None);
    assert_eq!(store.entry(&Author::of(&key(2)), 1).unwrap(), None);
    store.verify_chains().unwrap();
}

#[test]
fn envelopes_respect_their_limits() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 5);
    let mut store = MemoryStore::new(room());
    store.insert(author, envelopes(&entries));
    let seqs = |from, max_entries, max_bytes| -> Vec<u64> {
        let got = store
            .envelopes(&author, from, max_entries, max_bytes)
            .unwrap();
        for (seq, envelope) in &got {
            assert_eq!(envelope, entries[*seq as usize - 1].envelope());
        }
        got.into_iter().map(|(seq, _)| seq).collect()
    };
    assert_eq!(seqs(2, 100, usize::MAX), [2, 3, 4, 5]);
    assert_eq!(seqs(0, 2, usize::MAX), [1, 2]);
    assert_eq!(seqs(4, 0, usize::MAX), Vec::<u64>::new());
    assert_eq!(seqs(6, 10, usize::MAX), Vec::<u64>::new());
    assert_eq!(seqs(2, 10, 1), [2], "at least one, whatever the bytes");
    let two = entries[1].envelope().len() + entries[2].envelope().len();
    assert_eq!(seqs(2, 10, two), [2, 3]);
    assert_eq!(seqs(2, 10, two - 1), [2]);
}

#[test]
fn duplicates_are_skipped_and_the_rest_stored() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 5);
    let mut store = MemoryStore::new(room());
    store.insert(author, envelopes(&entries[..3]));
    let inserted = store.insert(author, envelopes(&entries[1..]));
    assert_eq!(inserted.duplicates, 2);
    assert_eq!(inserted.stored, entries[3..]);
    assert_eq!((inserted.held_through, inserted.rejected), (5, None));
    let again = store.insert(author, envelopes(&entries[..2]));
    assert_eq!(again.duplicates, 2);
    assert!(again.stored.is_empty());
    assert_eq!((again.held_through, again.rejected), (2, None));
    assert_eq!(store.len(), 5);
}

#[test]
fn a_fork_is_kept_as_proof_and_freezes_the_author() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 4);
    let mut store = MemoryStore::new(room());
    store.insert(author, envelopes(&entries));
    let other = next(&k, Some(&entries[1]), text("the other line 3"));
    let inserted = store.insert(author, envelopes(&[entries[0].clone(), other.clone()]));
    assert_eq!(inserted.duplicates, 1);
    assert!(inserted.stored.is_empty());
    assert_eq!(inserted.rejected, Some(ValidationError::Fork { seq: 3 }));
    assert!(store.is_frozen(&author));
    assert_eq!(store.fork_of(&author), Some(&other));
    assert_eq!(
        store.entries_of(&author),
        entries,
        "the log stays as it was"
    );
    let later = next(&k, Some(&entries[3]), text("after the fork"));
    let refused = store.insert(author, envelopes(&[later]));
    assert_eq!(refused.rejected, Some(ValidationError::AuthorFrozen));
    assert_eq!((refused.held_through, store.len()), (0, 4));
}

#[test]
fn a_forged_entry_at_a_held_seq_is_no_fork() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 3);
    let mut store = MemoryStore::new(room());
    store.insert(author, envelopes(&entries));
    let inserted = store.insert(author, envelopes(&[forged_after(&k, &entries[0])]));
    assert_eq!(
        inserted.rejected,
        Some(ValidationError::BadSignature { seq: 2 })
    );
    assert!(!store.is_frozen(&author));
}

#[test]
fn a_gap_stores_nothing_after_it() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 5);
    let mut store = MemoryStore::new(room());
    store.insert(author, envelopes(&entries[..2]));
    let inserted = store.insert(author, envelopes(&entries[3..]));
    assert_eq!(
        inserted.rejected,
        Some(ValidationError::Gap {
            expected: 3,
            found: 4
        })
    );
    assert!(inserted.stored.is_empty());
    assert_eq!(store.head_seq(&author), 2);
    // An old entry after new ones ends the batch; the new ones before it stay.
    let back = store.insert(author, envelopes(&[entries[2].clone(), entries[1].clone()]));
    assert_eq!(back.stored, entries[2..3]);
    assert_eq!(
        back.rejected,
        Some(ValidationError::Gap {
            expected: 4,
            found: 2
        })
    );
    assert_eq!(back.held_through, 3);
}

#[test]
fn the_valid_prefix_before_a_bad_signature_is_stored() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 3);
    let mut batch = envelopes(&entries);
    let forged = forged_after(&k, &entries[2]);
    batch.push(forged.envelope().clone());
    // Another forgery after it (the real key would not sign on from a forgery).
    batch.push(forged_after(&k, &forged).envelope().clone());
    let mut store = MemoryStore::new(room());
    let inserted = store.insert(author, batch);
    assert_eq!(inserted.stored, entries);
    assert_eq!(inserted.held_through, 3);
    assert_eq!(
        inserted.rejected,
        Some(ValidationError::BadSignature { seq: 4 })
    );
    store.verify_chains().unwrap();
}

#[test]
fn stores_sharing_a_signature_cache_check_each_signature_once_and_refuse_the_same() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 3);
    let cache = SignatureCache::new();
    let mut first = MemoryStore::with_signature_cache(room(), cache.clone());
    assert!(!cache.contains(&entries[2]));
    assert_eq!(first.insert(author, envelopes(&entries)).stored, entries);
    assert!(
        cache.contains(&entries[2]),
        "the run's newest entry verified"
    );
    // Another store of the world takes the same run as vouched for.
    let mut second = MemoryStore::with_signature_cache(room(), cache.clone());
    assert_eq!(second.insert(author, envelopes(&entries)).stored, entries);
    // A forgery after it is never in the cache: still refused, and not remembered.
    let forged = forged_after(&k, &entries[2]);
    let inserted = second.insert(author, [forged.envelope().clone()]);
    assert_eq!(
        inserted.rejected,
        Some(ValidationError::BadSignature { seq: 4 })
    );
    assert!(!cache.contains(&forged));
    // Own entries are signed here, so they verify.
    let mine = first
        .append(&key(2), Body::Profile { name: "bob".into() }, 7)
        .unwrap();
    assert!(cache.contains(&mine));
    second.verify_chains().unwrap();
}

#[test]
fn undecodable_bytes_end_the_batch() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 3);
    let mut batch = envelopes(&entries[..2]);
    batch.push(Bytes::from_static(b"\x82\x40 not an entry"));
    batch.push(entries[2].envelope().clone());
    let mut store = MemoryStore::new(room());
    let inserted = store.insert(author, batch);
    assert_eq!(inserted.stored, entries[..2]);
    assert!(matches!(
        inserted.rejected,
        Some(ValidationError::Decode(_))
    ));
}

#[test]
fn entries_of_another_author_or_a_bad_key_are_refused() {
    let k = key(1);
    let mut store = MemoryStore::new(room());
    let inserted = store.insert(Author::of(&key(2)), envelopes(&log(&k, 2)));
    assert!(matches!(
        inserted.rejected,
        Some(ValidationError::WrongAuthor { .. })
    ));
    // The identity point: of small order, so anyone could sign for it.
    let mut weak = [0; 32];
    weak[0] = 1;
    let entries: Vec<Entry> = log(&k, 2).iter().map(|e| with_author(e, weak)).collect();
    let refused = store.insert(Author::from_bytes(weak), envelopes(&entries));
    assert!(matches!(
        refused.rejected,
        Some(ValidationError::BadAuthorKey(_))
    ));
    assert!(store.is_empty());
    assert!(store.heads().is_empty());
}

const NOW: u64 = 1_764_000_000_000;

/// The first entry of `key`'s log in `room`, with clock `clock`.
fn profile_at(key: &SigningKey, room: RoomId, clock: u64) -> Entry {
    let draft = Draft {
        room,
        seq: 1,
        prev: None,
        timestamp: clock::ms_of(clock),
        clock,
        body: Body::Profile { name: "big".into() },
    };
    Entry::sign(key, draft).unwrap()
}

#[test]
fn own_entries_chain_and_follow_seen_clocks() {
    let me = key(1);
    let mut store = MemoryStore::new(room());
    let first = store
        .append(&me, Body::Profile { name: "me".into() }, NOW)
        .unwrap();
    assert_eq!((first.seq(), first.prev()), (1, None));
    assert_eq!(first.clock(), clock::at_ms(NOW));
    assert_eq!((first.timestamp(), first.room()), (NOW, Some(room())));
    // Someone else's log with a clock a little ahead: the next own entry follows it.
    let ahead = profile_at(&key(2), room(), clock::at_ms(NOW + 5000) + 3);
    store.insert(Author::of(&key(2)), [ahead.envelope().clone()]);
    let second = store.append(&me, text("hi"), NOW + 1).unwrap();
    assert_eq!(second.seq(), 2);
    assert_eq!(second.prev(), Some(first.hash()));
    assert_eq!(second.clock(), ahead.clock() + 1);
    // Within one millisecond (or with the wall clock gone back), the counter moves on.
    let third = store.append(&me, text("again"), NOW).unwrap();
    assert_eq!(third.clock(), second.clock() + 1);
    store.verify_chains().unwrap();
    // A text over the limit fails and stores nothing.
    let long = text(&"x".repeat(MAX_TEXT_BYTES + 1));
    assert!(store.append(&me, long, 13).is_err());
    assert_eq!(store.head_seq(&Author::of(&me)), 3);
}

#[test]
fn own_clocks_follow_a_far_future_clock_only_ten_minutes_ahead() {
    let other = key(2);
    let absurd = profile_at(&other, room(), clock::at_ms(NOW + 86_400_000));
    let mut store = MemoryStore::new(room());
    let inserted = store.insert(Author::of(&other), [absurd.envelope().clone()]);
    assert_eq!(inserted.rejected, None, "far-future clocks are accepted");
    assert!(crate::validate::is_far_future(&absurd, NOW), "and flagged");
    let mine = store
        .append(&key(1), Body::Profile { name: "me".into() }, NOW)
        .unwrap();
    assert_eq!(mine.clock(), clock::at_ms(NOW + MAX_CLOCK_AHEAD_MS) + 1);
    assert!(!crate::validate::is_far_future(&mine, NOW));
}

#[test]
fn a_late_joiners_first_entry_sorts_after_older_history() {
    // Older history: format 1 (lamport) and format 2 entries written minutes ago.
    let mut store = MemoryStore::new(room());
    let old = sign_format_1(&key(2), 1, None, 40, &Body::Profile { name: "bob".into() });
    store.insert(Author::of(&key(2)), [old.envelope().clone()]);
    let earlier = profile_at(&key(3), room(), clock::at_ms(NOW - 6 * 60_000) + 9);
    store.insert(Author::of(&key(3)), [earlier.envelope().clone()]);
    // A node that writes before its first sync (its store empty) and one that has synced.
    let mut alone = MemoryStore::new(room());
    let joiner = alone
        .append(
            &key(1),
            Body::Profile {
                name: "dave".into(),
            },
            NOW,
        )
        .unwrap();
    let synced = store
        .append(
            &key(1),
            Body::Profile {
                name: "dave".into(),
            },
            NOW,
        )
        .unwrap();
    for mine in [joiner, synced] {
        assert!(mine.clock() > earlier.clock() && mine.clock() > old.clock());
    }
}

#[test]
fn entries_of_another_room_are_refused_as_such() {
    let k = key(1);
    let author = Author::of(&k);
    let ours = log(&k, 2);
    // Ours, offered to another room's store: refused from seq 1, nothing stored.
    let mut elsewhere = MemoryStore::new(other_room());
    assert_eq!(elsewhere.room(), other_room());
    let inserted = elsewhere.insert(author, envelopes(&ours));
    assert_eq!(
        inserted.rejected,
        Some(ValidationError::WrongRoom { seq: 1 })
    );
    assert!(elsewhere.is_empty());
    // Another room's entry at a seq our store holds: refused, and not taken for a fork.
    let mut store = MemoryStore::new(room());
    store.insert(author, envelopes(&ours));
    let theirs = elsewhere
        .append(
            &k,
            Body::Profile {
                name: "alice".into(),
            },
            NOW,
        )
        .unwrap();
    let inserted = store.insert(author, [theirs.envelope().clone()]);
    assert_eq!(
        inserted.rejected,
        Some(ValidationError::WrongRoom { seq: 1 })
    );
    assert!(!store.is_frozen(&author));
    assert_eq!(store.entries_of(&author), &ours[..]);
}

#[test]
fn format_1_entries_are_taken_only_as_a_logs_prefix() {
    let k = key(1);
    let author = Author::of(&k);
    let old_first = sign_format_1(&k, 1, None, 1, &Body::Profile { name: "al".into() });
    let old_second = sign_format_1(&k, 2, Some(old_first.hash()), 2, &text("old"));
    // An old log, then new entries on top of it.
    let mut store = MemoryStore::new(room());
    let inserted = store.insert(author, envelopes(&[old_first.clone(), old_second.clone()]));
    assert_eq!((inserted.stored.len(), inserted.rejected), (2, None));
    let third = store.append(&k, text("new"), NOW).unwrap();
    assert_eq!((third.format(), third.seq()), (2, 3));
    let old_third = sign_format_1(&k, 3, Some(old_second.hash()), 3, &text("late"));
    let old_fourth = sign_format_1(&k, 4, Some(third.hash()), 3, &text("late"));
    // A format 1 entry where a format 2 one is held, or after one: refused, never a fork.
    for late in [old_third, old_fourth] {
        let inserted = store.insert(author, [late.envelope().clone()]);
        assert!(matches!(
            inserted.rejected,
            Some(ValidationError::WrongRoom { .. })
        ));
        assert!(!store.is_frozen(&author));
    }
    assert_eq!(store.head_seq(&author), 3);
    // The old entries themselves are still duplicates, not refused.
    let again = store.insert(author, envelopes(&[old_first, old_second]));
    assert_eq!((again.duplicates, again.rejected), (2, None));
}

#[test]
fn verify_chains_finds_a_broken_link() {
    let k = key(1);
    let author = Author::of(&k);
    let mut entries = log(&k, 3);
    let mut store = MemoryStore::new(room());
    store.insert(author, envelopes(&entries));
    store.verify_chains().unwrap();
    // Written past the planner: seq 3 that links elsewhere.
    let stray = Entry::sign(
        &k,
        Draft {
            room: room(),
            seq: 3,
            prev: Some(Hash::of(b"elsewhere")),
            timestamp: 1,
            clock: 3,
            body: text("stray"),
        },
    )
    .unwrap();
    entries[2] = stray;
    store.logs.insert(author, entries.clone());
    assert_eq!(
        store.verify_chains(),
        Err(BrokenLog {
            author,
            seq: 3,
            error: ValidationError::WrongPrev { seq: 3 }
        })
    );
    // And one whose signature is not the author's.
    entries[2] = forged_after(&k, &entries[1]);
    store.logs.insert(author, entries);
    assert_eq!(
        store.verify_chains(),
        Err(BrokenLog {
            author,
            seq: 3,
            error: ValidationError::BadSignature { seq: 3 }
        })
    );
}

/// A store that claims more of a log than it holds (damage).
struct Damaged(MemoryStore);

impl Logs for Damaged {
    type Error = Infallible;
    fn room(&self) -> RoomId {
        self.0.room()
    }
    fn head_seq(&self, author: &Author) -> u64 {
        self.0.head_seq(author) + 2
    }
    fn is_frozen(&self, author: &Author) -> bool {
        self.0.is_frozen(author)
    }
    fn entry(&self, author: &Author, seq: u64) -> Result<Option<Entry>, Infallible> {
        self.0.entry(author, seq)
    }
    fn envelopes(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, Infallible> {
        self.0.envelopes(author, from, max_entries, max_bytes)
    }
}

#[test]
fn a_missing_entry_below_the_head_is_an_error() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 3);
    let mut store = MemoryStore::new(room());
    store.insert(author, envelopes(&entries[..1]));
    let damaged = Damaged(store);
    let plan = plan_insert(&damaged, author, envelopes(&entries));
    assert!(matches!(plan, Err(PlanError::Missing { seq: 3 })));
}
