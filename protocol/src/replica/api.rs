//! What goes into and comes out of a [`super::Replica`].

use std::time::Duration;

use crate::entry::{Author, Entry, KeyError};
use crate::message::{Batch, Lane, Message, MessageError};
use crate::reconcile::ReconcileError;
use crate::store::Inserted;
use crate::validate::ValidationError;

/// Something that happened, for the core to act on.
#[derive(Debug)]
pub enum Input<P> {
    /// A connection to `peer` is up and its lanes can carry messages. `author` is the key in
    /// the peer's identity (its own log). A second `Connected` without `Closed` in between
    /// restarts the session (its lanes were reopened).
    Connected {
        /// The peer.
        peer: P,
        /// The key the peer proved in its transport handshake.
        author: Author,
    },
    /// The connection to `peer` is gone (or its lanes broke).
    Closed {
        /// The peer.
        peer: P,
    },
    /// A message from `peer`, decoded and within its limits.
    Received {
        /// The sender.
        peer: P,
        /// The message.
        message: Message,
    },
    /// Bytes from `peer` that are not a valid message.
    Malformed {
        /// The sender.
        peer: P,
        /// What is wrong with them.
        error: MessageError,
    },
    /// The driver decided to sync with `peer`, after its [`Event::Hello`].
    Accept {
        /// The peer.
        peer: P,
    },
    /// A batch the core asked to store ([`Output::Store`]) was stored (or refused) and is
    /// durable; or the store failed (`Err`, said in words).
    Stored {
        /// Whom the batch came from.
        peer: P,
        /// Whose log.
        author: Author,
        /// What the store did.
        outcome: Result<Inserted, String>,
    },
    /// Entries of the node's own log were appended and are durable (a profile among them
    /// renames the node: the next hellos carry its name).
    Appended {
        /// The new entries, oldest first.
        entries: Vec<Entry>,
    },
    /// Time passed: timers (liveness, hello deadline, stalled sources, bans) are checked.
    /// Call it every [`super::TICK`] or so.
    Tick,
}

/// Something the driver must do.
#[derive(Debug)]
pub enum Output<P> {
    /// Write `message` on `lane` to `peer`, after everything written before on that lane.
    Send {
        /// The receiver.
        peer: P,
        /// Which of its lanes.
        lane: Lane,
        /// The message.
        message: Message,
    },
    /// Plan and commit this batch (`plan_insert`), sync it to disk, and answer with
    /// [`Input::Stored`]. Batches are stored in the order asked.
    Store {
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
    Event(Event<P>),
}

/// Why the core disconnects a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Disconnect {
    /// It did what no honest peer does; it is kept out for [`super::BAN_TIME`].
    #[error("it sent {0}")]
    Penalised(Penalty),
    /// It is banned: it misbehaved a moment ago.
    #[error("it misbehaved less than {} s ago", super::BAN_TIME.as_secs())]
    Banned,
    /// Nothing arrived from it for this long.
    #[error("nothing arrived from it for {:.1} s", .0.as_secs_f64())]
    Silent(Duration),
    /// No hello arrived in time.
    #[error("it sent no hello within {} s", super::HELLO_TIMEOUT.as_secs())]
    NoHello,
    /// It proved membership of none of our rooms.
    #[error("it shares no room with us")]
    NoSharedRoom,
}

/// What a peer did that no honest peer does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Penalty {
    /// A message that does not decode, or is over a limit.
    #[error("a bad message ({0})")]
    BadMessage(MessageError),
    /// Its key cannot sign (it can be no one's own log).
    #[error("a hello with a key that {0}")]
    BadKey(KeyError),
    /// Something other than a hello before its hello.
    #[error("a message before its hello")]
    BeforeHello,
    /// A second hello in one session.
    #[error("a second hello")]
    SecondHello,
    /// A reply that does not answer the query.
    #[error("a reply that does not answer the query ({0})")]
    BadReply(ReconcileError),
    /// A reply nobody asked for.
    #[error("a reply nobody asked for")]
    UnaskedReply,
    /// An entry no honest peer relays (undecodable, forged, filed under another log, a key
    /// that cannot sign).
    #[error("an invalid entry of #{} ({error})", author.fingerprint())]
    InvalidEntry {
        /// Whose log it was offered for.
        author: Author,
        /// What is wrong with it.
        error: ValidationError,
    },
    /// Something other than a greet as a connection's first frame.
    #[error("a frame before its greet")]
    BeforeGreet,
    /// A second greet on one connection.
    #[error("a second greet")]
    SecondGreet,
    /// A room's message before its membership proof.
    #[error("a room's message before its membership proof")]
    BeforeProof,
    /// A second membership proof on one connection.
    #[error("a second membership proof")]
    SecondProof,
    /// A message for a room slot past the rooms the two share.
    #[error("a message for room slot {0}, past the rooms we share")]
    UnknownRoom(u8),
    /// More batches at once than its window allows.
    #[error(
        "more than {} batches without waiting for an ack",
        super::MAX_UNACKED_BATCHES
    )]
    Flooded,
}

/// What the core tells the user about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<P> {
    /// `peer` sent a valid hello claiming `name`. The driver answers with [`Input::Accept`]
    /// to sync with it, or closes the connection (a probe), before any other input.
    Hello {
        /// The peer.
        peer: P,
        /// The name it claims.
        name: String,
    },
    /// Progress of the catch-up on what `peer` holds and we lacked. `total` may grow while
    /// the two are still comparing heads.
    SyncProgress {
        /// The peer.
        peer: P,
        /// Entries received so far.
        received: u64,
        /// Entries known to be missing.
        total: u64,
    },
    /// We hold everything `peer` told us it holds.
    SyncComplete {
        /// The peer.
        peer: P,
        /// Entries received for it.
        received: u64,
    },
    /// The highest seq of our own log that a connected peer claims to hold changed.
    OwnLogClaimed {
        /// That seq (0: no connected peer claims any).
        seq: u64,
    },
    /// An author signed two different entries at one seq; their log is frozen.
    Forked {
        /// The author.
        author: Author,
        /// The seq.
        seq: u64,
    },
    /// A batch from `peer` stopped at an entry refused for a reason honest peers can meet
    /// (say, entries of an author whose fork we do not know yet).
    Rejected {
        /// The sender.
        peer: P,
        /// Whose log.
        author: Author,
        /// Why.
        error: ValidationError,
    },
}
