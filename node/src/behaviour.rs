//! The libp2p side: transport, behaviours and their limits.

use std::time::Duration;

use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, Swarm, SwarmBuilder, noise, ping, tcp, yamux};
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

/// Everything the node speaks on a connection.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Hello and range requests.
    pub sync: request_response::cbor::Behaviour<Request, Response>,
    /// Long-lived streams that push entry batches.
    pub push: libp2p_stream::Behaviour,
    /// Liveness: closes connections to peers that stop answering.
    pub ping: ping::Behaviour,
}

/// Builds the swarm: TCP + Noise + Yamux, with the node key as its identity.
pub fn build_swarm(key: &SigningKey) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = SwarmBuilder::with_existing_identity(identity::keypair(key))
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_| {
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_REQUEST_BYTES as u64)
                .set_response_size_maximum(MAX_RESPONSE_BYTES as u64);
            Behaviour {
                sync: request_response::Behaviour::with_codec(
                    codec,
                    [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                ),
                push: libp2p_stream::Behaviour::new(),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(PING_INTERVAL).with_timeout(Duration::from_secs(2)),
                ),
            }
        })?
        .with_swarm_config(|config| config.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
