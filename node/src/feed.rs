//! The message feed: every text entry exactly once, stored history first, then live.
//!
//! The feed follows the store rather than a queue of events: it keeps, for each author, the
//! last seq it has delivered, and on every store change reads what lies beyond. Nothing can be
//! missed or repeated, however fast entries arrive or however slowly the reader reads.

use std::collections::VecDeque;
use std::sync::Weak;

use p2pchat_protocol::{Body, Entry, Heads};
use p2pchat_protocol::limits::MAX_BATCH_ENTRIES;
use tokio::sync::watch;

use crate::Message;
use crate::shared::Shared;

/// A stream of chat messages; see the module docs.
pub struct MessageFeed {
    shared: Weak<Shared>,
    changed: watch::Receiver<()>,
    delivered: Option<Heads>,
    queue: VecDeque<Message>,
}

impl MessageFeed {
    pub(crate) fn new(shared: Weak<Shared>, changed: watch::Receiver<()>) -> Self {
        Self { shared, changed, delivered: None, queue: VecDeque::new() }
    }

    /// The next message, waiting for one if needed; `None` once the node has stopped or its
    /// store failed.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Some(message);
            }
            self.changed.borrow_and_update();
            if !self.refill()? {
                self.changed.changed().await.ok()?;
            }
        }
    }

    /// Reads undelivered entries into the queue; `Some(true)` if it found any.
    fn refill(&mut self) -> Option<bool> {
        let shared = self.shared.upgrade()?;
        let heads = shared.store.heads();
        let mut entries = Vec::new();
        match &self.delivered {
            None => {
                for entry in shared.store.history() {
                    let entry = entry.ok()?;
                    if entry.seq() <= heads.get(&entry.author()).copied().unwrap_or(0) {
                        entries.push(entry);
                    }
                }
            }
            Some(delivered) => {
                for (author, &head) in &heads {
                    let mut next = delivered.get(author).copied().unwrap_or(0) + 1;
                    while next <= head {
                        let chunk = shared.store.range(author, next, MAX_BATCH_ENTRIES, usize::MAX).ok()?;
                        let Some(last) = chunk.last() else { break };
                        next = last.seq() + 1;
                        entries.extend(chunk.into_iter().filter(|e| e.seq() <= head));
                    }
                }
                entries.sort_by_key(|e| (e.lamport(), e.author(), e.seq()));
            }
        }
        self.delivered = Some(heads);
        let found = !entries.is_empty();
        self.queue.extend(entries.iter().filter_map(|entry| message(&shared, entry)));
        Some(found)
    }
}

fn message(shared: &Shared, entry: &Entry) -> Option<Message> {
    let Body::Text { text } = entry.body() else { return None };
    Some(Message {
        author: entry.author(),
        name: shared.display_name(&entry.author()),
        seq: entry.seq(),
        lamport: entry.lamport(),
        timestamp: entry.timestamp(),
        text: text.clone(),
    })
}
