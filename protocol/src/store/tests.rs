use super::*;
use crate::entry::Hash;
use crate::limits::MAX_TEXT_BYTES;

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
        seq: last.map_or(0, Entry::seq) + 1,
        prev: last.map(Entry::hash),
        timestamp: 7,
        lamport: last.map_or(0, Entry::lamport) + 1,
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
    let mut store = MemoryStore::new();
    let inserted = store.insert(author, envelopes(&entries));
    assert_eq!(inserted.stored, entries);
    assert_eq!(inserted.held_through, 5);
    assert_eq!((inserted.duplicates, inserted.rejected), (0, None));
    assert_eq!(store.len(), 5);
    assert!(!store.is_empty());
    assert_eq!(store.head_seq(&author), 5);
    assert_eq!(store.max_lamport(), 5);
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
    let mut store = MemoryStore::new();
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
    let mut store = MemoryStore::new();
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
    let mut store = MemoryStore::new();
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
    let mut store = MemoryStore::new();
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
    let mut store = MemoryStore::new();
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
    let mut store = MemoryStore::new();
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
fn undecodable_bytes_end_the_batch() {
    let k = key(1);
    let author = Author::of(&k);
    let entries = log(&k, 3);
    let mut batch = envelopes(&entries[..2]);
    batch.push(Bytes::from_static(b"\x82\x40 not an entry"));
    batch.push(entries[2].envelope().clone());
    let mut store = MemoryStore::new();
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
    let mut store = MemoryStore::new();
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

#[test]
fn own_entries_chain_and_follow_seen_clocks() {
    let me = key(1);
    let mut store = MemoryStore::new();
    let first = store
        .append(&me, Body::Profile { name: "me".into() }, 10)
        .unwrap();
    assert_eq!((first.seq(), first.prev(), first.lamport()), (1, None, 1));
    assert_eq!(first.timestamp(), 10);
    // Someone else's log with higher clocks: the next own entry follows them.
    let theirs = log(&key(2), 6);
    store.insert(Author::of(&key(2)), envelopes(&theirs));
    let second = store.append(&me, text("hi"), 11).unwrap();
    assert_eq!(second.seq(), 2);
    assert_eq!(second.prev(), Some(first.hash()));
    assert_eq!(second.lamport(), 7);
    let third = store.append(&me, text("again"), 12).unwrap();
    assert_eq!(third.lamport(), 8);
    store.verify_chains().unwrap();
    // A text over the limit fails and stores nothing.
    let long = text(&"x".repeat(MAX_TEXT_BYTES + 1));
    assert!(store.append(&me, long, 13).is_err());
    assert_eq!(store.head_seq(&Author::of(&me)), 3);
}

#[test]
fn own_clocks_follow_only_up_to_the_limit() {
    let other = key(2);
    let absurd = Entry::sign(
        &other,
        Draft {
            seq: 1,
            prev: None,
            timestamp: 1,
            lamport: LAMPORT_FOLLOW_LIMIT + 1000,
            body: Body::Profile { name: "big".into() },
        },
    )
    .unwrap();
    let mut store = MemoryStore::new();
    store.insert(Author::of(&other), [absurd.envelope().clone()]);
    let mine = store
        .append(&key(1), Body::Profile { name: "me".into() }, 1)
        .unwrap();
    assert_eq!(mine.lamport(), LAMPORT_FOLLOW_LIMIT + 1);
}

#[test]
fn verify_chains_finds_a_broken_link() {
    let k = key(1);
    let author = Author::of(&k);
    let mut entries = log(&k, 3);
    let mut store = MemoryStore::new();
    store.insert(author, envelopes(&entries));
    store.verify_chains().unwrap();
    // Written past the planner: seq 3 that links elsewhere.
    let stray = Entry::sign(
        &k,
        Draft {
            seq: 3,
            prev: Some(Hash::of(b"elsewhere")),
            timestamp: 1,
            lamport: 3,
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
    let mut store = MemoryStore::new();
    store.insert(author, envelopes(&entries[..1]));
    let damaged = Damaged(store);
    let plan = plan_insert(&damaged, author, envelopes(&entries));
    assert!(matches!(plan, Err(PlanError::Missing { seq: 3 })));
}
