//! The public handle: build a node, send lines, follow messages and status, shut down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use libp2p::{Multiaddr, PeerId};
use p2pchat_protocol::entry::check_name;
use p2pchat_protocol::{Author, Body, DecodeError, Entry, SigningKey};
use p2pchat_storage::{HistoryKey, RefusedLog, Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::dial::ConnectFailure;
use crate::event_loop::{Command, EventLoop, Setup};
use crate::feed::MessageFeed;
use crate::own_log::OwnWriter;
use crate::room::RoomKey;
use crate::shared::{Shared, SharedRef};
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
    /// A `--peer NAME` has not been found on the LAN yet (repeated every few seconds).
    LookingFor {
        /// The wanted name.
        name: String,
    },
    /// A peer connected and said hello.
    Connected {
        /// The peer.
        peer: PeerId,
        /// The name it claims (with `#fingerprint` if another key has it too).
        name: String,
        /// The labels of the rooms shared with it.
        rooms: Vec<String>,
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
}

/// A chat line, as shown to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub author: Author,
    /// The author's current name (or `#fingerprint` if no profile is known yet).
    pub name: String,
    /// Its position in the author's log.
    pub seq: u64,
    /// Its clock (the merged order's first key; see `p2pchat_protocol::clock`).
    pub clock: u64,
    /// When the author wrote it (milliseconds since the Unix epoch, by their clock).
    pub timestamp: u64,
    /// The line.
    pub text: String,
    /// The label of its room.
    pub room: String,
}

impl Message {
    /// The message a text entry shows as, with `name` for its author; `None` for other kinds.
    pub fn of(entry: &Entry, name: String) -> Option<Message> {
        let Body::Text { text } = entry.body() else {
            return None;
        };
        Some(Message {
            author: entry.author(),
            name,
            seq: entry.seq(),
            clock: entry.clock(),
            timestamp: entry.timestamp(),
            text: text.clone(),
            room: p2pchat_protocol::room::LAN.to_owned(),
        })
    }

    /// Where the message sits in the merged history, the order [`Node::messages`] gives the
    /// stored history in (and [`Node::history`]): a user interface shows messages that arrive
    /// out of that order (a catch-up sends one log after another) in their place by this key.
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

/// Whether p2pchat's transport can dial `addr`: `/ip4/…` or `/ip6/…`, then `/tcp/PORT` with a
/// port other than 0, then at most a `/p2p/<peer id>`.
fn is_dialable(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    matches!(parts.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)))
        && matches!(parts.next(), Some(Protocol::Tcp(port)) if port != 0)
        && matches!(parts.next(), None | Some(Protocol::P2p(_)))
        && parts.next().is_none()
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

/// Why a node could not start or act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No name was given, or it breaks the name rules.
    #[error("invalid name: {0}")]
    Name(DecodeError),
    /// No data directory was given.
    #[error("no data directory given")]
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
    /// No room has this label.
    #[error("no room called {0}")]
    NoSuchRoom(String),
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
    listen: Vec<Multiaddr>,
    peers: Vec<PeerSpec>,
    no_mdns: bool,
    room: Option<RoomKey>,
}

impl NodeBuilder {
    /// The user name this node claims (required).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where the identity and logs live (required).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
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

    /// Turns mDNS discovery on or off (default: on).
    pub fn mdns(mut self, on: bool) -> Self {
        self.no_mdns = !on;
        self
    }

    /// Makes the node a member of a private room: it connects only to peers holding the same
    /// key (default: none, the open LAN room).
    pub fn room_key(mut self, key: RoomKey) -> Self {
        self.room = Some(key);
        self
    }

    /// Opens the store, starts listening and dialing, and returns once every listener has an
    /// address.
    pub async fn spawn(self) -> Result<Node, NodeError> {
        let name = self.name.unwrap_or_default();
        let dir = self.data_dir.ok_or(NodeError::NoDataDir)?;
        let started = std::time::Instant::now();
        let DataDir {
            key,
            store,
            own,
            name: current,
        } = open_data_dir(&name, &dir)?;
        tracing::debug!(elapsed = ?started.elapsed(), "store open");
        let (written, _) = watch::channel(());
        let (own_appended, _) = watch::channel(());
        let (events, first_events) = broadcast::channel(1024);
        if current != name {
            let _ = events.send(Event::Warning {
                message: kept_name_warning(&name, &current),
            });
        }
        let peers = Mutex::new(HashMap::new());
        if let Some(damage) = store.damage() {
            // Said first, so the user reads it before anything else.
            let _ = events.send(Event::Warning {
                message: damage.to_string(),
            });
        }
        let shared = Arc::new(Shared {
            store,
            key,
            own,
            written,
            own_appended,
            own_claimed: Default::default(),
            peers,
            events,
            stats: Default::default(),
            warnings: Default::default(),
            damage_reported: Default::default(),
        });
        // Says so if the own log is behind: the first subscriber to events sees it.
        shared.check_own();
        for log in shared.store.refused_logs() {
            shared.emit(Event::Warning {
                message: refused_log_warning(&log),
            });
        }

        let mut swarm = behaviour::build_swarm(&shared.key, !self.no_mdns, self.room)
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
        let heads = shared.store.head_infos()?;
        let (commands, command_rx) = mpsc::channel(64);
        let (ready_tx, ready_rx) = oneshot::channel();
        let listen_addrs = Arc::new(Mutex::new(Vec::new()));
        let event_loop = EventLoop::new(
            swarm,
            shared.clone(),
            command_rx,
            listen_addrs.clone(),
            &self.peers,
            heads,
        )
        .map_err(|e| NodeError::Network(format!("cannot start the storage worker: {e}")))?;
        let setup = Setup {
            listeners,
            mdns: !self.no_mdns,
            private_room: self.room.is_some(),
            ready: ready_tx,
        };
        let task = tokio::spawn(event_loop.run(setup));
        ready_rx.await.map_err(|_| NodeError::Stopped)??;
        tracing::debug!(elapsed = ?started.elapsed(), "listening");
        Ok(Node {
            shared,
            peer_id,
            commands,
            task,
            listen_addrs,
            first_events: Mutex::new(Some(first_events)),
        })
    }
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

/// A user's data directory, opened: their key, their store, and the name they go by.
pub(crate) struct DataDir {
    /// The user's key.
    pub key: SigningKey,
    /// The store of every log held.
    pub store: Store,
    /// The one writer of the own log.
    pub own: OwnWriter,
    /// The name the user goes by: the one asked for on first use; after a `/nick`, that one.
    pub name: String,
}

/// Opens (creating on first use) the data directory of user `name`: its key, its store and the
/// own log's writer.
/// On first use the user's profile entry names them `name`; later, `name` only identifies the
/// directory and the user keeps the name of their last profile (a `/nick` survives restarts). While the own log is behind, the
/// first profile is held like any own append. Damage the store found and repaired at open is in
/// [`Store::damage`], for the caller to say.
pub(crate) fn open_data_dir(name: &str, dir: &std::path::Path) -> Result<DataDir, NodeError> {
    check_name(name).map_err(NodeError::Name)?;
    create_private_dir(dir)?;
    let key = identity::load_or_create(dir)?;
    let store = Store::open(&dir.join("store"), p2pchat_protocol::Room::lan().id())?;
    let own = OwnWriter::open(dir, &store, &key)?;
    let name = match store.name(&Author::of(&key)) {
        Some(current) => current,
        None => {
            let profile = Body::Profile {
                name: name.to_owned(),
            };
            own.append(&store, &key, [profile], 0)?;
            name.to_owned()
        }
    };
    Ok(DataDir {
        key,
        store,
        own,
        name,
    })
}

/// The warning for a user started as `asked` who goes by `current` (after a `/nick`).
pub(crate) fn kept_name_warning(asked: &str, current: &str) -> String {
    format!(
        "you are {current} (your last /nick), not {asked}: --name does not rename an existing user; type /nick {asked} to take that name"
    )
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), NodeError> {
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

/// A running p2pchat node. Dropping it without [`Node::shutdown`] leaves its task running.
pub struct Node {
    pub(crate) shared: SharedRef,
    peer_id: PeerId,
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

    /// Appends `text` to the node's own log (durably) and sends it to connected peers.
    /// `None` when the line is held: the own log is behind what this key wrote before, and
    /// the line is appended once a peer gave the log back (a warning says so, and
    /// [`Event::OwnLogRestored`] when it is sent).
    pub fn send(&self, text: &str) -> Result<Option<Message>, NodeError> {
        let body = Body::Text {
            text: text.to_owned(),
        };
        let Some(entry) = self.shared.append([body])?.pop() else {
            return Ok(None);
        };
        let name = self.shared.display_name(&entry.author());
        Ok(Message::of(&entry, name))
    }

    /// Appends several lines at once, in one durable write (group commit), and sends them
    /// (or holds them, as [`Node::send`] does). Nothing is stored if any line is invalid
    /// (check each with [`check_text`] first).
    pub fn send_all(&self, texts: &[&str]) -> Result<(), NodeError> {
        let bodies = texts.iter().map(|text| Body::Text {
            text: (*text).to_owned(),
        });
        self.shared.append(bodies)?;
        Ok(())
    }

    /// The rooms the node is in, in the order given; the first is the default room.
    pub fn rooms(&self) -> Vec<p2pchat_protocol::Room> {
        vec![p2pchat_protocol::Room::lan()]
    }

    /// [`Node::send`] in the room labelled `room`.
    pub fn send_in(&self, room: &str, text: &str) -> Result<Option<Message>, NodeError> {
        match self.rooms().first() {
            Some(first) if first.label() == room => self.send(text),
            _ => Err(NodeError::NoSuchRoom(room.to_owned())),
        }
    }

    /// Every chat message exactly once: stored history in merged order, then each new one.
    pub fn messages(&self) -> MessageFeed {
        MessageFeed::new(
            Arc::downgrade(&self.shared),
            self.shared.written.subscribe(),
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

    /// How many own entries are held, waiting for the own log to come back from a peer (see
    /// [`Node::send`]). They are kept in memory only: lost if the node stops first.
    pub fn held(&self) -> usize {
        self.shared.own.held()
    }

    /// For each author, the highest seq this node holds.
    pub fn heads(&self) -> p2pchat_protocol::Heads {
        self.shared.store.heads()
    }

    /// Names of the peers currently connected (that have said hello).
    pub fn connected_peers(&self) -> Vec<(PeerId, Option<String>)> {
        self.shared
            .peers()
            .iter()
            .map(|(peer, view)| (*peer, Some(view.name.clone())))
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
    pub async fn shutdown(self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let _ = self.task.await;
        // The event loop's tasks were aborted when it ended, but a batch being stored on a
        // blocking thread finishes first: wait for every holder of the store to let go, so the
        // data directory is free when this returns (bounded, should a task hang).
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        while Arc::strong_count(&self.shared) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
