//! A hostile test peer: a real libp2p swarm that speaks p2pchat's protocol 3, badly on purpose.
//!
//! It dials a node, opens its two lanes to it (`/p2pchat/live/3`, `/p2pchat/bulk/3`), greets
//! and proves membership of the rooms it is given (the LAN room unless told otherwise), and
//! then writes whatever it is told: well-formed messages no honest peer sends (forged entries,
//! floods of batches, replies that do not answer), each in a [`Frame::Room`] of the first room
//! it shares with the node, other frames (out of the handshake's order), or any bytes
//! (oversized length prefixes, garbage, half a frame). Towards the node's own lanes it behaves
//! like an honest peer unless told otherwise: it answers the node's greet with its proof, head
//! queries from the heads it claims ([`HeadSet::answer`]), acks every batch, sends the logs it
//! serves again when the node wants them, pings while it has nothing to say, and records what
//! the node sent. It reports when the node disconnects it. Built only from `protocol` and
//! libp2p, like a second implementation would be.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, SwarmBuilder, noise, tcp, yamux};
use p2pchat_protocol::limits::{MAX_BATCH_ENTRIES, MAX_FRAME_BYTES};
use p2pchat_protocol::membership::{Greet, Nonce, Transcript};
use p2pchat_protocol::message::{
    AuthorRange, BULK_PROTOCOL, Batch, Frame, HeadInfo, HeadNote, Hello, LIVE_PROTOCOL, Lane,
    Message, PROTOCOL_VERSION,
};
use p2pchat_protocol::reconcile::HeadSet;
use p2pchat_protocol::replica::PING_INTERVAL;
use p2pchat_protocol::room::{Room, RoomId};
use p2pchat_protocol::{Author, Body, Draft, Entry, Hash, SigningKey};
use tokio::sync::mpsc;

use crate::DEADLINE;

/// Frames queued per lane before a sender waits (the node reads them, or the test stalls).
const LANE_QUEUE: usize = 1024;
/// Messages from the node kept for the test to read; more are dropped (and counted).
const INBOX: usize = 4096;

#[derive(NetworkBehaviour)]
struct Behaviour {
    streams: libp2p_stream::Behaviour,
}

/// What the adversary saw happen to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A connection to this peer opened.
    Connected(PeerId),
    /// The last connection to this peer closed.
    Disconnected(PeerId),
}

/// The writers of the adversary's current lanes to one node.
#[derive(Clone)]
struct Lanes {
    live: mpsc::Sender<Vec<u8>>,
    bulk: mpsc::Sender<Vec<u8>>,
}

impl Lanes {
    fn of(&self, lane: Lane) -> &mpsc::Sender<Vec<u8>> {
        match lane {
            Lane::Live => &self.live,
            Lane::Bulk => &self.bulk,
        }
    }
}

/// Where the membership handshake of the current lanes is.
#[derive(Clone, Debug, Default)]
struct Handshake {
    /// The node's key (from its peer id).
    node: Option<Author>,
    /// The nonce we greeted with.
    ours: Option<Nonce>,
    /// The node's greet's nonce, once it came.
    theirs: Option<Nonce>,
    /// Whether our proof went out.
    proof_sent: bool,
    /// The rooms (indices into ours) the node proved, in slot order, once its proof came.
    shared: Option<Vec<usize>>,
    /// The connection is new and no lanes were opened on it yet (a greet that came is of it).
    fresh: bool,
}

impl Handshake {
    fn transcript(&self, us: Author) -> Option<Transcript> {
        Some(Transcript {
            us,
            them: self.node?,
            our_nonce: self.ours?,
            their_nonce: self.theirs?,
        })
    }
}

/// What the adversary holds, how it behaves, and what it saw; shared with its swarm's tasks.
struct State {
    /// Its author (for the membership transcript).
    author: Author,
    /// The rooms it proves.
    rooms: Vec<Room>,
    /// Whether it answers the node's greet with its proof (it does unless told otherwise).
    proving: bool,
    handshake: Handshake,
    /// The heads it claims: in its hello's summary and its replies.
    claimed: HeadSet,
    /// The logs it can send, as envelopes from seq 1.
    logs: HashMap<Author, Vec<Vec<u8>>>,
    lanes: Option<Lanes>,
    /// Whether queries are answered (from `claimed`).
    answering: bool,
    /// Whether a ping goes out every [`PING_INTERVAL`] (on after its hello).
    pinging: bool,
    node_hello: Option<Hello>,
    /// Whether the node said anything after its hello but pings: it accepted the session.
    accepted: bool,
    wants: Vec<HeadNote>,
    acks: u64,
    batches: u64,
    bad_messages: Vec<String>,
    dropped: u64,
    /// Whether the node's lanes are dropped as they come (unread): see
    /// [`Adversary::refuse_lanes`].
    refusing: bool,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// See the module docs. Its swarm runs in tasks that end when this is dropped.
pub struct Adversary {
    /// Its key: its peer id and the author of the entries it signs.
    pub key: SigningKey,
    /// Its peer id.
    pub peer_id: PeerId,
    name: String,
    control: libp2p_stream::Control,
    dials: mpsc::Sender<Multiaddr>,
    seen: mpsc::Receiver<Seen>,
    inbox: mpsc::Receiver<Message>,
    state: Shared,
}

impl Adversary {
    /// Starts a swarm with a fresh key in the LAN room; its hello ([`Adversary::hello`]) will
    /// claim `name`.
    pub fn spawn(name: &str) -> anyhow::Result<Self> {
        Self::spawn_in(name, vec![Room::lan()])
    }

    /// [`Adversary::spawn`], proving membership of `rooms` (none: a stranger everywhere).
    pub fn spawn_in(name: &str, rooms: Vec<Room>) -> anyhow::Result<Self> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let mut swarm = SwarmBuilder::with_existing_identity(p2pchat_node::identity::keypair(&key))
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| Behaviour {
                streams: libp2p_stream::Behaviour::new(),
            })?
            .with_swarm_config(|config| {
                config.with_idle_connection_timeout(Duration::from_secs(3600))
            })
            .build();
        let peer_id = *swarm.local_peer_id();
        let mut control = swarm.behaviour().streams.new_control();
        let state: Shared = Arc::new(Mutex::new(State {
            author: Author::of(&key),
            rooms,
            proving: true,
            handshake: Handshake::default(),
            claimed: HeadSet::new(),
            logs: HashMap::new(),
            lanes: None,
            answering: true,
            pinging: false,
            node_hello: None,
            accepted: false,
            wants: Vec::new(),
            acks: 0,
            batches: 0,
            bad_messages: Vec::new(),
            dropped: 0,
            refusing: false,
        }));
        let (dials, mut dial_rx) = mpsc::channel::<Multiaddr>(16);
        let (seen_tx, seen) = mpsc::channel(256);
        let (received_tx, received_rx) = mpsc::channel(LANE_QUEUE);
        let (inbox_tx, inbox) = mpsc::channel(INBOX);

        for (lane, protocol) in [(Lane::Live, LIVE_PROTOCOL), (Lane::Bulk, BULK_PROTOCOL)] {
            let mut incoming = control.accept(StreamProtocol::new(protocol))?;
            let received = received_tx.clone();
            let refusing = state.clone();
            tokio::spawn(async move {
                while let Some((_, stream)) = incoming.next().await {
                    if lock(&refusing).refusing {
                        drop(stream);
                        continue;
                    }
                    tokio::spawn(read_lane(stream, lane, received.clone()));
                }
            });
        }
        tokio::spawn(respond(state.clone(), received_rx, inbox_tx));
        let connections = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            // Before any of its streams is read: what comes is of it.
                            lock(&connections).handshake = Handshake {
                                fresh: true,
                                ..Handshake::default()
                            };
                            let _ = seen_tx.try_send(Seen::Connected(peer_id));
                        }
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                            lock(&connections).handshake = Handshake::default();
                            let _ = seen_tx.try_send(Seen::Disconnected(peer_id));
                        }
                        _ => {}
                    },
                    addr = dial_rx.recv() => match addr {
                        Some(addr) => {
                            let _ = swarm.dial(addr);
                        }
                        None => break,
                    },
                }
            }
        });
        Ok(Self {
            key,
            peer_id,
            name: name.to_owned(),
            control,
            dials,
            seen,
            inbox,
            state,
        })
    }

    /// The adversary's author id.
    pub fn author(&self) -> Author {
        Author::of(&self.key)
    }

    /// Dials `addr` and waits for the connection, without opening lanes.
    pub async fn dial(&mut self, addr: &Multiaddr) -> anyhow::Result<PeerId> {
        self.dials.send(addr.clone()).await?;
        match self.next_seen(DEADLINE).await? {
            Seen::Connected(peer) => Ok(peer),
            other => bail!("expected a connection, saw {other:?}"),
        }
    }

    /// Dials `addr`, waits for the connection, opens both lanes to it (replacing earlier
    /// ones), greets, and waits for the node's proof (its own proof went out on the node's
    /// greet): the rooms the two share are known ([`Adversary::shared`]). No hello is said
    /// yet: see [`Adversary::hello`].
    pub async fn connect(&mut self, addr: &Multiaddr) -> anyhow::Result<PeerId> {
        let peer = self.dial(addr).await?;
        self.open_lanes(peer).await?;
        self.greet().await?;
        self.proven().await?;
        Ok(peer)
    }

    /// [`Adversary::connect`] without proving anything: it greets, the node greets and
    /// proves, and it never sends its proof (until told to, [`Adversary::prove`]).
    pub async fn connect_unproven(&mut self, addr: &Multiaddr) -> anyhow::Result<PeerId> {
        lock(&self.state).proving = false;
        let peer = self.dial(addr).await?;
        self.open_lanes(peer).await?;
        self.greet().await?;
        self.proven().await?;
        Ok(peer)
    }

    /// Opens both lanes to `peer`, replacing the earlier ones (which close once what was
    /// queued on them is written). Nothing is said: see [`Adversary::greet`].
    pub async fn open_lanes(&mut self, peer: PeerId) -> anyhow::Result<()> {
        let live = self.open_stream(peer, Lane::Live).await?;
        let bulk = self.open_stream(peer, Lane::Bulk).await?;
        let lanes = Lanes {
            live: write_lane(live),
            bulk: write_lane(bulk),
        };
        let mut state = lock(&self.state);
        state.lanes = Some(lanes);
        state.accepted = false;
        // On a new connection the node may have greeted already; on lanes reopened, it greets
        // again once it sees them.
        let theirs = state.handshake.theirs.filter(|_| state.handshake.fresh);
        state.handshake = Handshake {
            node: p2pchat_node::identity::author_of(&peer),
            theirs,
            ..Handshake::default()
        };
        Ok(())
    }

    /// Makes `stream` (a live lane it opened to the node) its live lane, and the handshake
    /// starts again on it: see [`Adversary::greet`].
    pub fn use_live_stream(&self, stream: Stream) {
        let mut state = lock(&self.state);
        if let Some(lanes) = &mut state.lanes {
            lanes.live = write_lane(stream);
        }
        state.accepted = false;
        let node = state.handshake.node;
        state.handshake = Handshake {
            node,
            ..Handshake::default()
        };
    }

    /// Sends its greet (a fresh nonce) on the live lane, and its proof after it if the node
    /// greeted already (else the proof answers the node's greet).
    pub async fn greet(&self) -> anyhow::Result<()> {
        let nonce = Nonce::new(rand::random());
        let greet = Frame::Greet(Greet {
            version: PROTOCOL_VERSION,
            nonce,
        });
        self.send_frame(Lane::Live, &greet).await?;
        let proof = {
            let mut state = lock(&self.state);
            state.handshake.ours = Some(nonce);
            proof(&mut state)
        };
        match proof {
            Some(proof) => self.send_frame(Lane::Live, &proof).await,
            None => Ok(()),
        }
    }

    /// Sends its proof now (the node's greet must have come), and proves on its next
    /// connections again.
    pub async fn prove(&self) -> anyhow::Result<()> {
        let proof = {
            let mut state = lock(&self.state);
            state.proving = true;
            proof(&mut state).context("no greet from the node yet, or proved already")?
        };
        self.send_frame(Lane::Live, &proof).await
    }

    /// Waits for the node's proof on the current lanes.
    pub async fn proven(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while lock(&self.state).handshake.shared.is_none() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the node sent no membership proof in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The rooms (indices into its own) the node proved on the current lanes, in slot order.
    pub fn shared(&self) -> Option<Vec<usize>> {
        lock(&self.state).handshake.shared.clone()
    }

    /// Opens one more stream of `lane`'s protocol to `peer`, for the test to write on.
    pub async fn open_stream(&mut self, peer: PeerId, lane: Lane) -> anyhow::Result<Stream> {
        let protocol = match lane {
            Lane::Live => LIVE_PROTOCOL,
            Lane::Bulk => BULK_PROTOCOL,
        };
        let stream = tokio::time::timeout(
            DEADLINE,
            self.control
                .open_stream(peer, StreamProtocol::new(protocol)),
        )
        .await
        .with_context(|| format!("opening {protocol} to {peer} took too long"))?
        .with_context(|| format!("opening {protocol} to {peer}"))?;
        Ok(stream)
    }

    /// The honest hello (in the first shared room): version 3, its name, and the summary of
    /// the heads it claims. From now on it pings while it has nothing to say.
    pub async fn hello(&self) -> anyhow::Result<()> {
        let hello = self.hello_message();
        self.send(Lane::Live, &hello).await?;
        lock(&self.state).pinging = true;
        Ok(())
    }

    /// Waits until the node accepted the session (it said something after its hello), so
    /// that what goes on bulk now cannot overtake the hello on live.
    pub async fn accepted(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !lock(&self.state).accepted {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the node did not accept the session in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The hello [`Adversary::hello`] sends.
    pub fn hello_message(&self) -> Message {
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: self.name.clone(),
            heads: lock(&self.state).claimed.summary(&AuthorRange::ALL),
        })
    }

    /// Writes `message` on `lane` as a message of slot 0 (the first room shared), after
    /// everything queued before on it.
    pub async fn send(&self, lane: Lane, message: &Message) -> anyhow::Result<()> {
        self.send_raw(lane, room_frame(message)).await
    }

    /// Writes `frame` on `lane`, after everything queued before on it.
    pub async fn send_frame(&self, lane: Lane, frame_: &Frame) -> anyhow::Result<()> {
        self.send_raw(lane, frame(&frame_.encode())).await
    }

    /// Writes `bytes` as they are (no length prefix is added) on `lane`.
    pub async fn send_raw(&self, lane: Lane, bytes: Vec<u8>) -> anyhow::Result<()> {
        let lanes = lock(&self.state).lanes.clone().context("no lanes open")?;
        lanes
            .of(lane)
            .send(bytes)
            .await
            .context("the lane is closed")
    }

    /// Sends `envelopes` as one batch of `author`'s log on `lane`.
    pub async fn send_batch(
        &self,
        lane: Lane,
        author: Author,
        envelopes: Vec<Vec<u8>>,
    ) -> anyhow::Result<()> {
        self.send(lane, &batch(author, envelopes)).await
    }

    /// The next message from the node (pings left out), within `within`.
    pub async fn next_message(&mut self, within: Duration) -> anyhow::Result<Message> {
        tokio::time::timeout(within, self.inbox.recv())
            .await
            .context("no message from the node in time")?
            .context("the adversary stopped")
    }

    /// The first message from the node that `wanted` picks (earlier ones are passed over),
    /// within `within`.
    pub async fn wait_message(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Message) -> bool,
    ) -> anyhow::Result<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next_message(left).await?;
            if wanted(&message) {
                return Ok(message);
            }
        }
    }

    /// Whether the node sent nothing that `unwanted` picks for `quiet`.
    pub async fn never_sent(
        &mut self,
        quiet: Duration,
        unwanted: impl Fn(&Message) -> bool,
    ) -> bool {
        self.wait_message(quiet, unwanted).await.is_err()
    }

    /// From now on claims `author`'s log as `envelopes` (seq 1 first) and sends it again from
    /// where the node wants it ([`Message::Want`]).
    pub fn serve(&self, author: Author, envelopes: Vec<Vec<u8>>) {
        let mut state = lock(&self.state);
        if let Some(last) = envelopes.last() {
            state.claimed.insert(HeadInfo {
                author,
                seq: envelopes.len() as u64,
                hash: Hash::of(last),
            });
        }
        state.logs.insert(author, envelopes);
    }

    /// From now on claims `head`, whatever it serves.
    pub fn claim(&self, head: HeadInfo) {
        lock(&self.state).claimed.insert(head);
    }

    /// Whether it answers the node's queries (it does at first).
    pub fn answer_queries(&self, answering: bool) {
        lock(&self.state).answering = answering;
    }

    /// Whether it drops the node's lanes as they come, unread (as a side stuck closing the
    /// connection does), while the connection stays up.
    pub fn refuse_lanes(&self, refusing: bool) {
        lock(&self.state).refusing = refusing;
    }

    /// Whether it pings while it has nothing to say (it does from its hello on).
    pub fn keep_alive(&self, pinging: bool) {
        lock(&self.state).pinging = pinging;
    }

    /// The honest reply to a query of `ranges`, from the heads it claims.
    pub fn reply_to(&self, ranges: &[AuthorRange]) -> Message {
        Message::Reply(lock(&self.state).claimed.answer(ranges))
    }

    /// The node's hello, once it came.
    pub fn node_hello(&self) -> Option<Hello> {
        lock(&self.state).node_hello.clone()
    }

    /// Every [`Message::Want`] the node sent, in order.
    pub fn wants(&self) -> Vec<HeadNote> {
        lock(&self.state).wants.clone()
    }

    /// How many of its batches the node acked.
    pub fn acks(&self) -> u64 {
        lock(&self.state).acks
    }

    /// How many batches the node sent it (each acked).
    pub fn batches_received(&self) -> u64 {
        lock(&self.state).batches
    }

    /// What the node sent that was not a valid message (none, from an honest node), and how
    /// many messages were dropped because the test did not read them.
    pub fn troubles(&self) -> (Vec<String>, u64) {
        let state = lock(&self.state);
        (state.bad_messages.clone(), state.dropped)
    }

    /// Waits up to `within` for the node to close the adversary's last connection to it.
    pub async fn disconnected_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::Disconnected(_))) => {
                    let mut state = lock(&self.state);
                    state.lanes = None;
                    state.pinging = false;
                    state.accepted = false;
                    return true;
                }
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    }

    /// The next connection event, within `within`.
    pub async fn next_seen(&mut self, within: Duration) -> anyhow::Result<Seen> {
        tokio::time::timeout(within, self.seen.recv())
            .await
            .context("nothing happened in time")?
            .context("swarm stopped")
    }

    /// The adversary's own log in the first of its rooms (the LAN room if none): a profile
    /// named `name`, then `texts`, validly signed.
    pub fn log(&self, name: &str, texts: &[&str]) -> Vec<Entry> {
        self.log_dated(name, texts, 1_700_000_000_000)
    }

    /// [`Adversary::log`] with entry `seq` dated `start + seq` (milliseconds since the epoch).
    pub fn log_dated(&self, name: &str, texts: &[&str], start: u64) -> Vec<Entry> {
        let room = lock(&self.state)
            .rooms
            .first()
            .map_or_else(|| Room::lan().id(), Room::id);
        signed_log(&self.key, room, name, texts, start)
    }
}

/// `key`'s log in `room`: a profile named `name`, then `texts`, validly signed, entry `seq`
/// dated `start + seq` (milliseconds since the epoch).
pub fn signed_log(
    key: &SigningKey,
    room: RoomId,
    name: &str,
    texts: &[&str],
    start: u64,
) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, body) in bodies(name, texts).enumerate() {
        let seq = i as u64 + 1;
        let draft = Draft {
            room,
            seq,
            prev: entries.last().map(Entry::hash),
            timestamp: start + seq,
            clock: seq,
            body,
        };
        entries.push(Entry::sign(key, draft).expect("a small entry signs"));
    }
    entries
}

/// Reads length-prefixed messages from one of the node's lanes until it ends or breaks.
async fn read_lane(
    mut stream: Stream,
    lane: Lane,
    received: mpsc::Sender<(Lane, Result<Frame, String>)>,
) {
    loop {
        let mut prefix = [0u8; 4];
        if stream.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME_BYTES {
            let _ = received
                .send((lane, Err(format!("a frame of {len} bytes"))))
                .await;
            return;
        }
        let mut body = vec![0; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let frame = Frame::decode(&body).map_err(|e| e.to_string());
        if received.send((lane, frame)).await.is_err() {
            return;
        }
    }
}

/// Writes what is queued for one of the adversary's lanes until the queue closes or the
/// stream breaks.
fn write_lane(mut stream: Stream) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(LANE_QUEUE);
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                return;
            }
        }
        let _ = stream.close().await;
    });
    tx
}

/// The honest part: answers what the node sends, pings, and records it all for the test.
async fn respond(
    state: Shared,
    mut received: mpsc::Receiver<(Lane, Result<Frame, String>)>,
    inbox: mpsc::Sender<Message>,
) {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    loop {
        let (lane, message) = tokio::select! {
            got = received.recv() => match got {
                Some(got) => got,
                None => return,
            },
            _ = ping.tick() => {
                let lanes = {
                    let state = lock(&state);
                    state.lanes.clone().filter(|_| state.pinging)
                };
                if let Some(lanes) = lanes {
                    let _ = lanes.live.send(room_frame(&Message::Ping)).await;
                }
                continue;
            }
        };
        let frame_ = match message {
            Ok(frame_) => frame_,
            Err(error) => {
                lock(&state)
                    .bad_messages
                    .push(format!("on {lane:?}: {error}"));
                continue;
            }
        };
        let message = match frame_ {
            Frame::Greet(greet) => {
                let (lanes, proof) = {
                    let mut state = lock(&state);
                    state.handshake.theirs = Some(greet.nonce);
                    let proof = proof(&mut state);
                    (state.lanes.clone(), proof)
                };
                if let (Some(lanes), Some(proof)) = (lanes, proof) {
                    let _ = lanes.live.send(frame(&proof.encode())).await;
                }
                continue;
            }
            Frame::Proof(tags) => {
                let mut state = lock(&state);
                let shared = state
                    .handshake
                    .transcript(state.author)
                    .map(|transcript| transcript.shared(&state.rooms, &tags));
                state.handshake.shared = Some(shared.unwrap_or_default());
                continue;
            }
            Frame::Room(_, message) => message,
        };
        let (lanes, answers) = {
            let mut state = lock(&state);
            let answers = answers(&mut state, &message);
            (state.lanes.clone(), answers)
        };
        if let Some(lanes) = lanes {
            for (lane, answer) in answers {
                let _ = lanes.of(lane).send(room_frame(&answer)).await;
            }
        }
        if !matches!(message, Message::Ping) && inbox.try_send(message).is_err() {
            lock(&state).dropped += 1;
        }
    }
}

/// The proof of the rooms in `state` for the current lanes, once both greets went (and if
/// it is due: proving, not sent yet). Marks it sent.
fn proof(state: &mut State) -> Option<Frame> {
    if !state.proving || state.handshake.proof_sent {
        return None;
    }
    let transcript = state.handshake.transcript(state.author)?;
    state.handshake.proof_sent = true;
    Some(Frame::Proof(transcript.our_tags(&state.rooms)))
}

/// What an honest peer answers to `message` (recording it in `state`).
fn answers(state: &mut State, message: &Message) -> Vec<(Lane, Message)> {
    if !matches!(message, Message::Hello(_) | Message::Ping) {
        state.accepted = true;
    }
    match message {
        Message::Hello(hello) => {
            state.node_hello = Some(hello.clone());
            vec![]
        }
        Message::Query(ranges) if state.answering => {
            vec![(Lane::Live, Message::Reply(state.claimed.answer(ranges)))]
        }
        Message::Batch(_) => {
            state.batches += 1;
            vec![(Lane::Live, Message::Ack(1))]
        }
        Message::Ack(n) => {
            state.acks += u64::from(*n);
            vec![]
        }
        Message::Want(note) => {
            state.wants.push(*note);
            let skip = usize::try_from(note.seq.max(1) - 1).unwrap_or(usize::MAX);
            let Some(log) = state.logs.get(&note.author) else {
                return vec![];
            };
            log.iter()
                .skip(skip)
                .cloned()
                .collect::<Vec<_>>()
                .chunks(MAX_BATCH_ENTRIES)
                .map(|chunk| (Lane::Bulk, batch(note.author, chunk.to_vec())))
                .collect()
        }
        _ => vec![],
    }
}

fn bodies<'a>(name: &str, texts: &'a [&'a str]) -> impl Iterator<Item = Body> + 'a {
    std::iter::once(Body::Profile {
        name: name.to_owned(),
    })
    .chain(texts.iter().map(|text| Body::Text {
        text: (*text).to_owned(),
    }))
}

/// A batch of `author`'s log holding `envelopes`.
pub fn batch(author: Author, envelopes: Vec<Vec<u8>>) -> Message {
    Message::Batch(Batch {
        author,
        entries: envelopes
            .into_iter()
            .map(serde_bytes::ByteBuf::from)
            .collect(),
    })
}

/// `body` with its length prefix: one frame on a lane.
pub fn frame(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

/// `message` as a [`Frame::Room`] of slot 0 (the first room shared), with its length prefix.
pub fn room_frame(message: &Message) -> Vec<u8> {
    frame(&Frame::Room(0, message.clone()).encode())
}

/// The envelopes of `entries`.
pub fn envelopes(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.envelope().to_vec()).collect()
}

/// `envelope` with one bit of its signature flipped: it still decodes, but does not verify.
pub fn forge_signature(envelope: &[u8]) -> Vec<u8> {
    let mut forged = envelope.to_vec();
    let last = forged.len() - 1; // the signature is the envelope's last 64 bytes
    forged[last] ^= 0x01;
    forged
}

/// The identity point: a public key of small order. For it `[k]A` is the identity whatever
/// `k`, so `R = [s]B, S = s` satisfies `[S]B = R + [k]A` for every message: anyone can sign.
pub const SMALL_ORDER_KEY: [u8; 32] = {
    let mut y = [0; 32];
    y[0] = 1;
    y
};

/// A log of [`SMALL_ORDER_KEY`]: a profile named `name`, then `texts`, each "signed" with
/// `R = [s]B, S = s` for a random `s`. A lax ed25519 verifier accepts every entry.
pub fn small_order_log(name: &str, texts: &[&str]) -> Vec<Entry> {
    use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
    use curve25519_dalek::scalar::Scalar;
    // Any key writes the payloads; its author bytes and signature are then replaced.
    let scribe = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut entries: Vec<Entry> = Vec::new();
    for (i, body) in bodies(name, texts).enumerate() {
        let seq = i as u64 + 1;
        let draft = Draft {
            room: p2pchat_protocol::Room::lan().id(),
            seq,
            prev: entries.last().map(Entry::hash),
            timestamp: 1_700_000_000_000 + seq,
            clock: seq,
            body,
        };
        let mut bytes = Entry::sign(&scribe, draft)
            .expect("a small entry signs")
            .envelope()
            .to_vec();
        let at = bytes
            .windows(32)
            .position(|w| w == Author::of(&scribe).as_bytes())
            .expect("the payload holds the author");
        bytes[at..at + 32].copy_from_slice(&SMALL_ORDER_KEY);
        let s = Scalar::from_bytes_mod_order(rand::random());
        let r = (ED25519_BASEPOINT_TABLE * &s).compress();
        let signature_at = bytes.len() - 64; // the envelope ends with the signature
        bytes[signature_at..signature_at + 32].copy_from_slice(r.as_bytes());
        bytes[signature_at + 32..].copy_from_slice(s.as_bytes());
        entries.push(Entry::decode(bytes.into()).expect("the forgery decodes"));
    }
    entries
}
