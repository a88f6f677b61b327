//! Keeping connections to the peers the user asked for, redialing with backoff; and why a
//! connection failed, in words (said without repeating it on every redial by
//! [`Warnings`](crate::warnings::Warnings)).

use std::fmt;
use std::time::Duration;

use libp2p::core::transport::TransportError;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionDenied, ConnectionId, DialError, ListenError};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::behaviour::{ConnectError, in_words};

/// First wait before redialing a lost or failed peer.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between redials.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Wait before redialing a `--peer` address whose peer shares no room with us.
pub const NO_SHARED_ROOM_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum State {
    Waiting { until: Instant },
    Dialing(ConnectionId),
    Connected(PeerId),
}

#[derive(Debug)]
struct Target {
    addr: Multiaddr,
    peer: Option<PeerId>,
    state: State,
    backoff: Backoff,
    /// No redial before this: the peer there shares no room with us.
    not_before: Option<Instant>,
}

/// The addresses the user gave with `--peer`, each kept connected. It reads no clock: every
/// method that needs the time is given `now`.
#[derive(Debug)]
pub struct Redialer {
    targets: Vec<Target>,
    /// The first wait before a redial, and the longest.
    backoff: (Duration, Duration),
}

impl Default for Redialer {
    fn default() -> Self {
        Self::new(INITIAL_BACKOFF, MAX_BACKOFF)
    }
}

impl Redialer {
    /// A redialer whose first wait before a redial is `first`, doubling up to `longest`.
    pub fn new(first: Duration, longest: Duration) -> Self {
        Redialer {
            targets: Vec::new(),
            backoff: (first, longest),
        }
    }

    /// Adds an address to keep connected, due at `now` (dialed at the next [`Redialer::due`]).
    /// An address already kept is not added twice: if it waits, it is due at `now`.
    pub fn add(&mut self, addr: Multiaddr, now: Instant) {
        if let Some(target) = self.targets.iter_mut().find(|target| target.addr == addr) {
            if let State::Waiting { until } = &mut target.state {
                *until = now;
            }
            return;
        }
        let peer = addr.iter().find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        self.targets.push(Target {
            addr,
            peer,
            state: State::Waiting { until: now },
            backoff: Backoff::new(self.backoff.0, self.backoff.1),
            not_before: None,
        });
    }

    /// Dials for every target whose wait is over; the caller hands them to the swarm.
    pub fn due(&mut self, now: Instant) -> Vec<DialOpts> {
        let mut dials = Vec::new();
        for target in &mut self.targets {
            if let State::Waiting { until } = target.state
                && until <= now
            {
                let opts = match target.peer {
                    Some(peer) => DialOpts::peer_id(peer)
                        .addresses(vec![target.addr.clone()])
                        .build(),
                    None => DialOpts::unknown_peer_id()
                        .address(target.addr.clone())
                        .build(),
                };
                target.state = State::Dialing(opts.connection_id());
                dials.push(opts);
            }
        }
        dials
    }

    /// A connection to `peer` is up (made by us or by them); returns the addresses of the
    /// targets it connects.
    pub fn connected(&mut self, peer: PeerId, connection: ConnectionId) -> Vec<Multiaddr> {
        let mut connected = Vec::new();
        for target in &mut self.targets {
            let ours = matches!(target.state, State::Dialing(id) if id == connection);
            if ours || target.peer == Some(peer) {
                target.peer = Some(peer);
                target.state = State::Connected(peer);
                target.backoff.reset();
                connected.push(target.addr.clone());
            }
        }
        connected
    }

    /// Whether `peer` is one of the targets (known by its address's `/p2p/` or by connecting).
    pub fn is_target(&self, peer: &PeerId) -> bool {
        self.targets
            .iter()
            .any(|target| target.peer.as_ref() == Some(peer))
    }

    /// A dial we made failed at `now`; try again after the backoff, doubled for next time.
    /// Returns the target's address, if the dial was for one.
    pub fn dial_failed(&mut self, connection: ConnectionId, now: Instant) -> Option<Multiaddr> {
        let mut failed = None;
        for target in &mut self.targets {
            if matches!(target.state, State::Dialing(id) if id == connection) {
                target.state = State::Waiting {
                    until: now + target.backoff.next(),
                };
                failed = Some(target.addr.clone());
            }
        }
        failed
    }

    /// The last connection to `peer` closed at `now`; redial after the backoff (or once the
    /// wait after it shared no room with us is over).
    pub fn disconnected(&mut self, peer: PeerId, now: Instant) {
        for target in &mut self.targets {
            if matches!(target.state, State::Connected(p) if p == peer) {
                let until = now + target.backoff.next();
                target.state = State::Waiting {
                    until: target.not_before.take().map_or(until, |at| at.max(until)),
                };
            }
        }
    }

    /// Stops keeping `peer` connected: its targets are forgotten (the user disconnected it).
    pub fn forget(&mut self, peer: PeerId) {
        self.targets.retain(|target| target.peer != Some(peer));
    }

    /// `peer`'s targets that wait are due at `now`, their backoff started over (it was
    /// unblocked).
    pub fn retry_now(&mut self, peer: PeerId, now: Instant) {
        for target in &mut self.targets {
            if target.peer == Some(peer)
                && let State::Waiting { until } = &mut target.state
            {
                *until = now;
                target.backoff.reset();
            }
        }
    }

    /// `peer` proved membership of none of our rooms at `now`: its targets are redialed after
    /// [`NO_SHARED_ROOM_RETRY`] only (it may join one of our rooms meanwhile), not at once.
    pub fn shares_no_room(&mut self, peer: PeerId, now: Instant) {
        for target in &mut self.targets {
            if target.peer == Some(peer) {
                target.not_before = Some(now + NO_SHARED_ROOM_RETRY);
            }
        }
    }
}

/// Why a connection to or from a peer could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens at the address: the connection was refused.
    Refused,
    /// There is no route to the address (the host or its network is unreachable).
    Unreachable,
    /// The address did not answer in time.
    TimedOut,
    /// The connection opened but its handshake did not finish in time.
    Stalled,
    /// The peer at the address has another peer id than the `/p2p/` one given.
    WrongPeerId {
        /// The id it has.
        found: PeerId,
    },
    /// The peer garbled the handshake's first step: not p2pchat there, or an earlier p2pchat
    /// started with `--room-key`, which wrapped connections in a room key layer (its code stays
    /// `room_key`).
    RoomKey,
    /// A connection limit was reached.
    TooManyConnections,
    /// The address is this node's own.
    OwnAddress,
    /// Something else, in words.
    Other(String),
}

impl ConnectFailure {
    /// A short, stable name: `refused`, `unreachable`, `timed_out`, `stalled`, `wrong_peer_id`,
    /// `room_key`, `too_many_connections`, `own_address` or `other`.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::TimedOut => "timed_out",
            ConnectFailure::Stalled => "stalled",
            ConnectFailure::WrongPeerId { .. } => "wrong_peer_id",
            ConnectFailure::RoomKey => "room_key",
            ConnectFailure::TooManyConnections => "too_many_connections",
            ConnectFailure::OwnAddress => "own_address",
            ConnectFailure::Other(_) => "other",
        }
    }

    /// How much a failure tells, to pick one among a dial's several addresses.
    fn weight(&self) -> u8 {
        match self {
            ConnectFailure::Other(_) => 0,
            ConnectFailure::Unreachable => 1,
            ConnectFailure::Refused => 2,
            ConnectFailure::TimedOut => 3,
            ConnectFailure::Stalled => 4,
            ConnectFailure::TooManyConnections => 5,
            ConnectFailure::OwnAddress => 6,
            ConnectFailure::RoomKey => 7,
            ConnectFailure::WrongPeerId { .. } => 8,
        }
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Refused => {
                write!(
                    f,
                    "connection refused (nothing listens there: is p2pchat running, on that port?)"
                )
            }
            ConnectFailure::Unreachable => write!(f, "the host or its network is unreachable"),
            ConnectFailure::TimedOut => {
                write!(f, "no answer in time (a wrong address, or a firewall?)")
            }
            ConnectFailure::Stalled => write!(
                f,
                "the connection opened but the handshake did not finish in time: not p2pchat \
                 there, or an earlier p2pchat started with --room-key?"
            ),
            ConnectFailure::WrongPeerId { found } => write!(
                f,
                "the peer there is {found}, not the /p2p/ id given (a new identity? give its new \
                 id, or the address without /p2p/…)"
            ),
            ConnectFailure::RoomKey => write!(
                f,
                "the handshake failed at its first step: not p2pchat there, or an earlier \
                 p2pchat started with --room-key (it must upgrade: private rooms no longer \
                 change the connection)"
            ),
            ConnectFailure::TooManyConnections => {
                write!(f, "too many connections (a limit was reached)")
            }
            ConnectFailure::OwnAddress => write!(f, "that is this node's own address"),
            ConnectFailure::Other(words) => write!(f, "{words}"),
        }
    }
}

/// Why a dial failed, or `None` if it is not worth saying: aborted, or not started because the
/// peer is connected or being dialed already.
pub fn dial_failure(error: &DialError) -> Option<ConnectFailure> {
    Some(match error {
        DialError::Aborted | DialError::DialPeerConditionFalse(_) => return None,
        DialError::LocalPeerId { .. } => ConnectFailure::OwnAddress,
        DialError::NoAddresses => ConnectFailure::Other("no address is known for it".into()),
        DialError::WrongPeerId { obtained, .. } => ConnectFailure::WrongPeerId { found: *obtained },
        DialError::Denied { cause } => denied(cause),
        DialError::Transport(errors) => errors
            .iter()
            .map(|(address, error)| transport_failure(address, error))
            .max_by_key(ConnectFailure::weight)?,
    })
}

/// Why a connection a peer dialed to us failed, or `None` if it is not worth saying: aborted,
/// or broken off in a way that a dialer trying several addresses at once causes.
pub fn incoming_failure(error: &ListenError) -> Option<ConnectFailure> {
    match error {
        ListenError::Denied { cause } => Some(denied(cause)),
        ListenError::Transport(TransportError::Other(e)) => {
            match e.get_ref().and_then(|e| e.downcast_ref::<ConnectError>()) {
                Some(e) => connect_failure(e, Side::Listener),
                None => Some(ConnectFailure::Other(in_words(e))),
            }
        }
        _ => None,
    }
}

/// Which end of a connection we are.
#[derive(Clone, Copy)]
enum Side {
    Dialer,
    Listener,
}

fn denied(cause: &ConnectionDenied) -> ConnectFailure {
    match cause.downcast_ref::<libp2p::connection_limits::Exceeded>() {
        Some(_) => ConnectFailure::TooManyConnections,
        None => ConnectFailure::Other(format!("refused: {cause}")),
    }
}

fn transport_failure(
    address: &Multiaddr,
    error: &TransportError<std::io::Error>,
) -> ConnectFailure {
    match error {
        TransportError::MultiaddrNotSupported(_) => ConnectFailure::Other(format!(
            "p2pchat cannot dial {address} (it dials /ip4/…/tcp/PORT, /ip4/…/udp/PORT/quic-v1 \
             or their /ip6/ forms, with a port other than 0)"
        )),
        TransportError::Other(e) => match e.get_ref().and_then(|e| e.downcast_ref()) {
            Some(e) => connect_failure(e, Side::Dialer)
                .unwrap_or_else(|| ConnectFailure::Other(e.to_string())),
            None => ConnectFailure::Other(in_words(e)),
        },
    }
}

/// What a failed connection setup tells, from `side`; `None` when a listener cannot tell it
/// from a dialer giving up on a duplicate attempt (it dials all of a peer's addresses at once
/// and drops the rest when one connects).
fn connect_failure(error: &ConnectError, side: Side) -> Option<ConnectFailure> {
    use std::io::ErrorKind;
    // A peer that garbles the connection's first bytes (an earlier p2pchat that wrapped
    // connections in a room key layer, or not p2pchat at all) makes whichever side notices
    // first hang up, so the other sees the connection break off. A dialer takes that for such
    // a peer; a listener says so only when it sees garbage itself, as a dialer may just have
    // given up on a duplicate attempt (it dials all of a peer's addresses at once and drops
    // the rest when one connects).
    let break_off_is_telling = matches!(side, Side::Dialer);
    Some(match error {
        ConnectError::Tcp(e) => match e.kind() {
            ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                ConnectFailure::Unreachable
            }
            ErrorKind::TimedOut => ConnectFailure::TimedOut,
            _ => ConnectFailure::Other(in_words(e)),
        },
        ConnectError::Stalled => ConnectFailure::Stalled,
        ConnectError::Upgrade {
            security: true,
            garbled,
            broken_off,
            ..
        } if *garbled || (*broken_off && break_off_is_telling) => ConnectFailure::RoomKey,
        ConnectError::Upgrade {
            broken_off: true, ..
        } if matches!(side, Side::Listener) => return None,
        ConnectError::Upgrade { .. } | ConnectError::Quic(_) | ConnectError::Relay(_) => {
            ConnectFailure::Other(error.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_dials_back_off_and_success_resets() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut redialer = Redialer::default();
        redialer.add("/ip4/127.0.0.1/tcp/1".parse().unwrap(), at(0));
        let first = redialer.due(at(0));
        assert_eq!(first.len(), 1);
        assert!(
            redialer.due(at(0)).is_empty(),
            "no second dial while one is pending"
        );
        redialer.dial_failed(first[0].connection_id(), at(100));
        assert!(redialer.due(at(599)).is_empty(), "waits for the backoff");
        let retry = redialer.due(at(600));
        assert_eq!(retry.len(), 1);
        redialer.dial_failed(retry[0].connection_id(), at(700));
        assert!(redialer.due(at(1699)).is_empty(), "backoff doubled");
        let again = redialer.due(at(1700));
        assert_eq!(again.len(), 1);
        let peer = PeerId::random();
        assert_eq!(
            redialer.connected(peer, again[0].connection_id()),
            ["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap()]
        );
        assert!(redialer.is_target(&peer));
        redialer.disconnected(peer, at(5000));
        assert!(
            redialer.due(at(5499)).is_empty(),
            "the connection reset the backoff to its first wait"
        );
        assert_eq!(redialer.due(at(5500)).len(), 1, "redials after a drop");
    }

    #[test]
    fn the_wait_stops_growing_at_the_limit() {
        let mut now = Instant::now();
        let mut redialer = Redialer::default();
        redialer.add("/ip4/127.0.0.1/tcp/1".parse().unwrap(), now);
        for wait in [500, 1000, 2000, 4000, 8000, 15_000, 15_000] {
            let dials = redialer.due(now);
            assert_eq!(dials.len(), 1);
            redialer.dial_failed(dials[0].connection_id(), now);
            let wait = Duration::from_millis(wait);
            assert!(
                redialer
                    .due(now + wait - Duration::from_millis(1))
                    .is_empty(),
                "waits {wait:?}"
            );
            now += wait;
        }
    }

    fn transport(error: ConnectError) -> TransportError<std::io::Error> {
        TransportError::Other(std::io::Error::other(error))
    }

    fn dialed(error: ConnectError) -> Option<ConnectFailure> {
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        dial_failure(&DialError::Transport(vec![(address, transport(error))]))
    }

    fn upgrade(security: bool, garbled: bool, broken_off: bool) -> ConnectError {
        ConnectError::Upgrade {
            security,
            garbled,
            broken_off,
            detail: "…".into(),
        }
    }

    #[test]
    fn a_target_sharing_no_room_is_redialed_after_a_long_wait() {
        let now = Instant::now();
        let mut redialer = Redialer::default();
        let peer = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        redialer.add(addr, now);
        let dial = redialer.due(now).remove(0);
        redialer.connected(peer, dial.connection_id());
        redialer.shares_no_room(peer, now);
        redialer.disconnected(peer, now);
        assert!(redialer.due(now + MAX_BACKOFF).is_empty());
        assert_eq!(redialer.due(now + NO_SHARED_ROOM_RETRY).len(), 1);
        // Once: the next time it leaves, the usual backoff.
        redialer.connected(peer, dial.connection_id());
        let later = now + NO_SHARED_ROOM_RETRY;
        redialer.disconnected(peer, later);
        assert_eq!(redialer.due(later + INITIAL_BACKOFF).len(), 1);
    }

    #[test]
    fn the_backoff_given_is_kept_and_forgotten_or_unblocked_targets_are_handled() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut redialer = Redialer::new(ms(10), ms(30));
        let peer = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        redialer.add(addr.clone(), now);
        redialer.add(addr.clone(), now);
        let mut at = now;
        for wait in [10, 20, 30, 30] {
            let dials = redialer.due(at);
            assert_eq!(dials.len(), 1, "an address is kept once");
            redialer.dial_failed(dials[0].connection_id(), at);
            assert!(redialer.due(at + ms(wait) - ms(1)).is_empty());
            at += ms(wait);
        }
        // Unblocked: due at once, the backoff started over.
        redialer.retry_now(peer, at - ms(20));
        let dials = redialer.due(at - ms(20));
        redialer.dial_failed(dials[0].connection_id(), at);
        assert_eq!(redialer.due(at + ms(10)).len(), 1);
        redialer.forget(peer);
        assert!(!redialer.is_target(&peer));
        assert!(redialer.due(at + ms(1000)).is_empty(), "forgotten");
    }

    #[test]
    fn dial_failures_are_told_apart() {
        let tcp = |kind| ConnectError::Tcp(std::io::Error::from(kind));
        use std::io::ErrorKind;
        assert_eq!(
            dialed(tcp(ErrorKind::ConnectionRefused)),
            Some(ConnectFailure::Refused)
        );
        assert_eq!(
            dialed(tcp(ErrorKind::HostUnreachable)),
            Some(ConnectFailure::Unreachable)
        );
        assert_eq!(
            dialed(tcp(ErrorKind::TimedOut)),
            Some(ConnectFailure::TimedOut)
        );
        assert_eq!(dialed(ConnectError::Stalled), Some(ConnectFailure::Stalled));
        for broken in [upgrade(true, true, false), upgrade(true, false, true)] {
            assert_eq!(dialed(broken), Some(ConnectFailure::RoomKey));
        }
        assert!(matches!(
            dialed(upgrade(false, false, true)),
            Some(ConnectFailure::Other(_))
        ));
        let found = PeerId::random();
        let wrong = DialError::WrongPeerId {
            obtained: found,
            address: Multiaddr::empty(),
        };
        assert_eq!(
            dial_failure(&wrong),
            Some(ConnectFailure::WrongPeerId { found })
        );
        assert_eq!(
            dial_failure(&DialError::Aborted),
            None,
            "we gave up ourselves"
        );
        let unsupported = DialError::Transport(vec![(
            Multiaddr::empty(),
            TransportError::MultiaddrNotSupported(Multiaddr::empty()),
        )]);
        assert!(matches!(
            dial_failure(&unsupported),
            Some(ConnectFailure::Other(_))
        ));
    }

    #[test]
    fn of_several_addresses_the_most_telling_failure_is_said() {
        let refused = ConnectError::Tcp(std::io::ErrorKind::ConnectionRefused.into());
        let errors = vec![
            (Multiaddr::empty(), transport(refused)),
            (Multiaddr::empty(), transport(upgrade(true, true, false))),
        ];
        assert_eq!(
            dial_failure(&DialError::Transport(errors)),
            Some(ConnectFailure::RoomKey)
        );
    }

    #[test]
    fn a_listener_says_a_garbled_handshake_but_not_a_dialer_giving_up_a_duplicate() {
        let incoming = |error| incoming_failure(&ListenError::Transport(transport(error)));
        assert_eq!(
            incoming(upgrade(true, true, false)),
            Some(ConnectFailure::RoomKey)
        );
        assert_eq!(incoming(upgrade(true, false, true)), None);
        assert_eq!(incoming(upgrade(false, false, true)), None);
        assert_eq!(
            incoming(ConnectError::Stalled),
            Some(ConnectFailure::Stalled)
        );
        assert_eq!(incoming_failure(&ListenError::Aborted), None);
    }
}
