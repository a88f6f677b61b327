//! Choosing one source per log, so that in a mesh each entry arrives about once.
//!
//! Every connected peer pushes whatever it thinks we lack; with several peers that is several
//! copies of everything. As in Secure Scuttlebutt's epidemic broadcast trees, a node picks one
//! *source* per log (preferring the log's author when connected to them, else the first peer
//! that offered it) and asks every other peer to *skip* that log: they send notes of how far
//! they hold it instead of the entries. If a note shows a peer ahead of us for longer than
//! [`STALL_TIMEOUT`], the source has stalled and that peer becomes the source; if the source
//! leaves, a peer that was skipping the log takes over. The [`Router`] only decides; the node
//! sends the resulting skip lists ([`crate::wire::Request::Skip`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::entry::Author;

/// How long a peer may note that it is ahead of us before we switch to it as the source.
pub const STALL_TIMEOUT: Duration = Duration::from_millis(1000);

#[derive(Debug)]
struct Stall<P> {
    peer: P,
    seq: u64,
    since: Instant,
}

/// Per-log source choice, from which each peer's skip list follows: every log whose source is
/// another peer. `P` identifies a peer.
#[derive(Debug)]
pub struct Router<P> {
    own: Author,
    /// Accepted peers, with their own logs.
    peers: BTreeMap<P, Author>,
    sources: BTreeMap<Author, P>,
    stalls: BTreeMap<Author, Stall<P>>,
}

impl<P: Copy + Ord> Router<P> {
    /// A router for the node whose own log is `own` (never routed: it is written here).
    pub fn new(own: Author) -> Self {
        Self {
            own,
            peers: BTreeMap::new(),
            sources: BTreeMap::new(),
            stalls: BTreeMap::new(),
        }
    }

    /// The logs `peer` is asked to skip: those with another source.
    pub fn skip_list(&self, peer: &P) -> Vec<Author> {
        self.sources
            .iter()
            .filter(|(_, source)| *source != peer)
            .map(|(author, _)| *author)
            .collect()
    }

    /// The chosen source of `author`'s log, if any.
    pub fn source(&self, author: &Author) -> Option<P> {
        self.sources.get(author).copied()
    }

    /// `peer`, whose own log is `peer_author`, joined and announced logs `announced`.
    /// Returns the peers whose skip lists changed (the new peer's always counts as changed
    /// when it is not empty).
    pub fn joined(
        &mut self,
        peer: P,
        peer_author: Author,
        announced: impl IntoIterator<Item = Author>,
    ) -> Vec<P> {
        self.peers.insert(peer, peer_author);
        let mut changed = BTreeSet::new();
        for author in announced.into_iter().chain([peer_author]) {
            changed.extend(self.offer(peer, peer_author, author));
        }
        if !self.skip_list(&peer).is_empty() {
            changed.insert(peer);
        }
        changed.into_iter().collect()
    }

    /// `peer` (whose own log is `peer_author`) sent entries of `author`'s log.
    /// Returns the peers whose skip lists changed.
    pub fn received(&mut self, peer: P, peer_author: Author, author: Author) -> Vec<P> {
        self.offer(peer, peer_author, author)
    }

    /// `peer` offers `author`'s log: it becomes the source if the log has none, or if `peer`
    /// is the author in person (who beats any relay).
    fn offer(&mut self, peer: P, peer_author: Author, author: Author) -> Vec<P> {
        if author == self.own {
            return Vec::new();
        }
        match self.sources.get(&author).copied() {
            None => {
                self.sources.insert(author, peer);
                self.peers.keys().copied().filter(|p| *p != peer).collect()
            }
            Some(source) if source != peer && author == peer_author => self.switch(author, peer),
            Some(_) => Vec::new(),
        }
    }

    /// Makes `peer` the source of `author`'s log; returns the two peers whose lists changed.
    fn switch(&mut self, author: Author, peer: P) -> Vec<P> {
        match self.sources.insert(author, peer) {
            Some(old) if old != peer && self.peers.contains_key(&old) => vec![old, peer],
            Some(old) if old == peer => Vec::new(),
            _ => vec![peer],
        }
    }

    /// `peer` noted holding `author`'s log up to `seq`, while we hold `ours`.
    /// A log whose source is its author in person never stalls: no relay can be ahead of the
    /// author, so a note saying so is a lie (or a fork) and changes nothing.
    pub fn noted(&mut self, peer: P, author: Author, seq: u64, ours: u64, now: Instant) {
        if author == self.own || seq <= ours || self.sources.get(&author) == Some(&peer) {
            return;
        }
        if self.sourced_by_author(&author) {
            return;
        }
        let stall = self.stalls.entry(author).or_insert(Stall {
            peer,
            seq,
            since: now,
        });
        // A later note from the same peer raises the mark but keeps the clock running.
        if stall.peer == peer {
            stall.seq = stall.seq.max(seq);
        }
    }

    /// Switches the source of logs whose source stalled (a peer noted being ahead for longer
    /// than [`STALL_TIMEOUT`] and we are still behind). `ours` gives our head of a log.
    /// Returns the peers whose skip lists changed.
    pub fn check_stalls(&mut self, now: Instant, ours: impl Fn(&Author) -> u64) -> Vec<P> {
        let due: Vec<(Author, P, u64)> = self
            .stalls
            .iter()
            .filter(|(_, stall)| now.duration_since(stall.since) >= STALL_TIMEOUT)
            .map(|(author, stall)| (*author, stall.peer, stall.seq))
            .collect();
        let mut changed = BTreeSet::new();
        for (author, peer, seq) in due {
            self.stalls.remove(&author);
            if ours(&author) < seq && self.peers.contains_key(&peer) {
                changed.extend(self.switch(author, peer));
            }
        }
        changed.into_iter().collect()
    }

    /// Whether `author`'s log comes from the author in person.
    fn sourced_by_author(&self, author: &Author) -> bool {
        self.sources
            .get(author)
            .and_then(|source| self.peers.get(source))
            == Some(author)
    }

    /// `peer` left: each log it was the source of moves to another peer (the smallest id; a
    /// stalled one is replaced in turn). Returns the peers whose skip lists changed.
    ///
    /// Logs it was the source of that `held` says we do not hold are forgotten instead: they
    /// were only claims, and the next offer routes them again.
    pub fn left(&mut self, peer: P, held: impl Fn(&Author) -> bool) -> Vec<P> {
        self.peers.remove(&peer);
        self.stalls.retain(|_, stall| stall.peer != peer);
        let orphans: Vec<Author> = self
            .sources
            .iter()
            .filter(|(_, s)| **s == peer)
            .map(|(a, _)| *a)
            .collect();
        let (orphans, claims): (Vec<Author>, Vec<Author>) =
            orphans.into_iter().partition(|author| held(author));
        for author in claims {
            self.sources.remove(&author);
        }
        let heir = self.peers.keys().next().copied();
        for author in &orphans {
            match heir {
                Some(heir) => self.sources.insert(*author, heir),
                None => self.sources.remove(author),
            };
        }
        match heir {
            Some(heir) if !orphans.is_empty() => vec![heir],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(n: u8) -> Author {
        Author::from_bytes([n; 32])
    }

    const ME: u8 = 0;

    #[test]
    fn the_first_offer_is_the_source_and_everyone_else_skips_it() {
        let mut router = Router::new(author(ME));
        assert!(router.joined(1, author(1), [author(9)]).is_empty());
        assert_eq!(router.source(&author(9)), Some(1));
        assert_eq!(
            router.joined(2, author(2), [author(9), author(ME)]),
            vec![1, 2]
        );
        assert_eq!(
            router.skip_list(&2),
            vec![author(1), author(9)],
            "logs sourced elsewhere"
        );
        assert_eq!(router.skip_list(&1), vec![author(2)]);
        assert!(
            router.received(2, author(2), author(9)).is_empty(),
            "already sourced"
        );
        assert!(
            !router.skip_list(&1).contains(&author(ME)),
            "our own log is never routed"
        );
    }

    #[test]
    fn the_author_in_person_becomes_the_source() {
        let mut router = Router::new(author(ME));
        router.joined(1, author(1), [author(2)]);
        assert_eq!(router.source(&author(2)), Some(1));
        router.joined(2, author(2), []);
        assert_eq!(router.source(&author(2)), Some(2));
        assert_eq!(router.skip_list(&1), vec![author(2)]);
        assert_eq!(router.skip_list(&2), vec![author(1)]);
    }

    #[test]
    fn a_stalled_source_is_replaced_by_a_peer_that_is_ahead() {
        let mut router = Router::new(author(ME));
        let t0 = Instant::now();
        router.joined(1, author(1), [author(9)]);
        router.joined(2, author(2), [author(9)]);
        router.noted(2, author(9), 10, 4, t0);
        assert!(
            router
                .check_stalls(t0 + STALL_TIMEOUT / 2, |_| 4)
                .is_empty(),
            "not yet"
        );
        assert_eq!(router.check_stalls(t0 + STALL_TIMEOUT, |_| 4), vec![1, 2]);
        assert_eq!(router.source(&author(9)), Some(2));
        assert!(!router.skip_list(&2).contains(&author(9)));
        assert!(router.skip_list(&1).contains(&author(9)));
    }

    #[test]
    fn later_notes_raise_the_mark_and_own_log_is_never_noted() {
        let mut router = Router::new(author(ME));
        let t0 = Instant::now();
        router.joined(1, author(1), [author(9)]);
        router.joined(2, author(2), [author(9)]);
        router.noted(2, author(9), 5, 4, t0);
        router.noted(2, author(9), 10, 4, t0 + STALL_TIMEOUT / 2);
        // We caught up with the first note but not the second: the source has stalled.
        assert_eq!(router.check_stalls(t0 + STALL_TIMEOUT, |_| 5), vec![1, 2]);
        router.noted(2, author(ME), 99, 1, t0);
        assert_eq!(router.source(&author(ME)), None);
        assert!(
            router
                .check_stalls(t0 + STALL_TIMEOUT * 3, |_| 1)
                .is_empty()
        );
    }

    #[test]
    fn a_note_we_caught_up_with_meanwhile_changes_nothing() {
        let mut router = Router::new(author(ME));
        let t0 = Instant::now();
        router.joined(1, author(1), [author(9)]);
        router.joined(2, author(2), [author(9)]);
        router.noted(2, author(9), 10, 4, t0);
        assert!(router.check_stalls(t0 + STALL_TIMEOUT, |_| 10).is_empty());
        assert_eq!(router.source(&author(9)), Some(1));
    }

    #[test]
    fn a_relay_noting_it_is_ahead_of_the_author_in_person_changes_nothing() {
        let mut router = Router::new(author(ME));
        let t0 = Instant::now();
        router.joined(1, author(1), []);
        router.joined(2, author(2), [author(1)]);
        assert_eq!(router.source(&author(1)), Some(1));
        router.noted(2, author(1), u64::MAX, 4, t0);
        assert!(
            router
                .check_stalls(t0 + STALL_TIMEOUT * 2, |_| 4)
                .is_empty()
        );
        assert_eq!(router.source(&author(1)), Some(1));
    }

    #[test]
    fn when_the_source_leaves_another_peer_takes_over() {
        let mut router = Router::new(author(ME));
        router.joined(1, author(1), [author(9)]);
        router.joined(2, author(2), [author(9)]);
        assert_eq!(router.left(1, |_| true), vec![2]);
        assert_eq!(router.source(&author(9)), Some(2));
        assert!(router.skip_list(&2).is_empty());
    }
}
