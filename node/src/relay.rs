//! A relay of our own (`p2pchat relay`): circuit relay v2, a rendezvous point, identify and an
//! AutoNAT v2 server, over TCP (Noise, Yamux) and QUIC. It stores no chat data and cannot read
//! any: what it relays is encrypted end to end by the two peers (Noise on TCP, TLS 1.3 on QUIC).
//!
//! Its limits are sized for chat and bounded (see the constants): libp2p's defaults (circuits
//! of 2 minutes and 128 KiB) would cut a relayed chat off every few minutes.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, identify, relay, rendezvous};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::NodeError;
use crate::behaviour::{self, IDENTIFY_PROTOCOL, Transport};
use crate::identity;

/// Reservations held at once (each is one peer behind a NAT that can be reached through us).
pub const MAX_RESERVATIONS: usize = 1024;
/// Reservations per peer (one per relay address it listens on, a few to spare).
pub const MAX_RESERVATIONS_PER_PEER: usize = 4;
/// How long a reservation lasts before the peer renews it (the client renews on its own).
pub const RESERVATION_DURATION: Duration = Duration::from_secs(3600);
/// Circuits relayed at once: a chat peer keeps one per peer it cannot reach directly.
pub const MAX_CIRCUITS: usize = 512;
/// Circuits per peer at once (a peer in a room of 16 that punches no hole).
pub const MAX_CIRCUITS_PER_PEER: usize = 16;
/// How long one circuit lasts; the peers open another when it ends (a lane reopen).
pub const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(3600);
/// Bytes relayed per circuit, both ways together: a day's chat and a catch-up of a long history.
pub const MAX_CIRCUIT_BYTES: u64 = 64 * 1024 * 1024;
/// Registrations at the rendezvous point, in all and per peer (a peer registers in each of
/// its rooms, today's namespace, at most 16 rooms).
pub const MAX_REGISTRATIONS: usize = 8192;
/// See [`MAX_REGISTRATIONS`].
pub const MAX_REGISTRATIONS_PER_PEER: usize = 32;
/// Connections the relay holds at once, in all and per peer.
pub const MAX_CONNECTIONS: u32 = 4096;
/// See [`MAX_CONNECTIONS`].
pub const MAX_CONNECTIONS_PER_PEER: u32 = 8;
// Rate limits (token buckets: a burst, then one more per interval): reservations 30 per peer
// then one per 10 s, 120 per IP then one per s; circuits 120 per peer then one per s, 1,200 per
// IP (a household behind one NAT) then ten per s.

/// Lines about reservations and circuits said per [`REPORT_INTERVAL`]; the rest are counted and
/// said as one summary line, so the output stays bounded however busy the relay is.
pub const MAX_REPORTS: u32 = 20;
/// See [`MAX_REPORTS`].
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// What the relay has to say.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// Listening on this address, ending in `/p2p/<relay's peer id>` (give it to `--relay`).
    Listening {
        /// The address.
        address: Multiaddr,
    },
    /// Something worth a line (a reservation accepted or refused, a circuit opened or closed,
    /// a summary of those not said), in words.
    Info {
        /// What happened.
        message: String,
    },
}

/// A relay running in the background.
pub struct Relay {
    peer_id: PeerId,
    events: mpsc::Receiver<RelayEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

#[derive(NetworkBehaviour)]
struct RelayBehaviour {
    limits: connection_limits::Behaviour,
    relay: relay::Behaviour,
    rendezvous: rendezvous::server::Behaviour,
    identify: identify::Behaviour,
    autonat: autonat::v2::server::Behaviour,
}

impl Relay {
    /// Starts a relay with the identity in `data_dir` (created there on first use, in the same
    /// format as a user's), listening on `listen`; returns once every address is taken.
    pub async fn spawn(data_dir: &Path, listen: Vec<Multiaddr>) -> Result<Relay, NodeError> {
        std::fs::create_dir_all(data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let key = identity::load_or_create(data_dir)?;
        let keypair = identity::keypair(&key);
        let peer_id = keypair.public().to_peer_id();
        // A chat node's swarm, but for its behaviours: the same transports and their words.
        let transport = behaviour::build_transport(&keypair, Transport::Tcp)
            .map_err(|e| NodeError::Network(e.to_string()))?;
        let relay = relay::Config {
            max_reservations: MAX_RESERVATIONS,
            max_reservations_per_peer: MAX_RESERVATIONS_PER_PEER,
            reservation_duration: RESERVATION_DURATION,
            max_circuits: MAX_CIRCUITS,
            max_circuits_per_peer: MAX_CIRCUITS_PER_PEER,
            max_circuit_duration: MAX_CIRCUIT_DURATION,
            max_circuit_bytes: MAX_CIRCUIT_BYTES,
            // libp2p's default rate limits (a burst of 30 circuits per peer, then one every
            // 2 minutes) are spent by a member's first lookups (it dials every registration
            // found, some of peers long gone): these are ours instead.
            reservation_rate_limiters: Vec::new(),
            circuit_src_rate_limiters: Vec::new(),
        }
        .reservation_rate_per_peer(nonzero(30), Duration::from_secs(10))
        .reservation_rate_per_ip(nonzero(120), Duration::from_secs(1))
        .circuit_src_per_peer(nonzero(120), Duration::from_secs(1))
        .circuit_src_per_ip(nonzero(1200), Duration::from_millis(100));
        let limits = ConnectionLimits::default()
            .with_max_pending_incoming(Some(behaviour::MAX_PENDING_CONNECTIONS * 4))
            .with_max_established(Some(MAX_CONNECTIONS))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
        let behaviour = RelayBehaviour {
            limits: connection_limits::Behaviour::new(limits),
            relay: relay::Behaviour::new(peer_id, relay),
            rendezvous: rendezvous::server::Behaviour::new(
                rendezvous::server::Config::default()
                    .with_max_registration_total(MAX_REGISTRATIONS)
                    .with_max_registration_per_peer(MAX_REGISTRATIONS_PER_PEER),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_PROTOCOL.into(),
                keypair.public(),
            )),
            autonat: autonat::v2::server::Behaviour::default(),
        };
        let config = libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(behaviour::IDLE_CONNECTION_TIMEOUT);
        let mut swarm = Swarm::new(transport, behaviour, peer_id, config);
        // Relays whatever addresses it has (by default only once one is confirmed external).
        swarm
            .behaviour_mut()
            .relay
            .set_status(Some(relay::Status::Enable));
        for address in &listen {
            behaviour::check_port_free(address).map_err(|reason| NodeError::Listen {
                address: address.clone(),
                reason,
            })?;
        }
        let mut waiting = std::collections::HashMap::new();
        for address in &listen {
            let id = swarm
                .listen_on(address.clone())
                .map_err(|e| NodeError::Listen {
                    address: address.clone(),
                    reason: behaviour::listen_error(&e),
                })?;
            waiting.insert(id, address.clone());
        }
        let (events_tx, events) = mpsc::channel(256);
        let mut ready = Vec::new();
        // Every listener reports an address (or fails) before the relay is ready.
        while !waiting.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    waiting.remove(&listener_id);
                    swarm.add_external_address(address.clone());
                    ready.push(address.with(Protocol::P2p(peer_id)));
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason: Err(e),
                    ..
                } => {
                    let address = waiting
                        .remove(&listener_id)
                        .unwrap_or_else(Multiaddr::empty);
                    return Err(NodeError::Listen {
                        address,
                        reason: behaviour::transport_words(&e),
                    });
                }
                _ => {}
            }
        }
        for address in ready {
            let _ = events_tx.try_send(RelayEvent::Listening { address });
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(swarm, events_tx, stopped));
        Ok(Relay {
            peer_id,
            events,
            stop: Some(stop),
            task,
        })
    }

    /// The relay's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The next thing to say; `None` once the relay stopped.
    pub async fn next_event(&mut self) -> Option<RelayEvent> {
        self.events.recv().await
    }

    /// Stops the relay (every connection through it closes).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// Says at most [`MAX_REPORTS`] lines per [`REPORT_INTERVAL`], and how many it left out.
struct Reports {
    events: mpsc::Sender<RelayEvent>,
    since: Instant,
    said: u32,
    left_out: u64,
}

impl Reports {
    fn say(&mut self, message: String) {
        self.roll();
        if self.said < MAX_REPORTS {
            self.said += 1;
            self.send(RelayEvent::Info { message });
        } else {
            self.left_out += 1;
        }
    }

    /// Starts a new interval when the last one is over, saying what it left out.
    fn roll(&mut self) {
        if self.since.elapsed() < REPORT_INTERVAL {
            return;
        }
        if self.left_out > 0 {
            let message = format!(
                "{} more reservation and circuit events in the last {} s (not shown)",
                self.left_out,
                REPORT_INTERVAL.as_secs()
            );
            self.send(RelayEvent::Info { message });
        }
        self.since = Instant::now();
        self.said = 0;
        self.left_out = 0;
    }

    /// A reader that does not keep up loses lines, never stalls the relay.
    fn send(&self, event: RelayEvent) {
        let _ = self.events.try_send(event);
    }
}

async fn run(
    mut swarm: Swarm<RelayBehaviour>,
    events: mpsc::Sender<RelayEvent>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut reports = Reports {
        events,
        since: Instant::now(),
        said: 0,
        left_out: 0,
    };
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => reports.roll(),
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    // A relay runs where it can be reached: its addresses are its external ones.
                    swarm.add_external_address(address.clone());
                    let address = address.with(Protocol::P2p(*swarm.local_peer_id()));
                    reports.send(RelayEvent::Listening { address });
                }
                SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(event)) => {
                    if let Some(message) = relay_words(&event) {
                        reports.say(message);
                    }
                }
                SwarmEvent::ListenerClosed { reason: Err(e), addresses, .. } => {
                    reports.send(RelayEvent::Info {
                        message: format!(
                            "stopped listening on {}: {}",
                            addresses.first().map(ToString::to_string).unwrap_or_default(),
                            behaviour::transport_words(&e)
                        ),
                    });
                }
                _ => {}
            },
        }
    }
}

/// A relay event worth a line, in words.
fn relay_words(event: &relay::Event) -> Option<String> {
    use relay::Event;
    Some(match event {
        Event::ReservationReqAccepted {
            src_peer_id,
            renewed: false,
        } => format!("reservation accepted for {src_peer_id}"),
        Event::ReservationReqDenied { src_peer_id, .. } => {
            format!("reservation refused for {src_peer_id} (over a limit)")
        }
        Event::ReservationTimedOut { src_peer_id } => {
            format!("reservation of {src_peer_id} ended")
        }
        Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => format!("circuit opened from {src_peer_id} to {dst_peer_id}"),
        Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            ..
        } => format!(
            "circuit refused from {src_peer_id} to {dst_peer_id} (over a limit, or no reservation)"
        ),
        Event::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            ..
        } => format!("circuit closed from {src_peer_id} to {dst_peer_id}"),
        _ => return None,
    })
}
