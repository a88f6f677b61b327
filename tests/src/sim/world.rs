//! The simulator's engine: nodes, connections, and the one event queue that drives them.
//!
//! Each honest node is what the node's driver makes of a [`Replica`]: its outputs are carried
//! out (frames written to links, batches stored by a storage worker after a delay, disconnects,
//! a hello answered with an accept), and everything that happens to it comes in as an
//! [`Input`], in order. A frozen node's inputs wait in its inbox.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2pchat_protocol::limits::MAX_FRAME_BYTES;
use p2pchat_protocol::message::{Batch, Lane, Message, MessageError};
use p2pchat_protocol::replica::{Disconnect, Event, Input, Output, Replica, TICK};
use p2pchat_protocol::store::{Logs, MemoryStore};
use p2pchat_protocol::{Author, Body, SigningKey};
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
    store: MemoryStore,
    replica: Replica<NodeId>,
    /// Bumped at each restart: events of an earlier life are void.
    life: u32,
    down: bool,
    frozen: bool,
    inbox: VecDeque<Inbox>,
    /// The connection to each peer as this node's driver knows it (a frozen node learns of
    /// closed and new ones when it thaws): what the core sends goes there.
    current: BTreeMap<NodeId, ConnId>,
    /// Batches waiting for the storage worker, oldest first.
    jobs: VecDeque<(NodeId, Batch)>,
    storing: bool,
    /// Entries of honest logs held.
    held: u64,
    held_at_start: u64,
    /// Whom it dials when it starts.
    dials: Vec<NodeId>,
    /// Lines typed while it was down, written when it is up again.
    writes_waiting: usize,
    written: usize,
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
    conns: BTreeMap<ConnId, Conn>,
    pairs: BTreeMap<(NodeId, NodeId), ConnId>,
    next_conn: ConnId,
    /// Failed or closed dials since the last accepted hello, per (dialer, target).
    failures: BTreeMap<(NodeId, NodeId), u32>,
    partition: Option<BTreeSet<NodeId>>,
    /// Every honest log (the nodes' own and the preloaded ones) and its head at the end.
    expected: BTreeMap<Author, u64>,
    /// When each line written during the run was written.
    written_at: BTreeMap<(Author, u64), Duration>,
    total: u64,
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
        let mut expected = BTreeMap::new();
        let mut preloaded = MemoryStore::new(p2pchat_protocol::Room::lan().id());
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
                expected.insert(Author::of(&key), preload.entries as u64);
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
        for (&id, dials) in ids.iter().zip(dials) {
            let key = SigningKey::from_bytes(&rng.r#gen());
            let author = Author::of(&key);
            let name = id.to_string();
            let mut store = if holders.contains(&id) {
                preloaded.clone()
            } else {
                MemoryStore::new(p2pchat_protocol::Room::lan().id())
            };
            let profile = Body::Profile { name: name.clone() };
            if let Err(e) = store.append(&key, profile, BASE_UNIX_MS) {
                unreachable!("a profile does not sign: {e}");
            }
            expected.insert(author, 1);
            let replica = Replica::new(author, name.clone(), store.heads());
            let held = store.len() as u64;
            honest.push(Honest {
                key,
                author,
                name,
                store,
                replica,
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
        let total = expected.values().sum::<u64>();
        let lacking = honest.iter().map(|h| total - h.held).sum();
        let hostile = (!scenario.attacks.is_empty()).then(|| {
            let key = SigningKey::from_bytes(&rng.r#gen());
            let authors = honest.iter().map(|h| h.author).collect();
            let sample = honest[0].store.entries_of(&honest[0].author)[0].clone();
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
            expected,
            written_at: BTreeMap::new(),
            total,
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
                        self.input(node, Input::Tick);
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
                    self.transmit(conn, id, Lane::Live, Message::Ping.encode());
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
                self.input(node, Input::Connected { peer, author });
            }
            Inbox::Closed { conn, peer } => {
                let current = &mut self.honest[node.index()].current;
                if current.get(&peer) == Some(&conn) {
                    current.remove(&peer);
                }
                self.input(node, Input::Closed { peer });
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
                    Input::Malformed {
                        peer,
                        error: MessageError::TooLarge {
                            what: "bytes in a frame",
                            found: bytes.len(),
                            limit: MAX_FRAME_BYTES,
                        },
                    }
                } else {
                    match Message::decode(&bytes) {
                        Ok(message) => {
                            if let Message::Batch(batch) = &message
                                && !self.is_hostile(peer)
                            {
                                let n = batch.entries.len() as u64;
                                self.report.entries_received += n;
                                if lane == Lane::Live {
                                    self.report.entries_received_live += n;
                                }
                            }
                            Input::Received { peer, message }
                        }
                        Err(error) => {
                            if !self.is_hostile(peer) {
                                self.report.problems.push(format!(
                                    "{peer} sent {node} a frame that does not decode: {error}"
                                ));
                            }
                            Input::Malformed { peer, error }
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

    fn input(&mut self, node: NodeId, input: Input<NodeId>) {
        let now = self.base + self.now();
        let h = &mut self.honest[node.index()];
        h.replica.handle(now, input, &h.store);
        self.drain(node);
        let footprint = self.honest[node.index()].replica.footprint();
        self.report.peak_footprint = self.report.peak_footprint.max(footprint);
    }

    /// Carries out everything the node's core asks, until it asks nothing more.
    fn drain(&mut self, node: NodeId) {
        loop {
            let h = &mut self.honest[node.index()];
            let outputs: Vec<_> = std::iter::from_fn(|| h.replica.poll()).collect();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                self.output(node, output);
            }
        }
    }

    fn output(&mut self, node: NodeId, output: Output<NodeId>) {
        match output {
            Output::Send {
                peer,
                lane,
                message,
            } => {
                if let Some(&conn) = self.honest[node.index()].current.get(&peer) {
                    let bytes = message.encode();
                    let sent = self.report.by_kind.entry(kind(&message)).or_default();
                    sent.frames += 1;
                    sent.bytes += bytes.len() as u64 + 4;
                    if let Message::Batch(batch) = &message {
                        sent.entries += batch.entries.len() as u64;
                    }
                    self.transmit(conn, node, lane, bytes);
                }
            }
            Output::Store { peer, batch } => {
                let life = self.honest[node.index()].life;
                let delay = self.store_time(&batch);
                let h = &mut self.honest[node.index()];
                h.jobs.push_back((peer, batch));
                if !h.storing {
                    h.storing = true;
                    self.queue.after(delay, Ev::StoreDone { node, life });
                }
            }
            Output::Disconnect { peer, reason } => {
                self.disconnected(node, peer, &reason);
                if let Some(&conn) = self.honest[node.index()].current.get(&peer) {
                    self.close(conn, Some(node));
                }
            }
            Output::Event(event) => self.event(node, event),
        }
    }

    fn event(&mut self, node: NodeId, event: Event<NodeId>) {
        match event {
            Event::Hello { peer, .. } => {
                // The driver's accept step: everyone is welcome here. Handed straight to the
                // core, before any other input; `drain` carries out what follows.
                self.failures.remove(&(node, peer));
                self.failures.remove(&(peer, node));
                let now = self.base + self.now();
                let h = &mut self.honest[node.index()];
                h.replica.handle(now, Input::Accept { peer }, &h.store);
            }
            Event::Forked { author, seq } if self.expected.contains_key(&author) => {
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

    /// The storage worker finished the oldest batch: it goes into the store, the core hears.
    fn store_next(&mut self, node: NodeId) {
        let now = self.now();
        let h = &mut self.honest[node.index()];
        let Some((peer, batch)) = h.jobs.pop_front() else {
            h.storing = false;
            return;
        };
        let author = batch.author;
        let envelopes = batch.entries.into_iter().map(|e| Bytes::from(e.into_vec()));
        let inserted = h.store.insert(author, envelopes);
        self.report.duplicates_stored += inserted.duplicates as u64;
        if self.expected.contains_key(&author) {
            let stored = inserted.stored.len() as u64;
            h.held += stored;
            self.lacking -= stored;
            for entry in &inserted.stored {
                if let Some(written) = self.written_at.get(&(author, entry.seq())) {
                    self.report.latency.record(now - *written);
                }
            }
        }
        let h = &mut self.honest[node.index()];
        match h.jobs.front() {
            Some((_, next)) => {
                let life = h.life;
                let delay = store_time(&self.scenario, next);
                self.queue.after(delay, Ev::StoreDone { node, life });
            }
            None => h.storing = false,
        }
        let outcome = Ok(inserted);
        self.input(
            node,
            Input::Stored {
                peer,
                author,
                outcome,
            },
        );
    }

    /// The node's user typed a line: appended (durable), then the core hears.
    fn write(&mut self, node: NodeId) {
        let now = self.now();
        let h = &mut self.honest[node.index()];
        h.written += 1;
        let text = format!("line {} from {}", h.written, h.name);
        let timestamp = BASE_UNIX_MS + now.as_millis() as u64;
        let entry = match h.store.append(&h.key, Body::Text { text }, timestamp) {
            Ok(entry) => entry,
            Err(e) => unreachable!("a short line does not sign: {e}"),
        };
        let author = h.author;
        h.held += 1;
        self.written_at.insert((author, entry.seq()), now);
        self.expected.insert(author, entry.seq());
        self.total += 1;
        self.lacking += self.honest.len() as u64 - 1;
        self.writes_pending -= 1;
        self.report.lines_written += 1;
        self.input(
            node,
            Input::Appended {
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
        h.replica = Replica::new(h.author, h.name.clone(), h.store.heads());
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
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.attack = Some((attack, index));
        }
        self.transmit(id, me, Lane::Live, Hostile::hello().encode());
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

    fn hostile_received(&mut self, id: ConnId, bytes: &[u8]) {
        let Some((attack, _)) = self.conns.get(&id).and_then(|c| c.attack) else {
            return;
        };
        let Some((me, hostile)) = &self.hostile else {
            return;
        };
        let me = *me;
        let answer = Message::decode(bytes)
            .ok()
            .and_then(|message| hostile.answer(attack, &message));
        if let Some(answer) = answer {
            self.transmit(id, me, Lane::Live, answer);
        }
    }

    /// The report, with what the end state shows to be wrong.
    fn finish(mut self) -> Report {
        let report = &mut self.report;
        report.entries_total = self.total;
        let start: u64 = self.honest.iter().map(|h| h.held_at_start).sum();
        report.unique_needed =
            (self.total * self.honest.len() as u64).saturating_sub(start + report.lines_written);
        if self.scenario.until == Until::Converged {
            if report.converged_at.is_none() {
                report.problems.push(format!(
                    "did not converge within {:?}: {} entries still missing",
                    self.scenario.time_limit, self.lacking
                ));
            }
            let mut missing = 0;
            for (i, h) in self.honest.iter().enumerate() {
                for (author, &seq) in &self.expected {
                    let held = h.store.head_seq(author);
                    if held != seq {
                        missing += 1;
                        if missing <= 5 {
                            report.problems.push(format!(
                                "n{i} holds the log of {author:?} through seq {held} of {seq}"
                            ));
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
                let first: Vec<_> = self.honest[0].store.heads();
                for (i, h) in self.honest.iter().enumerate().skip(1) {
                    if h.store.heads() != first {
                        report
                            .problems
                            .push(format!("n{i} holds other heads than n0"));
                    }
                }
            }
        }
        let nodes = self.honest.len();
        let checked = self.scenario.verify_nodes.min(nodes);
        for k in 0..checked {
            let i = k * nodes / checked.max(1);
            if let Err(broken) = self.honest[i].store.verify_chains() {
                report.problems.push(format!("n{i}: {broken}"));
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
