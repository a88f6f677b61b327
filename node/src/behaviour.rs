//! The libp2p side: transport, behaviours and their limits.

use std::net::IpAddr;
use std::time::Duration;

use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::core::Transport as _;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::transport::memory::MemoryTransportError;
use libp2p::core::transport::timeout::{TransportTimeout, TransportTimeoutError};
use libp2p::core::transport::{MemoryTransport, TransportError};
use libp2p::core::upgrade::{NegotiationError, ProtocolError, Version};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, dcutr, identify, mdns, noise, quic, relay, rendezvous, tcp,
    yamux,
};
use p2pchat_protocol::SigningKey;

use crate::identity;

/// How long a connection with no open stream stays up. Lanes stay open while peers are
/// connected, so this only matters between a connection's start and its lanes opening.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a new connection may take to set up (TCP, Noise, Yamux) before it is
/// dropped, so a peer that stalls mid-handshake cannot hold a pending slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dial may wait for TCP to connect (part of [`HANDSHAKE_TIMEOUT`]), so that a
/// connection that opens and then stalls can be told from an address that never answers.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections being set up at once, each way (further ones are refused until one finishes).
pub const MAX_PENDING_CONNECTIONS: u32 = 32;
/// Established connections in all.
pub const MAX_CONNECTIONS: u32 = 256;
/// Established connections that others dialed.
pub const MAX_INCOMING_CONNECTIONS: u32 = 128;
/// Established connections to one peer (one is kept; duplicates are closed, see `discovery`).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 3;
/// Yamux streams open at once on one connection (a connection needs four: two lanes each way,
/// and a few more while lanes are reopened).
pub const MAX_STREAMS_PER_CONNECTION: usize = 64;

/// How often mDNS asks the LAN who is there (answers also arrive whenever a peer starts).
pub const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(5);
/// How long an mDNS record lives unless refreshed.
pub const MDNS_TTL: Duration = Duration::from_secs(30);

/// The protocol name identify announces (and checks nothing against: it is for people reading
/// a relay's logs).
pub const IDENTIFY_PROTOCOL: &str = "/p2pchat/3";

/// Everything the node speaks on a connection.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Refuses connections to and from the peers blocked with `Node::block`.
    pub blocked: allow_block_list::Behaviour<BlockedPeers>,
    /// Refuses connections over the limits above.
    pub limits: connection_limits::Behaviour,
    /// The lanes: two long-lived streams each way per peer (liveness is the core's, on them).
    pub lanes: libp2p_stream::Behaviour,
    /// Discovery on the LAN, unless turned off.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Tells peers our listen addresses and the address they see us at (hole punching needs
    /// both).
    pub identify: identify::Behaviour,
    /// Whether our addresses can be reached from outside (asked of peers that serve it: a relay).
    pub autonat: autonat::v2::client::Behaviour,
    /// Reservations on relays and connections through them (`/p2p-circuit` addresses).
    pub relay: relay::client::Behaviour,
    /// Upgrades a relayed connection to a direct one by hole punching.
    pub dcutr: dcutr::Behaviour,
    /// Registers in each room's namespace at a relay's rendezvous point, and looks peers up there.
    pub rendezvous: rendezvous::client::Behaviour,
}

/// How a node reaches others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// TCP and QUIC, the chat's: `/ip4/…/tcp/PORT`, `/ip4/…/udp/PORT/quic-v1` and their
    /// `/ip6/` forms; and through a relay, `<relay>/p2p-circuit/p2p/<peer id>`.
    #[default]
    Tcp,
    /// libp2p's in-process memory transport: `/memory/N` addresses (listen on `/memory/0` for
    /// a free one), for many nodes in one process without ports. Noise and Yamux run on it as
    /// on TCP.
    Memory,
}

impl Transport {
    /// Whether this transport can dial `address`: `/ip4/…` or `/ip6/…`, then `/tcp/PORT` or
    /// `/udp/PORT/quic-v1` with a port other than 0; memory `/memory/N` with N other than 0;
    /// then at most a `/p2p/<peer id>`.
    pub fn can_dial(self, address: &Multiaddr) -> bool {
        let mut parts = address.iter();
        let base = match self {
            Transport::Tcp => {
                matches!(parts.next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)))
                    && match parts.next() {
                        Some(Protocol::Tcp(port)) => port != 0,
                        Some(Protocol::Udp(port)) => {
                            port != 0 && matches!(parts.next(), Some(Protocol::QuicV1))
                        }
                        _ => false,
                    }
            }
            Transport::Memory => matches!(parts.next(), Some(Protocol::Memory(n)) if n != 0),
        };
        base && matches!(parts.next(), None | Some(Protocol::P2p(_))) && parts.next().is_none()
    }

    /// The addresses this transport dials, in words.
    pub fn dials_what(self) -> &'static str {
        match self {
            Transport::Tcp => {
                "p2pchat dials /ip4/…/tcp/PORT, /ip4/…/udp/PORT/quic-v1 or their /ip6/ forms, \
                 with a port other than 0, optionally ending in /p2p/<peer id>"
            }
            Transport::Memory => {
                "the memory transport dials /memory/N, with N other than 0, optionally ending \
                 in /p2p/<peer id>"
            }
        }
    }
}

/// Builds the swarm: `kind` (TCP and QUIC, or memory) + Noise + Yamux (QUIC has its own TLS
/// and streams), and the relay client's transport beside it, with the node key as its
/// identity (the same for every room: membership is proved on the lanes, see
/// `p2pchat_protocol::membership`); mDNS if `mdns`.
pub fn build_swarm(
    key: &SigningKey,
    mdns: bool,
    kind: Transport,
) -> anyhow::Result<Swarm<Behaviour>> {
    let keypair = identity::keypair(key);
    let peer_id = keypair.public().to_peer_id();
    let config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
    let (relay_transport, relay) = relay::client::new(peer_id);
    let relayed = secured(
        relay_transport.map_err(|e| ConnectError::Relay(relay_words(&e))),
        &keypair,
    )?;
    let transport = match kind {
        Transport::Tcp => either_of(transport(&keypair)?, relayed).boxed(),
        Transport::Memory => either_of(memory_transport(&keypair)?, relayed).boxed(),
    };
    Ok(Swarm::new(
        transport,
        behaviour(&keypair, mdns, relay)?,
        peer_id,
        config,
    ))
}

/// The transport of `kind`, without the relay client's (a relay's own swarm has none).
pub fn build_transport(
    keypair: &libp2p::identity::Keypair,
    kind: Transport,
) -> anyhow::Result<Boxed<(PeerId, StreamMuxerBox)>> {
    Ok(match kind {
        Transport::Tcp => transport(keypair)?.boxed(),
        Transport::Memory => memory_transport(keypair)?.boxed(),
    })
}

/// A transport with a connection's output whose every failure is a [`ConnectError`], so the
/// event loop can put it in words (boxed once only: a boxed transport's error hides it).
pub trait ChatTransport:
    libp2p::core::Transport<
        Output = (PeerId, StreamMuxerBox),
        Error = ConnectError,
        Dial: Send,
        ListenerUpgrade: Send,
    > + Send
    + Unpin
    + 'static
{
}

impl<T> ChatTransport for T where
    T: libp2p::core::Transport<
            Output = (PeerId, StreamMuxerBox),
            Error = ConnectError,
            Dial: Send,
            ListenerUpgrade: Send,
        > + Send
        + Unpin
        + 'static
{
}

/// `first`, or else `second` (for addresses `first` cannot dial or listen on).
fn either_of(first: impl ChatTransport, second: impl ChatTransport) -> impl ChatTransport {
    first
        .or_transport(second)
        .map(|either, _| either.into_inner())
        .map_err(|e| e.into_inner())
}

/// The relay transport's error in words: why a reservation was refused, or a circuit not made.
fn relay_words(e: &relay::client::transport::Error) -> String {
    use relay::client::transport::Error;
    use relay::outbound::hop::{ConnectError as Connect, ReserveError as Reserve};
    match e {
        Error::Reservation(Reserve::Refused) => "the relay refused the reservation".into(),
        Error::Reservation(Reserve::ResourceLimitExceeded) => {
            "the relay refused the reservation: it holds as many as it allows".into()
        }
        Error::Reservation(Reserve::Unsupported) => {
            "the relay refused the reservation: it does not relay (is it a p2pchat relay?)".into()
        }
        Error::Connect(Connect::NoReservation) => {
            "the peer holds no reservation at the relay (it left, or its reservation ended)".into()
        }
        Error::Connect(Connect::ResourceLimitExceeded) => {
            "the relay refused the circuit: it relays as many as it allows".into()
        }
        Error::Connect(Connect::PermissionDenied) => "the relay refused the circuit".into(),
        Error::Connect(Connect::Unsupported) => {
            "the relay does not relay (is it a p2pchat relay?)".into()
        }
        e => format!("relay: {e}"),
    }
}

/// TCP (with Noise and Yamux) and QUIC, built by hand (not by libp2p's `SwarmBuilder`) so that
/// every failure to set up a connection reaches the event loop as a [`ConnectError`] it can put
/// in words.
fn transport(keypair: &libp2p::identity::Keypair) -> anyhow::Result<impl ChatTransport> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let tcp = TransportTimeout::with_outgoing_timeout(tcp, TCP_CONNECT_TIMEOUT)
        .map_err(|e| match e {
            TransportTimeoutError::Timeout => {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TCP connect timed out")
            }
            TransportTimeoutError::TimerError(e) | TransportTimeoutError::Other(e) => e,
        })
        .map_err(ConnectError::Tcp);
    let mut quic = quic::Config::new(keypair);
    quic.handshake_timeout = HANDSHAKE_TIMEOUT;
    quic.max_concurrent_stream_limit = MAX_STREAMS_PER_CONNECTION as u32;
    let quic = quic::tokio::Transport::new(quic)
        .map_err(ConnectError::quic)
        .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)));
    Ok(either_of(secured(tcp, keypair)?, quic))
}

/// libp2p's memory transport, its failures as [`ConnectError`]s (nobody listening there is a
/// refused connection, as on TCP).
fn memory_transport(keypair: &libp2p::identity::Keypair) -> anyhow::Result<impl ChatTransport> {
    let memory = MemoryTransport::default().map_err(|e| {
        ConnectError::Tcp(match e {
            MemoryTransportError::Unreachable => {
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e)
            }
            MemoryTransportError::AlreadyInUse => {
                std::io::Error::new(std::io::ErrorKind::AddrInUse, e)
            }
        })
    });
    secured(memory, keypair)
}

/// `base` with Noise and Yamux on top, each failure as a [`ConnectError`] naming its step.
fn secured<T>(base: T, keypair: &libp2p::identity::Keypair) -> anyhow::Result<impl ChatTransport>
where
    T: libp2p::core::Transport<Error = ConnectError> + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let mut yamux = yamux::Config::default();
    yamux.set_max_num_streams(MAX_STREAMS_PER_CONNECTION);
    Ok(base
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(keypair)?)
        .multiplex(yamux)
        .timeout(HANDSHAKE_TIMEOUT)
        .map_err(|e| match e {
            TransportTimeoutError::Timeout => ConnectError::Stalled,
            TransportTimeoutError::TimerError(e) => ConnectError::Tcp(e),
            TransportTimeoutError::Other(e) => e.either(
                |e| e.either(|e| e, ConnectError::security),
                ConnectError::muxer,
            ),
        })
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer))))
}

/// Checks that nothing listens on `address`'s TCP port yet, by binding it without SO_REUSEPORT
/// and letting it go. libp2p's listener sets SO_REUSEPORT (hole punching needs it), so a second
/// node would otherwise share the port silently and dialers would be split between the two.
/// Port 0 and addresses that are not TCP pass: listening itself reports what is wrong with them.
pub fn check_port_free(address: &Multiaddr) -> Result<(), String> {
    let mut parts = address.iter();
    let ip: IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let Some(Protocol::Tcp(port)) = parts.next() else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind((ip, port))
        .map(drop)
        .map_err(|e| in_words(&e))
}

/// Why listening on an address failed, in words.
pub fn listen_error(e: &TransportError<std::io::Error>) -> String {
    match e {
        TransportError::MultiaddrNotSupported(_) => {
            "p2pchat listens on TCP or QUIC, as in /ip4/0.0.0.0/tcp/4001, \
             /ip4/0.0.0.0/udp/4001/quic-v1 or /ip6/::/tcp/4001 (or, with the memory transport, \
             on /memory/N only)"
                .into()
        }
        TransportError::Other(e) => transport_words(e),
    }
}

/// An error of the transport (a listener's, say) in words.
pub fn transport_words(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|e| e.downcast_ref()) {
        Some(ConnectError::Tcp(e)) => in_words(e),
        Some(e) => e.to_string(),
        None => in_words(e),
    }
}

/// A socket error in words, with what to do about the common ones.
pub fn in_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::AddrInUse => "address already in use (another p2pchat? pick another port with \
                                 --listen, or port 0 for any free one)"
            .into(),
        ErrorKind::AddrNotAvailable => {
            "cannot assign requested address (it is not an address of this host)".into()
        }
        ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges; pick a higher one)".into()
        }
        ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => match e.to_string() {
            text if text.is_empty() => e.kind().to_string(),
            text => in_lower_case(&text),
        },
    }
}

/// `text` with its first letter in lower case, to follow a colon.
fn in_lower_case(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Why a connection could not be set up, by step.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP: refused, unreachable, …
    #[error("{}", in_words(.0))]
    Tcp(std::io::Error),
    /// Noise (the first upgrade) or Yamux (the second) could not be agreed on or failed.
    #[error("{} failed: {detail}", if *.security { "the encrypted handshake" } else { "the multiplexer setup" })]
    Upgrade {
        /// Whether it was the first upgrade, Noise, right after TCP.
        security: bool,
        /// Whether the peer sent bytes that make no sense (no negotiation message, or invalid
        /// data): say, an earlier p2pchat that wraps connections in a room key layer.
        garbled: bool,
        /// Whether the connection just broke off (closed or reset by the peer).
        broken_off: bool,
        /// The error, in words.
        detail: String,
    },
    /// TCP connected but the rest of the setup did not finish within [`HANDSHAKE_TIMEOUT`].
    #[error("the handshake did not finish in time")]
    Stalled,
    /// QUIC could not reach the peer or set the connection up (its own TLS 1.3 handshake).
    #[error("QUIC: {0}")]
    Quic(String),
    /// The relay refused a reservation or a circuit, or could not be asked (in words).
    #[error("{0}")]
    Relay(String),
}

impl ConnectError {
    /// A failed QUIC connection: its socket errors as TCP's, a handshake past its time as a
    /// stall.
    fn quic(e: quic::Error) -> Self {
        match e {
            quic::Error::Io(e) => ConnectError::Tcp(e),
            quic::Error::HandshakeTimedOut => ConnectError::Stalled,
            quic::Error::Connection(e) => ConnectError::Quic(in_lower_case(&e.to_string())),
            e => ConnectError::Quic(in_lower_case(&e.to_string())),
        }
    }

    /// A failed Noise upgrade.
    fn security(e: impl std::error::Error + 'static) -> Self {
        Self::upgrade(true, &e)
    }

    /// A failed Yamux upgrade.
    fn muxer(e: impl std::error::Error + 'static) -> Self {
        Self::upgrade(false, &e)
    }

    /// An upgrade's error is libp2p's (private) `UpgradeError`: its source is the error of the
    /// protocol negotiation, or of the upgrade itself.
    fn upgrade(security: bool, e: &(dyn std::error::Error + 'static)) -> Self {
        let cause = e.source().unwrap_or(e);
        let negotiation = cause.downcast_ref::<NegotiationError>();
        let io = match negotiation {
            Some(NegotiationError::ProtocolError(ProtocolError::IoError(io))) => Some(io),
            Some(_) => None,
            None => match cause.downcast_ref::<noise::Error>() {
                Some(noise::Error::Io(io)) => Some(io),
                _ => cause.downcast_ref::<std::io::Error>(),
            },
        };
        let garbled = match io {
            Some(io) => io.kind() == std::io::ErrorKind::InvalidData,
            None => negotiation.is_some(),
        };
        ConnectError::Upgrade {
            security,
            garbled,
            broken_off: io.is_some_and(is_broken_off),
            detail: match io {
                Some(io) => in_words(io),
                None => cause.to_string(),
            },
        }
    }
}

/// Whether an I/O error means the peer closed or reset the connection.
pub fn is_broken_off(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

/// The behaviours, configured with the limits above.
fn behaviour(
    keypair: &libp2p::identity::Keypair,
    mdns: bool,
    relay: relay::client::Behaviour,
) -> anyhow::Result<Behaviour> {
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
    let limits = ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING_CONNECTIONS))
        .with_max_pending_outgoing(Some(MAX_PENDING_CONNECTIONS))
        .with_max_established(Some(MAX_CONNECTIONS))
        .with_max_established_incoming(Some(MAX_INCOMING_CONNECTIONS))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
    Ok(Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        lanes: libp2p_stream::Behaviour::new(),
        mdns: Toggle::from(mdns),
        identify: identify::Behaviour::new(identify::Config::new(
            IDENTIFY_PROTOCOL.into(),
            keypair.public(),
        )),
        autonat: autonat::v2::client::Behaviour::default(),
        relay,
        dcutr: dcutr::Behaviour::new(keypair.public().to_peer_id()),
        rendezvous: rendezvous::client::Behaviour::new(keypair.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_found_before_listening() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut first = build_swarm(&key, false, Transport::Tcp).unwrap();
        first
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let address = loop {
            use futures::StreamExt;
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                first.select_next_some().await
            {
                break address;
            }
        };
        // libp2p's own listener sets SO_REUSEPORT, so a second one would share the port.
        let reason = check_port_free(&address).unwrap_err();
        assert!(reason.starts_with("address already in use"), "{reason}");
        assert_eq!(
            check_port_free(&"/ip4/127.0.0.1/tcp/0".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            check_port_free(&"/ip4/127.0.0.1/udp/1".parse().unwrap()),
            Ok(())
        );
        drop(first);
        assert_eq!(check_port_free(&address), Ok(()), "free again");
    }
}
