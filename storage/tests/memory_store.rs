//! The fjall store, the same store in memory (`Store::in_memory`) and
//! `protocol::store::MemoryStore` follow the same rules: offered the same random batches (in
//! order, out of order, duplicated, with forks, forgeries, undecodable bytes and entries of the
//! wrong author) and the same own appends, all three answer every call the same and end holding
//! the same logs. The simulator runs on `MemoryStore`, so this is what makes its findings hold
//! for the real store; nodes built in memory run on `Store::in_memory`.

use bytes::Bytes;
use p2pchat_protocol::store::{Logs, MemoryStore};
use p2pchat_protocol::{Author, Body, Draft, Entry, SigningKey};
use p2pchat_storage::Store;
use proptest::prelude::*;

/// The room of every store here.
fn room() -> p2pchat_protocol::RoomId {
    p2pchat_protocol::Room::lan().id()
}

/// Authors whose logs are offered as remote batches.
const AUTHORS: usize = 3;
/// Entries in each author's honest log.
const LOG: u64 = 8;

/// One envelope of a batch.
#[derive(Debug, Clone)]
enum Pick {
    /// Entry `seq` of the batch author's honest log.
    Honest(u64),
    /// A validly signed entry at `seq` that differs from the honest one (a fork).
    Fork(u64),
    /// An entry at `seq` that claims the author but is signed by another key.
    Forged(u64),
    /// Entry `seq` of another author's log.
    Stranger(u64),
    /// Bytes that are no entry.
    Garbage,
}

#[derive(Debug, Clone)]
enum Step {
    /// A batch of `author`'s log.
    Offer { author: usize, picks: Vec<Pick> },
    /// An own append (a profile first).
    Append,
}

fn seq() -> impl Strategy<Value = u64> {
    1..=LOG
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        12 => seq().prop_map(Pick::Honest),
        1 => (2..=LOG).prop_map(Pick::Fork),
        1 => seq().prop_map(Pick::Forged),
        1 => seq().prop_map(Pick::Stranger),
        1 => Just(Pick::Garbage),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let run = (seq(), 1..=LOG as usize).prop_map(|(from, len)| {
        (from..(from + len as u64).min(LOG + 1))
            .map(Pick::Honest)
            .collect()
    });
    let picks = prop_oneof![2 => run, 1 => proptest::collection::vec(pick(), 1..8)];
    prop_oneof![
        6 => (0..AUTHORS, picks).prop_map(|(author, picks)| Step::Offer { author, picks }),
        1 => Just(Step::Append),
    ]
}

fn key(seed: usize) -> SigningKey {
    SigningKey::from_bytes(&[seed as u8 + 1; 32])
}

fn sign(key: &SigningKey, seq: u64, prev: Option<&Entry>, clock: u64, body: Body) -> Entry {
    let draft = Draft {
        room: room(),
        seq,
        prev: prev.map(Entry::hash),
        timestamp: seq,
        clock,
        body,
    };
    Entry::sign(key, draft).expect("a small entry signs")
}

/// An author's honest log; clocks grow by 3 and start high for later authors, so own
/// appends have clocks to follow.
fn honest_log(author: usize) -> Vec<Entry> {
    let key = key(author);
    let mut log: Vec<Entry> = Vec::new();
    for seq in 1..=LOG {
        let body = match seq {
            1 => Body::Profile {
                name: format!("author{author}"),
            },
            _ => Body::Text {
                text: format!("line {seq}"),
            },
        };
        let clock = 100 * author as u64 + 3 * seq;
        log.push(sign(&key, seq, log.last(), clock, body));
    }
    log
}

/// The envelopes `picks` stand for, in `author`'s log.
fn envelopes(logs: &[Vec<Entry>], author: usize, picks: &[Pick]) -> Vec<Bytes> {
    let log = &logs[author];
    let at = |seq: u64| &log[seq as usize - 1];
    let before = |seq: u64| seq.checked_sub(2).map(|i| &log[i as usize]);
    picks
        .iter()
        .map(|pick| match *pick {
            Pick::Honest(seq) => at(seq).envelope().clone(),
            Pick::Fork(seq) => {
                let body = Body::Text {
                    text: format!("the other line {seq}"),
                };
                let clock = at(seq).clock();
                sign(&key(author), seq, before(seq), clock, body)
                    .envelope()
                    .clone()
            }
            Pick::Forged(seq) => {
                let forger = key(AUTHORS + 1);
                let fake = sign(
                    &forger,
                    seq,
                    before(seq),
                    at(seq).clock(),
                    at(seq).body().clone(),
                );
                let mut bytes = fake.envelope().to_vec();
                let signer = Author::of(&forger);
                let spot = bytes
                    .windows(32)
                    .position(|w| w == signer.as_bytes())
                    .expect("the author is in the envelope");
                bytes[spot..spot + 32].copy_from_slice(Author::of(&key(author)).as_bytes());
                Bytes::from(bytes)
            }
            Pick::Stranger(seq) => logs[(author + 1) % AUTHORS][seq as usize - 1]
                .envelope()
                .clone(),
            Pick::Garbage => Bytes::from_static(b"\x82\x41\x00\x40"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fjall_and_memory_stores_answer_alike(steps in proptest::collection::vec(step(), 1..24)) {
        let logs: Vec<Vec<Entry>> = (0..AUTHORS).map(honest_log).collect();
        let me = key(AUTHORS);
        let dir = tempfile::tempdir().expect("a temp dir");
        let fjall = Store::open(dir.path(), room()).expect("a store opens");
        let ours_in_memory = Store::in_memory(room());
        let mut memory = MemoryStore::new(room());
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Offer { author, picks } => {
                    let batch = envelopes(&logs, *author, picks);
                    let author = Author::of(&key(*author));
                    let on_disk = fjall.insert_remote(author, batch.clone()).expect("an insert writes");
                    let ours = ours_in_memory.insert_remote(author, batch.clone()).expect("an insert writes");
                    let in_memory = memory.insert(author, batch);
                    prop_assert_eq!(&on_disk, &ours, "step {}", i);
                    prop_assert_eq!(on_disk, in_memory, "step {}", i);
                }
                Step::Append => {
                    let body = match memory.head_seq(&Author::of(&me)) {
                        0 => Body::Profile { name: "me".into() },
                        _ => Body::Text { text: format!("step {i}") },
                    };
                    let on_disk = fjall.append_own(&me, body.clone(), i as u64).expect("an append writes");
                    let ours = ours_in_memory.append_own(&me, body.clone(), i as u64).expect("an append writes");
                    let in_memory = memory.append(&me, body, i as u64).expect("a small entry signs");
                    prop_assert_eq!(&on_disk, &ours, "step {}", i);
                    prop_assert_eq!(on_disk, in_memory, "step {}", i);
                }
            }
        }
        let heads: Vec<(Author, u64)> = memory.heads().iter().map(|h| (h.author, h.seq)).collect();
        prop_assert_eq!(fjall.heads().into_iter().collect::<Vec<_>>(), heads);
        prop_assert_eq!(ours_in_memory.heads(), fjall.heads());
        prop_assert_eq!(fjall.max_clock(), memory.max_clock());
        prop_assert_eq!(ours_in_memory.max_clock(), memory.max_clock());
        for author in (0..=AUTHORS).map(|seed| Author::of(&key(seed))) {
            prop_assert_eq!(fjall.is_frozen(&author), memory.is_frozen(&author));
            prop_assert_eq!(ours_in_memory.is_frozen(&author), memory.is_frozen(&author));
            prop_assert_eq!(ours_in_memory.name(&author), fjall.name(&author));
            let on_disk = fjall.range_envelopes(&author, 1, usize::MAX, usize::MAX).expect("a log reads");
            let ours = ours_in_memory.range_envelopes(&author, 1, usize::MAX, usize::MAX).expect("a log reads");
            let in_memory = memory.envelopes(&author, 1, usize::MAX, usize::MAX).expect("never fails");
            prop_assert_eq!(&on_disk, &ours);
            prop_assert_eq!(on_disk, in_memory);
        }
        let history = |store: &Store| store.history().collect::<Result<Vec<_>, _>>().expect("the history reads");
        prop_assert_eq!(history(&ours_in_memory), history(&fjall));
        prop_assert_eq!(ours_in_memory.verify(), fjall.verify());
        prop_assert!(memory.verify_chains().is_ok());
    }
}
