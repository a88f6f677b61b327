//! The public handle: build a node, send lines, follow messages and status, shut down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use libp2p::{Multiaddr, PeerId};
use p2pchat_protocol::entry::check_name;
use p2pchat_protocol::{Author, Body, DecodeError, Entry, SigningKey};
use p2pchat_storage::{Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::event_loop::{Command, EventLoop, Setup};
use crate::feed::MessageFeed;
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
        /// Entries that were missing at the hello.
        received: u64,
    },
    /// Something the user should know about: a rejected entry, a fork, a bad peer.
    Warning {
        /// What happened, in words.
        message: String,
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
    /// Its lamport clock.
    pub lamport: u64,
    /// When the author wrote it (milliseconds since the Unix epoch, by their clock).
    pub timestamp: u64,
    /// The line.
    pub text: String,
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
            lamport: entry.lamport(),
            timestamp: entry.timestamp(),
            text: text.clone(),
        })
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
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.starts_with('/') {
            match s.parse() {
                Ok(addr) => PeerSpec::Addr(addr),
                Err(_) => PeerSpec::Name(s.to_owned()),
            }
        } else {
            PeerSpec::Name(s.to_owned())
        })
    }
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
    /// The network could not be set up (for example, a listen address is unusable).
    #[error("network: {0}")]
    Network(String),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
    /// A new name is pinned to another key here, so peers would see it as someone else's.
    #[error("the name {name} belongs to another key ({name}#{owner}); pick another")]
    NameTaken {
        /// The wanted name.
        name: String,
        /// The fingerprint of the key it is pinned to.
        owner: String,
    },
    /// There is no data directory (or no identity in it) for this user yet.
    #[error("no p2pchat data in {0} (start p2pchat with this --name once to create it)")]
    NoData(PathBuf),
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
        let (key, store) = open_data_dir(&name, &dir)?;
        tracing::debug!(elapsed = ?started.elapsed(), "store open");
        let (written, _) = watch::channel(());
        let (changed, _) = watch::channel(());
        let (events, first_events) = broadcast::channel(1024);
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
            written,
            changed,
            peers,
            events,
            stats: Default::default(),
            damage_reported: Default::default(),
        });

        let mut swarm = behaviour::build_swarm(&shared.key, !self.no_mdns, self.room)
            .map_err(|e| NodeError::Network(e.to_string()))?;
        let mut listeners = Vec::new();
        for addr in &self.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Network(format!("cannot listen on {addr}: {e}")))?;
            listeners.push(id);
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
        );
        let setup = Setup {
            listeners,
            mdns: !self.no_mdns,
            ready: ready_tx,
        };
        let task = tokio::spawn(event_loop.run(setup));
        ready_rx
            .await
            .map_err(|_| NodeError::Stopped)?
            .map_err(NodeError::Network)?;
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

/// Opens (creating on first use) the data directory of user `name`: its key and its store, with
/// the user's profile entry written if the name is new. Damage the store found and repaired
/// at open is in [`Store::damage`], for the caller to say.
pub(crate) fn open_data_dir(
    name: &str,
    dir: &std::path::Path,
) -> Result<(SigningKey, Store), NodeError> {
    check_name(name).map_err(NodeError::Name)?;
    create_private_dir(dir)?;
    let key = identity::load_or_create(dir)?;
    let store = Store::open(&dir.join("store"))?;
    if store.name(&Author::of(&key)).as_deref() != Some(name) {
        store.append_own(
            &key,
            Body::Profile {
                name: name.to_owned(),
            },
            crate::shared::now_ms(),
        )?;
    }
    Ok((key, store))
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| NodeError::DataDir {
            path: dir.to_owned(),
            source,
        })
}

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
    pub fn send(&self, text: &str) -> Result<Message, NodeError> {
        let body = Body::Text {
            text: text.to_owned(),
        };
        let entry = self
            .shared
            .append([body])?
            .pop()
            .ok_or(NodeError::Stopped)?;
        let name = self.shared.display_name(&entry.author());
        Message::of(&entry, name).ok_or(NodeError::Stopped)
    }

    /// Appends several lines at once, in one durable write (group commit), and sends them.
    /// Nothing is stored if any line is invalid (check each with [`check_text`] first).
    pub fn send_all(&self, texts: &[&str]) -> Result<(), NodeError> {
        let bodies = texts.iter().map(|text| Body::Text {
            text: (*text).to_owned(),
        });
        self.shared.append(bodies)?;
        Ok(())
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

    /// For each author, the highest seq this node holds.
    pub fn heads(&self) -> p2pchat_protocol::Heads {
        self.shared.store.heads()
    }

    /// Names of the peers currently connected (that have said hello).
    pub fn connected_peers(&self) -> Vec<(PeerId, Option<String>)> {
        self.shared
            .peers()
            .iter()
            .map(|(peer, state)| (*peer, state.name.clone()))
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
    }
}
