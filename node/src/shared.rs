//! State shared by the event loop, the storage worker and the node's handles.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use libp2p::PeerId;
use p2pchat_protocol::room::Room;
use p2pchat_protocol::store::Logs;
use p2pchat_protocol::{Author, Body, Entry, Outgoing, SigningKey};
use p2pchat_storage::{Store, StoreError};
use tokio::sync::{broadcast, watch};

use crate::own_log::{Appended, OwnWriter, Restored};
use crate::read::Reader;
use crate::warnings::{Cause, Warnings};
use crate::{ConnectFailure, Event, Message, NodeError, SyncProgress};

/// What the user interfaces are shown of a connected peer: published by the event loop when
/// the peer is accepted and as its catch-up moves.
#[derive(Clone, Debug)]
pub struct PeerView {
    /// The name the peer claimed in its hello.
    pub name: String,
    /// The catch-up on what the peer holds and we lacked, while under way.
    pub sync: Option<SyncProgress>,
    /// The path of the connection kept with it.
    pub path: crate::Path,
}

/// One room the node is in: its store (every log of the room held) and the own log there.
pub struct RoomState {
    /// The room.
    pub room: Room,
    /// The room's logs.
    pub store: Store,
    /// The one path for own appends in this room: keeps its mark, holds appends while the
    /// own log there is behind.
    pub own: OwnWriter,
    /// The highest seq of the own log in this room that a connected peer claims to hold
    /// (from the core).
    pub own_claimed: AtomicU64,
}

/// What the multi-room core reads of a room: its store.
impl Logs for RoomState {
    type Error = StoreError;

    fn room(&self) -> p2pchat_protocol::RoomId {
        self.store.room()
    }

    fn head_seq(&self, author: &Author) -> u64 {
        self.store.head_seq(author)
    }

    fn is_frozen(&self, author: &Author) -> bool {
        self.store.is_frozen(author)
    }

    fn entry(&self, author: &Author, seq: u64) -> Result<Option<Entry>, StoreError> {
        Logs::entry(&self.store, author, seq)
    }

    fn envelopes(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        Logs::envelopes(&self.store, author, from, max_entries, max_bytes)
    }
}

/// The node's shared core.
pub struct Shared {
    /// The rooms, in the order given (the first is the default room).
    pub rooms: Vec<RoomState>,
    /// The node's own key (its author and peer identity).
    pub key: SigningKey,
    /// The node's user as a reader of direct messages (the secret derived from `key`).
    pub reader: Reader,
    /// Bumped after every write to the store, synced or not, waking the message feeds.
    pub written: watch::Sender<()>,
    /// Bumped after own entries were appended (durably) in any room, waking the event loop,
    /// which gives them to the core.
    pub own_appended: watch::Sender<()>,
    /// Connected peers whose hello was accepted.
    pub peers: Mutex<HashMap<PeerId, PeerView>>,
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

/// Counters of entries received from peers.
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
    pub fn peers(&self) -> MutexGuard<'_, HashMap<PeerId, PeerView>> {
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
        self.emit(Event::StorageError {
            message: format!("{doing} failed: {e}"),
            damage: e.is_damage(),
        });
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

    /// Says that storage failed in a way the node cannot fix (`message`, in words): as a
    /// [`Event::StorageError`] and an [`Event::Error`].
    pub fn storage_failed(&self, message: String) {
        self.emit(Event::StorageError {
            message: message.clone(),
            damage: false,
        });
        self.emit(Event::Error { message });
    }

    /// Wakes the message feeds: there is something new to show.
    pub fn notify_written(&self) {
        self.written.send_replace(());
    }

    /// Wakes the event loop: own entries were appended.
    fn notify_own_appended(&self) {
        self.own_appended.send_replace(());
    }

    /// The index of the room labelled `label`.
    pub fn room_index(&self, label: &str) -> Option<usize> {
        self.rooms
            .iter()
            .position(|state| state.room.label() == label)
    }

    /// ` in room LABEL` for warnings about room `room`, when the node is in several rooms
    /// (with one, warnings read as before rooms).
    pub fn in_room(&self, room: usize) -> String {
        match (self.rooms.len(), self.rooms.get(room)) {
            (2.., Some(state)) => format!(" in room {}", state.room.label()),
            _ => String::new(),
        }
    }

    /// Appends entries to the node's own log in `room` in one durable write (and its mark),
    /// and wakes the event loop and feeds. While the own log there is behind, the entries are
    /// held instead (none returned), with a warning saying so; once it is back, what was held
    /// goes first, then these (all returned).
    pub fn append(
        &self,
        room: usize,
        bodies: impl IntoIterator<Item = impl Into<Outgoing>>,
    ) -> Result<Vec<Entry>, NodeError> {
        let bodies: Vec<Outgoing> = bodies.into_iter().map(Into::into).collect();
        let what = describe(&bodies);
        let state = &self.rooms[room];
        match state
            .own
            .append(&state.store, &self.key, bodies, self.own_claimed(room))?
        {
            Appended::Stored(entries) => {
                self.notify_written();
                self.notify_own_appended();
                self.record_appended(room);
                Ok(entries)
            }
            Appended::Restored { entries, restored } => {
                self.own_log_restored(restored);
                self.record_appended(room);
                Ok(entries)
            }
            Appended::Held { waiting, .. } => {
                self.emit(Event::Warning {
                    message: format!(
                        "held, not sent yet: {what} ({waiting} waiting for your own log{} to \
                         come back from a peer)",
                        self.in_room(room)
                    ),
                });
                self.check_own(room);
                Ok(Vec::new())
            }
        }
    }

    /// Records the heads an own append in `room` made durable, once the event loop and the
    /// feeds were woken: the record is not on the way of a line to its peers.
    fn record_appended(&self, room: usize) {
        if let Err(e) = self.rooms[room].store.record_appended() {
            self.store_failed("writing the heads record", &e);
        }
    }

    /// The own log is back and what was held went on top: wakes feeds and the event loop,
    /// says so.
    fn own_log_restored(&self, restored: Restored) {
        self.notify_written();
        self.notify_own_appended();
        self.emit(Event::OwnLogRestored {
            restored: restored.restored,
            from: restored.from,
            sent: restored.sent,
        });
    }

    /// The highest seq of the own log in `room` that a connected peer claims to hold.
    fn own_claimed(&self, room: usize) -> u64 {
        self.rooms[room]
            .own_claimed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Looks at the own log in `room` again after its store or the peers changed: warns when
    /// it is found behind (or forked), and when it is back, appends what was held on top and
    /// says so.
    pub fn check_own(&self, room: usize) {
        let claimed = self.own_claimed(room);
        let state = &self.rooms[room];
        let own = match state.own.state(&state.store, &self.key, claimed) {
            Ok(own) => own,
            Err(e) => {
                return self.storage_failed(format!(
                    "checking your own log{} failed: {e}",
                    self.in_room(room)
                ));
            }
        };
        if let Some(message) = state.own.observe(own, state.store.head_seq(&self.author())) {
            let message = match self.rooms.len() {
                1 => message,
                _ => format!("room {}: {message}", state.room.label()),
            };
            self.emit(Event::Warning { message });
        }
        match state.own.recheck(&state.store, &self.key, claimed) {
            Ok(Some(restored)) => self.own_log_restored(restored),
            Ok(None) => {}
            Err(e) => self.storage_failed(format!(
                "writing your own log{} failed: {e}",
                self.in_room(room)
            )),
        }
    }

    /// The name the node's hellos carry in `room`: its latest profile's there, or one held to
    /// be appended.
    pub fn own_name(&self, room: usize) -> String {
        let state = &self.rooms[room];
        state
            .store
            .name(&self.author())
            .or_else(|| state.own.held_name())
            .unwrap_or_default()
    }

    /// The message `entry` of `room` shows as to the node's user (see [`Message::of`]).
    pub fn message(&self, room: usize, entry: &Entry) -> Option<Message> {
        let state = &self.rooms[room];
        Message::of(
            entry,
            &state.store.room(),
            state.room.label(),
            Some(&self.reader),
            |author| self.display_name(room, author),
        )
    }

    /// The name to show for `author` in `room`: their latest profile name there, with a short
    /// fingerprint when the name is ambiguous; a bare fingerprint before any profile is known.
    pub fn display_name(&self, room: usize, author: &Author) -> String {
        display_name(&self.rooms[room].store, author)
    }

    /// `name` as claimed by `author` in `room`: as is when only that author has it (and it is
    /// pinned to them or to no one), `name#fingerprint` when another key claims or owns it
    /// too.
    pub fn qualified(&self, room: usize, name: &str, author: &Author) -> String {
        qualified(&self.rooms[room].store, name, author)
    }

    /// The key a name is pinned to in any of the rooms (the first room's pin first).
    pub fn pinned(&self, name: &str) -> Option<Author> {
        self.rooms.iter().find_map(|state| state.store.pinned(name))
    }
}

/// What held bodies are, in words: one line quoted, or a count.
fn describe(bodies: &[Outgoing]) -> String {
    match bodies {
        [Outgoing::Body(Body::Text { text } | Body::Post { text, .. })] => format!("{text:?}"),
        [Outgoing::Body(Body::Profile { name })] => format!("your name {name:?}"),
        [Outgoing::Letter(letter)] => format!("direct message {:?}", letter.text),
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
    if store.alone_named(name, author) {
        name.to_owned()
    } else {
        format!("{name}#{}", author.fingerprint())
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
