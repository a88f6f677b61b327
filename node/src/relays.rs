//! The relays given with `--relay`: each kept connected (redialed with backoff), a reservation
//! held on it (so peers can reach us through it), and a registration at its rendezvous point in
//! each room's namespace of the day, where peers of the same room are looked up.
//!
//! It reads no clock and touches no swarm: the event loop gives it the time and carries out
//! what it asks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use crate::backoff::Backoff;

/// How a connection reaches a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Straight to the peer (on the LAN, to a public address, or through a hole punched in
    /// the NATs between).
    Direct,
    /// Through a relay (`<relay>/p2p-circuit`): the relay passes the bytes on, which stay
    /// encrypted end to end.
    Relayed,
}

impl Path {
    /// `direct` or `relayed`, as shown and in JSON events.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        }
    }

    /// The path of a connection to or from `address`.
    pub fn of(address: &Multiaddr) -> Path {
        match address
            .iter()
            .any(|part| part == libp2p::multiaddr::Protocol::P2pCircuit)
        {
            true => Path::Relayed,
            false => Path::Direct,
        }
    }
}

/// First wait before redialing a relay, or asking again for a refused reservation.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between redials of a relay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a registration lasts at the rendezvous point (its server's least).
pub const REGISTRATION_TTL: u64 = 2 * 3600;
/// How often registrations are renewed, well before they end.
pub const REREGISTER_INTERVAL: Duration = Duration::from_secs(3600);
/// How often the rendezvous point is asked who is in our rooms, once a reservation is held
/// for a while: at first after 1 s, then doubling up to this (a peer that reserved at the same
/// time is found within seconds, not at the next round).
pub const DISCOVER_INTERVAL: Duration = Duration::from_secs(10);
/// The first wait between lookups, see [`DISCOVER_INTERVAL`].
pub const FIRST_DISCOVER_INTERVAL: Duration = Duration::from_secs(1);
/// Most registrations asked for per namespace and lookup.
pub const DISCOVER_LIMIT: u64 = 256;

#[derive(Debug)]
enum State {
    Waiting { until: Instant },
    Dialing(ConnectionId),
    Connected,
}

/// One relay.
#[derive(Debug)]
pub struct Relay {
    /// As given, ending in `/p2p/<relay's peer id>`.
    pub address: Multiaddr,
    /// The relay's peer id.
    pub peer: PeerId,
    state: State,
    backoff: Backoff,
    /// The listener of our reservation on it, while asked for or held.
    listener: Option<ListenerId>,
    /// No reservation asked for before this (the last one was refused).
    listen_after: Instant,
    /// Whether the reservation is held.
    pub reserved: bool,
    /// When we last registered, and on which UTC day.
    registered: Option<(Instant, u64)>,
    next_discover: Instant,
    discover_backoff: Backoff,
}

/// What the event loop should do for the relays now.
#[derive(Debug, Default)]
pub struct Due {
    /// Dial these relays (index, address, peer).
    pub dial: Vec<(usize, Multiaddr, PeerId)>,
    /// Ask for a reservation on these relays (index, `<relay>/p2p-circuit`).
    pub listen: Vec<(usize, Multiaddr)>,
    /// Register (again) at these relays' rendezvous points, for `day`.
    pub register: Vec<(PeerId, u64)>,
    /// Look up peers at these relays' rendezvous points, for `day` and the day before.
    pub discover: Vec<(PeerId, u64)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Relays {
    relays: Vec<Relay>,
}

/// Today, as days since the Unix epoch (UTC).
pub fn utc_day() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400)
}

/// The relay's peer id in `address` (its last `/p2p/`), if any.
pub fn relay_peer(address: &Multiaddr) -> Option<PeerId> {
    address.iter().fold(None, |last, part| match part {
        Protocol::P2p(peer) => Some(peer),
        _ => last,
    })
}

impl Relays {
    /// The relays at `addresses` (each ending in `/p2p/<peer id>`; others are left out), all
    /// due at `now`.
    pub fn new(addresses: &[Multiaddr], now: Instant) -> Self {
        let relays = addresses
            .iter()
            .filter_map(|address| {
                Some(Relay {
                    address: address.clone(),
                    peer: relay_peer(address)?,
                    state: State::Waiting { until: now },
                    backoff: Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF),
                    listener: None,
                    listen_after: now,
                    reserved: false,
                    registered: None,
                    next_discover: now,
                    discover_backoff: Backoff::new(FIRST_DISCOVER_INTERVAL, DISCOVER_INTERVAL),
                })
            })
            .collect();
        Relays { relays }
    }

    /// Whether any relay was given.
    pub fn any(&self) -> bool {
        !self.relays.is_empty()
    }

    /// The relays' addresses, as given.
    pub fn addresses(&self) -> Vec<Multiaddr> {
        self.relays.iter().map(|r| r.address.clone()).collect()
    }

    /// Whether `peer` is one of the relays.
    pub fn is_relay(&self, peer: &PeerId) -> bool {
        self.relays.iter().any(|r| r.peer == *peer)
    }

    /// `<relay>/p2p-circuit/p2p/<peer>` through every relay holding our reservation: how to
    /// reach `peer` through them (it must hold a reservation there too).
    pub fn circuits_to(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.relays
            .iter()
            .filter(|r| r.reserved)
            .map(|r| {
                r.address
                    .clone()
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::P2p(peer))
            })
            .collect()
    }

    /// What is due at `now`, on UTC day `day`; dials and reservations asked for are marked
    /// as under way.
    pub fn due(&mut self, now: Instant, day: u64) -> Due {
        let mut due = Due::default();
        for (index, relay) in self.relays.iter_mut().enumerate() {
            match relay.state {
                State::Waiting { until } if until <= now => {
                    due.dial.push((index, relay.address.clone(), relay.peer));
                }
                State::Connected => {
                    if relay.listener.is_none() && relay.listen_after <= now {
                        due.listen
                            .push((index, relay.address.clone().with(Protocol::P2pCircuit)));
                    }
                    if relay.reserved {
                        let stale = relay.registered.is_none_or(|(at, on)| {
                            on != day || now.duration_since(at) >= REREGISTER_INTERVAL
                        });
                        if stale {
                            relay.registered = Some((now, day));
                            due.register.push((relay.peer, day));
                        }
                    }
                    if relay.next_discover <= now {
                        relay.next_discover = now + relay.discover_backoff.next();
                        due.discover.push((relay.peer, day));
                    }
                }
                _ => {}
            }
        }
        due
    }

    /// A dial of relay `index` started, as connection `id`.
    pub fn dialing(&mut self, index: usize, id: ConnectionId) {
        if let Some(relay) = self.relays.get_mut(index) {
            relay.state = State::Dialing(id);
        }
    }

    /// A reservation on relay `index` was asked for, as listener `id`.
    pub fn listening(&mut self, index: usize, id: ListenerId) {
        if let Some(relay) = self.relays.get_mut(index) {
            relay.listener = Some(id);
        }
    }

    /// A connection to `peer` is up: if it is a relay, it counts as connected.
    pub fn connected(&mut self, peer: PeerId) {
        for relay in self.relays.iter_mut().filter(|r| r.peer == peer) {
            relay.state = State::Connected;
            relay.backoff.reset();
        }
    }

    /// Dial `id` failed at `now`: returns the relay's address, if it was a relay's.
    pub fn dial_failed(&mut self, id: ConnectionId, now: Instant) -> Option<Multiaddr> {
        let relay = self
            .relays
            .iter_mut()
            .find(|r| matches!(r.state, State::Dialing(at) if at == id))?;
        relay.state = State::Waiting {
            until: now + relay.backoff.next(),
        };
        Some(relay.address.clone())
    }

    /// The last connection to `peer` closed at `now`: a relay is redialed after the backoff,
    /// and its reservation and registrations are gone. Returns its reservation's listener,
    /// to be removed.
    pub fn disconnected(&mut self, peer: PeerId, now: Instant) -> Vec<ListenerId> {
        let mut listeners = Vec::new();
        for relay in self.relays.iter_mut().filter(|r| r.peer == peer) {
            relay.state = State::Waiting {
                until: now + relay.backoff.next(),
            };
            relay.reserved = false;
            relay.registered = None;
            listeners.extend(relay.listener.take());
        }
        listeners
    }

    /// Listener `id` has an address: if it is a reservation's, the reservation is held.
    /// Returns the relay's address.
    pub fn reserved(&mut self, id: ListenerId) -> Option<Multiaddr> {
        let relay = self.relays.iter_mut().find(|r| r.listener == Some(id))?;
        relay.reserved = true;
        relay.next_discover = Instant::now();
        relay.discover_backoff.reset();
        Some(relay.address.clone())
    }

    /// Listener `id` closed at `now`: if it was a reservation's, it is asked for again after
    /// the backoff. Returns the relay's address.
    pub fn reservation_lost(&mut self, id: ListenerId, now: Instant) -> Option<Multiaddr> {
        let relay = self.relays.iter_mut().find(|r| r.listener == Some(id))?;
        relay.listener = None;
        relay.reserved = false;
        relay.registered = None;
        relay.listen_after = now + relay.backoff.next();
        Some(relay.address.clone())
    }

    /// The address of relay `peer`, if it is one.
    pub fn address_of(&self, peer: &PeerId) -> Option<Multiaddr> {
        let relay = self.relays.iter().find(|r| r.peer == *peer)?;
        Some(relay.address.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_address() -> Multiaddr {
        format!("/ip4/198.51.100.1/tcp/4001/p2p/{}", PeerId::random())
            .parse()
            .unwrap()
    }

    #[test]
    fn a_relay_is_dialed_reserved_registered_and_redialed() {
        let now = Instant::now();
        let address = relay_address();
        let peer = relay_peer(&address).unwrap();
        let mut relays = Relays::new(
            &[address.clone(), "/ip4/1.2.3.4/tcp/1".parse().unwrap()],
            now,
        );
        assert!(relays.is_relay(&peer));
        let due = relays.due(now, 7);
        assert_eq!(due.dial.len(), 1, "an address without /p2p/ is no relay");
        let id = ConnectionId::new_unchecked(1);
        relays.dialing(0, id);
        assert!(relays.due(now, 7).dial.is_empty(), "one dial at a time");
        assert_eq!(relays.dial_failed(id, now), Some(address.clone()));
        assert!(relays.due(now, 7).dial.is_empty(), "waits for the backoff");
        assert_eq!(relays.due(now + INITIAL_BACKOFF, 7).dial.len(), 1);
        relays.connected(peer);
        let due = relays.due(now, 7);
        assert_eq!(due.listen.len(), 1);
        assert!(due.register.is_empty(), "no reservation yet");
        let listener = ListenerId::next();
        relays.listening(0, listener);
        assert!(relays.due(now, 7).listen.is_empty());
        assert_eq!(relays.reserved(listener), Some(address.clone()));
        assert_eq!(relays.circuits_to(peer).len(), 1);
        assert_eq!(relays.due(now, 7).register, vec![(peer, 7)]);
        assert!(relays.due(now, 7).register.is_empty(), "registered");
        assert_eq!(relays.due(now, 8).register, vec![(peer, 8)], "a new day");
        assert_eq!(
            relays.due(now + REREGISTER_INTERVAL, 8).register,
            vec![(peer, 8)],
            "renewed before the TTL ends"
        );
        assert_eq!(relays.disconnected(peer, now), vec![listener]);
        assert!(relays.circuits_to(peer).is_empty());
        assert_eq!(relays.due(now + MAX_BACKOFF, 8).dial.len(), 1);
    }

    #[test]
    fn a_refused_reservation_is_asked_for_again_after_a_wait() {
        let now = Instant::now();
        let address = relay_address();
        let mut relays = Relays::new(std::slice::from_ref(&address), now);
        relays.connected(relay_peer(&address).unwrap());
        let listener = ListenerId::next();
        relays.listening(0, listener);
        assert_eq!(relays.reservation_lost(listener, now), Some(address));
        assert!(relays.due(now, 1).listen.is_empty());
        assert_eq!(relays.due(now + INITIAL_BACKOFF, 1).listen.len(), 1);
    }
}
