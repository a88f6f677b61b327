//! The replication core: one IO-free machine per node, driven by inputs and drained of outputs
//! (in the style of quinn-proto and iroh-gossip's `proto`).
//!
//! The node (and the simulator) feed a [`Replica`] what happened — a peer connected or left, a
//! message arrived, a batch was stored, the user appended, time passed — through
//! [`Replica::handle`], and carry out what [`Replica::poll`] returns: send this message on this
//! lane, store this batch, disconnect that peer, tell the user this. Time comes in as an
//! argument; nothing here reads a clock, touches a socket or writes to disk, and nothing is
//! random, so a run is a function of its inputs.
//!
//! Each peer is in one phase: awaiting its hello, a probe (its hello arrived, the driver
//! decides whether to sync with it), or accepted with a session. docs/protocol.md, section 9,
//! is the specification; docs/architecture.md shows the data flow.

mod api;
mod session;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

pub use api::{Disconnect, Event, Input, Output, Penalty};
pub use session::{
    BULK_QUEUE_TIME, BULK_WINDOW_BATCHES, LIVE_WINDOW_BATCHES, MAX_STASHED_BATCHES,
    MAX_UNKNOWN_CLAIMS, MAX_UNKNOWN_NOTES, MIN_BULK_WINDOW, batch_seqs,
};

use crate::entry::{Author, Body};
use crate::limits::{BATCH_BYTE_BUDGET, MAX_BATCH_ENTRIES, MAX_MESSAGE_NOTES, MAX_ROUTE_AUTHORS};
use crate::message::{
    AuthorRange, Batch, HeadInfo, HeadNote, Hello, Lane, Message, PROTOCOL_VERSION, Summary,
};
use crate::reconcile::{HeadSet, Learned, Reconciler};
use crate::route::Router;
use crate::store::{Inserted, Logs};
use crate::validate::ValidationError;
use session::{InFlight, Session, route_delta};

/// How often the driver should give the core an [`Input::Tick`].
pub const TICK: Duration = Duration::from_millis(100);
/// How long a peer that misbehaved is kept out.
pub const BAN_TIME: Duration = Duration::from_secs(60);
/// How long a connected peer has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A session with nothing else to send for this long sends a [`Message::Ping`].
pub const PING_INTERVAL: Duration = Duration::from_millis(500);
/// A peer from which nothing arrived for this long is disconnected.
pub const SILENCE_LIMIT: Duration = Duration::from_millis(2500);
/// Most batches a peer may send before it hears an ack (live and bulk together).
pub const MAX_UNACKED_BATCHES: usize = 64;
/// New entries of a log go on the live lane when the peer held all we had of it and they are
/// at most this many; a longer run is a catch-up and goes on the bulk lane.
pub const MAX_LIVE_RUN: u64 = 64;
/// Most peers remembered as banned (the oldest ban is forgotten first).
pub const MAX_BANNED: usize = 1024;

/// Where a peer is in its life.
#[derive(Debug)]
enum Phase {
    /// Connected; its hello has not arrived.
    AwaitingHello,
    /// Its hello arrived; the driver decides whether to sync with it.
    Probe { name: String, heads: Summary },
    /// Synced with.
    Accepted(Box<Session>),
}

#[derive(Debug)]
struct Peer {
    author: Author,
    since: Instant,
    last_heard: Instant,
    last_sent: Instant,
    /// A disconnect was asked for: its inputs are ignored until it is closed.
    closing: bool,
    phase: Phase,
}

/// See the module docs. `P` names a peer (a libp2p `PeerId` in the node, a number in the
/// simulator).
#[derive(Debug)]
pub struct Replica<P> {
    own: Author,
    name: String,
    /// What we hold durably, frozen (forked) logs excepted: only this is announced, compared
    /// and sent.
    heads: HeadSet,
    /// Whether the logs frozen before we started were taken out of `heads` (done on the first
    /// input, the first time the store is at hand).
    frozen_taken_out: bool,
    /// For each log with batches given to the store and not answered yet: the highest seq
    /// they reach (to tell a batch that joins from one that came too early), and how many.
    storing: BTreeMap<Author, (u64, usize)>,
    peers: BTreeMap<P, Peer>,
    router: Router<P>,
    /// The own-log claim last told to the driver.
    own_claim: u64,
    outputs: VecDeque<Output<P>>,
}

impl<P: Copy + Ord + std::fmt::Debug> Replica<P> {
    /// The core of the node whose own log is `own`, called `name`, holding `heads` durably.
    pub fn new(own: Author, name: String, heads: impl IntoIterator<Item = HeadInfo>) -> Self {
        let mut set = HeadSet::new();
        for head in heads {
            set.insert(head);
        }
        Self {
            own,
            name,
            heads: set,
            frozen_taken_out: false,
            storing: BTreeMap::new(),
            peers: BTreeMap::new(),
            router: Router::new(own),
            own_claim: 0,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing the driver must do.
    pub fn poll(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// The heads held durably, as the core knows them (frozen logs excepted, once it had an
    /// input).
    pub fn heads(&self) -> &HeadSet {
        &self.heads
    }

    /// The peer chosen as the source of `author`'s log, if any.
    pub fn source_of(&self, author: &Author) -> Option<P> {
        self.router.source(author)
    }

    /// Whether `peer` is synced with.
    pub fn is_accepted(&self, peer: &P) -> bool {
        self.session(peer).is_some()
    }

    /// The peers synced with, with the names they claimed.
    pub fn accepted(&self) -> impl Iterator<Item = (P, &str)> {
        self.peers
            .iter()
            .filter_map(|(peer, state)| match &state.phase {
                Phase::Accepted(session) => Some((*peer, session.name.as_str())),
                _ => None,
            })
    }

    /// A rough count of the per-peer items the core holds (heads known, skip lists, windows,
    /// stashes), for the simulator's state figures.
    pub fn footprint(&self) -> usize {
        let sessions: usize = self
            .peers
            .values()
            .map(|peer| match &peer.phase {
                Phase::Accepted(session) => session.footprint(),
                _ => 1,
            })
            .sum();
        sessions + self.storing.len()
    }

    fn session(&self, peer: &P) -> Option<&Session> {
        match &self.peers.get(peer)?.phase {
            Phase::Accepted(session) => Some(session),
            _ => None,
        }
    }

    /// Takes one input at time `now`; `logs` is read for entries to send.
    pub fn handle(&mut self, now: Instant, input: Input<P>, logs: &impl Logs) {
        if !self.frozen_taken_out {
            self.frozen_taken_out = true;
            let frozen: Vec<Author> = self
                .heads
                .iter()
                .map(|head| head.author)
                .filter(|author| logs.is_frozen(author))
                .collect();
            for author in frozen {
                self.heads.remove(&author);
            }
        }
        match input {
            Input::Connected { peer, author } => self.connected(now, peer, author),
            Input::Closed { peer } => self.closed(peer),
            Input::Received { peer, message } => self.received(now, peer, message, logs),
            Input::Malformed { peer, error } => {
                if self.peers.get(&peer).is_some_and(|p| !p.closing) {
                    self.penalise(peer, Penalty::BadMessage(error));
                }
            }
            Input::Accept { peer } => self.accept(peer),
            Input::Stored {
                peer,
                author,
                outcome,
            } => self.stored(now, peer, author, outcome),
            Input::Appended { entries } => {
                // A profile among them renames us: the next hellos carry the name.
                let renamed = entries.iter().rev().find_map(|entry| match entry.body() {
                    Body::Profile { name } => Some(name.clone()),
                    _ => None,
                });
                if let Some(name) = renamed {
                    self.name = name;
                }
                if let Some(last) = entries.last() {
                    let head = HeadInfo {
                        author: last.author(),
                        seq: last.seq(),
                        hash: last.hash(),
                    };
                    self.advance(head);
                }
            }
            Input::Tick => self.tick(now),
        }
        self.push_all(now, logs);
    }

    fn connected(&mut self, now: Instant, peer: P, author: Author) {
        if self.peers.contains_key(&peer) {
            self.closed(peer); // a fresh session on reopened lanes
        }
        self.peers.insert(
            peer,
            Peer {
                author,
                since: now,
                last_heard: now,
                last_sent: now,
                closing: false,
                phase: Phase::AwaitingHello,
            },
        );
        if let Err(e) = author.check_key() {
            // Such a key signs anything: it can be no one's own log.
            return self.penalise(peer, Penalty::BadKey(e));
        }
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: self.name.clone(),
            heads: self.heads.summary(&AuthorRange::ALL),
        });
        self.send(now, peer, Lane::Live, hello);
    }

    fn closed(&mut self, peer: P) {
        let Some(state) = self.peers.remove(&peer) else {
            return;
        };
        if let Phase::Accepted(_) = state.phase {
            let heads = &self.heads;
            let changed = self.router.left(peer, |author| heads.get(author).is_some());
            self.route(changed);
            self.check_own_claim();
        }
    }

    /// Disconnects `peer` for what no honest peer does (the multi-room core above keeps it out
    /// for [`BAN_TIME`]).
    fn penalise(&mut self, peer: P, penalty: Penalty) {
        self.disconnect(peer, Disconnect::Penalised(penalty));
    }

    fn disconnect(&mut self, peer: P, reason: Disconnect) {
        if let Some(state) = self.peers.get_mut(&peer) {
            if state.closing {
                return;
            }
            state.closing = true;
        }
        self.outputs.push_back(Output::Disconnect { peer, reason });
    }

    fn send(&mut self, now: Instant, peer: P, lane: Lane, message: Message) {
        match self.peers.get_mut(&peer) {
            Some(state) if !state.closing => state.last_sent = now,
            _ => return,
        }
        self.outputs.push_back(Output::Send {
            peer,
            lane,
            message,
        });
    }

    fn emit(&mut self, event: Event<P>) {
        self.outputs.push_back(Output::Event(event));
    }

    fn accept(&mut self, peer: P) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let Phase::Probe { name, heads } = &state.phase else {
            return;
        };
        let (name, theirs) = (name.clone(), *heads);
        let peer_author = state.author;
        let mut session = Session::new(name, Reconciler::new(&self.heads, theirs));
        let mut offered = Vec::new();
        if session.reconciler.is_done() {
            // Equal summaries: it holds exactly what we hold.
            for head in self.heads.iter() {
                session.known.insert(head.author, head.seq);
                offered.push(head.author);
            }
        }
        state.phase = Phase::Accepted(Box::new(session));
        let mut changed = self.router.joined(peer, peer_author, offered);
        changed.push(peer); // its first `Route`, if the comparison is already done
        self.route(changed);

        self.emit(Event::SyncProgress {
            peer,
            received: 0,
            total: 0,
        });
        self.next_query(peer);
        self.check_complete(peer);
    }

    fn received(&mut self, now: Instant, peer: P, message: Message, logs: &impl Logs) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.closing {
            return;
        }
        state.last_heard = now;
        match (&state.phase, message) {
            (Phase::AwaitingHello, Message::Hello(hello)) => {
                state.phase = Phase::Probe {
                    name: hello.name.clone(),
                    heads: hello.heads,
                };
                self.emit(Event::Hello {
                    peer,
                    name: hello.name,
                });
            }
            (Phase::AwaitingHello, _) => self.penalise(peer, Penalty::BeforeHello),
            (_, Message::Hello(_)) => self.penalise(peer, Penalty::SecondHello),
            // The driver accepts or closes a probe before anything else arrives.
            (Phase::Probe { .. }, _) => {}
            (Phase::Accepted(_), message) => self.on_message(now, peer, message, logs),
        }
    }

    fn session_mut(&mut self, peer: &P) -> Option<&mut Session> {
        session_in(&mut self.peers, peer)
    }

    fn on_message(&mut self, now: Instant, peer: P, message: Message, logs: &impl Logs) {
        match message {
            Message::Hello(_) => {} // handled by `received`
            Message::Query(ranges) => {
                let reply = Message::Reply(self.heads.answer(&ranges));
                self.send(now, peer, Lane::Live, reply);
            }
            Message::Reply(parts) => {
                let heads = &self.heads;
                let Some(session) = session_in(&mut self.peers, &peer) else {
                    return;
                };
                if !session.reconciler.is_waiting() {
                    return self.penalise(peer, Penalty::UnaskedReply);
                }
                match session.reconciler.on_reply(heads, parts) {
                    Ok(learned) => self.learned(peer, learned, logs),
                    Err(e) => return self.penalise(peer, Penalty::BadReply(e)),
                }
                self.next_query(peer);
                self.check_complete(peer);
                if self.session(&peer).is_some_and(|s| s.reconciler.is_done()) {
                    self.route(vec![peer]);
                }
            }
            Message::Have(notes) => self.on_notes(now, peer, notes),
            Message::Want(note) => {
                if let Some(session) = self.session_mut(&peer) {
                    let below = note.seq.saturating_sub(1);
                    for heads in [&mut session.known, &mut session.sent] {
                        if let Some(seq) = heads.get_mut(&note.author) {
                            *seq = (*seq).min(below);
                        }
                    }
                    session.dirty.insert(note.author);
                }
            }
            Message::Route { skip, unskip } => {
                let heads = &self.heads;
                let Some(session) = session_in(&mut self.peers, &peer) else {
                    return;
                };
                session.routed_by_it = true;
                // A list about logs we do not hold (yet) makes bounded state.
                let bound = heads.len() + MAX_UNKNOWN_NOTES;
                for author in skip {
                    if session.skipped_by_it.len() < bound {
                        session.skipped_by_it.insert(author);
                        session.dirty.insert(author);
                    }
                }
                for author in unskip {
                    let offered = session.offered_only.remove(&author);
                    if session.skipped_by_it.remove(&author) || offered {
                        session.dirty.insert(author);
                    }
                }
            }
            Message::Batch(batch) => self.on_batch(now, peer, batch),
            Message::Ack(count) => {
                if let Some(session) = self.session_mut(&peer) {
                    session.acked(count, now);
                }
            }
            Message::Ping => {}
        }
    }

    /// Takes `peer`'s notes of how far it holds logs. A note on a log new to us is an offer:
    /// the first peer to offer it becomes its source and is asked for it (`unskip`); a note
    /// from a log's source while we are behind means it waits to be asked.
    fn on_notes(&mut self, now: Instant, peer: P, notes: Vec<HeadNote>) {
        let Some(peer_author) = self.peers.get(&peer).map(|p| p.author) else {
            return;
        };
        let mut ask = Vec::new();
        for note in notes {
            let author = note.author;
            let held = self.heads.get(&author).map(|h| h.seq);
            let ours = held.unwrap_or(0);
            let Some(session) = session_in(&mut self.peers, &peer) else {
                return;
            };
            // Claims on logs we do not hold are bounded per peer: beyond, a note makes no state.
            if session.learn(author, note.seq, held.is_some(), MAX_UNKNOWN_NOTES) {
                session.catch_up.claim(author, note.seq, ours);
            } else if held.is_none() && self.router.source(&author).is_none() {
                continue;
            }
            if author == self.own {
                self.check_own_claim();
                continue;
            }
            // What the store is given is coming: not a reason to ask again, nor a stall.
            let coming = coming(&self.heads, &self.storing, &author);
            if self.router.source(&author).is_none() {
                // One log's source changed: only that log's skip entries can move.
                let changed = self.router.received(peer, peer_author, author);
                self.reroute(author, changed);
            } else {
                self.router.noted(peer, author, note.seq, coming, now);
            }
            if self.router.source(&author) == Some(peer) && note.seq > coming {
                ask.push(author);
            }
        }
        self.note_before_unskip(peer, &ask);
        for unskip in ask.chunks(MAX_ROUTE_AUTHORS) {
            let message = Message::Route {
                skip: Vec::new(),
                unskip: unskip.to_vec(),
            };
            self.send(now, peer, Lane::Live, message);
        }
    }

    /// Takes in what a reply taught us of `peer`'s heads.
    fn learned(&mut self, peer: P, learned: Learned, logs: &impl Logs) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let peer_author = state.author;
        let Phase::Accepted(session) = &mut state.phase else {
            return;
        };
        let mut offered = Vec::new();
        let mut own_claim = None;
        for range in &learned.same {
            for head in self.heads.in_range(range) {
                session.learn(head.author, head.seq, true, MAX_UNKNOWN_CLAIMS);
                session.dirty.insert(head.author);
                offered.push(head.author);
            }
        }
        for (range, theirs) in &learned.listed {
            for head in self.heads.in_range(range) {
                session.dirty.insert(head.author); // it may lack it
            }
            for head in theirs {
                let ours = self.heads.get(&head.author).map(|h| h.seq);
                if session.learn(head.author, head.seq, ours.is_some(), MAX_UNKNOWN_CLAIMS) {
                    // A forked log is never fetched: it is not part of the catch-up.
                    if !logs.is_frozen(&head.author) {
                        let ours = ours.unwrap_or(0);
                        session.catch_up.claim(head.author, head.seq, ours);
                    }
                    offered.push(head.author);
                    session.dirty.insert(head.author);
                }
                if head.author == self.own {
                    own_claim = Some(*head);
                }
            }
        }
        let mut changed = BTreeSet::new();
        for author in offered {
            changed.extend(self.router.received(peer, peer_author, author));
        }
        self.route(changed.into_iter().collect());
        if let Some(claim) = own_claim {
            self.probe_own_fork(peer, claim, logs);
        }
        self.check_own_claim();
    }

    /// A peer holding another entry of our own log at a seq we hold is asked for it, so the
    /// store proves the fork (and the own-log rule stops appending).
    fn probe_own_fork(&mut self, peer: P, claim: HeadInfo, logs: &impl Logs) {
        let ours = self.heads.get(&self.own).map_or(0, |h| h.seq);
        if claim.seq == 0 || claim.seq > ours {
            return;
        }
        let differs = match logs.entry(&self.own, claim.seq) {
            Ok(Some(entry)) => entry.hash() != claim.hash,
            _ => false,
        };
        if differs {
            let want = Message::Want(HeadNote {
                author: self.own,
                seq: claim.seq,
            });
            self.outputs.push_back(Output::Send {
                peer,
                lane: Lane::Live,
                message: want,
            });
        }
    }

    fn next_query(&mut self, peer: P) {
        let Some(session) = self.session_mut(&peer) else {
            return;
        };
        if session.reconciler.is_waiting() {
            return;
        }
        if let Some(ranges) = session.reconciler.next_query() {
            self.outputs.push_back(Output::Send {
                peer,
                lane: Lane::Live,
                message: Message::Query(ranges),
            });
        }
    }

    /// Says `SyncComplete` for `peer` once the heads are compared and nothing it holds is
    /// missing, or `SyncProgress` while entries are.
    fn check_complete(&mut self, peer: P) {
        let Some(session) = self.session_mut(&peer) else {
            return;
        };
        let catch_up = &mut session.catch_up;
        if catch_up.complete {
            return;
        }
        if session.reconciler.is_done() && catch_up.remaining == 0 {
            catch_up.complete = true;
            let received = catch_up.received();
            self.emit(Event::SyncComplete { peer, received });
        }
    }

    fn on_batch(&mut self, now: Instant, peer: P, batch: Batch) {
        let author = batch.author;
        let expected = coming(&self.heads, &self.storing, &author);
        let Some(session) = self.session_mut(&peer) else {
            return;
        };
        if session.storing + session.stash.len() >= MAX_UNACKED_BATCHES {
            return self.penalise(peer, Penalty::Flooded);
        }
        let seqs = batch_seqs(&batch);
        match seqs {
            Some((first, _)) if first > expected + 1 => {
                if session.stash.len() < MAX_STASHED_BATCHES {
                    session.stash.push(batch);
                } else {
                    // Too much came early: dropped (but acked, so the sender's window moves),
                    // and asked for again from the first missing seq.
                    session.to_ack += 1;
                    let want = Message::Want(HeadNote {
                        author,
                        seq: expected + 1,
                    });
                    self.send(now, peer, Lane::Live, want);
                }
            }
            _ => {
                session.storing += 1;
                let (reach, count) = self.storing.entry(author).or_default();
                *reach = (*reach).max(seqs.map_or(0, |(_, last)| last));
                *count += 1;
                self.outputs.push_back(Output::Store { peer, batch });
            }
        }
    }

    fn stored(&mut self, now: Instant, peer: P, author: Author, outcome: Result<Inserted, String>) {
        let inserted = outcome.unwrap_or_default();
        if let Some(newest) = inserted.stored.last() {
            self.advance(HeadInfo {
                author,
                seq: newest.seq(),
                hash: newest.hash(),
            });
            // A peer whose batch brought new entries offers to be the log's source (only
            // valid entries make routing state).
            if let Some(peer_author) = self.peers.get(&peer).map(|p| p.author) {
                let changed = self.router.received(peer, peer_author, author);
                self.reroute(author, changed);
            }
        }
        let ours = self.heads.get(&author).map_or(0, |h| h.seq);
        if let Some((_, count)) = self.storing.get_mut(&author) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.storing.remove(&author);
            }
        }
        if let Some(session) = self.session_mut(&peer) {
            session.storing = session.storing.saturating_sub(1);
            session.to_ack += 1;
            if inserted.held_through > 0 {
                session.learn(author, inserted.held_through, true, MAX_UNKNOWN_CLAIMS);
            }
        }
        match inserted.rejected {
            None | Some(ValidationError::AuthorFrozen) => {}
            Some(ValidationError::Gap { expected, .. }) => {
                let want = Message::Want(HeadNote {
                    author,
                    seq: expected,
                });
                self.send(now, peer, Lane::Live, want);
            }
            Some(ValidationError::Fork { seq }) => {
                // A frozen log is neither announced nor compared: peers would wait for it.
                self.heads.remove(&author);
                self.emit(Event::Forked { author, seq });
            }
            Some(ValidationError::WrongPrev { .. }) if author == self.own => {
                // Our own log, but not on top of what we hold: the entry at our head shows
                // whether the two are a fork.
                let want = Message::Want(HeadNote {
                    author,
                    seq: ours.max(1),
                });
                self.send(now, peer, Lane::Live, want);
            }
            Some(
                forged @ (ValidationError::Decode(_)
                | ValidationError::BadSignature { .. }
                | ValidationError::WrongAuthor { .. }
                | ValidationError::WrongRoom { .. }
                | ValidationError::BadAuthorKey(_)),
            ) => self.penalise(
                peer,
                Penalty::InvalidEntry {
                    author,
                    error: forged,
                },
            ),
            Some(error) => self.emit(Event::Rejected {
                peer,
                author,
                error,
            }),
        }
        self.unstash(now, peer, author);
    }

    /// Stashed batches of `peer` for `author`'s log that now join go to the store.
    fn unstash(&mut self, now: Instant, peer: P, author: Author) {
        let Some(session) = self.session_mut(&peer) else {
            return;
        };
        if session.stash.iter().all(|b| b.author != author) {
            return;
        }
        let stash = std::mem::take(&mut session.stash);
        for batch in stash {
            self.on_batch(now, peer, batch);
        }
    }

    /// Our head of `head.author`'s log moved to `head` (stored or appended, durably).
    fn advance(&mut self, head: HeadInfo) {
        let author = head.author;
        let old = self.heads.get(&author).map_or(0, |h| h.seq);
        if head.seq <= old {
            return;
        }
        self.heads.insert(head);
        if old == 0 {
            // A log new to us: the peers that are not its source skip it from now on.
            let peers = self.accepted().map(|(peer, _)| peer).collect();
            self.reroute(author, peers);
        }
        let mut complete = Vec::new();
        for (peer, state) in &mut self.peers {
            let Phase::Accepted(session) = &mut state.phase else {
                continue;
            };
            session.now_held(&author, old > 0);
            if old == 0 && session.has(&author) == 0 && author != self.own {
                session.offered_only.insert(author);
            }
            if session.has(&author) >= old && head.seq - old <= MAX_LIVE_RUN {
                session.live.insert(author);
            }
            session.dirty.insert(author);
            if session.catch_up.target.contains_key(&author) {
                session.catch_up.advanced(&author, old, head.seq);
                complete.push(*peer);
            }
        }
        for peer in complete {
            let Some(session) = self.session(&peer) else {
                continue;
            };
            let catch_up = &session.catch_up;
            if !catch_up.complete && catch_up.remaining > 0 {
                let (received, total) = (catch_up.received(), catch_up.total);
                self.emit(Event::SyncProgress {
                    peer,
                    received,
                    total,
                });
            }
            self.check_complete(peer);
        }
    }

    /// Tells each of `peers` how its skip list changed.
    fn route(&mut self, peers: Vec<P>) {
        for peer in peers {
            // Only logs we hold are skipped: a claim on another log (a note) makes no skip
            // list for everyone else, so a peer's claims cost only that peer's session.
            let heads = &self.heads;
            let wanted: BTreeSet<Author> = self
                .router
                .skip_list(&peer)
                .into_iter()
                .filter(|author| heads.get(author).is_some())
                .collect();
            let Some(session) = self.session_mut(&peer) else {
                continue;
            };
            // The first `Route` of a session waits until our comparison is done, and is sent
            // even if empty: the peer pushes nothing before it.
            if !session.reconciler.is_done() {
                continue;
            }
            let first = !session.routed_by_us;
            let (skip, unskip) = route_delta(&session.skipped_by_us, &wanted);
            if skip.is_empty() && unskip.is_empty() && !first {
                continue;
            }
            session.routed_by_us = true;
            session.skipped_by_us = wanted;
            let skips = skip.chunks(MAX_ROUTE_AUTHORS).map(|c| (c.to_vec(), vec![]));
            let unskips = unskip
                .chunks(MAX_ROUTE_AUTHORS)
                .map(|c| (vec![], c.to_vec()));
            let mut messages: Vec<_> = skips.chain(unskips).collect();
            if messages.is_empty() {
                messages.push((Vec::new(), Vec::new()));
            }
            self.note_before_unskip(peer, &unskip);
            for (skip, unskip) in messages {
                self.outputs.push_back(Output::Send {
                    peer,
                    lane: Lane::Live,
                    message: Message::Route { skip, unskip },
                });
            }
        }
    }

    /// Notes to `peer` how far we hold the logs of `unskip` that we hold, before it is asked
    /// to stop skipping them: it pushes from what it believes we hold, and while it skipped a
    /// log we got the log's entries from another source, so its belief is stale (at 200
    /// simulated nodes, a third of all entries received were such repeats).
    fn note_before_unskip(&mut self, peer: P, unskip: &[Author]) {
        let notes: Vec<HeadNote> = unskip
            .iter()
            .filter_map(|author| self.heads.get(author))
            .map(|head| HeadNote {
                author: head.author,
                seq: head.seq,
            })
            .collect();
        for chunk in notes.chunks(MAX_MESSAGE_NOTES) {
            self.outputs.push_back(Output::Send {
                peer,
                lane: Lane::Live,
                message: Message::Have(chunk.to_vec()),
            });
        }
    }

    /// Tells each of `peers` whether to skip `author`'s log now, when that changed: the
    /// quick form of [`Self::route`] for a change that concerns one log (a new source, a log
    /// new to us), which costs per peer, not per log held.
    fn reroute(&mut self, author: Author, peers: Vec<P>) {
        let held = self.heads.get(&author).is_some();
        let source = self.router.source(&author);
        for peer in peers {
            let Some(session) = self.session_mut(&peer) else {
                continue;
            };
            // Before its first `Route`, the full list goes then.
            if !session.routed_by_us {
                continue;
            }
            let skip = held && source.is_some_and(|source| source != peer);
            let (skip, unskip) = match (skip, session.skipped_by_us.contains(&author)) {
                (true, false) => {
                    session.skipped_by_us.insert(author);
                    (vec![author], vec![])
                }
                (false, true) => {
                    session.skipped_by_us.remove(&author);
                    (vec![], vec![author])
                }
                _ => continue,
            };
            self.note_before_unskip(peer, &unskip);
            self.outputs.push_back(Output::Send {
                peer,
                lane: Lane::Live,
                message: Message::Route { skip, unskip },
            });
        }
    }

    /// Says the highest seq of our own log a connected peer claims, when it changed.
    fn check_own_claim(&mut self) {
        let claim = self
            .peers
            .values()
            .filter_map(|state| match &state.phase {
                Phase::Accepted(session) => session.known.get(&self.own).copied(),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        if claim != self.own_claim {
            self.own_claim = claim;
            self.emit(Event::OwnLogClaimed { seq: claim });
        }
    }

    fn tick(&mut self, now: Instant) {
        let mut silent = Vec::new();
        let mut no_hello = Vec::new();
        let mut ping = Vec::new();
        for (peer, state) in &self.peers {
            if state.closing {
                continue;
            }
            let quiet = now.saturating_duration_since(state.last_heard);
            if quiet > SILENCE_LIMIT {
                silent.push((*peer, quiet));
            } else if !matches!(state.phase, Phase::Accepted(_))
                && now.saturating_duration_since(state.since) > HELLO_TIMEOUT
            {
                no_hello.push(*peer);
            } else if now.saturating_duration_since(state.last_sent) >= PING_INTERVAL {
                ping.push(*peer);
            }
        }
        for (peer, quiet) in silent {
            self.disconnect(peer, Disconnect::Silent(quiet));
        }
        for peer in no_hello {
            self.disconnect(peer, Disconnect::NoHello);
        }
        for peer in ping {
            self.send(now, peer, Lane::Live, Message::Ping);
        }
        // Entries given to the store are coming: a source that sent them did not stall.
        let (heads, storing) = (&self.heads, &self.storing);
        let changed = self
            .router
            .check_stalls(now, |author| coming(heads, storing, author));
        self.route(changed);
    }

    /// Sends every accepted peer what is due: acks, notes, live entries, then bulk batches
    /// while its window allows.
    fn push_all(&mut self, now: Instant, logs: &impl Logs) {
        let peers: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, state)| !state.closing && matches!(state.phase, Phase::Accepted(_)))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in peers {
            self.push(now, peer, logs);
        }
    }

    fn push(&mut self, now: Instant, peer: P, logs: &impl Logs) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let Phase::Accepted(session) = &mut state.phase else {
            return;
        };
        let mut pusher = Pusher {
            now,
            heads: &self.heads,
            logs,
            sends: Vec::new(),
            notes: Vec::new(),
        };
        if session.to_ack > 0 {
            pusher
                .sends
                .push((Lane::Live, Message::Ack(session.to_ack)));
            session.to_ack = 0;
        }
        // Nothing is pushed before the peer said how it routes (its first `Route`, sent once
        // its comparison is done), so a log it gets from another peer is not pushed twice.
        if session.routed_by_it {
            // Live first: new entries of logs the peer was up to date on.
            let live: Vec<Author> = std::mem::take(&mut session.live).into_iter().collect();
            for author in live {
                let (live_n, _) = session.in_flight_on(Lane::Live);
                if live_n >= LIVE_WINDOW_BATCHES {
                    session.live.insert(author);
                } else if pusher.log(session, author, Lane::Live) {
                    session.dirty.insert(author);
                }
            }
            // Then bulk: short runs first (a log with a few new entries, a newcomer's
            // profile), then long ones, a batch of each in turn.
            loop {
                let (bulk_n, bulk_bytes) = session.in_flight_on(Lane::Bulk);
                if bulk_n >= BULK_WINDOW_BATCHES || bulk_bytes >= session.bulk_window() {
                    break;
                }
                if let Some(author) = session.dirty.pop_first() {
                    let ours = self.heads.get(&author).map_or(0, |h| h.seq);
                    if ours.saturating_sub(session.has(&author)) > MAX_LIVE_RUN {
                        session.backlog.insert(author);
                    } else if pusher.log(session, author, Lane::Bulk) {
                        session.dirty.insert(author);
                    }
                } else if let Some(author) = session.next_in_backlog() {
                    if !pusher.log(session, author, Lane::Bulk) {
                        session.backlog.remove(&author);
                    }
                } else {
                    break;
                }
            }
        }
        let Pusher {
            mut sends, notes, ..
        } = pusher;
        for chunk in notes.chunks(MAX_MESSAGE_NOTES) {
            sends.push((Lane::Live, Message::Have(chunk.to_vec())));
        }
        for (lane, message) in sends {
            self.send(now, peer, lane, message);
        }
    }
}

/// What one round of pushing to a peer reads and gathers.
struct Pusher<'a, L> {
    now: Instant,
    heads: &'a HeadSet,
    logs: &'a L,
    sends: Vec<(Lane, Message)>,
    notes: Vec<HeadNote>,
}

impl<L: Logs> Pusher<'_, L> {
    /// Sends `session`'s peer one batch of what it lacks of `author`'s log on `lane`, or a
    /// note when it skips the log. Returns whether more of the log is due after this batch.
    fn log(&mut self, session: &mut Session, author: Author, lane: Lane) -> bool {
        let Some(ours) = self.heads.get(&author).map(|h| h.seq) else {
            return false;
        };
        let has = session.has(&author);
        if has >= ours || self.logs.is_frozen(&author) {
            return false;
        }
        if session.skipped_by_it.contains(&author) || session.offered_only.contains(&author) {
            if session.noted.get(&author).is_none_or(|n| *n < ours) {
                session.noted.insert(author, ours);
                self.notes.push(HeadNote { author, seq: ours });
            }
            return false;
        }
        let budget = match lane {
            Lane::Live => BATCH_BYTE_BUDGET,
            Lane::Bulk => session.bulk_batch_bytes(),
        };
        // Only up to what we hold durably, though the store may hold more already.
        let count = usize::try_from(ours - has).unwrap_or(usize::MAX);
        let read = self
            .logs
            .envelopes(&author, has + 1, count.min(MAX_BATCH_ENTRIES), budget);
        let envelopes = match read {
            Ok(envelopes) if !envelopes.is_empty() => envelopes,
            // Unreadable (damage) or gone: not sent; the peer may get it from others.
            _ => return false,
        };
        let last = envelopes.last().map_or(has, |(seq, _)| *seq);
        let bytes = envelopes.iter().map(|(_, e)| e.len()).sum();
        let batch = Batch {
            author,
            entries: envelopes
                .into_iter()
                .map(|(_, envelope)| serde_bytes::ByteBuf::from(Vec::from(envelope)))
                .collect(),
        };
        session.sent.insert(author, last);
        session.in_flight.push_back(InFlight {
            lane,
            bytes,
            sent_at: self.now,
        });
        self.sends.push((lane, Message::Batch(batch)));
        last < ours
    }
}

/// The highest seq of `author`'s log we hold or have given to the store (`storing`, by log:
/// the highest seq its batches reach and how many): what is coming needs no asking.
fn coming(heads: &HeadSet, storing: &BTreeMap<Author, (u64, usize)>, author: &Author) -> u64 {
    let held = heads.get(author).map_or(0, |h| h.seq);
    storing.get(author).map_or(held, |s| s.0.max(held))
}

/// The session of `peer` in `peers`, if accepted (borrowing only the peer table, so the rest
/// of the replica can be read meanwhile).
fn session_in<'a, P: Ord>(peers: &'a mut BTreeMap<P, Peer>, peer: &P) -> Option<&'a mut Session> {
    match &mut peers.get_mut(peer)?.phase {
        Phase::Accepted(session) => Some(session),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
