//! The merged history: every log interleaved by clock, then author, then seq
//! ([`HistoryKey`]).
//!
//! A log's clocks grow with its seq (a validation rule), so each log is already in
//! history order and the history is their k-way merge. Nothing is indexed when entries are
//! written; a position in the history is how far it has gone into each log.
//!
//! [`Store::history`] and [`Store::history_page`] walk it oldest first,
//! [`Store::history_newest_first`] from the end.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use p2pchat_protocol::{Author, Entry, Heads};

use crate::{Store, StoreError};

/// A position in the merged history: for each log, the last seq that comes before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPos(Heads);

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
/// chunks: memory stays at a few chunks per log however long the history.
pub(crate) struct Merge<'s> {
    store: &'s Store,
    newest_first: bool,
    runs: Vec<Run>,
    heap: BinaryHeap<Next>,
    /// An error met before the first `next`, which reports it (the merge then ends).
    pending: Option<StoreError>,
}

impl<'s> Merge<'s> {
    /// Oldest first, from just after `after`.
    pub(crate) fn oldest_first(store: &'s Store, after: &HistoryPos) -> Self {
        let runs = store
            .heads()
            .into_iter()
            .map(|(author, head)| (author, after.0.get(&author).map_or(1, |seq| seq + 1), head));
        Self::new(store, false, runs)
    }

    /// Newest first, from the end.
    pub(crate) fn newest_first(store: &'s Store) -> Self {
        let runs = store
            .heads()
            .into_iter()
            .map(|(author, head)| (author, 1, head));
        Self::new(store, true, runs)
    }

    fn new(
        store: &'s Store,
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
        let mut merge = Self {
            store,
            newest_first,
            runs,
            heap: BinaryHeap::new(),
            pending: None,
        };
        for run in 0..merge.runs.len() {
            if let Err(e) = merge.queue_next(run) {
                merge.pending = Some(e);
                merge.heap.clear();
                break;
            }
        }
        merge
    }

    /// Puts run `run`'s next entry on the heap, reading a chunk if none is read ahead.
    fn queue_next(&mut self, run: usize) -> Result<(), StoreError> {
        if self.runs[run].ahead.is_empty() {
            self.read_chunk(run)?;
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

    fn read_chunk(&mut self, run: usize) -> Result<(), StoreError> {
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
        let entries = self.store.range(author, first, want as usize, usize::MAX)?;
        if entries.len() as u64 != want || entries.last().map(Entry::seq) != Some(last) {
            return Err(StoreError::Damaged {
                path: self.store.path(),
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

impl Iterator for Merge<'_> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        let Next { run, .. } = self.heap.pop()?;
        let entry = self.runs[run].ahead.pop_front()?;
        if let Err(e) = self.queue_next(run) {
            self.heap.clear(); // nothing after an error
            return Some(Err(e));
        }
        Some(Ok(entry))
    }
}

impl Store {
    /// Up to `limit` entries of the merged history that come after position `after` (from the
    /// start if `None`), with the position after the last one returned (to pass as the next
    /// `after`; `None` when the page is empty). Pages keep memory flat however long the
    /// history.
    pub fn history_page(
        &self,
        after: Option<&HistoryPos>,
        limit: usize,
    ) -> Result<(Vec<Entry>, Option<HistoryPos>), StoreError> {
        let mut pos = after.cloned().unwrap_or_default();
        let page = Merge::oldest_first(self, &pos)
            .take(limit)
            .collect::<Result<Vec<_>, _>>()?;
        for entry in &page {
            pos.0.insert(entry.author(), entry.seq());
        }
        let last = (!page.is_empty()).then_some(pos);
        Ok((page, last))
    }

    /// Every stored entry in merged order: by clock, then author, then seq.
    pub fn history(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        Merge::oldest_first(self, &HistoryPos::default())
    }

    /// The merged history from the newest entry backwards (for "the last N messages", without
    /// reading the rest).
    pub fn history_newest_first(&self) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        Merge::newest_first(self)
    }
}
