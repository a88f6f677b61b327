//! The event loop: owns the swarm, says hello on every connection, answers requests, starts
//! the push tasks, and keeps the user's peers connected.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, Message as RrMessage, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::core::transport::ListenerId;
use libp2p::{Multiaddr, PeerId, Swarm};
use p2pchat_protocol::limits::{BATCH_BYTE_BUDGET, MAX_BATCH_ENTRIES};
use p2pchat_protocol::wire::{Batch, Hello, RangeRequest, Request, Response};
use p2pchat_protocol::Author;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::dial::Redialer;
use crate::push::{self, Fetch};
use crate::shared::{PeerState, SharedRef};
use crate::{Event, PeerSpec};

/// Requests from the node's handle to its event loop.
#[derive(Debug)]
pub enum Command {
    /// Stop everything and return.
    Shutdown,
}

/// See the module docs.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    shared: SharedRef,
    commands: mpsc::Receiver<Command>,
    fetch_tx: mpsc::Sender<Fetch>,
    fetch_rx: mpsc::Receiver<Fetch>,
    listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
    redialer: Redialer,
    /// Peers that have said hello on their current connection(s).
    greeted: HashSet<PeerId>,
    /// Range requests in flight: which log each is for.
    fetching: HashMap<OutboundRequestId, (PeerId, Author)>,
    /// One push task per greeted peer.
    pushers: HashMap<PeerId, tokio::task::AbortHandle>,
    tasks: JoinSet<()>,
}

impl EventLoop {
    /// Prepares the loop; [`EventLoop::run`] drives it.
    pub fn new(
        swarm: Swarm<Behaviour>,
        shared: SharedRef,
        commands: mpsc::Receiver<Command>,
        listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
    ) -> Self {
        let (fetch_tx, fetch_rx) = mpsc::channel(64);
        Self {
            swarm,
            shared,
            commands,
            fetch_tx,
            fetch_rx,
            listen_addrs,
            redialer: Redialer::default(),
            greeted: HashSet::new(),
            fetching: HashMap::new(),
            pushers: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Runs until [`Command::Shutdown`]. `ready` is answered once each listener has an address.
    pub async fn run(mut self, peers: Vec<PeerSpec>, listeners: Vec<ListenerId>, ready: oneshot::Sender<Result<(), String>>) {
        let mut waiting: HashSet<ListenerId> = listeners.into_iter().collect();
        let mut ready = Some(ready);
        if waiting.is_empty() {
            ready.take().map(|r| r.send(Ok(())));
        }
        for peer in peers {
            match peer {
                PeerSpec::Addr(addr) => self.redialer.add(addr),
                PeerSpec::Name(name) => self.shared.emit(Event::Warning {
                    message: format!("cannot find {name:?} by name yet: give its address instead"),
                }),
            }
        }
        let incoming = self.swarm.behaviour().push.new_control().accept(push::protocol());
        let Ok(mut incoming) = incoming else {
            ready.take().map(|r| r.send(Err("push protocol registered twice".into())));
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    let listened = match &event {
                        SwarmEvent::NewListenAddr { listener_id, .. } => Some((*listener_id, Ok(()))),
                        SwarmEvent::ListenerClosed { listener_id, reason: Err(e), .. } => {
                            Some((*listener_id, Err(format!("listening failed: {e}"))))
                        }
                        _ => None,
                    };
                    // Handled first, so the address is recorded before `ready` is answered.
                    self.on_swarm_event(event);
                    if let Some((listener, result)) = listened {
                        if waiting.remove(&listener) && (waiting.is_empty() || result.is_err()) {
                            ready.take().map(|r| r.send(result));
                        }
                    }
                }
                Some((peer, stream)) = incoming.next() => {
                    let fetches = self.fetch_tx.clone();
                    self.tasks.spawn(push::receive_from(self.shared.clone(), peer, stream, fetches));
                }
                Some(fetch) = self.fetch_rx.recv() => self.request_range(fetch),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                },
                _ = tick.tick() => {
                    for dial in self.redialer.due(Instant::now()) {
                        if let Err(e) = self.swarm.dial(dial) {
                            tracing::debug!("dial not started: {e}");
                        }
                    }
                }
            }
            // Reap finished tasks so the set does not grow.
            while self.tasks.try_join_next().is_some() {}
        }
        self.tasks.shutdown().await;
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let address = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                self.listen_addrs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(address.clone());
                self.shared.emit(Event::Listening { address });
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, num_established, endpoint, .. } => {
                tracing::debug!(%peer_id, ?endpoint, "connection established");
                self.redialer.connected(peer_id, connection_id);
                if num_established.get() == 1 {
                    self.say_hello(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => self.on_peer_gone(peer_id),
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                tracing::debug!(?peer_id, "dial failed: {error}");
                self.redialer.dial_failed(connection_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event { peer, connection, result: Err(e) })) => {
                tracing::debug!(%peer, "ping failed, closing connection: {e}");
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }

    fn say_hello(&mut self, peer: PeerId) {
        match self.shared.hello() {
            Ok(hello) => {
                self.swarm.behaviour_mut().sync.send_request(&peer, Request::Hello(hello));
            }
            Err(e) => self.shared.emit(Event::Error { message: format!("reading the store failed: {e}") }),
        }
    }

    fn on_peer_gone(&mut self, peer: PeerId) {
        self.redialer.disconnected(peer);
        if let Some(pusher) = self.pushers.remove(&peer) {
            pusher.abort();
        }
        let state = self.shared.peers().remove(&peer);
        if self.greeted.remove(&peer) {
            self.shared.emit(Event::Disconnected { peer, name: state.and_then(|s| s.name) });
        }
    }

    fn on_sync_event(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message { peer, message: RrMessage::Request { request, channel, .. }, .. } => {
                let response = match request {
                    Request::Hello(hello) => {
                        self.on_hello(peer, hello);
                        match self.shared.hello() {
                            Ok(ours) => Response::Hello(ours),
                            Err(e) => Response::Refused(format!("store unavailable: {e}")),
                        }
                    }
                    Request::Range(range) => self.answer_range(range),
                };
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, response);
            }
            request_response::Event::Message { peer, message: RrMessage::Response { request_id, response }, .. } => {
                let fetched = self.fetching.remove(&request_id);
                match response {
                    Response::Hello(hello) => self.on_hello(peer, hello),
                    Response::Entries(batch) => {
                        let author = batch.author;
                        if fetched.is_some_and(|(p, a)| p == peer && a == author) {
                            let follow_up = push::absorb(&self.shared, peer, batch)
                                .or_else(|| push::next_fetch(&self.shared, peer, author));
                            if let Some(fetch) = follow_up {
                                self.request_range(fetch);
                            }
                        }
                    }
                    Response::Refused(reason) => {
                        self.shared.emit(Event::Warning { message: format!("peer {peer} refused a request: {reason}") });
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                self.fetching.remove(&request_id);
                tracing::debug!(%peer, "request failed: {error}");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_hello(&mut self, peer: PeerId, hello: Hello) {
        let heads = match hello.check() {
            Ok(heads) => heads,
            Err(e) => {
                self.shared.emit(Event::Warning { message: format!("peer {peer} sent a bad hello ({e}); disconnecting") });
                let _ = self.swarm.disconnect_peer_id(peer);
                return;
            }
        };
        {
            let mut peers = self.shared.peers();
            let state = peers.entry(peer).or_insert_with(PeerState::default);
            state.name = Some(hello.name.clone());
            p2pchat_protocol::sync::merge(&mut state.heads, &heads);
        }
        if self.greeted.insert(peer) {
            self.shared.emit(Event::Connected { peer, name: hello.name });
        }
        if !self.pushers.contains_key(&peer) {
            let shared = self.shared.clone();
            let mut control = self.swarm.behaviour().push.new_control();
            let task = self.tasks.spawn(async move {
                match control.open_stream(peer, push::protocol()).await {
                    Ok(stream) => push::push_to(shared, peer, stream).await,
                    Err(e) => tracing::debug!(%peer, "cannot open push stream: {e}"),
                }
            });
            self.pushers.insert(peer, task);
        }
        // New knowledge of the peer's heads may mean there is something to send.
        self.shared.notify_changed();
    }

    fn answer_range(&self, range: RangeRequest) -> Response {
        let limit = (range.limit as usize).min(MAX_BATCH_ENTRIES);
        match self.shared.store.range(&range.author, range.from.max(1), limit, BATCH_BYTE_BUDGET) {
            Ok(entries) => Response::Entries(Batch {
                author: range.author,
                entries: entries.iter().map(|e| ByteBuf::from(e.envelope().to_vec())).collect(),
            }),
            Err(e) => Response::Refused(format!("store unavailable: {e}")),
        }
    }

    fn request_range(&mut self, fetch: Fetch) {
        let author = fetch.request.author;
        if self.fetching.values().any(|&(p, a)| p == fetch.peer && a == author) {
            return; // already asking this peer for this log
        }
        let id = self.swarm.behaviour_mut().sync.send_request(&fetch.peer, Request::Range(fetch.request));
        self.fetching.insert(id, (fetch.peer, author));
    }
}
