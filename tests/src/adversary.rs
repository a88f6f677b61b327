//! A hostile test peer: a real libp2p swarm that speaks p2pchat's protocols, badly on purpose.
//!
//! It dials a node, says whatever hello it is told to, opens push streams and writes any bytes
//! on them (well-formed frames of forged entries, oversized length prefixes, garbage), and
//! reports when the node disconnects it. Built only from `protocol` and libp2p, like a second
//! implementation would be.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, SwarmBuilder, noise, ping, tcp, yamux};
use p2pchat_protocol::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use p2pchat_protocol::wire::{
    Batch, Frame, HeadInfo, Hello, PROTOCOL_VERSION, PUSH_PROTOCOL, Request, Response,
    SYNC_PROTOCOL,
};
use p2pchat_protocol::{Author, Body, Draft, Entry, SigningKey};
use tokio::sync::{mpsc, oneshot};

use crate::DEADLINE;

#[derive(NetworkBehaviour)]
struct Behaviour {
    sync: request_response::cbor::Behaviour<Request, Response>,
    push: libp2p_stream::Behaviour,
    ping: ping::Behaviour,
}

enum Command {
    Dial(Multiaddr),
    Request(PeerId, Request, oneshot::Sender<Option<Response>>),
}

/// What the adversary saw happen to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A connection to this peer opened.
    Connected(PeerId),
    /// The last connection to this peer closed.
    Disconnected(PeerId),
}

/// See the module docs. Its swarm runs in a task that ends when this is dropped.
pub struct Adversary {
    /// Its key: its peer id and the author of the entries it signs.
    pub key: SigningKey,
    /// Its peer id.
    pub peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    seen: mpsc::Receiver<Seen>,
    ranges_asked: Arc<AtomicUsize>,
    serving: Served,
}

/// Logs the adversary answers range requests with: envelopes by author, from seq 1.
type Served = Arc<std::sync::Mutex<std::collections::HashMap<Author, Vec<Vec<u8>>>>>;

impl Adversary {
    /// Starts a swarm with a fresh key; it answers the node's hello with `name` and no heads.
    pub fn spawn(name: &str) -> anyhow::Result<Self> {
        Self::start(Some(name))
    }

    /// Starts a swarm with a fresh key that never answers a request (it never says hello).
    pub fn silent() -> anyhow::Result<Self> {
        Self::start(None)
    }

    fn start(name: Option<&str>) -> anyhow::Result<Self> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let codec = request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(MAX_REQUEST_BYTES as u64 * 4)
            .set_response_size_maximum(MAX_RESPONSE_BYTES as u64);
        let mut swarm = SwarmBuilder::with_existing_identity(p2pchat_node::identity::keypair(&key))
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| Behaviour {
                sync: request_response::Behaviour::with_codec(
                    codec,
                    [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default().with_request_timeout(DEADLINE),
                ),
                push: libp2p_stream::Behaviour::new(),
                ping: ping::Behaviour::default(),
            })?
            .with_swarm_config(|config| {
                config.with_idle_connection_timeout(Duration::from_secs(3600))
            })
            .build();
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().push.new_control();
        let (commands, mut command_rx) = mpsc::channel::<Command>(16);
        let (seen_tx, seen) = mpsc::channel(256);
        let hello = name.map(|name| Hello {
            version: PROTOCOL_VERSION,
            name: name.to_owned(),
            heads: vec![],
        });
        let mut unanswered = Vec::new(); // a silent adversary holds requests open, unanswered
        let ranges_asked = Arc::new(AtomicUsize::new(0));
        let ranges = ranges_asked.clone();
        let serving = Served::default();
        let served = serving.clone();
        tokio::spawn(async move {
            let mut pending = std::collections::HashMap::new();
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            let _ = seen_tx.try_send(Seen::Connected(peer_id));
                        }
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                            let _ = seen_tx.try_send(Seen::Disconnected(peer_id));
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => match event {
                            request_response::Event::Message { message: request_response::Message::Request { channel, request, .. }, .. } => {
                                let Some(hello) = &hello else {
                                    unanswered.push(channel);
                                    continue;
                                };
                                let response = match request {
                                    Request::Hello(_) => Response::Hello(hello.clone()),
                                    // Whatever it announced, it sends nothing, unless told to
                                    // serve a log (`Adversary::serve`).
                                    Request::Range(range) => {
                                        ranges.fetch_add(1, Ordering::Relaxed);
                                        let skip = usize::try_from(range.from.max(1) - 1).unwrap_or(usize::MAX);
                                        let entries = served.lock().unwrap().get(&range.author).map_or_else(Vec::new, |log| {
                                            log.iter().skip(skip).cloned().map(serde_bytes::ByteBuf::from).collect()
                                        });
                                        Response::Entries(Batch { author: range.author, entries })
                                    }
                                    Request::Skip(_) => Response::Done,
                                };
                                let _ = swarm.behaviour_mut().sync.send_response(channel, response);
                            }
                            request_response::Event::Message { message: request_response::Message::Response { request_id, response }, .. } => {
                                if let Some(reply) = pending.remove(&request_id) {
                                    let _: Result<(), _> = oneshot::Sender::send(reply, Some(response));
                                }
                            }
                            request_response::Event::OutboundFailure { request_id, .. } => {
                                if let Some(reply) = pending.remove(&request_id) {
                                    let _ = oneshot::Sender::send(reply, None);
                                }
                            }
                            _ => {}
                        },
                        _ => {}
                    },
                    command = command_rx.recv() => match command {
                        Some(Command::Dial(addr)) => {
                            let _ = swarm.dial(addr);
                        }
                        Some(Command::Request(peer, request, reply)) => {
                            let id = swarm.behaviour_mut().sync.send_request(&peer, request);
                            pending.insert(id, reply);
                        }
                        None => break,
                    },
                }
            }
        });
        Ok(Self {
            key,
            peer_id,
            control,
            commands,
            seen,
            ranges_asked,
            serving,
        })
    }

    /// From now on, answers range requests for `author` with `envelopes` (seq 1 first).
    pub fn serve(&self, author: Author, envelopes: Vec<Vec<u8>>) {
        self.serving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(author, envelopes);
    }

    /// How many range requests the node sent it (each answered with no entries).
    pub fn ranges_asked(&self) -> usize {
        self.ranges_asked.load(Ordering::Relaxed)
    }

    /// The adversary's author id.
    pub fn author(&self) -> Author {
        Author::of(&self.key)
    }

    /// Dials `addr` and waits for the connection.
    pub async fn connect(&mut self, addr: &Multiaddr) -> anyhow::Result<PeerId> {
        self.commands.send(Command::Dial(addr.clone())).await?;
        match self.next_seen(DEADLINE).await? {
            Seen::Connected(peer) => Ok(peer),
            other => bail!("expected a connection, saw {other:?}"),
        }
    }

    /// Sends a request and waits for its answer (`None` if it failed).
    pub async fn request(
        &self,
        peer: PeerId,
        request: Request,
    ) -> anyhow::Result<Option<Response>> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request(peer, request, reply))
            .await?;
        Ok(tokio::time::timeout(DEADLINE, answer)
            .await
            .context("no answer in time")??)
    }

    /// Says hello with `name` and `heads`, returning the node's answer.
    pub async fn hello(
        &self,
        peer: PeerId,
        name: &str,
        heads: Vec<HeadInfo>,
    ) -> anyhow::Result<Option<Response>> {
        self.request(
            peer,
            Request::Hello(Hello {
                version: PROTOCOL_VERSION,
                name: name.to_owned(),
                heads,
            }),
        )
        .await
    }

    /// Opens a push stream to `peer` (call after a hello the node accepts).
    pub async fn open_push(&mut self, peer: PeerId) -> anyhow::Result<Stream> {
        Ok(self
            .control
            .open_stream(peer, StreamProtocol::new(PUSH_PROTOCOL))
            .await?)
    }

    /// Waits up to `within` for the node to close the adversary's last connection to it.
    pub async fn disconnected_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(Seen::Disconnected(_))) => return true,
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

    /// The adversary's own log: a profile named `name`, then `texts`, validly signed.
    pub fn log(&self, name: &str, texts: &[&str]) -> Vec<Entry> {
        self.log_dated(name, texts, 1_700_000_000_000)
    }

    /// [`Adversary::log`] with entry `seq` dated `start + seq` (milliseconds since the epoch).
    pub fn log_dated(&self, name: &str, texts: &[&str], start: u64) -> Vec<Entry> {
        let mut entries: Vec<Entry> = Vec::new();
        let bodies = std::iter::once(Body::Profile {
            name: name.to_owned(),
        })
        .chain(texts.iter().map(|text| Body::Text {
            text: (*text).to_owned(),
        }));
        for (i, body) in bodies.enumerate() {
            let prev = entries.last().map(Entry::hash);
            let seq = i as u64 + 1;
            let draft = Draft {
                seq,
                prev,
                timestamp: start + seq,
                lamport: seq,
                body,
            };
            entries.push(Entry::sign(&self.key, draft).expect("a small entry signs"));
        }
        entries
    }
}

/// A push frame (length prefix included) holding `entries` as a batch of `author`'s log.
pub fn batch_frame(author: Author, envelopes: Vec<Vec<u8>>) -> Vec<u8> {
    let body = Frame::Batch(Batch {
        author,
        entries: envelopes
            .into_iter()
            .map(serde_bytes::ByteBuf::from)
            .collect(),
    })
    .encode();
    raw_frame(&body)
}

/// A push frame (length prefix included) with any body.
pub fn raw_frame(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

/// Writes bytes on a stream and flushes them.
pub async fn write(stream: &mut Stream, bytes: &[u8]) -> anyhow::Result<()> {
    stream.write_all(bytes).await?;
    Ok(stream.flush().await?)
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
    let bodies = std::iter::once(Body::Profile {
        name: name.to_owned(),
    })
    .chain(texts.iter().map(|text| Body::Text {
        text: (*text).to_owned(),
    }));
    let mut entries: Vec<Entry> = Vec::new();
    for (i, body) in bodies.enumerate() {
        let seq = i as u64 + 1;
        let draft = Draft {
            seq,
            prev: entries.last().map(Entry::hash),
            timestamp: 1_700_000_000_000 + seq,
            lamport: seq,
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
