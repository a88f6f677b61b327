//! What the replication core and the insert planner need from a store of logs.
//!
//! The fjall store (`p2pchat-storage`) and [`MemoryStore`] implement [`Logs`]. Writing is not
//! part of the trait: the core asks its driver to store a batch (`Output::Store`), the driver
//! plans the insert with [`plan_insert`], commits the plan atomically, syncs, and reports the
//! [`Inserted`] outcome back.

use bytes::Bytes;

use crate::entry::{Author, Entry};
use crate::validate::ValidationError;

/// Reads of a store of logs.
pub trait Logs {
    /// A failed read.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The highest seq held of `author`'s log (0: none).
    fn head_seq(&self, author: &Author) -> u64;

    /// Whether `author` forked their log (nothing more of it is accepted or relayed).
    fn is_frozen(&self, author: &Author) -> bool;

    /// The entry at `seq` of `author`'s log, if held.
    fn entry(&self, author: &Author, seq: u64) -> Result<Option<Entry>, Self::Error>;

    /// Envelopes of `author`'s log from `from` on, oldest first: at most `max_entries`, and
    /// no more once `max_bytes` are reached (at least one if any is held).
    fn envelopes(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, Self::Error>;
}

/// The result of offering a batch of remote entries to a store.
#[derive(Clone, Debug, Default)]
pub struct Inserted {
    /// Entries newly stored, oldest first.
    pub stored: Vec<Entry>,
    /// Entries skipped because the store already held them.
    pub duplicates: usize,
    /// The highest seq of the batch that the store now holds (stored or duplicate); 0 if none.
    pub held_through: u64,
    /// Why the batch stopped early, if it did; everything before it was stored.
    pub rejected: Option<ValidationError>,
}
