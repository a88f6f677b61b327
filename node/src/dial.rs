//! Keeping connections to the peers the user asked for, redialing with backoff.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

/// First wait before redialing a lost or failed peer.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between redials.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);

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
    backoff: Duration,
}

/// The addresses the user gave with `--peer`, each kept connected.
#[derive(Debug, Default)]
pub struct Redialer {
    targets: Vec<Target>,
}

impl Redialer {
    /// Adds an address to keep connected; it is dialed at the next [`Redialer::due`].
    pub fn add(&mut self, addr: Multiaddr) {
        let peer = addr.iter().find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        let state = State::Waiting {
            until: Instant::now(),
        };
        self.targets.push(Target {
            addr,
            peer,
            state,
            backoff: INITIAL_BACKOFF,
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

    /// A connection to `peer` is up (made by us or by them).
    pub fn connected(&mut self, peer: PeerId, connection: ConnectionId) {
        for target in &mut self.targets {
            let ours = matches!(target.state, State::Dialing(id) if id == connection);
            if ours || target.peer == Some(peer) {
                target.peer = Some(peer);
                target.state = State::Connected(peer);
                target.backoff = INITIAL_BACKOFF;
            }
        }
    }

    /// Whether `peer` is one of the targets (known by its address's `/p2p/` or by connecting).
    pub fn is_target(&self, peer: &PeerId) -> bool {
        self.targets
            .iter()
            .any(|target| target.peer.as_ref() == Some(peer))
    }

    /// A dial we made failed; try again after the backoff, doubled for next time.
    pub fn dial_failed(&mut self, connection: ConnectionId) {
        for target in &mut self.targets {
            if matches!(target.state, State::Dialing(id) if id == connection) {
                target.state = State::Waiting {
                    until: Instant::now() + target.backoff,
                };
                target.backoff = (target.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// The last connection to `peer` closed; redial soon.
    pub fn disconnected(&mut self, peer: PeerId) {
        for target in &mut self.targets {
            if matches!(target.state, State::Connected(p) if p == peer) {
                target.state = State::Waiting {
                    until: Instant::now() + target.backoff,
                };
                target.backoff = (target.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_dials_back_off_and_success_resets() {
        let mut redialer = Redialer::default();
        redialer.add("/ip4/127.0.0.1/tcp/1".parse().unwrap());
        let now = Instant::now();
        let first = redialer.due(now);
        assert_eq!(first.len(), 1);
        assert!(
            redialer.due(now).is_empty(),
            "no second dial while one is pending"
        );
        redialer.dial_failed(first[0].connection_id());
        assert!(redialer.due(now).is_empty(), "waits for the backoff");
        let retry = redialer.due(now + INITIAL_BACKOFF + Duration::from_millis(1));
        assert_eq!(retry.len(), 1);
        redialer.dial_failed(retry[0].connection_id());
        assert!(
            redialer.due(now + INITIAL_BACKOFF * 2).is_empty(),
            "backoff doubled"
        );
        let peer = PeerId::random();
        let again = redialer.due(now + INITIAL_BACKOFF * 4);
        redialer.connected(peer, again[0].connection_id());
        assert_eq!(redialer.targets[0].backoff, INITIAL_BACKOFF);
        redialer.disconnected(peer);
        assert_eq!(
            redialer.due(Instant::now() + INITIAL_BACKOFF * 2).len(),
            1,
            "redials after a drop"
        );
    }
}
