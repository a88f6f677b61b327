//! The multi-room core: membership, then one [`Replica`] per shared room, over one connection
//! per peer (docs/protocol.md, section 9.1). IO-free like the replica: the driver feeds
//! [`RoomsInput`]s with the time and drains [`RoomsOutput`]s; nothing here is random (the
//! driver draws each connection's nonce).
//!
//! A connection starts with the membership handshake on the live lane: each side sends a
//! [`Frame::Greet`] when the connection is up and a [`Frame::Proof`] once the other's greet
//! came. The other's proof tells which rooms the two share ([`Transcript::shared`], numbered
//! in the order of their ids: a room's *slot*). From then on every frame is a
//! [`Frame::Room`] of a slot, handed to that room's replica, and each replica's messages to the
//! peer go out wrapped in its slot. A peer that breaks the handshake is penalised; a peer that
//! shares no room is closed ([`Disconnect::NoSharedRoom`]); a disconnect asked by any replica
//! closes the peer in every room.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use crate::entry::{Author, Entry};
use crate::membership::{Greet, MAX_ROOMS, Nonce, Transcript};
use crate::message::{Batch, Frame, HeadInfo, Lane, MessageError, PROTOCOL_VERSION};
use crate::replica::{
    BAN_TIME, Disconnect, Event, HELLO_TIMEOUT, Input, MAX_BANNED, Output, Penalty, Replica,
};
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

/// Where a peer is in the membership handshake.
#[derive(Debug)]
enum Phase {
    /// Connected, greeted; its greet has not arrived.
    AwaitingGreet,
    /// Its greet arrived (and our proof went out); its proof has not.
    AwaitingProof { their_nonce: Nonce },
    /// Its proof arrived: the rooms shared, by slot (at least one).
    Joined { shared: Vec<usize> },
}

#[derive(Debug)]
struct Peer {
    author: Author,
    our_nonce: Nonce,
    since: Instant,
    /// A disconnect was asked for: its inputs are ignored until it is closed.
    closing: bool,
    phase: Phase,
}

/// The multi-room core of a node: membership and one replica per room.
#[derive(Debug)]
pub struct Rooms<P> {
    own: Author,
    rooms: Vec<Room>,
    replicas: Vec<Replica<P>>,
    peers: BTreeMap<P, Peer>,
    banned: BTreeMap<P, Instant>,
    outputs: VecDeque<RoomsOutput<P>>,
}

impl<P: Copy + Ord + std::fmt::Debug> Rooms<P> {
    /// A core for `own`'s node in `rooms`, each with the name the node goes by there and the
    /// heads its store holds. At most [`crate::membership::MAX_ROOMS`] rooms.
    ///
    /// # Panics
    /// With no room, more than [`MAX_ROOMS`] rooms, or one room (one id) given twice: the
    /// driver checks what the user gave before.
    pub fn new(own: Author, rooms: Vec<(Room, String, Vec<HeadInfo>)>) -> Self {
        assert!(
            !rooms.is_empty() && rooms.len() <= MAX_ROOMS,
            "a node is in 1 to {MAX_ROOMS} rooms, not {}",
            rooms.len()
        );
        let ids: BTreeSet<_> = rooms.iter().map(|(room, _, _)| room.id()).collect();
        assert_eq!(ids.len(), rooms.len(), "a room was given twice");
        let (rooms, replicas) = rooms
            .into_iter()
            .map(|(room, name, heads)| (room, Replica::new(own, name, heads)))
            .unzip();
        Self {
            own,
            rooms,
            replicas,
            peers: BTreeMap::new(),
            banned: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The rooms, in the order given.
    pub fn rooms(&self) -> &[Room] {
        &self.rooms
    }

    /// The replica of `room`.
    pub fn replica(&self, room: usize) -> &Replica<P> {
        &self.replicas[room]
    }

    /// The rooms (indices) shared with `peer`, in slot order; empty until its proof came.
    pub fn shared_rooms(&self, peer: &P) -> &[usize] {
        match self.peers.get(peer).map(|state| &state.phase) {
            Some(Phase::Joined { shared }) => shared,
            _ => &[],
        }
    }

    /// A rough count of the per-peer items held over every room (see
    /// [`Replica::footprint`]).
    pub fn footprint(&self) -> usize {
        let replicas: usize = self.replicas.iter().map(Replica::footprint).sum();
        replicas + self.peers.len() + self.banned.len()
    }

    /// Acts on `input` at `now`; `logs[room]` is the store of each room.
    ///
    /// # Panics
    /// If `logs` does not hold one store per room.
    pub fn handle<L: Logs>(&mut self, now: Instant, input: RoomsInput<P>, logs: &[L]) {
        assert_eq!(logs.len(), self.rooms.len(), "one store per room");
        match input {
            RoomsInput::Connected {
                peer,
                author,
                nonce,
            } => self.connected(now, peer, author, nonce, logs),
            RoomsInput::Closed { peer } => {
                if let Some(state) = self.peers.remove(&peer)
                    && let Phase::Joined { shared } = state.phase
                {
                    for room in shared {
                        self.feed(now, room, Input::Closed { peer }, logs);
                    }
                }
            }
            RoomsInput::Received { peer, frame } => self.received(now, peer, frame, logs),
            RoomsInput::Malformed { peer, error } => {
                if self.peers.get(&peer).is_some_and(|state| !state.closing) {
                    self.penalise(now, peer, Penalty::BadMessage(error), logs);
                }
            }
            RoomsInput::Accept { room, peer } => {
                if self.shared_rooms(&peer).contains(&room) {
                    self.feed(now, room, Input::Accept { peer }, logs);
                }
            }
            RoomsInput::Stored {
                room,
                peer,
                author,
                outcome,
            } => {
                let stored = Input::Stored {
                    peer,
                    author,
                    outcome,
                };
                self.feed(now, room, stored, logs);
            }
            RoomsInput::Appended { room, entries } => {
                self.feed(now, room, Input::Appended { entries }, logs);
            }
            RoomsInput::Tick => self.tick(now, logs),
        }
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<RoomsOutput<P>> {
        self.outputs.pop_front()
    }

    fn connected<L: Logs>(
        &mut self,
        now: Instant,
        peer: P,
        author: Author,
        nonce: Nonce,
        logs: &[L],
    ) {
        // Reopened lanes: the old session ends in every room first.
        self.handle(now, RoomsInput::Closed { peer }, logs);
        if self.banned.get(&peer).is_some_and(|until| *until > now) {
            self.outputs.push_back(RoomsOutput::Disconnect {
                peer,
                reason: Disconnect::Banned,
            });
            return;
        }
        self.peers.insert(
            peer,
            Peer {
                author,
                our_nonce: nonce,
                since: now,
                closing: false,
                phase: Phase::AwaitingGreet,
            },
        );
        if let Err(e) = author.check_key() {
            // Such a key signs anything: it can be no one's own log.
            return self.penalise(now, peer, Penalty::BadKey(e), logs);
        }
        let greet = Frame::Greet(Greet {
            version: PROTOCOL_VERSION,
            nonce,
        });
        self.send(peer, Lane::Live, greet);
    }

    fn received<L: Logs>(&mut self, now: Instant, peer: P, frame: Frame, logs: &[L]) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.closing {
            return;
        }
        match (&state.phase, frame) {
            (Phase::AwaitingGreet, Frame::Greet(greet)) => {
                if greet.version != PROTOCOL_VERSION {
                    let error = MessageError::Version(greet.version);
                    return self.penalise(now, peer, Penalty::BadMessage(error), logs);
                }
                state.phase = Phase::AwaitingProof {
                    their_nonce: greet.nonce,
                };
                let transcript = Transcript {
                    us: self.own,
                    them: state.author,
                    our_nonce: state.our_nonce,
                    their_nonce: greet.nonce,
                };
                let proof = Frame::Proof(transcript.our_tags(&self.rooms));
                self.send(peer, Lane::Live, proof);
            }
            (Phase::AwaitingGreet, _) => self.penalise(now, peer, Penalty::BeforeGreet, logs),
            (_, Frame::Greet(_)) => self.penalise(now, peer, Penalty::SecondGreet, logs),
            (Phase::AwaitingProof { their_nonce }, Frame::Proof(tags)) => {
                if tags.len() > MAX_ROOMS {
                    let error = MessageError::TooLarge {
                        what: "membership tags",
                        found: tags.len(),
                        limit: MAX_ROOMS,
                    };
                    return self.penalise(now, peer, Penalty::BadMessage(error), logs);
                }
                let transcript = Transcript {
                    us: self.own,
                    them: state.author,
                    our_nonce: state.our_nonce,
                    their_nonce: *their_nonce,
                };
                let shared = transcript.shared(&self.rooms, &tags);
                let author = state.author;
                state.phase = Phase::Joined {
                    shared: shared.clone(),
                };
                self.emit(RoomsEvent::Joined {
                    peer,
                    rooms: shared.clone(),
                });
                if shared.is_empty() {
                    return self.drop_peer(now, peer, Disconnect::NoSharedRoom, logs);
                }
                for room in shared {
                    self.feed(now, room, Input::Connected { peer, author }, logs);
                }
            }
            (Phase::AwaitingProof { .. }, Frame::Room(..)) => {
                self.penalise(now, peer, Penalty::BeforeProof, logs)
            }
            (Phase::Joined { .. }, Frame::Proof(_)) => {
                self.penalise(now, peer, Penalty::SecondProof, logs)
            }
            (Phase::Joined { shared }, Frame::Room(slot, message)) => {
                match shared.get(usize::from(slot)) {
                    Some(&room) => self.feed(now, room, Input::Received { peer, message }, logs),
                    None => self.penalise(now, peer, Penalty::UnknownRoom(slot), logs),
                }
            }
        }
    }

    fn tick<L: Logs>(&mut self, now: Instant, logs: &[L]) {
        for room in 0..self.rooms.len() {
            self.feed(now, room, Input::Tick, logs);
        }
        let late: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, state)| {
                !state.closing
                    && !matches!(state.phase, Phase::Joined { .. })
                    && now.saturating_duration_since(state.since) > HELLO_TIMEOUT
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in late {
            self.drop_peer(now, peer, Disconnect::NoHello, logs);
        }
        self.banned.retain(|_, until| *until > now);
    }

    /// Gives `room`'s replica `input` and carries what it asks over into our outputs.
    fn feed<L: Logs>(&mut self, now: Instant, room: usize, input: Input<P>, logs: &[L]) {
        self.replicas[room].handle(now, input, &logs[room]);
        while let Some(output) = self.replicas[room].poll() {
            match output {
                Output::Send {
                    peer,
                    lane,
                    message,
                } => {
                    let slot = self.shared_rooms(&peer).iter().position(|&r| r == room);
                    let open = self.peers.get(&peer).is_some_and(|state| !state.closing);
                    // At most MAX_ROOMS rooms: a slot always fits in a byte.
                    if let Some(slot) = slot.and_then(|slot| u8::try_from(slot).ok())
                        && open
                    {
                        self.send(peer, lane, Frame::Room(slot, message));
                    }
                }
                Output::Store { peer, batch } => {
                    self.outputs
                        .push_back(RoomsOutput::Store { room, peer, batch });
                }
                Output::Disconnect { peer, reason } => self.drop_peer(now, peer, reason, logs),
                Output::Event(event) => self.emit(RoomsEvent::Room { room, event }),
            }
        }
    }

    /// Disconnects `peer` for what no honest peer does, and keeps it out for [`BAN_TIME`].
    fn penalise<L: Logs>(&mut self, now: Instant, peer: P, penalty: Penalty, logs: &[L]) {
        self.drop_peer(now, peer, Disconnect::Penalised(penalty), logs);
    }

    /// Asks the driver to close `peer` and ends its session in every room (a penalty also
    /// bans it).
    fn drop_peer<L: Logs>(&mut self, now: Instant, peer: P, reason: Disconnect, logs: &[L]) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.closing {
            return;
        }
        state.closing = true;
        let phase = std::mem::replace(&mut state.phase, Phase::AwaitingGreet);
        if matches!(reason, Disconnect::Penalised(_)) {
            self.ban(now, peer);
        }
        self.outputs
            .push_back(RoomsOutput::Disconnect { peer, reason });
        if let Phase::Joined { shared } = phase {
            for room in shared {
                self.feed(now, room, Input::Closed { peer }, logs);
            }
        }
    }

    fn ban(&mut self, now: Instant, peer: P) {
        if self.banned.len() >= MAX_BANNED
            && let Some(oldest) = self.banned.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p)
        {
            self.banned.remove(&oldest);
        }
        self.banned.insert(peer, now + BAN_TIME);
    }

    fn send(&mut self, peer: P, lane: Lane, frame: Frame) {
        self.outputs
            .push_back(RoomsOutput::Send { peer, lane, frame });
    }

    fn emit(&mut self, event: RoomsEvent<P>) {
        self.outputs.push_back(RoomsOutput::Event(event));
    }
}

#[cfg(test)]
mod tests;
