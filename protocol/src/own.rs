//! The rule that keeps a node from forking its own log: never append while the store may be
//! behind what this key already wrote.
//!
//! A node appends seq `head + 1` on top of its store's head. If the store lost entries (deleted,
//! restored from an older backup, a truncated journal), that seq and its predecessors were
//! already signed once, and peers hold them: a new entry there is a fork, every peer freezes
//! the log, and nothing the user types reaches anyone. So the node keeps an [`OwnMark`] (the
//! own log's last seq and hash) outside the store, and [`own_log`] compares it, the store and
//! what connected peers claim to hold of the own log. Appends wait until the answer is
//! [`OwnLog::Current`].

use crate::entry::Hash;

/// How far the own log went: its last seq and that entry's hash (`None` at seq 0, before the
/// first entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnMark {
    /// The own log's last seq (0: nothing written yet).
    pub seq: u64,
    /// The hash of the entry at `seq`.
    pub hash: Option<Hash>,
}

/// Whether the node may append to its own log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnLog {
    /// The store holds the own log at least as far as it ever went: appends go on top.
    Current,
    /// The store lacks entries of the own log that were written before; appends wait until
    /// they are fetched back. `expected` is the seq to reach, `None` when unknown (a store
    /// that is empty while the key is not new, with no mark: a data directory of an older
    /// release whose store was lost).
    Behind {
        /// The seq the store must reach.
        expected: Option<u64>,
    },
    /// The store holds a different entry at a seq the own log already had, or a fork proof
    /// of the own log: two entries signed at one seq. Nothing more can be appended safely.
    Forked,
}

/// What the own log's state is, given:
/// - `mark`: the recorded [`OwnMark`], `None` when there is none (an older release's data
///   directory: then the store's head serves as the mark, unless the store is empty);
/// - `store_head`: the store's head seq of the own log;
/// - `stored_at_mark`: the hash of the stored own entry at `mark.seq`, if stored;
/// - `forked`: whether the store holds a fork proof of the own log;
/// - `claimed`: the highest seq of the own log a connected peer claims to hold.
pub fn own_log(
    mark: Option<&OwnMark>,
    store_head: u64,
    stored_at_mark: Option<Hash>,
    forked: bool,
    claimed: u64,
) -> OwnLog {
    if forked {
        return OwnLog::Forked;
    }
    match mark {
        None if store_head == 0 => return OwnLog::Behind { expected: None },
        None => {}
        Some(mark) if store_head < mark.seq => {
            return OwnLog::Behind {
                expected: Some(mark.seq.max(claimed)),
            };
        }
        Some(mark) if mark.seq > 0 && stored_at_mark != mark.hash => return OwnLog::Forked,
        Some(_) => {}
    }
    if claimed > store_head {
        return OwnLog::Behind {
            expected: Some(claimed),
        };
    }
    OwnLog::Current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seq: u64, byte: u8) -> OwnMark {
        OwnMark {
            seq,
            hash: (seq > 0).then(|| Hash::from_bytes([byte; 32])),
        }
    }

    #[test]
    fn a_store_at_or_past_its_mark_is_current() {
        let new = mark(0, 0);
        assert_eq!(own_log(Some(&new), 0, None, false, 0), OwnLog::Current);
        let m = mark(31, 7);
        assert_eq!(own_log(Some(&m), 31, m.hash, false, 0), OwnLog::Current);
        // A crash between the store's fsync and the mark's write leaves the store ahead.
        assert_eq!(own_log(Some(&m), 32, m.hash, false, 31), OwnLog::Current);
    }

    #[test]
    fn a_store_behind_its_mark_waits() {
        let m = mark(31, 7);
        let behind = OwnLog::Behind { expected: Some(31) };
        assert_eq!(own_log(Some(&m), 0, None, false, 0), behind, "deleted");
        assert_eq!(own_log(Some(&m), 20, None, false, 0), behind, "lost tail");
        assert_eq!(
            own_log(Some(&m), 20, None, false, 40),
            OwnLog::Behind { expected: Some(40) }
        );
    }

    #[test]
    fn an_older_release_is_trusted_unless_its_store_is_empty() {
        assert_eq!(own_log(None, 12, None, false, 0), OwnLog::Current);
        assert_eq!(
            own_log(None, 0, None, false, 0),
            OwnLog::Behind { expected: None }
        );
        // Once a peer gave the log back, the store's head serves.
        assert_eq!(own_log(None, 5, None, false, 5), OwnLog::Current);
    }

    #[test]
    fn a_peer_holding_more_of_the_own_log_makes_it_wait() {
        let m = mark(3, 7);
        assert_eq!(
            own_log(Some(&m), 3, m.hash, false, 8),
            OwnLog::Behind { expected: Some(8) }
        );
        assert_eq!(
            own_log(None, 3, None, false, 8),
            OwnLog::Behind { expected: Some(8) }
        );
    }

    #[test]
    fn another_entry_at_the_mark_or_a_fork_proof_is_a_fork() {
        let m = mark(31, 7);
        let other = Some(Hash::from_bytes([8; 32]));
        assert_eq!(own_log(Some(&m), 31, other, false, 0), OwnLog::Forked);
        assert_eq!(own_log(Some(&m), 40, other, false, 0), OwnLog::Forked);
        assert_eq!(own_log(Some(&m), 31, m.hash, true, 0), OwnLog::Forked);
    }
}
