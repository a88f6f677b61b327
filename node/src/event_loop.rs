//! The event loop: owns the swarm, says hello on every connection, answers requests, starts
//! the push tasks, finds peers on the LAN and keeps the user's peers connected.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::mdns;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, Message as RrMessage, OutboundRequestId};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm};
use p2pchat_protocol::Author;
use p2pchat_protocol::limits::{BATCH_BYTE_BUDGET, MAX_BATCH_ENTRIES, MAX_HELLO_HEADS};
use p2pchat_protocol::route::Router;
use p2pchat_protocol::wire::{Batch, Hello, RangeRequest, Request, Response};
use p2pchat_storage::Pin;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::dial::{Redialer, dial_failure, incoming_failure};
use crate::discovery::{Discovery, keep_connection};
use crate::push::{self, Fetch, Report};
use crate::shared::{CatchUp, SharedRef};
use crate::warnings::Cause;
use crate::{Event, NodeError, PeerSpec, behaviour, identity};

/// How often the node says which wanted names it has not found yet.
const LOOKING_FOR_INTERVAL: Duration = Duration::from_secs(10);
/// Wait before reopening a push stream that closed while the peer stays connected.
const PUSH_RETRY_DELAY: Duration = Duration::from_millis(200);
/// How long a connected peer has to send a hello we accept before it is disconnected, so
/// connections that never say hello cannot pile up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer that misbehaved is kept out: its connections are closed as they open.
const BAN_TIME: Duration = Duration::from_secs(60);

/// Requests from the node's handle to its event loop.
#[derive(Debug)]
pub enum Command {
    /// Stop everything and return.
    Shutdown,
}

/// What the loop is started with.
pub struct Setup {
    /// Listeners that must report an address before the node is ready, with the address each
    /// was asked for.
    pub listeners: Vec<(ListenerId, Multiaddr)>,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// Whether the node holds a room key.
    pub private_room: bool,
    /// Answered once the node is ready, or with why it could not start.
    pub ready: oneshot::Sender<Result<(), NodeError>>,
}

/// See the module docs.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    shared: SharedRef,
    commands: mpsc::Receiver<Command>,
    report_tx: mpsc::Sender<Report>,
    report_rx: mpsc::Receiver<Report>,
    /// One source per log; the others are asked to skip it.
    router: Router<PeerId>,
    listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
    redialer: Redialer,
    discovery: Discovery,
    /// Whether the node holds a room key (see [`incoming_failure`]).
    private_room: bool,
    /// The address each listener was asked for.
    listeners: HashMap<ListenerId, Multiaddr>,
    /// Open connections per peer, oldest first, with whether we dialed each.
    connections: HashMap<PeerId, Vec<(ConnectionId, bool)>>,
    /// Peers whose hello was accepted: they are synced with and shown as connected.
    accepted: HashSet<PeerId>,
    /// Skip lists received from peers before their hello was accepted.
    early_skips: HashMap<PeerId, BTreeSet<Author>>,
    /// Peers already warned about for claiming a name pinned to another key.
    warned: HashSet<PeerId>,
    /// Range requests in flight: which log each is for.
    fetching: HashMap<OutboundRequestId, (PeerId, Author)>,
    /// One push task per accepted peer.
    pushers: HashMap<PeerId, tokio::task::AbortHandle>,
    /// One push stream reader per peer: a newer stream from a peer replaces the older one.
    receivers: HashMap<PeerId, tokio::task::AbortHandle>,
    /// Connected peers not accepted yet, with when their first connection opened.
    awaiting_hello: HashMap<PeerId, Instant>,
    /// Peers that misbehaved, with when they may connect again.
    banned: HashMap<PeerId, Instant>,
    tasks: JoinSet<()>,
}

impl EventLoop {
    /// Prepares the loop; [`EventLoop::run`] drives it.
    pub fn new(
        swarm: Swarm<Behaviour>,
        shared: SharedRef,
        commands: mpsc::Receiver<Command>,
        listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
        peers: &[PeerSpec],
    ) -> Self {
        let (report_tx, report_rx) = mpsc::channel(256);
        let router = Router::new(shared.author());
        let mut redialer = Redialer::default();
        let mut names = Vec::new();
        for peer in peers {
            match peer {
                PeerSpec::Addr(addr) => redialer.add(addr.clone(), Instant::now()),
                PeerSpec::Name(name) => names.push(name.clone()),
            }
        }
        let discovery = Discovery::new(*swarm.local_peer_id(), names, peers.is_empty());
        Self {
            swarm,
            shared,
            commands,
            report_tx,
            report_rx,
            router,
            listen_addrs,
            redialer,
            discovery,
            private_room: false,
            listeners: HashMap::new(),
            connections: HashMap::new(),
            accepted: HashSet::new(),
            early_skips: HashMap::new(),
            warned: HashSet::new(),
            fetching: HashMap::new(),
            pushers: HashMap::new(),
            receivers: HashMap::new(),
            awaiting_hello: HashMap::new(),
            banned: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Runs until [`Command::Shutdown`].
    pub async fn run(mut self, setup: Setup) {
        let mut waiting: HashSet<ListenerId> = setup.listeners.iter().map(|(id, _)| *id).collect();
        self.listeners = setup.listeners.into_iter().collect();
        self.private_room = setup.private_room;
        let mut ready = Some(setup.ready);
        if waiting.is_empty() {
            ready.take().map(|r| r.send(Ok(())));
        }
        if !setup.mdns {
            for name in self.discovery.wanted() {
                self.shared.emit(Event::Warning {
                    message: format!("cannot look for {name} by name: mDNS is off (--no-mdns); give an address instead"),
                });
            }
        }
        let incoming = self
            .swarm
            .behaviour()
            .push
            .new_control()
            .accept(push::protocol());
        let Ok(mut incoming) = incoming else {
            ready.take().map(|r| {
                r.send(Err(NodeError::Network(
                    "push protocol registered twice".into(),
                )))
            });
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
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
                Some((peer, stream)) = incoming.next() => {
                    let reports = self.report_tx.clone();
                    let task = self.tasks.spawn(push::receive_from(self.shared.clone(), peer, stream, reports));
                    if let Some(older) = self.receivers.insert(peer, task) {
                        older.abort();
                    }
                }
                Some(report) = self.report_rx.recv() => self.on_report(report),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                },
                _ = tick.tick() => {
                    self.dial_due();
                    self.drop_silent_peers();
                    self.shared.say_warning_summaries();
                    let store = &self.shared.store;
                    let changed = self.router.check_stalls(std::time::Instant::now(), |author| store.head_seq(author));
                    self.send_skip_lists(changed);
                }
                _ = looking_for.tick(), if setup.mdns => self.say_who_is_missing(),
            }
            // Reap finished tasks so the set does not grow.
            while self.tasks.try_join_next().is_some() {}
        }
        self.tasks.shutdown().await;
    }

    fn dial_due(&mut self) {
        let now = Instant::now();
        let mut dials = self.redialer.due(now);
        let connections = &self.connections;
        let store = &self.shared.store;
        dials.extend(self.discovery.due(
            now,
            |peer| connections.contains_key(peer),
            |name| store.pinned(name),
        ));
        for dial in dials {
            let (id, peer) = (dial.connection_id(), dial.get_peer_id());
            if let Err(e) = self.swarm.dial(dial) {
                // No OutgoingConnectionError follows a dial refused at once: back off here.
                tracing::debug!("dial not started: {e}");
                self.dial_failed(id, peer, &e);
            }
        }
    }

    /// Backs off a failed dial and says why it failed (unless said lately).
    fn dial_failed(&mut self, connection: ConnectionId, peer: Option<PeerId>, error: &DialError) {
        let target = self.redialer.dial_failed(connection, Instant::now());
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

    /// Disconnects peers that did not send an acceptable hello in time, and forgets old bans.
    fn drop_silent_peers(&mut self) {
        let now = Instant::now();
        let silent: Vec<PeerId> = self
            .awaiting_hello
            .iter()
            .filter(|(_, since)| now - **since > HELLO_TIMEOUT)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in silent {
            tracing::debug!(%peer, "no hello in time; disconnecting");
            self.awaiting_hello.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        self.banned.retain(|_, until| *until > now);
    }

    /// Disconnects a peer that sent what no honest peer sends, and keeps it out for a while.
    fn penalise(&mut self, peer: PeerId, reason: &str) {
        self.shared
            .warn(&peer.to_string(), Cause::Misbehaved, 1, || {
                format!(
                    "peer {peer} sent {reason}; disconnecting it for {} s",
                    BAN_TIME.as_secs()
                )
            });
        self.banned.insert(peer, Instant::now() + BAN_TIME);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn say_who_is_missing(&mut self) {
        let peers = self.shared.peers();
        let connected: Vec<String> = self
            .accepted
            .iter()
            .filter_map(|peer| peers.get(peer).and_then(|state| state.name.clone()))
            .collect();
        drop(peers);
        for name in self.discovery.missing_names(&connected) {
            self.shared.emit(Event::LookingFor {
                name: name.to_owned(),
            });
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let address = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
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
                if self
                    .banned
                    .get(&peer_id)
                    .is_some_and(|until| *until > Instant::now())
                {
                    tracing::debug!(%peer_id, "closing a connection from a banned peer");
                    self.swarm.close_connection(connection_id);
                    return;
                }
                if !self.accepted.contains(&peer_id) {
                    self.awaiting_hello
                        .entry(peer_id)
                        .or_insert_with(Instant::now);
                }
                self.discovery.connected(peer_id);
                let connections = self.connections.entry(peer_id).or_default();
                connections.push((connection_id, endpoint.is_dialer()));
                let keep = keep_connection(*self.swarm.local_peer_id(), peer_id, connections);
                for (id, _) in connections.clone() {
                    if Some(id) != keep {
                        tracing::debug!(%peer_id, ?id, "closing a duplicate connection");
                        self.swarm.close_connection(id);
                    }
                }
                if keep == Some(connection_id) {
                    self.say_hello(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(connections) = self.connections.get_mut(&peer_id) {
                    connections.retain(|(id, _)| *id != connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    self.on_peer_gone(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, "dial failed: {error}");
                self.dial_failed(connection_id, peer_id, &error);
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, "incoming connection failed: {error}");
                // Named by IP: each connection comes from another port.
                if let Some(reason) = incoming_failure(&error, self.private_room)
                    && let Some(ip) = ip_of(&send_back_addr)
                {
                    self.shared.connection_failed(&ip, true, reason);
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason: Err(e),
                ..
            } => {
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
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync_event(event),
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
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(e),
            })) if !matches!(e, libp2p::ping::Failure::Unsupported) => {
                tracing::debug!(%peer, "ping failed, closing connection: {e}");
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }

    fn say_hello(&mut self, peer: PeerId) {
        match self.shared.hello() {
            Ok(hello) => {
                self.swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, Request::Hello(hello));
            }
            Err(e) => self.shared.store_failed("reading the store", &e),
        }
    }

    fn on_peer_gone(&mut self, peer: PeerId) {
        self.redialer.disconnected(peer, Instant::now());
        let changed = self.router.left(peer);
        self.send_skip_lists(changed);
        if let Some(pusher) = self.pushers.remove(&peer) {
            pusher.abort();
        }
        self.early_skips.remove(&peer);
        if let Some(receiver) = self.receivers.remove(&peer) {
            receiver.abort();
        }
        self.awaiting_hello.remove(&peer);
        let state = self.shared.peers().remove(&peer);
        // Its claim on our own log left with it.
        self.shared.check_own();
        if self.accepted.remove(&peer) {
            let name = state
                .and_then(|s| s.name)
                .map(|name| self.display_claim(&peer, &name));
            self.shared.emit(Event::Disconnected { peer, name });
        }
    }

    fn display_claim(&self, peer: &PeerId, name: &str) -> String {
        match identity::author_of(peer) {
            Some(author) => self.shared.qualified(name, &author),
            None => name.to_owned(),
        }
    }

    fn on_sync_event(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    RrMessage::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = match request {
                    Request::Hello(hello) => {
                        self.on_hello(peer, hello);
                        match self.shared.hello() {
                            Ok(ours) => Response::Hello(ours),
                            Err(e) => Response::Refused(format!("store unavailable: {e}")),
                        }
                    }
                    Request::Range(range) => self.answer_range(range),
                    Request::Skip(authors) => self.on_skip(peer, authors),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
            }
            request_response::Event::Message {
                peer,
                message:
                    RrMessage::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let fetched = self.fetching.remove(&request_id);
                match response {
                    Response::Hello(hello) => self.on_hello(peer, hello),
                    Response::Entries(batch) => {
                        let author = batch.author;
                        if fetched.is_some_and(|(p, a)| p == peer && a == author) {
                            self.on_range_answer(peer, batch);
                        }
                    }
                    Response::Done => {}
                    Response::Refused(reason) => {
                        self.shared.warn(&peer.to_string(), Cause::Refused, 1, || {
                            format!("peer {peer} refused a request: {reason}")
                        });
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.fetching.remove(&request_id);
                tracing::debug!(%peer, "request failed: {error}");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Stores a range answer and asks for more while it brings something new. An answer that
    /// brings nothing new ends the fetch, and the peer's claimed head is taken back: heads are
    /// hints, and a peer announcing entries it does not send is not asked again and again.
    fn on_range_answer(&mut self, peer: PeerId, batch: Batch) {
        let author = batch.author;
        let absorbed = match push::absorb(&self.shared, peer, batch) {
            Ok(absorbed) => absorbed,
            Err(push::Misbehaviour(reason)) => return self.penalise(peer, &reason),
        };
        if absorbed.stored == 0 {
            let ours = self.shared.store.head_seq(&author);
            self.shared.peer_lacks_beyond(&peer, author, ours);
            self.shared.report_catch_up();
            if author == self.shared.author() {
                self.shared.check_own(); // a claim on our own log taken back
            }
            return;
        }
        if let Some(fetch) = absorbed
            .fetch
            .or_else(|| push::next_fetch(&self.shared, peer, author))
        {
            self.request_range(fetch);
        }
    }

    fn on_hello(&mut self, peer: PeerId, hello: Hello) {
        let heads = match hello.check() {
            Ok(heads) => heads,
            Err(e) => {
                self.shared.emit(Event::Warning {
                    message: format!("peer {peer} sent a bad hello ({e}); disconnecting"),
                });
                let _ = self.swarm.disconnect_peer_id(peer);
                return;
            }
        };
        let Some(author) = identity::author_of(&peer) else {
            tracing::debug!(%peer, "peer id is not an ed25519 key; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        };
        if let Err(e) = author.check_key() {
            // Such a key signs anything (libp2p checks its handshake signature laxly): it can
            // be no one's own log.
            return self.penalise(peer, &format!("a hello with a key that {e}"));
        }
        self.discovery
            .learned(peer, &hello.name, |p| self.connections.contains_key(p));
        self.check_name_claim(peer, author, &hello.name);
        if !self.should_accept(&peer) {
            tracing::debug!(%peer, name = hello.name, "not a peer we want; closing the probe");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        let first_hello = !self.accepted.contains(&peer);
        let shown_as = self.display_claim(&peer, &hello.name);
        {
            let mut peers = self.shared.peers();
            let state = peers.entry(peer).or_default();
            state.name = Some(hello.name.clone());
            p2pchat_protocol::sync::merge(&mut state.heads, &heads);
            if first_hello {
                state.skip = self.early_skips.remove(&peer).unwrap_or_default();
                let store = &self.shared.store;
                state.catch_up =
                    CatchUp::new(&store.heads(), &heads, |author| store.is_frozen(author));
                // Said while the peer table is locked: the peer's push stream is read only
                // once it is in the table, so the start of a catch-up is announced before any
                // of its entries is stored (line mode holds those to print them in order).
                self.shared.emit(Event::Connected {
                    peer,
                    name: shown_as,
                });
                let name = hello.name.clone();
                self.shared.emit(match &state.catch_up {
                    Some(catch_up) => Event::SyncProgress {
                        peer,
                        name,
                        received: 0,
                        total: catch_up.total,
                    },
                    None => Event::SyncComplete {
                        peer,
                        name,
                        received: 0,
                    },
                });
            }
        }
        self.check_own_claim(peer, &hello);
        if first_hello {
            self.accepted.insert(peer);
            self.awaiting_hello.remove(&peer);
            let changed = self.router.joined(peer, author, heads.keys().copied());
            self.send_skip_lists(changed);
        }
        if !self.pushers.contains_key(&peer) {
            let shared = self.shared.clone();
            let mut control = self.swarm.behaviour().push.new_control();
            let task = self.tasks.spawn(async move {
                // Reopen the stream if it closes while the peer stays (say, a duplicate
                // connection carrying it was closed); stop once the peer has left.
                while shared.peers().contains_key(&peer) {
                    match control.open_stream(peer, push::protocol()).await {
                        Ok(stream) => push::push_to(shared.clone(), peer, stream).await,
                        Err(e) => tracing::debug!(%peer, "cannot open push stream: {e}"),
                    }
                    tokio::time::sleep(PUSH_RETRY_DELAY).await;
                }
            });
            self.pushers.insert(peer, task);
        }
        // New knowledge of the peer's heads may mean there is something to send.
        self.shared.notify_changed();
    }

    /// Looks at what a hello says of our own log: a peer holding more of it holds our appends
    /// until it is fetched ([`crate::shared::Shared::check_own`]); a peer holding another
    /// entry at a seq we hold is asked for it, so a real fork is proven and stored.
    fn check_own_claim(&mut self, peer: PeerId, hello: &Hello) {
        let me = self.shared.author();
        if let Some(claim) = hello.heads.iter().find(|head| head.author == me) {
            let store = &self.shared.store;
            let ours = store.get(&me, claim.seq).ok().flatten();
            if claim.seq <= store.head_seq(&me) && ours.is_some_and(|e| e.hash() != claim.hash) {
                self.request_range(Fetch {
                    peer,
                    request: RangeRequest {
                        author: me,
                        from: claim.seq,
                        limit: 1,
                    },
                });
            }
        }
        self.shared.check_own();
    }

    /// Pins a first-seen name to the peer's key, and warns when the name belongs to another key.
    fn check_name_claim(&mut self, peer: PeerId, author: Author, name: &str) {
        match self.shared.store.pin(name, author) {
            Ok(Pin::New | Pin::Same) => {}
            Ok(Pin::Conflict(owner)) => {
                if self.warned.insert(peer) {
                    self.shared.emit(Event::Warning {
                        message: format!(
                            "{name}#{} claims the name {name}, which belongs to {name}#{}: a different key, \
                             shown with its fingerprint",
                            author.fingerprint(),
                            owner.fingerprint()
                        ),
                    });
                }
            }
            Err(e) => self.shared.emit(Event::Error {
                message: format!("writing the store failed: {e}"),
            }),
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
            || self
                .discovery
                .wants(peer, |name| self.shared.store.pinned(name))
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Fetch(fetch) => self.request_range(fetch),
            Report::Misbehaved { peer, reason } => self.penalise(peer, &reason),
            Report::Received { peer, author } => {
                if let Some(peer_author) = identity::author_of(&peer) {
                    let changed = self.router.received(peer, peer_author, author);
                    self.send_skip_lists(changed);
                }
            }
            Report::Noted { peer, author, seq } => {
                let ours = self.shared.store.head_seq(&author);
                self.router
                    .noted(peer, author, seq, ours, std::time::Instant::now());
            }
        }
    }

    /// Tells each of `peers` its current skip list.
    fn send_skip_lists(&mut self, peers: Vec<PeerId>) {
        for peer in peers {
            if self.accepted.contains(&peer) {
                let skip = self.router.skip_list(&peer);
                tracing::debug!(%peer, ?skip, "asking to skip");
                self.swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, Request::Skip(skip));
            }
        }
    }

    fn on_skip(&mut self, peer: PeerId, authors: Vec<Author>) -> Response {
        if authors.len() > MAX_HELLO_HEADS {
            return Response::Refused(format!("a skip list holds at most {MAX_HELLO_HEADS} logs"));
        }
        match self.shared.peers().get_mut(&peer) {
            Some(state) => state.skip = authors.into_iter().collect(),
            // It accepted our hello before we accepted its: keep the list for then.
            None => {
                self.early_skips.insert(peer, authors.into_iter().collect());
            }
        }
        self.shared.notify_changed();
        Response::Done
    }

    fn answer_range(&self, range: RangeRequest) -> Response {
        if self.shared.store.is_frozen(&range.author) {
            return Response::Refused("that log is forked; it is no longer relayed".into());
        }
        let limit = (range.limit as usize).min(MAX_BATCH_ENTRIES);
        match self.shared.store.range_envelopes(
            &range.author,
            range.from.max(1),
            limit,
            BATCH_BYTE_BUDGET,
        ) {
            Ok(entries) => Response::Entries(Batch {
                author: range.author,
                entries: entries
                    .into_iter()
                    .map(|(_, envelope)| ByteBuf::from(Vec::from(envelope)))
                    .collect(),
            }),
            Err(e) => Response::Refused(format!("store unavailable: {e}")),
        }
    }

    fn request_range(&mut self, fetch: Fetch) {
        let author = fetch.request.author;
        if self
            .fetching
            .values()
            .any(|&(p, a)| p == fetch.peer && a == author)
        {
            return; // already asking this peer for this log
        }
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&fetch.peer, Request::Range(fetch.request));
        self.fetching.insert(id, (fetch.peer, author));
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
