//! Convergence under random schedules: four stores on temporary directories take random steps
//! (own appends, deliveries of parts of logs in any order, duplicated or with gaps, restarts).
//! After healing with the sync planner (`missing`), every store holds the same heads, every log
//! is a valid chain, and nothing that was acknowledged (appended) is lost.

use p2pchat_protocol::limits::{BATCH_BYTE_BUDGET, MAX_BATCH_ENTRIES};
use p2pchat_protocol::sync::missing;
use p2pchat_protocol::validate::check_next;
use p2pchat_protocol::{Author, Body, Hash, SigningKey};
use p2pchat_storage::Store;
use proptest::prelude::*;

/// The room of every store here.
fn room() -> p2pchat_protocol::RoomId {
    p2pchat_protocol::Room::lan().id()
}

const NODES: usize = 4;

#[derive(Debug, Clone)]
enum Step {
    /// The node appends a line to its own log.
    Append(usize),
    /// `len` entries of `author`'s log from `start`, as `from` holds them, reach `to`: reversed
    /// and/or sent twice when asked.
    Deliver {
        from: usize,
        to: usize,
        author: usize,
        start: u64,
        len: usize,
        reversed: bool,
        twice: bool,
    },
    /// The node's process stops and starts again (the store is closed and reopened).
    Restart(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..NODES).prop_map(Step::Append),
        5 => (0..NODES, 0..NODES, 0..NODES, 1..12u64, 1..6usize, any::<bool>(), any::<bool>()).prop_map(
            |(from, to, author, start, len, reversed, twice)| Step::Deliver { from, to, author, start, len, reversed, twice }
        ),
        1 => (0..NODES).prop_map(Step::Restart),
    ]
}

fn key(node: usize) -> SigningKey {
    SigningKey::from_bytes(&[node as u8 + 1; 32])
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path(), room()).expect("a store opens")
}

fn at(stores: &[Option<Store>], node: usize) -> &Store {
    stores[node]
        .as_ref()
        .expect("every store is open between steps")
}

/// Sends `to` everything `from` has that it lacks, in bounded batches, oldest first.
fn sync(from: &Store, to: &Store) {
    for range in missing(&from.heads(), &to.heads()) {
        let mut next = range.from;
        while next <= range.to {
            let batch = from
                .range_envelopes(&range.author, next, MAX_BATCH_ENTRIES, BATCH_BYTE_BUDGET)
                .expect("a range reads");
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            let inserted = to
                .insert_remote(range.author, batch.into_iter().map(|(_, e)| e))
                .expect("an insert writes");
            assert!(
                inserted.rejected.is_none(),
                "healing was refused: {:?}",
                inserted.rejected
            );
            next = last + 1;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn stores_converge_after_any_schedule(steps in proptest::collection::vec(step(), 1..60)) {
        let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().expect("a temp dir")).collect();
        let mut stores: Vec<Option<Store>> = dirs.iter().map(|dir| Some(open(dir))).collect();
        let mut acknowledged: Vec<(Author, u64, Hash)> = Vec::new();
        for (node, store) in stores.iter().flatten().enumerate() {
            let entry = store.append_own(&key(node), Body::Profile { name: format!("node{node}") }, 1).expect("profile");
            acknowledged.push((entry.author(), entry.seq(), entry.hash()));
        }
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Append(node) => {
                    let text = format!("step {i}");
                    let entry = at(&stores, node).append_own(&key(node), Body::Text { text }, i as u64).expect("append");
                    acknowledged.push((entry.author(), entry.seq(), entry.hash()));
                }
                Step::Deliver { from, to, author, start, len, reversed, twice } => {
                    let author = Author::of(&key(author));
                    let mut batch: Vec<_> = at(&stores, from)
                        .range_envelopes(&author, start, len, BATCH_BYTE_BUDGET)
                        .expect("a range reads")
                        .into_iter()
                        .map(|(_, envelope)| envelope)
                        .collect();
                    if reversed {
                        batch.reverse();
                    }
                    if twice {
                        batch.extend(batch.clone());
                    }
                    // Gaps, duplicates and disorder are refused or skipped, never stored wrongly.
                    at(&stores, to).insert_remote(author, batch).expect("an insert writes");
                }
                Step::Restart(node) => {
                    stores[node] = None; // closed first: one process per directory
                    stores[node] = Some(open(&dirs[node]));
                }
            }
        }
        // Heal: every pair syncs both ways until nothing is missing anywhere.
        for _ in 0..2 {
            for a in 0..NODES {
                for b in 0..NODES {
                    if a != b {
                        sync(at(&stores, a), at(&stores, b));
                    }
                }
            }
        }
        let heads = at(&stores, 0).heads();
        for (node, store) in stores.iter().flatten().enumerate() {
            prop_assert_eq!(&store.heads(), &heads, "node {} differs", node);
            for (author, head) in &heads {
                let entries = store.range(author, 1, usize::MAX, usize::MAX).expect("a log reads");
                prop_assert_eq!(entries.len() as u64, *head);
                let mut last = None;
                for entry in &entries {
                    prop_assert!(check_next(room(), *author, last, entry).is_ok(), "node {} holds an invalid chain", node);
                    last = Some(entry);
                }
            }
            for (author, seq, hash) in &acknowledged {
                let held = store.get(author, *seq).expect("an entry reads").map(|entry| entry.hash());
                prop_assert_eq!(held, Some(*hash), "node {} lost an acknowledged entry", node);
            }
        }
    }
}
