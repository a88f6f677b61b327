//! Comparing two sets of heads without sending them all (range-based set reconciliation).
//!
//! SKELETON: helper fills this in (see /work/briefs/reconcile.md).

use std::collections::BTreeMap;

use crate::entry::Author;
use crate::message::{AuthorRange, HeadInfo, Part, Summary};

/// The heads a node holds, with what it takes to sum up any range of them quickly.
#[derive(Clone, Debug, Default)]
pub struct HeadSet {
    heads: BTreeMap<Author, HeadInfo>,
}

impl HeadSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `head`, replacing the author's earlier head.
    pub fn insert(&mut self, head: HeadInfo) {
        self.heads.insert(head.author, head);
    }
    /// The head of `author`'s log, if held.
    pub fn get(&self, author: &Author) -> Option<&HeadInfo> {
        self.heads.get(author)
    }
    /// How many logs.
    pub fn len(&self) -> usize {
        self.heads.len()
    }
    /// Whether it holds no log.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
    /// Every head, in author order.
    pub fn iter(&self) -> impl Iterator<Item = &HeadInfo> {
        self.heads.values()
    }
    /// The heads in `range`, in author order.
    pub fn in_range(&self, range: &AuthorRange) -> impl Iterator<Item = &HeadInfo> {
        let _ = range;
        self.heads.values()
    }
    /// The summary of the heads in `range`.
    pub fn summary(&self, range: &AuthorRange) -> Summary {
        let _ = range;
        unimplemented!()
    }
    /// The replier's side: what it holds in each of `ranges`, listed or split.
    pub fn answer(&self, ranges: &[AuthorRange]) -> Vec<Part> {
        let _ = ranges;
        unimplemented!()
    }
}

/// Why a reply cannot be taken (only a broken or hostile peer sends one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// Placeholder.
    #[error("placeholder")]
    Placeholder,
}

/// What one reply taught the asker about the replier's heads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Learned {
    /// Ranges where the replier holds exactly what we hold (at the time of comparing).
    pub same: Vec<AuthorRange>,
    /// Ranges whose heads the replier listed, with those heads: in each, it holds exactly
    /// these (and nothing of the other authors in the range).
    pub listed: Vec<(AuthorRange, Vec<HeadInfo>)>,
}

/// The asker's side of one reconciliation: which ranges are still to be asked about.
#[derive(Debug, Clone)]
pub struct Reconciler {
    _private: (),
}

impl Reconciler {
    /// Starts comparing our heads with a peer's, summed up in its hello. Done at once when
    /// the summaries are equal.
    pub fn new(ours: &HeadSet, theirs: Summary) -> Self {
        let _ = (ours, theirs);
        unimplemented!()
    }
    /// The next query to send, if one is due (one is in flight at a time).
    pub fn next_query(&mut self) -> Option<Vec<AuthorRange>> {
        unimplemented!()
    }
    /// Takes the reply to the query in flight, comparing its summaries with `ours`.
    pub fn on_reply(&mut self, ours: &HeadSet, parts: Vec<Part>) -> Result<Learned, ReconcileError> {
        let _ = (ours, parts);
        unimplemented!()
    }
    /// Whether a query is in flight.
    pub fn is_waiting(&self) -> bool {
        unimplemented!()
    }
    /// Whether every range is settled.
    pub fn is_done(&self) -> bool {
        unimplemented!()
    }
}
