//! The merged history: every log interleaved by clock, then author, then seq
//! ([`HistoryKey`]).
//!
//! A log's clocks grow with its seq (a validation rule), so each log is already in
//! history order and the history is their k-way merge. Nothing is indexed when entries are
//! written; a walk through it keeps how far it has gone into each log.
//!
//! [`Store::history`] and [`Store::history_walk`] walk it oldest first,
//! [`Store::history_newest_first`] from the end.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use p2pchat_protocol::{Author, Entry, Heads};

use crate::{Store, StoreError};

/// Where an entry sits in the merged history: ordered by clock (the hybrid logical clock of
/// format 2, the lamport clock of format 1: small, so pre-rooms history sorts first), then
/// author, then seq.
/// The one definition of that order, for the store's walks and for anyone who shows entries
/// as they arrive (the message feed, the user interfaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistoryKey {
    clock: u64,
    author: Author,
    seq: u64,
}

impl HistoryKey {
    /// The key of the entry by `author` at `seq` with clock `clock`.
    pub fn new(clock: u64, author: Author, seq: u64) -> Self {
        HistoryKey { clock, author, seq }
    }

    /// The key of `entry`.
    pub fn of(entry: &Entry) -> Self {
        HistoryKey::new(entry.clock(), entry.author(), entry.seq())
    }

    /// The entry's clock, the first thing the order looks at.
    pub fn clock(&self) -> u64 {
        self.clock
    }
}

/// Entries a log's first read takes; each further read takes four times more, up to
/// [`MAX_CHUNK`]. Small first reads keep a page cheap when there are many logs; growing ones
/// keep a long walk through one log at few reads.
const FIRST_CHUNK: usize = 16;
const MAX_CHUNK: usize = 1024;

/// One log's part of a merge: entries read ahead, and the seqs still to read.
struct Run {
    author: Author,
    ahead: VecDeque<Entry>,
    /// Seqs not read yet: `unread.0 ..= unread.1` (empty when `.0 > .1`).
    unread: (u64, u64),
    chunk: usize,
}

/// The next entry of a run, ordered so that the heap's top is the next in the walk.
#[derive(PartialEq, Eq)]
struct Next {
    key: HistoryKey,
    run: usize,
    newest_first: bool,
}

impl Ord for Next {
    fn cmp(&self, other: &Self) -> Ordering {
        let order = self.key.cmp(&other.key);
        if self.newest_first {
            order
        } else {
            order.reverse()
        }
    }
}

impl PartialOrd for Next {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A walk through the merged history, oldest first or newest first, reading each log in
/// chunks: memory stays at a few chunks per log however long the history. It holds no borrow
/// of the store (each step is given it), so a [`HistoryWalk`] can be kept between reads.
struct Walk {
    newest_first: bool,
    runs: Vec<Run>,
    heap: BinaryHeap<Next>,
    /// An error met before the first `next`, which reports it (the walk then ends).
    pending: Option<StoreError>,
}

impl Walk {
    /// Oldest first through `heads` (each log from seq 1 up to its head there).
    fn oldest_first(store: &Store, heads: &Heads) -> Self {
        let runs = heads.iter().map(|(author, head)| (*author, 1, *head));
        Self::new(store, false, runs)
    }

    /// Newest first, from the end.
    fn newest_first(store: &Store) -> Self {
        let runs = store
            .heads()
            .into_iter()
            .map(|(author, head)| (author, 1, head));
        Self::new(store, true, runs)
    }

    fn new(
        store: &Store,
        newest_first: bool,
        runs: impl Iterator<Item = (Author, u64, u64)>,
    ) -> Self {
        let runs = runs
            .filter(|(_, from, to)| from <= to)
            .map(|(author, from, to)| Run {
                author,
                ahead: VecDeque::new(),
                unread: (from, to),
                chunk: FIRST_CHUNK,
            })
            .collect();
        let mut walk = Self {
            newest_first,
            runs,
            heap: BinaryHeap::new(),
            pending: None,
        };
        for run in 0..walk.runs.len() {
            if let Err(e) = walk.queue_next(store, run) {
                walk.pending = Some(e);
                walk.heap.clear();
                break;
            }
        }
        walk
    }

    /// The next entry; `None` at the end (and after an error).
    fn next(&mut self, store: &Store) -> Option<Result<Entry, StoreError>> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        let Next { run, .. } = self.heap.pop()?;
        let entry = self.runs[run].ahead.pop_front()?;
        if let Err(e) = self.queue_next(store, run) {
            self.heap.clear(); // nothing after an error
            return Some(Err(e));
        }
        Some(Ok(entry))
    }

    /// Puts run `run`'s next entry on the heap, reading a chunk if none is read ahead.
    fn queue_next(&mut self, store: &Store, run: usize) -> Result<(), StoreError> {
        if self.runs[run].ahead.is_empty() {
            self.read_chunk(store, run)?;
        }
        if let Some(entry) = self.runs[run].ahead.front() {
            self.heap.push(Next {
                key: HistoryKey::of(entry),
                run,
                newest_first: self.newest_first,
            });
        }
        Ok(())
    }

    fn read_chunk(&mut self, store: &Store, run: usize) -> Result<(), StoreError> {
        let newest_first = self.newest_first;
        let Run {
            author,
            ahead,
            unread: (from, to),
            chunk,
        } = &mut self.runs[run];
        if *from > *to {
            return Ok(());
        }
        let want = (*to - *from + 1).min(*chunk as u64);
        let (first, last) = if newest_first {
            (*to - want + 1, *to)
        } else {
            (*from, *from + want - 1)
        };
        let entries = store.range(author, first, want as usize, usize::MAX)?;
        if entries.len() as u64 != want || entries.last().map(Entry::seq) != Some(last) {
            return Err(StoreError::Damaged {
                path: store.path(),
                what: format!("entries {first} to {last} of {author:?} are not all stored"),
            });
        }
        if newest_first {
            ahead.extend(entries.into_iter().rev());
            *to = first - 1;
        } else {
            ahead.extend(entries);
            *from = last + 1;
        }
        *chunk = (*chunk * 4).min(MAX_CHUNK);
        Ok(())
    }
}

/// The merged history oldest first, up to the heads it began with, read a page at a time
/// ([`Store::history_walk`]). It is kept between pages, so each log is read once in all: a
/// page read afresh from a position would read ahead in every log again (with 10,000 logs,
/// 10,000 reads for each page of 1,024 entries).
pub struct HistoryWalk(Walk);

impl HistoryWalk {
    /// The next (up to) `limit` entries of `store`'s merged history, the store this walk
    /// began on; empty at the end. After an error the walk is over.
    pub fn page(&mut self, store: &Store, limit: usize) -> Result<Vec<Entry>, StoreError> {
        std::iter::from_fn(|| self.0.next(store))
            .take(limit)
            .collect()
    }
}

impl Store {
    /// A walk through the merged history of the logs in `heads` (as [`Store::heads`] gave
    /// them), each up to its head there: entries stored after that are not in it.
    pub fn history_walk(&self, heads: &Heads) -> HistoryWalk {
        HistoryWalk(Walk::oldest_first(self, heads))
    }

    /// Every stored entry in merged order: by clock, then author, then seq.
    pub fn history(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        let mut walk = Walk::oldest_first(self, &self.heads());
        std::iter::from_fn(move || walk.next(self))
    }

    /// The merged history from the newest entry backwards (for "the last N messages", without
    /// reading the rest).
    pub fn history_newest_first(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        let mut walk = Walk::newest_first(self);
        std::iter::from_fn(move || walk.next(self))
    }
}
