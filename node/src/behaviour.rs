//! The libp2p side: transport, behaviours and their limits.

use std::time::Duration;

use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, Swarm, SwarmBuilder, mdns, noise, ping, tcp, yamux};
use p2pchat_protocol::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use p2pchat_protocol::wire::{Request, Response, SYNC_PROTOCOL};
use p2pchat_protocol::SigningKey;

use crate::identity;

/// How long a request (hello or range) may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection with no open stream stays up. Push streams stay open while peers are
/// connected, so this only matters between a connection's start and its first hello.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often a ping checks that a peer is still there (a dead peer is noticed within ~2×).
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How often mDNS asks the LAN who is there (answers also arrive whenever a peer starts).
pub const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(5);
/// How long an mDNS record lives unless refreshed.
pub const MDNS_TTL: Duration = Duration::from_secs(30);

/// Everything the node speaks on a connection.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Hello and range requests.
    pub sync: request_response::cbor::Behaviour<Request, Response>,
    /// Long-lived streams that push entry batches.
    pub push: libp2p_stream::Behaviour,
    /// Liveness: closes connections to peers that stop answering.
    pub ping: ping::Behaviour,
    /// Discovery on the LAN, unless turned off.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Builds the swarm: TCP + Noise + Yamux, with the node key as its identity; mDNS if `mdns`.
pub fn build_swarm(key: &SigningKey, mdns: bool) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = SwarmBuilder::with_existing_identity(identity::keypair(key))
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|keypair| {
            let mdns = match mdns {
                true => Some(mdns::tokio::Behaviour::new(
                    mdns::Config { ttl: MDNS_TTL, query_interval: MDNS_QUERY_INTERVAL, ..Default::default() },
                    keypair.public().to_peer_id(),
                )?),
                false => None,
            };
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_REQUEST_BYTES as u64)
                .set_response_size_maximum(MAX_RESPONSE_BYTES as u64);
            Ok(Behaviour {
                sync: request_response::Behaviour::with_codec(
                    codec,
                    [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                ),
                push: libp2p_stream::Behaviour::new(),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(PING_INTERVAL).with_timeout(Duration::from_secs(2)),
                ),
                mdns: Toggle::from(mdns),
            })
        })?
        .with_swarm_config(|config| config.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
