//! A peer's move from a relayed connection to the direct one a hole punch opened, said as one
//! step whatever the order its two halves arrive in.
//!
//! Both sides of a hole punch dial each other. The side whose direct connection comes up first
//! keeps it and closes the relayed one at once; the other side may see that close before its
//! own end of the direct connection is up. For that moment it holds no connection to the peer,
//! which would end the session and say a disconnection, then a new connection. So when the last
//! connection to a peer was relayed and a dial to the peer is under way, the event loop *holds*
//! the peer's departure: the session's name stays shown, and the connection that comes next
//! continues it (said as `DirectConnection` when it is direct). The departure is said when the
//! dials fail instead, or after [`HANDOVER_WAIT`] at the latest.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;
use tokio::time::Instant;

/// Longest a peer's departure is held for a dial under way (the other end of a direct
/// connection is one round trip behind, even on a loaded machine).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// A peer between its relayed connection and the next one.
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    /// When its departure is said if no connection came.
    until: Instant,
    /// The name it was shown as connected with, if it was shown.
    pub shown: Option<String>,
}

/// Dials under way and the peers held for them; see the module docs.
#[derive(Debug, Default)]
pub struct Handovers {
    /// Dials under way, with the peer each is for (each ends in a connection or a failure).
    dialing: HashMap<ConnectionId, PeerId>,
    /// At most one per peer in `dialing`.
    held: HashMap<PeerId, Held>,
}

impl Handovers {
    /// A dial to `peer` started, as `connection`.
    pub fn dialing(&mut self, connection: ConnectionId, peer: PeerId) {
        self.dialing.insert(connection, peer);
    }

    /// The dial `connection` connected.
    pub fn dial_connected(&mut self, connection: ConnectionId) {
        self.dialing.remove(&connection);
    }

    /// The dial `connection` failed: returns the held peer whose departure is due now (no dial
    /// to it is left).
    pub fn dial_failed(&mut self, connection: ConnectionId) -> Option<(PeerId, Held)> {
        let peer = self.dialing.remove(&connection)?;
        if self.is_dialing(&peer) {
            return None;
        }
        self.held.remove_entry(&peer)
    }

    /// Whether the departure of `peer`, whose last connection closed (through a relay if
    /// `relayed`), waits: the connection was relayed and a dial to the peer is under way.
    pub fn waits(&self, peer: &PeerId, relayed: bool) -> bool {
        relayed && self.is_dialing(peer)
    }

    /// Holds the departure of `peer`, shown as `shown` (if it was), for the dial under way.
    pub fn hold(&mut self, peer: PeerId, shown: Option<String>, now: Instant) {
        let until = now + HANDOVER_WAIT;
        self.held.insert(peer, Held { until, shown });
    }

    /// A connection to `peer` came up: the held peer it continues, if any.
    pub fn connected(&mut self, peer: &PeerId) -> Option<Held> {
        self.held.remove(peer)
    }

    /// Held peers whose wait is over, removed: their departure is due.
    pub fn due(&mut self, now: Instant) -> Vec<(PeerId, Held)> {
        let due: Vec<PeerId> = self
            .held
            .iter()
            .filter(|(_, held)| held.until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        due.into_iter()
            .filter_map(|peer| self.held.remove_entry(&peer))
            .collect()
    }

    fn is_dialing(&self, peer: &PeerId) -> bool {
        self.dialing.values().any(|dialed| dialed == peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn alice() -> Option<String> {
        Some("alice".to_owned())
    }

    /// The race the NAT lab found: the peer closed the relayed connection (its direct one was
    /// up) before our end of the direct one was: the departure waits, and the direct
    /// connection continues the session as it was shown.
    #[test]
    fn the_relayed_close_before_the_direct_connection_is_held_until_it_comes() {
        let (peer, now) = (PeerId::random(), Instant::now());
        let mut handovers = Handovers::default();
        handovers.dialing(id(7), peer);
        assert!(
            handovers.waits(&peer, true),
            "held: the hole punch's dial is under way"
        );
        handovers.hold(peer, alice(), now);
        assert!(handovers.due(now + HANDOVER_WAIT / 2).is_empty());
        handovers.dial_connected(id(7));
        let held = handovers.connected(&peer).expect("continues the held peer");
        assert_eq!(held.shown, alice(), "still shown: no new connection said");
        assert!(handovers.connected(&peer).is_none(), "continued once");
        assert!(handovers.due(now + HANDOVER_WAIT * 2).is_empty());
        assert!(handovers.dialing.is_empty(), "nothing left behind");
    }

    #[test]
    fn a_departure_is_said_at_once_without_a_dial_or_after_a_direct_connection() {
        let peer = PeerId::random();
        let mut handovers = Handovers::default();
        assert!(
            !handovers.waits(&peer, true),
            "no dial under way: the peer is gone"
        );
        handovers.dialing(id(1), PeerId::random());
        assert!(
            !handovers.waits(&peer, true),
            "a dial to someone else does not hold it"
        );
        handovers.dialing(id(2), peer);
        assert!(
            !handovers.waits(&peer, false),
            "its direct connection closed: no handover"
        );
        assert!(handovers.waits(&peer, true));
    }

    #[test]
    fn a_held_departure_is_said_when_the_dials_fail_or_the_wait_ends() {
        let (peer, now) = (PeerId::random(), Instant::now());
        let mut handovers = Handovers::default();
        handovers.dialing(id(1), peer);
        handovers.dialing(id(2), peer);
        handovers.hold(peer, alice(), now);
        assert_eq!(handovers.dial_failed(id(1)), None, "another dial is left");
        let (gone, held) = handovers.dial_failed(id(2)).expect("no dial left");
        assert_eq!((gone, held.shown), (peer, alice()));
        assert!(handovers.connected(&peer).is_none(), "no longer held");

        handovers.dialing(id(3), peer);
        handovers.hold(peer, None, now);
        assert!(handovers.due(now + HANDOVER_WAIT / 2).is_empty());
        let due = handovers.due(now + HANDOVER_WAIT);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, peer);
        assert_eq!(handovers.dial_failed(id(3)), None, "said once");
    }
}
