//! The store as the core reads it ([`Logs`]).
//!
//! TEMPORARY: helper "store" implements `Logs` for `Store` in `p2pchat-storage`; this adapter
//! goes once that is merged.

use bytes::Bytes;
use p2pchat_protocol::store::Logs;
use p2pchat_protocol::{Author, Entry};
use p2pchat_storage::{Store, StoreError};

/// [`Logs`] over a [`Store`].
pub struct StoreLogs<'a>(pub &'a Store);

impl Logs for StoreLogs<'_> {
    type Error = StoreError;

    fn head_seq(&self, author: &Author) -> u64 {
        self.0.head_seq(author)
    }

    fn is_frozen(&self, author: &Author) -> bool {
        self.0.is_frozen(author)
    }

    fn entry(&self, author: &Author, seq: u64) -> Result<Option<Entry>, StoreError> {
        self.0.get(author, seq)
    }

    fn envelopes(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        self.0.range_envelopes(author, from, max_entries, max_bytes)
    }
}
