//! Finding peers on the LAN by user name.
//!
//! mDNS tells us which peer ids are around and where; only a hello tells us the name a peer
//! claims. So the node dials a discovered peer when it is worth it:
//! - in a *room* (no `--peer` given) every discovered peer is joined;
//! - a wanted name pinned to a key resolves to that key's peer id, dialed when discovered;
//! - a wanted name not pinned yet makes the node *probe* discovered peers whose names it does
//!   not know: dial, read the hello, keep the connection only if the name is wanted.
//!
//! After both sides discover each other they tend to dial at once. The peer with the smaller id
//! dials at once and the other waits [`TIE_BREAK_DELAY`], so one connection is the usual
//! outcome; [`keep_connection`] settles the rare duplicate the same way on both sides.
//!
//! What a crowded or hostile LAN can make it hold is bounded: [`MAX_FOUND`] peers with
//! [`MAX_ADDRS`] addresses each, and [`MAX_NAMES`] names.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use p2pchat_protocol::Author;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::{Path, identity};

/// How long the peer with the larger id waits before dialing a discovered peer.
pub const TIE_BREAK_DELAY: Duration = Duration::from_millis(1500);
/// First wait before redialing a discovered peer that failed or dropped.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between redials of a discovered peer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a discovered peer that proved membership of none of our rooms waits before it is
/// dialed again (it may join one of them meanwhile; it dials us then, too).
pub const NO_SHARED_ROOM_RETRY: Duration = Duration::from_secs(300);
/// Most peers found by mDNS kept at once; one found beyond is ignored until others expire (mDNS
/// announces it again).
pub const MAX_FOUND: usize = 4096;
/// Most addresses kept per peer found; a new one beyond replaces the oldest.
pub const MAX_ADDRS: usize = 8;
/// Most names learned from hellos kept at once; one learned beyond makes the node forget the
/// name it learned longest ago of a peer not connected (a stream of strangers cannot grow it).
pub const MAX_NAMES: usize = 4096;

#[derive(Debug)]
struct Found {
    /// Oldest first, at most [`MAX_ADDRS`].
    addrs: Vec<Multiaddr>,
    next_dial: Instant,
    backoff: Backoff,
}

/// A name a peer claimed in its hello.
#[derive(Debug)]
struct Learned {
    name: String,
    /// When it was learned, as a key of [`Discovery::learned_order`].
    order: u64,
}

/// What the node knows of peers on the LAN; see the module docs.
#[derive(Debug)]
pub struct Discovery {
    local: PeerId,
    wanted: Vec<String>,
    room: bool,
    /// At most [`MAX_FOUND`].
    found: HashMap<PeerId, Found>,
    /// At most [`MAX_NAMES`].
    names: HashMap<PeerId, Learned>,
    /// The peers in `names`, by when their name was last learned (oldest first).
    learned_order: BTreeMap<u64, PeerId>,
    /// Names learned so far, for [`Learned::order`].
    learned_count: u64,
}

impl Discovery {
    /// A node with id `local` that wants the peers named `wanted`; `room` joins everyone.
    pub fn new(local: PeerId, wanted: Vec<String>, room: bool) -> Self {
        Self {
            local,
            wanted,
            room,
            found: HashMap::new(),
            names: HashMap::new(),
            learned_order: BTreeMap::new(),
            learned_count: 0,
        }
    }

    /// The names given with `--peer`.
    pub fn wanted(&self) -> &[String] {
        &self.wanted
    }

    /// mDNS found `peer` at `addr`.
    pub fn discovered(&mut self, peer: PeerId, addr: Multiaddr, now: Instant) {
        let delay = if self.local < peer {
            Duration::ZERO
        } else {
            TIE_BREAK_DELAY
        };
        if self.found.len() >= MAX_FOUND && !self.found.contains_key(&peer) {
            tracing::debug!(%peer, "{MAX_FOUND} peers found on the LAN already; ignored for now");
            return;
        }
        let found = self.found.entry(peer).or_insert_with(|| Found {
            addrs: Vec::new(),
            next_dial: now + delay,
            backoff: Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF),
        });
        if !found.addrs.contains(&addr) {
            if found.addrs.len() >= MAX_ADDRS {
                found.addrs.remove(0);
            }
            found.addrs.push(addr);
            // A new address (say, the peer restarted on another port) is worth a prompt try.
            found.next_dial = found.next_dial.min(now + delay);
        }
    }

    /// mDNS's record of `peer` at `addr` expired.
    pub fn expired(&mut self, peer: PeerId, addr: &Multiaddr) {
        if let Some(found) = self.found.get_mut(&peer) {
            found.addrs.retain(|a| a != addr);
            if found.addrs.is_empty() {
                self.found.remove(&peer);
            }
        }
    }

    /// A hello told us the name `peer` claims. Past [`MAX_NAMES`], the name learned longest ago
    /// of a peer not `connected` is forgotten (of any peer, if all are).
    pub fn learned(&mut self, peer: PeerId, name: &str, connected: impl Fn(&PeerId) -> bool) {
        if let Some(old) = self.names.remove(&peer) {
            self.learned_order.remove(&old.order);
        }
        if self.names.len() >= MAX_NAMES {
            let oldest = self
                .learned_order
                .iter()
                .find(|(_, peer)| !connected(peer))
                .or_else(|| self.learned_order.first_key_value())
                .map(|(order, peer)| (*order, *peer));
            if let Some((order, forgotten)) = oldest {
                self.learned_order.remove(&order);
                self.names.remove(&forgotten);
            }
        }
        let order = self.learned_count;
        self.learned_count += 1;
        self.learned_order.insert(order, peer);
        let name = name.to_owned();
        self.names.insert(peer, Learned { name, order });
    }

    /// A connection to `peer` is up: the next redial, if ever needed, starts from a short wait.
    pub fn connected(&mut self, peer: PeerId) {
        if let Some(found) = self.found.get_mut(&peer) {
            found.backoff.reset();
        }
    }

    /// `peer` shares no room with us: it is not dialed again for [`NO_SHARED_ROOM_RETRY`].
    pub fn shares_no_room(&mut self, peer: PeerId, now: Instant) {
        if let Some(found) = self.found.get_mut(&peer) {
            found.next_dial = found.next_dial.max(now + NO_SHARED_ROOM_RETRY);
        }
    }

    /// `peer` is not dialed again before `until` (found at a rendezvous point, it holds no
    /// reservation at the relay: long gone, most likely).
    pub fn hold_off(&mut self, peer: PeerId, until: Instant) {
        if let Some(found) = self.found.get_mut(&peer) {
            found.next_dial = found.next_dial.max(until);
        }
    }

    /// Whether we want a connection to `peer`, who claims `name` (if known), given the pins.
    pub fn wants(&self, peer: &PeerId, pinned: impl Fn(&str) -> Option<Author>) -> bool {
        if self.room {
            return true;
        }
        let author = identity::author_of(peer);
        match self.names.get(peer).map(|learned| &learned.name) {
            Some(name) => {
                self.wanted.contains(name) && pinned(name).is_none_or(|owner| Some(owner) == author)
            }
            None => self.wanted.iter().any(|name| match pinned(name) {
                Some(owner) => Some(owner) == author,
                None => true, // an unpinned wanted name: probe to learn who this is
            }),
        }
    }

    /// Dials for discovered peers that are due, wanted and not `connected`.
    pub fn due(
        &mut self,
        now: Instant,
        connected: impl Fn(&PeerId) -> bool,
        pinned: impl Fn(&str) -> Option<Author>,
    ) -> Vec<DialOpts> {
        let wanted: Vec<PeerId> = self
            .found
            .iter()
            .filter(|(peer, found)| found.next_dial <= now && !connected(peer))
            .map(|(peer, _)| *peer)
            .filter(|peer| self.wants(peer, &pinned))
            .collect();
        wanted
            .into_iter()
            .filter_map(|peer| {
                let found = self.found.get_mut(&peer)?;
                found.next_dial = now + found.backoff.next();
                Some(
                    DialOpts::peer_id(peer)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .addresses(found.addrs.clone())
                        .build(),
                )
            })
            .collect()
    }

    /// Wanted names that no connected peer answers to, for "looking for …" notices.
    pub fn missing_names<'a>(&'a self, connected_names: &[String]) -> Vec<&'a str> {
        self.wanted
            .iter()
            .filter(|name| !connected_names.contains(name))
            .map(String::as_str)
            .collect()
    }
}

/// Whether a connection counts as dialed by us in [`keep_connection`]. Both sides of a hole
/// punch dial (DCUtR): the connection counts as dialed by the side that kept its role, not by
/// the one that overrode it to act as the listener, so the two sides agree on who dialed it.
pub fn dialed_by_us(endpoint: &ConnectedPoint) -> bool {
    matches!(
        endpoint,
        ConnectedPoint::Dialer {
            role_override: Endpoint::Dialer,
            ..
        }
    )
}

/// One open connection to a peer, as [`keep_link`] weighs it.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub id: ConnectionId,
    /// Whether we dialed it ([`dialed_by_us`]).
    pub dialed: bool,
    pub path: Path,
    /// Whether it runs over QUIC (else over TCP, or in memory).
    pub quic: bool,
}

/// Which of several connections to one peer both sides keep: a direct one over a relayed one,
/// then one over QUIC over one over TCP (both sides see the same path and transport of a
/// connection, not always the same order: a hole punch tried over both may give each side
/// another connection first), then as [`keep_connection`]. `links` are in the order they were
/// established.
pub fn keep_link(local: PeerId, remote: PeerId, links: &[Link]) -> Option<ConnectionId> {
    let best = links
        .iter()
        .map(|link| (link.path == Path::Direct, link.quic))
        .max()?;
    let connections: Vec<(ConnectionId, bool)> = links
        .iter()
        .filter(|link| (link.path == Path::Direct, link.quic) == best)
        .map(|link| (link.id, link.dialed))
        .collect();
    keep_connection(local, remote, &connections)
}

/// Which of several connections to one peer both sides keep: the oldest one dialed by the peer
/// with the smaller id, else the oldest. `connections` are in the order they were established,
/// each with whether we dialed it.
pub fn keep_connection(
    local: PeerId,
    remote: PeerId,
    connections: &[(ConnectionId, bool)],
) -> Option<ConnectionId> {
    let we_should_dial = local < remote;
    connections
        .iter()
        .find(|(_, we_dialed)| *we_dialed == we_should_dial)
        .or_else(|| connections.first())
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pchat_protocol::SigningKey;

    fn peer(seed: u8) -> PeerId {
        identity::keypair(&SigningKey::from_bytes(&[seed; 32]))
            .public()
            .to_peer_id()
    }

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()
    }

    fn no_pins(_: &str) -> Option<Author> {
        None
    }

    #[test]
    fn a_room_joins_everyone_and_the_larger_id_waits() {
        let (a, b) = (peer(1), peer(2));
        let (small, large) = if a < b { (a, b) } else { (b, a) };
        let now = Instant::now();
        let mut at_small = Discovery::new(small, vec![], true);
        let mut at_large = Discovery::new(large, vec![], true);
        at_small.discovered(large, addr(1), now);
        at_large.discovered(small, addr(2), now);
        assert_eq!(
            at_small.due(now, |_| false, no_pins).len(),
            1,
            "smaller id dials at once"
        );
        assert!(
            at_large.due(now, |_| false, no_pins).is_empty(),
            "larger id waits"
        );
        assert!(
            at_large
                .due(now + TIE_BREAK_DELAY, |_| true, no_pins)
                .is_empty(),
            "not if connected by then"
        );
        assert_eq!(
            at_large
                .due(now + TIE_BREAK_DELAY, |_| false, no_pins)
                .len(),
            1,
            "but if not, it dials"
        );
    }

    #[test]
    fn an_unpinned_wanted_name_probes_unknown_peers_only() {
        let (me, stranger) = (peer(1), peer(2));
        let mut discovery = Discovery::new(me, vec!["bob".into()], false);
        assert!(discovery.wants(&stranger, no_pins), "unknown name: probe");
        discovery.learned(stranger, "carol", |_| false);
        assert!(
            !discovery.wants(&stranger, no_pins),
            "known to be someone else"
        );
        discovery.learned(stranger, "bob", |_| false);
        assert!(discovery.wants(&stranger, no_pins));
    }

    #[test]
    fn names_learned_are_bounded_forgetting_the_oldest_not_connected() {
        let me = peer(1);
        let (friend, old_stranger) = (peer(2), peer(3));
        let mut discovery = Discovery::new(me, vec!["bob".into()], false);
        let connected = |p: &PeerId| *p == friend;
        discovery.learned(friend, "dave", connected);
        discovery.learned(old_stranger, "carol", connected);
        for _ in 0..MAX_NAMES {
            discovery.learned(PeerId::random(), "mallory", connected);
        }
        assert_eq!(discovery.names.len(), MAX_NAMES);
        assert_eq!(discovery.learned_order.len(), MAX_NAMES);
        assert_eq!(
            discovery.names.get(&friend).map(|l| l.name.as_str()),
            Some("dave"),
            "a connected peer's name is kept"
        );
        assert!(
            discovery.wants(&old_stranger, no_pins),
            "the oldest stranger's name was forgotten: probed again"
        );
        discovery.learned(friend, "dave", connected);
        discovery.learned(old_stranger, "carol", |_| false);
        assert!(discovery.names.contains_key(&friend), "learned again");
        assert!(!discovery.wants(&old_stranger, no_pins));
        assert_eq!(discovery.names.len(), MAX_NAMES);
    }

    #[test]
    fn peers_found_and_their_addresses_are_bounded() {
        let (small, large) = {
            let (a, b) = (peer(1), peer(2));
            if a < b { (a, b) } else { (b, a) }
        };
        let now = Instant::now();
        let mut discovery = Discovery::new(small, vec![], true);
        for port in 1..=MAX_ADDRS as u16 + 2 {
            discovery.discovered(large, addr(port), now);
        }
        let addrs = &discovery.found[&large].addrs;
        assert_eq!(addrs.len(), MAX_ADDRS);
        assert_eq!(
            addrs.last(),
            Some(&addr(MAX_ADDRS as u16 + 2)),
            "newest kept"
        );
        assert!(!addrs.contains(&addr(1)), "oldest gone");
        for _ in 1..MAX_FOUND {
            discovery.discovered(PeerId::random(), addr(1), now);
        }
        let late = PeerId::random();
        discovery.discovered(late, addr(1), now);
        assert_eq!(discovery.found.len(), MAX_FOUND);
        assert!(!discovery.found.contains_key(&late), "beyond the bound");
        discovery.expired(large, &addr(MAX_ADDRS as u16 + 2));
        discovery.expired(large, &addr(MAX_ADDRS as u16 + 1));
        assert!(discovery.found.contains_key(&large), "other addresses left");
        discovery.discovered(late, addr(1), now);
        assert!(!discovery.found.contains_key(&late), "still full");
        for port in 3..=MAX_ADDRS as u16 {
            discovery.expired(large, &addr(port));
        }
        discovery.discovered(late, addr(1), now);
        assert!(discovery.found.contains_key(&late), "room once one expired");
    }

    #[test]
    fn a_pinned_name_resolves_only_to_its_key() {
        let (me, bob, impostor) = (peer(1), peer(2), peer(3));
        let bob_author = identity::author_of(&bob).unwrap();
        let pins = |name: &str| (name == "bob").then_some(bob_author);
        let mut discovery = Discovery::new(me, vec!["bob".into()], false);
        assert!(discovery.wants(&bob, pins));
        assert!(
            !discovery.wants(&impostor, pins),
            "no probing once bob is pinned"
        );
        discovery.learned(impostor, "bob", |_| false);
        assert!(
            !discovery.wants(&impostor, pins),
            "claiming the name is not enough"
        );
    }

    #[test]
    fn failed_dials_back_off_and_new_addresses_retry_promptly() {
        let (small, large) = {
            let (a, b) = (peer(1), peer(2));
            if a < b { (a, b) } else { (b, a) }
        };
        let now = Instant::now();
        let mut discovery = Discovery::new(small, vec![], true);
        discovery.discovered(large, addr(1), now);
        assert_eq!(discovery.due(now, |_| false, no_pins).len(), 1);
        assert!(
            discovery
                .due(now + INITIAL_BACKOFF / 2, |_| false, no_pins)
                .is_empty()
        );
        assert_eq!(
            discovery
                .due(now + INITIAL_BACKOFF, |_| false, no_pins)
                .len(),
            1
        );
        discovery.discovered(large, addr(2), now + INITIAL_BACKOFF);
        assert_eq!(
            discovery
                .due(now + INITIAL_BACKOFF, |_| false, no_pins)
                .len(),
            1,
            "new address"
        );
        discovery.expired(large, &addr(1));
        discovery.expired(large, &addr(2));
        assert!(
            discovery
                .due(now + MAX_BACKOFF * 2, |_| false, no_pins)
                .is_empty(),
            "gone from the LAN"
        );
    }

    #[test]
    fn a_peer_sharing_no_room_is_not_dialed_again_for_a_while() {
        let (ours, theirs) = (peer(1), peer(2));
        let now = Instant::now();
        let mut discovery = Discovery::new(ours, vec![], true);
        discovery.discovered(theirs, addr(1), now);
        let soon = now + TIE_BREAK_DELAY;
        assert_eq!(discovery.due(soon, |_| false, no_pins).len(), 1);
        discovery.shares_no_room(theirs, soon);
        let later = soon + MAX_BACKOFF * 2;
        assert!(discovery.due(later, |_| false, no_pins).is_empty());
        let retry = soon + NO_SHARED_ROOM_RETRY;
        assert_eq!(discovery.due(retry, |_| false, no_pins).len(), 1);
    }

    #[test]
    fn both_sides_keep_the_same_connection() {
        let (a, b) = (peer(1), peer(2));
        // Two physical connections: P dialed by a, Q dialed by b. Each side has its own ids.
        let id = ConnectionId::new_unchecked;
        let (a_p, a_q, b_p, b_q) = (id(1), id(2), id(3), id(4));
        for (a_order, b_order) in [
            ([(a_p, true), (a_q, false)], [(b_q, true), (b_p, false)]),
            ([(a_q, false), (a_p, true)], [(b_p, false), (b_q, true)]),
        ] {
            let kept_at_a = keep_connection(a, b, &a_order).unwrap();
            let kept_at_b = keep_connection(b, a, &b_order).unwrap();
            assert_eq!(
                kept_at_a == a_p,
                kept_at_b == b_p,
                "both keep P or both keep Q"
            );
        }
    }

    /// The race of a hole punch over both transports: each side's dial kept whichever came
    /// first, so a holds P (QUIC) only, while b holds Q (TCP, dialed with its role
    /// overridden) and then P (a's, taken in as a listener). Both sides keep P.
    #[test]
    fn both_sides_keep_the_same_hole_punched_connection() {
        let (a, b) = (peer(1), peer(2));
        let address = addr(1);
        let dialer = |role_override| ConnectedPoint::Dialer {
            address: address.clone(),
            role_override,
            port_use: libp2p::core::transport::PortUse::Reuse,
        };
        let listened = ConnectedPoint::Listener {
            local_addr: address.clone(),
            send_back_addr: address.clone(),
        };
        // DCUtR: one side dials as itself, the other overrides its role to the listener's.
        let (keeps_role, overrides) = (dialer(Endpoint::Dialer), dialer(Endpoint::Listener));
        assert!(dialed_by_us(&keeps_role) && !dialed_by_us(&overrides));
        assert!(!dialed_by_us(&listened));
        let id = ConnectionId::new_unchecked;
        let link = |id, endpoint: &ConnectedPoint, quic| Link {
            id,
            dialed: dialed_by_us(endpoint),
            path: Path::Direct,
            quic,
        };
        let (a_p, b_q, b_p) = (id(1), id(2), id(3));
        for (a, b) in [(a, b), (b, a)] {
            let at_a = [link(a_p, &keeps_role, true)];
            let at_b = [link(b_q, &overrides, false), link(b_p, &listened, true)];
            assert_eq!(keep_link(a, b, &at_a), Some(a_p));
            assert_eq!(keep_link(b, a, &at_b), Some(b_p), "the one a keeps too");
        }
        let relayed = Link {
            path: Path::Relayed,
            ..link(id(4), &keeps_role, true)
        };
        let over_tcp = link(id(5), &listened, false);
        assert_eq!(
            keep_link(a, b, &[relayed, over_tcp]),
            Some(id(5)),
            "a direct one over a relayed one"
        );
    }

    #[test]
    fn looking_for_lists_names_not_connected() {
        let discovery = Discovery::new(peer(1), vec!["bob".into(), "carol".into()], false);
        assert_eq!(discovery.missing_names(&["bob".into()]), vec!["carol"]);
    }
}
