//! The public handle: build a node, send lines, follow messages and status, shut down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libp2p::{Multiaddr, PeerId};
use p2pchat_protocol::dm::{Letter, NONCE_BYTES};
use p2pchat_protocol::entry::{GENERAL, check_channel, check_name};
use p2pchat_protocol::membership::MAX_ROOMS;
use p2pchat_protocol::room::Room;
use p2pchat_protocol::{Author, Body, DecodeError, Outgoing, SigningKey};
use p2pchat_storage::{HistoryKey, RefusedLog, Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::Config;
use crate::behaviour::Transport;
use crate::dial::ConnectFailure;
use crate::event_loop::{Command, EventLoop, Setup};
use crate::feed::MessageFeed;
use crate::own_log::OwnWriter;
use crate::read::Reader;
use crate::shared::{RoomState, Shared, SharedRef};
use crate::{behaviour, identity};

/// Status events, for display. Messages themselves come from [`Node::messages`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The node listens on this address.
    Listening {
        /// The address, ending in `/p2p/<peer id>`.
        address: Multiaddr,
    },
    /// A `--peer NAME` has not been found yet (repeated every few seconds).
    LookingFor {
        /// The wanted name.
        name: String,
        /// Whether it is looked for on the LAN (mDNS is on).
        lan: bool,
        /// The relays whose rendezvous points it is looked for at (`--relay`).
        relays: Vec<Multiaddr>,
    },
    /// A peer connected, proved membership of rooms we are in, and said hello.
    Connected {
        /// The peer.
        peer: PeerId,
        /// The name it claims (with `#fingerprint` if another key has it too).
        name: String,
        /// The labels of the rooms shared with it.
        rooms: Vec<String>,
        /// Who dialed the connection kept with it.
        direction: Direction,
        /// The peer's address on that connection: the one dialed, or the one it dialed from.
        address: Multiaddr,
        /// Whether that connection is direct or goes through a relay.
        path: crate::Path,
    },
    /// A peer shown connected through a relay is now connected directly (the hole punch
    /// succeeded); the relayed connection is closed, and that is no disconnection.
    DirectConnection {
        /// The peer.
        peer: PeerId,
        /// The name it was shown connected with.
        name: String,
    },
    /// The last connection to a peer closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
        /// The name it had claimed, if it said hello.
        name: Option<String>,
    },
    /// Catching up on what a peer announced in its hello: `received` of `total` entries are
    /// now held (reported after each stored batch).
    SyncProgress {
        /// The peer.
        peer: PeerId,
        /// The name it claims.
        name: String,
        /// The room's label.
        room: String,
        /// Entries held so far of those missing at the hello.
        received: u64,
        /// Entries missing at the hello.
        total: u64,
    },
    /// The node holds everything a peer announced in its hello (`received` is 0 when it was
    /// in sync already).
    SyncComplete {
        /// The peer.
        peer: PeerId,
        /// The name it claims.
        name: String,
        /// The room's label.
        room: String,
        /// Entries that were missing at the hello.
        received: u64,
    },
    /// Something the user should know about: a rejected entry, a fork, a bad peer.
    Warning {
        /// What happened, in words.
        message: String,
    },
    /// The node's own log, found behind what it wrote before, was fetched back from peers, and
    /// the lines held meanwhile were appended on top.
    OwnLogRestored {
        /// Own entries fetched back.
        restored: u64,
        /// The peers they came from, by name.
        from: Vec<String>,
        /// Held entries appended on top.
        sent: u64,
    },
    /// A connection could not be made: to a peer we dialed (a `--peer` address, or a peer
    /// found on the LAN), or from a peer that dialed us. Said once per target and reason; repeats
    /// are counted and said as one event with their `count` when
    /// [`NOTICE_INTERVAL`](crate::NOTICE_INTERVAL) ends, at most once per interval.
    ConnectionFailed {
        /// The `--peer` address as given, the peer id of a peer found on the LAN, or the IP
        /// address an incoming connection came from.
        target: String,
        /// Whether the peer dialed us.
        incoming: bool,
        /// Why.
        reason: ConnectFailure,
        /// Failures this event covers: 1 when first said, else the repeats since the last one.
        count: u64,
    },
    /// Something failed that the node cannot fix by itself (a storage error).
    Error {
        /// What happened, in words.
        message: String,
    },
    /// An author signed two different entries at one seq: their log in that room is forked,
    /// and no more of it is accepted (a [`Event::Warning`] says so in words too).
    ForkDetected {
        /// The room's label.
        room: String,
        /// Whose log.
        author: Author,
        /// The seq of the two entries.
        seq: u64,
    },
    /// A peer did what no honest peer does and was disconnected, and is kept out for a while
    /// (a [`Event::Warning`] says so in words too, at most once in a while per peer).
    PeerPenalised {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: PenaltyReason,
    },
    /// A peer claims a name that is pinned to another key in a room: it is shown with its
    /// fingerprint (a [`Event::Warning`] says so in words too, once per peer).
    NameConflict {
        /// The room's label.
        room: String,
        /// The name claimed.
        name: String,
        /// The key that claims it.
        claimed_by: Author,
        /// The key it is pinned to.
        owner: Author,
    },
    /// The store failed to read or write (said in words too, by [`Event::Error`], or by
    /// [`Event::Warning`] for damage on disk).
    StorageError {
        /// What failed, in words.
        message: String,
        /// Whether it is damage on disk (the node goes on serving what it can read, and
        /// repairs the store at the next start).
        damage: bool,
    },
}

/// Who dialed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This node dialed the peer.
    Dialed,
    /// The peer dialed this node.
    Listened,
}

/// What a penalised peer did (see [`Event::PeerPenalised`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PenaltyReason {
    /// A frame or message that does not decode, or is over a limit.
    Malformed,
    /// A hello with a key that cannot sign.
    BadKey,
    /// A frame out of the handshake's order: before the greet, the proof or the hello, or
    /// one of them twice.
    OutOfOrder,
    /// A reply that does not answer the query, or that nobody asked for.
    BadReply,
    /// An entry no honest peer relays (undecodable, forged, filed under another log, a key
    /// that cannot sign).
    InvalidEntry {
        /// Whose log it was offered for.
        author: Author,
    },
    /// A message for a room slot past the rooms the two share.
    UnknownRoom {
        /// The slot.
        slot: u8,
    },
    /// More batches at once than its window allows.
    Flooded,
    /// A penalty this version of the node has no name for (the warning says it in words).
    Other,
}

impl From<&p2pchat_protocol::replica::Penalty> for PenaltyReason {
    fn from(penalty: &p2pchat_protocol::replica::Penalty) -> Self {
        use p2pchat_protocol::replica::Penalty;
        match penalty {
            Penalty::BadMessage(_) => PenaltyReason::Malformed,
            Penalty::BadKey(_) => PenaltyReason::BadKey,
            Penalty::BeforeHello
            | Penalty::SecondHello
            | Penalty::BeforeGreet
            | Penalty::SecondGreet
            | Penalty::BeforeProof
            | Penalty::SecondProof => PenaltyReason::OutOfOrder,
            Penalty::BadReply(_) | Penalty::UnaskedReply => PenaltyReason::BadReply,
            Penalty::InvalidEntry { author, .. } => PenaltyReason::InvalidEntry { author: *author },
            Penalty::UnknownRoom(slot) => PenaltyReason::UnknownRoom { slot: *slot },
            Penalty::Flooded => PenaltyReason::Flooded,
            _ => PenaltyReason::Other,
        }
    }
}

/// A chat line, as shown to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub author: Author,
    /// The author's current name in the room (or `#fingerprint` if no profile is known yet).
    pub name: String,
    /// The label of its room.
    pub room: String,
    /// Its position in the author's log.
    pub seq: u64,
    /// Its clock (the merged order's first key; see `p2pchat_protocol::clock`).
    pub clock: u64,
    /// When the author wrote it (milliseconds since the Unix epoch, by their clock).
    pub timestamp: u64,
    /// Where it was said: a channel of the room, or a direct conversation.
    pub place: Place,
    /// The line (a direct message decrypted).
    pub text: String,
}

/// Where a message was said.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// A channel of the room, by name ([`Place::general`] for lines without one).
    Channel(String),
    /// A direct message between this node's user and `with`, the other party (the sender of a
    /// received one, the recipient of one's own).
    Direct {
        /// The other party's key.
        with: Author,
        /// Their name as shown (as [`Message::name`] is).
        with_name: String,
    },
}

impl Place {
    /// The default channel, `general`.
    pub fn general() -> Place {
        Place::Channel(p2pchat_protocol::entry::GENERAL.to_owned())
    }
}

impl Message {
    /// Where the message sits in its room's merged history, the order [`Node::messages`]
    /// gives the stored history in (and [`Node::history`]): a user interface shows messages
    /// that arrive out of that order (a catch-up sends one log after another) in their place
    /// by this key.
    pub fn history_key(&self) -> HistoryKey {
        HistoryKey::new(self.clock, self.author, self.seq)
    }
}

/// Counts of entries received from peers (see [`Node::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries received, duplicates included.
    pub received: u64,
    /// Entries newly stored.
    pub stored: u64,
    /// Entries received that were already held.
    pub duplicates: u64,
    /// Batches that stopped at an invalid entry.
    pub rejected_batches: u64,
}

/// Checks that `text` can be sent as a message (within the size limit).
pub fn check_text(text: &str) -> Result<(), NodeError> {
    Body::Text {
        text: text.to_owned(),
    }
    .check_limits()
    .map_err(NodeError::Invalid)
}

/// A peer to keep connected to, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// A multiaddr, optionally ending in `/p2p/<peer id>`.
    Addr(Multiaddr),
    /// A user name, to be found on the LAN.
    Name(String),
}

impl std::str::FromStr for PeerSpec {
    type Err = String;

    /// A value starting with `/` is an address and must parse as one; anything else is a name
    /// and must follow the name rule ([`check_name`]): a name that breaks it could never match.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const LOOKS_LIKE: &str =
            "an address looks like /ip4/192.168.1.7/tcp/4001, optionally ending in /p2p/<peer id>";
        if s.starts_with('/') {
            let addr: Multiaddr = s
                .parse()
                .map_err(|_| format!("{}; {LOOKS_LIKE}", multiaddr_mistake(s)))?;
            if !is_dialable(&addr) {
                return Err(format!("p2pchat cannot dial {addr}: {LOOKS_LIKE}"));
            }
            Ok(PeerSpec::Addr(addr))
        } else {
            check_name(s).map_err(|e| e.to_string())?;
            Ok(PeerSpec::Name(s.to_owned()))
        }
    }
}

/// Whether p2pchat's TCP transport can dial `addr` (see [`Transport::can_dial`]).
fn is_dialable(addr: &Multiaddr) -> bool {
    Transport::Tcp.can_dial(addr)
}

/// What is wrong with `s`, an address that does not parse, naming the first part that does
/// not (`/ip4/1.2.3 is not valid: invalid IPv4 address syntax`).
fn multiaddr_mistake(s: &str) -> String {
    use libp2p::multiaddr::{Error, Protocol};
    let parts: Vec<&str> = s.split('/').skip(1).collect();
    let mut at = 0;
    while at < parts.len() {
        let mut rest = parts[at..].iter().copied();
        let parsed = Protocol::from_str_parts(&mut rest);
        let used = (parts.len() - at - rest.count()).max(1);
        let part = format!("/{}", parts[at..at + used].join("/"));
        let why = match parsed {
            Ok(_) => {
                at += used;
                continue;
            }
            Err(_) if parts[at].is_empty() => {
                return format!(
                    "{s:?} has an empty part (two slashes in a row, or one at the end)"
                );
            }
            Err(Error::UnknownProtocolString(name)) => format!("unknown protocol {name:?}"),
            Err(Error::InvalidProtocolString) => "a value is missing".to_owned(),
            Err(_) if matches!(parts[at], "tcp" | "udp") => {
                "a port is a number from 0 to 65535".to_owned()
            }
            Err(Error::ParsingError(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        return format!("{part} is not valid: {why}");
    }
    format!("{s:?} is not a valid address")
}

/// Checks that `address` can name a relay: an address p2pchat dials, then `/p2p/<peer id>`.
pub fn check_relay_address(address: &Multiaddr) -> Result<(), NodeError> {
    let refused = |reason: &str| NodeError::Dial {
        address: address.clone(),
        reason: reason.to_owned(),
    };
    if crate::relays::relay_peer(address).is_none() {
        return Err(refused(
            "a relay's address ends in /p2p/<its peer id>, as `p2pchat relay` prints it",
        ));
    }
    if !is_dialable(address) {
        return Err(refused(
            "a relay's address looks like /ip4/198.51.100.7/tcp/4001/p2p/<its peer id> (or \
             /udp/4001/quic-v1)",
        ));
    }
    Ok(())
}

/// Why a node could not start or act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No name was given, or it breaks the name rules.
    #[error("invalid name: {0}")]
    Name(DecodeError),
    /// No data directory was given.
    #[error(
        "no data directory given: give the node one (NodeBuilder::data_dir), or build it in \
         memory (NodeBuilder::in_memory)"
    )]
    NoDataDir,
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The identity key could not be loaded.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The room key could not be read or written.
    #[error(transparent)]
    RoomKey(#[from] crate::room::RoomKeyError),
    /// The rooms asked for cannot be joined together (two with one label, one twice, too
    /// many), said in words.
    #[error("{0}")]
    Rooms(String),
    /// No room has this label.
    #[error("no room called {0}")]
    NoSuchRoom(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// A line is too long or otherwise not a valid entry.
    #[error("{0}")]
    Invalid(DecodeError),
    /// The network could not be set up.
    #[error("network: {0}")]
    Network(String),
    /// A listen address is unusable: taken by another program, not this host's, …
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// Why, in words.
        reason: String,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// An address this node cannot dial.
    #[error("cannot dial {address}: {reason}")]
    Dial {
        /// The address.
        address: Multiaddr,
        /// Why, in words.
        reason: String,
    },
    /// A new name is pinned to another key here, so peers would see it as someone else's.
    #[error("the name {name} belongs to another key ({name}#{owner}); pick another")]
    NameTaken {
        /// The wanted name.
        name: String,
        /// The fingerprint of the key it is pinned to.
        owner: String,
    },
    /// The own log is behind what this key wrote before, so nothing can be appended here yet.
    #[error("{0}")]
    OwnLogBehind(String),
    /// There is no data directory (or no identity in it) for this user yet.
    #[error(
        "no p2pchat data in {0} (check --name and --data-dir; a chat started with them creates it)"
    )]
    NoData(PathBuf),
    /// The data directory holds nothing of this room (a tool that only reads never creates it).
    #[error(
        "no logs of room {room} in {dir} (check --room/--room-key; a chat started in that room creates them)"
    )]
    NoRoomData {
        /// The data directory.
        dir: PathBuf,
        /// The room's label.
        room: String,
    },
    /// The logs stored before rooms belong to no room yet, and only a chat's start decides.
    #[error(
        "the logs in {} were stored before rooms and belong to no room yet: start the chat once in the room they belong to (--room-key FILE, or no room flag for the LAN room), which gives them to it for good",
        .0.join("store").display()
    )]
    BeforeRooms(PathBuf),
    /// The data directory is a file (or something else that is not a directory).
    #[error(
        "the data directory {0} is not a directory: give --data-dir the directory that holds identity.key and store/"
    )]
    NotADirectory(PathBuf),
    /// `import` was asked to add to a user who does not exist yet.
    #[error(
        "no p2pchat user in {0}: import adds to an existing user's log, so check --name and --data-dir, or add --create to make a new user"
    )]
    NoUser(PathBuf),
    /// The name cannot be a directory name, so it cannot choose the default data directory.
    #[error(
        "the name {0:?} cannot name a data directory (it is . or .., or contains /): give --data-dir DIR, or pick another name"
    )]
    NameNotADirectory(String),
    /// No author of the room answers to this name.
    #[error("nobody called {name} in room {room}")]
    UnknownName {
        /// The name asked for.
        name: String,
        /// The room's label.
        room: String,
    },
    /// Several authors of the room answer to this name, and none is pinned to it.
    #[error("{name} is ambiguous in room {room}: say which, as one of {}", .candidates.join(", "))]
    AmbiguousName {
        /// The name asked for.
        name: String,
        /// The room's label.
        room: String,
        /// Each candidate as `name#fingerprint`.
        candidates: Vec<String>,
    },
    /// The recipient has published no encryption key in the room (an older p2pchat).
    #[error(
        "{name} has published no encryption key in room {room} (an older p2pchat?), so a direct message cannot be sealed to them"
    )]
    NoEncryptionKey {
        /// The recipient as shown.
        name: String,
        /// The room's label.
        room: String,
    },
    /// A direct message to oneself.
    #[error("a direct message needs someone else: that is you")]
    DirectToSelf,
}

impl From<StoreError> for NodeError {
    /// An entry the store refused to make is the caller's [`NodeError::Invalid`]; anything
    /// else is a store failure.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(e) => NodeError::Invalid(e),
            e => NodeError::Store(e),
        }
    }
}

/// Configures and starts a [`Node`].
#[derive(Debug, Default)]
pub struct NodeBuilder {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    in_memory: bool,
    listen: Vec<Multiaddr>,
    peers: Vec<PeerSpec>,
    relays: Vec<Multiaddr>,
    no_mdns: bool,
    rooms: Vec<Room>,
    keypair: Option<SigningKey>,
    transport: Transport,
    config: Config,
}

impl NodeBuilder {
    /// The user name this node claims (required).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where the identity and logs live (this or [`NodeBuilder::in_memory`] is required; the
    /// last one called counts).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self.in_memory = false;
        self
    }

    /// Keeps nothing on disk: no data directory, a new random key (unless
    /// [`keypair`](NodeBuilder::keypair)), and each room's logs in a
    /// store in memory ([`Store::in_memory`]), gone when the node stops. For tests and
    /// throwaway nodes; instead of [`NodeBuilder::data_dir`] (the last one called counts).
    pub fn in_memory(mut self) -> Self {
        self.in_memory = true;
        self.data_dir = None;
        self
    }

    /// An address to listen on (default: none, so the node only dials).
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// A peer to connect to and keep connected.
    pub fn peer(mut self, peer: PeerSpec) -> Self {
        self.peers.push(peer);
        self
    }

    /// A relay to use (repeatable; its address ends in `/p2p/<relay's peer id>`, as
    /// `p2pchat relay` prints it): the node holds a reservation there, so peers behind other
    /// NATs can reach it, registers there in each of its rooms (a namespace only members can
    /// compute, see `Room::rendezvous_namespace`), dials the peers of its rooms found there
    /// through the relay, and upgrades to direct connections by hole punching when it can.
    pub fn relay(mut self, address: Multiaddr) -> Self {
        self.relays.push(address);
        self
    }

    /// Turns mDNS discovery on or off (default: on).
    pub fn mdns(mut self, on: bool) -> Self {
        self.no_mdns = !on;
        self
    }

    /// The node's identity: its author key, which is also its libp2p peer id (default: the key
    /// in the data directory, created there on first use; a fresh one
    /// [`in_memory`](NodeBuilder::in_memory)). A data directory that already holds
    /// another key is refused when the node starts ([`identity::IdentityError::OtherKey`]).
    pub fn keypair(mut self, key: SigningKey) -> Self {
        self.keypair = Some(key);
        self
    }

    /// How the node reaches others (default: [`Transport::Tcp`]). With
    /// [`Transport::Memory`], listen on `/memory/0` and dial the `/memory/N` addresses
    /// [`Node::listen_addrs`] gives.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Timeouts and limits other than the chat's (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Makes the node a member of `room` (repeatable; the first is the default room, and the
    /// one that takes the logs a store kept from before rooms). Default: the LAN room only.
    /// Labels must be unique, at most [`MAX_ROOMS`] rooms.
    pub fn room(mut self, room: Room) -> Self {
        self.rooms.push(room);
        self
    }

    /// Opens the stores, starts listening and dialing, and returns once every listener has an
    /// address.
    pub async fn spawn(self) -> Result<Node, NodeError> {
        let name = self.name.unwrap_or_default();
        let dir = match (&self.data_dir, self.in_memory) {
            (_, true) => None,
            (Some(dir), false) => Some(dir),
            (None, false) => return Err(NodeError::NoDataDir),
        };
        let rooms = match self.rooms {
            rooms if rooms.is_empty() => vec![Room::lan()],
            rooms => rooms,
        };
        check_rooms(&rooms)?;
        for address in &self.relays {
            check_relay_address(address)?;
        }
        let started = std::time::Instant::now();
        let DataDir {
            key,
            reader,
            rooms,
            name: current,
            claimed,
        } = match dir {
            Some(dir) => open_data_dir(&name, dir, rooms, self.keypair.as_ref())?,
            None => {
                let key = self
                    .keypair
                    .clone()
                    .unwrap_or_else(|| SigningKey::generate(&mut rand::rngs::OsRng));
                open_in_memory(&name, rooms, key)?
            }
        };
        tracing::debug!(elapsed = ?started.elapsed(), "stores open");
        let (written, _) = watch::channel(());
        let (own_appended, _) = watch::channel(());
        let (events, first_events) = broadcast::channel(1024);
        let several = rooms.len() > 1;
        let in_room = |state: &RoomState, message: String| match several {
            true => format!("room {}: {message}", state.room.label()),
            false => message,
        };
        for state in &rooms {
            if let Some(damage) = state.store.damage() {
                // Said first, so the user reads it before anything else.
                let _ = events.send(Event::Warning {
                    message: in_room(state, damage.to_string()),
                });
            }
        }
        if let Some((label, logs)) = claimed {
            let _ = events.send(Event::Warning {
                message: claimed_words(&label, logs),
            });
        }
        if current != name {
            let _ = events.send(Event::Warning {
                message: kept_name_warning(&name, &current),
            });
        }
        for state in &rooms {
            for log in state.store.refused_logs() {
                let _ = events.send(Event::Warning {
                    message: in_room(state, refused_log_warning(&log)),
                });
            }
        }
        let shared = Arc::new(Shared {
            rooms,
            key,
            reader,
            written,
            own_appended,
            peers: Mutex::new(HashMap::new()),
            events,
            stats: Default::default(),
            warnings: Mutex::new(crate::warnings::Warnings::new(
                self.config.notice_interval(),
            )),
            damage_reported: Default::default(),
        });
        // Says so if an own log is behind: the first subscriber to events sees it.
        for room in 0..shared.rooms.len() {
            shared.check_own(room);
        }

        let mut swarm = behaviour::build_swarm(&shared.key, !self.no_mdns, self.transport)
            .map_err(|e| NodeError::Network(e.to_string()))?;
        let unusable = |address: &Multiaddr, reason| NodeError::Listen {
            address: address.clone(),
            reason,
        };
        // All checked before any is taken, so two addresses may share a port.
        for address in &self.listen {
            behaviour::check_port_free(address).map_err(|reason| unusable(address, reason))?;
        }
        let mut listeners = Vec::new();
        for address in &self.listen {
            let id = swarm
                .listen_on(address.clone())
                .map_err(|e| unusable(address, behaviour::listen_error(&e)))?;
            listeners.push((id, address.clone()));
        }
        let peer_id = *swarm.local_peer_id();
        let (commands, command_rx) = mpsc::channel(64);
        let (ready_tx, ready_rx) = oneshot::channel();
        let listen_addrs = Arc::new(Mutex::new(Vec::new()));
        let event_loop = EventLoop::new(
            swarm,
            shared.clone(),
            command_rx,
            listen_addrs.clone(),
            &self.peers,
            &self.relays,
            &self.config,
        )?;
        let setup = Setup {
            listeners,
            mdns: !self.no_mdns,
            ready: ready_tx,
        };
        let task = tokio::spawn(event_loop.run(setup));
        ready_rx.await.map_err(|_| NodeError::Stopped)??;
        tracing::debug!(elapsed = ?started.elapsed(), "listening");
        Ok(Node {
            shared,
            peer_id,
            transport: self.transport,
            commands,
            task,
            listen_addrs,
            first_events: Mutex::new(Some(first_events)),
        })
    }
}

/// A fresh random nonce for a [`Letter`], from the operating system.
fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    nonce
}

/// Checks that `rooms` can be joined together: at most [`MAX_ROOMS`], each once, each label
/// once.
pub(crate) fn check_rooms(rooms: &[Room]) -> Result<(), NodeError> {
    if rooms.len() > MAX_ROOMS {
        return Err(NodeError::Rooms(format!(
            "{} rooms given; a node is in at most {MAX_ROOMS}",
            rooms.len()
        )));
    }
    for (at, room) in rooms.iter().enumerate() {
        for earlier in &rooms[..at] {
            if earlier.label() == room.label() {
                return Err(NodeError::Rooms(format!(
                    "two rooms are called {}: give each room once, and key files with different \
                     names",
                    room.label()
                )));
            }
            if earlier.id() == room.id() {
                return Err(NodeError::Rooms(format!(
                    "rooms {} and {} are the same room (the same key or name)",
                    earlier.label(),
                    room.label()
                )));
            }
        }
    }
    Ok(())
}

/// How many logs of `store` were started before rooms (their first entry is of the format
/// before rooms, which names no room).
fn logs_before_rooms(store: &Store) -> Result<usize, NodeError> {
    let mut logs = 0;
    for author in store.heads().keys() {
        if store
            .get(author, 1)?
            .is_some_and(|first| first.format() == p2pchat_protocol::entry::FORMAT_BEFORE_ROOMS)
        {
            logs += 1;
        }
    }
    Ok(logs)
}

/// The start-up line that says which room took the logs a store kept from before rooms.
fn claimed_words(label: &str, logs: usize) -> String {
    let logs = match logs {
        1 => "1 log".to_owned(),
        n => format!("{n} logs"),
    };
    format!("logs stored before rooms ({logs}) now belong to room {label}")
}

/// What to tell the user about a log the store ignores because its key cannot sign.
pub(crate) fn refused_log_warning(log: &RefusedLog) -> String {
    format!(
        "ignoring the {} entries of #{} in the store: the author's key {}; an older p2pchat \
         accepted them, but they cannot be trusted and are neither shown nor relayed",
        log.entries,
        log.author.fingerprint(),
        log.reason
    )
}

/// A user's data directory, opened: their key, their rooms' stores, and the name they go by.
pub(crate) struct DataDir {
    /// The user's key.
    pub key: SigningKey,
    /// The user as a reader of direct messages.
    pub reader: Reader,
    /// Each room's store and own log, in the order asked.
    pub rooms: Vec<RoomState>,
    /// The name the user goes by: the one asked for on first use; after a `/nick`, that one
    /// (as the first room knows it).
    pub name: String,
    /// The room that just took the logs stored before rooms, and how many logs it took (said
    /// once, at the start that took them).
    pub claimed: Option<(String, usize)>,
}

/// Where `room`'s store lives in the data directory `dir` (recorded there if the room is new),
/// and whether this call took `store/`, the logs stored before rooms, for it
/// ([`p2pchat_storage::locate`]).
pub(crate) fn locate_store(dir: &Path, room: &Room) -> Result<(PathBuf, bool), NodeError> {
    let located = p2pchat_storage::locate(dir, &room.id())?;
    Ok((located.dir, located.claimed))
}

/// The own log's mark of the room whose store is `store_dir`: beside the key for `store/` (as
/// before rooms), beside the room's store directory for the others.
fn mark_path(dir: &Path, store_dir: &Path) -> (PathBuf, bool) {
    if store_dir == dir.join("store") {
        (dir.join(identity::OWN_HEAD_FILE), false)
    } else {
        let mut mark = store_dir.as_os_str().to_owned();
        mark.push(".");
        mark.push(identity::OWN_HEAD_FILE);
        (PathBuf::from(mark), true)
    }
}

/// Opens `room`'s store in the data directory `dir` and its own log's writer; with whether it
/// took the logs stored before rooms.
pub(crate) fn open_room(
    dir: &Path,
    room: Room,
    key: &SigningKey,
) -> Result<(RoomState, bool), NodeError> {
    let (store_dir, claimed) = locate_store(dir, &room)?;
    if let Some(parent) = store_dir.parent() {
        create_private_dir(parent)?;
    }
    let store = Store::open(&store_dir, room.id())?;
    let (mark, fresh) = mark_path(dir, &store_dir);
    let own = OwnWriter::open(&mark, &store, key, fresh)?;
    Ok((
        RoomState {
            room,
            store,
            own,
            own_claimed: Default::default(),
        },
        claimed,
    ))
}

/// Opens (creating on first use) the data directory of user `name` for `rooms`: its key, each
/// room's store and own log's writer.
/// On first use the user's profile entry names them `name`; later, `name` only identifies the
/// directory and the user keeps the name of their last profile (a `/nick` survives restarts),
/// as the first room knows it. A room joined for the first time gets a profile with that name.
/// While an own log is behind, the first profile is held like any own append. Damage a store
/// found and repaired at open is in [`Store::damage`], for the caller to say.
/// With `key`, the user is that key (refused if the directory holds another one).
pub(crate) fn open_data_dir(
    name: &str,
    dir: &Path,
    rooms: Vec<Room>,
    key: Option<&SigningKey>,
) -> Result<DataDir, NodeError> {
    check_name(name).map_err(NodeError::Name)?;
    create_private_dir(dir)?;
    let key = identity::load_or_create_with(dir, key)?;
    let mut opened = Vec::with_capacity(rooms.len());
    let mut claimed = None;
    for room in rooms {
        let (state, took) = open_room(dir, room, &key)?;
        if took {
            let logs = logs_before_rooms(&state.store)?;
            if logs > 0 {
                claimed = Some((state.room.label().to_owned(), logs));
            }
        }
        opened.push(state);
    }
    with_profiles(name, key, opened, claimed)
}

/// The rooms of a node that keeps nothing on disk ([`NodeBuilder::in_memory`]), with `key`:
/// each room's store and own log in memory.
fn open_in_memory(name: &str, rooms: Vec<Room>, key: SigningKey) -> Result<DataDir, NodeError> {
    check_name(name).map_err(NodeError::Name)?;
    let opened = rooms
        .into_iter()
        .map(|room| {
            let store = Store::in_memory(room.id());
            let own = OwnWriter::in_memory(&store, &key)?;
            Ok(RoomState {
                room,
                store,
                own,
                own_claimed: Default::default(),
            })
        })
        .collect::<Result<_, NodeError>>()?;
    with_profiles(name, key, opened, None)
}

/// The opened rooms as a [`DataDir`]; a room without a profile of the user gets one, with the
/// name the first room knows (see [`open_data_dir`]), and a room whose own log does not end in
/// the user's encryption key gets that (after the profile, in the same group commit).
fn with_profiles(
    name: &str,
    key: SigningKey,
    opened: Vec<RoomState>,
    claimed: Option<(String, usize)>,
) -> Result<DataDir, NodeError> {
    let me = Author::of(&key);
    let current = opened
        .first()
        .and_then(|state| state.store.name(&me))
        .unwrap_or_else(|| name.to_owned());
    let reader = Reader::new(&key);
    for state in &opened {
        let profile = state.store.name(&me).is_none().then(|| Body::Profile {
            name: current.clone(),
        });
        let enc_key = (state.store.enc_key(&me)? != Some(reader.enc_key())).then(|| Body::EncKey {
            key: reader.enc_key(),
        });
        let bodies: Vec<Body> = profile.into_iter().chain(enc_key).collect();
        if !bodies.is_empty() {
            state.own.append(&state.store, &key, bodies, 0)?;
        }
    }
    Ok(DataDir {
        key,
        reader,
        rooms: opened,
        name: current,
        claimed,
    })
}

/// The warning for a user started as `asked` who goes by `current` (after a `/nick`).
pub(crate) fn kept_name_warning(asked: &str, current: &str) -> String {
    format!(
        "you are {current} (your last /nick), not {asked}: --name does not rename an existing user; type /nick {asked} to take that name"
    )
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    check_not_a_file(dir)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| NodeError::DataDir {
            path: dir.to_owned(),
            source,
        })
}

/// Refuses a data directory path that exists but is not a directory.
pub(crate) fn check_not_a_file(dir: &std::path::Path) -> Result<(), NodeError> {
    if dir.exists() && !dir.is_dir() {
        return Err(NodeError::NotADirectory(dir.to_owned()));
    }
    Ok(())
}

/// How long [`Node::shutdown`] waits for the node's last tasks to release the store.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often [`Node::wait_synced`] compares heads.
const SYNC_POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// How many missing logs a [`SyncTimeout`] names in words (all are in
/// [`SyncTimeout::missing`]).
const MISSING_SAID: usize = 8;

/// [`Node::wait_synced`] gave up: what the node still lacks of what the other node holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.words())]
pub struct SyncTimeout {
    /// The node that waited.
    pub node: PeerId,
    /// The node it waited for.
    pub other: PeerId,
    /// How long it waited.
    pub waited: std::time::Duration,
    /// The labels of the rooms the two share (none: the other node is in none of ours).
    pub rooms: Vec<String>,
    /// Each log the node holds less of than the other, at the timeout.
    pub missing: Vec<MissingLog>,
}

/// One log a node holds less of than another (see [`SyncTimeout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingLog {
    /// The label of its room.
    pub room: String,
    /// Whose log.
    pub author: Author,
    /// The highest seq the node holds (0: none).
    pub held: u64,
    /// The highest seq the other node holds.
    pub wanted: u64,
}

impl SyncTimeout {
    fn words(&self) -> String {
        let logs: Vec<String> = self
            .missing
            .iter()
            .take(MISSING_SAID)
            .map(|log| {
                format!(
                    "room {}: #{} seqs {}..={}",
                    log.room,
                    log.author.fingerprint(),
                    log.held + 1,
                    log.wanted
                )
            })
            .collect();
        let more = match self.missing.len().saturating_sub(MISSING_SAID) {
            0 => String::new(),
            n => format!(" and {n} more logs"),
        };
        format!(
            "node {} is not in sync with {} after {:?} (rooms shared: {}): it lacks {}{more}",
            self.node,
            self.other,
            self.waited,
            match self.rooms.is_empty() {
                true => "none".to_owned(),
                false => self.rooms.join(", "),
            },
            logs.join("; "),
        )
    }
}

/// A running p2pchat node. Dropping it stops it at once (its task is aborted);
/// [`Node::shutdown`] stops it gracefully and waits until its data directory is free.
pub struct Node {
    pub(crate) shared: SharedRef,
    peer_id: PeerId,
    transport: Transport,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
    /// Subscribed before the node started, so the first [`Node::events`] caller also gets what
    /// was said during start-up (such as "mDNS is off").
    first_events: Mutex<Option<broadcast::Receiver<Event>>>,
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node's author id (the same key as its peer id).
    pub fn author(&self) -> Author {
        self.shared.author()
    }

    /// The addresses the node listens on, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The rooms the node is in, in the order given; the first is the default room.
    pub fn rooms(&self) -> Vec<Room> {
        self.shared
            .rooms
            .iter()
            .map(|state| state.room.clone())
            .collect()
    }

    /// The index of the room labelled `room`.
    pub(crate) fn room_index(&self, room: &str) -> Result<usize, NodeError> {
        self.shared
            .room_index(room)
            .ok_or_else(|| NodeError::NoSuchRoom(room.to_owned()))
    }

    /// Appends `text` to the node's own log in the first room (durably) and sends it to the
    /// peers connected in that room; see [`Node::send_in`].
    pub fn send(&self, text: &str) -> Result<Option<Message>, NodeError> {
        self.send_to(0, text)
    }

    /// Appends `text` to the node's own log in the room labelled `room` (durably) and sends it
    /// to the peers connected in that room.
    /// `None` when the line is held: the own log there is behind what this key wrote before,
    /// and the line is appended once a peer gave the log back (a warning says so, and
    /// [`Event::OwnLogRestored`] when it is sent).
    pub fn send_in(&self, room: &str, text: &str) -> Result<Option<Message>, NodeError> {
        self.send_to(self.room_index(room)?, text)
    }

    fn send_to(&self, room: usize, text: &str) -> Result<Option<Message>, NodeError> {
        let body = Body::Text {
            text: text.to_owned(),
        };
        self.append_one(room, body)
    }

    /// Appends one entry to the own log in `room`: the message it shows as, `None` when held.
    fn append_one(
        &self,
        room: usize,
        outgoing: impl Into<Outgoing>,
    ) -> Result<Option<Message>, NodeError> {
        let Some(entry) = self.shared.append(room, [outgoing])?.pop() else {
            return Ok(None);
        };
        Ok(self.shared.message(room, &entry))
    }

    /// Appends `text` to the own log in channel `channel` of the room labelled `room` (`general`
    /// is the default channel, as [`Node::send_in`]), and sends it; `None` when held.
    /// A channel name breaking the rule (`p2pchat_protocol::entry::check_channel`) is
    /// [`NodeError::Invalid`].
    pub fn post(
        &self,
        room: &str,
        channel: &str,
        text: &str,
    ) -> Result<Option<Message>, NodeError> {
        let room = self.room_index(room)?;
        if channel == GENERAL {
            return self.send_to(room, text);
        }
        check_channel(channel).map_err(NodeError::Invalid)?;
        let body = Body::Post {
            channel: channel.to_owned(),
            text: text.to_owned(),
        };
        self.append_one(room, body)
    }

    /// The author of room `room` that `name` means, as `--peer NAME` resolves it: the key the
    /// name is pinned to first, else the one author whose current name (or `name#fingerprint`
    /// as shown) it is, among every author the room holds, connected or not.
    /// [`NodeError::UnknownName`] or [`NodeError::AmbiguousName`] (with every candidate) else.
    pub fn resolve(&self, room: &str, name: &str) -> Result<crate::Contact, NodeError> {
        let index = self.room_index(room)?;
        let store = &self.shared.rooms[index].store;
        if let Some(owner) = store.pinned(name) {
            return Ok(self.contact(index, owner));
        }
        let mut candidates = store.authors_named(name);
        if let Some((claimed, fingerprint)) = name.rsplit_once('#') {
            candidates.extend(
                store
                    .authors_named(claimed)
                    .into_iter()
                    .filter(|author| author.fingerprint() == fingerprint),
            );
        }
        candidates.sort();
        candidates.dedup();
        match candidates[..] {
            [author] => Ok(self.contact(index, author)),
            [] => Err(NodeError::UnknownName {
                name: name.to_owned(),
                room: room.to_owned(),
            }),
            _ => {
                let mut shown: Vec<String> = candidates
                    .iter()
                    .map(|author| {
                        let claimed = store.name(author).unwrap_or_default();
                        format!("{claimed}#{}", author.fingerprint())
                    })
                    .collect();
                shown.sort();
                Err(NodeError::AmbiguousName {
                    name: name.to_owned(),
                    room: room.to_owned(),
                    candidates: shown,
                })
            }
        }
    }

    /// Seals `text` to `to` (and to this node's user) as a direct message in room `room`,
    /// appends it to the own log there and sends it; `None` when held. Refused
    /// ([`NodeError::NoEncryptionKey`]) when `to` has published no encryption key there.
    pub fn send_direct(
        &self,
        room: &str,
        to: Author,
        text: &str,
    ) -> Result<Option<Message>, NodeError> {
        let index = self.room_index(room)?;
        let state = &self.shared.rooms[index];
        let reader = &self.shared.reader;
        if to == reader.me() {
            return Err(NodeError::DirectToSelf);
        }
        check_text(text)?;
        let Some(to_key) = state.store.enc_key(&to)? else {
            return Err(NodeError::NoEncryptionKey {
                name: self.shared.display_name(index, &to),
                room: room.to_owned(),
            });
        };
        // An unusable key is refused now, in the agreement: the letter then always seals (its
        // text is checked), so a held one never holds up the lines after it.
        let pair = reader
            .pair(&to_key)
            .map_err(|e| NodeError::Invalid(DecodeError::Seal(e)))?;
        let letter = Letter {
            to,
            pair,
            text: text.to_owned(),
            nonce: fresh_nonce(),
        };
        self.append_one(index, Outgoing::Letter(letter))
    }

    /// Appends several lines at once to the first room, in one durable write (group commit),
    /// and sends them (or holds them, as [`Node::send`] does). Nothing is stored if any line
    /// is invalid (check each with [`check_text`] first).
    pub fn send_all(&self, texts: &[&str]) -> Result<(), NodeError> {
        let bodies = texts.iter().map(|text| Body::Text {
            text: (*text).to_owned(),
        });
        self.shared.append(0, bodies)?;
        Ok(())
    }

    /// Every chat message of every room exactly once: each room's stored history in merged
    /// order, room after room, then each new one.
    pub fn messages(&self) -> MessageFeed {
        MessageFeed::new(
            Arc::downgrade(&self.shared),
            self.shared.written.subscribe(),
            self.shared.rooms.len(),
        )
    }

    /// Status events: for the first caller, every event since the node started (so warnings
    /// given during start-up are not lost); for later callers, events from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.first_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| self.shared.events.subscribe())
    }

    /// How many own entries are held in all rooms, waiting for an own log to come back from a
    /// peer (see [`Node::send`]). They are kept in memory only: lost if the node stops first.
    pub fn held(&self) -> usize {
        self.shared.rooms.iter().map(|state| state.own.held()).sum()
    }

    /// For each author, the highest seq this node holds in the first room.
    pub fn heads(&self) -> p2pchat_protocol::Heads {
        self.shared.rooms[0].store.heads()
    }

    /// For each author, the highest seq this node holds in the room labelled `room`.
    pub fn heads_in(&self, room: &str) -> Result<p2pchat_protocol::Heads, NodeError> {
        Ok(self.shared.rooms[self.room_index(room)?].store.heads())
    }

    /// Connects to `address` and keeps the connection, redialing with backoff when it is lost,
    /// as for a [`PeerSpec::Addr`]; until [`Node::disconnect`]. Failures come as
    /// [`Event::ConnectionFailed`].
    pub async fn dial(&self, address: Multiaddr) -> Result<(), NodeError> {
        if !self.transport.can_dial(&address) {
            return Err(NodeError::Dial {
                address,
                reason: self.transport.dials_what().to_owned(),
            });
        }
        self.command(Command::Dial(address)).await
    }

    /// Closes every connection to `peer` and stops keeping it connected (it may connect
    /// again, or be found on the LAN again: [`Node::block`] keeps it away).
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NodeError> {
        self.command(Command::Disconnect(peer)).await
    }

    /// Refuses connections to and from `peer`, closing those open, until [`Node::unblock`].
    /// The addresses kept connected stay kept: they connect again once it is unblocked.
    pub async fn block(&self, peer: PeerId) -> Result<(), NodeError> {
        self.command(Command::Block(peer)).await
    }

    /// Allows connections to and from `peer` again, and redials its kept addresses at once.
    pub async fn unblock(&self, peer: PeerId) -> Result<(), NodeError> {
        self.command(Command::Unblock(peer)).await
    }

    async fn command(&self, command: Command) -> Result<(), NodeError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Waits until this node holds every log `other` holds, as far as `other` holds it, in
    /// every room both are in; gives up after `timeout` with what is still missing.
    pub async fn wait_synced(
        &self,
        other: &Node,
        timeout: std::time::Duration,
    ) -> Result<(), SyncTimeout> {
        let started = tokio::time::Instant::now();
        loop {
            let (rooms, missing) = self.missing_of(other);
            if missing.is_empty() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(SyncTimeout {
                    node: self.peer_id,
                    other: other.peer_id,
                    waited,
                    rooms,
                    missing,
                });
            }
            tokio::time::sleep(SYNC_POLL.min(timeout - waited)).await;
        }
    }

    /// The labels of the rooms shared with `other`, and the logs `other` holds further there.
    fn missing_of(&self, other: &Node) -> (Vec<String>, Vec<MissingLog>) {
        let mut rooms = Vec::new();
        let mut missing = Vec::new();
        for ours in &self.shared.rooms {
            let Some(theirs) = other
                .shared
                .rooms
                .iter()
                .find(|theirs| theirs.room.id() == ours.room.id())
            else {
                continue;
            };
            let label = ours.room.label().to_owned();
            let held = ours.store.heads();
            for (author, &wanted) in &theirs.store.heads() {
                let have = held.get(author).copied().unwrap_or(0);
                if have < wanted {
                    missing.push(MissingLog {
                        room: label.clone(),
                        author: *author,
                        held: have,
                        wanted,
                    });
                }
            }
            rooms.push(label);
        }
        (rooms, missing)
    }

    /// Names of the peers currently connected (that have said hello).
    pub fn connected_peers(&self) -> Vec<(PeerId, Option<String>)> {
        self.shared
            .peers()
            .iter()
            .map(|(peer, view)| (*peer, Some(view.name.clone())))
            .collect()
    }

    /// The connected peers with a catch-up under way (their `SyncProgress` said, their
    /// `SyncComplete` not yet).
    pub fn catching_up(&self) -> Vec<PeerId> {
        self.shared
            .peers()
            .iter()
            .filter(|(_, view)| view.sync.is_some())
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// Counts of entries received from peers since the node started.
    pub fn stats(&self) -> Stats {
        let counters = &self.shared.stats;
        let load = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        Stats {
            received: load(&counters.received),
            stored: load(&counters.stored),
            duplicates: load(&counters.duplicates),
            rejected_batches: load(&counters.rejected_batches),
        }
    }

    /// Stops the node: closes connections, ends its tasks and releases the data directory.
    pub async fn shutdown(mut self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let _ = (&mut self.task).await;
        // The event loop's tasks were aborted when it ended, but a batch being stored on a
        // blocking thread finishes first: wait for every holder of the store to let go, so the
        // data directory is free when this returns (bounded, should a task hang).
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        while Arc::strong_count(&self.shared) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Node {
    /// Stops the node's task at once (a no-op after [`Node::shutdown`]).
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(dir: &Path, rooms: &[Room]) -> Node {
        let mut builder = Node::builder()
            .name("alice")
            .data_dir(dir)
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .mdns(false);
        for room in rooms {
            builder = builder.room(room.clone());
        }
        builder.spawn().await.unwrap()
    }

    /// The warnings said at start-up.
    fn start_up_warnings(node: &Node) -> Vec<String> {
        let mut events = node.events();
        let mut said = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let Event::Warning { message } = event {
                said.push(message);
            }
        }
        said
    }

    #[tokio::test]
    async fn two_nodes_in_memory_sync_a_line_over_loopback() {
        let in_memory = |name: &str| {
            Node::builder()
                .name(name)
                .in_memory()
                .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .mdns(false)
        };
        let alice = in_memory("alice").spawn().await.unwrap();
        let address = alice.listen_addrs().remove(0);
        let bob = in_memory("bob")
            .peer(PeerSpec::Addr(address))
            .spawn()
            .await
            .unwrap();
        assert_ne!(alice.author(), bob.author(), "each gets a new key");
        alice.send("hello from memory").unwrap();
        let mut feed = bob.messages();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let message = feed.next().await.unwrap();
                if message.author == alice.author() {
                    return message;
                }
            }
        })
        .await
        .expect("bob receives alice's line");
        assert_eq!(
            (line.name.as_str(), line.text.as_str()),
            ("alice", "hello from memory")
        );
        assert_eq!(
            bob.heads().get(&alice.author()),
            Some(&3),
            "her profile, her encryption key and her line"
        );
        bob.shutdown().await;
        alice.shutdown().await;
    }

    #[tokio::test]
    async fn in_memory_keeps_nothing_on_disk_and_a_node_needs_one_or_the_other() {
        let root = tempfile::tempdir().unwrap();
        let unused = root.path().join("unused");
        let node = Node::builder()
            .name("alice")
            .data_dir(&unused)
            .in_memory()
            .mdns(false)
            .spawn()
            .await
            .unwrap();
        node.send("kept in memory").unwrap();
        assert_eq!(node.heads().get(&node.author()), Some(&3));
        node.shutdown().await;
        assert!(
            !unused.exists(),
            "the last of data_dir and in_memory counts"
        );
        let error = Node::builder().name("alice").spawn().await.err().unwrap();
        assert!(matches!(error, NodeError::NoDataDir), "{error}");
    }

    /// A copy, in `root`, of alice's data directory as the release before rooms wrote it.
    fn previous_release_copy(root: &Path) -> PathBuf {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/previous-release/alice"
        );
        let copied = std::process::Command::new("cp")
            .args(["-a", fixture])
            .arg(root)
            .status()
            .unwrap();
        assert!(copied.success());
        root.join("alice")
    }

    #[tokio::test]
    async fn the_logs_stored_before_rooms_go_to_the_first_room_and_it_is_said_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = previous_release_copy(root.path());
        let rooms = [Room::private(&[7; 32], "team"), Room::lan()];
        let node = start(&dir, &rooms).await;
        let labels: Vec<String> = node.rooms().iter().map(|r| r.label().into()).collect();
        assert_eq!(labels, ["team", "lan"]);
        assert_eq!(
            start_up_warnings(&node),
            ["logs stored before rooms (2 logs) now belong to room team"]
        );
        assert_eq!(node.heads_in("team").unwrap().len(), 2, "alice's and bob's");
        assert_eq!(
            node.heads_in("lan").unwrap().len(),
            1,
            "alice's new log only"
        );
        assert_eq!(
            node.heads(),
            node.heads_in("team").unwrap(),
            "the first room"
        );
        let sent = node.send_in("lan", "in the LAN room").unwrap().unwrap();
        assert_eq!((sent.room.as_str(), sent.seq), ("lan", 3));
        node.shutdown().await;

        let again = start(&dir, &[Room::lan(), rooms[0].clone()]).await;
        assert!(start_up_warnings(&again).is_empty(), "said once");
        assert_eq!(again.heads_in("team").unwrap().len(), 2);
        assert_eq!(again.heads().len(), 1, "lan is the first room now");
        again.shutdown().await;
    }

    #[test]
    fn reading_tools_never_decide_where_the_logs_stored_before_rooms_go() {
        let root = tempfile::tempdir().unwrap();
        let dir = previous_release_copy(root.path());
        let error = crate::Archive::open(&dir, &Room::lan())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("stored before rooms and belong to no room yet"),
            "{error}"
        );
        let checkup = crate::doctor::doctor(&dir, &Room::lan(), false).unwrap();
        assert!(
            !checkup.is_damaged() && checkup.logs.len() == 2,
            "the old store is checked as it is"
        );
        assert!(
            !dir.join(p2pchat_storage::REGISTRY).exists(),
            "nothing recorded, so the first chat still decides"
        );
    }

    #[test]
    fn penalties_map_to_typed_reasons() {
        use p2pchat_protocol::replica::Penalty;
        let author = Author::from_bytes([1; 32]);
        let invalid = Penalty::InvalidEntry {
            author,
            error: p2pchat_protocol::ValidationError::WrongAuthor {
                expected: author,
                found: author,
            },
        };
        for (penalty, reason) in [
            (Penalty::SecondProof, PenaltyReason::OutOfOrder),
            (Penalty::BeforeHello, PenaltyReason::OutOfOrder),
            (Penalty::UnaskedReply, PenaltyReason::BadReply),
            (
                Penalty::UnknownRoom(3),
                PenaltyReason::UnknownRoom { slot: 3 },
            ),
            (Penalty::Flooded, PenaltyReason::Flooded),
            (invalid, PenaltyReason::InvalidEntry { author }),
        ] {
            assert_eq!(PenaltyReason::from(&penalty), reason, "{penalty}");
        }
    }

    #[test]
    fn rooms_are_each_given_once_under_their_own_label() {
        let team = Room::private(&[7; 32], "team");
        assert!(check_rooms(&[Room::lan(), team.clone()]).is_ok());
        let error = check_rooms(&[team.clone(), Room::open("team").unwrap()]).unwrap_err();
        assert!(
            error.to_string().contains("two rooms are called team"),
            "{error}"
        );
        let error = check_rooms(&[team.clone(), team.clone().with_label("again")]).unwrap_err();
        assert!(error.to_string().contains("the same room"), "{error}");
        let many: Vec<Room> = (0..=MAX_ROOMS)
            .map(|n| Room::open(&format!("room{n}")).unwrap())
            .collect();
        assert!(check_rooms(&many).is_err());
        assert!(check_rooms(&many[..MAX_ROOMS]).is_ok());
    }
}
