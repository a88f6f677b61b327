//! The message feed: every message of every room exactly once (lines of every channel, and
//! the user's direct messages), stored history first (room after room), then live.
//!
//! The feed follows the rooms' stores rather than a queue of events. For each room in turn, it
//! first pages through the merged history as it stood when it began that room (a
//! [`HistoryWalk`] up to the heads of that moment, which reads each log once); then, once every
//! room's history is delivered, it keeps, per room and for each author, the last seq it has
//! delivered and, on every store change, reads what lies beyond. Nothing can be missed or
//! repeated, however fast entries arrive or however slowly the reader reads, and memory stays
//! at one page (and, during the history, the walk's chunk read ahead in each log).

use std::collections::{HashMap, VecDeque};
use std::sync::Weak;

use p2pchat_protocol::{Author, Entry, Heads};
use p2pchat_storage::{HistoryKey, HistoryWalk, Store};
use tokio::sync::watch;

use crate::Message;
use crate::shared::Shared;

/// Entries read per page of history.
const PAGE: usize = 1024;

enum Phase {
    /// Not started: the heads are taken at the first read.
    Start,
    /// Paging through the history up to `heads` with `walk`; each author's log has been
    /// delivered up to `delivered` (the merged order keeps each log in seq order).
    History {
        heads: Heads,
        since: u64,
        walk: Box<HistoryWalk>,
        delivered: Heads,
    },
    /// Following the store; everything up to `delivered` has been delivered, and every log
    /// whose head moved after version `since` is to be looked at (`Store::heads_moved_since`).
    Live { delivered: Heads, since: u64 },
}

/// A stream of chat messages; see the module docs.
pub struct MessageFeed {
    shared: Weak<Shared>,
    written: watch::Receiver<()>,
    /// Each room's phase, by room index.
    phases: Vec<Phase>,
    queue: VecDeque<Message>,
}

impl MessageFeed {
    pub(crate) fn new(shared: Weak<Shared>, written: watch::Receiver<()>, rooms: usize) -> Self {
        Self {
            shared,
            written,
            phases: (0..rooms).map(|_| Phase::Start).collect(),
            queue: VecDeque::new(),
        }
    }

    /// The next message, waiting for one if needed; `None` once the node has stopped or its
    /// store failed.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Some(message);
            }
            self.written.borrow_and_update();
            if !self.refill()? {
                self.written.changed().await.ok()?;
            }
        }
    }

    /// Reads undelivered entries into the queue: the stored history of the first room whose
    /// history is not delivered yet, else what is new in every room. `Some(true)` if there may
    /// be more to read without waiting.
    fn refill(&mut self) -> Option<bool> {
        let shared = self.shared.upgrade()?;
        let in_history = self
            .phases
            .iter()
            .position(|phase| !matches!(phase, Phase::Live { .. }));
        let rooms: Vec<usize> = match in_history {
            Some(room) => vec![room],
            None => (0..self.phases.len()).collect(),
        };
        let mut more = false;
        for room in rooms {
            let phase = &mut self.phases[room];
            let store = &shared.rooms[room].store;
            let (entries, more_here) = step(&shared, store, phase)?;
            more |= more_here;
            let mut names = HashMap::new();
            let mut name = |author: &Author| {
                names
                    .entry(*author)
                    .or_insert_with(|| shared.display_name(room, author))
                    .clone()
            };
            let label = shared.rooms[room].room.label();
            let id = store.room();
            for entry in &entries {
                let message = Message::of(entry, &id, label, Some(&shared.reader), &mut name);
                self.queue.extend(message);
            }
        }
        Some(more)
    }
}

/// Moves one room's `phase` on, reading `store`: the entries to deliver, and whether there may
/// be more to read without waiting (`None`: the store failed).
fn step(shared: &Shared, store: &Store, phase: &mut Phase) -> Option<(Vec<Entry>, bool)> {
    let (entries, more) = match std::mem::replace(phase, Phase::Start) {
        Phase::Start => {
            let (heads, since) = store.heads_with_version();
            *phase = Phase::History {
                walk: Box::new(store.history_walk(&heads)),
                heads,
                since,
                delivered: Heads::new(),
            };
            return Some((Vec::new(), true));
        }
        Phase::History {
            heads,
            since,
            mut walk,
            mut delivered,
        } => {
            let page = match walk.page(store, PAGE) {
                Ok(read) => read,
                Err(e) if e.is_damage() => {
                    // The rest of the merged history cannot be read: go on log by log from
                    // what was delivered, skipping only what cannot be read.
                    shared.store_failed("reading the history", &e);
                    *phase = Phase::Live { delivered, since };
                    return Some((Vec::new(), true));
                }
                Err(_) => return None,
            };
            for entry in &page {
                delivered.insert(entry.author(), entry.seq());
            }
            *phase = match page.is_empty() {
                false => Phase::History {
                    heads,
                    since,
                    walk,
                    delivered,
                },
                true => Phase::Live {
                    delivered: heads,
                    since,
                },
            };
            (page, true)
        }
        Phase::Live {
            mut delivered,
            mut since,
        } => {
            // At most a page per refill, so a reader slower than a big catch-up does not
            // pull the whole backlog into memory. Only logs that moved are looked at.
            let mut entries = Vec::new();
            let (moved, version) = store.heads_moved_since(since);
            for (author, head) in moved {
                let done = delivered.entry(author).or_default();
                while *done < head && entries.len() < PAGE {
                    let chunk =
                        match store.range(&author, *done + 1, PAGE - entries.len(), usize::MAX) {
                            Ok(chunk) => chunk,
                            Err(e) if e.is_damage() => {
                                shared.store_failed("reading the store", &e);
                                // Entry by entry, skipping only those that cannot be read.
                                let end = head.min(*done + (PAGE - entries.len()) as u64);
                                entries.extend(
                                    (*done + 1..=end)
                                        .filter_map(|seq| store.get(&author, seq).ok()?),
                                );
                                *done = end;
                                continue;
                            }
                            Err(_) => return None,
                        };
                    let Some(last) = chunk.last() else { break };
                    *done = last.seq();
                    entries.extend(chunk);
                }
            }
            entries.sort_by_key(HistoryKey::of);
            // A page cut short leaves logs to finish: look at the same ones next time.
            if entries.len() < PAGE {
                since = version;
            }
            *phase = Phase::Live { delivered, since };
            let found = !entries.is_empty();
            (entries, found)
        }
    };
    Some((entries, more))
}
