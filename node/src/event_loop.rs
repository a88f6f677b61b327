//! The event loop: the driver of the multi-room core ([`Rooms`]: membership, then one replica
//! per shared room). It owns the swarm and the core, finds peers on the LAN and keeps the
//! user's peers connected, opens each peer's lanes, and moves what happens between the lanes,
//! the core, the storage worker and the user: every input goes to the core, and everything the
//! core then asks for is done before the next one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Stream, Swarm};
use libp2p::{dcutr, mdns, rendezvous};
use p2pchat_protocol::limits::MAX_BATCH_ENTRIES;
use p2pchat_protocol::membership::Nonce;
use p2pchat_protocol::message::{Frame, Lane, Message, MessageError};
use p2pchat_protocol::replica::{self, BAN_TIME, Disconnect, Event as CoreEvent, Penalty};
use p2pchat_protocol::rooms::{Rooms, RoomsEvent, RoomsInput, RoomsOutput};
use p2pchat_protocol::{DecodeError, ValidationError};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::dial::{Redialer, dial_failure, incoming_failure};
use crate::discovery::{Discovery, Link, dialed_by_us, keep_link};
use crate::handover::{Handovers, Held};
use crate::lanes::{self, LANE_QUEUE, LaneEvent, TaskId};
use crate::relays::{self, DISCOVER_LIMIT, REGISTRATION_TTL, Relays};
use crate::shared::{PeerView, SharedRef};
use crate::storer::{self, Job};
use crate::warnings::Cause;
use crate::{Event, NodeError, Path, PeerSpec, SyncProgress, behaviour, identity};

/// How often the node says which wanted names it has not found yet.
const LOOKING_FOR_INTERVAL: Duration = Duration::from_secs(10);
/// How long a peer that shares no room with us keeps its connection after the core closed
/// it, so that the frames queued before (our membership proof) reach it and it can tell why.
const CLOSE_GRACE: Duration = Duration::from_millis(500);
/// Wait before reopening the lanes of a peer that stays connected after they broke.
const REOPEN_DELAY: Duration = Duration::from_millis(200);
/// Sessions in a row whose lanes broke before a frame was read, after which the peer's
/// connections are closed (and it is dialed anew) instead of reopening the lanes once more: a
/// connection whose streams are all refused (the other side stuck closing it) never heals.
const MAX_FUTILE_SESSIONS: u32 = 5;
/// Lane events (messages read) waiting for the loop; a reader waits while it is full.
const INBOX: usize = 256;
/// Answers of the storage worker waiting for the loop.
const STORED_QUEUE: usize = 256;
/// Inbound lanes held for peers whose connection the loop has not seen yet.
const MAX_EARLY_LANES: usize = 64;
/// How long a second connection through a relay to a peer connected through a relay already
/// stays up before it is closed: long enough for the hole punch it was opened for.
const RELAYED_DUPLICATE_GRACE: Duration = Duration::from_secs(30);
/// First wait, after a peer connected through a relay, before a new hole punch is tried (by
/// opening another relayed connection: each starts one); doubled after each until
/// [`UPGRADE_RETRY_MAX`].
const UPGRADE_RETRY_FIRST: Duration = Duration::from_secs(30);
/// See [`UPGRADE_RETRY_FIRST`].
const UPGRADE_RETRY_MAX: Duration = Duration::from_secs(600);
/// How long a peer found at a rendezvous point that could not be reached through the relay
/// waits before it is dialed again (registrations outlive the peers that made them).
const NO_CIRCUIT_RETRY: Duration = Duration::from_secs(60);
/// Both lanes, in the order sessions keep them.
const LANES: [Lane; 2] = [Lane::Live, Lane::Bulk];

/// Requests from the node's handle to its event loop.
#[derive(Debug)]
pub enum Command {
    /// Stop everything and return.
    Shutdown,
    /// Connect to this address and keep the connection (as a `--peer` address).
    Dial(Multiaddr),
    /// Close every connection to this peer and stop keeping it connected.
    Disconnect(PeerId),
    /// Refuse connections to and from this peer, and close those open.
    Block(PeerId),
    /// Allow connections to and from this peer again.
    Unblock(PeerId),
}

/// What the loop is started with.
pub struct Setup {
    /// Listeners that must report an address before the node is ready, with the address each
    /// was asked for.
    pub listeners: Vec<(ListenerId, Multiaddr)>,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// Answered once the node is ready, or with why it could not start.
    pub ready: oneshot::Sender<Result<(), NodeError>>,
}

/// A peer the core knows of: from the moment its kept connection is chosen until its last
/// connection closes.
struct Session {
    /// Its lanes, while open (not while broken, nor once the peer is being disconnected).
    lanes: Option<Lanes>,
    /// When to reopen its lanes, after they broke.
    reopen_at: Option<Instant>,
    /// When to close its connection, once what was queued for it went out (a peer that shares
    /// no room with us).
    close_at: Option<Instant>,
    /// When its lanes were opened.
    started: Instant,
    /// Whether the core was told it is connected (and not yet that it closed).
    in_core: bool,
    /// The rooms (indices) it proved membership of, in slot order (empty until then).
    rooms: Vec<usize>,
    /// The name it said hello with (its first hello's), once accepted.
    name: Option<String>,
    /// The name it was shown as connected with: said once until it leaves, however often its
    /// lanes are reopened.
    shown: Option<String>,
    /// Accepted, but not shown as connected yet: see [`Announcement`].
    announcing: Option<Announcement>,
    /// Whether a frame was read on its lanes.
    read: bool,
    /// Sessions in a row (this one included, once its lanes broke) whose lanes broke before a
    /// frame was read; a session the peer replaced by reopening its lanes does not count. See
    /// [`MAX_FUTILE_SESSIONS`].
    futile: u32,
}

/// A peer accepted for the first time is shown as connected once the core has compared heads
/// with it a first time in every room the two share: once the peer's answer to our first
/// query there is in (or at once when no query was needed). Till then, what it holds of our
/// own log is unknown, and a line typed on seeing "connected" could fork a log that the peer
/// holds further (a data directory restored from a backup). Its catch-up events wait
/// meanwhile, so that they follow `Connected`.
struct Announcement {
    /// The name to show.
    name: String,
    /// The shared rooms whose heads were not compared yet, each with whether a query went
    /// out there, whose answer is awaited.
    waiting: Vec<(usize, bool)>,
    /// Catch-up events said meanwhile: per room, the latest progress, then the completion.
    held: Vec<Event>,
}

/// The tasks of one peer's lanes: ours (writers) and its (readers), by [`slot`].
struct Lanes {
    writers: [Writer; 2],
    readers: [Option<(TaskId, AbortHandle)>; 2],
}

/// The writer task of one of our lanes, and its queue.
struct Writer {
    task: TaskId,
    queue: mpsc::Sender<Frame>,
    handle: AbortHandle,
}

impl Lanes {
    /// Stops every task.
    fn end(self) {
        for writer in self.writers {
            writer.handle.abort();
        }
        for (_, handle) in self.readers.into_iter().flatten() {
            handle.abort();
        }
    }

    /// Whether `task` is one of these lanes' tasks.
    fn runs(&self, task: TaskId) -> bool {
        self.writers.iter().any(|writer| writer.task == task) || self.reads(task)
    }

    /// Whether `task` is one of these lanes' readers.
    fn reads(&self, task: TaskId) -> bool {
        self.readers.iter().flatten().any(|(id, _)| *id == task)
    }
}

impl Session {
    /// Stops the lanes' tasks (the session stays until the connection closes).
    fn end_lanes(&mut self) {
        if let Some(lanes) = self.lanes.take() {
            lanes.end();
        }
    }
}

/// Where sessions keep `lane`'s tasks.
fn slot(lane: Lane) -> usize {
    match lane {
        Lane::Live => 0,
        Lane::Bulk => 1,
    }
}

/// See the module docs.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    shared: SharedRef,
    commands: mpsc::Receiver<Command>,
    /// The multi-room core.
    core: Rooms<PeerId>,
    listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
    redialer: Redialer,
    discovery: Discovery,
    /// The address each listener was asked for.
    listeners: HashMap<ListenerId, Multiaddr>,
    /// Open connections per peer, oldest first, with whether we dialed each.
    connections: HashMap<PeerId, Vec<(ConnectionId, bool)>>,
    /// The peer's address on each open connection.
    remote_addresses: HashMap<ConnectionId, Multiaddr>,
    sessions: HashMap<PeerId, Session>,
    /// Inbound lanes of peers whose session has not started (their connection event has not
    /// come yet, or their lanes are about to be reopened), with when each came.
    early: HashMap<PeerId, Vec<(Lane, Stream, Instant)>>,
    /// What the lane tasks say.
    lane_tx: mpsc::Sender<LaneEvent>,
    lane_rx: mpsc::Receiver<LaneEvent>,
    /// The storage worker's queue, and jobs held while it is full (bounded by the core's
    /// windows: it asks to store only so many batches per peer before they are answered).
    jobs: mpsc::Sender<Job>,
    held_jobs: VecDeque<Job>,
    /// The storage worker's answers.
    stored: mpsc::Receiver<RoomsInput<PeerId>>,
    /// The own log's highest seq the core knows of, per room.
    own_given: Vec<u64>,
    /// The relays given with `--relay`.
    relays: Relays,
    /// Whether mDNS runs.
    mdns: bool,
    /// The open connections that go through a relay.
    relayed: HashSet<ConnectionId>,
    /// The path of each connected peer's first connection, until it is told to the user (with
    /// the peer's `Connected`, and a `DirectConnection` when it changes to direct); it stays
    /// while the peer's departure is held (see [`Handovers`]).
    told_path: HashMap<PeerId, Path>,
    /// Until when a hole punch may be under way (the failures of its losing dials are not said).
    punching_until: Option<Instant>,
    /// Relayed duplicates to close once their hole punch had its time.
    close_later: HashMap<ConnectionId, Instant>,
    /// Peers connected through a relay only, with when to try a hole punch again.
    upgrade_retry: HashMap<PeerId, (Instant, Backoff)>,
    /// Dials under way, and peers between their relayed connection and a direct one.
    handovers: Handovers,
    next_task: TaskId,
    tasks: JoinSet<()>,
}

impl EventLoop {
    /// Prepares the loop (and starts the storage worker); [`EventLoop::run`] drives it.
    pub fn new(
        swarm: Swarm<Behaviour>,
        shared: SharedRef,
        commands: mpsc::Receiver<Command>,
        listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
        peers: &[PeerSpec],
        relays: &[Multiaddr],
        config: &crate::Config,
    ) -> Result<Self, NodeError> {
        let (lane_tx, lane_rx) = mpsc::channel(INBOX);
        let (stored_tx, stored) = mpsc::channel(STORED_QUEUE);
        let me = shared.author();
        let mut rooms = Vec::with_capacity(shared.rooms.len());
        for (index, state) in shared.rooms.iter().enumerate() {
            let heads = state.store.head_infos()?;
            rooms.push((state.room.clone(), shared.own_name(index), heads));
        }
        let core = Rooms::new(me, rooms);
        let own_given = shared
            .rooms
            .iter()
            .map(|state| state.store.head_seq(&me))
            .collect();
        let jobs = storer::spawn(shared.clone(), stored_tx)
            .map_err(|e| NodeError::Network(format!("cannot start the storage worker: {e}")))?;
        let (first, longest) = config.redial_backoff();
        let mut redialer = Redialer::new(first, longest);
        let mut names = Vec::new();
        let now = Instant::now();
        for peer in peers {
            match peer {
                PeerSpec::Addr(addr) => redialer.add(addr.clone(), now),
                PeerSpec::Name(name) => names.push(name.clone()),
            }
        }
        let discovery = Discovery::new(*swarm.local_peer_id(), names, peers.is_empty());
        Ok(Self {
            swarm,
            own_given,
            relays: Relays::new(relays, now),
            mdns: true,
            relayed: HashSet::new(),
            told_path: HashMap::new(),
            punching_until: None,
            close_later: HashMap::new(),
            upgrade_retry: HashMap::new(),
            handovers: Handovers::default(),
            shared,
            commands,
            core,
            listen_addrs,
            redialer,
            discovery,
            listeners: HashMap::new(),
            connections: HashMap::new(),
            remote_addresses: HashMap::new(),
            sessions: HashMap::new(),
            early: HashMap::new(),
            lane_tx,
            lane_rx,
            jobs,
            held_jobs: VecDeque::new(),
            stored,
            next_task: 0,
            tasks: JoinSet::new(),
        })
    }

    /// Runs until [`Command::Shutdown`].
    pub async fn run(mut self, setup: Setup) {
        let mut waiting: std::collections::HashSet<ListenerId> =
            setup.listeners.iter().map(|(id, _)| *id).collect();
        self.listeners = setup.listeners.into_iter().collect();
        let mut ready = Some(setup.ready);
        if waiting.is_empty() {
            ready.take().map(|r| r.send(Ok(())));
        }
        self.mdns = setup.mdns;
        if !setup.mdns && !self.relays.any() {
            for name in self.discovery.wanted() {
                self.shared.emit(Event::Warning {
                    message: format!("cannot look for {name} by name: mDNS is off (--no-mdns); give an address instead"),
                });
            }
        }
        let mut control = self.swarm.behaviour().lanes.new_control();
        let (Ok(mut live_in), Ok(mut bulk_in)) = (
            control.accept(lanes::protocol(Lane::Live)),
            control.accept(lanes::protocol(Lane::Bulk)),
        ) else {
            ready.take().map(|r| {
                r.send(Err(NodeError::Network(
                    "lane protocols registered twice".into(),
                )))
            });
            return;
        };
        let mut own_appended = self.shared.own_appended.subscribe();
        self.give_own_appends();
        let mut tick = tokio::time::interval(replica::TICK);
        let mut looking_for = tokio::time::interval_at(
            Instant::now() + Duration::from_secs(3),
            LOOKING_FOR_INTERVAL,
        );
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    let listened = match &event {
                        SwarmEvent::NewListenAddr { listener_id, .. } => Some((*listener_id, Ok(()))),
                        SwarmEvent::ListenerClosed { listener_id, reason: Err(e), .. } => {
                            Some((*listener_id, Err(NodeError::Listen {
                                address: self.listener_address(*listener_id),
                                reason: behaviour::transport_words(e),
                            })))
                        }
                        _ => None,
                    };
                    // Handled first, so the address is recorded before `ready` is answered.
                    self.on_swarm_event(event);
                    if let Some((listener, result)) = listened
                        && waiting.remove(&listener)
                        && (waiting.is_empty() || result.is_err())
                    {
                        ready.take().map(|r| r.send(result));
                    }
                }
                Some((peer, stream)) = live_in.next() => self.on_inbound_lane(peer, Lane::Live, stream),
                Some((peer, stream)) = bulk_in.next() => self.on_inbound_lane(peer, Lane::Bulk, stream),
                Some(event) = self.lane_rx.recv() => self.on_lane_event(event),
                Some(stored) = self.stored.recv() => self.on_stored(stored),
                Ok(()) = own_appended.changed() => self.give_own_appends(),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(command),
                },
                _ = tick.tick() => {
                    self.input(RoomsInput::Tick);
                    self.reopen_due();
                    self.queue_held_jobs();
                    self.relays_due();
                    self.paths_due();
                    self.dial_due();
                    self.shared.say_warning_summaries();
                }
                _ = looking_for.tick(), if setup.mdns || self.relays.any() => self.say_who_is_missing(),
            }
            // Reap finished tasks so the set does not grow.
            while self.tasks.try_join_next().is_some() {}
        }
        self.tasks.shutdown().await;
    }

    /// Carries out a request of the node's handle (other than shutting down).
    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Shutdown => {}
            Command::Dial(address) => {
                self.redialer.add(address, now);
                self.dial_due();
            }
            Command::Disconnect(peer) => {
                self.redialer.forget(peer);
                self.drop_peer(peer);
            }
            Command::Block(peer) => {
                // Closes its connections too.
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            Command::Unblock(peer) => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                self.redialer.retry_now(peer, now);
                self.dial_due();
            }
        }
    }

    /// Gives the core `input`, then does everything it asks for, in order. An input that
    /// answers one of its outputs (accepting a hello) is given before any other.
    fn input(&mut self, input: RoomsInput<PeerId>) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let compared = match &input {
                RoomsInput::Accept { room, peer } => Some((*peer, *room, false)),
                RoomsInput::Received {
                    peer,
                    frame: Frame::Room(slot, Message::Reply(_)),
                } => self
                    .room_of_slot(peer, *slot)
                    .map(|room| (*peer, room, true)),
                _ => None,
            };
            self.core
                .handle(std::time::Instant::now(), input, &self.shared.rooms);
            while let Some(output) = self.core.poll() {
                if let Some(answer) = self.perform(output) {
                    inputs.push_front(answer);
                }
            }
            if let Some((peer, room, replied)) = compared {
                self.announce(peer, room, replied);
            }
        }
    }

    /// The room (index) of `peer`'s shared room numbered `slot`.
    fn room_of_slot(&self, peer: &PeerId, slot: u8) -> Option<usize> {
        let session = self.sessions.get(peer)?;
        session.rooms.get(usize::from(slot)).copied()
    }

    /// Shows `peer` as connected, if it waits for that, once heads were compared a first time
    /// in every room shared with it: after the core took its first reply there, or its
    /// acceptance when that sent no query.
    fn announce(&mut self, peer: PeerId, room: usize, replied: bool) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        let Some(announcing) = session.announcing.as_mut() else {
            return;
        };
        announcing
            .waiting
            .retain(|(waiting, queried)| *waiting != room || (*queried && !replied));
        if !announcing.waiting.is_empty() {
            return;
        }
        let Some(announcing) = session.announcing.take() else {
            return;
        };
        session.shown = Some(announcing.name.clone());
        let rooms = session
            .rooms
            .iter()
            .map(|&room| self.shared.rooms[room].room.label().to_owned())
            .collect();
        let kept = self.kept(peer).and_then(|id| {
            let connections = self.connections.get(&peer)?;
            let (_, dialed) = connections.iter().find(|(at, _)| *at == id)?;
            Some((*dialed, self.remote_addresses.get(&id)?.clone()))
        });
        let (direction, address) = match kept {
            Some((true, address)) => (crate::Direction::Dialed, address),
            Some((false, address)) => (crate::Direction::Listened, address),
            None => (crate::Direction::Listened, Multiaddr::empty()),
        };
        // Said with the path it has now; one that went direct since its first connection
        // (relayed) came is said direct, then that the hole punch worked.
        let path = self.path_to(peer);
        let first_path = self.told_path.insert(peer, path).unwrap_or(path);
        let name = announcing.name;
        self.shared.emit(Event::Connected {
            peer,
            name: name.clone(),
            rooms,
            direction,
            address,
            path,
        });
        if first_path == Path::Relayed && path == Path::Direct {
            self.shared.emit(Event::DirectConnection { peer, name });
        }
        for event in announcing.held {
            self.shared.emit(event);
        }
    }

    /// Says a catch-up event, or holds it while its peer is not shown as connected yet.
    fn say_catch_up(&mut self, peer: PeerId, event: Event) {
        match self
            .sessions
            .get_mut(&peer)
            .and_then(|s| s.announcing.as_mut())
        {
            Some(announcing) => {
                // Only the latest progress of each room matters.
                if let Event::SyncProgress { room, .. } = &event {
                    announcing.held.retain(
                        |held| !matches!(held, Event::SyncProgress { room: at, .. } if at == room),
                    );
                }
                announcing.held.push(event);
            }
            None => self.shared.emit(event),
        }
    }

    /// Does what the core asks; returns the core's answer, if it needs one at once.
    fn perform(&mut self, output: RoomsOutput<PeerId>) -> Option<RoomsInput<PeerId>> {
        match output {
            RoomsOutput::Send { peer, lane, frame } => self.send(peer, lane, frame),
            RoomsOutput::Store { room, peer, batch } => {
                let from = self.sessions.get(&peer).and_then(|s| s.name.clone());
                let from = from.unwrap_or_else(|| peer.to_string());
                self.queue_job(Job::Batch {
                    room,
                    peer,
                    from,
                    batch,
                });
            }
            RoomsOutput::Disconnect { peer, reason } => self.disconnect(peer, &reason),
            RoomsOutput::Event(RoomsEvent::Joined { peer, rooms }) => {
                if let Some(session) = self.sessions.get_mut(&peer) {
                    session.rooms = rooms;
                }
            }
            RoomsOutput::Event(RoomsEvent::Room { room, event }) => {
                return self.on_core_event(room, event);
            }
            RoomsOutput::Event(other) => tracing::debug!(?other, "an event of the core not shown"),
        }
        None
    }

    /// Queues `frame` on `peer`'s `lane`; a peer whose queue is full does not read, and is
    /// disconnected (the event loop never waits for a peer).
    fn send(&mut self, peer: PeerId, lane: Lane, frame: Frame) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            tracing::debug!(%peer, ?lane, "no session; frame dropped");
            return;
        };
        if let (Frame::Room(slot, Message::Query(_)), Some(announcing)) =
            (&frame, &mut session.announcing)
            && let Some(&room) = session.rooms.get(usize::from(*slot))
        {
            for (waiting, queried) in &mut announcing.waiting {
                *queried |= *waiting == room;
            }
        }
        let Some(lanes) = &session.lanes else {
            tracing::debug!(%peer, ?lane, "no lanes open; frame dropped");
            return;
        };
        match lanes.writers[slot(lane)].queue.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!(%peer, ?lane, "the peer does not read its lane; dropping its connection");
                self.drop_peer(peer);
            }
            // The writer stopped; it says why.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Closes every connection to `peer` (and stops its lanes meanwhile).
    fn drop_peer(&mut self, peer: PeerId) {
        if let Some(session) = self.sessions.get_mut(&peer) {
            session.end_lanes();
            session.reopen_at = None;
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// The core disconnects `peer`: says why when the user should know.
    fn disconnect(&mut self, peer: PeerId, reason: &Disconnect) {
        match reason {
            Disconnect::Penalised(penalty) => {
                self.shared.emit(Event::PeerPenalised {
                    peer,
                    reason: penalty.into(),
                });
                self.shared
                    .warn(&peer.to_string(), Cause::Misbehaved, 1, || {
                        format!(
                            "peer {peer} sent {}; disconnecting it for {} s",
                            penalty_words(penalty),
                            BAN_TIME.as_secs()
                        )
                    });
            }
            Disconnect::NoSharedRoom => {
                self.discovery.shares_no_room(peer, Instant::now());
                self.redialer.shares_no_room(peer, Instant::now());
                self.shared
                    .warn(&peer.to_string(), Cause::NoSharedRoom, 1, || {
                        format!("closed {peer}: it shares no room with us")
                    });
                // Gracefully: our proof may still be queued, and the peer says why only once
                // it has it. The lanes stay open meanwhile (a lane closed now could reach the
                // peer before the proof on the other, and end its session first); the core
                // ignores what else comes from the peer.
                if let Some(session) = self.sessions.get_mut(&peer) {
                    session.close_at = Some(Instant::now() + CLOSE_GRACE);
                }
                return;
            }
            // Silence is said by the Disconnected event; the others are the core's routine.
            reason => tracing::debug!(%peer, "disconnecting: {reason}"),
        }
        self.drop_peer(peer);
    }

    /// Something happened in room `room`.
    fn on_core_event(
        &mut self,
        room: usize,
        event: CoreEvent<PeerId>,
    ) -> Option<RoomsInput<PeerId>> {
        let label = || self.shared.rooms[room].room.label().to_owned();
        match event {
            CoreEvent::Hello { peer, name } => return self.on_hello(room, peer, name),
            CoreEvent::SyncProgress {
                peer,
                received,
                total,
            } => {
                let room = label();
                let name = self.show_sync(peer, Some(SyncProgress { received, total }));
                let event = Event::SyncProgress {
                    peer,
                    name,
                    room,
                    received,
                    total,
                };
                self.say_catch_up(peer, event);
            }
            CoreEvent::SyncComplete { peer, received } => {
                let room = label();
                let name = self.show_sync(peer, None);
                let event = Event::SyncComplete {
                    peer,
                    name,
                    room,
                    received,
                };
                self.say_catch_up(peer, event);
            }
            CoreEvent::OwnLogClaimed { seq } => {
                self.shared.rooms[room]
                    .own_claimed
                    .store(seq, std::sync::atomic::Ordering::Relaxed);
                self.queue_job(Job::CheckOwn(room));
            }
            CoreEvent::Forked { author, seq } => {
                self.shared.emit(Event::ForkDetected {
                    room: label(),
                    author,
                    seq,
                });
                let name = self.shared.display_name(room, &author);
                self.shared.emit(Event::Warning {
                    message: format!(
                        "{name} ({}) signed two different entries at seq {seq}{}: their log \
                         there is forked, no more of it will be accepted",
                        author.fingerprint(),
                        self.shared.in_room(room),
                    ),
                });
            }
            CoreEvent::Rejected { peer, error, .. } => {
                let in_room = self.shared.in_room(room);
                self.shared.warn(&peer.to_string(), Cause::Rejected, 1, || {
                    format!("rejected an entry from peer {peer}{in_room}: {error}")
                });
            }
            other => tracing::debug!(?other, "an event of the core not shown"),
        }
        None
    }

    /// Publishes `peer`'s catch-up for the user interfaces; returns the name it said hello
    /// with.
    fn show_sync(&mut self, peer: PeerId, sync: Option<SyncProgress>) -> String {
        let mut peers = self.shared.peers();
        match peers.get_mut(&peer) {
            Some(view) => {
                view.sync = sync;
                view.name.clone()
            }
            None => String::new(),
        }
    }

    /// A peer said hello in `room`: pins its name there, warns when the name is another key's,
    /// and syncs the room with it ([`RoomsInput::Accept`]) if it is a peer we want, else
    /// closes the probe. Its first hello names it.
    fn on_hello(&mut self, room: usize, peer: PeerId, name: String) -> Option<RoomsInput<PeerId>> {
        // Sessions start only for peers whose id is an ed25519 key.
        let author = identity::author_of(&peer)?;
        self.queue_job(Job::Pin {
            room,
            peer,
            name: name.clone(),
            author,
        });
        let first = self.sessions.get(&peer)?.name.is_none();
        if !first {
            return Some(RoomsInput::Accept { room, peer });
        }
        let connections = &self.connections;
        self.discovery
            .learned(peer, &name, |p| connections.contains_key(p));
        if !self.should_accept(&peer) {
            tracing::debug!(%peer, name, "not a peer we want; closing the probe");
            self.drop_peer(peer);
            return None;
        }
        let shown = self.shared.qualified(room, &name, &author);
        let session = self.sessions.get_mut(&peer)?;
        session.name = Some(name.clone());
        if session.shown.is_none() {
            session.announcing = Some(Announcement {
                name: shown,
                waiting: session.rooms.iter().map(|&room| (room, false)).collect(),
                held: Vec::new(),
            });
        }
        let path = self.path_to(peer);
        let mut peers = self.shared.peers();
        match peers.get_mut(&peer) {
            Some(view) => view.name = name,
            None => {
                peers.insert(
                    peer,
                    PeerView {
                        name,
                        sync: None,
                        path,
                    },
                );
            }
        }
        drop(peers);
        Some(RoomsInput::Accept { room, peer })
    }

    /// Queues a job for the storage worker, or holds it while the worker's queue is full.
    fn queue_job(&mut self, job: Job) {
        self.held_jobs.push_back(job);
        self.queue_held_jobs();
    }

    /// Moves held jobs to the storage worker's queue, in order, while there is room.
    fn queue_held_jobs(&mut self) {
        while let Some(job) = self.held_jobs.pop_front() {
            match self.jobs.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    self.held_jobs.push_front(job);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    self.held_jobs.clear();
                    self.shared.storage_failed(
                        "the storage worker stopped: nothing received is stored any more; \
                         restart p2pchat"
                            .into(),
                    );
                    return;
                }
            }
        }
    }

    /// The storage worker stored a batch (or failed to).
    fn on_stored(&mut self, stored: RoomsInput<PeerId>) {
        if let RoomsInput::Stored {
            room,
            author,
            outcome: Ok(inserted),
            ..
        } = &stored
            && *author == self.shared.author()
        {
            // Given to the core with this answer, not again as an append.
            self.own_given[*room] = self.own_given[*room].max(inserted.held_through);
        }
        self.queue_held_jobs();
        self.input(stored);
    }

    /// Gives the core the own entries appended since it last heard (a rename among them).
    fn give_own_appends(&mut self) {
        // The storage worker's answers first: own entries that came back from a peer reach
        // the core with them, and are not given twice.
        while let Ok(stored) = self.stored.try_recv() {
            self.on_stored(stored);
        }
        let me = self.shared.author();
        for room in 0..self.shared.rooms.len() {
            while self.own_given[room] < self.shared.rooms[room].store.head_seq(&me) {
                let from = self.own_given[room] + 1;
                let read =
                    self.shared.rooms[room]
                        .store
                        .range(&me, from, MAX_BATCH_ENTRIES, usize::MAX);
                let entries = match read {
                    Ok(entries) if !entries.is_empty() => entries,
                    Ok(_) => break,
                    Err(e) => {
                        self.shared.store_failed("reading the store", &e);
                        break;
                    }
                };
                self.own_given[room] = entries.last().map_or(from, |entry| entry.seq());
                self.input(RoomsInput::Appended { room, entries });
            }
        }
    }

    /// Starts a fresh session with `peer` on newly opened lanes: its first, or after its lanes
    /// broke or it reopened them.
    fn start_session(&mut self, peer: PeerId) {
        let Some(author) = identity::author_of(&peer) else {
            tracing::debug!(%peer, "peer id is not an ed25519 key; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        };
        let (shown, futile) = match self.sessions.remove(&peer) {
            Some(mut old) => {
                old.end_lanes();
                if old.in_core {
                    self.input(RoomsInput::Closed { peer });
                }
                (old.shown, if old.read { 0 } else { old.futile })
            }
            None => (None, 0),
        };
        let writers = LANES.map(|lane| self.spawn_writer(peer, lane));
        self.sessions.insert(
            peer,
            Session {
                lanes: Some(Lanes {
                    writers,
                    readers: [None, None],
                }),
                reopen_at: None,
                close_at: None,
                started: Instant::now(),
                in_core: true,
                rooms: Vec::new(),
                name: None,
                shown,
                announcing: None,
                read: false,
                futile,
            },
        );
        for (lane, stream, _) in self.early.remove(&peer).unwrap_or_default() {
            self.spawn_reader(peer, lane, stream);
        }
        // A fresh nonce for every session: membership proofs are bound to it.
        let nonce = Nonce::new(rand::random());
        self.input(RoomsInput::Connected {
            peer,
            author,
            nonce,
        });
    }

    fn task_id(&mut self) -> TaskId {
        self.next_task += 1;
        self.next_task
    }

    fn spawn_writer(&mut self, peer: PeerId, lane: Lane) -> Writer {
        let task = self.task_id();
        let (queue, queued) = mpsc::channel(LANE_QUEUE);
        let control = self.swarm.behaviour().lanes.new_control();
        let events = self.lane_tx.clone();
        let handle = self
            .tasks
            .spawn(lanes::write_lane(control, peer, lane, task, queued, events));
        Writer {
            task,
            queue,
            handle,
        }
    }

    /// Reads `peer`'s `lane` from `stream`, in place of the one read before (if any).
    fn spawn_reader(&mut self, peer: PeerId, lane: Lane, stream: Stream) {
        let task = self.task_id();
        let Some(lanes) = self.sessions.get_mut(&peer).and_then(|s| s.lanes.as_mut()) else {
            return;
        };
        let events = self.lane_tx.clone();
        let handle = self
            .tasks
            .spawn(lanes::read_lane(peer, task, stream, events));
        if let Some((_, older)) = lanes.readers[slot(lane)].replace((task, handle)) {
            older.abort();
        }
    }

    /// The peer opened one of its lanes to us.
    fn on_inbound_lane(&mut self, peer: PeerId, lane: Lane, stream: Stream) {
        let reading = match self.sessions.get(&peer) {
            Some(Session {
                lanes: Some(lanes),
                started,
                ..
            }) => {
                let reading = lanes.readers[slot(lane)].is_some();
                if reading && started.elapsed() < REOPEN_DELAY {
                    // An honest peer reopens its lanes only after they broke, and waits
                    // before it does: a flood of lanes is not followed.
                    tracing::debug!(%peer, ?lane, "the peer reopened its lanes too soon");
                    return;
                }
                Some(reading)
            }
            // Being disconnected.
            Some(session) if session.reopen_at.is_none() => return,
            // About to reopen our lanes, or not seen connected yet.
            _ => None,
        };
        match reading {
            Some(reading) => {
                if reading {
                    // The peer reopened its lanes: its side began a new session, and so
                    // does ours, before the new lane's hello is read.
                    tracing::debug!(%peer, ?lane, "the peer reopened its lanes");
                    self.start_session(peer);
                }
                self.spawn_reader(peer, lane, stream);
            }
            // Read once the session starts.
            None => {
                let early_lanes: usize = self.early.values().map(Vec::len).sum();
                if early_lanes < MAX_EARLY_LANES {
                    let held = self.early.entry(peer).or_default();
                    held.retain(|(held_lane, ..)| *held_lane != lane);
                    held.push((lane, stream, Instant::now()));
                }
            }
        }
    }

    fn on_lane_event(&mut self, event: LaneEvent) {
        let (peer, task) = match &event {
            LaneEvent::Received { peer, task, .. }
            | LaneEvent::Ended { peer, task, .. }
            | LaneEvent::Stalled { peer, task, .. }
            | LaneEvent::Unsupported { peer, task } => (*peer, *task),
        };
        let Some(lanes) = self.sessions.get(&peer).and_then(|s| s.lanes.as_ref()) else {
            return; // lanes since stopped
        };
        if !lanes.runs(task) {
            return; // a task since replaced
        }
        match event {
            LaneEvent::Received { frame, .. } => {
                if lanes.reads(task) {
                    if let Some(session) = self.sessions.get_mut(&peer) {
                        session.read = true;
                    }
                    self.input(match frame {
                        Ok(frame) => RoomsInput::Received { peer, frame },
                        Err(error) => RoomsInput::Malformed { peer, error },
                    });
                }
            }
            LaneEvent::Ended { why, .. } => {
                tracing::debug!(%peer, "a lane ended ({why}); reopening them");
                self.lanes_broke(peer);
            }
            LaneEvent::Stalled { why, .. } => {
                self.shared.warn(&peer.to_string(), Cause::Stalled, 1, || {
                    format!("dropped a lane from {peer}: {why}")
                });
                self.lanes_broke(peer);
            }
            LaneEvent::Unsupported { .. } => {
                // Its lanes' protocol names are not ours: the release before rooms speaks
                // protocol 2.
                self.shared
                    .warn(&peer.to_string(), Cause::Incompatible, 1, || {
                        format!("{peer} speaks an older p2pchat (protocol 2); it must upgrade")
                    });
                self.drop_peer(peer);
            }
        }
    }

    /// A lane of `peer` broke while it stays connected: the session ends, and a new one starts
    /// on reopened lanes shortly.
    fn lanes_broke(&mut self, peer: PeerId) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        if session.close_at.is_some() {
            // Being closed: the peer is done too.
            return self.drop_peer(peer);
        }
        if !session.read {
            session.futile += 1;
        }
        if session.futile >= MAX_FUTILE_SESSIONS {
            tracing::debug!(%peer, "its lanes keep breaking before a frame is read; reconnecting");
            return self.drop_peer(peer);
        }
        session.end_lanes();
        session.reopen_at = Some(Instant::now() + REOPEN_DELAY);
        if std::mem::take(&mut session.in_core) {
            self.input(RoomsInput::Closed { peer });
        }
    }

    /// Reopens the lanes whose time has come, and lets go of inbound lanes held for longer
    /// than a hello may take (their connection is gone, or never came).
    fn reopen_due(&mut self) {
        let now = Instant::now();
        self.early.retain(|_, held| {
            held.retain(|(.., since)| now - *since < replica::HELLO_TIMEOUT);
            !held.is_empty()
        });
        let due: Vec<PeerId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.reopen_at.is_some_and(|at| at <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.start_session(peer);
        }
        let closing: Vec<PeerId> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| s.close_at.is_some_and(|at| at <= now))
            .map(|(peer, s)| {
                s.close_at = None;
                *peer
            })
            .collect();
        for peer in closing {
            self.drop_peer(peer);
        }
    }

    fn dial_due(&mut self) {
        let now = Instant::now();
        let mut dials = self.redialer.due(now);
        let connections = &self.connections;
        let shared = &self.shared;
        dials.extend(self.discovery.due(
            now,
            |peer| connections.contains_key(peer),
            |name| shared.pinned(name),
        ));
        for dial in dials {
            let (id, peer) = (dial.connection_id(), dial.get_peer_id());
            if peer.is_some_and(|peer| {
                self.swarm
                    .behaviour()
                    .blocked
                    .blocked_peers()
                    .contains(&peer)
            }) {
                // Blocked by the user: neither dialed nor said; tried after the backoff, and at
                // once when unblocked.
                self.redialer.dial_failed(id, now);
                continue;
            }
            if let Err(e) = self.swarm.dial(dial) {
                // No OutgoingConnectionError follows a dial refused at once: back off here.
                tracing::debug!("dial not started: {e}");
                self.dial_failed(id, peer, &e);
            }
        }
    }

    /// Backs off a failed dial and says why it failed (unless said lately).
    fn dial_failed(&mut self, connection: ConnectionId, peer: Option<PeerId>, error: &DialError) {
        if let Some(relay) = self.relays.dial_failed(connection, Instant::now()) {
            let reason = dial_failure(error).map_or_else(|| error.to_string(), |r| r.to_string());
            self.shared.warn(&relay.to_string(), Cause::Relay, 1, || {
                format!("cannot reach relay {relay}: {reason}")
            });
            return;
        }
        let target = self.redialer.dial_failed(connection, Instant::now());
        if peer.is_some_and(|peer| self.connections.contains_key(&peer)) {
            // Connected anyway (a hole punch's losing dial, or a second path): nothing to say.
            return;
        }
        if through_relay_only(error) {
            // A peer found at a rendezvous point may have left long ago (registrations last
            // two hours): not worth a line. The relay's own failures are said as such.
            tracing::debug!(?peer, "no circuit: {error}");
            if let Some(peer) = peer {
                self.discovery
                    .hold_off(peer, Instant::now() + NO_CIRCUIT_RETRY);
            }
            return;
        }
        let Some(reason) = dial_failure(error) else {
            return;
        };
        // A `--peer` address is named as given; a peer found on the LAN by its id.
        let target = match (target, peer) {
            (Some(address), _) => address.to_string(),
            (None, Some(peer)) => peer.to_string(),
            (None, None) => return,
        };
        self.shared.connection_failed(&target, false, reason);
    }

    /// The address listener `id` was asked for (or, for a listener not started by the user,
    /// the unspecified address).
    fn listener_address(&self, id: ListenerId) -> Multiaddr {
        self.listeners
            .get(&id)
            .cloned()
            .unwrap_or_else(Multiaddr::empty)
    }

    fn say_who_is_missing(&mut self) {
        let connected: Vec<String> = self
            .shared
            .peers()
            .values()
            .map(|view| view.name.clone())
            .collect();
        for name in self.discovery.missing_names(&connected) {
            self.shared.emit(Event::LookingFor {
                name: name.to_owned(),
                lan: self.mdns,
                relays: self.relays.addresses(),
            });
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                if self.relays.reserved(listener_id).is_some() {
                    // What peers find at the rendezvous point: how to reach us through it.
                    self.swarm.add_external_address(address.clone());
                }
                // A reservation's address names us already.
                let address = match address.iter().last() {
                    Some(Protocol::P2p(_)) => address,
                    _ => address.with(Protocol::P2p(*self.swarm.local_peer_id())),
                };
                self.listen_addrs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(address.clone());
                self.shared.emit(Event::Listening { address });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                tracing::debug!(%peer_id, ?endpoint, "connection established");
                let mut warnings = self.shared.warnings();
                for target in self.redialer.connected(peer_id, connection_id) {
                    warnings.connected(&target.to_string());
                }
                warnings.connected(&peer_id.to_string());
                if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                    warnings.connected(&ip);
                }
                drop(warnings);
                self.discovery.connected(peer_id);
                self.relays.connected(peer_id);
                self.handovers.dial_connected(connection_id);
                // A peer held since its relayed connection closed goes on (see `Handovers`).
                let resumed = self.handovers.connected(&peer_id);
                self.remote_addresses
                    .insert(connection_id, endpoint.get_remote_address().clone());
                if endpoint.is_relayed() {
                    self.relayed.insert(connection_id);
                    self.punching_until = Some(Instant::now() + RELAYED_DUPLICATE_GRACE);
                }
                let was = match resumed {
                    Some(_) => Some(Path::Relayed),
                    None => self
                        .connections
                        .contains_key(&peer_id)
                        .then(|| self.path_to(peer_id)),
                };
                let connections = self.connections.entry(peer_id).or_default();
                connections.push((connection_id, dialed_by_us(&endpoint)));
                let keep = self.kept(peer_id);
                let kept_relayed = keep.is_some_and(|id| self.relayed.contains(&id));
                let now = Instant::now();
                for (id, _) in self.connections.get(&peer_id).cloned().unwrap_or_default() {
                    if Some(id) == keep {
                        continue;
                    }
                    if kept_relayed && self.relayed.contains(&id) {
                        // It may be punching a hole: give it the time.
                        self.close_later
                            .entry(id)
                            .or_insert(now + RELAYED_DUPLICATE_GRACE);
                    } else {
                        tracing::debug!(%peer_id, ?id, "closing a duplicate connection");
                        self.swarm.close_connection(id);
                    }
                }
                // A session starts on the first kept connection, or anew on one that came
                // while the peer was being disconnected.
                let idle = self
                    .sessions
                    .get(&peer_id)
                    .is_none_or(|s| s.lanes.is_none() && s.reopen_at.is_none());
                // A relay is no chat peer: it speaks no lanes.
                if keep == Some(connection_id) && idle && !self.relays.is_relay(&peer_id) {
                    self.start_session(peer_id);
                }
                if let Some(held) = resumed
                    && let Some(session) = self.sessions.get_mut(&peer_id)
                {
                    session.shown = held.shown;
                }
                self.path_changed(peer_id, was);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.remote_addresses.remove(&connection_id);
                let relayed = self.relayed.remove(&connection_id);
                self.close_later.remove(&connection_id);
                if let Some(connections) = self.connections.get_mut(&peer_id) {
                    connections.retain(|(id, _)| *id != connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    for listener in self.relays.disconnected(peer_id, Instant::now()) {
                        self.swarm.remove_listener(listener);
                    }
                    if self.handovers.waits(&peer_id, relayed) {
                        self.hold(peer_id);
                    } else {
                        self.on_peer_gone(peer_id, None);
                    }
                } else {
                    let path = self.path_to(peer_id);
                    if let Some(view) = self.shared.peers().get_mut(&peer_id) {
                        view.path = path;
                    }
                }
            }
            SwarmEvent::Dialing {
                peer_id: Some(peer),
                connection_id,
            } => self.handovers.dialing(connection_id, peer),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, "dial failed: {error}");
                self.dial_failed(connection_id, peer_id, &error);
                if let Some((peer, held)) = self.handovers.dial_failed(connection_id) {
                    self.on_peer_gone(peer, Some(held));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, "incoming connection failed: {error}");
                // Named by IP: each connection comes from another port.
                // A hole punch dials both ways at once, and one of the two loses: not said.
                let punching = self
                    .punching_until
                    .is_some_and(|until| Instant::now() < until);
                if let Some(reason) = incoming_failure(&error)
                    && !punching
                    && let Some(ip) = ip_of(&send_back_addr)
                {
                    self.shared.connection_failed(&ip, true, reason);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self.relays.reservation_lost(listener_id, Instant::now()) {
                    if let Err(e) = reason {
                        let words = behaviour::transport_words(&e);
                        self.shared.warn(&relay.to_string(), Cause::Relay, 1, || {
                            format!("no reservation at relay {relay}: {words}")
                        });
                    }
                    return;
                }
                let Err(e) = reason else { return };
                let address = self.listener_address(listener_id);
                self.shared.emit(Event::Warning {
                    message: format!(
                        "stopped listening on {address}: {}",
                        behaviour::transport_words(&e)
                    ),
                });
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                let address = self.listener_address(listener_id);
                let words = behaviour::transport_words(&error);
                self.shared
                    .warn(&address.to_string(), Cause::Listening, 1, || {
                        format!("listening on {address}: {words}")
                    });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                let now = Instant::now();
                for (peer, addr) in found {
                    tracing::debug!(%peer, %addr, "discovered");
                    self.discovery.discovered(peer, addr, now);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    self.discovery.expired(peer, &addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rendezvous(event)) => self.on_rendezvous(event),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => {
                // A success shows as the direct connection's ConnectionEstablished.
                tracing::debug!(%remote_peer_id, ?result, "hole punch");
            }
            _ => {}
        }
    }

    /// The connection kept with `peer`: a direct one if there is one (see [`keep_link`]: both
    /// sides choose the same).
    fn kept(&self, peer: PeerId) -> Option<ConnectionId> {
        let links: Vec<Link> = self
            .connections
            .get(&peer)?
            .iter()
            .map(|&(id, dialed)| Link {
                id,
                dialed,
                path: match self.relayed.contains(&id) {
                    true => Path::Relayed,
                    false => Path::Direct,
                },
                quic: self
                    .remote_addresses
                    .get(&id)
                    .is_some_and(|address| address.iter().any(|p| p == Protocol::QuicV1)),
            })
            .collect();
        keep_link(*self.swarm.local_peer_id(), peer, &links)
    }

    /// The path of the connection kept with `peer`.
    fn path_to(&self, peer: PeerId) -> Path {
        match self.kept(peer) {
            Some(id) if self.relayed.contains(&id) => Path::Relayed,
            _ => Path::Direct,
        }
    }

    /// A connection to `peer` came, when its path was `was` (`None`: its first connection):
    /// tracks its path, says when it went direct, and schedules hole punches while relayed.
    fn path_changed(&mut self, peer: PeerId, was: Option<Path>) {
        let path = self.path_to(peer);
        if let Some(view) = self.shared.peers().get_mut(&peer) {
            view.path = path;
        }
        let now = Instant::now();
        match path {
            Path::Relayed => {
                // One side retries, so that the two do not open twice the circuits.
                if *self.swarm.local_peer_id() < peer {
                    self.upgrade_retry.entry(peer).or_insert_with(|| {
                        let mut backoff = Backoff::new(UPGRADE_RETRY_FIRST, UPGRADE_RETRY_MAX);
                        (now + backoff.next(), backoff)
                    });
                }
            }
            Path::Direct => {
                self.upgrade_retry.remove(&peer);
            }
        }
        match was {
            None => {
                self.told_path.insert(peer, path);
            }
            Some(Path::Relayed) if path == Path::Direct => {
                tracing::debug!(%peer, "now connected directly");
                let shown = self.sessions.get(&peer).and_then(|s| s.shown.clone());
                // A peer not shown yet is said connected with its first path, then direct.
                if let Some(name) = shown
                    && self.told_path.insert(peer, Path::Direct) == Some(Path::Relayed)
                {
                    self.shared.emit(Event::DirectConnection { peer, name });
                }
            }
            Some(_) => {}
        }
    }

    /// Closes relayed duplicates whose hole punch had its time, and tries hole punches again
    /// for peers still connected through a relay only.
    fn paths_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ConnectionId> = self
            .close_later
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.close_later.remove(&id);
            self.swarm.close_connection(id);
        }
        for (peer, held) in self.handovers.due(now) {
            self.on_peer_gone(peer, Some(held));
        }
        let retry: Vec<PeerId> = self
            .upgrade_retry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in retry {
            if !self.connections.contains_key(&peer) || self.path_to(peer) == Path::Direct {
                self.upgrade_retry.remove(&peer);
                continue;
            }
            if let Some((at, backoff)) = self.upgrade_retry.get_mut(&peer) {
                *at = now + backoff.next();
            }
            let circuits = self.relays.circuits_to(peer);
            if circuits.is_empty() {
                continue;
            }
            tracing::debug!(%peer, "trying a hole punch again");
            let dial = DialOpts::peer_id(peer)
                .condition(PeerCondition::Always)
                .addresses(circuits)
                .build();
            if let Err(e) = self.swarm.dial(dial) {
                tracing::debug!(%peer, "no new relayed connection: {e}");
            }
        }
    }

    /// Keeps the relays connected, their reservations held and registrations renewed, and
    /// looks up the peers of our rooms at them.
    fn relays_due(&mut self) {
        if !self.relays.any() {
            return;
        }
        let day = relays::utc_day();
        let due = self.relays.due(Instant::now(), day);
        for (index, address, peer) in due.dial {
            let dial = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(vec![address])
                .build();
            let id = dial.connection_id();
            self.relays.dialing(index, id);
            if let Err(e) = self.swarm.dial(dial) {
                self.dial_failed(id, Some(peer), &e);
            }
        }
        for (index, circuit) in due.listen {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => self.relays.listening(index, id),
                Err(e) => self.shared.emit(Event::Warning {
                    message: format!(
                        "cannot ask {circuit} for a reservation: {}",
                        behaviour::listen_error(&e)
                    ),
                }),
            }
        }
        let namespace = |room: &crate::shared::RoomState, day: u64| {
            rendezvous::Namespace::new(room.room.rendezvous_namespace(day))
        };
        for (relay, day) in due.register {
            for state in &self.shared.rooms {
                let Ok(namespace) = namespace(state, day) else {
                    continue;
                };
                let ttl = Some(REGISTRATION_TTL);
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .rendezvous
                    .register(namespace, relay, ttl)
                {
                    tracing::debug!(%relay, "cannot register: {e}");
                }
            }
        }
        for (relay, day) in due.discover {
            for state in &self.shared.rooms {
                // Yesterday's too: a peer whose clock is behind ours around midnight.
                for day in [day, day.saturating_sub(1)] {
                    let Ok(namespace) = namespace(state, day) else {
                        continue;
                    };
                    self.swarm.behaviour_mut().rendezvous.discover(
                        Some(namespace),
                        None,
                        Some(DISCOVER_LIMIT),
                        relay,
                    );
                }
            }
        }
    }

    /// What a relay's rendezvous point answered.
    fn on_rendezvous(&mut self, event: rendezvous::client::Event) {
        use rendezvous::client::Event as Rdv;
        match event {
            Rdv::Discovered { registrations, .. } => {
                let now = Instant::now();
                let local = *self.swarm.local_peer_id();
                for registration in registrations {
                    let peer = registration.record.peer_id();
                    if peer == local || self.relays.is_relay(&peer) {
                        continue;
                    }
                    for address in registration.record.addresses() {
                        tracing::debug!(%peer, %address, "found at a rendezvous point");
                        self.discovery.discovered(peer, address.clone(), now);
                    }
                }
            }
            Rdv::RegisterFailed {
                rendezvous_node,
                error,
                ..
            } => {
                let relay = self
                    .relays
                    .address_of(&rendezvous_node)
                    .map_or_else(|| rendezvous_node.to_string(), |a| a.to_string());
                self.shared.warn(&relay, Cause::Relay, 1, || {
                    format!("relay {relay} refused to register us in a room: {error:?}")
                });
            }
            Rdv::DiscoverFailed {
                rendezvous_node,
                error,
                ..
            } => tracing::debug!(%rendezvous_node, ?error, "lookup failed"),
            other => tracing::debug!(?other, "rendezvous"),
        }
    }

    /// The last connection to `peer`, a relayed one, closed while a dial to it is under way:
    /// its session ends, but its departure waits for that dial (see [`Handovers`]); it stays
    /// listed meanwhile.
    fn hold(&mut self, peer: PeerId) {
        tracing::debug!(%peer, "relayed connection closed while dialing; holding the peer");
        self.upgrade_retry.remove(&peer);
        let shown = self
            .sessions
            .remove(&peer)
            .and_then(|session| self.end_session(peer, session));
        self.handovers.hold(peer, shown, Instant::now());
    }

    /// Stops `peer`'s session; returns the name it was shown with.
    fn end_session(&mut self, peer: PeerId, mut session: Session) -> Option<String> {
        session.end_lanes();
        if session.in_core {
            self.input(RoomsInput::Closed { peer });
        }
        session.shown
    }

    /// The last connection to `peer` closed, or the wait of its `held` departure ended.
    fn on_peer_gone(&mut self, peer: PeerId, held: Option<Held>) {
        self.redialer.disconnected(peer, Instant::now());
        self.early.remove(&peer);
        self.told_path.remove(&peer);
        self.upgrade_retry.remove(&peer);
        let shown = match (self.sessions.remove(&peer), held) {
            (Some(session), _) => self.end_session(peer, session),
            (None, Some(held)) => held.shown,
            (None, None) => return,
        };
        self.shared.peers().remove(&peer);
        if let Some(name) = shown {
            self.shared.emit(Event::Disconnected {
                peer,
                name: Some(name),
            });
        }
    }

    /// Peers that dialed us, address targets and peers we want by name are synced with;
    /// a probe we dialed to learn a name is not.
    fn should_accept(&self, peer: &PeerId) -> bool {
        let dialed_by_them = self
            .connections
            .get(peer)
            .is_some_and(|c| c.iter().any(|(_, we_dialed)| !we_dialed));
        dialed_by_them
            || self.redialer.is_target(peer)
            || self.discovery.wants(peer, |name| self.shared.pinned(name))
    }
}

/// What a peer sent that no honest peer sends, in words (never a decoder's debug text).
fn penalty_words(penalty: &Penalty) -> String {
    match penalty {
        Penalty::BadMessage(MessageError::Malformed(_)) => {
            "a frame that does not decode (not a message of p2pchat protocol 3)".to_owned()
        }
        Penalty::InvalidEntry {
            author,
            error: ValidationError::Decode(DecodeError::Malformed(_)),
        } => format!(
            "an entry for the log of #{} that does not decode",
            author.fingerprint()
        ),
        Penalty::InvalidEntry {
            error: ValidationError::WrongAuthor { expected, found },
            ..
        } => format!(
            "an entry signed by #{} as one of #{}'s log",
            found.fingerprint(),
            expected.fingerprint()
        ),
        Penalty::InvalidEntry {
            author,
            error: ValidationError::BadAuthorKey(reason),
        } => format!(
            "entries of #{}, a key that {reason}: no honest peer relays them (older p2pchat \
             versions accepted them; if it runs one, it should be updated)",
            author.fingerprint()
        ),
        penalty => penalty.to_string(),
    }
}

/// Whether every address `error` tried went through a relay.
fn through_relay_only(error: &DialError) -> bool {
    match error {
        DialError::Transport(errors) => {
            !errors.is_empty()
                && errors
                    .iter()
                    .all(|(address, _)| address.iter().any(|p| p == Protocol::P2pCircuit))
        }
        _ => false,
    }
}

/// The IP address in `address`, as text.
fn ip_of(address: &Multiaddr) -> Option<String> {
    address.iter().find_map(|part| match part {
        Protocol::Ip4(ip) => Some(ip.to_string()),
        Protocol::Ip6(ip) => Some(ip.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use p2pchat_protocol::Author;

    use super::*;

    #[test]
    fn penalties_are_said_without_debug_text() {
        let (a, b) = (Author::from_bytes([1; 32]), Author::from_bytes([2; 32]));
        let cbor = "Core(Unsupported { name: \"x\", found: 7 })".to_owned();
        for penalty in [
            Penalty::BadMessage(MessageError::Malformed(cbor.clone())),
            Penalty::InvalidEntry {
                author: a,
                error: ValidationError::Decode(DecodeError::Malformed(cbor)),
            },
            Penalty::InvalidEntry {
                author: a,
                error: ValidationError::WrongAuthor {
                    expected: a,
                    found: b,
                },
            },
        ] {
            let words = penalty_words(&penalty);
            assert!(
                !words.contains("Core(") && !words.contains("Author("),
                "{words}"
            );
        }
    }
}
