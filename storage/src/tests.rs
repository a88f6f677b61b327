use super::*;
use p2pchat_protocol::ValidationError;

/// The room of every store here.
fn room() -> p2pchat_protocol::RoomId {
    p2pchat_protocol::Room::lan().id()
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn text(text: &str) -> Body {
    Body::Text { text: text.into() }
}

fn profile(name: &str) -> Body {
    Body::Profile { name: name.into() }
}

/// Builds a valid log of `n` entries for `key` (a profile, then texts) without a store.
fn log(key: &SigningKey, n: u64) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for seq in 1..=n {
        let body = if seq == 1 {
            profile("alice")
        } else {
            text(&format!("line {seq}"))
        };
        let prev = out.last().map(Entry::hash);
        out.push(
            Entry::sign(
                key,
                Draft {
                    room: room(),
                    seq,
                    prev,
                    timestamp: seq,
                    clock: seq,
                    body,
                },
            )
            .unwrap(),
        );
    }
    out
}

fn envelopes(entries: &[Entry]) -> Vec<Bytes> {
    entries.iter().map(|e| e.envelope().clone()).collect()
}

/// Opens stores of one backend for a test.
struct Stores {
    /// `None`: in memory.
    dir: Option<tempfile::TempDir>,
    opened: usize,
}

impl Stores {
    /// A new, empty store of `room`.
    fn open(&mut self, room: p2pchat_protocol::RoomId) -> Store {
        self.opened += 1;
        match &self.dir {
            Some(dir) => Store::open(&dir.path().join(self.opened.to_string()), room).unwrap(),
            None => Store::in_memory(room),
        }
    }
}

/// Runs `test` with stores on disk, then with stores in memory: they behave alike.
fn each_backend(test: impl Fn(&mut Stores)) {
    for dir in [Some(tempfile::tempdir().unwrap()), None] {
        // Shown with a failure's output: which backend failed.
        eprintln!(
            "stores {}",
            if dir.is_some() {
                "on disk"
            } else {
                "in memory"
            }
        );
        test(&mut Stores { dir, opened: 0 });
    }
}

#[test]
fn append_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(1);
    {
        let store = Store::open(dir.path(), room()).unwrap();
        store.append_own(&k, profile("alice"), 1).unwrap();
        let second = store.append_own(&k, text("hello"), 2).unwrap();
        assert_eq!(second.seq(), 2);
        assert_eq!(second.clock(), clock::at_ms(2));
    }
    let store = Store::open(dir.path(), room()).unwrap();
    let author = Author::of(&k);
    assert_eq!(store.heads(), Heads::from([(author, 2)]));
    assert_eq!(store.max_clock(), clock::at_ms(2));
    assert_eq!(
        store.get(&author, 2).unwrap().unwrap().body(),
        &text("hello")
    );
    assert_eq!(store.name(&author).as_deref(), Some("alice"));
    let third = store.append_own(&k, text("again"), 3).unwrap();
    assert_eq!(third.seq(), 3);
    assert_eq!(
        third.prev(),
        Some(store.get(&author, 2).unwrap().unwrap().hash())
    );
}

#[test]
fn remote_batch_is_stored_and_heads_follow() {
    each_backend(|stores| {
        let store = stores.open(room());
        let k = key(2);
        let entries = log(&k, 5);
        let inserted = store
            .insert_remote(Author::of(&k), envelopes(&entries))
            .unwrap();
        assert_eq!(inserted.stored.len(), 5);
        assert_eq!(inserted.held_through, 5);
        assert!(inserted.rejected.is_none());
        assert_eq!(store.head_seq(&Author::of(&k)), 5);
        let again = store
            .insert_remote(Author::of(&k), envelopes(&entries[2..]))
            .unwrap();
        assert_eq!(
            (again.stored.len(), again.duplicates, again.held_through),
            (0, 3, 5)
        );
        assert!(again.rejected.is_none());
    });
}

#[test]
fn gap_is_rejected_and_nothing_stored() {
    each_backend(|stores| {
        let store = stores.open(room());
        let k = key(2);
        let entries = log(&k, 5);
        store
            .insert_remote(Author::of(&k), envelopes(&entries[..2]))
            .unwrap();
        let inserted = store
            .insert_remote(Author::of(&k), envelopes(&entries[3..]))
            .unwrap();
        assert!(inserted.stored.is_empty());
        assert_eq!(
            inserted.rejected,
            Some(ValidationError::Gap {
                expected: 3,
                found: 4
            })
        );
        assert_eq!(store.head_seq(&Author::of(&k)), 2);
    });
}

#[test]
fn wrong_prev_is_rejected() {
    each_backend(|stores| {
        let store = stores.open(room());
        let k = key(2);
        let entries = log(&k, 1);
        let stray = Entry::sign(
            &k,
            Draft {
                room: room(),
                seq: 2,
                prev: Some(p2pchat_protocol::Hash::of(b"x")),
                timestamp: 2,
                clock: 2,
                body: text("x"),
            },
        )
        .unwrap();
        let inserted = store
            .insert_remote(
                Author::of(&k),
                [entries[0].envelope().clone(), stray.envelope().clone()],
            )
            .unwrap();
        assert_eq!(inserted.stored.len(), 1);
        assert_eq!(
            inserted.rejected,
            Some(ValidationError::WrongPrev { seq: 2 })
        );
    });
}

#[test]
fn bad_signature_is_rejected() {
    each_backend(|stores| {
        let store = stores.open(room());
        let honest = key(2);
        // An entry claiming `honest` as author but signed by another key.
        let mut bytes = log(&key(3), 1)[0].envelope().to_vec();
        let at = bytes
            .windows(32)
            .position(|w| w == Author::of(&key(3)).as_bytes())
            .unwrap();
        bytes[at..at + 32].copy_from_slice(Author::of(&honest).as_bytes());
        let inserted = store
            .insert_remote(Author::of(&honest), [Bytes::from(bytes)])
            .unwrap();
        assert_eq!(
            inserted.rejected,
            Some(ValidationError::BadSignature { seq: 1 })
        );
        assert_eq!(store.head_seq(&Author::of(&honest)), 0);
    });
}

#[test]
fn wrong_author_is_rejected() {
    each_backend(|stores| {
        let store = stores.open(room());
        let inserted = store
            .insert_remote(Author::of(&key(2)), envelopes(&log(&key(3), 2)))
            .unwrap();
        assert!(matches!(
            inserted.rejected,
            Some(ValidationError::WrongAuthor { .. })
        ));
        assert!(store.heads().is_empty());
    });
}

#[test]
fn bad_entry_in_the_middle_stores_exactly_the_valid_prefix() {
    each_backend(|stores| {
        let store = stores.open(room());
        let k = key(2);
        let mut batch = envelopes(&log(&k, 6));
        batch[3] = Bytes::from_static(b"\x82\x40\x40"); // well-formed CBOR, not an entry
        let inserted = store.insert_remote(Author::of(&k), batch).unwrap();
        assert_eq!(inserted.stored.len(), 3);
        assert!(inserted.rejected.is_some());
        assert_eq!(store.head_seq(&Author::of(&k)), 3);
        assert!(store.get(&Author::of(&k), 4).unwrap().is_none());
    });
}

#[test]
fn fork_keeps_the_first_entry_and_freezes_the_author() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(2);
    let author = Author::of(&k);
    let entries = log(&k, 2);
    let other = Entry::sign(
        &k,
        Draft {
            room: room(),
            seq: 2,
            prev: Some(entries[0].hash()),
            timestamp: 9,
            clock: 2,
            body: text("other"),
        },
    )
    .unwrap();
    {
        let store = Store::open(dir.path(), room()).unwrap();
        store.insert_remote(author, envelopes(&entries)).unwrap();
        let inserted = store
            .insert_remote(author, [other.envelope().clone()])
            .unwrap();
        assert_eq!(inserted.rejected, Some(ValidationError::Fork { seq: 2 }));
        assert_eq!(store.get(&author, 2).unwrap().unwrap(), entries[1]);
        assert!(store.is_frozen(&author));
    }
    let store = Store::open(dir.path(), room()).unwrap();
    assert!(store.is_frozen(&author), "the freeze survives a restart");
    let next = Entry::sign(
        &k,
        Draft {
            room: room(),
            seq: 3,
            prev: Some(entries[1].hash()),
            timestamp: 10,
            clock: 3,
            body: text("more"),
        },
    )
    .unwrap();
    let inserted = store
        .insert_remote(author, [next.envelope().clone()])
        .unwrap();
    assert_eq!(inserted.rejected, Some(ValidationError::AuthorFrozen));
}

#[test]
fn second_open_of_the_same_dir_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), room()).unwrap();
    let second = Store::open(dir.path(), room());
    assert!(
        matches!(second, Err(StoreError::InUse { .. })),
        "got {:?}",
        second.err()
    );
    let message = Store::open(dir.path(), room()).err().unwrap().to_string();
    assert!(
        message.contains("in use by another p2pchat process"),
        "{message}"
    );
}

/// A wall time of December 2026, in ms since the Unix epoch.
const NOW: u64 = 1_764_000_000_000;

#[test]
fn history_is_merged_by_clock_then_author() {
    each_backend(|stores| {
        let store = stores.open(room());
        let (a, b) = (key(1), key(2));
        store.append_own(&a, profile("alice"), NOW).unwrap();
        store
            .insert_remote(Author::of(&b), envelopes(&log(&b, 3)))
            .unwrap(); // clocks 1..3
        store.append_own(&a, text("after"), NOW + 5).unwrap();
        let order: Vec<(u64, Author)> = store
            .history()
            .map(|e| e.unwrap())
            .map(|e| (e.clock(), e.author()))
            .collect();
        let mut expected = order.clone();
        expected.sort();
        assert_eq!(order, expected);
        assert_eq!(order.len(), 5);
        assert_eq!(
            order.last().unwrap(),
            &(clock::at_ms(NOW + 5), Author::of(&a))
        );
    });
}

#[test]
fn a_late_joiners_first_line_sorts_at_its_wall_time_after_older_history() {
    each_backend(|stores| {
        let store = stores.open(room());
        // Alice wrote six minutes ago; Dave, who never synced, writes now in his own store.
        let alice = stores.open(room());
        alice
            .append_own(&key(1), profile("alice"), NOW - 360_000)
            .unwrap();
        alice
            .append_own(&key(1), text("07:39"), NOW - 359_000)
            .unwrap();
        let dave = stores.open(room());
        dave.append_own(&key(4), profile("dave"), NOW).unwrap();
        dave.append_own(&key(4), text("07:45"), NOW + 1).unwrap();
        for from in [&alice, &dave] {
            for (author, _) in from.heads() {
                let entries = from.range(&author, 1, 10, usize::MAX).unwrap();
                store.insert_remote(author, envelopes(&entries)).unwrap();
            }
        }
        let lines: Vec<String> = store
            .history()
            .map(|e| match e.unwrap().body() {
                Body::Text { text } => text.clone(),
                Body::Profile { name } => name.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(lines, ["alice", "07:39", "dave", "07:45"]);
    });
}

#[test]
fn entries_of_another_room_are_refused_and_stored_nowhere() {
    each_backend(|stores| {
        let store = stores.open(room());
        let elsewhere = p2pchat_protocol::Room::open("ops").unwrap().id();
        let other = stores.open(elsewhere);
        assert_eq!((store.room(), other.room()), (room(), elsewhere));
        let k = key(1);
        let theirs = other.append_own(&k, profile("alice"), NOW).unwrap();
        assert_eq!(theirs.room(), Some(elsewhere));
        let inserted = store
            .insert_remote(Author::of(&k), [theirs.envelope().clone()])
            .unwrap();
        assert_eq!(
            inserted.rejected,
            Some(ValidationError::WrongRoom { seq: 1 })
        );
        assert!(store.heads().is_empty());
        // Also at a seq the store holds: not taken for a fork.
        let ours = store.append_own(&k, profile("alice"), NOW).unwrap();
        assert_eq!(ours.room(), Some(room()));
        let inserted = store
            .insert_remote(Author::of(&k), [theirs.envelope().clone()])
            .unwrap();
        assert_eq!(
            inserted.rejected,
            Some(ValidationError::WrongRoom { seq: 1 })
        );
        assert!(!store.is_frozen(&Author::of(&k)));
    });
}

#[test]
fn range_respects_entry_and_byte_bounds() {
    each_backend(|stores| {
        let store = stores.open(room());
        let k = key(2);
        let entries = log(&k, 10);
        store
            .insert_remote(Author::of(&k), envelopes(&entries))
            .unwrap();
        let seqs = |v: Vec<Entry>| v.iter().map(Entry::seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(store.range(&Author::of(&k), 4, 3, usize::MAX).unwrap()),
            vec![4, 5, 6]
        );
        assert_eq!(
            seqs(store.range(&Author::of(&k), 9, 100, usize::MAX).unwrap()),
            vec![9, 10]
        );
        assert_eq!(
            seqs(store.range(&Author::of(&k), 1, 100, 1).unwrap()),
            vec![1]
        );
        assert!(
            store
                .range(&Author::of(&key(9)), 1, 100, usize::MAX)
                .unwrap()
                .is_empty()
        );
        // A range ends with its log, whichever logs come after it in key order.
        for other in [key(3), key(4)] {
            store
                .insert_remote(Author::of(&other), envelopes(&log(&other, 4)))
                .unwrap();
        }
        for (other, held) in [(key(2), 10), (key(3), 4), (key(4), 4)] {
            let author = Author::of(&other);
            let range = store.range(&author, 2, 100, usize::MAX).unwrap();
            assert!(range.iter().all(|entry| entry.author() == author));
            assert_eq!(range.len(), held - 1);
        }
    });
}

#[test]
fn first_key_seen_for_a_name_is_pinned_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, mallory) = (key(2), key(3));
    let bob_log = |key: &SigningKey| {
        let first = Entry::sign(
            key,
            Draft {
                room: room(),
                seq: 1,
                prev: None,
                timestamp: 1,
                clock: 1,
                body: profile("bob"),
            },
        )
        .unwrap();
        vec![first.envelope().clone()]
    };
    {
        let store = Store::open(dir.path(), room()).unwrap();
        store
            .insert_remote(Author::of(&bob), bob_log(&bob))
            .unwrap();
        store
            .insert_remote(Author::of(&mallory), bob_log(&mallory))
            .unwrap();
        assert_eq!(store.pinned("bob"), Some(Author::of(&bob)));
        assert_eq!(
            store.authors_named("bob").len(),
            2,
            "both keys claim the name"
        );
        assert_eq!(
            store.pin("bob", Author::of(&mallory)).unwrap(),
            Pin::Conflict(Author::of(&bob))
        );
        assert_eq!(store.pin("bob", Author::of(&bob)).unwrap(), Pin::Same);
        assert_eq!(store.pin("carol", Author::of(&mallory)).unwrap(), Pin::New);
    }
    let store = Store::open(dir.path(), room()).unwrap();
    assert_eq!(store.pinned("bob"), Some(Author::of(&bob)));
    assert_eq!(store.pinned("carol"), Some(Author::of(&mallory)));
    assert_eq!(store.name(&Author::of(&mallory)).as_deref(), Some("bob"));
}

#[test]
fn an_absurd_remote_clock_drags_our_own_no_further_than_ten_minutes_ahead() {
    use p2pchat_protocol::limits::{MAX_CLOCK, MAX_CLOCK_AHEAD_MS};
    each_backend(|stores| {
        let store = stores.open(room());
        let (me, other) = (key(1), key(2));
        store.append_own(&me, profile("me"), NOW).unwrap();
        let absurd = Entry::sign(
            &other,
            Draft {
                room: room(),
                seq: 1,
                prev: None,
                timestamp: 1,
                clock: MAX_CLOCK,
                body: profile("x"),
            },
        )
        .unwrap();
        assert!(
            store
                .insert_remote(Author::of(&other), [absurd.envelope().clone()])
                .unwrap()
                .rejected
                .is_none()
        );
        assert_eq!(store.max_clock(), MAX_CLOCK);
        let bound = clock::at_ms(NOW + MAX_CLOCK_AHEAD_MS);
        let next = store.append_own(&me, text("still fine"), NOW).unwrap();
        assert_eq!(next.clock(), bound + 1);
        let after = store.append_own(&me, text("and again"), NOW).unwrap();
        assert_eq!(after.clock(), bound + 2, "own clock still grows");
        // The bound moves with the wall time, never further.
        let later = store.append_own(&me, text("later"), NOW + 1).unwrap();
        assert_eq!(
            later.clock(),
            clock::at_ms(NOW + 1 + MAX_CLOCK_AHEAD_MS) + 1
        );
    });
}

#[test]
fn group_commit_appends_a_valid_chain_or_nothing() {
    each_backend(|stores| {
        let store = stores.open(room());
        let k = key(1);
        store.append_own(&k, profile("alice"), 1).unwrap();
        let lines = (0..100).map(|i| text(&format!("line {i}")));
        let entries = store.append_own_many(&k, lines, 2).unwrap();
        assert_eq!(entries.len(), 100);
        assert_eq!(store.head_seq(&Author::of(&k)), 101);
        // The chain is valid as a peer would check it.
        let copy = stores.open(room());
        let all = store.range(&Author::of(&k), 1, 1000, usize::MAX).unwrap();
        let inserted = copy.insert_remote(Author::of(&k), envelopes(&all)).unwrap();
        assert_eq!((inserted.stored.len(), inserted.rejected), (101, None));
        // One bad body and nothing is stored.
        let bad = [
            text("fine"),
            text(&"x".repeat(p2pchat_protocol::limits::MAX_TEXT_BYTES + 1)),
        ];
        assert!(store.append_own_many(&k, bad, 3).is_err());
        assert_eq!(store.head_seq(&Author::of(&k)), 101);
    });
}

/// The whole merged history, read by one walk in pages of `size` (each at most that long).
fn in_pages(store: &Store, size: usize) -> Vec<Entry> {
    let mut walk = store.history_walk(&store.heads());
    let mut paged = Vec::new();
    loop {
        let page = walk.page(store, size).unwrap();
        assert!(page.len() <= size);
        if page.is_empty() {
            return paged;
        }
        paged.extend(page);
    }
}

#[test]
fn history_pages_cover_the_history_once_in_order() {
    each_backend(|stores| {
        let store = stores.open(room());
        let (a, b) = (key(1), key(2));
        store.append_own(&a, profile("alice"), 1).unwrap();
        store
            .insert_remote(Author::of(&b), envelopes(&log(&b, 7)))
            .unwrap();
        store
            .append_own_many(&a, (0..5).map(|i| text(&format!("{i}"))), 2)
            .unwrap();
        let all: Vec<Entry> = store.history().map(|e| e.unwrap()).collect();
        let paged = in_pages(&store, 3);
        assert_eq!(paged, all);
        assert_eq!(paged.len(), 13);
        let mut newest_first: Vec<Entry> =
            store.history_newest_first().map(|e| e.unwrap()).collect();
        newest_first.reverse();
        assert_eq!(newest_first, all);
    });
}

/// A log of `n` entries for `key` whose clocks jump by `step` (a profile, then texts).
fn log_stepping(key: &SigningKey, n: u64, step: u64) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for seq in 1..=n {
        let body = if seq == 1 {
            profile("p")
        } else {
            text(&seq.to_string())
        };
        let draft = Draft {
            room: room(),
            seq,
            prev: out.last().map(Entry::hash),
            timestamp: seq,
            clock: seq * step,
            body,
        };
        out.push(Entry::sign(key, draft).unwrap());
    }
    out
}

#[test]
fn the_merged_history_is_every_entry_sorted_by_clock_author_seq_in_any_page_size() {
    each_backend(|stores| {
        let store = stores.open(room());
        // Five logs of different lengths and clock speeds: many equal clocks across authors, and
        // logs longer than a merge's first reads.
        let mut all = Vec::new();
        for (seed, n, step) in [(1, 40, 1), (2, 3, 7), (3, 90, 2), (4, 1, 1), (5, 25, 3)] {
            let entries = log_stepping(&key(seed), n, step);
            store
                .insert_remote(Author::of(&key(seed)), envelopes(&entries))
                .unwrap();
            all.extend(entries);
        }
        all.sort_by_key(|e| (e.clock(), e.author(), e.seq()));
        let merged: Vec<Entry> = store.history().map(Result::unwrap).collect();
        assert_eq!(merged, all);
        for size in [1, 7, 64, 1000] {
            assert_eq!(in_pages(&store, size), all, "pages of {size}");
        }
        let mut newest_first: Vec<Entry> =
            store.history_newest_first().map(Result::unwrap).collect();
        newest_first.reverse();
        assert_eq!(newest_first, all);
    });
}

#[test]
fn a_walk_ends_at_the_heads_it_began_with_whatever_arrives_meanwhile() {
    each_backend(|stores| {
        let store = stores.open(room());
        let (a, b) = (log_stepping(&key(1), 10, 1), log_stepping(&key(2), 10, 1));
        store
            .insert_remote(Author::of(&key(1)), envelopes(&a[..6]))
            .unwrap();
        let mut walk = store.history_walk(&store.heads());
        assert_eq!(walk.page(&store, 4).unwrap(), a[..4]);
        // The rest of a's log and b's whole log arrive, with clocks before and after the
        // walk's place: none of it is in the walk (the message feed follows it live).
        store
            .insert_remote(Author::of(&key(1)), envelopes(&a[6..]))
            .unwrap();
        store
            .insert_remote(Author::of(&key(2)), envelopes(&b))
            .unwrap();
        assert_eq!(walk.page(&store, 100).unwrap(), a[4..6]);
        assert_eq!(walk.page(&store, 100).unwrap(), []);
        assert_eq!(in_pages(&store, 5).len(), 20);
    });
}

#[test]
fn max_clock_is_found_again_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), room()).unwrap();
        for (seed, step) in [(1, 3), (2, 5)] {
            let entries = log_stepping(&key(seed), 4, step);
            store
                .insert_remote(Author::of(&key(seed)), envelopes(&entries))
                .unwrap();
        }
        assert_eq!(store.max_clock(), 20);
    }
    assert_eq!(Store::open(dir.path(), room()).unwrap().max_clock(), 20);
}

/// A log of `n` entries whose author is the identity point, a key of small order, "signed"
/// with R = B, S = 1 (which satisfies [S]B = R + [k]A for every message): anyone can write it.
fn small_order_log(n: u64) -> Vec<Entry> {
    let identity = {
        let mut y = [0; 32];
        y[0] = 1;
        y
    };
    let mut forged_signature = [0; 64];
    forged_signature[0] = 0x58;
    forged_signature[1..32].fill(0x66);
    forged_signature[32] = 1;
    let signer = key(9);
    let mut out: Vec<Entry> = Vec::new();
    for entry in log(&signer, n) {
        // Relink to the forged chain, then put the small-order key and signature in.
        let relinked = Entry::sign(
            &signer,
            Draft {
                room: room(),
                seq: entry.seq(),
                prev: out.last().map(Entry::hash),
                timestamp: entry.timestamp(),
                clock: entry.clock(),
                body: entry.body().clone(),
            },
        )
        .unwrap();
        let mut bytes = relinked.envelope().to_vec();
        let at = bytes
            .windows(32)
            .position(|w| w == Author::of(&signer).as_bytes())
            .unwrap();
        bytes[at..at + 32].copy_from_slice(&identity);
        let signature_at = bytes.len() - 64;
        bytes[signature_at..].copy_from_slice(&forged_signature);
        out.push(Entry::decode(bytes.into()).unwrap());
    }
    out
}

#[test]
fn a_small_order_log_is_refused_on_arrival() {
    each_backend(|stores| {
        let store = stores.open(room());
        let forged = small_order_log(3);
        let author = forged[0].author();
        let inserted = store.insert_remote(author, envelopes(&forged)).unwrap();
        assert!(inserted.stored.is_empty());
        assert_eq!(
            inserted.rejected,
            Some(ValidationError::BadAuthorKey(KeyError::SmallOrder))
        );
        assert_eq!(store.heads(), Heads::new());
        assert_eq!(store.pinned("alice"), None);
    });
}

#[test]
fn a_small_order_log_already_on_disk_is_ignored_at_open() {
    // As an older version, which did not check keys, would have stored it: the same rows
    // `insert_remote` writes, without the validation.
    let dir = tempfile::tempdir().unwrap();
    let forged = small_order_log(3);
    let author = forged[0].author();
    let honest = key(1);
    {
        let store = Store::open(dir.path(), room()).unwrap();
        let mut batch = store.tables.batch(PersistMode::SyncData);
        let mut pins = NewPins::new();
        for entry in &forged {
            store.put(&mut batch, entry, &mut pins);
        }
        batch.insert(Table::Heads, author.as_bytes(), 3u64.to_be_bytes());
        batch.insert(Table::Forks, entry_key(&author, 2), &b""[..]);
        batch.commit().unwrap();
        store.append_own(&honest, profile("bob"), 1).unwrap();
    }
    let store = Store::open(dir.path(), room()).unwrap();
    assert_eq!(
        store.refused_logs(),
        vec![RefusedLog {
            author,
            entries: 3,
            reason: KeyError::SmallOrder
        }]
    );
    // Not shown, announced, served or relayed; its name is free again.
    assert_eq!(store.heads(), Heads::from([(Author::of(&honest), 1)]));
    assert_eq!(store.head_infos().unwrap().len(), 1);
    assert_eq!(store.get(&author, 1).unwrap(), None);
    assert!(
        store
            .range_envelopes(&author, 1, 10, 1 << 20)
            .unwrap()
            .is_empty()
    );
    assert!(store.history().all(|e| e.unwrap().author() != author));
    assert_eq!(store.name(&author), None);
    assert_eq!(store.pinned("alice"), None);
    assert!(!store.is_frozen(&author));
    // Offered again, it is refused as on arrival.
    let inserted = store.insert_remote(author, envelopes(&forged)).unwrap();
    assert_eq!(
        inserted.rejected,
        Some(ValidationError::BadAuthorKey(KeyError::SmallOrder))
    );
    assert_eq!(store.pin("alice", Author::of(&key(2))).unwrap(), Pin::New);
}

/// A store in `dir` with alice's own log of `own` entries and bob's log of `remote`, closed.
fn damaged_store_fixture(dir: &Path, own: usize, remote: u64) {
    let store = Store::open(dir, room()).unwrap();
    let alice = key(1);
    store.append_own(&alice, profile("alice"), 1).unwrap();
    for chunk in 0..own / 100 {
        let lines = (0..100).map(|i| text(&format!("line {chunk} {i}")));
        store.append_own_many(&alice, lines, 2).unwrap();
    }
    let bob = log(&key(2), remote);
    for batch in bob.chunks(50) {
        store
            .insert_remote(Author::of(&key(2)), envelopes(batch))
            .unwrap();
        store.sync().unwrap();
    }
    assert!(store.damage().is_none());
}

fn journal_of(dir: &Path) -> PathBuf {
    repair_journals(dir).pop().unwrap()
}

fn repair_journals(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .collect();
    found.sort();
    found
}

fn written_len(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap();
    data.len() - data.iter().rev().take_while(|b| **b == 0).count()
}

#[test]
fn the_journal_reader_reads_what_fjall_writes() {
    let dir = tempfile::tempdir().unwrap();
    damaged_store_fixture(dir.path(), 300, 120);
    let path = journal_of(dir.path());
    assert_eq!(journal::scan(&path).unwrap(), journal::Finding::Clean);
    let (items, finding) = journal::items(&path).unwrap();
    assert_eq!(finding, journal::Finding::Clean);
    let entries = items.iter().filter(|i| i.key.len() == 40).count();
    assert_eq!(entries, 301 + 120, "every entry row is read back");
}

#[test]
fn a_healthy_reopen_reports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    damaged_store_fixture(dir.path(), 300, 120);
    let store = Store::open(dir.path(), room()).unwrap();
    assert_eq!(store.damage(), None);
    assert_eq!(store.heads().values().sum::<u64>(), 421);
}

#[test]
fn an_unfinished_batch_at_the_end_is_a_crash_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    damaged_store_fixture(dir.path(), 300, 120);
    let path = journal_of(dir.path());
    // A crash mid-write leaves the start of a batch after the last whole one.
    let end = written_len(&path);
    let mut data = std::fs::read(&path).unwrap();
    data.truncate(end);
    let last_batch = data[end - 600..end - 300].to_vec();
    data.extend_from_slice(&[1, 5, 0, 0, 0]);
    data.extend_from_slice(&last_batch);
    std::fs::write(&path, &data).unwrap();
    let store = Store::open(dir.path(), room()).unwrap();
    assert_eq!(store.damage(), None);
    assert_eq!(store.heads().values().sum::<u64>(), 421);
}

#[test]
fn a_zeroed_block_in_the_journal_is_salvaged_around() {
    let dir = tempfile::tempdir().unwrap();
    damaged_store_fixture(dir.path(), 3000, 500);
    let path = journal_of(dir.path());
    let mut data = std::fs::read(&path).unwrap();
    let at = written_len(&path) / 3 / 4096 * 4096;
    data[at..at + 4096].fill(0);
    std::fs::write(&path, &data).unwrap();

    let store = Store::open(dir.path(), room()).unwrap();
    let damage = store.damage().expect("damage is reported").clone();
    let text = damage.to_string();
    assert!(
        text.contains("journal") && text.contains("damaged"),
        "{text}"
    );
    let alice = Author::of(&key(1));
    let kept = store.head_seq(&alice);
    assert!(
        kept > 100 && kept < 3001,
        "alice's log is kept up to the block: {kept}"
    );
    assert_eq!(damage.lost(), 3001 - kept, "{damage:?}");
    assert_eq!(
        store.head_seq(&Author::of(&key(2))),
        500,
        "bob's log is untouched"
    );
    assert!(damage.moved_to.as_ref().is_some_and(|p| p.is_dir()));
    for check in store.verify() {
        assert!(check.is_ok(), "{check:?}");
    }
    drop(store);
    assert_eq!(
        Store::open(dir.path(), room()).unwrap().damage(),
        None,
        "repaired for good"
    );
}

#[test]
fn a_flipped_bit_in_the_journal_loses_only_the_entry_it_hit() {
    let dir = tempfile::tempdir().unwrap();
    damaged_store_fixture(dir.path(), 3000, 500);
    let path = journal_of(dir.path());
    let mut data = std::fs::read(&path).unwrap();
    // Inside some text of alice's log, halfway.
    let needle = b"line 15 50";
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    data[at] ^= 0x04;
    std::fs::write(&path, &data).unwrap();

    let store = Store::open(dir.path(), room()).unwrap();
    let damage = store.damage().expect("damage is reported").clone();
    assert!(damage.to_string().contains("checksum mismatch"), "{damage}");
    let alice = Author::of(&key(1));
    // Profile + 15 chunks of 100 + 50 lines hold before the damaged one (seq 1552).
    assert_eq!(store.head_seq(&alice), 1551);
    assert_eq!(damage.lost(), 3001 - 1551);
    assert_eq!(store.head_seq(&Author::of(&key(2))), 500);
}

#[test]
fn a_truncated_journal_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    damaged_store_fixture(dir.path(), 3000, 500);
    let path = journal_of(dir.path());
    let len = written_len(&path);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len as u64 / 2).unwrap();
    drop(file);
    let store = Store::open(dir.path(), room()).unwrap();
    let damage = store.damage().expect("damage is reported").clone();
    assert!(damage.to_string().contains("truncated"), "{damage}");
    let held: u64 = store.heads().values().sum();
    assert_eq!(damage.lost(), 3501 - held);
    assert!(damage.lost() > 0);
}

#[test]
fn a_deleted_journal_and_a_deleted_version_file() {
    let dir = tempfile::tempdir().unwrap();
    damaged_store_fixture(dir.path(), 300, 100);
    std::fs::remove_file(dir.path().join("version")).unwrap();
    let store = Store::open(dir.path(), room()).unwrap();
    let damage = store.damage().expect("said").to_string();
    assert!(
        damage.contains("version was missing (restored)"),
        "{damage}"
    );
    assert_eq!(store.heads().values().sum::<u64>(), 401);
    drop(store);

    std::fs::remove_file(journal_of(dir.path())).unwrap();
    let store = Store::open(dir.path(), room()).unwrap();
    let damage = store.damage().expect("said").clone();
    assert!(
        damage.to_string().contains("journal is missing"),
        "{damage}"
    );
    assert_eq!(damage.lost(), 401 - store.heads().values().sum::<u64>());
    assert!(damage.lost() > 0);
}

#[test]
fn store_errors_name_the_path_and_no_engine_debug_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let e = StoreError::from_engine(
        &path,
        fjall::Error::Io(std::io::Error::from_raw_os_error(30)),
    )
    .to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("read-only"),
        "{e}"
    );
    let e = StoreError::from_engine(
        &path,
        fjall::Error::JournalRecovery(fjall::JournalRecoveryError::ChecksumMismatch),
    )
    .to_string();
    assert!(e.contains("damaged") && !e.contains("Fjall"), "{e}");
}

#[test]
fn a_store_that_cannot_be_opened_is_named_with_the_reason_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store");
    std::fs::write(&file, "not a directory").unwrap();
    let message = Store::open(&file, room()).err().unwrap().to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(
        !message.contains("FjallError") && !message.contains("Os {"),
        "{message}"
    );
}

#[test]
fn a_follower_is_told_only_the_logs_that_moved() {
    each_backend(|stores| {
        let store = stores.open(room());
        let (a, b) = (key(1), key(2));
        store.append_own(&a, profile("alice"), 1).unwrap();
        let (heads, since) = store.heads_with_version();
        assert_eq!(heads.len(), 1);
        assert_eq!(store.heads_moved_since(since).0, vec![]);
        store
            .insert_remote(Author::of(&b), envelopes(&log(&b, 3)))
            .unwrap();
        store.append_own(&a, text("hello"), 2).unwrap();
        let (moved, now) = store.heads_moved_since(since);
        let mut moved = moved;
        moved.sort();
        let mut expected = vec![(Author::of(&a), 2), (Author::of(&b), 3)];
        expected.sort();
        assert_eq!(moved, expected);
        assert_eq!(store.heads_moved_since(now).0, vec![]);
        // A log that moves again is told once, at its newest head.
        store.append_own(&a, text("again"), 3).unwrap();
        store.append_own(&a, text("and again"), 4).unwrap();
        assert_eq!(store.heads_moved_since(now).0, vec![(Author::of(&a), 4)]);
    });
}

fn enc_key(byte: u8) -> Body {
    Body::EncKey {
        key: p2pchat_protocol::dm::EncKey::from_bytes([byte; 32]),
    }
}

#[test]
fn an_authors_enc_key_is_the_one_of_its_highest_seq() {
    each_backend(|stores| {
        let store = stores.open(room());
        let (alice, bob) = (key(1), key(2));
        let author = Author::of(&alice);
        assert_eq!(store.enc_key(&author).unwrap(), None);
        store.append_own(&alice, profile("alice"), 1).unwrap();
        assert_eq!(store.enc_key(&author).unwrap(), None);
        store.append_own(&alice, enc_key(0xa1), 2).unwrap();
        let key_a1 = p2pchat_protocol::dm::EncKey::from_bytes([0xa1; 32]);
        assert_eq!(store.enc_key(&author).unwrap(), Some(key_a1));
        // Several in one batch: the last one counts, and lines after it change nothing.
        let batch = [enc_key(0xb2), text("between"), enc_key(0xc3), text("after")];
        store.append_own_many(&alice, batch, 3).unwrap();
        let key_c3 = p2pchat_protocol::dm::EncKey::from_bytes([0xc3; 32]);
        assert_eq!(store.enc_key(&author).unwrap(), Some(key_c3));
        assert_eq!(store.enc_key(&Author::of(&bob)).unwrap(), None);

        // A peer that receives the log, in two batches, finds the same key.
        let all = store.range(&author, 1, 100, usize::MAX).unwrap();
        let copy = stores.open(room());
        copy.insert_remote(author, envelopes(&all[..2])).unwrap();
        assert_eq!(copy.enc_key(&author).unwrap(), Some(key_a1));
        copy.insert_remote(author, envelopes(&all[2..])).unwrap();
        assert_eq!(copy.enc_key(&author).unwrap(), Some(key_c3));
    });
}

#[test]
fn enc_keys_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let alice = key(1);
    {
        let store = Store::open(dir.path(), room()).unwrap();
        store
            .append_own_many(&alice, [profile("alice"), enc_key(0x5e)], 1)
            .unwrap();
    }
    let store = Store::open(dir.path(), room()).unwrap();
    assert_eq!(
        store.enc_key(&Author::of(&alice)).unwrap(),
        Some(p2pchat_protocol::dm::EncKey::from_bytes([0x5e; 32]))
    );
}

#[test]
fn a_letter_is_sealed_at_the_seq_it_is_stored_at() {
    use p2pchat_protocol::dm::{DmSecret, Letter};
    each_backend(|stores| {
        let store = stores.open(room());
        let (alice, bob) = (key(1), key(2));
        store.append_own(&alice, profile("alice"), 1).unwrap();
        let letter = Letter {
            to: Author::of(&bob),
            pair: DmSecret::derive(&alice)
                .agree(&DmSecret::derive(&bob).public())
                .unwrap(),
            text: "for bob only".into(),
            nonce: [3; 24],
        };
        let stored = store
            .append_own_many(&alice, [Outgoing::from(text("hi")), letter.into()], 2)
            .unwrap();
        let dm = &stored[1];
        assert_eq!(dm.seq(), 3);
        let Body::Direct(sealed) = dm.body() else {
            panic!("a dm is stored: {:?}", dm.body());
        };
        let bob_secret = DmSecret::derive(&bob);
        let read = sealed.open(&bob_secret, &Author::of(&bob), &room(), &dm.author(), 3);
        assert_eq!(read.as_deref(), Ok("for bob only"));
        // The stored entry is what a peer accepts.
        let copy = stores.open(room());
        let all = store.range(&dm.author(), 1, 10, usize::MAX).unwrap();
        let inserted = copy.insert_remote(dm.author(), envelopes(&all)).unwrap();
        assert_eq!((inserted.stored.len(), inserted.rejected), (3, None));
    });
}

#[test]
fn a_clean_close_empties_a_big_journal_and_the_store_reopens_whole() {
    let dir = tempfile::tempdir().unwrap();
    let alice = key(1);
    let lines = 20_000;
    {
        let store = Store::open(dir.path(), room()).unwrap();
        store.append_own(&alice, profile("alice"), 1).unwrap();
        for chunk in 0..lines / 1000 {
            let texts = (0..1000).map(|i| text(&format!("line {chunk} {i} of a big import")));
            store.append_own_many(&alice, texts, 2).unwrap();
        }
        let journal = journal_of(dir.path());
        assert!(written_len(&journal) as u64 >= EMPTY_JOURNAL_AT);
    }
    // Emptied at close: the next open replays nothing.
    assert_eq!(written_len(&journal_of(dir.path())), 0);
    let store = Store::open(dir.path(), room()).unwrap();
    assert_eq!(store.damage(), None);
    let author = Author::of(&alice);
    assert_eq!(store.heads()[&author], lines + 1);
    let last = store.range(&author, lines + 1, 1, usize::MAX).unwrap();
    assert_eq!(last.len(), 1, "the last entry is read back from the tables");
    drop(store);
    // A small journal is left as it is.
    let store = Store::open(dir.path(), room()).unwrap();
    store.append_own(&alice, text("one more"), 3).unwrap();
    drop(store);
    assert!(written_len(&journal_of(dir.path())) > 0);
    let store = Store::open(dir.path(), room()).unwrap();
    assert_eq!(store.heads()[&author], lines + 2);
}

#[test]
fn a_store_that_writes_slowly_has_its_memtables_flushed_after_a_while() {
    use crate::tables::SEAL_FROM;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), room()).unwrap();
    let alice = key(1);
    store.append_own(&alice, profile("alice"), 1).unwrap();
    let texts = (0..1000).map(|i| text(&format!("line {i} of a room that talks slowly")));
    store.append_own_many(&alice, texts, 2).unwrap();
    // ~150 KB, far below a memtable's 4 MiB: without the timed seal they stay in memory.
    let held = store.tables.memtable_bytes();
    assert!(held >= SEAL_FROM, "{held} bytes in the memtables");
    // Before its time a write seals nothing...
    store.append_own(&alice, text("soon"), 3).unwrap();
    assert!(store.tables.memtable_bytes() > held);
    // ...and the first write after it seals them, and fjall flushes them.
    store.tables.seal_due_now();
    store.append_own(&alice, text("later"), 4).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.tables.memtable_bytes() >= SEAL_FROM {
        assert!(std::time::Instant::now() < deadline, "never flushed");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(store);
    let store = Store::open(dir.path(), room()).unwrap();
    assert_eq!(store.heads()[&Author::of(&alice)], 1003);
}
