//! The storage worker: the one thread that writes what peers send (batches the core asks to
//! store, names pinned from hellos), so that the event loop never waits on the disk.
//!
//! It takes every job waiting (up to [`MAX_GROUP`]), stores each, then makes the group durable
//! with one `Store::sync` before it answers the core with an [`Input::Stored`] per batch: the
//! core relays only what is durable.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use libp2p::PeerId;
use p2pchat_protocol::message::Batch;
use p2pchat_protocol::rooms::RoomsInput;
use p2pchat_protocol::store::Inserted;
use p2pchat_protocol::validate::{dated_ahead_ms, is_far_future};
use p2pchat_protocol::{Author, Entry, ValidationError};
use p2pchat_storage::Pin;
use tokio::sync::mpsc;

use crate::Event;
use crate::shared::{SharedRef, now_ms};
use crate::warnings::Cause;

/// Jobs the event loop may queue before it holds further ones itself.
pub const QUEUED_JOBS: usize = 64;
/// Jobs stored before one sync makes them durable.
pub const MAX_GROUP: usize = 64;
/// Peers remembered as warned about for claiming a name pinned to another key (the oldest
/// is forgotten beyond: it may be warned about once more).
const MAX_WARNED: usize = 1024;

/// Something to write; `room` is the index of the room whose store it goes to.
#[derive(Debug)]
pub enum Job {
    /// Store a batch `peer` sent (`from`: the peer's name, for the own log's restore notice).
    Batch {
        /// The room.
        room: usize,
        /// The sender.
        peer: PeerId,
        /// Its name.
        from: String,
        /// The entries.
        batch: Batch,
    },
    /// Pin `name` to `author`, the key of `peer`, which claimed it in a hello; warn if the
    /// name belongs to another key.
    Pin {
        /// The room.
        room: usize,
        /// The peer.
        peer: PeerId,
        /// The name claimed.
        name: String,
        /// Its key.
        author: Author,
    },
    /// Look at the own log in `room` again: a peer's claim on it changed.
    CheckOwn(usize),
}

/// Starts the worker; it stops when the returned queue is dropped, or when the event loop's
/// inbox `stored` is gone.
pub fn spawn(
    shared: SharedRef,
    stored: mpsc::Sender<RoomsInput<PeerId>>,
) -> std::io::Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel(QUEUED_JOBS);
    std::thread::Builder::new()
        .name("p2pchat-storer".into())
        .spawn(move || run(&shared, queue, &stored))?;
    Ok(jobs)
}

fn run(
    shared: &SharedRef,
    mut queue: mpsc::Receiver<Job>,
    stored: &mpsc::Sender<RoomsInput<PeerId>>,
) {
    let mut warned = Warned::default();
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP
            && let Ok(job) = queue.try_recv()
        {
            group.push(job);
        }
        let mut done = Vec::new();
        let mut check_own = vec![false; shared.rooms.len()];
        for job in group {
            match job {
                Job::Batch {
                    room,
                    peer,
                    from,
                    batch,
                } => {
                    let author = batch.author;
                    let received = batch.entries.len();
                    let outcome = insert(shared, room, from, batch);
                    done.push((room, peer, author, received, outcome));
                }
                Job::Pin {
                    room,
                    peer,
                    name,
                    author,
                } => pin(shared, &mut warned, room, peer, &name, author),
                // At once, in order: own entries a later batch brings back then count as
                // restored.
                Job::CheckOwn(room) => shared.check_own(room),
            }
        }
        for (room, state) in shared.rooms.iter().enumerate() {
            if !done
                .iter()
                .any(|(at, .., outcome)| *at == room && has_stored(outcome))
            {
                continue;
            }
            // Shown as soon as written; relayed once synced to disk.
            shared.notify_written();
            if let Err(e) = state.store.sync() {
                shared.store_failed("storing entries", &e);
                for (at, .., outcome) in &mut done {
                    if *at == room {
                        *outcome = Err(format!("syncing the store failed: {e}"));
                    }
                }
            }
        }
        let me = shared.author();
        for (room, peer, author, received, outcome) in done {
            if let Ok(inserted) = &outcome {
                count(shared, received, inserted);
                warn_of_clocks_ahead(shared, room, author, &inserted.stored);
                let forked = matches!(inserted.rejected, Some(ValidationError::Fork { .. }));
                check_own[room] |= author == me && (!inserted.stored.is_empty() || forked);
            }
            let input = RoomsInput::Stored {
                room,
                peer,
                author,
                outcome,
            };
            if stored.blocking_send(input).is_err() {
                return; // the event loop stopped
            }
        }
        // Our own log, given back by a peer (or a claim on it changed): what was held may go
        // on top now. After the answers above, so that the event loop learns of the entries
        // stored before of the ones appended on top.
        for (room, check) in check_own.into_iter().enumerate() {
            if check {
                shared.check_own(room);
            }
        }
    }
}

fn has_stored(outcome: &Result<Inserted, String>) -> bool {
    outcome
        .as_ref()
        .is_ok_and(|inserted| !inserted.stored.is_empty())
}

/// Plans and commits `batch` into `room`'s store (not synced yet).
fn insert(shared: &SharedRef, room: usize, from: String, batch: Batch) -> Result<Inserted, String> {
    let author = batch.author;
    let entries = batch.entries.into_iter().map(|e| Bytes::from(e.into_vec()));
    let state = &shared.rooms[room];
    let insert = || state.store.insert_remote(author, entries);
    let stored = if author == shared.author() {
        // Our own log, given back by a peer: counted for the restore notice as it is stored.
        state.own.insert_received(from, insert)
    } else {
        insert()
    };
    match stored {
        Ok(inserted) => Ok(inserted),
        Err(e) => {
            shared.store_failed("storing entries", &e);
            Err(e.to_string())
        }
    }
}

/// Adds a stored batch to the counters behind `Node::stats`.
fn count(shared: &SharedRef, received: usize, inserted: &Inserted) {
    let counters = &shared.stats;
    let add = |counter: &std::sync::atomic::AtomicU64, n: usize| {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    };
    add(&counters.received, received);
    add(&counters.stored, inserted.stored.len());
    add(&counters.duplicates, inserted.duplicates);
    if inserted.rejected.is_some() {
        add(&counters.rejected_batches, 1);
    }
}

/// Pins a first-seen name to the peer's key in `room`, and warns when the name belongs to
/// another key there.
fn pin(
    shared: &SharedRef,
    warned: &mut Warned,
    room: usize,
    peer: PeerId,
    name: &str,
    author: Author,
) {
    match shared.rooms[room].store.pin(name, author) {
        Ok(Pin::New | Pin::Same) => {}
        Ok(Pin::Conflict(owner)) => {
            if warned.insert(peer) {
                shared.emit(Event::NameConflict {
                    room: shared.rooms[room].room.label().to_owned(),
                    name: name.to_owned(),
                    claimed_by: author,
                    owner,
                });
                shared.emit(Event::Warning {
                    message: format!(
                        "{name}#{} claims the name {name}, which belongs to {name}#{}{}: a \
                         different key, shown with its fingerprint",
                        author.fingerprint(),
                        owner.fingerprint(),
                        shared.in_room(room),
                    ),
                });
            }
        }
        Err(e) => shared.store_failed("writing the store", &e),
    }
}

/// Peers warned about, at most [`MAX_WARNED`], oldest first out.
#[derive(Default)]
struct Warned {
    set: HashSet<PeerId>,
    order: VecDeque<PeerId>,
}

impl Warned {
    /// Whether `peer` is new here (and now remembered).
    fn insert(&mut self, peer: PeerId) -> bool {
        if !self.set.insert(peer) {
            return false;
        }
        self.order.push_back(peer);
        if self.order.len() > MAX_WARNED
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }
}

/// Warns, once in a while per author, when entries just stored are dated far ahead of our
/// clock. Either clock may be wrong; when several people's entries are ahead, ours likely is.
fn warn_of_clocks_ahead(shared: &SharedRef, room: usize, author: Author, stored: &[Entry]) {
    let now = now_ms();
    let ahead: Vec<u64> = stored
        .iter()
        .filter(|entry| is_far_future(entry, now))
        .map(|entry| dated_ahead_ms(entry, now))
        .collect();
    let Some(&most) = ahead.iter().max() else {
        return;
    };
    let name = shared.display_name(room, &author);
    let others = shared.warnings().others_open(Cause::ClockAhead, &name);
    shared.warn(&name, Cause::ClockAhead, ahead.len() as u64, || {
        let whose = match ahead.len() {
            1 => format!("{name}'s entries are"),
            n => format!("{n} of {name}'s entries are up to"),
        };
        let likely = if others > 0 {
            format!(
                "; the entries of {} people are ahead of your clock, so it is likely yours",
                others + 1
            )
        } else {
            String::new()
        };
        format!(
            "{whose} {} ahead of your clock: one of the two clocks is wrong{likely} (kept; \
             messages are ordered by their clocks, and yours follows no clock more than 10 \
             minutes ahead)",
            span(most)
        )
    });
}

/// `ms` in words, roughly: "25 minutes", "2 h", "3 days", "1 year".
fn span(ms: u64) -> String {
    const MINUTE: u64 = 60_000;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;
    match ms {
        ms if ms < 2 * HOUR => format!("{} minutes", ms / MINUTE),
        ms if ms < 2 * DAY => format!("{} h", ms / HOUR),
        ms if ms < 2 * YEAR => format!("{} days", ms / DAY),
        ms => format!("{} years", ms / YEAR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warned_peers_are_bounded_and_the_oldest_goes_first() {
        let mut warned = Warned::default();
        let peers: Vec<PeerId> = (0..=MAX_WARNED).map(|_| PeerId::random()).collect();
        assert!(warned.insert(peers[0]));
        assert!(!warned.insert(peers[0]), "warned once");
        for peer in &peers[1..] {
            assert!(warned.insert(*peer));
        }
        assert_eq!(warned.set.len(), MAX_WARNED);
        assert!(warned.insert(peers[0]), "the oldest was forgotten");
        assert!(!warned.insert(peers[MAX_WARNED]));
    }
}
