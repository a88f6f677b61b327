//! The multi-room core: membership, then one [`Replica`] per shared room, over one connection
//! per peer (docs/protocol.md, section 9.1). IO-free like the replica: the driver feeds
//! [`RoomsInput`]s with the time and drains [`RoomsOutput`]s.
//!
//! CONTRACT STUB (issue 13): helper "core" implements the bodies; the signatures are the
//! agreed contract the node and the simulator code against.

use std::time::Instant;

use crate::entry::{Author, Entry};
use crate::membership::Nonce;
use crate::message::{Batch, Frame, HeadInfo, Lane, MessageError};
use crate::replica::{Disconnect, Event, Replica};
use crate::room::Room;
use crate::store::{Inserted, Logs};

/// Something that happened, for the multi-room core to act on. `room` is an index into the
/// rooms given to [`Rooms::new`].
#[derive(Debug)]
pub enum RoomsInput<P> {
    /// A connection to `peer` is up: the core greets it with `nonce` (32 fresh random bytes
    /// the driver drew for this connection) and proves its rooms once the peer's greet came.
    Connected {
        /// The peer.
        peer: P,
        /// The key the peer proved in its transport handshake.
        author: Author,
        /// Fresh random bytes for this connection's transcript.
        nonce: Nonce,
    },
    /// The connection to `peer` is gone.
    Closed {
        /// The peer.
        peer: P,
    },
    /// A frame from `peer`, decoded and within its limits.
    Received {
        /// The sender.
        peer: P,
        /// The frame.
        frame: Frame,
    },
    /// Bytes from `peer` that are not a valid frame.
    Malformed {
        /// The sender.
        peer: P,
        /// What is wrong with them.
        error: MessageError,
    },
    /// The driver decided to sync `room` with `peer`, after that room's [`Event::Hello`].
    Accept {
        /// The room.
        room: usize,
        /// The peer.
        peer: P,
    },
    /// A batch the core asked to store was stored (or refused) and is durable.
    Stored {
        /// The room.
        room: usize,
        /// Whom the batch came from.
        peer: P,
        /// Whose log.
        author: Author,
        /// What the store did.
        outcome: Result<Inserted, String>,
    },
    /// Entries of the node's own log in `room` were appended and are durable.
    Appended {
        /// The room.
        room: usize,
        /// The new entries, oldest first.
        entries: Vec<Entry>,
    },
    /// Time passed (call every [`crate::replica::TICK`] or so).
    Tick,
}

/// Something the driver must do.
#[derive(Debug)]
pub enum RoomsOutput<P> {
    /// Write `frame` on `lane` to `peer`, after everything written before on that lane.
    Send {
        /// The receiver.
        peer: P,
        /// Which of its lanes.
        lane: Lane,
        /// The frame.
        frame: Frame,
    },
    /// Plan and commit this batch into `room`'s store, and answer with [`RoomsInput::Stored`].
    Store {
        /// The room.
        room: usize,
        /// Whom it came from.
        peer: P,
        /// The entries.
        batch: Batch,
    },
    /// Close every connection to `peer`.
    Disconnect {
        /// The peer.
        peer: P,
        /// Why.
        reason: Disconnect,
    },
    /// Tell the user (or the application).
    Event(RoomsEvent<P>),
}

/// What the multi-room core tells the user about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomsEvent<P> {
    /// `peer` proved membership: these are the rooms (indices) the two share, in slot order.
    /// When none, a [`RoomsOutput::Disconnect`] with [`Disconnect::NoSharedRoom`] follows.
    Joined {
        /// The peer.
        peer: P,
        /// The shared rooms.
        rooms: Vec<usize>,
    },
    /// Something in one room.
    Room {
        /// The room.
        room: usize,
        /// What.
        event: Event<P>,
    },
}

/// The multi-room core of a node: membership and one replica per room.
#[derive(Debug)]
pub struct Rooms<P> {
    rooms: Vec<Room>,
    replicas: Vec<Replica<P>>,
}

impl<P: Copy + Ord + std::fmt::Debug> Rooms<P> {
    /// A core for `own`'s node in `rooms`, each with the name the node goes by there and the
    /// heads its store holds. At most [`crate::membership::MAX_ROOMS`] rooms.
    pub fn new(own: Author, rooms: Vec<(Room, String, Vec<HeadInfo>)>) -> Self {
        let _ = own;
        let _ = rooms;
        todo!("helper core")
    }

    /// The rooms, in the order given.
    pub fn rooms(&self) -> &[Room] {
        &self.rooms
    }

    /// The replica of `room`.
    pub fn replica(&self, room: usize) -> &Replica<P> {
        &self.replicas[room]
    }

    /// Acts on `input` at `now`; `logs[room]` is the store of each room.
    pub fn handle<L: Logs>(&mut self, now: Instant, input: RoomsInput<P>, logs: &[L]) {
        let _ = (now, input, logs);
        todo!("helper core")
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<RoomsOutput<P>> {
        todo!("helper core")
    }
}
