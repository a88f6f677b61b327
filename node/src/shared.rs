//! State shared by the event loop, the per-peer tasks and the node's handles.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use p2pchat_protocol::sync::{Range, count, missing};
use p2pchat_protocol::wire::{Hello, PROTOCOL_VERSION};
use p2pchat_protocol::{Author, Body, Entry, Heads, SigningKey};
use p2pchat_storage::{Store, StoreError};
use tokio::sync::{broadcast, watch};

use crate::own_log::{Appended, OwnWriter, Restored};
use crate::warnings::{Cause, Warnings};
use crate::{ConnectFailure, Event, NodeError};

/// What the node knows about one connected peer.
#[derive(Debug, Default)]
pub struct PeerState {
    /// The name the peer claimed in its hello.
    pub name: Option<String>,
    /// For each log, the highest seq the peer is known to hold (from its hello, from what it
    /// sent us, and from what we sent it). Nothing at or below these is ever sent to it.
    pub heads: Heads,
    /// The catch-up on what the peer's hello announced, while it is not complete.
    pub catch_up: Option<CatchUp>,
    /// Logs the peer asked us not to push (we send notes on them instead).
    pub skip: std::collections::BTreeSet<p2pchat_protocol::Author>,
}

/// Progress towards holding everything a peer announced in its hello.
#[derive(Debug)]
pub struct CatchUp {
    /// The heads to reach (only the logs where the peer was ahead).
    pub target: Heads,
    /// Entries missing when the hello arrived.
    pub total: u64,
}

impl CatchUp {
    /// What we lack of `theirs`, given our heads; `None` when we lack nothing.
    pub fn new(
        ours: &Heads,
        theirs: &Heads,
        skip: impl Fn(&p2pchat_protocol::Author) -> bool,
    ) -> Option<Self> {
        let lacking: Vec<Range> = missing(theirs, ours)
            .into_iter()
            .filter(|r| !skip(&r.author))
            .collect();
        let total = count(&lacking);
        let target = lacking
            .iter()
            .map(|range| (range.author, range.to))
            .collect();
        (total > 0).then_some(CatchUp { target, total })
    }

    /// Entries still missing, given our heads.
    pub fn remaining(&self, ours: &Heads) -> u64 {
        count(&missing(&self.target, ours))
    }
}

/// The node's shared core.
pub struct Shared {
    /// Every log the node holds.
    pub store: Store,
    /// The node's own key (its author and peer identity).
    pub key: SigningKey,
    /// The one path for own appends: keeps the mark beside the key, holds appends while the
    /// own log is behind.
    pub own: OwnWriter,
    /// Bumped after every write to the store, synced or not, waking the message feeds.
    pub written: watch::Sender<()>,
    /// Bumped when writes are synced to disk or what peers hold changes, waking the pushers:
    /// a node relays only what it holds durably.
    pub changed: watch::Sender<()>,
    /// Connected peers that have said hello.
    pub peers: Mutex<HashMap<PeerId, PeerState>>,
    /// Status events for the user interface.
    pub events: broadcast::Sender<Event>,
    /// Counters of what was received.
    pub stats: Counters,
    /// Warnings and connection failures said recently, so repeats are counted instead of said
    /// again.
    pub warnings: Mutex<Warnings>,
    /// Set once damage on disk was reported, so it is said once.
    pub damage_reported: std::sync::atomic::AtomicBool,
}

/// Counters of entries received from peers (pushed or fetched).
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries received in batches, duplicates included.
    pub received: AtomicU64,
    /// Entries newly stored.
    pub stored: AtomicU64,
    /// Entries received that were already held.
    pub duplicates: AtomicU64,
    /// Batches that stopped at an invalid entry.
    pub rejected_batches: AtomicU64,
}

impl Shared {
    /// The node's own author id.
    pub fn author(&self) -> Author {
        Author::of(&self.key)
    }

    /// Locks the peer table.
    pub fn peers(&self) -> MutexGuard<'_, HashMap<PeerId, PeerState>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends a status event (dropped if nobody listens).
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Warns about `subject` (a name as shown) for `cause`, `count` times over: at once if it
    /// is the first such warning in a while, else counted for a summary (see [`Warnings`]).
    pub fn warn(&self, subject: &str, cause: Cause, count: u64, message: impl FnOnce() -> String) {
        let said =
            self.warnings()
                .report(std::time::Instant::now(), subject, cause, count, message);
        self.emit_all(said);
    }

    /// Says that a connection to or from `target` failed for `reason`: at once if it is the
    /// first such failure in a while, else counted for a summary (see [`Warnings`]).
    pub fn connection_failed(&self, target: &str, incoming: bool, reason: ConnectFailure) {
        let said =
            self.warnings()
                .report_failure(std::time::Instant::now(), target, incoming, reason);
        self.emit_all(said);
    }

    /// Says the summaries of repeated warnings that are due; called periodically.
    pub fn say_warning_summaries(&self) {
        let said = self.warnings().due(std::time::Instant::now());
        self.emit_all(said);
    }

    fn emit_all(&self, events: Vec<Event>) {
        for event in events {
            self.emit(event);
        }
    }

    /// Locks the recent warnings.
    pub fn warnings(&self) -> MutexGuard<'_, Warnings> {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reports a failed store operation (`doing`, e.g. "reading the store"). Damage on disk
    /// (a table checksum error) is one warning and the node goes on serving what it can read;
    /// the store is repaired at the next start. Anything else is an error.
    pub fn store_failed(&self, doing: &str, e: &StoreError) {
        if !e.is_damage() {
            self.emit(Event::Error {
                message: format!("{doing} failed: {e}"),
            });
        } else if !self
            .damage_reported
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.emit(Event::Warning {
                message: format!("{doing} failed: {e}"),
            });
        }
    }

    /// Wakes the message feeds: there is something new to show.
    pub fn notify_written(&self) {
        self.written.send_replace(());
    }

    /// Wakes the pushers: there may be something new to send.
    pub fn notify_changed(&self) {
        self.changed.send_replace(());
    }

    /// Reports catch-up progress for every peer with one under way; call after storing entries.
    pub fn report_catch_up(&self) {
        let ours = self.store.heads();
        let mut events = Vec::new();
        for (peer, state) in self.peers().iter_mut() {
            let Some(catch_up) = &state.catch_up else {
                continue;
            };
            let remaining = catch_up.remaining(&ours);
            let name = state.name.clone().unwrap_or_default();
            let received = catch_up.total - remaining.min(catch_up.total);
            if remaining == 0 {
                events.push(Event::SyncComplete {
                    peer: *peer,
                    name,
                    received,
                });
                state.catch_up = None;
            } else {
                events.push(Event::SyncProgress {
                    peer: *peer,
                    name,
                    received,
                    total: catch_up.total,
                });
            }
        }
        for event in events {
            self.emit(event);
        }
    }

    /// Appends entries to the node's own log in one durable write (and its mark), and wakes
    /// the pushers and feeds. While the own log is behind, the entries are held instead (none
    /// returned), with a warning saying so; once it is back, what was held goes first, then
    /// these (all returned).
    pub fn append(&self, bodies: impl IntoIterator<Item = Body>) -> Result<Vec<Entry>, NodeError> {
        let bodies: Vec<Body> = bodies.into_iter().collect();
        let what = describe(&bodies);
        match self
            .own
            .append(&self.store, &self.key, bodies, self.own_claimed())?
        {
            Appended::Stored(entries) => {
                self.notify_written();
                self.notify_changed();
                Ok(entries)
            }
            Appended::Restored { entries, restored } => {
                self.own_log_restored(restored);
                Ok(entries)
            }
            Appended::Held { waiting, .. } => {
                self.emit(Event::Warning {
                    message: format!(
                        "held, not sent yet: {what} ({waiting} waiting for your own log to come \
                         back from a peer)"
                    ),
                });
                self.check_own();
                Ok(Vec::new())
            }
        }
    }

    /// The own log is back and what was held went on top: wakes feeds and pushers, says so.
    fn own_log_restored(&self, restored: Restored) {
        self.notify_written();
        self.notify_changed();
        self.emit(Event::OwnLogRestored {
            restored: restored.restored,
            from: restored.from,
            sent: restored.sent,
        });
    }

    /// The highest seq of the own log that a connected peer claims to hold.
    fn own_claimed(&self) -> u64 {
        let me = self.author();
        let peers = self.peers();
        let claims = peers.values().filter_map(|state| state.heads.get(&me));
        claims.copied().max().unwrap_or(0)
    }

    /// Looks at the own log again after the store or the peers changed: warns when it is
    /// found behind (or forked), and when it is back, appends what was held on top and says
    /// so.
    pub fn check_own(&self) {
        let claimed = self.own_claimed();
        let state = match self.own.state(&self.store, &self.key, claimed) {
            Ok(state) => state,
            Err(e) => {
                return self.emit(Event::Error {
                    message: format!("checking your own log failed: {e}"),
                });
            }
        };
        if let Some(message) = self.own.observe(state, self.store.head_seq(&self.author())) {
            self.emit(Event::Warning { message });
        }
        match self.own.recheck(&self.store, &self.key, claimed) {
            Ok(Some(restored)) => self.own_log_restored(restored),
            Ok(None) => {}
            Err(e) => self.emit(Event::Error {
                message: format!("writing your own log failed: {e}"),
            }),
        }
    }

    /// The node's hello: who it is and what it holds.
    pub fn hello(&self) -> Result<Hello, StoreError> {
        let name = self
            .store
            .name(&self.author())
            .or_else(|| self.own.held_name())
            .unwrap_or_default();
        Ok(Hello {
            version: PROTOCOL_VERSION,
            name,
            heads: self.store.head_infos()?,
        })
    }

    /// Records that `peer` holds `author`'s log up to at least `seq`.
    pub fn peer_has(&self, peer: &PeerId, author: Author, seq: u64) {
        if let Some(state) = self.peers().get_mut(peer) {
            let head = state.heads.entry(author).or_default();
            *head = (*head).max(seq);
        }
    }

    /// Takes back what `peer` claimed to hold of `author`'s log beyond `seq`: it was asked for
    /// more and sent none. Heads in a hello are hints; a peer that does not back them up is
    /// not waited for.
    pub fn peer_lacks_beyond(&self, peer: &PeerId, author: Author, seq: u64) {
        if let Some(state) = self.peers().get_mut(peer) {
            if let Some(head) = state.heads.get_mut(&author) {
                *head = (*head).min(seq);
            }
            if let Some(catch_up) = &mut state.catch_up
                && let Some(target) = catch_up.target.get_mut(&author)
            {
                *target = (*target).min(seq);
            }
        }
    }

    /// The name to show for `author`: their latest profile name, with a short fingerprint when
    /// the name is ambiguous; a bare fingerprint before any profile is known.
    pub fn display_name(&self, author: &Author) -> String {
        display_name(&self.store, author)
    }

    /// `name` as claimed by `author`: as is when only that author has it (and it is pinned to
    /// them or to no one), `name#fingerprint` when another key claims or owns it too.
    pub fn qualified(&self, name: &str, author: &Author) -> String {
        qualified(&self.store, name, author)
    }
}

/// What held bodies are, in words: one line quoted, or a count.
fn describe(bodies: &[Body]) -> String {
    match bodies {
        [Body::Text { text }] => format!("{text:?}"),
        [Body::Profile { name }] => format!("your name {name:?}"),
        bodies => format!("{} entries", bodies.len()),
    }
}

/// [`Shared::display_name`] for any store (also used offline, by export).
pub fn display_name(store: &Store, author: &Author) -> String {
    match store.name(author) {
        Some(name) => qualified(store, &name, author),
        None => format!("#{}", author.fingerprint()),
    }
}

/// [`Shared::qualified`] for any store.
pub fn qualified(store: &Store, name: &str, author: &Author) -> String {
    let pinned_elsewhere = store.pinned(name).is_some_and(|owner| owner != *author);
    let shared = store
        .authors_named(name)
        .iter()
        .any(|other| other != author);
    if pinned_elsewhere || shared {
        format!("{name}#{}", author.fingerprint())
    } else {
        name.to_owned()
    }
}

/// Shared is always used behind an `Arc`.
pub type SharedRef = Arc<Shared>;

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
