//! The libp2p side: transport, behaviours and their limits.

use std::time::Duration;

use futures::future::Either;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::core::Transport;
use libp2p::core::upgrade::Version;
use libp2p::pnet::PnetConfig;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, Swarm, SwarmBuilder, mdns, noise, ping, tcp, yamux};
use p2pchat_protocol::SigningKey;
use p2pchat_protocol::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use p2pchat_protocol::wire::{Request, Response, SYNC_PROTOCOL};

use crate::identity;
use crate::room::RoomKey;

/// How long a request (hello or range) may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection with no open stream stays up. Push streams stay open while peers are
/// connected, so this only matters between a connection's start and its first hello.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often a ping checks that a peer is still there (a dead peer is noticed within ~2×).
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How long a new connection may take to set up (room key, Noise, Yamux) before it is dropped,
/// so a peer that stalls mid-handshake cannot hold a pending slot (the swarm builder's
/// connection timeout, set here explicitly).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being set up at once, each way (further ones are refused until one finishes).
pub const MAX_PENDING_CONNECTIONS: u32 = 32;
/// Established connections in all.
pub const MAX_CONNECTIONS: u32 = 256;
/// Established connections that others dialed.
pub const MAX_INCOMING_CONNECTIONS: u32 = 128;
/// Established connections to one peer (one is kept; duplicates are closed, see `discovery`).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 3;
/// Yamux streams open at once on one connection (a connection needs two push streams, ping and
/// a few requests).
pub const MAX_STREAMS_PER_CONNECTION: usize = 64;
/// Request-response streams open at once on one connection, each way.
pub const MAX_CONCURRENT_REQUESTS: usize = 16;

/// How often mDNS asks the LAN who is there (answers also arrive whenever a peer starts).
pub const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(5);
/// How long an mDNS record lives unless refreshed.
pub const MDNS_TTL: Duration = Duration::from_secs(30);

/// Everything the node speaks on a connection.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses connections over the limits above.
    pub limits: connection_limits::Behaviour,
    /// Hello and range requests.
    pub sync: request_response::cbor::Behaviour<Request, Response>,
    /// Long-lived streams that push entry batches.
    pub push: libp2p_stream::Behaviour,
    /// Liveness: closes connections to peers that stop answering.
    pub ping: ping::Behaviour,
    /// Discovery on the LAN, unless turned off.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Builds the swarm: TCP (+ the private network layer if `room` is given) + Noise + Yamux, with
/// the node key as its identity; mDNS if `mdns`.
pub fn build_swarm(
    key: &SigningKey,
    mdns: bool,
    room: Option<RoomKey>,
) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = SwarmBuilder::with_existing_identity(identity::keypair(key))
        .with_tokio()
        .with_other_transport(
            |keypair| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
                let tcp = tcp.and_then(move |socket, _| async move {
                    match room {
                        Some(room) => PnetConfig::new(room.psk())
                            .handshake(socket)
                            .await
                            .map(Either::Left),
                        None => Ok(Either::Right(socket)),
                    }
                });
                let mut yamux = yamux::Config::default();
                yamux.set_max_num_streams(MAX_STREAMS_PER_CONNECTION);
                Ok(tcp
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise::Config::new(keypair)?)
                    .multiplex(yamux))
            },
        )?
        .with_behaviour(|keypair| {
            let mdns = match mdns {
                true => Some(mdns::tokio::Behaviour::new(
                    mdns::Config {
                        ttl: MDNS_TTL,
                        query_interval: MDNS_QUERY_INTERVAL,
                        ..Default::default()
                    },
                    keypair.public().to_peer_id(),
                )?),
                false => None,
            };
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_REQUEST_BYTES as u64)
                .set_response_size_maximum(MAX_RESPONSE_BYTES as u64);
            let limits = ConnectionLimits::default()
                .with_max_pending_incoming(Some(MAX_PENDING_CONNECTIONS))
                .with_max_pending_outgoing(Some(MAX_PENDING_CONNECTIONS))
                .with_max_established(Some(MAX_CONNECTIONS))
                .with_max_established_incoming(Some(MAX_INCOMING_CONNECTIONS))
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                sync: request_response::Behaviour::with_codec(
                    codec,
                    [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(MAX_CONCURRENT_REQUESTS),
                ),
                push: libp2p_stream::Behaviour::new(),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(PING_INTERVAL)
                        .with_timeout(Duration::from_secs(2)),
                ),
                mdns: Toggle::from(mdns),
            })
        })?
        .with_swarm_config(|config| config.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .with_connection_timeout(HANDSHAKE_TIMEOUT)
        .build();
    Ok(swarm)
}
