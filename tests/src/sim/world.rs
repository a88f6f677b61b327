//! The simulator's engine: nodes, connections, and the one event queue that drives them.
//!
//! Each honest node is what the node's driver makes of a [`Rooms`] core over one memory store
//! per room: its outputs are carried out (frames written to links, batches stored by a storage
//! worker after a delay, disconnects, a room's hello answered with an accept), and everything
//! that happens to it comes in as a [`RoomsInput`], in order. A frozen node's inputs wait in
//! its inbox.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2pchat_protocol::limits::MAX_FRAME_BYTES;
use p2pchat_protocol::membership::{Nonce, Transcript};
use p2pchat_protocol::message::{Batch, Frame, Lane, Message, MessageError};
use p2pchat_protocol::replica::{Disconnect, Event, TICK, batch_seqs};
use p2pchat_protocol::rooms::{Rooms, RoomsEvent, RoomsInput, RoomsOutput};
use p2pchat_protocol::store::{Logs, MemoryStore, SignatureCache};
use p2pchat_protocol::{Author, Body, Entry, Room, SigningKey};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::BASE_UNIX_MS;
use super::clock::Queue;
use super::hostile::{Attack, Hostile};
use super::link::Link;
use super::report::{AttackOutcome, Disconnected, Report};
use super::scenario::{Fault, NodeId, Scenario, Topology, Until};

/// The first redial waits this long; each failure doubles it, up to [`MAX_REDIAL`].
const FIRST_REDIAL: Duration = Duration::from_millis(500);
/// The longest wait between redials.
const MAX_REDIAL: Duration = Duration::from_secs(10);
/// A hostile node attacks this long after its hello (once the target accepted it).
const ATTACK_DELAY: Duration = Duration::from_millis(300);
/// A hostile node pings this often, so that only its attacks get it disconnected.
const HOSTILE_PING: Duration = Duration::from_millis(400);

type ConnId = u64;

enum Ev {
    Dial {
        from: NodeId,
        to: NodeId,
    },
    Up {
        conn: ConnId,
    },
    Arrive {
        conn: ConnId,
        dir: usize,
        lane: Lane,
        bytes: Vec<u8>,
    },
    Release {
        conn: ConnId,
        dir: usize,
    },
    Closed {
        conn: ConnId,
        node: NodeId,
        peer: NodeId,
        life: u32,
    },
    Tick {
        node: NodeId,
        life: u32,
    },
    StoreDone {
        node: NodeId,
        life: u32,
    },
    Write {
        node: NodeId,
    },
    Fault(usize),
    Restarted {
        node: NodeId,
    },
    HostileAttack {
        conn: ConnId,
    },
    HostilePing {
        conn: ConnId,
    },
}

/// What waits for a frozen node (and what a running one processes at once).
enum Inbox {
    Connected {
        conn: ConnId,
        peer: NodeId,
    },
    Closed {
        conn: ConnId,
        peer: NodeId,
    },
    Frame {
        conn: ConnId,
        peer: NodeId,
        lane: Lane,
        bytes: Vec<u8>,
    },
    StoreDone,
    Write,
    Dial {
        to: NodeId,
    },
}

struct Honest {
    key: SigningKey,
    author: Author,
    name: String,
    /// The world's rooms it is in, in its own order (the core's room indices).
    rooms: Vec<usize>,
    /// One store per room, in the order of `rooms`.
    stores: Vec<MemoryStore>,
    core: Rooms<NodeId>,
    /// Bumped at each restart: events of an earlier life are void.
    life: u32,
    down: bool,
    frozen: bool,
    inbox: VecDeque<Inbox>,
    /// The connection to each peer as this node's driver knows it (a frozen node learns of
    /// closed and new ones when it thaws): what the core sends goes there.
    current: BTreeMap<NodeId, ConnId>,
    /// Batches waiting for the storage worker (with the core's room index), oldest first.
    jobs: VecDeque<(usize, NodeId, Batch)>,
    storing: bool,
    /// Entries of honest logs held, over all its rooms.
    held: u64,
    held_at_start: u64,
    /// Whom it dials when it starts.
    dials: Vec<NodeId>,
    /// Lines typed while it was down, written when it is up again.
    writes_waiting: usize,
    written: usize,
}

impl Honest {
    /// A fresh core over the stores it keeps.
    fn core(&self, world: &[Room]) -> Rooms<NodeId> {
        new_core(self.author, &self.name, &self.rooms, &self.stores, world)
    }

    /// The core's index of the world's room `room`, if the node is in it.
    fn local(&self, room: usize) -> Option<usize> {
        self.rooms.iter().position(|&r| r == room)
    }
}

struct Conn {
    dialer: NodeId,
    other: NodeId,
    open: bool,
    /// `[dialer → other, other → dialer]`.
    links: [Link; 2],
    /// Frames that reached a partition, per direction, delivered in order when it heals.
    held: [VecDeque<(Lane, Vec<u8>)>; 2],
    /// The hostile node's attack on this connection, and its index in the report.
    attack: Option<(Attack, usize)>,
    /// The nonce the hostile node greeted with on this connection.
    hostile_nonce: Option<Nonce>,
}

impl Conn {
    fn ends(&self, dir: usize) -> (NodeId, NodeId) {
        if dir == 0 {
            (self.dialer, self.other)
        } else {
            (self.other, self.dialer)
        }
    }

    fn dir_from(&self, from: NodeId) -> usize {
        usize::from(from != self.dialer)
    }
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

/// One run of a [`Scenario`].
pub(super) struct Sim {
    scenario: Scenario,
    rng: StdRng,
    queue: Queue<Ev>,
    base: Instant,
    honest: Vec<Honest>,
    hostile: Option<(NodeId, Hostile)>,
    /// The world's rooms: room 0 is the LAN room, the others private.
    rooms: Vec<Room>,
    /// How many honest nodes are in each room.
    members: Vec<u64>,
    conns: BTreeMap<ConnId, Conn>,
    pairs: BTreeMap<(NodeId, NodeId), ConnId>,
    next_conn: ConnId,
    /// Failed or closed dials since the last accepted hello, per (dialer, target).
    failures: BTreeMap<(NodeId, NodeId), u32>,
    partition: Option<BTreeSet<NodeId>>,
    /// Every honest log of each room (the nodes' own and the preloaded ones) and its head at
    /// the end.
    expected: Vec<BTreeMap<Author, u64>>,
    /// When each line written during the run was written (by room, author and seq).
    written_at: BTreeMap<(usize, Author, u64), Duration>,
    /// Entries of honest logs in each room.
    totals: Vec<u64>,
    /// Entries of honest logs the honest nodes lack, summed over them.
    lacking: u64,
    writes_pending: usize,
    faults_pending: usize,
    /// Honest nodes down or frozen.
    disturbed: usize,
    trace: DefaultHasher,
    report: Report,
}

impl Sim {
    pub(super) fn new(scenario: Scenario) -> Self {
        let mut rng = StdRng::seed_from_u64(scenario.seed);
        let memberships: Vec<Vec<usize>> = (0..scenario.nodes)
            .map(|i| match scenario.rooms.get(i) {
                Some(rooms) => rooms.clone(),
                None => vec![0],
            })
            .collect();
        let room_count = memberships.iter().flatten().max().map_or(1, |r| r + 1);
        let rooms: Vec<Room> = (0..room_count).map(world_room).collect();
        let mut members = vec![0u64; room_count];
        for &r in memberships.iter().flatten() {
            members[r] += 1;
        }
        let mut expected = vec![BTreeMap::new(); room_count];
        // Preloaded logs are of the first room.
        // Each entry's signature is checked once in the world, not once per node storing it
        // (the same rules, at the cost of one check per entry).
        let signatures = SignatureCache::new();
        let mut preloaded = MemoryStore::with_signature_cache(rooms[0].id(), signatures.clone());
        if let Some(preload) = &scenario.preload {
            for a in 0..preload.authors {
                let key = SigningKey::from_bytes(&rng.r#gen());
                for seq in 1..=preload.entries {
                    let body = if seq == 1 {
                        Body::Profile {
                            name: format!("p{a}"),
                        }
                    } else {
                        Body::Text {
                            text: format!("preloaded line {seq} of p{a}"),
                        }
                    };
                    if let Err(e) = preloaded.append(&key, body, BASE_UNIX_MS) {
                        unreachable!("a preloaded entry does not sign: {e}");
                    }
                }
                expected[0].insert(Author::of(&key), preload.entries as u64);
            }
        }
        let holders: BTreeSet<NodeId> = scenario
            .preload
            .iter()
            .flat_map(|p| p.holders.iter().copied())
            .collect();
        let ids: Vec<NodeId> = (0..scenario.nodes as u32).map(NodeId).collect();
        let dials = dial_plan(&scenario, &ids, &mut rng);
        let mut honest = Vec::with_capacity(scenario.nodes);
        for ((&id, dials), node_rooms) in ids.iter().zip(dials).zip(memberships) {
            let key = SigningKey::from_bytes(&rng.r#gen());
            let author = Author::of(&key);
            let name = id.to_string();
            let mut stores = Vec::with_capacity(node_rooms.len());
            for &r in &node_rooms {
                let mut store = if r == 0 && holders.contains(&id) {
                    preloaded.clone()
                } else {
                    MemoryStore::with_signature_cache(rooms[r].id(), signatures.clone())
                };
                let profile = Body::Profile { name: name.clone() };
                if let Err(e) = store.append(&key, profile, BASE_UNIX_MS) {
                    unreachable!("a profile does not sign: {e}");
                }
                expected[r].insert(author, 1);
                stores.push(store);
            }
            let held = stores.iter().map(|s| s.len() as u64).sum();
            let core = new_core(author, &name, &node_rooms, &stores, &rooms);
            honest.push(Honest {
                key,
                author,
                name,
                rooms: node_rooms,
                stores,
                core,
                life: 0,
                down: false,
                frozen: false,
                inbox: VecDeque::new(),
                current: BTreeMap::new(),
                jobs: VecDeque::new(),
                storing: false,
                held,
                held_at_start: held,
                dials,
                writes_waiting: 0,
                written: 0,
            });
        }
        let totals: Vec<u64> = expected.iter().map(|logs| logs.values().sum()).collect();
        let lacking = honest
            .iter()
            .map(|h| h.rooms.iter().map(|&r| totals[r]).sum::<u64>() - h.held)
            .sum();
        let hostile = (!scenario.attacks.is_empty()).then(|| {
            let key = SigningKey::from_bytes(&rng.r#gen());
            let authors = honest.iter().map(|h| h.author).collect();
            // An honest entry of the first room, the one the hostile node is in.
            let sample = honest
                .iter()
                .find_map(|h| {
                    let local = h.local(0)?;
                    h.stores[local].entries_of(&h.author).first().cloned()
                })
                .unwrap_or_else(|| unreachable!("a hostile node's room has no honest member"));
            (
                NodeId(scenario.nodes as u32),
                Hostile::new(key, scenario.attacks.clone(), authors, sample),
            )
        });
        let report = Report {
            scenario: scenario.name.clone(),
            seed: scenario.seed,
            nodes: scenario.nodes,
            ..Report::default()
        };
        let mut sim = Self {
            scenario,
            rng,
            queue: Queue::new(),
            base: Instant::now(),
            honest,
            hostile,
            conns: BTreeMap::new(),
            pairs: BTreeMap::new(),
            next_conn: 0,
            failures: BTreeMap::new(),
            partition: None,
            rooms,
            members,
            expected,
            written_at: BTreeMap::new(),
            totals,
            lacking,
            writes_pending: 0,
            faults_pending: 0,
            disturbed: 0,
            trace: DefaultHasher::new(),
            report,
        };
        sim.schedule_start();
        sim
    }

    fn schedule_start(&mut self) {
        for i in 0..self.honest.len() {
            let node = NodeId(i as u32);
            self.start_node(node);
        }
        let writers: Vec<NodeId> = match &self.scenario.lines.writers {
            Some(writers) => writers.clone(),
            None => (0..self.honest.len() as u32).map(NodeId).collect(),
        };
        let lines = self.scenario.lines.clone();
        for &node in &writers {
            for i in 0..lines.per_writer {
                let span = lines.to.saturating_sub(lines.from);
                let at = if lines.even {
                    lines.from + span.mul_f64(i as f64 / lines.per_writer.max(1) as f64)
                } else {
                    lines.from + span.mul_f64(self.rng.r#gen::<f64>())
                };
                self.queue.push(at, Ev::Write { node });
                self.writes_pending += 1;
            }
        }
        for (i, (at, _)) in self.scenario.faults.iter().enumerate() {
            self.queue.push(*at, Ev::Fault(i));
            self.faults_pending += 1;
        }
        if let Some((id, _)) = &self.hostile {
            let id = *id;
            let mut targets: Vec<NodeId> = (0..self.honest.len() as u32).map(NodeId).collect();
            targets.shuffle(&mut self.rng);
            targets.truncate(self.scenario.hostile_targets);
            for to in targets {
                let at = Duration::from_millis(self.rng.gen_range(0..200));
                self.queue.push(at, Ev::Dial { from: id, to });
            }
        }
    }

    /// A node's ticks and dials, at the start of the run or of a new life.
    fn start_node(&mut self, node: NodeId) {
        let h = &self.honest[node.index()];
        let life = h.life;
        let dials = h.dials.clone();
        let phase = self.rng.gen_range(Duration::ZERO..TICK);
        self.queue.after(phase, Ev::Tick { node, life });
        for to in dials {
            let delay = Duration::from_millis(self.rng.gen_range(0..50));
            self.queue.after(delay, Ev::Dial { from: node, to });
        }
    }

    /// Runs to the end and reports.
    pub(super) fn run(mut self) -> Report {
        let wall = Instant::now();
        while let Some((at, event)) = self.queue.pop() {
            if at > self.scenario.time_limit {
                break;
            }
            if let Some(limit) = self.scenario.wall_limit
                && self.report.events.is_multiple_of(4096)
                && wall.elapsed() >= limit
            {
                self.report.wall_limited = true;
                break;
            }
            if let Until::Time(end) = self.scenario.until
                && at > end
            {
                break;
            }
            self.report.events += 1;
            self.report.ended_at = at;
            self.handle(event);
            if self.report.converged_at.is_none() && self.is_converged() {
                self.report.converged_at = Some(at);
                if self.scenario.until == Until::Converged {
                    break;
                }
            }
        }
        self.report.wall = wall.elapsed();
        self.finish()
    }

    fn is_converged(&self) -> bool {
        self.writes_pending == 0
            && self.faults_pending == 0
            && self.disturbed == 0
            && self.lacking == 0
    }

    fn now(&self) -> Duration {
        self.queue.now()
    }

    fn is_hostile(&self, node: NodeId) -> bool {
        node.index() >= self.honest.len()
    }

    fn is_cut(&self, a: NodeId, b: NodeId) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|side| side.contains(&a) != side.contains(&b))
    }

    fn author_of(&self, node: NodeId) -> Author {
        match self.honest.get(node.index()) {
            Some(h) => h.author,
            None => match &self.hostile {
                Some((_, hostile)) => hostile.author,
                None => unreachable!("{node} is neither honest nor hostile"),
            },
        }
    }

    fn handle(&mut self, event: Ev) {
        match event {
            Ev::Dial { from, to } => self.deliver_or_act(from, Inbox::Dial { to }),
            Ev::Up { conn } => self.up(conn),
            Ev::Arrive {
                conn,
                dir,
                lane,
                bytes,
            } => self.arrive(conn, dir, lane, bytes),
            Ev::Release { conn, dir } => self.release(conn, dir),
            Ev::Closed {
                conn,
                node,
                peer,
                life,
            } => {
                if self.honest[node.index()].life == life {
                    self.deliver(node, Inbox::Closed { conn, peer });
                }
            }
            Ev::Tick { node, life } => {
                let h = &self.honest[node.index()];
                if h.life == life {
                    self.queue.after(TICK, Ev::Tick { node, life });
                    if !h.frozen && !h.down {
                        self.input(node, RoomsInput::Tick);
                    }
                }
            }
            Ev::StoreDone { node, life } => {
                if self.honest[node.index()].life == life {
                    self.deliver(node, Inbox::StoreDone);
                }
            }
            Ev::Write { node } => {
                let h = &mut self.honest[node.index()];
                if h.down {
                    h.writes_waiting += 1;
                } else {
                    self.deliver(node, Inbox::Write);
                }
            }
            Ev::Fault(i) => {
                self.faults_pending -= 1;
                let fault = self.scenario.faults[i].1.clone();
                self.fault(fault);
            }
            Ev::Restarted { node } => {
                self.faults_pending -= 1;
                self.restarted(node);
            }
            Ev::HostileAttack { conn } => self.hostile_attack(conn),
            Ev::HostilePing { conn } => {
                if self.conns.contains_key(&conn) {
                    let Some((id, _)) = &self.hostile else { return };
                    let id = *id;
                    let ping = Frame::Room(0, Message::Ping);
                    self.transmit(conn, id, Lane::Live, ping.encode());
                    self.queue.after(HOSTILE_PING, Ev::HostilePing { conn });
                }
            }
        }
    }

    /// Dials are the driver's doing: a frozen honest node dials once it is thawed.
    fn deliver_or_act(&mut self, node: NodeId, item: Inbox) {
        if self.is_hostile(node) {
            if let Inbox::Dial { to } = item {
                self.dial(node, to);
            }
        } else {
            self.deliver(node, item);
        }
    }

    /// Hands `item` to an honest node: at once, or into its inbox while it is frozen.
    fn deliver(&mut self, node: NodeId, item: Inbox) {
        let h = &mut self.honest[node.index()];
        if h.down {
            return;
        }
        if h.frozen {
            h.inbox.push_back(item);
            return;
        }
        self.process(node, item);
    }

    fn process(&mut self, node: NodeId, item: Inbox) {
        match item {
            Inbox::Connected { conn, peer } => {
                self.honest[node.index()].current.insert(peer, conn);
                let author = self.author_of(peer);
                let nonce = Nonce::new(self.rng.r#gen());
                self.input(
                    node,
                    RoomsInput::Connected {
                        peer,
                        author,
                        nonce,
                    },
                );
            }
            Inbox::Closed { conn, peer } => {
                let current = &mut self.honest[node.index()].current;
                if current.get(&peer) == Some(&conn) {
                    current.remove(&peer);
                }
                self.input(node, RoomsInput::Closed { peer });
            }
            Inbox::Frame {
                conn,
                peer,
                lane,
                bytes,
            } => {
                if !self.conns.contains_key(&conn) {
                    return; // the connection closed: what it still carried is gone
                }
                let input = if bytes.len() > MAX_FRAME_BYTES {
                    if !self.is_hostile(peer) {
                        self.report.problems.push(format!(
                            "{peer} sent {node} a frame of {} bytes, over the {MAX_FRAME_BYTES}-byte limit",
                            bytes.len()
                        ));
                    }
                    RoomsInput::Malformed {
                        peer,
                        error: MessageError::TooLarge {
                            what: "bytes in a frame",
                            found: bytes.len(),
                            limit: MAX_FRAME_BYTES,
                        },
                    }
                } else {
                    match Frame::decode(&bytes) {
                        Ok(frame) => {
                            if let Frame::Room(slot, Message::Batch(batch)) = &frame
                                && !self.is_hostile(peer)
                            {
                                self.check_delivery(node, peer, *slot, batch);
                                self.count_redundant(node, peer, *slot, lane, batch);
                                let n = batch.entries.len() as u64;
                                self.report.entries_received += n;
                                if lane == Lane::Live {
                                    self.report.entries_received_live += n;
                                }
                            }
                            RoomsInput::Received { peer, frame }
                        }
                        Err(error) => {
                            if !self.is_hostile(peer) {
                                self.report.problems.push(format!(
                                    "{peer} sent {node} a frame that does not decode: {error}"
                                ));
                            }
                            RoomsInput::Malformed { peer, error }
                        }
                    }
                };
                self.input(node, input);
            }
            Inbox::StoreDone => self.store_next(node),
            Inbox::Write => self.write(node),
            Inbox::Dial { to } => self.dial(node, to),
        }
    }

    /// Counts the entries of `batch` (from honest `peer`, in its room `slot`) that are not of
    /// the room the slot is at `node`: an entry delivered outside its room.
    fn check_delivery(&mut self, node: NodeId, peer: NodeId, slot: u8, batch: &Batch) {
        let h = &self.honest[node.index()];
        let Some(&local) = h.core.shared_rooms(&peer).get(usize::from(slot)) else {
            return; // not proved yet: the core refuses it
        };
        let room = &self.rooms[h.rooms[local]];
        for envelope in &batch.entries {
            let entry = Entry::decode(Bytes::copy_from_slice(envelope));
            if !entry.is_ok_and(|entry| belongs(&entry, room)) {
                self.report.misplaced_entries += 1;
                if self.report.misplaced_entries <= 3 {
                    self.report.problems.push(format!(
                        "{peer} sent {node} in {} an entry of another room",
                        room.label()
                    ));
                }
            }
        }
    }

    /// Counts the entries of `batch` (from honest `peer` on `lane`) that `node` already
    /// holds, or has queued for its store: received again, split by lane and by whether
    /// `peer` is the node's source of the log, to tell where duplicates come from.
    fn count_redundant(&mut self, node: NodeId, peer: NodeId, slot: u8, lane: Lane, batch: &Batch) {
        let h = &self.honest[node.index()];
        let Some(&local) = h.core.shared_rooms(&peer).get(usize::from(slot)) else {
            return;
        };
        let Some((first, last)) = batch_seqs(batch) else {
            return;
        };
        let held = h.stores[local].head_seq(&batch.author);
        let queued = h
            .jobs
            .iter()
            .filter(|(room, _, job)| *room == local && job.author == batch.author)
            .filter_map(|(_, _, job)| batch_seqs(job))
            .map(|(_, last)| last)
            .max()
            .unwrap_or(0)
            .max(held);
        let count = |upto: u64| (upto.min(last) + 1).saturating_sub(first);
        let from_source = h.core.replica(local).source_of(&batch.author) == Some(peer);
        let split =
            &mut self.report.redundant[usize::from(lane == Lane::Bulk)][usize::from(from_source)];
        split.held += count(held);
        split.queued += count(queued) - count(held);
        if held == 0 {
            split.queued_new_log += count(queued);
        }
    }

    fn input(&mut self, node: NodeId, input: RoomsInput<NodeId>) {
        let now = self.base + self.now();
        let h = &mut self.honest[node.index()];
        h.core.handle(now, input, &h.stores);
        self.drain(node);
        let footprint = self.honest[node.index()].core.footprint();
        self.report.peak_footprint = self.report.peak_footprint.max(footprint);
    }

    /// Carries out everything the node's core asks, until it asks nothing more.
    fn drain(&mut self, node: NodeId) {
        loop {
            let h = &mut self.honest[node.index()];
            let outputs: Vec<_> = std::iter::from_fn(|| h.core.poll()).collect();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                self.output(node, output);
            }
        }
    }

    fn output(&mut self, node: NodeId, output: RoomsOutput<NodeId>) {
        match output {
            RoomsOutput::Send { peer, lane, frame } => {
                if let Some(&conn) = self.honest[node.index()].current.get(&peer) {
                    let bytes = frame.encode();
                    let sent = self.report.by_kind.entry(frame_kind(&frame)).or_default();
                    sent.frames += 1;
                    sent.bytes += bytes.len() as u64 + 4;
                    if let Frame::Room(_, Message::Batch(batch)) = &frame {
                        sent.entries += batch.entries.len() as u64;
                    }
                    self.transmit(conn, node, lane, bytes);
                }
            }
            RoomsOutput::Store { room, peer, batch } => {
                let life = self.honest[node.index()].life;
                let delay = self.store_time(&batch);
                let h = &mut self.honest[node.index()];
                h.jobs.push_back((room, peer, batch));
                if !h.storing {
                    h.storing = true;
                    self.queue.after(delay, Ev::StoreDone { node, life });
                }
            }
            RoomsOutput::Disconnect { peer, reason } => {
                self.disconnected(node, peer, &reason);
                if let Some(&conn) = self.honest[node.index()].current.get(&peer) {
                    self.close(conn, Some(node));
                }
            }
            RoomsOutput::Event(RoomsEvent::Room { room, event }) => self.event(node, room, event),
            RoomsOutput::Event(_) => {}
        }
    }

    /// An event of the node's room `local` (the core's index).
    fn event(&mut self, node: NodeId, local: usize, event: Event<NodeId>) {
        let room = self.honest[node.index()].rooms[local];
        match event {
            Event::Hello { peer, .. } => {
                // The driver's accept step: everyone is welcome here. Handed straight to the
                // core, before any other input; `drain` carries out what follows.
                self.failures.remove(&(node, peer));
                self.failures.remove(&(peer, node));
                let now = self.base + self.now();
                let h = &mut self.honest[node.index()];
                let accept = RoomsInput::Accept { room: local, peer };
                h.core.handle(now, accept, &h.stores);
            }
            Event::Forked { author, seq } if self.expected[room].contains_key(&author) => {
                self.report.problems.push(format!(
                    "{node} says honest log {author:?} forked at seq {seq}"
                ));
            }
            Event::Rejected {
                peer,
                author,
                error,
            } if !self.is_hostile(peer) => {
                self.report.rejected_from_honest += 1;
                if self.report.rejected_from_honest <= 3 {
                    self.report.notes.push(format!(
                        "at {:?} {node} rejected a batch of {author:?} from honest {peer}: {error}",
                        self.now()
                    ));
                }
            }
            _ => {}
        }
    }

    fn disconnected(&mut self, node: NodeId, peer: NodeId, reason: &Disconnect) {
        let penalised = matches!(reason, Disconnect::Penalised(_));
        let record = Disconnected {
            at: self.now(),
            node,
            peer,
            reason: reason.to_string(),
            penalised,
        };
        if let Some(&conn) = self.honest[node.index()].current.get(&peer)
            && let Some((_, index)) = self.conns.get(&conn).and_then(|c| c.attack)
        {
            let outcome = &mut self.report.attacks[index];
            outcome.refused = Some(record.reason.clone());
            outcome.penalised = penalised;
        }
        self.report.disconnects.push(record);
    }

    fn store_time(&self, batch: &Batch) -> Duration {
        store_time(&self.scenario, batch)
    }

    /// The storage worker finished the oldest batch: it goes into its room's store, the core
    /// hears.
    fn store_next(&mut self, node: NodeId) {
        let now = self.now();
        let h = &mut self.honest[node.index()];
        let Some((local, peer, batch)) = h.jobs.pop_front() else {
            h.storing = false;
            return;
        };
        let room = h.rooms[local];
        let author = batch.author;
        let envelopes = batch.entries.into_iter().map(|e| Bytes::from(e.into_vec()));
        let inserted = h.stores[local].insert(author, envelopes);
        self.report.duplicates_stored += inserted.duplicates as u64;
        for entry in &inserted.stored {
            if !belongs(entry, &self.rooms[room]) {
                self.report.misplaced_entries += 1;
                if self.report.misplaced_entries <= 3 {
                    self.report.problems.push(format!(
                        "{node} stored in {} an entry of another room: {:?} seq {}",
                        self.rooms[room].label(),
                        entry.author(),
                        entry.seq()
                    ));
                }
            }
        }
        if self.expected[room].contains_key(&author) {
            let stored = inserted.stored.len() as u64;
            h.held += stored;
            self.lacking -= stored;
            for entry in &inserted.stored {
                if let Some(written) = self.written_at.get(&(room, author, entry.seq())) {
                    self.report.latency.record(now - *written);
                }
            }
        }
        let h = &mut self.honest[node.index()];
        match h.jobs.front() {
            Some((_, _, next)) => {
                let life = h.life;
                let delay = store_time(&self.scenario, next);
                self.queue.after(delay, Ev::StoreDone { node, life });
            }
            None => h.storing = false,
        }
        let outcome = Ok(inserted);
        self.input(
            node,
            RoomsInput::Stored {
                room: local,
                peer,
                author,
                outcome,
            },
        );
    }

    /// The node's user typed a line (in each of its rooms in turn): appended (durable), then
    /// the core hears.
    fn write(&mut self, node: NodeId) {
        let now = self.now();
        let h = &mut self.honest[node.index()];
        let local = h.written % h.rooms.len();
        let room = h.rooms[local];
        h.written += 1;
        let text = format!("line {} from {}", h.written, h.name);
        let timestamp = BASE_UNIX_MS + now.as_millis() as u64;
        let entry = match h.stores[local].append(&h.key, Body::Text { text }, timestamp) {
            Ok(entry) => entry,
            Err(e) => unreachable!("a short line does not sign: {e}"),
        };
        let author = h.author;
        h.held += 1;
        self.written_at.insert((room, author, entry.seq()), now);
        self.expected[room].insert(author, entry.seq());
        self.totals[room] += 1;
        self.lacking += self.members[room] - 1;
        self.writes_pending -= 1;
        self.report.lines_written += 1;
        self.input(
            node,
            RoomsInput::Appended {
                room: local,
                entries: vec![entry],
            },
        );
    }

    fn redial_delay(&mut self, from: NodeId, to: NodeId) -> Duration {
        let failures = self.failures.entry((from, to)).or_insert(0);
        let delay = FIRST_REDIAL
            .saturating_mul(1 << (*failures).min(8))
            .min(MAX_REDIAL);
        *failures += 1;
        delay + Duration::from_millis(self.rng.gen_range(0..100))
    }

    fn retry(&mut self, from: NodeId, to: NodeId) {
        let delay = self.redial_delay(from, to);
        self.queue.after(delay, Ev::Dial { from, to });
    }

    fn is_down(&self, node: NodeId) -> bool {
        self.honest.get(node.index()).is_some_and(|h| h.down)
    }

    fn dial(&mut self, from: NodeId, to: NodeId) {
        if self.is_down(from) || self.pairs.contains_key(&pair(from, to)) {
            return;
        }
        if self.is_down(to) || self.is_cut(from, to) {
            self.retry(from, to);
            return;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let params = self.scenario.link;
        self.conns.insert(
            id,
            Conn {
                dialer: from,
                other: to,
                open: false,
                links: [Link::new(params), Link::new(params)],
                held: Default::default(),
                attack: None,
                hostile_nonce: None,
            },
        );
        self.pairs.insert(pair(from, to), id);
        // TCP, then the security and multiplexing handshakes: about two round trips.
        self.queue.after(4 * params.latency, Ev::Up { conn: id });
    }

    fn up(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (dialer, other) = (conn.dialer, conn.other);
        if self.is_down(dialer) || self.is_down(other) || self.is_cut(dialer, other) {
            self.close(id, None);
            return;
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.open = true;
        }
        for (node, peer) in [(dialer, other), (other, dialer)] {
            if self.is_hostile(node) {
                self.hostile_connected(id, peer);
            } else {
                self.deliver(node, Inbox::Connected { conn: id, peer });
            }
        }
    }

    /// Closes a connection for both ends (`by` hears at once, the other after the latency);
    /// its dialer redials later.
    fn close(&mut self, id: ConnId, by: Option<NodeId>) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.pairs.remove(&pair(conn.dialer, conn.other));
        if conn.open {
            for (node, peer) in [(conn.dialer, conn.other), (conn.other, conn.dialer)] {
                if let Some(h) = self.honest.get(node.index())
                    && !h.down
                {
                    let delay = if by == Some(node) {
                        Duration::ZERO
                    } else {
                        conn.links[0].params().latency
                    };
                    let life = h.life;
                    self.queue.after(
                        delay,
                        Ev::Closed {
                            conn: id,
                            node,
                            peer,
                            life,
                        },
                    );
                }
            }
        }
        if !self.is_down(conn.dialer) {
            self.retry(conn.dialer, conn.other);
        }
    }

    /// Writes a frame on a connection.
    fn transmit(&mut self, id: ConnId, from: NodeId, lane: Lane, bytes: Vec<u8>) {
        let hostile = self.is_hostile(from);
        let now = self.now();
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.open {
            return;
        }
        let dir = conn.dir_from(from);
        let size = bytes.len() + 4;
        let arrival = conn.links[dir].send(now, size, &mut self.rng);
        self.queue.push(
            arrival,
            Ev::Arrive {
                conn: id,
                dir,
                lane,
                bytes,
            },
        );
        if hostile {
            self.report.hostile_frames += 1;
        } else {
            self.report.bytes_sent += size as u64;
            self.report.frames_sent += 1;
            if lane == Lane::Bulk {
                self.report.bulk_bytes_sent += size as u64;
            }
        }
    }

    fn arrive(&mut self, id: ConnId, dir: usize, lane: Lane, bytes: Vec<u8>) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (from, to) = conn.ends(dir);
        if self.is_cut(from, to) || !conn.held[dir].is_empty() {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.held[dir].push_back((lane, bytes));
            }
            return;
        }
        self.arrived(id, from, to, lane, bytes);
    }

    fn release(&mut self, id: ConnId, dir: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let (from, to) = conn.ends(dir);
        let held = std::mem::take(&mut conn.held[dir]);
        if self.is_cut(from, to) {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.held[dir] = held;
            }
            return;
        }
        for (lane, bytes) in held {
            if !self.conns.contains_key(&id) {
                return;
            }
            self.arrived(id, from, to, lane, bytes);
        }
    }

    /// A frame reached `to`'s end of the connection.
    fn arrived(&mut self, id: ConnId, from: NodeId, to: NodeId, lane: Lane, bytes: Vec<u8>) {
        self.now().as_nanos().hash(&mut self.trace);
        (from, to).hash(&mut self.trace);
        bytes.hash(&mut self.trace);
        if self.is_hostile(to) {
            self.hostile_received(id, &bytes);
        } else {
            self.deliver(
                to,
                Inbox::Frame {
                    conn: id,
                    peer: from,
                    lane,
                    bytes,
                },
            );
        }
    }

    fn fault(&mut self, fault: Fault) {
        match fault {
            Fault::Partition(side) => self.partition = Some(side.into_iter().collect()),
            Fault::Heal => {
                self.partition = None;
                let held: Vec<(ConnId, usize, Duration)> = self
                    .conns
                    .iter()
                    .flat_map(|(&id, conn)| {
                        let params = *conn.links[0].params();
                        (0..2)
                            .filter(|&dir| !conn.held[dir].is_empty())
                            .map(move |dir| (id, dir, params.rto + params.latency))
                    })
                    .collect();
                for (conn, dir, delay) in held {
                    self.queue.after(delay, Ev::Release { conn, dir });
                }
            }
            Fault::Restart { node, down } => {
                let h = &mut self.honest[node.index()];
                if h.down {
                    return;
                }
                if h.frozen {
                    h.frozen = false;
                    self.disturbed -= 1;
                }
                h.down = true;
                h.life += 1;
                h.inbox.clear();
                h.current.clear();
                h.jobs.clear();
                h.storing = false;
                self.disturbed += 1;
                let mine: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.dialer == node || c.other == node)
                    .map(|(&id, _)| id)
                    .collect();
                for id in mine {
                    self.close(id, Some(node));
                }
                self.faults_pending += 1;
                self.queue.after(down, Ev::Restarted { node });
            }
            Fault::Freeze(node) => {
                let h = &mut self.honest[node.index()];
                if !h.frozen && !h.down {
                    h.frozen = true;
                    self.disturbed += 1;
                }
            }
            Fault::Thaw(node) => {
                let h = &mut self.honest[node.index()];
                if !h.frozen {
                    return;
                }
                h.frozen = false;
                self.disturbed -= 1;
                while let Some(item) = self.honest[node.index()].inbox.pop_front() {
                    self.process(node, item);
                }
            }
        }
    }

    /// A restarted node comes back: a fresh core over the store it kept.
    fn restarted(&mut self, node: NodeId) {
        let h = &mut self.honest[node.index()];
        h.down = false;
        h.core = h.core(&self.rooms);
        let waiting = std::mem::take(&mut h.writes_waiting);
        self.disturbed -= 1;
        self.start_node(node);
        for _ in 0..waiting {
            self.queue.after(Duration::ZERO, Ev::Write { node });
        }
    }

    fn hostile_connected(&mut self, id: ConnId, target: NodeId) {
        let Some((me, hostile)) = &mut self.hostile else {
            return;
        };
        let me = *me;
        let attack = hostile.next_attack();
        let index = self.report.attacks.len();
        self.report.attacks.push(AttackOutcome {
            target,
            attack,
            attacked_at: None,
            refused: None,
            penalised: false,
        });
        let nonce = Nonce::new(self.rng.r#gen());
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.attack = Some((attack, index));
            conn.hostile_nonce = Some(nonce);
        }
        self.transmit(id, me, Lane::Live, Hostile::greet(nonce).encode());
        self.queue
            .after(ATTACK_DELAY, Ev::HostileAttack { conn: id });
        self.queue.after(HOSTILE_PING, Ev::HostilePing { conn: id });
    }

    fn hostile_attack(&mut self, id: ConnId) {
        let Some((attack, index)) = self.conns.get(&id).and_then(|c| c.attack) else {
            return;
        };
        self.report.attacks[index].attacked_at = Some(self.now());
        let Some((me, hostile)) = &self.hostile else {
            return;
        };
        let me = *me;
        let frames = hostile.attack(attack, &mut self.rng);
        for (lane, bytes) in frames {
            self.transmit(id, me, lane, bytes);
        }
    }

    /// The hostile node proves the first room (the world's LAN room) once greeted, says a
    /// valid hello there, and answers queries.
    fn hostile_received(&mut self, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (Some((attack, _)), Some(our_nonce)) = (conn.attack, conn.hostile_nonce) else {
            return;
        };
        let target = if self.is_hostile(conn.dialer) {
            conn.other
        } else {
            conn.dialer
        };
        let them = self.author_of(target);
        let Some((me, hostile)) = &self.hostile else {
            return;
        };
        let me = *me;
        let answers = match Frame::decode(bytes) {
            Ok(Frame::Greet(greet)) => {
                let transcript = Transcript {
                    us: hostile.author,
                    them,
                    our_nonce,
                    their_nonce: greet.nonce,
                };
                let proof = Frame::Proof(transcript.our_tags(&self.rooms[..1]));
                vec![proof.encode(), Hostile::hello().encode()]
            }
            Ok(Frame::Room(0, message)) => hostile.answer(attack, &message).into_iter().collect(),
            _ => Vec::new(),
        };
        for answer in answers {
            self.transmit(id, me, Lane::Live, answer);
        }
    }

    /// The report, with what the end state shows to be wrong.
    fn finish(mut self) -> Report {
        let report = &mut self.report;
        report.entries_total = self.totals.iter().sum();
        let start: u64 = self.honest.iter().map(|h| h.held_at_start).sum();
        let needed: u64 = self
            .totals
            .iter()
            .zip(&self.members)
            .map(|(t, m)| t * m)
            .sum();
        report.unique_needed = needed.saturating_sub(start + report.lines_written);
        if self.scenario.until == Until::Converged {
            if report.converged_at.is_none() {
                report.problems.push(format!(
                    "did not converge within {:?}: {} entries still missing",
                    self.scenario.time_limit, self.lacking
                ));
            }
            let mut missing = 0;
            for (i, h) in self.honest.iter().enumerate() {
                for (&room, store) in h.rooms.iter().zip(&h.stores) {
                    for (author, &seq) in &self.expected[room] {
                        let held = store.head_seq(author);
                        if held != seq {
                            missing += 1;
                            if missing <= 5 {
                                report.problems.push(format!(
                                    "n{i} holds the log of {author:?} in {} through seq {held} of {seq}",
                                    self.rooms[room].label()
                                ));
                            }
                        }
                    }
                }
            }
            if missing > 5 {
                report
                    .problems
                    .push(format!("... {} more logs not fully held", missing - 5));
            }
            if missing == 0 {
                for (room, world_room) in self.rooms.iter().enumerate() {
                    let mut members = self
                        .honest
                        .iter()
                        .enumerate()
                        .filter_map(|(i, h)| Some((i, h.stores[h.local(room)?].heads())));
                    let Some((_, first)) = members.next() else {
                        continue;
                    };
                    for (i, heads) in members {
                        if heads != first {
                            report.problems.push(format!(
                                "n{i} holds other heads in {} than its first member",
                                world_room.label()
                            ));
                        }
                    }
                }
            }
        }
        let nodes = self.honest.len();
        let checked = self.scenario.verify_nodes.min(nodes);
        for k in 0..checked {
            let i = k * nodes / checked.max(1);
            for store in &self.honest[i].stores {
                if let Err(broken) = store.verify_chains() {
                    report.problems.push(format!("n{i}: {broken}"));
                }
            }
        }
        let honest = nodes;
        for d in report.disconnects.iter().filter(|d| d.penalised) {
            if d.peer.index() < honest {
                report.problems.push(format!(
                    "at {:?} {} penalised honest {}: {}",
                    d.at, d.node, d.peer, d.reason
                ));
            }
        }
        report.trace = self.trace.finish();
        self.report
    }
}

/// The core of `author`'s node called `name`, in the world's `rooms` over `stores`.
fn new_core(
    author: Author,
    name: &str,
    rooms: &[usize],
    stores: &[MemoryStore],
    world: &[Room],
) -> Rooms<NodeId> {
    let rooms = rooms
        .iter()
        .zip(stores)
        .map(|(&r, store)| (world[r].clone(), name.to_owned(), store.heads()))
        .collect();
    Rooms::new(author, rooms)
}

/// The world's room `r`: the LAN room first, then private rooms.
fn world_room(r: usize) -> Room {
    match r {
        0 => Room::lan(),
        _ => Room::private(&[r as u8; 32], format!("room{r}")),
    }
}

/// Whether `entry` may be stored in `room`: its signed payload names that room.
fn belongs(entry: &Entry, room: &Room) -> bool {
    entry.room() == Some(room.id())
}

/// The frame's kind, for counting what is sent.
fn frame_kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Greet(_) => "greet",
        Frame::Proof(_) => "proof",
        Frame::Room(_, message) => kind(message),
    }
}

/// The message's kind, for counting what is sent.
fn kind(message: &Message) -> &'static str {
    match message {
        Message::Hello(_) => "hello",
        Message::Query(_) => "query",
        Message::Reply(_) => "reply",
        Message::Have(_) => "have",
        Message::Want(_) => "want",
        Message::Route { .. } => "route",
        Message::Batch(_) => "batch",
        Message::Ack(_) => "ack",
        Message::Ping => "ping",
    }
}

/// How long the storage worker takes for `batch`.
fn store_time(scenario: &Scenario, batch: &Batch) -> Duration {
    scenario.store_delay + scenario.store_per_entry * batch.entries.len() as u32
}

/// Whom each node dials at the start.
fn dial_plan(scenario: &Scenario, ids: &[NodeId], rng: &mut StdRng) -> Vec<Vec<NodeId>> {
    ids.iter()
        .map(|&id| match scenario.topology {
            Topology::FullMesh => ids.iter().copied().filter(|&other| other > id).collect(),
            Topology::Line => ids.iter().copied().filter(|&o| o.0 == id.0 + 1).collect(),
            Topology::Random { k } => {
                let others: Vec<NodeId> = ids.iter().copied().filter(|&o| o != id).collect();
                others.choose_multiple(rng, k).copied().collect()
            }
        })
        .collect()
}
